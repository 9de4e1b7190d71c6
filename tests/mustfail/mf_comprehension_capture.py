"""A comprehension inside a `with` block reads another role's value."""

from choreo import At, Role, choreography


@choreography
def comp_capture(alice: Role, bob: Role, xs: At[list, "alice"], k: At[int, "bob"]) -> None:
    with bob:
        ys = [k * i for i in range(3)]
        zs = [i for i in xs]  # error: `xs` is located at alice, but this `with bob:` block runs at bob
        d = {i: k for i in range(3) if i < len(xs)}  # error: `xs` is located at alice
        print(ys, zs, d)
