"""A plain statement outside `with` runs at every role, so it may only read replicated values."""

from choreo import At, Role, choreography


@choreography
def plain_reads(alice: Role, bob: Role, x: At[int, "alice"]) -> None:
    n = 3
    y = x + n  # error: `x` is located at alice; a plain statement outside `with` may only use values every role knows
    z = alice.send(n, to=bob)
    with bob:
        print(z)
