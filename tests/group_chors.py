"""Choreographies over groups, used by tests/test_groups.py (one of each construct)."""

from choreo import At, Role, Roles, choreography, majority


@choreography
def fan_sum(client: Role, workers: Roles, data: At[list, "client"]) -> At[int, "client"]:
    with client:
        parts = {w: data[i :: len(workers)] for i, w in enumerate(workers)}
    mine = client.scatter(parts, to=workers)
    with workers as w:
        partial = sum(mine)
    sums = workers.send(partial, to=client)
    with client:
        total = sum(sums.values())
    return total


@choreography
def vote(leader: Role, voters: Roles, question: At[str, "leader"]) -> At[bool, "leader"]:
    q = leader.send(question, to=voters)
    with voters as v:
        yes = len(q) % 2 == 0 or v.endswith("0")
    votes = voters.send(yes, to=leader, quorum=majority)
    with leader:
        decided = sum(votes.values()) * 2 > len(votes)
    return decided


@choreography
def chain(client: Role, nodes: Roles, v: At[int, "client"]) -> At[int, "client"]:
    x = client.send(v, to=nodes[0])
    for a, b in zip(nodes, nodes[1:]):
        with a:
            x = x + 1
        x = a.send(x, to=b)
    r = nodes[-1].send(x, to=client)
    return r


@choreography
def shuffle(mappers: Roles, reducers: Roles, texts: At[str, "mappers"]) -> At[dict, "reducers"]:
    with mappers as m:
        counts = {}
        for w in texts.split():
            counts[w] = counts.get(w, 0) + 1
        parts = {r: {} for r in reducers}
        for w, c in counts.items():
            parts[reducers[sum(map(ord, w)) % len(reducers)]][w] = c
    got = mappers.scatter(parts, to=reducers)
    with reducers as r:
        total = {}
        for part in got.values():
            for w, c in part.items():
                total[w] = total.get(w, 0) + c
    return total


@choreography
def all_to_all(g: Roles) -> At[dict, "g"]:
    with g as m:
        v = len(m) + sum(map(ord, m))
    x = g.send(v, to=g)
    return x


@choreography
def replicate(primary: Role, backups: Roles, value: At[int, "primary"]) -> At[int, "backups"]:
    v = primary.send(value, to=backups)
    with backups as b:
        stored = v
    acks = backups.send(True, to=primary)
    return stored


@choreography
def outer(
    client: Role, primary: Role, backups: Roles, value: At[int, "client"]
) -> At[str, "client"]:
    v = client.send(value, to=primary)
    s = replicate(primary, backups[1:], v)
    ok = primary.send("ok", to=client)
    return ok


@choreography
def group_decides(
    leader: Role, g: Roles, outsider: Role, n: At[int, "leader"]
) -> At[int, "outsider"]:
    k = leader.send(n, to=g)
    if k > 2:
        with g as m:
            y = k * 2
        z = g[0].send(y, to=outsider)
    else:
        z = leader.send(0, to=outsider)
    with outsider:
        z = z + 1
    return z


@choreography
def group_loop(leader: Role, g: Roles, outsider: Role, n: At[int, "leader"]) -> At[int, "outsider"]:
    k = leader.send(n, to=g)
    with outsider:
        acc = 0
    while k > 0:
        one = g[-1].send(1, to=outsider)
        with outsider:
            acc = acc + one
        with g[0]:
            k0 = k - 1
        k = g[0].send(k0, to=g)
    return acc


@choreography
def per_member(leader: Role, g: Roles) -> At[list, "leader"]:
    with leader:
        seen = []
    for m in g:
        with m:
            hello = "hi from " + m
        h = m.send(hello, to=leader)
        with leader:
            seen.append(h)
    return seen


@choreography
def rounds(leader: Role, g: Roles, n: At[int, "leader"]) -> At[list, "leader"]:
    """``n`` rounds of a gather with a quorum of 2: who was heard, and in which round."""
    with leader:
        log = []
        r = 0
    while r < n:
        rr = leader.send(r, to=g)
        with g as m:
            reply = (rr, m)
        got = g.send(reply, to=leader, quorum=2)
        with leader:
            log.append(sorted(got.values()))
            r = r + 1
    return log


