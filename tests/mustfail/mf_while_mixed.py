"""A `while` condition must be decided at one role."""

from choreo import At, Role, choreography


@choreography
def while_mixed(alice: Role, bob: Role, x: At[int, "alice"], y: At[int, "bob"]) -> None:
    with alice:
        n = x
    while n < y:  # error: this loop condition mixes values located at different roles: `n` at alice, `y` at bob
        with alice:
            n = n + 1
