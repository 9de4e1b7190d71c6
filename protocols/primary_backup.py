"""Primary-backup replication of a key-value store, with views that drop failed backups.

Roles: ``client``, ``primary``, and ``backups``, a group whose members for a
session are the primary's current *view* (given like an input,
``backups=["backups.0", "backups.2"]``). Every operation is one session
against long-running primary and backup processes (service mode).

* ``put``: the client sends ``(key, value)`` to the primary, which gives it
  the next sequence number (its durable counter) and sends the update to
  every backup of the session in parallel (a multicast). Each backup applies
  it to its own durable store unless it already holds a newer version of the
  key (the version is the primary's sequence number, so backups converge to
  the primary's order whatever order updates arrive in) and acknowledges. The
  primary gathers the acknowledgements for ``ACK_TIMEOUT`` seconds (a gather
  with ``timeout=``). If every backup of its current view (and every backup
  that is joining it) acknowledged, it applies the update to its own store:
  that is the *commit point*; it answers ``OK``. Otherwise it answers
  ``RETRY`` and applies nothing; a backup of the view that was asked and did
  not acknowledge in time is removed from the view first (a failed or
  unreachable backup must not make writes hang: it costs one ``RETRY``).
* ``put_alone``: the same, for a view with no backups (a group has at least
  one member): the primary commits only if its view is empty.
* ``get``: answered by the primary from its store.
* ``rejoin``: state transfer to backups that are not in the view (restarted,
  or dropped after a lost message): the primary marks them *joining* (from
  then on every commit needs their acknowledgement too), sends them a
  snapshot of its store, which they merge by version, and moves those that
  acknowledged into the view.

Every answer carries ``(status, seq, view, joining, view_id)``: the client
runs its next ``put`` with ``backups=view + joining`` (``put_alone`` when
that is empty). A client with an out-of-date view cannot commit a write: a
backup of the primary's view that its session left out did not acknowledge,
so the answer is ``RETRY`` with the current view (the backup is not removed:
it was never asked). A primary with a fresh store takes the census of its
first session as its first view.

Guarantee: ``put`` and ``get`` are linearizable (every operation takes
effect at the primary, in its commit order; a put superseded by a higher
sequence number committed earlier takes effect just before it). Every put
answered ``OK`` is at every backup of the view it was acknowledged in (the
backup holds that update of the key, or a newer one), and every backup of
the current view holds every put acknowledged since it entered the view and,
from the snapshot, every put acknowledged before. A put answered ``RETRY``
did not take effect (a backup may hold its update, but the primary never
applies or exposes it); a put never answered may or may not have. A write
never hangs: it is answered within ``ACK_TIMEOUT`` plus message delays, or
fails at its deadline if the primary is down or cut off.

Failure model: crash-recovery with stable storage. Backups may crash, stay
down or restart; their store is durable (``Storage``), and a restarted
backup stays in the view only while it misses no update (one it missed makes
the primary drop it; ``rejoin`` brings it back). The primary may crash and
restart: its store, sequence counter and view are durable; while it is down
or cut off, operations fail at their deadline (no failover: the primary is a
fixed role). Messages may be lost, delayed, reordered between sessions, or cut
by partitions. No Byzantine behaviour.

Run it:

    choreo up protocols/primary_backup.py:put --census backups=3 \\
        --input key=x --input value=1 --input "pstore={}" --input "bstore={}"

and in service mode, see docs/protocols/primary_backup.md.
"""

from __future__ import annotations

from typing import Any

from choreo import At, Role, Roles, choreography

#: seconds the primary waits for the backups' acknowledgements of an update or a snapshot
ACK_TIMEOUT = 0.3

OK = "OK"
RETRY = "RETRY"


def initial_view(pstore: dict[str, Any], census: tuple[str, ...]) -> None:
    """A fresh primary store gets ``census`` as its first view (else nothing changes)."""
    if "view" not in pstore:
        pstore.update(data={}, seq=0, view=list(census), joining=[], view_id=0)


def _answer(pstore: dict[str, Any], status: str, seq: int) -> tuple[Any, ...]:
    return (status, seq, list(pstore["view"]), list(pstore["joining"]), pstore["view_id"])


def order(pstore: dict[str, Any], request: tuple[str, Any], census: tuple[str, ...]) -> tuple:
    """Primary: give a request the next sequence number (durably): the update ``(seq, key, value)``."""
    initial_view(pstore, census)
    pstore["seq"] += 1
    return (pstore["seq"], request[0], request[1])


def apply_update(store: dict[str, Any], update: tuple[int, str, Any]) -> None:
    """Backup (and primary, at commit): keep the update unless the key holds a newer version."""
    seq, key, value = update
    held = store.get(key)
    if held is None or held[0] < seq:
        store[key] = (seq, value)


