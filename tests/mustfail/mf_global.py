"""`global` at choreography level and inside a `with` block."""

from choreo import Role, choreography

COUNTER = 0


@choreography
def uses_global(alice: Role) -> None:
    global COUNTER  # error: `global` is not allowed in a choreography
    with alice:
        print(COUNTER)


@choreography
def global_in_with(alice: Role) -> None:
    with alice:
        def bump() -> None:
            global COUNTER  # error: `global` is not allowed in a choreography
            COUNTER += 1
        bump()
