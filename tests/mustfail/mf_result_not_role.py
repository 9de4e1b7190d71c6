"""The result annotation must name a role parameter."""

from choreo import At, Role, choreography


@choreography
def result_nowhere(alice: Role, x: At[int, "alice"]) -> At[int, "carol"]:  # error: the result is declared at `carol`, which is not a role parameter
    return x
