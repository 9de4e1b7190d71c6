"""Chain replication of a key-value store (van Renesse and Schneider, OSDI 2004), with a master.

Roles: ``client``, ``master`` (the coordinator that owns the configuration),
and ``chain``, a group whose members for a session are the current chain in
order, head first (given like an input: ``chain=["chain.0", "chain.2"]``).
Every operation is one session against long-running processes (service mode).

* ``write``: the client sends ``(epoch, key, value)`` to the head, which gives
  the update the next sequence number ``(epoch, n)``, applies it and passes it
  on; each node applies it and passes it to its successor; the tail applies it
  and answers the client, then tells every node of the chain that the update
  is stable (it is at the tail). Until that message, a node keeps the update
  in its *Sent* list (what it would pass on again) and its sequence number in
  its *seen* set (what it reports to its predecessor). Updates are applied by version (a key keeps
  the update with the highest sequence number), so applying one twice, or
  late, changes nothing. A node that adopted another epoch than the client's
  refuses the update and the client is answered ``stale``: it asks the master
  for the current chain and retries (it does not know whether the write took
  effect: the nodes before the refusal may pass it on later).
* ``read``: the client asks the tail, which answers from its store; the client
  then asks the master for the current configuration, and the read counts
  only if the epoch it used is still current (else it is retried). This
  keeps a node that was removed from the chain, but does not know it (down,
  cut off), from serving a stale read.
* ``config``: the master's current configuration ``(epoch, chain)``.
* ``probe`` (run by an operator): every node answers the master within
  ``PROBE_TIMEOUT``; the master plans the next chain: the current one without
  the nodes that did not answer, then the nodes outside it that did (they
  rejoin at the tail). It never plans an empty chain. A reconfiguration is
  due when the plan differs, or when the last attempt was not committed.
* ``reconfigure`` (run by the operator with the planned chain as the census):
  the master proposes a configuration with a fresh epoch (its durable
  counter). Every node of the new chain adopts it (durably: epoch, chain) and
  from then on refuses sessions of any other epoch. Then, link by link from
  the head: the successor tells its predecessor what it has *seen*, and the
  predecessor re-sends the updates of its Sent list the successor has not
  seen (after a middle node failed, the writes that were in flight past it
  reach the rest of the chain this way), or, to a node that is joining, a
  snapshot of its whole store. The master commits the configuration (clients
  see it) only if every node acknowledged within ``RECONFIG_TIMEOUT``; then,
  and only then, what the new tail holds is stable. An attempt that is not
  committed changes no Sent list (its tail may not be the next one's); the
  next attempt has a higher epoch and keeps the order of the nodes that
  stayed: a node the failed attempt left out between two of its nodes (its
  successor may have got updates it lacks), or that joined in it (it may
  lack its snapshot), comes back only as a joining node, at the tail.

Failures, as in the paper: the head fails: its successor becomes the head
(updates the old head had not passed on are lost; their clients time out).
The tail fails: its predecessor becomes the tail (it holds everything the tail
held). A middle node fails: its predecessor re-sends its Sent list to the new
successor. A node that comes back (or was dropped after lost messages) is
added as the new tail after a state transfer from the old tail.

Guarantee: ``write`` and ``read`` are linearizable. A write answered ``ok`` is
at every node of the chain it was written through and at the tail of every
later configuration. Stale sessions cannot break this: every node of a
committed chain adopted its epoch before the master committed it, so a write
with an older epoch is refused at the first such node it reaches (a chain
always keeps one node of the previous one), and a read is checked against the
master after the tail answered. Liveness: with the master up and one node of
the chain up, the operator's probe and reconfigure restore service.

Failure model: crash-recovery with stable storage. Chain nodes may crash, stay
down or restart (a node's store is durable; a restarted node rejoins as a new
tail). The master may crash and restart (its configuration and epoch counter
are durable); while it is down, reads fail and the chain cannot change.
Failures are detected by timeouts, so a live node may be suspected and
removed (it is then refused or its reads fail validation: safe). Messages may
be lost, delayed, reordered between sessions, or cut by partitions. No
Byzantine behaviour.

Run it:

    choreo up protocols/chain_replication.py:write --census chain=3 \\
        --input key=x --input value=1 --input epoch=0 --input "store={}"

and in service mode, see docs/protocols/chain_replication.md.
"""

