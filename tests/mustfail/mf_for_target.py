"""A choreography-level `for` binds plain names."""

from choreo import Role, choreography

SLOTS = [0, 0, 0]


@choreography
def for_target(alice: Role) -> None:
    for SLOTS[0] in range(3):  # error: a choreography-level `for` must bind plain names
        with alice:
            print("tick")
