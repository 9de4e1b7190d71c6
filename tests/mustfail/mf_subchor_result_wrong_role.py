"""A sub-choreography's result is located where its signature says, mapped onto the caller's roles."""

from choreo import At, Role, choreography


@choreography
def greet(p: Role, q: Role, msg: At[str, "p"]) -> At[str, "q"]:
    m = p.send(msg, to=q)
    return m


@choreography
def caller(alice: Role, bob: Role, s: At[str, "alice"]) -> None:
    r = greet(alice, bob, s)
    with alice:
        print(r)  # error: `r` is located at bob, but this `with alice:` block runs at alice
    r2 = greet(q=alice, p=bob, msg=s)  # error: `s` is located at alice, but argument `msg` of `greet` (held by bob) runs at bob
    with alice:
        print(r2)