from __future__ import annotations

from typing import Any

from choreo import At, Role, Roles, choreography

#: seconds the master waits for every node's answer to a probe
PROBE_TIMEOUT = 0.3
#: seconds the master waits for every node of a new chain to acknowledge it
RECONFIG_TIMEOUT = 0.5

OK = "ok"
STALE = "stale"

Seq = tuple[int, int]
Update = tuple[Seq, str, Any]


# -- a node's store (durable) ----------------------------------------------------------
#
# epoch, chain: the configuration the node adopted; data: key -> (seq, value);
# next: the head's counter; sent: seq -> update it holds (and passed on), not yet
# stable: what it re-sends after a failure; seen: seqs held, not yet stable (a
# joining node's snapshot brings seen without sent: its successors get snapshots).


def initial_config(store: dict[str, Any], chain: tuple[str, ...] | list[str]) -> None:
    """Give a fresh node store epoch 0 with ``chain`` (else nothing changes)."""
    if "epoch" not in store:
        store.update(epoch=0, chain=list(chain), data={}, next=0, sent={}, seen=set())


def initial_master(mstore: dict[str, Any], chain: tuple[str, ...] | list[str]) -> None:
    """Give a fresh master store epoch 0 with ``chain`` (else nothing changes)."""
    if "epoch" not in mstore:
        mstore.update(epoch=0, chain=list(chain), proposed=0)


def _keep(store: dict[str, Any], update: Update) -> None:
    # also at a tail: it may be a middle node of the next chain, if this one is not committed
    seq, key, value = update
    held = store["data"].get(key)
    if held is None or tuple(held[0]) < seq:
        store["data"][key] = (seq, value)
    store["seen"].add(seq)
    store["sent"][seq] = update


def _update(raw: Any) -> Update:
    seq, key, value = raw
    return (tuple(seq), key, value)  # type: ignore[return-value]


def head_order(store: dict[str, Any], request: tuple[int, str, Any], chain: tuple[str, ...]):
    """Head: sequence the write and apply it, if the client's epoch is the node's."""
    epoch, key, value = request
    if epoch == 0:
        initial_config(store, chain)
    if epoch != store.get("epoch"):
        return (STALE, store.get("epoch"))
    store["next"] += 1
    update = ((epoch, store["next"]), key, value)
    _keep(store, update)
    return (OK, update)


def pass_on(store: dict[str, Any], msg: tuple[Any, ...], chain: tuple[str, ...]):
    """A node after the head: apply the update, if it is still of the node's epoch."""
    if msg[0] != OK:
        return msg
    update = _update(msg[1])
    if update[0][0] == 0:
        initial_config(store, chain)
    if update[0][0] != store.get("epoch"):
        return (STALE, store.get("epoch"))
    _keep(store, update)
    return (OK, update)


def outcome(msg: tuple[Any, ...]) -> tuple[Any, ...]:
    """Tail: the client's answer: ``("ok", seq)`` or ``("stale", epoch)``."""
    return (OK, tuple(msg[1][0])) if msg[0] == OK else msg


def stable(store: dict[str, Any], seqs: Any) -> None:
    """Every node: these updates are at the tail; forget them from Sent and seen."""
    for seq in seqs:
        seq = tuple(seq)
        store["sent"].pop(seq, None)
        store["seen"].discard(seq)


def tail_read(store: dict[str, Any], request: tuple[int, str], me: str) -> tuple[Any, ...]:
    """Tail: the value of the key, if the node is the tail of the client's epoch."""
    epoch, key = request
    if store.get("epoch", 0) != epoch or store.get("chain", [me])[-1] != me:
        return (STALE, store.get("epoch"))
    held = store.get("data", {}).get(key)
    return (OK, None if held is None else held[1])


def current(mstore: dict[str, Any]) -> tuple[int, Any]:
    """Master: the committed configuration ``(epoch, chain)``."""
    return (mstore.get("epoch", 0), mstore.get("chain"))


def validated(answer: tuple[Any, ...], config: tuple[int, Any], epoch: int) -> tuple[Any, ...]:
    """Client: the read's answer counts only if its epoch was still current after it."""
    if answer[0] == OK and config[0] == epoch:
        return answer
    return (STALE, config)


