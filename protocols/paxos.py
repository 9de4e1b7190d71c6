"""Single-decree Paxos: proposers, a group of 2f+1 acceptors, learners agree on one value.

``propose`` is one attempt of one proposer (Lamport, "The Part-Time
Parliament" / "Paxos Made Simple"), a session against the acceptors'
persistent state; several proposers, and several attempts, are several
sessions, one after another or at the same time.

* Phase 1: the proposer sends Prepare(n) to every acceptor, ``n`` a ballot
  ``(round, proposer id)``: unique to the attempt, and higher on every retry.
  An acceptor whose promise is below ``n`` promises ``n`` (persisted before it
  answers) and answers Promise(n, its last accepted ``(ballot, value)``); one
  that promised higher answers with that promise instead, which is a
  refusal. (As in van Renesse and Altinbuken's "Paxos Made Moderately
  Complex", every answer carries the acceptor's current promise, and the
  proposer counts the ones equal to ``n``: a repeated Prepare(n) is answered
  yes again, safely, since a ballot belongs to one attempt.) The proposer waits for a majority
  (``quorum=majority``).
* Phase 2, if that majority promised: the proposer proposes the value of the
  highest-numbered proposal accepted among the promises, or its own value if
  none was, and sends Accept(n, v) to every acceptor. An acceptor whose
  promise is not above ``n`` accepts (persisted before it answers) and sends
  Accepted(n, v) to every learner and to the proposer; one that promised
  higher refuses.
* A learner learns ``v`` when a majority of the acceptors accepted ``(n, v)``.
  It waits ``LEARN_TIMEOUT`` seconds for the acceptors' answers (a gather with
  ``timeout=``). The proposer knows ``v`` is chosen when a majority accepted.

A refused attempt (a promise above ``n`` seen, or accepts refused) returns
the highest promise the proposer heard of; the proposer retries in a later
session with a higher round (``next_ballot``). An attempt whose quorum never
answers fails at its deadline; the proposer retries the same way.

Acceptor state, in its ``Storage`` (``astore``): ``promised`` (a ballot) and
``accepted`` (``(ballot, value)`` or ``None``). Learner state (``lstore``):
``learned`` (the value). A store that holds an ``events`` list when served
also gets a log appended to it: an acceptor's promises and accepts, a
learner's every ``(ballot, value)`` learned (the tests check them); without
one, a long-running server keeps constant state.

Guarantee: agreement (no two learners, and no two proposers told "chosen",
ever hold different values), validity (only a proposed value is chosen), and
no acceptor goes back on a promise. Liveness: with a majority of acceptors up
and a network that delivers, one proposer retrying alone gets a value
chosen and learned (with several proposers retrying at once, Paxos may
duel forever; retry after a random backoff).

Failure model: crash-recovery of acceptors and learners (their ``Storage``
survives; nothing else does), crash-stop of proposers (an attempt may stop
at any point), messages lost, delayed or reordered between sessions (FIFO
within one pair in one session); up to ``f`` of ``2f+1`` acceptors down for
liveness, any number for safety. No Byzantine behaviour.

Run one attempt, every role and member its own process (docs/protocols/paxos.md):

    choreo up protocols/paxos.py:propose --census acceptors=3 --census learners=2 \
        --input value=A --input "ballot=(1, 0)" --input "astore={}" --input "lstore={}"
"""

from __future__ import annotations

from typing import Any

from choreo import At, Role, Roles, choreography, majority

#: seconds a learner waits for every acceptor's Accepted before counting what it heard
LEARN_TIMEOUT = 0.5


def ballot_of(round_: int, proposer_id: int) -> tuple[int, int]:
    """The ballot of round ``round_`` of proposer ``proposer_id``: unique, totally ordered."""
    return (round_, proposer_id)


def next_ballot(ballot: tuple[int, int], seen: tuple[int, int] | None) -> tuple[int, int]:
    """The ballot of a proposer's next attempt: above its last one and above any promise seen."""
    round_ = ballot[0] if seen is None else max(ballot[0], seen[0])
    return (round_ + 1, ballot[1])


