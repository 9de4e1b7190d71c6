"""Primary-backup replication (protocols/primary_backup.py) in service mode, under faults.

Concurrent clients put and get in a ``Simulation``; every history must be
linearizable, every put answered OK must be at every backup of the view it
was acknowledged in, and a crashed backup must cost a RETRY, never a hang.
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
from protocols import primary_backup as pb
from tests.replication_harness import History, every, line_of, random_faults
from tests.scenarios import ROOT

BACKUPS = [f"backups.{i}" for i in range(3)]
SERVED = ["primary", *BACKUPS]
KEYS = ("x", "y")
TIMEOUT = 1.0  # virtual seconds any receive waits


def cluster(seed: int, faults: Any = None) -> Simulation:
    sim = Simulation(seed=seed, faults=faults, timeout=TIMEOUT)
    sim.serve("primary", pb, state=lambda: {"pstore": sim.storage("primary")})
    for name in BACKUPS:
        sim.serve(name, pb, state=lambda n=name: {"bstore": sim.storage(n)})
    pb.initial_view(sim.storage("primary"), tuple(BACKUPS))  # the first view: every backup
    return sim


class View:
    """What the clients know of the primary's view: the freshest one any answer carried."""

    def __init__(self) -> None:
        self.members = list(BACKUPS)
        self.view_id = -1

    def learn(self, answer: tuple[Any, ...]) -> None:
        _, _, view, joining, view_id = answer
        if view_id >= self.view_id:
            self.members, self.view_id = view + joining, view_id


async def put(c: Any, view: View, key: str, value: str, history: History, acked: list[Any]) -> str:
    """One put, retried with the new view after a RETRY; every attempt is an operation."""
    for _ in range(3):
        call = history.call()
        try:
            if view.members:
                out = await c.run(pb.put, key=key, value=value, backups=view.members)
            else:
                out = await c.run(pb.put_alone, key=key, value=value)
        except ChoreoError:
            history.pending(c.name, ("put", key, value), call)
            continue
        answer = out["client"]
        view.learn(answer)
        if answer[0] == pb.OK:
            history.done(c.name, ("put", key, value), call, None)
            acked.append((key, value, answer[1], answer[2]))
            return pb.OK
        history.pending(c.name, ("put", key, value), call)
    return pb.RETRY


async def get(c: Any, key: str, history: History) -> None:
    call = history.call()
    try:
        out = await c.run(pb.get, key=key)
    except ChoreoError:
        history.pending(c.name, ("get", key), call)
        return
    history.done(c.name, ("get", key), call, out["client"])


def workload(sim: Simulation, seed: int, clients: int, ops: int) -> tuple[History, list[Any]]:
    rng = random.Random(seed)
    history = History(sim)
    acked: list[Any] = []
    view = View()
    running = [clients]

    async def client(name: str) -> None:
        async with sim.client(name) as c:
            for i in range(ops):
                key = rng.choice(KEYS)
                if rng.random() < 0.6:
                    await put(c, view, key, f"{name}:{i}", history, acked)
                else:
                    await get(c, key, history)
                await asyncio.sleep(rng.uniform(0, 0.02))
        running[0] -= 1

    async def manager() -> None:
        """The operator: brings backups that are out of the view back in (state transfer)."""
        async with sim.client("manager") as c:

            async def step() -> None:
                out = [b for b in BACKUPS if b not in view.members]
                if out:
                    try:
                        view.learn((await c.run(pb.rejoin, backups=out))["primary"])
                    except ChoreoError:
                        pass

            await every(0.25, lambda: running[0] == 0, step)

    async def main() -> None:
        await asyncio.gather(*(client(f"c{k}") for k in range(clients)), manager())

    sim.run(main)
    return history, acked


def check_run(sim: Simulation, history: History, acked: list[Any], what: str) -> None:
    history.assert_linearizable(what)
    for key, value, seq, view in acked:
        for b in view:  # an acknowledged put is at every backup of its view
            held = sim.storage(b).get(key)
            assert held is not None and held[0] >= seq, f"{what}: {b} lacks put {key}={value}"
    pstore = sim.storage("primary")
    for b in pstore["view"]:  # every backup of the final view holds every committed put
        for key, (seq, _) in pstore["data"].items():
            assert sim.storage(b).get(key, (0,))[0] >= seq, f"{what}: {b} lacks {key}"


