"""A `with` block runs at exactly one role."""

from choreo import Role, choreography


@choreography
def two_roles(alice: Role, bob: Role) -> None:
    with alice, bob:  # error: a `with` block runs at exactly one role
        print("both?")
