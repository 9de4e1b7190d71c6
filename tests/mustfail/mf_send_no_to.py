"""A send needs its receiver as `to=`."""

from choreo import At, Role, choreography


@choreography
def no_to(alice: Role, bob: Role, x: At[int, "alice"]) -> None:
    y = alice.send(x)  # error: `send` needs its receiver as `to=`
    z = alice.send(x, bob)  # error: `send` takes exactly one value to send  # error: `send` needs its receiver as `to=`
