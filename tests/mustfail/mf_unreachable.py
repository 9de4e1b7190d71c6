"""Code after `return` never runs."""

from choreo import At, Role, choreography


@choreography
def unreachable(alice: Role, x: At[int, "alice"]) -> At[int, "alice"]:
    return x
    with alice:  # error: unreachable code after `return`
        print("never")
