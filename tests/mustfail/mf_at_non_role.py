"""`At[T, "r"]` must name a role parameter."""

from choreo import At, Role, choreography


@choreography
def at_non_role(alice: Role, x: At[int, "carol"]) -> None:  # error: input `x` is located at `carol`, which is not a role parameter
    with alice:
        print("hi")
