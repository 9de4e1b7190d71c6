"""Multi-Paxos (protocols/multi_paxos.py) in service mode, under faults.

Concurrent clients submit puts and gets in a ``Simulation`` and elect a new
leader when theirs fails or is deposed. Every history must be linearizable,
and the replicas' records must show agreement per slot, logs that are
prefixes of one another, validity (only submitted operations and no-ops are
decided), and acceptors that never go back on a promise.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
from typing import Any

import pytest

from choreo import ChoreoError
from choreo.sim import Crash, Drop, Script, Simulation
from protocols import multi_paxos as mp
from tests.checkers import agreement, log_prefixes, promises_monotonic, validity
from tests.replication_harness import History, line_of, random_faults
from tests.scenarios import ROOT

REPLICAS = [f"replicas.{i}" for i in range(3)]
KEYS = ("x", "y")
TIMEOUT = 1.0


def cluster(seed: int, faults: Any = None) -> Simulation:
    sim = Simulation(seed=seed, faults=faults, timeout=TIMEOUT)
    for name in REPLICAS:
        # the acceptor and learner state is durable, the leadership is not
        sim.storage(name)["events"] = []  # keep the promise/accept log for the checks
        sim.serve(name, mp, state=lambda n=name: {"store": sim.storage(n), "leader": {}})
    return sim


def census(leader: str) -> list[str]:
    """Every replica, ``leader`` first."""
    return [leader, *(r for r in REPLICAS if r != leader)]


class Leader:
    """The clients' guess of the leader, and the operations they submitted."""

    def __init__(self) -> None:
        self.name = REPLICAS[0]
        self.submitted: list[tuple[Any, ...]] = []

    async def elect(self, c: Any, rng: random.Random, move: bool) -> None:
        """Run phase 1 at the leader (at the next replica if ``move``), after a random pause."""
        if move:
            self.name = REPLICAS[(REPLICAS.index(self.name) + 1) % len(REPLICAS)]
        await asyncio.sleep(rng.uniform(0.0, 0.1))  # a backoff, so that candidates do not duel
        try:
            await c.run(mp.elect, replicas=census(self.name))
        except ChoreoError:
            pass


async def submit(
    c: Any, leader: Leader, op: tuple[Any, ...], history: History, rng: random.Random
) -> Any:
    """One operation, retried (as a new operation) after a leader change, at most 4 times."""
    for _ in range(4):
        tagged = (*op, f"{c.name}/{len(leader.submitted)}")
        leader.submitted.append(tagged)
        call = history.call()
        try:
            answer = (await c.run(mp.submit, op=tagged, replicas=census(leader.name)))["client"]
        except ChoreoError:
            answer = None
        if answer is not None and answer[0] == mp.OK:
            history.done(c.name, op, call, answer[1])
            return answer[1]
        history.pending(c.name, op, call)
        await leader.elect(c, rng, move=answer is None)  # silent: try another replica
    return None


def workload(sim: Simulation, seed: int, clients: int, ops: int) -> tuple[History, Leader]:
    rng = random.Random(seed)
    history = History(sim)
    leader = Leader()

    async def client(name: str) -> None:
        async with sim.client(name) as c:
            for i in range(ops):
                key = rng.choice(KEYS)
                op = ("put", key, f"{name}:{i}") if rng.random() < 0.6 else ("get", key)
                await submit(c, leader, op, history, rng)
                await asyncio.sleep(rng.uniform(0, 0.02))

    async def main() -> None:
        async with sim.client("boot") as c:
            await leader.elect(c, rng, move=False)
        await asyncio.gather(*(client(f"c{k}") for k in range(clients)))

    sim.run(main)
    return history, leader


def check_run(sim: Simulation, history: History, leader: Leader, what: str) -> None:
    history.assert_linearizable(what)
    stores = {r: sim.storage(r) for r in REPLICAS}
    decided = [(r, slot, v) for r, s in stores.items() for slot, v in s.get("decided", [])]
    violations = agreement(decided)
    violations += log_prefixes({r: s.get("log", {}) for r, s in stores.items()})
    violations += validity(decided, [*leader.submitted, mp.NOOP])
    violations += promises_monotonic({r: s.get("events", []) for r, s in stores.items()})
    assert not violations, f"{what}:\n" + "\n".join(violations)


def run_seed(seed: int, clients: int = 3, ops: int = 8) -> History:
    sim = cluster(seed, random_faults(REPLICAS, seed))
    history, leader = workload(sim, seed, clients, ops)
    check_run(sim, history, leader, f"seed {seed}")
    return history


