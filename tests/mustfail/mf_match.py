"""`match` at choreography level is not supported."""

from choreo import At, Role, choreography


@choreography
def matches(alice: Role, x: At[int, "alice"]) -> None:
    match x:  # error: `match` is not supported at choreography level
        case 0:
            with alice:
                print("zero")
        case _:
            with alice:
                print("other")
