"""Groups of roles: role expressions, facets, quorums, scatter."""

from choreo import At, Role, Roles, choreography, majority


@choreography
def role_syntax(alice: Role, bob: Role, x: At[list, "alice"]) -> None:
    with alice as me:  # error: `with role as name:` is only for groups of roles
        print(me)
    y = alice.scatter(x, to=bob)  # error: `scatter` gives each member of a group its own part


@choreography
def faceted_condition(leader: Role, workers: Roles) -> None:
    with workers as w:
        busy = w.endswith("0")
    if busy:  # error: a value each member of workers holds for itself
        with leader:
            print("busy")


@choreography
def uniform_condition(leader: Role, workers: Roles, n: At[int, "leader"]) -> None:
    k = leader.send(n, to=workers)
    if k > 0:  # every member holds the same k: no selection among them
        with workers as w:
            print(w)
    while k > 0:  # error: a value each member of workers holds for itself
        with workers:
            k = k - 1  # rebinding it at each member makes it faceted
    with leader:
        print("done")


@choreography
def group_reads_role_value(leader: Role, workers: Roles, n: At[int, "leader"]) -> None:
    with workers as w:
        m = n + 1  # error: `n` is located at leader, but this `with workers as w:` block runs at the members of workers
    s = workers.send(m, to=leader)


@choreography
def quorum_needs_group(leader: Role, workers: Roles, n: At[int, "leader"]) -> None:
    k = leader.send(n, to=workers, quorum=majority)  # error: `quorum=` only applies when a group sends
    j = leader.send(n, to=workers, timeout=1.0)  # error: `timeout=` only applies when a group sends


@choreography
def undecidable_member(leader: Role, workers: Roles, i: At[int, "leader"]) -> None:
    k = leader.send(i, to=workers[i])  # error: this is not a role expression the checker can decide


@choreography
def members_twice(leader: Role, workers: Roles, n: At[int, "leader"]) -> None:
    k = leader.send(n, to=[workers[0], workers[1]])  # error: `to=` names members of group `workers` twice


@choreography
def scatter_to_member(leader: Role, workers: Roles, n: At[dict, "leader"]) -> None:
    k = leader.scatter(n, to=workers[0])  # error: `to=` must be one group


@choreography
def gather_result_is_at_receiver(leader: Role, workers: Roles) -> At[dict, "leader"]:
    with workers as w:
        v = len(w)
    got = workers.send(v, to=leader)
    with workers:
        print(got)  # error: `got` is located at leader
    return got


@choreography
def group_not_a_role(leader: Role, workers: Roles) -> None:
    with nobody:  # error: `nobody` is not a role parameter
        print(1)
