"""A sub-choreography needs distinct roles."""

from choreo import At, Role, choreography


@choreography
def greet(p: Role, q: Role, msg: At[str, "p"]) -> At[str, "q"]:
    m = p.send(msg, to=q)
    return m


@choreography
def same_twice(alice: Role, bob: Role, s: At[str, "alice"]) -> None:
    r = greet(alice, alice, s)  # error: role `alice` is passed twice to `greet` (as `p` and `q`)
    with alice:
        print(r)
