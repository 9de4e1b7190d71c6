"""`break` and `continue` at choreography level."""

from choreo import At, Role, choreography


@choreography
def breaks(alice: Role, bob: Role, n: At[int, "alice"]) -> None:
    with alice:
        i = 0
    while i < n:
        with alice:
            i = i + 1
        if i == 3:
            break  # error: `break` is not supported at choreography level
        if i == 2:
            continue  # error: `continue` is not supported at choreography level
        j = alice.send(i, to=bob)
        with bob:
            print(j)
