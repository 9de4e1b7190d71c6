"""A role parameter of a sub-choreography must be given a role."""

from choreo import At, Role, choreography


@choreography
def greet(p: Role, q: Role, msg: At[str, "p"]) -> At[str, "q"]:
    m = p.send(msg, to=q)
    return m


@choreography
def non_role(alice: Role, bob: Role, s: At[str, "alice"]) -> None:
    r = greet(alice, s, s)  # error: role parameter `q` of `greet` needs a role, got `s`
    with bob:
        print(r)
