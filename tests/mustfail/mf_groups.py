"""Groups of roles are not supported yet."""

from choreo import At, Role, Roles, choreography


@choreography
def group_param(leader: Role, workers: Roles) -> None:  # error: groups of roles (`Roles`) are not supported yet
    with leader:
        print("hi")


@choreography
def group_syntax(alice: Role, bob: Role, x: At[list, "alice"]) -> None:
    with alice as me:  # error: `with role as name:` is only for groups of roles
        print(me)
    y = alice.scatter(x, to=bob)  # error: `scatter` needs groups of roles, which are not supported yet
