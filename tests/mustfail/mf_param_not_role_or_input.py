"""A parameter annotated with a plain type is neither a role nor a located input."""

from choreo import At, Role, choreography


@choreography
def plain_type(alice: Role, n: int) -> None:  # error: parameter `n` is neither a role nor a located input
    with alice:
        print(n)


@choreography
def unnamed_role(alice: Role, m: At[int, 3]) -> None:  # error: input `m` must name the role that holds it
    with alice:
        print("hi")
