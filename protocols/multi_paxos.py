"""Multi-Paxos: a replicated log of key-value operations, with a stable leader.

Roles: ``client``, and ``replicas``, a group of ``2f+1`` processes, each an
acceptor, a learner and a possible leader (as in "Paxos Made Moderately
Complex", van Renesse and Altinbuken). A session's census is *every* replica,
the one acting as leader first: ``replicas=["replicas.2", "replicas.0",
"replicas.1"]`` makes ``replicas.2`` lead that session. Every operation is a
session against long-running replica processes (service mode).

* ``elect``: phase 1, once per leadership. The candidate picks a ballot
  ``(round, name)`` above every ballot it has used or heard of (its rounds are
  durable) and sends Prepare(ballot, first slot missing from its log) to every
  replica. An acceptor whose promise is not above the ballot promises it
  (durably) and answers with everything it has accepted from that slot on;
  otherwise it refuses with its promise. With a majority of promises
  (``quorum=majority``) the candidate leads: for each slot it proposes the
  value accepted with the highest ballot among the promises, a no-op for a
  slot below the highest one where none was accepted, and new operations
  after. A refusal makes it learn the higher ballot.
* ``submit``: phase 2, per operation. The client sends its operation to the
  leader, which gives it the next slot and sends Accept(ballot, every
  proposal of its own not yet decided, this one included) to every replica.
  An acceptor whose promise is not above the ballot accepts them all
  (durably) and answers; otherwise it refuses with its promise. With a
  majority of acceptances (``quorum=majority``) those slots are decided: the
  leader sends them to every replica, which adds them to its log (durably).
  The leader applies its log in slot order to a key-value store (``("put",
  key, value, id)``, ``("get", key, id)``) and answers the client with the
  operation's result: a get sees exactly the puts of the slots before it.
  A leader whose accepts are refused learns the higher ballot, stops leading
  (it must run ``elect`` again, with a higher ballot: phase 1 again) and
  answers ``retry``; so does a replica that is not leading.

Re-proposing every pending proposal in every accept (the same value, at the
same ballot, for the same slot) is what fills the gaps: when the session of
slot 5 is lost, the session of slot 6 decides slot 5 too. So after a
successful accept, every slot up to the new one is decided at the leader, and
it can answer.

Acceptor state, durable (``store``): ``promised``, ``accepted`` (slot ->
``(ballot, value)``), and ``events`` (its promises and accepts, for the tests)
if the store holds an ``events`` list when served (without one, none is kept).
Learner state, durable: ``log`` (slot -> value) and ``decided`` (every
``(slot, value)`` it was told, for the tests). Leader state (``leader``) is
volatile: lost on a crash, after which the replica must be elected again
with a new ballot; it never proposes two values for one slot at one ballot.

Guarantee: agreement (no two replicas' logs differ at a slot, at any time);
validity (every decided value is an operation a client submitted, or a
no-op); the key-value operations are linearizable (an operation takes effect
at its slot; a client answered ``ok`` got the result of the log prefix up to
it). A client answered ``retry`` or not at all does not know whether its
operation was decided: it may still be, later (retry it as a new operation).
Liveness: with a majority of replicas up and connected, one leader elected
and no other candidate competing, every operation is decided and answered.

Failure model: crash-recovery with stable storage: any replica, leader
included, may crash and restart (its acceptor and learner state and its
ballot rounds survive; its leadership does not). Messages may be lost,
delayed, reordered between sessions, or cut by partitions. Safety needs no
bound on failures; liveness needs a majority. No Byzantine behaviour.

Run it:

    choreo up protocols/multi_paxos.py:elect --census replicas=3 \\
        --input "store={}" --input "leader={}"

(and in service mode, ``elect`` then ``submit``: see docs/protocols/multi_paxos.md).
"""

from __future__ import annotations

from typing import Any

from choreo import At, Role, Roles, choreography, majority

NOOP = ("noop",)
OK = "ok"
RETRY = "retry"

Ballot = tuple[int, str]


def _ballot(b: Any) -> Ballot | None:
    return None if b is None else (int(b[0]), str(b[1]))


def _record(store: dict[str, Any], event: tuple[Any, ...]) -> None:
    """Append ``event`` to ``store["events"]`` if the store keeps a log (see above)."""
    events = store.get("events")
    if isinstance(events, list):
        events.append(event)


