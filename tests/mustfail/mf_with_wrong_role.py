"""A `with` block reads a value located at another role."""

from choreo import At, Role, choreography


@choreography
def wrong_role(alice: Role, bob: Role, x: At[int, "alice"]) -> None:
    with bob:
        y = x + 1  # error: `x` is located at alice, but this `with bob:` block runs at bob
    with bob:
        print(y)
