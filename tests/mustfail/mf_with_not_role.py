"""`with` names something that is not a role parameter."""

from choreo import Role, choreography


@choreography
def with_not_role(alice: Role) -> None:
    with carol:# error: `carol` is not a role parameter of this choreography
        print("hi")
