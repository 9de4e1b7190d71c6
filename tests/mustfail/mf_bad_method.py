"""Roles only have `send` (and `scatter`, for groups)."""

from choreo import At, Role, choreography


@choreography
def bad_method(alice: Role, bob: Role, x: At[int, "alice"]) -> None:
    y = alice.sned(x, to=bob)  # error: roles have no method `sned`
