"""Safety checks over the records of consensus and commit protocols.

Every check returns a list of violations as human-readable strings (empty:
the property holds), so a test can ``assert not violations, "\\n".join(violations)``.
Malformed input (an unknown event kind, an outcome that is neither commit
nor abort) raises ``ValueError``: that is a bug in the harness, not the protocol.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

# Node, acceptor and instance names are any hashable values; mappings keyed by them
# are typed ``Mapping[Any, ...]`` because ``Mapping`` is invariant in its key type.

__all__ = [
    "Decision",
    "agreement",
    "atomic_commit",
    "log_prefixes",
    "promises_monotonic",
    "validity",
]


def _distinct(values: Iterable[Any]) -> list[Any]:
    """Distinct values by ``==`` (values need not be hashable), in first-seen order."""
    out: list[Any] = []
    for v in values:
        if not any(v == w for w in out):
            out.append(v)
    return out


def agreement(decisions: Iterable[tuple[Hashable, Hashable, Any]]) -> list[str]:
    """No two different values are decided for one instance (slot).

    ``decisions``: ``(node, instance, value)`` records; a node may appear
    several times (re-deciding the same value is fine).
    """
    by_instance: dict[Hashable, list[tuple[Hashable, Any]]] = {}
    for node, instance, value in decisions:
        by_instance.setdefault(instance, []).append((node, value))
    violations = []
    for instance, recs in by_instance.items():
        values = _distinct(v for _, v in recs)
        if len(values) > 1:
            who = ", ".join(f"{node!r} decided {v!r}" for node, v in recs)
            violations.append(
                f"agreement: instance {instance!r} has {len(values)} decided values: {who}"
            )
    return violations


def validity(
    decisions: Iterable[tuple[Hashable, Hashable, Any]],
    proposed: Mapping[Any, Collection[Any]] | Collection[Any],
) -> list[str]:
    """Every decided value was proposed.

    ``proposed`` is either a mapping ``instance -> values proposed for it``
    or one collection of values proposed for any instance (for multi-Paxos
    no-op fillers, include the no-op value).
    """
    violations = []
    for node, instance, value in decisions:
        if isinstance(proposed, Mapping):
            allowed: Collection[Any] = proposed.get(instance, ())
            where = f"for instance {instance!r}"
        else:
            allowed = proposed
            where = "at all"
        if not any(value == p for p in allowed):
            violations.append(
                f"validity: {node!r} decided {value!r} for instance {instance!r}, "
                f"which was not proposed {where}"
            )
    return violations


def promises_monotonic(events: Mapping[Any, Iterable[tuple[Any, ...]]]) -> list[str]:
    """Each acceptor's promise never goes back and it never accepts below its promise.

    ``events``: per acceptor, its events in the order they happened:
    ``("promise", n)`` (it promised ballot ``n``) and ``("accept", n, v)``
    (it accepted ``v`` at ballot ``n``, which also raises its promise to
    ``n``). Ballots are anything ordered (ints, ``(round, node)`` tuples).
    Promising the same ballot again and accepting at the promised ballot
    are fine.
    """
    violations = []
    for acceptor, evs in events.items():
        promised: Any = None
        for k, ev in enumerate(evs):
            kind = ev[0]
            if kind not in ("promise", "accept") or len(ev) != (2 if kind == "promise" else 3):
                raise ValueError(f"promises_monotonic: bad event {ev!r} of {acceptor!r}")
            n = ev[1]
            if promised is not None and n < promised:
                if kind == "promise":
                    violations.append(
                        f"promises: {acceptor!r} event #{k} promised ballot {n!r} "
                        f"after promising {promised!r}"
                    )
                else:
                    violations.append(
                        f"promises: {acceptor!r} event #{k} accepted {ev[2]!r} at ballot {n!r} "
                        f"below its promise {promised!r}"
                    )
                continue
            promised = n
    return violations


def _decided_slots(log: Sequence[Any] | Mapping[int, Any], hole: Any) -> dict[int, Any]:
    if isinstance(log, Mapping):
        return {s: v for s, v in log.items() if v is not hole}
    return {s: v for s, v in enumerate(log) if v is not hole}


def _prefix_len(slots: Mapping[int, Any], first_slot: int) -> int:
    k = first_slot
    while k in slots:
        k += 1
    return k - first_slot


def log_prefixes(
    logs: Mapping[Any, Sequence[Any] | Mapping[int, Any]],
    *,
    first_slot: int = 0,
    hole: Any = None,
) -> list[str]:
    """Multi-Paxos: replicas' logs agree on every slot both have decided.

    ``logs``: per node, its log as a list (index = slot, ``hole`` = not yet
    decided; ``hole`` is compared by identity) or a mapping ``slot -> value``
    of decided slots. For every pair of nodes, the contiguous decided prefixes
    (slots ``first_slot, first_slot + 1, ...``) must be one a prefix of the
    other, and decided slots beyond them must agree too. One violation per
    pair: the first slot where they differ.
    """
    decided = {node: _decided_slots(log, hole) for node, log in logs.items()}
    prefix = {node: _prefix_len(slots, first_slot) for node, slots in decided.items()}
    nodes = list(decided)
    violations = []
    for i, a in enumerate(nodes):
        for b in nodes[i + 1 :]:
            common = sorted(decided[a].keys() & decided[b].keys())
            for slot in common:
                va, vb = decided[a][slot], decided[b][slot]
                if va != vb:
                    in_prefix = slot < first_slot + min(prefix[a], prefix[b])
                    where = (
                        "in their contiguous decided prefixes"
                        if in_prefix
                        else "beyond the contiguous decided prefix"
                    )
                    violations.append(
                        f"logs: {a!r} and {b!r} differ at slot {slot} ({where}): {va!r} vs {vb!r}"
                    )
                    break
    return violations


class Decision(NamedTuple):
    """A 2PC decision as a node learned it: ``outcome`` ("commit"/"abort" or a bool,
    True = commit) and ``source``: the node it learned it from, or ``"self"``
    (or the node's own name) if it decided on its own."""

    outcome: Any
    source: Hashable


def _outcome(o: Any) -> str:
    if o is True or (isinstance(o, str) and o.lower() == "commit"):
        return "commit"
    if o is False or (isinstance(o, str) and o.lower() == "abort"):
        return "abort"
    raise ValueError(f"atomic_commit: outcome must be commit/abort, got {o!r}")


def _vote(v: Any) -> bool | None:
    """True = yes, False = no, None = no vote (crashed, never asked)."""
    if v is None:
        return None
    if v is True or (isinstance(v, str) and v.lower() in ("yes", "commit", "prepared")):
        return True
    if v is False or (isinstance(v, str) and v.lower() in ("no", "abort")):
        return False
    raise ValueError(f"atomic_commit: vote must be yes/no/None, got {v!r}")


def _as_decision(d: Any) -> tuple[str, Hashable]:
    if isinstance(d, Mapping):
        return _outcome(d["outcome"]), d["source"]
    if hasattr(d, "outcome") and hasattr(d, "source"):
        return _outcome(d.outcome), d.source
    outcome, source = d
    return _outcome(outcome), source


def atomic_commit(
    votes: Mapping[Any, Any],
    decisions: Mapping[Any, Sequence[Any]],
    *,
    coordinator: Hashable = "coordinator",
    peers_may_relay: bool = False,
) -> list[str]:
    """Two-phase commit safety.

    ``votes``: per participant, its vote: yes (``True``/"yes"), no
    (``False``/"no") or ``None`` (it never voted). The keys are the
    participants.

    ``decisions``: per node (participants and the coordinator), the sequence
    of decisions it reached, each a ``Decision(outcome, source)`` (or an
    ``(outcome, source)`` pair, or a mapping/object with those fields).

    Checks:

    - no node reverses a decision (its outcomes are all the same);
    - all deciders agree;
    - commit only if every participant voted yes;
    - a participant decides only what it learned from the coordinator
      (``source == coordinator``), except that one that did not vote yes
      may abort on its own (``source`` ``"self"`` or its own name): a
      participant that voted yes is blocked until it hears the outcome. With
      ``peers_may_relay`` it may also learn from a peer (cooperative
      termination) that decided the same outcome;
    - a node that learned from the coordinator (or a peer) learned an outcome
      that node had decided, when the source's decisions are recorded.
    """
    violations = []
    participants = set(votes)
    vote = {p: _vote(v) for p, v in votes.items()}
    seqs = {node: [_as_decision(d) for d in ds] for node, ds in decisions.items()}
    final: dict[Hashable, str] = {}

    for node, seq in seqs.items():
        outcomes = [o for o, _ in seq]
        if not outcomes:
            continue
        final[node] = outcomes[0]
        if any(o != outcomes[0] for o in outcomes):
            violations.append(f"2pc: {node!r} reversed its decision: {' -> '.join(outcomes)}")

    all_outcomes = {o for seq in seqs.values() for o, _ in seq}
    if len(all_outcomes) > 1:
        who = ", ".join(f"{n!r}: {o}" for n, o in final.items())
        violations.append(f"2pc: deciders disagree ({who})")

    if "commit" in all_outcomes:
        not_yes = sorted(repr(p) for p in participants if vote[p] is not True)
        if not_yes:
            committers = sorted(
                repr(n) for n, seq in seqs.items() if any(o == "commit" for o, _ in seq)
            )
            violations.append(
                f"2pc: commit decided by {', '.join(committers)} although "
                f"{', '.join(not_yes)} did not vote yes"
            )

    for node, seq in seqs.items():
        if node == coordinator:
            continue
        for k, (outcome, source) in enumerate(seq):
            alone = source == "self" or source == node
            if alone:
                if outcome == "commit":
                    violations.append(f"2pc: {node!r} decision #{k} committed on its own")
                elif vote.get(node) is True:
                    violations.append(
                        f"2pc: {node!r} decision #{k} aborted on its own after voting yes "
                        "(a prepared participant is blocked until it hears the outcome)"
                    )
                continue
            if source != coordinator and not peers_may_relay:
                violations.append(
                    f"2pc: {node!r} decision #{k} ({outcome}) learned from {source!r}, "
                    f"not the coordinator {coordinator!r}"
                )
                continue
            if source in seqs and not any(o == outcome for o, _ in seqs[source]):
                violations.append(
                    f"2pc: {node!r} decision #{k} ({outcome}) learned from {source!r}, "
                    f"which never decided {outcome}"
                )
    return violations