def _members(store: dict[str, Any], census: tuple[str, ...]) -> bool:
    """Whether ``census`` is every replica (the first census a store sees fixes them)."""
    members = store.setdefault("members", sorted(census))
    return sorted(census) == members


def _first_hole(store: dict[str, Any]) -> int:
    log = store.get("log", {})
    slot = 0
    while slot in log:
        slot += 1
    return slot


# -- phase 1 ------------------------------------------------------------------------


def start_election(
    store: dict[str, Any], leader: dict[str, Any], census: tuple[str, ...]
) -> tuple[Any, ...] | None:
    """Candidate: a ballot above any it used or heard of (durably); Prepare(ballot, from slot)."""
    leader["active"] = False
    if not _members(store, census):
        return None
    heard = _ballot(store.get("heard"))
    store["round"] = max(store.get("round", 0), heard[0] if heard else 0) + 1
    ballot = (store["round"], census[0])
    leader["ballot"] = ballot
    return (ballot, _first_hole(store))


def on_prepare(store: dict[str, Any], prepare: tuple[Any, ...] | None) -> tuple[Any, ...]:
    """Acceptor: promise the ballot unless it promised a higher one; report what it accepted."""
    if prepare is None:
        return ("idle",)
    ballot, start = _ballot(prepare[0]), prepare[1]
    promised = _ballot(store.get("promised"))
    if promised is not None and ballot < promised:  # type: ignore[operator]
        return ("refused", promised)
    if promised != ballot:
        store["promised"] = ballot
        _record(store, ("promise", ballot))
    accepted = {s: a for s, a in store.get("accepted", {}).items() if s >= start}
    return ("promise", ballot, accepted)


def end_election(
    store: dict[str, Any],
    leader: dict[str, Any],
    prepare: tuple[Any, ...] | None,
    promises: dict[str, tuple[Any, ...]],
    census: tuple[str, ...],
) -> tuple[Any, ...]:
    """Candidate: lead if a majority promised; propose the values they accepted (no-ops in gaps)."""
    if prepare is None:
        return (RETRY, "census must be every replica")
    ballot, start = _ballot(prepare[0]), prepare[1]
    granted = [p for p in promises.values() if p[0] == "promise" and _ballot(p[1]) == ballot]
    refused = [_ballot(p[1]) for p in promises.values() if p[0] == "refused"]
    if refused:
        _hear(store, max(refused))  # type: ignore[type-var]
    if 2 * len(granted) <= len(census) or leader.get("ballot") != ballot:
        return (RETRY, store.get("heard"))
    best: dict[int, tuple[Ballot, Any]] = {}
    for p in granted:
        for slot, (b, v) in p[2].items():
            if slot not in best or _ballot(b) > best[slot][0]:  # type: ignore[operator]
                best[slot] = (_ballot(b), v)  # type: ignore[assignment]
    top = max(best, default=start - 1)
    log = store.get("log", {})
    proposals = {}
    for slot in range(start, top + 1):
        if slot not in log:
            proposals[slot] = best[slot][1] if slot in best else NOOP
    leader.update(active=True, proposals=proposals, next=max(top + 1, start), waiting={})
    return (OK, ballot)


def _hear(store: dict[str, Any], ballot: Ballot) -> None:
    heard = _ballot(store.get("heard"))
    if heard is None or ballot > heard:
        store["heard"] = ballot


# -- phase 2 ------------------------------------------------------------------------


def propose(
    store: dict[str, Any], leader: dict[str, Any], op: tuple[Any, ...], census: tuple[str, ...]
) -> tuple[Any, ...] | None:
    """Leader: the op gets the next slot; Accept(ballot, every undecided proposal, its slot)."""
    if not leader.get("active") or not _members(store, census):
        return None
    slot = leader["next"]
    leader["next"] += 1
    leader["proposals"][slot] = tuple(op)
    leader["waiting"][slot] = tuple(op)
    return (leader["ballot"], dict(leader["proposals"]), slot)


def on_accept(store: dict[str, Any], batch: tuple[Any, ...] | None) -> tuple[Any, ...]:
    """Acceptor: accept every proposal of the batch unless it promised a higher ballot."""
    if batch is None:
        return ("idle",)
    ballot, values = _ballot(batch[0]), batch[1]
    promised = _ballot(store.get("promised"))
    if promised is not None and ballot < promised:  # type: ignore[operator]
        return ("refused", promised)
    store["promised"] = ballot
    accepted = store.setdefault("accepted", {})
    for slot, value in values.items():
        accepted[slot] = (ballot, tuple(value))
    _record(store, ("accept", ballot, tuple(sorted(values))))
    return ("accepted", ballot)


