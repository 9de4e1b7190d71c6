"""After branches bind a name at different roles, it is held by no single role."""

from choreo import At, Role, choreography


@choreography
def no_single(alice: Role, bob: Role, c: At[bool, "alice"]) -> None:
    if c:
        with alice:
            v = 1
    else:
        with bob:
            v = 2
    with alice:
        print(v)  # error: `v` is not held by any single role here
