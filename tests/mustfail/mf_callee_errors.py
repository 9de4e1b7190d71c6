"""Errors in a sub-choreography are reported once, at the callee, even when a caller is checked too."""

from choreo import At, Role, choreography


@choreography
def callee(p: Role, q: Role, v: At[int, "p"]):
    with q:
        w = v  # error: `v` is located at p, but this `with q:` block runs at q
    return w


@choreography
def caller(alice: Role, bob: Role, x: At[int, "alice"]) -> None:
    r = callee(alice, bob, x)
    with bob:
        print(r)
