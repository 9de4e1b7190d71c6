"""Choreographies that fail or hang on purpose, for the process tests."""

import time

from choreo import At, Role, choreography


def explode(x: int) -> int:
    raise ValueError(f"bob cannot handle {x}")


@choreography
def bob_fails(alice: Role, bob: Role, x: At[int, "alice"]) -> At[int, "alice"]:
    y = alice.send(x, to=bob)
    with bob:
        z = explode(y)
    back = bob.send(z, to=alice)
    return back


@choreography
def slow(alice: Role, bob: Role, seconds: At[float, "bob"]) -> At[str, "alice"]:
    with bob:
        time.sleep(seconds)
        word = "late"
    w = bob.send(word, to=alice)
    return w
