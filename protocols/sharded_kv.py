"""A sharded key-value store: keys placed on nodes by hash, moved on join and leave.

A group ``nodes`` holds the data, each member its own ``store`` (a dict). The
*membership* is a list of node names; the *placement* maps each key to its
owner among the members, by one of two schemes:

* ``"mod"``: ``members[key_hash(key) mod N]``. On a join (N -> N+1) a key stays
  only when ``h mod N == h mod (N+1)``, so about ``N/(N+1)`` of the keys move.
* ``"ring"``: consistent hashing. Each member has ``VNODES`` points on a ring
  of 32-bit hashes (``key_hash("member#i")``); a key belongs to the member of
  the first point at or after ``key_hash(key)``, wrapping around. On a join only
  the keys the new node takes over move: about ``1/(N+1)`` of them.

``key_hash`` is crc32 followed by murmur3's 32-bit finalizer: deterministic
(never Python's salted ``hash()``: every process must place a key on the same
node), and spread well enough for the ring.

Three choreographies:

* ``put`` / ``get``: the client computes the key's owner (the census of
  ``nodes`` is the membership) and sends the request to that node only; the
  others at most learn, by a selection message, that it is not for them.
* ``rebalance``: the coordinator tells every node the old and the new
  membership; each node first drops any stale copy it holds of a key it does
  not own under the old placement (left by an earlier rebalance that failed or
  whose decision it missed), then sends every key whose new owner is another
  node to that owner (a group-to-group scatter: every node sends every node a
  part, empty or not). A node waits ``SHUFFLE_TIMEOUT`` for the parts; with
  every part, it writes them into its store. Then it acknowledges to the
  coordinator, naming the nodes whose part it did not get, if any. The
  coordinator gathers the acknowledgements with ``timeout=ACK_TIMEOUT``. With a
  complete acknowledgement from every node it *commits*, otherwise it *aborts*.
  It writes the decision to its durable ``log`` first (``log["members"]``, the
  membership in force from then on), then sends it: on a commit every node
  deletes the keys it does not own under the new placement; on an abort every
  node deletes the copies it received, and the coordinator fails with
  ``RebalanceError`` naming the nodes it did not hear and whose keys were missing.

Guarantee: ``get`` returns the last value ``put`` (``None`` for a key never
put). A committed rebalance returns ``{"members": new, "moved": n}`` and puts
every key at its owner under the new placement, with its last value; with no
fault, at exactly its owner. An aborted one leaves the old placement in force,
every key at its owner. No key is ever lost: an old owner deletes a key only
after the coordinator heard from every node that it stored all it was sent, so
at every moment the owner under the placement in force (old until the commit,
new from then on) holds every key.

Failure model: nodes may crash; messages to and from nodes may be lost or
delayed. The client and the coordinator stay up, and a node's ``store`` is
durable (it survives the node's crash, like ``choreo.sim.Storage``; the next
session sees it), and so is the coordinator's ``log``. One session at a time
uses the stores (no put runs during a rebalance), and the caller passes the
membership in force (``log["members"]``) as ``old``. A crashed
node or a lost message makes the rebalance fail at the coordinator within
``ACK_TIMEOUT`` (``RebalanceError``, naming the silent nodes and whose keys
were missing); then the old membership stays, and the rebalance may be run
again. A node that missed the decision keeps stale copies: they are never
read (requests go to owners) and the next rebalance whose census includes the
node drops them. ``put`` and ``get`` need the key's owner to be up.

Over gRPC a send to a crashed node also fails the sender (choreo's transport
waits for the peer, then raises): the rebalance then fails with that
``TransportError``, possibly while the coordinator sends its decision, after
some nodes acted on it. The decision is in the ``log`` by then, so
``log["members"]`` still names the membership in force, whose owners hold
every key (as in two-phase commit, the coordinator's log settles the outcome).
"""

from __future__ import annotations

import bisect
import functools
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import choreo
from choreo import At, Role, Roles, choreography

#: seconds a node waits for every other node's keys before it gives up (and acknowledges that)
SHUFFLE_TIMEOUT = 3.0

#: seconds the coordinator waits for every node's acknowledgement before it aborts
ACK_TIMEOUT = 5.0

