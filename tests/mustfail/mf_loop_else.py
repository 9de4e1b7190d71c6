"""`while ... else` and `for ... else` at choreography level."""

from choreo import At, Role, choreography


@choreography
def loop_else(alice: Role, n: At[int, "alice"]) -> None:
    with alice:
        i = 0
    while i < n:
        with alice:
            i = i + 1
    else:  # error: `while ... else` is not supported at choreography level
        with alice:
            print("done")
    for k in range(3):
        with alice:
            print(k)
    else:  # error: `for ... else` is not supported at choreography level
        with alice:
            print("done")