def commit(
    pstore: dict[str, Any],
    update: tuple[int, str, Any],
    census: tuple[str, ...],
    acks: dict[str, int],
) -> tuple[Any, ...]:
    """Primary: commit ``update`` if every backup of the view (and joining) acknowledged it.

    Otherwise answer ``RETRY``, after removing from the view (and from the
    joining list) every backup that was asked (it is in ``census``) and did
    not acknowledge.
    """
    seq = update[0]
    required = pstore["view"] + pstore["joining"]
    acked = [b for b in required if acks.get(b) == seq]
    if len(acked) == len(required):
        apply_update(pstore["data"], update)  # the commit point
        return _answer(pstore, OK, seq)
    failed = [b for b in required if b in census and acks.get(b) != seq]
    if failed:
        pstore["view"] = [b for b in pstore["view"] if b not in failed]
        pstore["joining"] = [b for b in pstore["joining"] if b not in failed]
        pstore["view_id"] += 1
    return _answer(pstore, RETRY, seq)


def read(pstore: dict[str, Any], key: str) -> Any:
    """Primary: the committed value of ``key`` (``None`` if never written)."""
    held = pstore.get("data", {}).get(key)
    return None if held is None else held[1]


def start_join(pstore: dict[str, Any], census: tuple[str, ...]) -> dict[str, Any]:
    """Primary: mark the census's backups that are not in the view as joining; a snapshot."""
    initial_view(pstore, census)
    new = [b for b in census if b not in pstore["view"] and b not in pstore["joining"]]
    if new:
        pstore["joining"] = pstore["joining"] + new
        pstore["view_id"] += 1
    return dict(pstore["data"])


def install(bstore: dict[str, Any], snapshot: dict[str, Any]) -> None:
    """Backup: merge the primary's snapshot, key by key, keeping the newer version."""
    for key, (seq, value) in snapshot.items():
        apply_update(bstore, (seq, key, value))


def finish_join(
    pstore: dict[str, Any], census: tuple[str, ...], acks: dict[str, bool]
) -> tuple[Any, ...]:
    """Primary: move the joining backups that installed the snapshot into the view.

    A backup that was dropped from the joining list meanwhile (a put it did
    not acknowledge) stays out: it may have missed a committed put.
    """
    done = [b for b in census if b in pstore["joining"] and acks.get(b)]
    if done:
        pstore["joining"] = [b for b in pstore["joining"] if b not in done]
        pstore["view"] = pstore["view"] + done
        pstore["view_id"] += 1
    return _answer(pstore, OK, pstore["seq"])


@choreography
def put(
    client: Role,
    primary: Role,
    backups: Roles,
    key: At[str, "client"],
    value: At[object, "client"],
    pstore: At[dict, "primary"],
    bstore: At[dict, "backups"],
) -> At[tuple, "client"]:
    request = client.send((key, value), to=primary)
    with primary:
        update = order(pstore, request, backups)
    forwarded = primary.send(update, to=backups)  # every backup, in parallel
    with backups:
        apply_update(bstore, forwarded)
        ack = forwarded[0]
    acks = backups.send(ack, to=primary, timeout=ACK_TIMEOUT)  # who answered in time
    with primary:
        reply = commit(pstore, update, backups, acks)  # OK (committed) or RETRY (new view)
    answer = primary.send(reply, to=client)
    return answer


@choreography
def put_alone(
    client: Role,
    primary: Role,
    key: At[str, "client"],
    value: At[object, "client"],
    pstore: At[dict, "primary"],
) -> At[tuple, "client"]:
    request = client.send((key, value), to=primary)
    with primary:
        update = order(pstore, request, ())
        reply = commit(pstore, update, (), {})  # OK only if the view has no backup
    answer = primary.send(reply, to=client)
    return answer


@choreography
def get(
    client: Role, primary: Role, key: At[str, "client"], pstore: At[dict, "primary"]
) -> At[object, "client"]:
    k = client.send(key, to=primary)
    with primary:
        value = read(pstore, k)
    answer = primary.send(value, to=client)
    return answer


@choreography
def rejoin(
    primary: Role,
    backups: Roles,
    pstore: At[dict, "primary"],
    bstore: At[dict, "backups"],
) -> At[tuple, "primary"]:
    with primary:
        snapshot = start_join(pstore, backups)  # from now on, commits need them too
    snap = primary.send(snapshot, to=backups)
    with backups:
        install(bstore, snap)
        ack = True
    acks = backups.send(ack, to=primary, timeout=ACK_TIMEOUT)
    with primary:
        view = finish_join(pstore, backups, acks)
    return view
