"""`nonlocal` in a choreography (defined inside a factory function)."""

from choreo import Role, choreography


def make():
    total = 0

    @choreography
    def uses_nonlocal(alice: Role) -> None:
        nonlocal total  # error: `nonlocal` is not allowed in a choreography
        with alice:
            print("hi")

    return uses_nonlocal


uses_nonlocal = make()
