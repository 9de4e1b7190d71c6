"""MapReduce word count: a coordinator, a group of mappers, a group of reducers.

The coordinator holds the input, a list of text *splits* (split id = index).
The work runs in ``len(mappers)`` rounds. In each round the coordinator deals
the splits not yet counted round-robin to the mappers it still trusts and
scatters the map tasks (``{split id: text}``; an empty one to the others), and
tells the reducers which splits are pending. Each mapper counts the words of
its splits and partitions the counts by reducer, ``crc32(word) mod R`` (a
deterministic hash, never Python's salted ``hash()``); the shuffle is a
group-to-group scatter: every reducer gets ``{mapper: {split id: counts}}``.
Each reducer keeps one partition per split and reports the splits it holds.
A split is done when every reducer holds its partition. After the last round
each reducer sums its partitions and the coordinator gathers the sums (the
reducers count disjoint sets of words).

Guarantee: if at least one mapper stays up with its messages delivered in
time (a round's task and partitions within ``MAP_TIMEOUT``), the
coordinator's result equals the sequential word count of the splits
(``collections.Counter`` over every split's ``str.split()``), each occurrence
counted exactly once. Otherwise the coordinator fails with ``MapReduceError``
naming the splits never counted. Never a wrong count.

Failure model: mappers may crash (crash-stop: down for the rest of the
session), and messages to and from mappers may be lost or delayed. The
coordinator, the reducers and the links between them stay up and deliver.
The run's receive deadline (``timeout=``) must exceed ``len(mappers) *
MAP_TIMEOUT``. How failures are handled:

* *Failure detection*: the reducers' shuffle gather has ``timeout=MAP_TIMEOUT``,
  counted from the coordinator's "pending" message: then a reducer goes on with
  the mappers that delivered. A map task is done when *every* reducer holds its
  partition, a stronger test than a mapper saying it finished (a mapper may
  finish and crash before its output reaches the reducers; MapReduce re-runs
  such tasks too).
* *Re-execution*: a mapper that was given a split that is not done at the end
  of its round is not trusted again in this session (crashed, cut off or slow).
  The pending splits go to the trusted mappers in the next round. Each round
  that ends with splits pending removes at least one mapper, so
  ``len(mappers)`` rounds are enough: the splits are done, or no mapper is left.
* *No double counting*: partitions travel tagged with their split id. A
  reducer keeps the first partition it gets for a split and ignores the others.
  A split can reach a reducer twice: from a mapper whose partition for another
  reducer was lost, then from the mapper it was re-dealt to. Map is
  deterministic, so every copy is the same. A partition that comes after its
  round's timeout is dropped by the runtime, never delivered to a later round.

Why a fixed number of rounds, not ``while pending:``: a ``while`` sends each
mapper a selection per iteration, and a mapper that loses one reads the next
message where it expected the selection and fails (in choreo versions where a
member's failure aborts the session, it takes every role with it). With
``for``, a mapper only ever receives tasks: one that loses a task takes the
next round's as its own, its partitions come too late and are dropped, and it
is not trusted again; the data is tagged, so nothing is miscounted. Rounds
after the last split is done carry empty tasks; each costs ``MAP_TIMEOUT``
while a mapper is down.

Over gRPC, a send to a mapper that is down currently fails the coordinator
(choreo's gRPC transport waits for the peer, then raises), so the tolerance of
crashed mappers is shown in the simulator only, where sends never fail.
"""

from __future__ import annotations

import zlib
from collections import Counter

from choreo import At, Role, Roles, choreography

#: seconds a reducer waits for the mappers' partitions in a round (a failure detector)
MAP_TIMEOUT = 2.0


class MapReduceError(Exception):
    """Every mapper failed before every split was counted."""


def reducer_of(word: str, reducers: tuple[str, ...]) -> str:
    """The reducer counting ``word``: ``crc32(word) mod R`` (the same in every process)."""
    return reducers[zlib.crc32(word.encode()) % len(reducers)]


def deal(splits: list[int], mappers: list[str]) -> dict[str, list[int]]:
    """Round-robin ``splits`` over ``mappers``: ``{mapper: [split id, ...]}``."""
    out: dict[str, list[int]] = {m: [] for m in mappers}
    for i, sid in enumerate(splits):
        out[mappers[i % len(mappers)]].append(sid)
    return out


def map_task(task: dict[int, str], reducers: tuple[str, ...]) -> dict[str, dict[int, dict]]:
    """Count each split's words, partitioned by reducer: ``{reducer: {split id: counts}}``.

    Every reducer gets an entry for every split, empty or not: its arrival is
    what tells the reducer the split is done.
    """
    parts: dict[str, dict[int, dict]] = {r: {} for r in reducers}
    for sid, text in task.items():
        for r in reducers:
            parts[r][sid] = {}
        for word, n in Counter(text.split()).items():
            parts[reducer_of(word, reducers)][sid][word] = n
    return parts


def reduce_partitions(held: dict[int, dict]) -> dict[str, int]:
    """Sum one reducer's partitions, one per split."""
    total: Counter[str] = Counter()
    for counts in held.values():
        total.update(counts)
    return dict(total)


def word_count_sequential(splits: list[str]) -> dict[str, int]:
    """The reference: a sequential word count of every split."""
    return dict(Counter(w for text in splits for w in text.split()))


@choreography
def word_count(
    coordinator: Role, mappers: Roles, reducers: Roles, splits: At[list, "coordinator"]
) -> At[dict, "coordinator"]:
    with coordinator:
        pending = list(range(len(splits)))
        live = list(mappers)
        rounds = 0
    with reducers:
        held = {}
    for _ in range(len(mappers)):  # each round with splits left removes a mapper
        with coordinator:
            dealt = deal(pending, live) if live else {}
            tasks = {m: {sid: splits[sid] for sid in dealt.get(m, [])} for m in mappers}
            rounds = rounds + (1 if pending and live else 0)
        task = coordinator.scatter(tasks, to=mappers)
        todo = coordinator.send(pending, to=reducers)  # MAP_TIMEOUT counts from here
        with mappers:
            parts = map_task(task, reducers)
        got = mappers.scatter(parts, to=reducers, timeout=MAP_TIMEOUT)
        with reducers:
            for part in got.values():
                for sid, counts in part.items():
                    if sid in todo and sid not in held:  # a split's partition is counted once
                        held[sid] = counts
            have = sorted(held)
        reports = reducers.send(have, to=coordinator)
        with coordinator:
            done = set(range(len(splits)))
            for split_ids in reports.values():
                done &= set(split_ids)
            failed = [m for m in live if any(sid not in done for sid in dealt.get(m, []))]
            live = [m for m in live if m not in failed]
            pending = [sid for sid in pending if sid not in done]
    with reducers:
        total = reduce_partitions(held)
    totals = reducers.send(total, to=coordinator)
    with coordinator:
        if pending:
            raise MapReduceError(
                f"every mapper failed after {rounds} rounds; splits never counted: {pending}"
            )
        merged = {}
        for part in totals.values():
            merged.update(part)  # reducers count disjoint sets of words
        result = dict(sorted(merged.items()))
    return result