# -- reconfiguration ---------------------------------------------------------------------


def _members(mstore: dict[str, Any]) -> list[str]:
    """The nodes that may stay in the chain without a snapshot, in chain order.

    After a commit, the chain. A node that joined in an attempt that was not
    committed may lack its snapshot; a node that an attempt left out between
    two of its nodes may lack updates its successor got in that attempt's
    catch-up: both come back only as joining nodes, at the end.
    """
    return list(mstore.get("members", mstore["chain"]))


def plan(mstore: dict[str, Any], heard: dict[str, Any], census: tuple[str, ...]) -> tuple:
    """Master: ``(epoch, chain, next chain, needed)``.

    The next chain keeps the live members (``_members``), in order, then adds
    the other live nodes, to join. ``needed``: it differs from the committed
    chain, or an attempt was not committed (its nodes refuse the current
    epoch: a new one is due).
    """
    initial_master(mstore, census)
    epoch, chain = mstore["epoch"], list(mstore["chain"])
    kept = [n for n in _members(mstore) if n in heard]
    if not kept:  # nothing to copy the state from: wait for a member
        return (epoch, chain, chain, False)
    attempt = mstore.get("attempt", chain)
    order = [*attempt, *(n for n in census if n not in attempt)]
    planned = kept + [n for n in order if n in heard and n not in kept]
    return (epoch, chain, planned, planned != chain or mstore["proposed"] > epoch)


def propose(mstore: dict[str, Any], census: tuple[str, ...]) -> tuple[Any, ...]:
    """Master: a configuration ``(epoch, chain, joining)`` with a fresh epoch.

    ``epoch`` is ``None`` (nobody adopts it) unless the census keeps some
    members (``_members``), in their order, with the joining nodes after them.
    """
    initial_master(mstore, census)
    mstore["proposed"] = max(mstore["proposed"], mstore["epoch"]) + 1
    members = _members(mstore)
    kept = [n for n in census if n in members]
    joining = [n for n in census if n not in members]
    valid = (
        bool(kept) and kept == [n for n in members if n in kept] and list(census) == kept + joining
    )
    if not valid:
        return (None, list(census), joining)
    first, last = members.index(kept[0]), members.index(kept[-1])
    skipped = [n for n in members[first:last] if n not in kept]
    mstore["members"] = [n for n in members if n not in skipped]
    mstore["attempt"] = list(census)
    return (mstore["proposed"], list(census), joining)


def adopt(store: dict[str, Any], config: tuple[Any, ...]) -> None:
    """Node: adopt a newer configuration (durably); from now on refuse any other epoch."""
    epoch, chain, _ = config
    initial_config(store, chain)
    if epoch is not None and epoch > store["epoch"]:
        store["epoch"], store["chain"] = epoch, list(chain)


def adopted(store: dict[str, Any], config: tuple[Any, ...]) -> bool:
    """Node: whether it runs ``config`` (it may have adopted a newer one meanwhile)."""
    return config[0] is not None and store["epoch"] == config[0]


def have(store: dict[str, Any], config: tuple[Any, ...], me: str) -> Any:
    """Successor: what it has seen, or ``None`` to ask for a snapshot (it is joining)."""
    if not adopted(store, config) or me in config[2]:
        return None
    return sorted(store["seen"])


def resend(store: dict[str, Any], config: tuple[Any, ...], seen: Any) -> tuple[Any, ...]:
    """Predecessor: the Sent updates its successor has not seen, or a snapshot of its store."""
    if not adopted(store, config):
        return ("nothing",)
    if seen is None:
        return ("snapshot", dict(store["data"]), sorted(store["seen"]))
    seen = {tuple(s) for s in seen}
    return ("updates", [u for s, u in store["sent"].items() if s not in seen])


def catch_up(store: dict[str, Any], config: tuple[Any, ...], got: tuple[Any, ...]) -> None:
    """Successor: install the snapshot, or apply the re-sent updates (and pass them on later)."""
    if not adopted(store, config) or got[0] == "nothing":
        return
    if got[0] == "snapshot":
        store["data"] = {k: (tuple(v[0]), v[1]) for k, v in got[1].items()}
        store["seen"] = {tuple(s) for s in got[2]}
        store["sent"] = {}
    else:
        for raw in got[1]:
            _keep(store, _update(raw))