def run_seed(seed: int, clients: int = 3, ops: int = 8) -> History:
    sim = cluster(seed, random_faults(SERVED, seed))
    history, acked = workload(sim, seed, clients, ops)
    check_run(sim, history, acked, f"seed {seed}")
    return history


def test_without_faults_every_operation_completes() -> None:
    sim = cluster(1)
    history, acked = workload(sim, 1, 3, 8)
    check_run(sim, history, acked, "no faults")
    assert all(not op.pending for op in history.ops)
    assert sim.storage("primary")["view"] == BACKUPS
    for b in BACKUPS:
        assert sim.storage(b) == sim.storage("primary")["data"]


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


def test_a_backup_crash_during_a_put_costs_one_retry_not_a_hang() -> None:
    ack = line_of(pb, "acks = backups.send(ack, to=primary, timeout=ACK_TIMEOUT)  # who")
    # backups.1 applies the update, then crashes before its acknowledgement leaves
    sim = cluster(7, Script([Drop("backups.1", "primary", ack), Crash("backups.1")]))
    history = History(sim)
    acked: list[Any] = []
    view = View()

    async def main() -> tuple[float, tuple[Any, ...], Any, str]:
        async with sim.client("c1") as c:
            start = sim.now()
            first = (await c.run(pb.put, key="x", value=1, backups=view.members))["client"]
            took = sim.now() - start
            view.learn(first)
            status = await put(c, view, "x", 2, history, acked)
            got = (await c.run(pb.get, key="x"))["client"]
            return took, first, got, status

    took, first, got, status = sim.run(main)
    assert first[0] == pb.RETRY and first[2] == ["backups.0", "backups.2"]  # dropped from the view
    assert took < TIMEOUT + 1.5  # the ack timeout, and the client's grace for the dead member
    assert status == pb.OK and got == 2
    assert acked[0][3] == ["backups.0", "backups.2"]
    assert sim.storage("backups.0")["x"][1] == sim.storage("backups.2")["x"][1] == 2
    assert sim.storage("backups.1")["x"][1] == 1  # applied before it crashed, never committed
    assert sim.storage("primary")["data"]["x"][1] == 2


def test_a_restarted_backup_rejoins_with_the_primary_state() -> None:
    sim = cluster(8)

    async def main() -> tuple[Any, ...]:
        async with sim.client("c1") as c:
            view = View()
            history, acked = History(sim), []
            await put(c, view, "x", 1, history, acked)
            sim.crash("backups.2")
            await put(c, view, "y", 2, history, acked)  # RETRY (dropped), then OK without it
            assert view.members == ["backups.0", "backups.1"]
            sim.restart("backups.2")
            view.learn((await c.run(pb.rejoin, backups=["backups.2"]))["primary"])
            await put(c, view, "x", 3, history, acked)
            return tuple(view.members)

    assert sim.run(main) == tuple(BACKUPS)
    data = sim.storage("primary")["data"]
    assert {k: v for k, (_, v) in data.items()} == {"x": 3, "y": 2}
    assert sim.storage("backups.2") == data  # the snapshot brought y; x=3 came as an update


def test_a_client_with_an_old_view_cannot_commit() -> None:
    sim = cluster(9)

    async def main() -> tuple[Any, ...]:
        async with sim.client("c1") as c:
            return (await c.run(pb.put, key="x", value=1, backups=["backups.0"]))["client"]

    status, _, view, joining, _ = sim.run(main)
    assert status == pb.RETRY and view == BACKUPS and joining == []  # nobody dropped
    assert "x" not in sim.storage("primary")["data"]


def test_put_over_grpc_processes() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "choreo._cli", "up", "protocols/primary_backup.py:put",
         "--census", "backups=2", "--input", "key=x", "--input", "value=1",
         "--input", "pstore={}", "--input", "bstore={}", "--json", "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got == {
        "client": ["OK", 1, ["backups.0", "backups.1"], [], 0],
        "primary": None, "backups.0": None, "backups.1": None,
    }  # fmt: skip
