"""A plain statement outside `with` that binds nothing would run at every role."""

from choreo import Role, choreography


@choreography
def binds_nothing(alice: Role, bob: Role) -> None:
    print("hello")  # error: a plain statement outside `with` that binds nothing would run at every role
    with alice:
        print("alice")