def tail_stable(store: dict[str, Any], config: tuple[Any, ...]) -> list[Any]:
    """New tail: everything it holds is stable."""
    return sorted(store["seen"]) if adopted(store, config) else []


def settle(mstore: dict[str, Any], config: tuple[Any, ...], acks: dict[str, bool]) -> tuple:
    """Master: commit the configuration if every node of the chain adopted it."""
    epoch, chain, _ = config
    if epoch is not None and all(acks.get(n) for n in chain) and epoch > mstore["epoch"]:
        mstore.update(epoch=epoch, chain=list(chain), members=list(chain), attempt=list(chain))
        return ("committed", epoch, list(chain))
    return ("failed", mstore["epoch"], list(mstore["chain"]))


# -- the choreographies ---------------------------------------------------------------------


@choreography
def write(
    client: Role,
    chain: Roles,
    key: At[str, "client"],
    value: At[object, "client"],
    epoch: At[int, "client"],
    store: At[dict, "chain"],
) -> At[tuple, "client"]:
    request = client.send((epoch, key, value), to=chain[0])
    with chain[0]:
        update = head_order(store, request, chain)
    for a, b in zip(chain, chain[1:]):  # noqa: B905, RUF007 (a chain, as the checker reads it)
        update = a.send(update, to=b)
        with b:
            update = pass_on(store, update, chain)
    with chain[-1]:
        answer = outcome(update)
    reply = chain[-1].send(answer, to=client)
    done = chain[-1].send(answer, to=chain)  # stable: every node drops it from Sent
    with chain:
        if done[0] == OK:
            stable(store, [done[1]])
    return reply


@choreography
def read(
    client: Role,
    master: Role,
    chain: Roles,
    key: At[str, "client"],
    epoch: At[int, "client"],
    store: At[dict, "chain"],
    mstore: At[dict, "master"],
) -> At[tuple, "client"]:
    request = client.send((epoch, key), to=chain[-1])
    with chain[-1]:
        found = tail_read(store, request, chain[-1])
    answer = chain[-1].send(found, to=client)
    client.send(epoch, to=master)  # asked only once the tail has answered
    config = master.send(current(mstore), to=client)
    with client:
        result = validated(answer, config, epoch)
    return result


@choreography
def config(client: Role, master: Role, mstore: At[dict, "master"]) -> At[tuple, "client"]:
    cfg = master.send(current(mstore), to=client)
    return cfg


@choreography
def probe(
    client: Role,
    master: Role,
    chain: Roles,
    mstore: At[dict, "master"],
    store: At[dict, "chain"],
) -> At[tuple, "client"]:
    with chain:
        alive = True
    heard = chain.send(alive, to=master, timeout=PROBE_TIMEOUT)
    with master:
        next_chain = plan(mstore, heard, chain)
    planned = master.send(next_chain, to=client)
    return planned


@choreography
def reconfigure(
    client: Role,
    master: Role,
    chain: Roles,
    mstore: At[dict, "master"],
    store: At[dict, "chain"],
) -> At[tuple, "client"]:
    with master:
        proposal = propose(mstore, chain)
    cfg = master.send(proposal, to=chain)
    with chain:
        adopt(store, cfg)
    for a, b in zip(chain, chain[1:]):  # noqa: B905, RUF007 (a chain, as the checker reads it)
        with b:
            seen = have(store, cfg, b)
        seen = b.send(seen, to=a)
        with a:
            missing = resend(store, cfg, seen)
        missing = a.send(missing, to=b)
        with b:
            catch_up(store, cfg, missing)
    with chain[-1]:
        held = tail_stable(store, cfg)
    held = chain[-1].send(held, to=chain)
    with chain:
        ok = adopted(store, cfg)
    acks = chain.send(ok, to=master, timeout=RECONFIG_TIMEOUT)
    with master:
        result = settle(mstore, proposal, acks)
    settled = master.send(result, to=client)
    done = master.send(result, to=chain)
    with chain:
        if done[0] == "committed":  # only the tail of a committed chain makes updates stable
            stable(store, held)
    return settled
