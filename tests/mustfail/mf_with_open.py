"""Only `with role:` blocks are allowed at choreography level."""

from choreo import Role, choreography


@choreography
def opens(alice: Role) -> None:
    with open("data.txt") as f:  # error: only `with role:` blocks are allowed at choreography level
        print(f.read())
    with alice:
        with open("data.txt") as g:  # fine: local code at alice
            print(g.read())
