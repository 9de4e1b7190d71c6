"""The result of a send is bound to one plain name."""

from choreo import At, Role, choreography


@choreography
def send_target(alice: Role, bob: Role, x: At[tuple, "alice"]) -> None:
    a, b = alice.send(x, to=bob)  # error: the result of a send must be bound to one plain name
