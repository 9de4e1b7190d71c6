"""A lambda inside a `with` block captures another role's value."""

from choreo import At, Role, choreography


@choreography
def lambda_capture(alice: Role, bob: Role, x: At[int, "alice"]) -> None:
    with bob:
        f = lambda n: n + x# error: `x` is located at alice, but this `with bob:` block runs at bob
        print(f(1))