@choreography
def majority_count(leader: Role, g: Roles) -> At[int, "leader"]:
    """How many replies a majority gather waits for (independent of who answers)."""
    got = g.send(1, to=leader, quorum=majority)
    with leader:
        n = len(got)
    return n


@choreography
def named_members(leader: Role, g: Roles, bonus: At[int, "g"]) -> At[dict, "leader"]:
    """A group input given per member (a dict) or as one value copied to each member."""
    with g as m:
        v = (m, bonus)
    got = g.send(v, to=leader)
    return got


@choreography
def bad_scatter(leader: Role, g: Roles) -> None:
    """Scatters a dict with no entry for the last member: a run-time error, central and projected."""
    with leader:
        parts = {m: 1 for m in g[:-1]}
    x = leader.scatter(parts, to=g)
    with g:
        print(x)


@choreography
def sub_members(client: Role, g: Roles, v: At[int, "client"]) -> At[int, "client"]:
    """A sub-choreography whose role parameters are bound to single members."""
    x = client.send(v, to=g[0])
    y = relay(g[0], g[-1], x)
    r = g[-1].send(y, to=client)
    return r


@choreography
def relay(a: Role, b: Role, x: At[int, "a"]) -> At[int, "b"]:
    with a:
        x2 = x * 10
    y = a.send(x2, to=b)
    return y


@choreography
def patient(leader: Role, g: Roles) -> At[list, "leader"]:
    """Waits up to 1 s for every member, then goes on with who answered."""
    with g as m:
        v = m
    got = g.send(v, to=leader, timeout=1.0)
    with leader:
        heard = sorted(got)
    return heard


@choreography
def replicated_put(
    client: Role,
    primary: Role,
    backups: Roles,
    key: At[str, "client"],
    value: At[int, "client"],
    pstore: At[dict, "primary"],
    bstore: At[dict, "backups"],
) -> At[str, "client"]:
    """Service mode over a group: waits 0.5 s for acknowledgements, reports how many came."""
    req = client.send((key, value), to=primary)
    upd = primary.send(req, to=backups)
    with backups as b:
        bstore[upd[0]] = upd[1]
        ack = b
    acks = backups.send(ack, to=primary, timeout=0.5)
    with primary:
        pstore[req[0]] = req[1]
        status = f"OK {len(acks)}"
    r = primary.send(status, to=client)
    return r


@choreography
def two_requests(leader: Role, g: Roles, x: At[int, "leader"]) -> At[int, "leader"]:
    """Two messages to every member, then a majority gather."""
    a = leader.send(x, to=g)
    b = leader.send(x + 1, to=g)
    with g:
        y = a + b
    got = g.send(y, to=leader, quorum=majority)
    with leader:
        n = len(got)
    return n


@choreography
def from_the_last(leader: Role, g: Roles, x: At[int, "leader"]) -> At[int, "leader"]:
    """The leader waits for one particular member."""
    a = leader.send(x, to=g)
    with g:
        y = a * 2
    r = g[-1].send(y, to=leader)
    return r


@choreography
def route(client: Role, nodes: Roles, key: At[int, "client"]) -> At[int, "client"]:
    """Routes a request to the member that owns the key (a decision per member)."""
    with client:
        owner = nodes[key % len(nodes)]
        reply = None
    for n in nodes:
        if owner == n:
            k = client.send(key, to=n)
            with n:
                v = k * 10
            reply = n.send(v, to=client)
    return reply


@choreography
def ask(leader: Role, g: Roles, x: At[int, "leader"]) -> At[int, "leader"]:
    """A multicast, then a majority gather: tolerates a member that is down."""
    q = leader.send(x, to=g)
    with g:
        y = q + 1
    got = g.send(y, to=leader, quorum=majority)
    with leader:
        n = len(got)
    return n