#: points each node has on the consistent-hashing ring
VNODES = 256

SCHEMES = ("mod", "ring")


class RebalanceError(Exception):
    """A rebalance was aborted: the old placement still holds, no key was lost."""


def key_hash(text: str) -> int:
    """A 32-bit hash, the same in every process: crc32, then murmur3's finalizer.

    crc32 alone is linear: the points of ``"n#0"``, ``"n#1"``, ... of two nodes
    would be correlated and clump on the ring; the finalizer spreads them.
    """
    h = zlib.crc32(text.encode())
    h = ((h ^ (h >> 16)) * 0x85EBCA6B) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)


@functools.lru_cache(maxsize=64)
def _ring(members: tuple[str, ...]) -> tuple[list[int], list[str]]:
    points = sorted((key_hash(f"{m}#{i}"), m) for m in members for i in range(VNODES))
    return [p for p, _ in points], [m for _, m in points]


def owner_of(key: str, members: Sequence[str], scheme: str) -> str:
    """The member owning ``key`` under ``scheme`` (``"mod"`` or ``"ring"``)."""
    if not members:
        raise ValueError("an empty membership owns no key")
    if scheme == "mod":
        return members[key_hash(key) % len(members)]
    if scheme == "ring":
        points, owners = _ring(tuple(members))
        return owners[bisect.bisect_left(points, key_hash(key)) % len(points)]
    raise ValueError(f"unknown placement scheme {scheme!r}; use one of {SCHEMES}")


def placement(keys: Sequence[str], members: Sequence[str], scheme: str) -> dict[str, str]:
    """``{key: owner}`` for every key."""
    return {k: owner_of(k, members, scheme) for k in keys}


def drop_unowned(store: dict, me: str, members: Sequence[str], scheme: str) -> None:
    """Delete from ``store`` every key that ``me`` does not own under ``members``."""
    for k in [k for k in store if owner_of(k, members, scheme) != me]:
        del store[k]


def check_plan(old: Sequence[str], new: Sequence[str], scheme: str, nodes: Sequence[str]) -> None:
    """Reject a rebalance whose memberships do not fit the census of ``nodes``.

    The census holds every old and every new member; it may hold other nodes
    too (former members): they own nothing, so they drop any stale copy they hold.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown placement scheme {scheme!r}; use one of {SCHEMES}")
    if not new:
        raise ValueError("the new membership is empty: the keys would have nowhere to go")
    if len(set(old)) != len(old) or len(set(new)) != len(new):
        raise ValueError(f"a membership lists a node twice: old={old}, new={new}")
    outside = sorted((set(old) | set(new)) - set(nodes))
    if outside:
        raise ValueError(
            f"{', '.join(outside)} must be in the census of nodes ({', '.join(nodes)}): it "
            "takes part in the rebalance"
        )


def why_aborted(old: list, new: list, nodes: Sequence[str], acks: dict[str, Any]) -> str:
    """The coordinator's error message: who did not acknowledge, who missed whose keys."""
    reasons = []
    silent = [x for x in nodes if x not in acks]
    if silent:
        reasons.append(f"no acknowledgement from {', '.join(silent)} within {ACK_TIMEOUT:g}s")
    for x, (_, missing) in acks.items():
        if missing:
            reasons.append(f"{x} got no keys from {', '.join(missing)} within {SHUFFLE_TIMEOUT:g}s")
    return f"rebalance {old} -> {new} aborted: {'; '.join(reasons)}; the old placement holds"


@choreography
def put(
    client: Role,
    nodes: Roles,
    key: At[str, "client"],
    value: At[object, "client"],
    scheme: At[str, "client"],
    store: At[dict, "nodes"],
) -> At[str, "client"]:
    with client:
        owner = owner_of(key, list(nodes), scheme)
        reply = None
    for n in nodes:
        if owner == n:
            request = client.send((key, value), to=n)
            with n:
                store[request[0]] = request[1]
                ok = "OK"
            reply = n.send(ok, to=client)
    return reply


@choreography
def get(
    client: Role,
    nodes: Roles,
    key: At[str, "client"],
    scheme: At[str, "client"],
    store: At[dict, "nodes"],
) -> At[object, "client"]:
    with client:
        owner = owner_of(key, list(nodes), scheme)
        value = None
    for n in nodes:
        if owner == n:
            k = client.send(key, to=n)
            with n:
                found = store.get(k)
            value = n.send(found, to=client)
    return value


