"""A name bound in only one branch is not available after the `if`."""

from choreo import At, Role, choreography


@choreography
def one_branch(alice: Role, x: At[int, "alice"]) -> None:
    if x > 0:
        with alice:
            y = x
    with alice:
        print(y)  # error: `y` is not available here: it is not bound on every path that reaches this point
