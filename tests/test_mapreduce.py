"""MapReduce word count (protocols/mapreduce.py): its guarantee, with and without faults.

* Without faults: for 1..5 mappers and 1..4 reducers, on generated texts, the
  coordinator's result equals a sequential ``collections.Counter`` word count,
  and the projected run equals the central one (the IR interpreter).
* Under seeded fault plans in the simulator (mappers crash; messages to and
  from mappers are lost or delayed; the coordinator and the reducers stay up,
  as the failure model says): the result is never a wrong count. It is the
  right one whenever some mapper stayed up with its messages delivered in
  time, and otherwise a ``MapReduceError`` naming the splits never counted.
* Scripted cases: a mapper crashes before answering and its map task is re-run
  in a second round; a split that reaches a reducer twice is counted once; a
  partition that comes after the timeout is dropped; with every mapper down
  the coordinator names the splits never counted.
* One run over gRPC, every role and member its own process (``choreo up``).
"""

from __future__ import annotations

import copy
import json
import random
import subprocess
import sys
import zlib
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import choreo
from choreo._central import central_results
from choreo._envelope import Envelope
from choreo.sim import Crash, Deliver, Drop, RandomFaults, Script, SimNetwork, Wait, simulate
from protocols.mapreduce import MAP_TIMEOUT, reducer_of, word_count, word_count_sequential
from tests.scenarios import ROOT

VOCAB = [*"abcdefghij", "the", "cat", "sat", "on", "mat", "naïve", "日本", "x-y", "A", "ab"]
DEADLINE = 30.0  # the run's receive deadline: longer than len(mappers) * MAP_TIMEOUT


def _splits(rng: random.Random, max_splits: int = 10) -> list[str]:
    out = []
    for _ in range(rng.randint(0, max_splits)):
        words = [rng.choice(VOCAB) for _ in range(rng.randint(0, 25))]
        seps = [rng.choice([" ", "  ", "\n", "\t"]) for _ in words]
        out.append("".join(w + s for w, s in zip(words, seps, strict=True)))
    return out


def _census(m: int, r: int) -> dict[str, int]:
    return {"mappers": m, "reducers": r}


# -- without faults -------------------------------------------------------------


@pytest.mark.parametrize("m", range(1, 6))
@pytest.mark.parametrize("r", range(1, 5))
def test_word_count_equals_a_sequential_count_central_and_projected(m: int, r: int) -> None:
    rng = random.Random(100 * m + r)
    for _ in range(2):
        splits = _splits(rng)
        expected = dict(Counter(w for s in splits for w in s.split()))
        central = central_results(word_count, splits=copy.deepcopy(splits), **_census(m, r))
        assert central["coordinator"] == expected
        assert choreo.run(word_count, timeout=5, splits=splits, **_census(m, r)) == central


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    splits=st.lists(st.text(max_size=40), max_size=6),
    m=st.integers(1, 5),
    r=st.integers(1, 4),
)
def test_any_text_is_counted_as_str_split_counts_it(splits: list[str], m: int, r: int) -> None:
    out = choreo.run(word_count, timeout=5, splits=splits, **_census(m, r))
    assert out["coordinator"] == word_count_sequential(splits)


def test_each_word_is_reduced_by_exactly_one_reducer_the_same_in_every_process() -> None:
    reducers = ("reducers.0", "reducers.1", "reducers.2")
    for w in VOCAB:  # crc32, not the salted hash(): every mapper process agrees
        assert reducer_of(w, reducers) == reducers[zlib.crc32(w.encode()) % 3]
    assert len({reducer_of(w, reducers) for w in VOCAB}) == 3


# -- a scripted failure -----------------------------------------------------------


def _tasks(trace: list[dict[str, Any]], mapper: str) -> list[str]:
    """The summaries of the map tasks the coordinator sent ``mapper``, round by round."""
    return [
        t["summary"]
        for t in trace
        if t["event"] == "send" and t["from"] == "coordinator" and t["to"] == mapper
    ]


