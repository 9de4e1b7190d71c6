"""Roles are not values."""

from choreo import At, Role, choreography


@choreography
def role_as_value(alice: Role, bob: Role, x: At[int, "alice"]) -> None:
    with alice:
        print(bob)  # error: role `bob` is used as a value
    y = alice.send(bob, to=bob)  # error: role `bob` is used as a value
    with bob:
        print(y)
