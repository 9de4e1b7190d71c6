"""An `if` condition must be decided at one role."""

from choreo import At, Role, choreography


@choreography
def if_mixed(alice: Role, bob: Role, x: At[int, "alice"], y: At[int, "bob"]) -> None:
    if x < y:  # error: this condition mixes values located at different roles: `x` at alice, `y` at bob
        with alice:
            print("less")
