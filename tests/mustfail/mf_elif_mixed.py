"""An `elif` condition is an `if` condition too."""

from choreo import At, Role, choreography


@choreography
def elif_mixed(alice: Role, bob: Role, x: At[int, "alice"], y: At[int, "bob"]) -> None:
    if x > 0:
        with alice:
            print("positive")
    elif x + y > 0:  # error: this condition mixes values located at different roles
        with bob:
            print("sum positive")
