"""Sub-choreography calls are checked against the callee's parameters."""

from choreo import At, Role, choreography


@choreography
def greet(p: Role, q: Role, msg: At[str, "p"]) -> At[str, "q"]:
    m = p.send(msg, to=q)
    return m


@choreography
def missing(alice: Role, bob: Role, s: At[str, "alice"]) -> None:
    greet(alice, bob)  # error: call of `greet` is missing `msg`


@choreography
def too_many(alice: Role, bob: Role, carol: Role, s: At[str, "alice"]) -> None:
    greet(alice, bob, s, carol)  # error: `greet` takes 3 arguments, 4 given


@choreography
def unknown_keyword(alice: Role, bob: Role, s: At[str, "alice"]) -> None:
    greet(alice, bob, msg=s, loud=alice)  # error: `greet` has no parameter `loud`


@choreography
def given_twice(alice: Role, bob: Role, s: At[str, "alice"]) -> None:
    greet(alice, bob, s, p=alice)  # error: parameter `p` of `greet` is given twice