def tally(
    store: dict[str, Any],
    leader: dict[str, Any],
    batch: tuple[Any, ...] | None,
    replies: dict[str, tuple[Any, ...]],
    census: tuple[str, ...],
) -> dict[int, Any]:
    """Leader: the slots a majority accepted are decided; a refusal ends the leadership."""
    if batch is None:
        return {}
    ballot, values = _ballot(batch[0]), batch[1]
    refused = [_ballot(r[1]) for r in replies.values() if r[0] == "refused"]
    if refused:
        _hear(store, max(refused))  # type: ignore[type-var]
        if leader.get("ballot") == ballot:
            leader["active"] = False  # a higher ballot leads now: back to phase 1
    accepted = [r for r in replies.values() if r[0] == "accepted" and _ballot(r[1]) == ballot]
    if 2 * len(accepted) <= len(census):
        return {}
    if leader.get("ballot") == ballot:
        for slot in values:
            leader["proposals"].pop(slot, None)
    return {slot: tuple(v) for slot, v in values.items()}


def learn(store: dict[str, Any], decided: dict[int, Any]) -> None:
    """Learner: add the decided slots to the log (durably)."""
    log = store.setdefault("log", {})
    for slot, value in decided.items():
        value = tuple(value)
        if log.get(slot) != value:
            store["decided"] = [*store.get("decided", []), (slot, value)]
        log.setdefault(slot, value)


def apply(kv: dict[str, Any], op: tuple[Any, ...]) -> Any:
    """The state machine: a put stores, a get reads, a no-op does nothing."""
    if op[0] == "put":
        kv[op[1]] = op[2]
        return None
    if op[0] == "get":
        return kv.get(op[1])
    return None


def respond(
    store: dict[str, Any], leader: dict[str, Any], batch: tuple[Any, ...] | None
) -> tuple[Any, ...]:
    """Leader: apply the log prefix; the op's result if its slot decided *it*, else ``retry``.

    A slot this leader gave an op may have been decided with another value
    (a higher ballot led meanwhile): a result is kept only for the op itself.
    """
    if batch is None:
        return (RETRY, store.get("heard"))
    slot = batch[2]
    log = store.get("log", {})
    kv = leader.setdefault("kv", {})
    results = leader.setdefault("results", {})
    waiting = leader.get("waiting", {})
    applied = leader.get("applied", 0)
    while applied in log:
        result = apply(kv, log[applied])
        if waiting.get(applied) == log[applied]:
            results[applied] = result
        applied += 1
    leader["applied"] = applied
    waiting.pop(slot, None)
    if slot in results:
        return (OK, results.pop(slot), slot)
    return (RETRY, store.get("heard"))


# -- the choreographies ------------------------------------------------------------


@choreography
def elect(
    client: Role,
    replicas: Roles,
    store: At[dict, "replicas"],
    leader: At[dict, "replicas"],
) -> At[tuple, "client"]:
    with replicas[0]:
        prepare = start_election(store, leader, replicas)
    prepare = replicas[0].send(prepare, to=replicas)
    with replicas:
        promise = on_prepare(store, prepare)
    promises = replicas.send(promise, to=replicas[0], quorum=majority)
    with replicas[0]:
        outcome = end_election(store, leader, prepare, promises, replicas)
    outcome = replicas[0].send(outcome, to=client)
    return outcome


@choreography
def submit(
    client: Role,
    replicas: Roles,
    op: At[tuple, "client"],
    store: At[dict, "replicas"],
    leader: At[dict, "replicas"],
) -> At[tuple, "client"]:
    request = client.send(op, to=replicas[0])
    with replicas[0]:
        batch = propose(store, leader, request, replicas)
    batch = replicas[0].send(batch, to=replicas)
    with replicas:
        reply = on_accept(store, batch)
    replies = replicas.send(reply, to=replicas[0], quorum=majority)
    with replicas[0]:
        decided = tally(store, leader, batch, replies, replicas)
    decided = replicas[0].send(decided, to=replicas)
    with replicas:
        learn(store, decided)
    with replicas[0]:
        answer = respond(store, leader, batch)
    answer = replicas[0].send(answer, to=client)
    return answer
