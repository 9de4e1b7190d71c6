"""Roles can only be passed to choreographies."""

from choreo import Role, choreography


def helper(a: object, b: object) -> None:
    print(a, b)


@choreography
def passes_roles(alice: Role, bob: Role) -> None:
    helper(alice, bob)  # error: `helper` is not a `@choreography`: roles can only be passed to choreographies
