"""Chain replication (protocols/chain_replication.py) in service mode, under faults.

Concurrent clients write and read in a ``Simulation`` while an operator probes
the nodes and reconfigures the chain; every history must be linearizable,
every acknowledged write must be at every node of the final chain, and after
a last reconfiguration without faults every node of the chain must hold the
same store (the writes in flight at a failure were re-sent, not lost midway).
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
from choreo.sim import Drop, Script, Simulation
from protocols import chain_replication as cr
from tests.replication_harness import History, every, line_of, random_faults
from tests.scenarios import ROOT

NODES = [f"chain.{i}" for i in range(3)]
SERVED = ["master", *NODES]
KEYS = ("x", "y")
TIMEOUT = 1.0


def cluster(seed: int, faults: Any = None, nodes: list[str] = NODES) -> Simulation:
    sim = Simulation(seed=seed, faults=faults, timeout=TIMEOUT)
    sim.serve("master", cr, state=lambda: {"mstore": sim.storage("master")})
    cr.initial_master(sim.storage("master"), nodes)
    for name in nodes:
        sim.serve(name, cr, state=lambda n=name: {"store": sim.storage(n)})
        cr.initial_config(sim.storage(name), nodes)
    return sim


class Config:
    """A client's copy of the master's configuration."""

    def __init__(self) -> None:
        self.epoch, self.chain = 0, list(NODES)

    async def refresh(self, c: Any) -> None:
        try:
            self.epoch, self.chain = (await c.run(cr.config))["client"]
        except ChoreoError:
            await asyncio.sleep(0.1)  # the master is down or cut off: try later


async def write(c: Any, cfg: Config, key: str, value: str, history: History) -> tuple | None:
    call = history.call()
    try:
        out = await c.run(cr.write, key=key, value=value, epoch=cfg.epoch, chain=cfg.chain)
    except ChoreoError:
        out = None
    if out is not None and out["client"][0] == cr.OK:
        history.done(c.name, ("put", key, value), call, None)
        return tuple(out["client"][1])
    history.pending(c.name, ("put", key, value), call)
    await cfg.refresh(c)
    return None


async def read(c: Any, cfg: Config, key: str, history: History) -> Any:
    call = history.call()
    try:
        out = await c.run(cr.read, key=key, epoch=cfg.epoch, chain=[cfg.chain[-1]])
    except ChoreoError:
        out = None
    if out is not None and out["client"][0] == cr.OK:
        history.done(c.name, ("get", key), call, out["client"][1])
        return out["client"][1]
    history.pending(c.name, ("get", key), call)
    await cfg.refresh(c)
    return None


async def reconfigure(c: Any, nodes: list[str] = NODES, force: bool = False) -> Any:
    """The operator: probe every node; move to the planned chain if it differs."""
    try:
        _, _, planned, needed = (await c.run(cr.probe, chain=nodes))["client"]
        if needed or force:
            return (await c.run(cr.reconfigure, chain=planned))["client"]
    except ChoreoError:
        pass
    return None


def workload(sim: Simulation, seed: int, clients: int, ops: int) -> tuple[History, list[Any]]:
    rng = random.Random(seed)
    history = History(sim)
    acked: list[Any] = []
    running = [clients]

    async def client(name: str) -> None:
        cfg = Config()
        async with sim.client(name) as c:
            await cfg.refresh(c)
            for i in range(ops):
                key = rng.choice(KEYS)
                if rng.random() < 0.6:
                    seq = await write(c, cfg, key, f"{name}:{i}", history)
                    if seq is not None:
                        acked.append((key, seq))
                else:
                    await read(c, cfg, key, history)
                await asyncio.sleep(rng.uniform(0, 0.02))
        running[0] -= 1

    async def operator() -> None:
        async with sim.client("operator") as c:
            await every(0.3, lambda: running[0] == 0, lambda: reconfigure(c))

    async def main() -> None:
        await asyncio.gather(*(client(f"c{k}") for k in range(clients)), operator())

    sim.run(main)
    return history, acked


async def settle(sim: Simulation) -> Any:
    """After the faults: every node up, the network whole, one last reconfiguration."""
    sim.heal()
    for name in SERVED:
        sim.restart(name)
    await asyncio.sleep(0.5)
    async with sim.client("operator") as c:
        for _ in range(5):
            out = await reconfigure(c, force=True)
            if out is not None and out[0] == "committed":
                return out
    raise AssertionError("no configuration could be committed without faults")


def check_run(sim: Simulation, history: History, acked: list[Any], what: str) -> None:
    history.assert_linearizable(what)
    outcome = sim.run(lambda: settle(sim))
    chain = outcome[2]
    stores = [sim.storage(n)["data"] for n in chain]
    for key, seq in acked:  # every acknowledged write is at every node of the chain
        for n, data in zip(chain, stores, strict=True):
            assert key in data and tuple(data[key][0]) >= seq, f"{what}: {n} lacks {key}@{seq}"
    assert all(s == stores[0] for s in stores), f"{what}: the chain's stores differ: {stores}"
    for n in chain:
        assert sim.storage(n)["sent"] == {}, f"{what}: {n} still has unstable updates"


def run_seed(seed: int, clients: int = 3, ops: int = 8) -> History:
    sim = cluster(seed, random_faults(SERVED, seed))
    history, acked = workload(sim, seed, clients, ops)
    sim.faults = None  # the last reconfiguration runs without faults
    check_run(sim, history, acked, f"seed {seed}")
    return history


def test_without_faults_every_operation_completes() -> None:
    sim = cluster(1)
    history, acked = workload(sim, 1, 3, 8)
    check_run(sim, history, acked, "no faults")
    assert all(not op.pending for op in history.ops)
    assert sim.storage("master")["chain"] == NODES


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


def _scenario(sim: Simulation, body: Any) -> Any:
    async def main() -> Any:
        async with sim.client("c1") as c, sim.client("operator") as op:
            cfg = Config()
            await cfg.refresh(c)
            return await body(c, op, cfg, History(sim))

    return sim.run(main)


@pytest.mark.parametrize(
    "failed", ["chain.0", "chain.1", "chain.2"], ids=["head", "middle", "tail"]
)
def test_a_failed_node_is_removed_and_the_chain_serves_on(failed: str) -> None:
    sim = cluster(3)

    async def body(c: Any, op: Any, cfg: Config, h: History) -> Any:
        assert await write(c, cfg, "x", "1", h) is not None
        sim.crash(failed)
        assert await write(c, cfg, "x", "2", h) is None  # times out: pending
        outcome = await reconfigure(op)
        await cfg.refresh(c)
        assert await write(c, cfg, "y", "3", h) is not None
        return outcome, cfg.chain, await read(c, cfg, "y", h), h

    outcome, chain, y, h = _scenario(sim, body)
    assert outcome[0] == "committed" and chain == [n for n in NODES if n != failed]
    assert y == "3"
    h.assert_linearizable(failed)


def test_writes_in_flight_past_a_failed_middle_node_are_re_sent() -> None:
    relay = line_of(cr, "update = a.send(update, to=b)")
    # the update reaches chain.1, which applies it; its copy to the tail is lost; chain.1 crashes
    script = Script([Drop("chain.1", "chain.2", relay)])
    sim = cluster(4, script)

    async def body(c: Any, op: Any, cfg: Config, h: History) -> Any:
        first = await write(c, cfg, "x", "1", h)  # its relay to the tail is dropped: pending
        sim.crash("chain.1")
        second = await write(c, cfg, "y", "2", h)  # the same: pending, chain.1 is down
        before = await read(c, cfg, "x", h)  # neither reached the tail
        assert not h.ops[-1].pending  # the read was answered: x is not at the tail
        head = dict(sim.storage("chain.0")["sent"])
        outcome = await reconfigure(op)  # chain.0 re-sends its Sent list to chain.2
        await cfg.refresh(c)
        return first, second, before, head, outcome, await read(c, cfg, "x", h), h

    first, second, before, head, outcome, after, h = _scenario(sim, body)
    assert first is None and second is None and before is None
    assert len(head) == 2  # both writes wait in the head's Sent list
    assert outcome == ("committed", 1, ["chain.0", "chain.2"])
    assert after == "1" and sim.storage("chain.2")["data"]["y"][1] == "2"
    assert sim.storage("chain.0")["sent"] == {}  # the tail declared them stable
    resent = [
        r for r in sim.trace
        if r["event"] == "recv" and r["from"] == "chain.0" and r["to"] == "chain.2"
        and "updates" in r["summary"]
    ]  # fmt: skip
    assert resent, "the head re-sent nothing to its new successor"
    h.assert_linearizable("middle failure")


def test_a_node_left_out_of_an_attempt_that_failed_comes_back_with_a_snapshot() -> None:
    """An attempt that is not committed may still have caught a node up past another one.

    chain.1 is cut off while x=2 is in flight: the attempt [chain.0, chain.2]
    re-sends x=2 to chain.2, then fails (chain.0's acknowledgement is lost)
    and chain.0 crashes. chain.1 lacks x=2, which chain.2 holds: it must not
    come back as chain.2's predecessor, only after it, with a snapshot.
    """
    acks = line_of(cr, "acks = chain.send(ok, to=master, timeout=RECONFIG_TIMEOUT)")
    sim = cluster(6, Script([Drop("chain.0", "master", acks)]))

    async def body(c: Any, op: Any, cfg: Config, h: History) -> Any:
        await write(c, cfg, "x", "1", h)
        sim.partition(["master", "chain.0", "chain.2"], ["chain.1"])
        await write(c, cfg, "x", "2", h)  # lost on its way to chain.1: pending
        failed = await reconfigure(op)
        sim.heal()
        sim.crash("chain.0")
        committed = await reconfigure(op)
        await cfg.refresh(c)
        return failed, committed, await read(c, cfg, "x", h), h

    failed, committed, x, h = _scenario(sim, body)
    assert failed == ("failed", 0, NODES)
    assert committed == ("committed", 2, ["chain.2", "chain.1"])  # chain.1 joins at the tail
    assert x == "2"
    assert sim.storage("chain.1")["data"] == sim.storage("chain.2")["data"]
    h.assert_linearizable("failed attempt")


def test_a_node_that_comes_back_rejoins_as_the_tail() -> None:
    sim = cluster(5)

    async def body(c: Any, op: Any, cfg: Config, h: History) -> Any:
        await write(c, cfg, "x", "1", h)
        sim.crash("chain.0")
        await reconfigure(op)  # [chain.1, chain.2]
        await cfg.refresh(c)
        await write(c, cfg, "y", "2", h)
        sim.restart("chain.0")
        outcome = await reconfigure(op)  # chain.0 gets chain.2's store
        await cfg.refresh(c)
        await write(c, cfg, "x", "3", h)
        return outcome, await read(c, cfg, "x", h), await read(c, cfg, "y", h)

    outcome, x, y = _scenario(sim, body)
    assert outcome == ("committed", 2, ["chain.1", "chain.2", "chain.0"])
    assert (x, y) == ("3", "2")
    assert sim.storage("chain.0")["data"] == sim.storage("chain.1")["data"]


def test_a_removed_tail_cannot_serve_a_stale_read() -> None:
    sim = cluster(6)

    async def body(c: Any, op: Any, cfg: Config, h: History) -> Any:
        await write(c, cfg, "x", "old", h)
        old = Config()
        old.epoch, old.chain = cfg.epoch, list(cfg.chain)
        sim.partition(["master", "chain.0", "chain.1"], ["chain.2"])  # the tail is cut off
        await reconfigure(op)
        sim.heal()  # chain.2 is back, but it was never told it left the chain
        await cfg.refresh(c)
        await write(c, cfg, "x", "new", h)
        stale = (await c.run(cr.read, key="x", epoch=old.epoch, chain=["chain.2"]))["client"]
        return cfg.chain, stale, sim.storage("chain.2")["data"]["x"][1]

    chain, stale, held = _scenario(sim, body)
    assert chain == ["chain.0", "chain.1"]
    assert held == "old"  # chain.2 still holds the old value and still believes it is the tail
    assert stale[0] == cr.STALE  # but the master says its epoch is over


def test_write_over_grpc_processes() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "choreo._cli", "up", "protocols/chain_replication.py:write",
         "--census", "chain=3", "--input", "key=x", "--input", "value=1",
         "--input", "epoch=0", "--input", "store={}", "--json", "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got == {"client": ["ok", [0, 1]], "chain.0": None, "chain.1": None, "chain.2": None}
