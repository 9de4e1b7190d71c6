"""Names must exist: in the choreography, the module or builtins."""

from choreo import At, Role, choreography


@choreography
def undefined(alice: Role, x: At[int, "alice"]) -> None:
    with alice:
        print(x + nope)# error: name `nope` is not defined
