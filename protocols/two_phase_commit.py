"""Two-phase commit: a coordinator and a group of participants commit a transaction or abort it.

``two_phase_commit`` is one transaction (Gray, 1978). Phase 1: the coordinator
sends PREPARE to every participant; each participant forces its vote to its
own log (a yes is a promise to commit if told to) and answers yes or no; one
that votes no aborts at once. The coordinator waits ``VOTE_TIMEOUT`` seconds
for the votes (a gather with ``timeout=``): it decides commit only if every
participant voted yes in time, abort otherwise. Phase 2: it forces the
decision to its log *before* sending it, sends it to every participant, which
logs it, and collects acknowledgements for ``ACK_TIMEOUT`` seconds; when every
participant has acknowledged, it logs an end record (the transaction may be
forgotten).

``recover`` is run after the coordinator restarts (or whenever participants
are in doubt): the coordinator reads its log and sends the logged decision
again; a coordinator that crashed before logging any decision decides abort
(no participant can have been told commit) and logs that before sending it.
Prepared participants learn the outcome there.

Logs are append-only lists of records in each role's ``Storage`` (``store["log"]``):
``("vote", tx, "yes"|"no")``, ``("decision", tx, outcome, source)`` with
``source`` ``"self"`` (decided alone) or ``"coordinator"`` (told), ``("end", tx)``.

Guarantee (atomic commit): every role that decides decides the same outcome,
and no role ever reverses its decision; the outcome is commit only if every
participant voted yes; a participant that voted yes never decides on its own:
it is blocked until it hears the coordinator's decision, in this session or
in a later ``recover``. Once the coordinator is up and the network delivers
``recover``'s messages, every participant decides.

Failure model: crash-recovery. Any role may crash and restart; the logs
(``Storage``) survive, everything else is lost. Messages may be lost or
delayed arbitrarily (a late vote counts as no). No Byzantine behaviour. 2PC
is blocking: while the coordinator is down, prepared participants can only
wait (their session fails at its deadline; they never decide alone).

Run it, every role and member its own process (docs/protocols/two_phase_commit.md):

    choreo up protocols/two_phase_commit.py:two_phase_commit --census participants=3 \
        --input transaction=t1 --input can_commit=True --input "cstore={}" --input "pstore={}"
"""

from __future__ import annotations

from typing import Any

from choreo import At, Role, Roles, choreography

#: seconds the coordinator waits for the votes; a participant not heard by then counts as a no
VOTE_TIMEOUT = 1.0
#: seconds the coordinator waits for acknowledgements of its decision
ACK_TIMEOUT = 1.0

COMMIT = "commit"
ABORT = "abort"


def write(store: dict[str, Any], record: tuple[Any, ...]) -> None:
    """Force ``record`` to the log in ``store`` (durable when this returns)."""
    store["log"] = [*store.get("log", []), record]


def logged_decision(store: dict[str, Any], tx: str) -> str | None:
    """The first decision logged for ``tx`` (decisions are never changed), or ``None``."""
    for record in store.get("log", []):
        if record[0] == "decision" and record[1] == tx:
            return str(record[2])
    return None


def logged_vote(store: dict[str, Any], tx: str) -> str | None:
    """The vote logged for ``tx``, or ``None`` if this participant never voted."""
    for record in store.get("log", []):
        if record[0] == "vote" and record[1] == tx:
            return str(record[2])
    return None


@choreography
def two_phase_commit(
    coordinator: Role,
    participants: Roles,
    transaction: At[str, "coordinator"],
    can_commit: At[bool, "participants"],
    cstore: At[dict, "coordinator"],
    pstore: At[dict, "participants"],
) -> At[str, "participants"]:
    # phase 1: PREPARE, and every participant's vote
    with coordinator:
        prepare = transaction
    tx = coordinator.send(prepare, to=participants)
    with participants:
        vote = "yes" if can_commit else "no"
        write(pstore, ("vote", tx, vote))  # forced before it is sent: a yes binds
        if vote == "no":
            write(pstore, ("decision", tx, ABORT, "self"))  # a no-voter may abort at once
    votes = participants.send(vote, to=coordinator, timeout=VOTE_TIMEOUT)
    with coordinator:
        unanimous = len(votes) == len(participants) and all(v == "yes" for v in votes.values())
        decision = COMMIT if unanimous else ABORT
        write(cstore, ("decision", transaction, decision, "self"))  # forced BEFORE it is sent
    # phase 2: the decision, and acknowledgements
    outcome = coordinator.send(decision, to=participants)
    with participants:
        write(pstore, ("decision", tx, outcome, "coordinator"))
        ack = tx
    acks = participants.send(ack, to=coordinator, timeout=ACK_TIMEOUT)
    with coordinator:
        if len(acks) == len(participants):
            write(cstore, ("end", transaction))
    return outcome


@choreography
def recover(
    coordinator: Role,
    participants: Roles,
    transaction: At[str, "coordinator"],
    cstore: At[dict, "coordinator"],
    pstore: At[dict, "participants"],
) -> At[str, "participants"]:
    """After a restart: send every participant the logged decision (abort if none was logged)."""
    with coordinator:
        logged = logged_decision(cstore, transaction)
        if logged is None:  # crashed before logging: nobody can have been told commit
            logged = ABORT
            write(cstore, ("decision", transaction, ABORT, "self"))
        decision = (transaction, logged)
    told = coordinator.send(decision, to=participants)
    with participants:
        tx, outcome = told
        write(pstore, ("decision", tx, outcome, "coordinator"))
        ack = tx
    acks = participants.send(ack, to=coordinator, timeout=ACK_TIMEOUT)
    with coordinator:
        if len(acks) == len(participants):
            write(cstore, ("end", transaction))
    return outcome
