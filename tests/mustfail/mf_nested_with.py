"""`with bob:` nested in `with alice:`."""

from choreo import Role, choreography


@choreography
def nested(alice: Role, bob: Role) -> None:
    with alice:
        print("alice")
        with bob:  # error: `with bob:` inside `with alice:`: a block runs at one role
            print("bob")
