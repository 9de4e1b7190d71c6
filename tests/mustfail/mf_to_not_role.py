"""`to=` names something that is not a role parameter."""

from choreo import At, Role, choreography


@choreography
def to_not_role(alice: Role, bob: Role, x: At[int, "alice"]) -> None:
    y = alice.send(x, to=carol)# error: `carol` is not a role parameter of this choreography
    with alice:
        print(y)