def _log(store: dict[str, Any], event: tuple[Any, ...]) -> None:
    """Append ``event`` to ``store["events"]`` if the store keeps a log (see above)."""
    events = store.get("events")
    if isinstance(events, list):
        events.append(event)


def on_prepare(astore: dict[str, Any], n: tuple[int, int]) -> tuple[Any, ...]:
    """Acceptor, Prepare(n): promise ``n`` if above the current promise; answer the promise."""
    n = tuple(n)
    promised = astore.get("promised")
    if promised is None or n > promised:
        astore["promised"] = promised = n
        _log(astore, ("promise", n))
    return ("promise", promised, astore.get("accepted"))


def on_accept(astore: dict[str, Any], proposal: tuple[Any, Any]) -> tuple[Any, ...]:
    """Acceptor, Accept(n, v): accept unless it promised a higher ballot."""
    n, v = tuple(proposal[0]), proposal[1]
    promised = astore.get("promised")
    if promised is not None and n < promised:
        return ("refused", promised)
    astore["promised"] = n
    astore["accepted"] = (n, v)
    _log(astore, ("accept", n, v))
    return ("accepted", n, v)


def choose_value(
    promises: dict[str, tuple[Any, ...]], own: Any
) -> tuple[Any, tuple[int, int] | None]:
    """The value to propose: that of the highest-numbered accepted proposal, else ``own``.

    Also the highest promise among the answers (``None`` if none).
    """
    accepted = [p[2] for p in promises.values() if p[2] is not None]
    value = max(accepted, key=lambda a: tuple(a[0]))[1] if accepted else own
    promised = [tuple(p[1]) for p in promises.values()]
    return value, max(promised) if promised else None


def on_accepted(lstore: dict[str, Any], heard: dict[str, tuple[Any, ...]], acceptors: int) -> None:
    """Learner: learn ``v`` if a majority of ``acceptors`` accepted the same ``(n, v)``."""
    counts: dict[tuple[Any, ...], int] = {}
    for reply in heard.values():
        if reply[0] == "accepted":
            key = (tuple(reply[1]), reply[2])
            counts[key] = counts.get(key, 0) + 1
    for (n, v), count in counts.items():
        if 2 * count > acceptors:
            _log(lstore, (n, v))
            lstore.setdefault("learned", v)


@choreography
def propose(
    proposer: Role,
    acceptors: Roles,
    learners: Roles,
    value: At[object, "proposer"],
    ballot: At[tuple, "proposer"],
    astore: At[dict, "acceptors"],
    lstore: At[dict, "learners"],
) -> At[tuple, "proposer"]:
    # phase 1: Prepare(n) / Promise(n, last accepted)
    with proposer:
        mine = tuple(ballot)
        prepare = mine
    n = proposer.send(prepare, to=acceptors)
    with acceptors:
        promise = on_prepare(astore, n)
    promises = acceptors.send(promise, to=proposer, quorum=majority)
    with proposer:
        granted = all(tuple(p[1]) == mine for p in promises.values())
        v, highest = choose_value(promises, value)
    if granted:
        # phase 2: Accept(n, v) / Accepted(n, v), to the learners and the proposer
        with proposer:
            accept = (mine, v)
        proposal = proposer.send(accept, to=acceptors)
        with acceptors:
            accepted = on_accept(astore, proposal)
        heard = acceptors.send(accepted, to=learners, timeout=LEARN_TIMEOUT)
        with learners:
            on_accepted(lstore, heard, len(acceptors))
        votes = acceptors.send(accepted, to=proposer, quorum=majority)
        with proposer:
            refusals = [tuple(x[1]) for x in votes.values() if x[0] == "refused"]
            if refusals:
                outcome = ("retry", None, max(refusals))
            else:
                outcome = ("chosen", v, mine)
    else:
        with proposer:
            outcome = ("retry", None, highest)
    return outcome
