"""An argument passed for a callee input must be held by the caller's role that it is mapped to."""

from choreo import At, Role, choreography


@choreography
def show(p: Role, v: At[int, "p"]) -> None:
    with p:
        print(v)


@choreography
def caller(alice: Role, bob: Role, x: At[int, "alice"]) -> None:
    show(bob, x)  # error: `x` is located at alice, but argument `v` of `show` (held by bob) runs at bob
