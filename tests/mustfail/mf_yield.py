"""A choreography is not a generator."""

from choreo import At, Role, choreography


@choreography
def gen(alice: Role, x: At[int, "alice"]) -> None:
    with alice:
        y = yield x  # error: `yield` is not allowed in a choreography
    yield 1  # error: `yield` is not allowed in a choreography
