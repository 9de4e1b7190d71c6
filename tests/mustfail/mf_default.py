"""Parameters cannot have default values."""

from choreo import At, Role, choreography


@choreography
def with_default(alice: Role, x: At[int, "alice"] = 3) -> None:  # error: parameter `x` cannot have a default value
    with alice:
        print(x)
