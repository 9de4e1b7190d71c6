"""Imports belong at module level."""

from choreo import Role, choreography


@choreography
def imports(alice: Role) -> None:
    import math  # noqa: F401  # error: imports are not allowed at choreography level
    from os import path  # noqa: F401  # error: imports are not allowed at choreography level
    with alice:
        print("hi")