def test_a_mapper_that_crashes_before_answering_has_its_task_re_run() -> None:
    splits = ["a b a c", "b c d", "e f a", "x", "y y", "z"]
    plan = Script([Deliver("coordinator", "mappers.1"), Crash("mappers.1")])
    out = simulate(
        word_count, seed=1, faults=plan, timeout=DEADLINE, splits=splits, mappers=3, reducers=2
    )
    assert out.results["coordinator"] == word_count_sequential(splits)
    assert set(out.errors) == {"mappers.1"} and type(out.errors["mappers.1"]).__name__ == (
        "CrashedError"
    )
    assert not [t for t in out.trace if t["event"] == "send" and t["from"] == "mappers.1"]
    # round 1 deals splits round-robin; splits 1 and 4 (mappers.1's) go to the others in round 2
    assert _tasks(out.trace, "mappers.1")[0] == "{1: 'b c d', 4: 'y y'}"
    assert _tasks(out.trace, "mappers.0")[:2] == ["{0: 'a b a c', 3: 'x'}", "{1: 'b c d'}"]
    assert _tasks(out.trace, "mappers.2")[:2] == ["{2: 'e f a', 5: 'z'}", "{4: 'y y'}"]
    # the reducers waited MAP_TIMEOUT for the crashed mapper in each of the 3 rounds
    assert 3 * MAP_TIMEOUT <= out.time < 3 * MAP_TIMEOUT + 1


def test_a_split_that_reaches_one_reducer_twice_is_counted_once() -> None:
    """mappers.0's partitions reach reducers.0 but not reducers.1: its splits are re-run by
    mappers.1, and reducers.0 receives them a second time and ignores them."""
    splits = ["a b c d", "a a", "b c", "d d d"]
    plan = Script([Drop("mappers.0", "reducers.1")])
    out = simulate(
        word_count, seed=3, faults=plan, timeout=DEADLINE, splits=splits, mappers=2, reducers=2
    )
    assert out.ok, out.errors
    assert out.results["coordinator"] == word_count_sequential(splits)
    assert _tasks(out.trace, "mappers.1")[:2] == [
        "{1: 'a a', 3: 'd d d'}",
        "{0: 'a b c d', 2: 'b c'}",
    ]
    to_r0 = [
        t["summary"]
        for t in out.trace
        if t["event"] == "recv" and t["to"] == "reducers.0" and t["from"].startswith("mappers.")
    ]
    assert sum("0: {" in s for s in to_r0) == 2  # split 0 arrived twice at reducers.0


def test_a_partition_that_comes_after_the_timeout_is_dropped_not_counted_later() -> None:
    """mappers.0's round-1 partition for reducers.0 is held past MAP_TIMEOUT: reducers.0 goes
    on without it, the split is re-run by mappers.1, and the late copy is dropped on arrival."""
    splits = ["a b", "c d", "a c", "b d"]
    plan = Script([Wait(MAP_TIMEOUT + 0.5), Deliver("mappers.0", "reducers.0")])
    out = simulate(
        word_count, seed=4, faults=plan, timeout=DEADLINE, splits=splits, mappers=2, reducers=2
    )
    assert out.ok, out.errors
    assert out.results["coordinator"] == word_count_sequential(splits)
    late = [
        t
        for t in out.trace
        if t["event"] == "recv" and t["from"] == "mappers.0" and t["to"] == "reducers.0"
    ]
    assert late[0]["t"] > MAP_TIMEOUT  # it did arrive, after reducers.0 had gone on
    assert _tasks(out.trace, "mappers.1")[1] == "{0: 'a b', 2: 'a c'}"  # re-run


def test_when_every_mapper_fails_the_coordinator_says_which_splits_were_not_counted() -> None:
    plan = Script([Crash("mappers.0"), Crash("mappers.1")])
    out = simulate(
        word_count, seed=2, faults=plan, timeout=DEADLINE, splits=["a", "b", "c"], mappers=2,
        reducers=2,
    )  # fmt: skip
    err = out.errors["coordinator"]
    assert "MapReduceError" in str(err) and "splits never counted: [0, 1, 2]" in str(err)
    assert "coordinator" not in out.results


# -- random fault plans -------------------------------------------------------------


class MapperFaults(RandomFaults):
    """``RandomFaults`` restricted to the failure model: only mappers crash, and only
    messages to or from a mapper are dropped or delayed."""

    def on_send(self, net: SimNetwork, env: Envelope) -> tuple[bool, float]:
        drop, delay = super().on_send(net, env)
        if not (env.sender.startswith("mappers.") or env.receiver.startswith("mappers.")):
            return False, 0.0
        return drop, delay


