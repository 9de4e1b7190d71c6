"""A send takes one value and `to=`, nothing else."""

from choreo import At, Role, choreography


@choreography
def extra_args(alice: Role, bob: Role, x: At[int, "alice"]) -> None:
    y = alice.send(x, x, to=bob)  # error: `send` takes exactly one value to send
    z = alice.send(x, to=bob, timeout=3)  # error: `timeout=` only applies when a group sends
    w = alice.send(x, to=bob, priority=3)  # error: `send` has no parameter `priority`
    w = alice.send(to=bob)  # error: `send` takes exactly one value to send
