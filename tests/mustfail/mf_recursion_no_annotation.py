"""A recursive choreography must declare where its result lives."""

from choreo import At, Role, choreography


@choreography
def countdown(alice: Role, bob: Role, n: At[int, "alice"]):
    if n > 0:
        m = alice.send(n - 1, to=bob)
        r = countdown(bob, alice, m)  # error: `countdown` calls itself (directly or not), so its result location must be declared
        return r
    return n
