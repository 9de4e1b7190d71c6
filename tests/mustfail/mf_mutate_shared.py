"""A value held by several roles (after a multicast) cannot be changed in place at one of them."""

from choreo import At, Role, choreography


@choreography
def mutate_shared(alice: Role, bob: Role, carol: Role, xs: At[list, "alice"]) -> None:
    ys = alice.send(xs, to=[bob, carol])
    with bob:
        print(len(ys))
        ys.append(1)  # error: `ys` is held by bob and carol; changing it in place at bob would make their copies differ
    with carol:
        ys[0] = 2  # error: `ys` is held by bob and carol; changing it in place at carol
        print(ys)
