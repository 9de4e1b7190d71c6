"""Functions and classes are defined at module level (or inside `with role:`)."""

from choreo import Role, choreography


@choreography
def defines(alice: Role) -> None:
    def helper() -> int:  # error: a function cannot be defined at choreography level
        return 1

    class Box:  # error: a class cannot be defined at choreography level
        pass

    with alice:
        def ok() -> int:  # fine: local to alice
            return 2
        print(ok())
