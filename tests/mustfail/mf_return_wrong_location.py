"""The returned value must be located where `-> At[T, "r"]` says."""

from choreo import At, Role, choreography


@choreography
def wrong_result(alice: Role, bob: Role, x: At[int, "alice"]) -> At[int, "bob"]:
    return x  # error: this returns a value located at alice, but the choreography declares its result at bob
