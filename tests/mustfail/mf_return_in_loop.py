"""`return` inside a loop is not supported."""

from choreo import At, Role, choreography


@choreography
def return_in_loop(alice: Role, n: At[int, "alice"]) -> At[int, "alice"]:
    with alice:
        i = 0
    while i < n:
        with alice:
            i = i + 1
        return i  # error: `return` inside a loop is not supported in a choreography
    return i
