"""Every statement of a `with` line counts, also after a semicolon."""

from choreo import At, Role, choreography


@choreography
def semicolon(alice: Role, bob: Role, x: At[int, "alice"]) -> None:
    with bob:
        s = 1; t = x  # error: `x` is located at alice, but this `with bob:` block runs at bob
        print(s, t)