@choreography
def rebalance(
    coordinator: Role,
    nodes: Roles,
    old: At[list, "coordinator"],
    new: At[list, "coordinator"],
    scheme: At[str, "coordinator"],
    store: At[dict, "nodes"],
    log: At[dict, "coordinator"],
) -> At[dict, "coordinator"]:
    with coordinator:
        check_plan(old, new, scheme, nodes)
        plan = (list(old), list(new), scheme)
    p = coordinator.send(plan, to=nodes)
    with nodes as n:
        was, will, how = p
        drop_unowned(store, n, was, how)  # stale copies from an earlier failed rebalance
        outgoing = {x: {} for x in nodes}
        for k, v in store.items():
            dest = owner_of(k, will, how)
            if dest != n:
                outgoing[dest][k] = v
    incoming = nodes.scatter(outgoing, to=nodes, timeout=SHUFFLE_TIMEOUT)
    with nodes as n:
        missing = [x for x in nodes if x not in incoming]
        if not missing:  # a partial shuffle is never stored: the rebalance will abort
            for part in incoming.values():
                store.update(part)  # stored before the acknowledgement
        ack = (sum(len(part) for part in incoming.values()), missing)
    acks = nodes.send(ack, to=coordinator, timeout=ACK_TIMEOUT)
    with coordinator:
        committed = len(acks) == len(nodes) and not any(a[1] for a in acks.values())
        log["members"] = list(new if committed else old)  # the decision, durable before it is sent
    decision = coordinator.send(committed, to=nodes)
    with nodes as n:
        drop_unowned(store, n, will if decision else was, how)
    with coordinator:
        if not committed:
            raise RebalanceError(why_aborted(old, new, nodes, acks))
        result = {"members": list(new), "moved": sum(a[0] for a in acks.values())}
    return result


class ShardedKV:
    """A driver: one store per node name, the committed membership, and a session per call.

    ``members`` is the membership in force: the coordinator's decision log
    (``log["members"]``), which changes only when a rebalance commits.

    Args:
        members: the initial membership.
        scheme: ``"mod"`` or ``"ring"``.
        run: runs one session, ``run(chor, **inputs) -> {role or member: result}``:
            ``choreo.run`` (the default), or ``choreo._central.central_results``.
    """

    def __init__(
        self,
        members: Sequence[str],
        scheme: str = "ring",
        run: Callable[..., dict[str, Any]] = choreo.run,
    ) -> None:
        self.log: dict[str, Any] = {"members": list(members)}
        self.scheme = scheme
        self.run = run
        self.stores: dict[str, dict[str, Any]] = {m: {} for m in members}

    @property
    def members(self) -> list[str]:
        """The membership in force."""
        return list(self.log["members"])

    def _stores(self, names: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {n: self.stores.setdefault(n, {}) for n in names}

    def put(self, key: str, value: Any) -> str:
        """Put ``key = value`` at its owner; ``"OK"``."""
        out = self.run(
            put, key=key, value=value, scheme=self.scheme,
            store=self._stores(self.members), nodes=self.members,
        )  # fmt: skip
        return out["client"]

    def get(self, key: str) -> Any:
        """The value of ``key`` at its owner (``None`` if absent)."""
        out = self.run(
            get, key=key, scheme=self.scheme, store=self._stores(self.members), nodes=self.members
        )
        return out["client"]

    def change(self, new: Sequence[str]) -> dict[str, Any]:
        """Rebalance to the membership ``new``; ``{"members": new, "moved": keys moved}``."""
        census = list(dict.fromkeys([*self.members, *new]))
        out = self.run(
            rebalance, old=self.members, new=list(new), scheme=self.scheme,
            store=self._stores(census), log=self.log, nodes=census,
        )  # fmt: skip
        return out["coordinator"]

    def join(self, node: str) -> dict[str, Any]:
        """Add ``node`` to the membership."""
        return self.change([*self.members, node])

    def leave(self, node: str) -> dict[str, Any]:
        """Remove ``node`` from the membership."""
        return self.change([m for m in self.members if m != node])
