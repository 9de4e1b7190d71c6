"""Deterministic simulation: virtual time, seeded interleavings, faults, service mode.

- the same seed gives the same trace, byte for byte (in this process and in
  processes with different ``PYTHONHASHSEED``), and different seeds explore
  different interleavings;
- generated choreographies give the centralized result under any seed;
- a lost message or a crashed peer fails the waiting role with a
  ``DeadlineError`` in virtual time (a 30 s deadline costs no real time);
- a script replays an exact message order; a restarted role keeps what it
  stored in ``Storage`` and loses the rest;
- service mode: many sessions of a replicated store against long-lived role
  state under random faults keep the store consistent.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import choreo
from choreo._loader import load_file, module_from_source
from choreo._sim import (
    Crash,
    CrashedError,
    Deliver,
    Drop,
    Heal,
    Partition,
    RandomFaults,
    Script,
    Simulation,
    Storage,
    Wait,
    simulate,
)
from protocols.bookseller import CATALOGUE, bookseller, two_buyer_bookseller

try:
    from tests.strategies import Program, choreographies
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from strategies import Program, choreographies  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent
KV = load_file(ROOT / "examples" / "04_kv_service.py")

_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large]

FANOUT = module_from_source(
    '''
from choreo import At, Role, choreography


@choreography
def fanout(
    boss: Role, w1: Role, w2: Role, w3: Role, w4: Role, n: At[int, "boss"]
) -> At[int, "boss"]:
    """The boss sends work to four workers, each answers; every pair runs concurrently."""
    a = boss.send(n, to=w1)
    b = boss.send(n + 1, to=w2)
    c = boss.send(n + 2, to=w3)
    d = boss.send(n + 3, to=w4)
    with w1:
        a2 = a * 2
    with w2:
        b2 = b * 2
    with w3:
        c2 = c * 2
    with w4:
        d2 = d * 2
    ra = w1.send(a2, to=boss)
    rb = w2.send(b2, to=boss)
    rc = w3.send(c2, to=boss)
    rd = w4.send(d2, to=boss)
    with boss:
        total = ra + rb + rc + rd
    return total
''',
    "fanout",
).fanout

TWO_BUYERS = dict(
    buyer1="b1",
    buyer2="b2",
    seller="s",
    title="TAPL",
    budget=50,
    limit=40,
    catalogue=CATALOGUE,
)
ONE_BUYER = dict(buyer="b", seller="s", title="TAPL", budget=100, catalogue=CATALOGUE)


def _order(trace: list[dict[str, Any]]) -> tuple[tuple[str, ...], ...]:
    """The sequence of deliveries of a trace, without times."""
    return tuple((r["from"], r["to"], r["label"]) for r in trace if r["event"] == "recv")


# -- determinism ---------------------------------------------------------------


def test_the_same_seed_gives_the_same_trace_bytes() -> None:
    faults = RandomFaults(drop=0.05, delay=(0.0, 0.01), crash=0.02, max_crashes=1)
    for seed in range(100):
        first = simulate(FANOUT, seed=seed, faults=faults, timeout=5, n=seed)
        again = simulate(FANOUT, seed=seed, faults=faults, timeout=5, n=seed)
        assert first.trace_jsonl() == again.trace_jsonl(), f"seed {seed}"
        assert first.results == again.results
        assert {r: str(e) for r, e in first.errors.items()} == {
            r: str(e) for r, e in again.errors.items()
        }


_DIGEST = """
import hashlib, sys
sys.path.insert(0, {root!r})
from tests.test_sim import digest_of_seeds
print(digest_of_seeds())
"""


def digest_of_seeds() -> str:
    """SHA-256 of the traces of 20 seeds of the fan-out under faults (for other processes)."""
    faults = RandomFaults(drop=0.05, delay=(0.0, 0.01), crash=0.02, partition=0.02)
    h = hashlib.sha256()
    for seed in range(20):
        h.update(simulate(FANOUT, seed=seed, faults=faults, timeout=5, n=1).trace_jsonl())
    return h.hexdigest()


def test_the_trace_does_not_depend_on_the_hash_seed_or_the_process() -> None:
    here = digest_of_seeds()
    for hashseed in ("0", "12345"):
        out = subprocess.run(
            [sys.executable, "-c", _DIGEST.format(root=str(ROOT))],
            env={**os.environ, "PYTHONHASHSEED": hashseed},
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
            check=True,
        )
        assert out.stdout.strip() == here, out.stderr


def test_different_seeds_explore_different_interleavings() -> None:
    orders = {_order(simulate(FANOUT, seed=seed, n=1).trace) for seed in range(100)}
    # 4 concurrent requests then 4 concurrent replies: many orders are possible
    assert len(orders) > 50, len(orders)
    books = {_order(simulate(two_buyer_bookseller, seed=s, **TWO_BUYERS).trace) for s in range(100)}
    assert len(books) >= 3, len(books)  # the price to both buyers races the contribution


def test_the_trace_is_sorted_json_lines() -> None:
    r = simulate(bookseller, seed=3, **ONE_BUYER)
    lines = r.trace_jsonl().decode().splitlines(keepends=True)
    assert lines and all(line.endswith("\n") for line in lines)
    assert lines[0].startswith(
        '{"event":"send","from":"b","kind":"DATA","label":"bookseller.py:34"'
    )
    assert r.ok and r.results == {"b": "2023-08-03", "s": None}


# -- soundness under random schedules -------------------------------------------------


def _check_sound(p: Program, seed: int) -> None:
    note(f"generated source:\n{p.source}")
    note(f"seed: {seed}")
    main = getattr(module_from_source(p.source, "simprop"), p.main_name)
    central = main(**p.inputs)
    result = simulate(main, seed=seed, timeout=5.0, **p.inputs)
    assert result.ok, result.error
    assert result.results == p.expected(central)


@settings(max_examples=150, deadline=None, suppress_health_check=_HEALTH)
@given(choreographies(), st.integers(0, 2**32 - 1))
def test_generated_choreographies_match_the_central_run_under_any_schedule(
    p: Program, seed: int
) -> None:
    _check_sound(p, seed)


@pytest.mark.slow
@settings(max_examples=3000, deadline=None, suppress_health_check=_HEALTH)
@given(choreographies(), st.integers(0, 2**32 - 1))
def test_generated_choreographies_match_the_central_run_under_any_schedule_slow(
    p: Program, seed: int
) -> None:
    _check_sound(p, seed)


# -- faults in one session ----------------------------------------------------------


def test_a_dropped_message_fails_the_waiting_role_in_virtual_time() -> None:
    start = time.perf_counter()
    r = simulate(bookseller, seed=0, faults=Script([Drop("b", "s")]), timeout=30, **ONE_BUYER)
    real = time.perf_counter() - start
    assert isinstance(r.errors["s"], choreo.DeadlineError)
    assert "s waited 30s" in str(r.errors["s"]) and "from b" in str(r.errors["s"])
    assert isinstance(r.errors["b"], choreo.DeadlineError)
    assert 30.0 <= r.time < 30.1
    events = [x["event"] for x in r.trace]
    assert events[:2] == ["send", "drop"] and "recv" not in events  # then both abort
    assert real < 1.0, f"{real:.2f}s of real time for a 30s virtual deadline"


def test_random_drops_fail_within_the_deadline() -> None:
    r = simulate(bookseller, seed=1, faults=RandomFaults(drop=1.0), timeout=10, **ONE_BUYER)
    assert isinstance(r.error, choreo.DeadlineError)
    assert r.time <= 10.0 + 1e-6


def test_a_crashed_role_makes_its_peers_fail_within_their_deadline() -> None:
    script = Script([Deliver("b", "s"), Crash("s")])
    r = simulate(bookseller, seed=0, faults=script, timeout=30, **ONE_BUYER)
    assert isinstance(r.errors["s"], CrashedError)
    assert isinstance(r.errors["b"], choreo.DeadlineError)
    assert "from s" in str(r.errors["b"])
    assert isinstance(r.error, choreo.DeadlineError)
    crash = [x for x in r.trace if x["event"] == "crash"]
    assert crash == [{"t": crash[0]["t"], "event": "crash", "role": "s"}]
    assert r.time <= crash[0]["t"] + 30 + 1e-6


def test_a_partition_loses_what_crosses_it_until_healed() -> None:
    script = Script([Partition(("b",), ("s",)), Wait(0.5), Heal()])
    r = simulate(bookseller, seed=0, faults=script, timeout=2, **ONE_BUYER)
    lost = [x for x in r.trace if x["event"] == "lost"]
    assert [(x["from"], x["to"], x["why"]) for x in lost] == [("b", "s", "partition")]
    assert [x["event"] for x in r.trace if x["event"] in ("partition", "heal")] == [
        "partition",
        "heal",
    ]
    assert isinstance(r.errors["s"], choreo.DeadlineError)


def test_a_script_replays_an_exact_message_order() -> None:
    # the natural order delivers the price to buyer1 before buyer2's contribution;
    # the script makes the contribution overtake it, whatever the seed
    steps = [
        Deliver("b1", "s", 71),
        Deliver("s", "b2", 74),
        Deliver("b2", "b1", 55),
        Deliver("s", "b1", 74),
        Deliver("b1", "s", 78),
        Deliver("s", "b1", 79),
    ]
    expected = (
        ("b1", "s", "bookseller.py:71"),
        ("s", "b2", "bookseller.py:74"),
        ("b2", "b1", "bookseller.py:55"),
        ("s", "b1", "bookseller.py:74"),
        ("b1", "s", "bookseller.py:78"),
        ("s", "b1", "bookseller.py:79"),
    )
    plan = Script(steps)
    for seed in range(20):
        r = simulate(two_buyer_bookseller, seed=seed, faults=plan, **TWO_BUYERS)
        assert r.ok, r.error
        assert _order(r.trace) == expected, seed
        assert plan.done


def test_a_script_step_that_never_comes_holds_nothing_else() -> None:
    # s -> b at line 999 never happens: the script waits, every other message flows
    r = simulate(bookseller, seed=0, faults=Script([Deliver("s", "b", 999)]), **ONE_BUYER)
    assert r.ok


# -- service mode ----------------------------------------------------------------


def _kv(seed: int, faults: Any = None, *, durable: bool = True, timeout: float = 2.0) -> Simulation:
    sim = Simulation(seed=seed, faults=faults, timeout=timeout)

    def state(role: str, name: str) -> Any:
        return lambda: {name: sim.storage(role) if durable else {}}

    sim.serve("primary", KV, state=state("primary", "pstore"))
    sim.serve("backup", KV, state=state("backup", "bstore"))
    return sim


@pytest.mark.parametrize("durable", [True, False])
def test_a_restarted_role_keeps_only_what_it_stored(durable: bool) -> None:
    sim = _kv(0, durable=durable)

    async def workload() -> list[Any]:
        async with sim.client("c") as c:
            put = await c.run(KV.put, key="x", value=41)
            before = sim.server("primary")
            sim.crash("primary")
            sim.restart("primary")
            assert sim.server("primary") is not before
            got = await c.run(KV.get, key="x")
            return [put["client"], got["client"]]

    assert sim.run(workload) == [True, 41 if durable else None]
    assert [r["event"] for r in sim.trace if r["event"] in ("crash", "restart")] == [
        "crash",
        "restart",
    ]
    assert isinstance(sim.storage("primary"), Storage)
    assert sim.storage("primary") == ({"x": 41} if durable else {})


def test_a_session_against_a_crashed_server_fails_in_virtual_time() -> None:
    sim = _kv(0, timeout=30)

    async def workload() -> str:
        async with sim.client("c") as c:
            sim.crash("backup")
            try:
                await c.run(KV.put, key="x", value=1)
            except choreo.DeadlineError as exc:
                return f"{sim.now():.0f} {exc}"
            return "no error"

    start = time.perf_counter()
    out = sim.run(workload)
    assert out.startswith("30 ") or out.startswith("60 "), out
    assert time.perf_counter() - start < 10.0  # 30 virtual seconds, not waited for real


def _kv_workload(sim: Simulation, clients: int, ops: int) -> list[list[tuple[Any, ...]]]:
    """Clients, concurrently, each on its own key: put a fresh value, get; log outcomes."""
    import asyncio

    async def client(i: int) -> list[tuple[Any, ...]]:
        log: list[tuple[Any, ...]] = []
        async with sim.client(f"c{i}") as c:
            for n in range(ops):
                try:
                    r = await c.run(KV.put, key=f"k{i}", value=n)
                    log.append(("put", n, r["client"]))
                except choreo.ChoreoRuntimeError:
                    log.append(("put", n, None))
                try:
                    r = await c.run(KV.get, key=f"k{i}")
                    log.append(("get", r["client"]))
                except choreo.ChoreoRuntimeError:
                    log.append(("get-failed",))
        return log

    async def workload() -> list[list[tuple[Any, ...]]]:
        return list(await asyncio.gather(*(client(i) for i in range(clients))))

    return sim.run(workload)


def _check_kv(logs: list[list[tuple[Any, ...]]], sim: Simulation) -> tuple[int, int]:
    """A get sees the last acknowledged put or a later one; the backup has every key."""
    ok = failed = 0
    for log in logs:
        acked = -1
        for entry in log:
            if entry[0] == "put":
                if entry[2] is True:
                    acked = entry[1]
                    ok += 1
                else:
                    failed += 1
            elif entry[0] == "get":
                ok += 1
                if acked >= 0:
                    assert entry[1] is not None and entry[1] >= acked, (entry, log)
            else:
                failed += 1
    assert set(sim.storage("primary")) <= set(sim.storage("backup"))
    return ok, failed


def test_service_mode_keeps_the_store_consistent_under_random_faults() -> None:
    faults = RandomFaults(
        drop=0.03,
        delay=(0.0, 0.02),
        crash=0.005,
        max_crashes=2,
        restart=(0.5, 2.0),
        partition=0.005,
        partition_for=(0.1, 1.0),
    )
    total_ok = total_failed = crashes = 0
    for seed in range(8):
        sim = _kv(seed, faults)
        logs = _kv_workload(sim, clients=3, ops=15)
        ok, failed = _check_kv(logs, sim)
        total_ok += ok
        total_failed += failed
        crashes += sum(1 for r in sim.trace if r["event"] == "crash")
    # the faults did hit, and most sessions still succeeded
    assert total_failed > 0 and crashes > 0
    assert total_ok > total_failed


def test_service_mode_is_deterministic() -> None:
    faults = RandomFaults(drop=0.05, delay=(0.0, 0.02), crash=0.01, max_crashes=2)
    a, b = _kv(11, faults), _kv(11, faults)
    assert _kv_workload(a, 2, 10) == _kv_workload(b, 2, 10)
    assert a.trace_jsonl() == b.trace_jsonl()
    assert a.trace_jsonl() != _kv_workload_trace(_kv(12, faults))


def _kv_workload_trace(sim: Simulation) -> bytes:
    _kv_workload(sim, 2, 10)
    return sim.trace_jsonl()


def test_simulate_refuses_to_run_inside_an_event_loop() -> None:
    import asyncio

    async def inside() -> None:
        simulate(bookseller, **ONE_BUYER)

    with pytest.raises(choreo.UsageError):
        asyncio.run(inside())