def _plan(seed: int) -> tuple[dict[str, Any], MapperFaults, bool]:
    """Inputs and a fault plan for ``seed``; whether the delays stay below the failure
    detector's timeout (then a mapper with no crash and no lost message is never
    suspected, and the run must succeed if there is one)."""
    rng = random.Random(seed)
    m, r = rng.randint(1, 5), rng.randint(1, 4)
    short = seed % 4 != 3
    faults = MapperFaults(
        drop=rng.choice([0.0, 0.02, 0.05, 0.1]),
        delay=(0.0, 0.4) if short else (0.0, 1.5),
        crash=rng.choice([0.0, 0.03, 0.1]),
        max_crashes=rng.randint(1, m),
        restart=None,
        roles=[f"mappers.{i}" for i in range(m)],
    )
    inputs = {"splits": _splits(rng, 12), "mappers": m, "reducers": r}
    return inputs, faults, short


def _good_mappers(trace: list[dict[str, Any]], m: int) -> list[str]:
    """Mappers that never crashed and lost no message, to or from them."""
    bad = set()
    for t in trace:
        if t["event"] == "crash":
            bad.add(t["role"])
        elif t["event"] in ("drop", "lost"):
            bad.update({t["from"], t["to"]})
    return [x for x in (f"mappers.{i}" for i in range(m)) if x not in bad]


def _second_round_had_work(trace: list[dict[str, Any]], m: int) -> bool:
    """Whether some split was re-dealt: a mapper got a non-empty task in round 2."""
    return any(_tasks(trace, f"mappers.{i}")[1:2] not in ([], ["{}"]) for i in range(m))


def _check_seeds(seeds: range) -> dict[str, int]:
    tally = Counter[str]()
    for seed in seeds:
        inputs, faults, short = _plan(seed)
        expected = word_count_sequential(inputs["splits"])
        out = simulate(word_count, seed=seed, faults=faults, timeout=DEADLINE, **inputs)
        assert set(out.errors) <= {"coordinator"} | {
            f"mappers.{i}" for i in range(inputs["mappers"])
        }, (seed, out.errors)
        if "coordinator" in out.results:
            assert out.results["coordinator"] == expected, f"seed {seed}: wrong count"
            tally["correct"] += 1
            tally["re-run"] += _second_round_had_work(out.trace, inputs["mappers"])
        else:
            err = str(out.errors["coordinator"])
            assert "MapReduceError" in err, (seed, err)
            good = _good_mappers(out.trace, inputs["mappers"])
            assert not (short and good), f"seed {seed}: {good} stayed up yet the count failed"
            tally["failed (no mapper left)"] += 1
        tally["crashes"] += sum(t["event"] == "crash" for t in out.trace)
        tally["lost messages"] += sum(t["event"] in ("drop", "lost") for t in out.trace)
    return dict(tally)


def test_random_fault_plans_never_give_a_wrong_count() -> None:
    tally = _check_seeds(range(60))
    print("\nmapreduce, 60 fault plans:", tally)
    assert tally["correct"] >= 40 and tally["re-run"] >= 5
    assert tally["crashes"] >= 10 and tally["lost messages"] >= 20


@pytest.mark.slow
def test_a_thousand_random_fault_plans_never_give_a_wrong_count() -> None:
    tally = _check_seeds(range(1000, 2000))
    print("\nmapreduce, 1000 fault plans:", tally)
    assert tally["correct"] >= 700 and tally["re-run"] >= 150


# -- every role and member its own process, over gRPC --------------------------------


def test_word_count_over_grpc_with_every_mapper_and_reducer_a_process() -> None:
    splits = ["a b a", "b c", "the cat sat on the mat", "c c d", ""]
    out = subprocess.run(
        [
            sys.executable, "-m", "choreo._cli", "up", "protocols/mapreduce.py:word_count",
            "--census", "mappers=3", "--census", "reducers=2",
            "--input", f"splits={splits!r}", "--json", "--quiet",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    central = central_results(word_count, splits=splits, mappers=3, reducers=2)
    assert got == json.loads(json.dumps(central))
    assert got["coordinator"] == word_count_sequential(splits)
