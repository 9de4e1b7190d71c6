"""Communication happens at choreography level, not inside a role's local block."""

from choreo import At, Role, choreography


@choreography
def send_in_with(alice: Role, bob: Role, x: At[int, "alice"]) -> None:
    with alice:
        y = alice.send(x, to=bob)  # error: `alice.send` inside `with alice:`: communication happens at choreography level
    with bob:
        print(y)
