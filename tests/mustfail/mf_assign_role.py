"""A role name cannot be rebound."""

from choreo import At, Role, choreography


@choreography
def assigns_role(alice: Role, bob: Role, x: At[int, "alice"]) -> None:
    with alice:
        bob = x  # error: `bob` is a role and cannot be assigned to
    alice = 3  # error: `alice` is a role and cannot be assigned to
