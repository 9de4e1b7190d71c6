"""A condition or a result held by no single role."""

from choreo import At, Role, choreography


@choreography
def no_single_cond(alice: Role, bob: Role, c: At[bool, "alice"]) -> None:
    if c:
        with alice:
            v = True
    else:
        with bob:
            v = False
    if v:  # error: `v` is not held by any single role here
        with alice:
            print("yes")


@choreography
def no_single_result(alice: Role, bob: Role, c: At[bool, "alice"]):
    if c:
        with alice:
            v = 1
    else:
        with bob:
            v = 2
    return v  # error: `v` is not held by any single role here
