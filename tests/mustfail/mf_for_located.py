"""`for` iterates over a value every role knows."""

from choreo import At, Role, choreography


@choreography
def for_located(alice: Role, bob: Role, xs: At[list, "alice"]) -> None:
    for x in xs:  # error: `xs` is located at alice; the iterable of a `for` loop may only use values every role knows
        y = alice.send(x, to=bob)
        with bob:
            print(y)
