"""`try` at choreography level would span several roles."""

from choreo import At, Role, choreography


@choreography
def tries(alice: Role, bob: Role, x: At[int, "alice"]) -> None:
    try:  # error: `try` is not supported at choreography level
        with alice:
            print(1 / x)
    except ZeroDivisionError:
        with bob:
            print("alice divided by zero")
