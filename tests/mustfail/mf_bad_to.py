"""`to=` takes a role or a list of distinct roles."""

from choreo import At, Role, choreography


@choreography
def bad_to(alice: Role, bob: Role, carol: Role, x: At[int, "alice"]) -> None:
    a = alice.send(x, to="bob")  # error: `to=` must name a role or a list of roles
    b = alice.send(x, to=[bob, bob])  # error: `bob` is listed twice in `to=`
    c = alice.send(x, to=[])  # error: `to=` names no role
