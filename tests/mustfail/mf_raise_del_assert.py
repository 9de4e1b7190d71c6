"""`raise`, `del` and `assert` are local code: they belong inside `with role:`."""

from choreo import At, Role, choreography


@choreography
def statements(alice: Role, x: At[int, "alice"]) -> None:
    n = 1
    assert n == 1  # error: `assert` is not supported at choreography level
    del n  # error: `del` is not supported at choreography level
    raise ValueError("no")  # error: `raise` is not supported at choreography level
