"""A sub-choreography call must pass the callee's roles (a call is recognised by its callee)."""

from choreo import At, Role, choreography


@choreography
def hello(p: Role) -> At[str, "p"]:
    with p:
        h = "hi"
    return h


@choreography
def caller(alice: Role, bob: Role) -> None:
    r = hello()  # error: call of `hello` is missing `p`
    with bob:
        print(r)