def test_without_faults_every_operation_completes() -> None:
    sim = cluster(1)
    history, leader = workload(sim, 1, 3, 8)
    check_run(sim, history, leader, "no faults")
    assert all(not op.pending for op in history.ops)
    logs = [sim.storage(r)["log"] for r in REPLICAS]
    assert logs[0] == logs[1] == logs[2] and len(logs[0]) == 24
    assert sim.storage("replicas.0")["round"] == 1  # one phase 1 for 24 slots


@pytest.mark.parametrize("block", range(10))
def test_random_fault_plans(block: int) -> None:
    """100 seeded fault plans (10 per test): drops, delays, partitions, crashes, restarts."""
    completed = 0
    for seed in range(10 * block, 10 * block + 10):
        completed += len(run_seed(seed).completed)
    assert completed > 0


@pytest.mark.slow
@pytest.mark.parametrize("block", range(20))
def test_random_fault_plans_slow(block: int) -> None:
    """1,000 seeded fault plans."""
    for seed in range(1000 + 50 * block, 1000 + 50 * block + 50):
        run_seed(seed)


def test_a_higher_ballot_takes_over_and_the_old_leader_falls_back_to_phase_1() -> None:
    sim = cluster(2)
    history = History(sim)

    async def run(c: Any, leader: str, op: tuple[Any, ...]) -> Any:
        call = history.call()
        answer = (await c.run(mp.submit, op=op, replicas=census(leader)))["client"]
        if answer[0] == mp.OK:
            history.done(c.name, op[:-1], call, answer[1])
        else:
            history.pending(c.name, op[:-1], call)
        return answer

    async def main() -> list[Any]:
        async with sim.client("c1") as c:
            out = [(await c.run(mp.elect, replicas=census("replicas.0")))["client"]]
            out.append(await run(c, "replicas.0", ("put", "x", 1, "a")))
            out.append((await c.run(mp.elect, replicas=census("replicas.1")))["client"])
            out.append(await run(c, "replicas.0", ("put", "x", 2, "b")))  # the old leader
            out.append(await run(c, "replicas.1", ("get", "x", "c")))
            out.append((await c.run(mp.elect, replicas=census("replicas.0")))["client"])
            out.append(await run(c, "replicas.0", ("get", "x", "d")))
            return out

    first, put1, second, stale, get1, third, get2 = sim.run(main)
    assert first == (mp.OK, (1, "replicas.0")) and put1[:2] == (mp.OK, None)
    assert second == (mp.OK, (1, "replicas.1"))  # (1, replicas.1) > (1, replicas.0)
    assert stale == (mp.RETRY, (1, "replicas.1"))  # refused: it learned the higher ballot
    assert sim.storage("replicas.0")["heard"] == (1, "replicas.1")
    assert get1[:2] == (mp.OK, 1)
    assert third == (mp.OK, (2, "replicas.0"))  # phase 1 again, above what it heard
    assert get2[:2] == (mp.OK, 1)  # the refused put was never decided
    logs = [sim.storage(r)["log"] for r in REPLICAS]
    assert [op[-1] for op in logs[0].values()] == ["a", "c", "d"]
    history.assert_linearizable("leader change")


def test_a_value_chosen_before_the_leader_crashed_is_kept_by_the_next_leader() -> None:
    replies = line_of(mp, "replies = replicas.send(reply, to=replicas[0], quorum=majority)")
    # replicas.1 and .2 accept the put; their answers are lost and the leader crashes: chosen,
    # but nobody knows it
    script = Script(
        [
            Drop("replicas.1", "replicas.0", replies),
            Drop("replicas.2", "replicas.0", replies),
            Crash("replicas.0"),
        ]
    )
    sim = cluster(3, script)

    async def main() -> tuple[Any, ...]:
        async with sim.client("c1") as c:
            await c.run(mp.elect, replicas=census("replicas.0"))
            try:
                await c.run(mp.submit, op=("put", "x", 1, "a"), replicas=census("replicas.0"))
            except ChoreoError as exc:
                lost: Any = exc
            elected = (await c.run(mp.elect, replicas=census("replicas.1")))["client"]
            got = await c.run(mp.submit, op=("get", "x", "b"), replicas=census("replicas.1"))
            return lost, elected, got["client"]

    lost, elected, got = sim.run(main)
    assert isinstance(lost, ChoreoError)
    assert elected == (mp.OK, (1, "replicas.1"))
    assert got == (mp.OK, 1, 1)  # slot 0 kept the put, the get came after it
    assert sim.storage("replicas.1")["log"][0] == ("put", "x", 1, "a")


def test_elect_over_grpc_processes() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "choreo._cli", "up", "protocols/multi_paxos.py:elect",
         "--census", "replicas=3", "--input", "store={}", "--input", "leader={}",
         "--json", "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["client"] == ["ok", [1, "replicas.0"]]
    assert all(got[r] is None for r in REPLICAS)
