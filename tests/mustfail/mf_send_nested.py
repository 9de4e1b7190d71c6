"""A send must be a whole statement, not part of a larger expression."""

from choreo import At, Role, choreography


@choreography
def send_nested(alice: Role, bob: Role, x: At[int, "alice"]) -> None:
    y = [alice.send(x, to=bob)]  # error: `alice.send(...)` must be a whole statement
    if alice.send(x, to=bob):  # error: `alice.send(...)` must be a whole statement
        with bob:
            print("truthy")
