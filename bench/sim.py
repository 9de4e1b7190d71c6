"""Benchmark: simulated sessions of the bookseller per second of real time.

    .venv/bin/python bench/sim.py [--reps 5] [--sessions 2000] [--quick]

Rows:

* ``simulate()``: one-shot runs of ``bookseller`` (a fresh virtual-time loop,
  network and nodes per session), one seed per run;
* service mode: one ``Simulation`` with the seller served and four clients
  (buyers) running sessions concurrently against it, ``--sessions`` in all.

Each row without faults and under ``RandomFaults(drop=0.01, delay=(0, 0.01),
crash=0.001, max_crashes=2, restart=(0.5, 2))``. A failed session (a lost
message makes both roles wait their 2 s deadline, in virtual time) counts
like a successful one. Prints the median, min and max over the repetitions.
Not run by the tests; no timing is asserted anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._table import Row, markdown
from choreo import ChoreoRuntimeError
from choreo._sim import FaultPlan, RandomFaults, Simulation, simulate
from protocols import bookseller as books


def faults() -> RandomFaults:
    """The random fault plan of the faulty rows."""
    return RandomFaults(
        drop=0.01, delay=(0.0, 0.01), crash=0.001, max_crashes=2, restart=(0.5, 2.0)
    )


def one_shot(n: int, plan: FaultPlan | None) -> tuple[float, int]:
    """``n`` runs of ``simulate``: sessions per second, and how many failed."""
    failed = 0
    start = time.perf_counter()
    for seed in range(n):
        r = simulate(
            books.bookseller,
            seed=seed,
            faults=plan,
            timeout=2.0,
            buyer="buyer",
            seller="seller",
            title="TAPL",
            budget=100,
            catalogue=books.CATALOGUE,
        )
        failed += not r.ok
    return n / (time.perf_counter() - start), failed


def service(n: int, plan: FaultPlan | None, clients: int = 4) -> tuple[float, int]:
    """``n`` sessions from ``clients`` concurrent clients: sessions per second, failures."""
    sim = Simulation(seed=1, faults=plan, timeout=2.0)
    sim.serve("seller", [books.bookseller], state={"catalogue": books.CATALOGUE})
    failed = 0

    async def client(i: int) -> None:
        nonlocal failed
        async with sim.client(f"buyer{i}") as c:
            for _ in range(n // clients):
                try:
                    await c.run(books.bookseller, title="TAPL", budget=100)
                except ChoreoRuntimeError:
                    failed += 1

    async def workload() -> None:
        await asyncio.gather(*(client(i) for i in range(clients)))

    start = time.perf_counter()
    sim.run(workload)
    return n / (time.perf_counter() - start), failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="2 repetitions of 100 sessions")
    args = parser.parse_args()
    if args.quick:
        args.reps, args.sessions = 2, 100
    rows = [
        Row("simulate(), no faults (baseline)", "oneshot", "oneshot", "sessions/s"),
        Row("simulate(), random faults", "oneshot_faults", "oneshot", "sessions/s"),
        Row("service mode, no faults", "service", "oneshot", "sessions/s"),
        Row("service mode, random faults", "service_faults", "oneshot", "sessions/s"),
    ]
    runs = {
        "oneshot": lambda: one_shot(args.sessions, None),
        "oneshot_faults": lambda: one_shot(args.sessions, faults()),
        "service": lambda: service(args.sessions, None),
        "service_faults": lambda: service(args.sessions, faults()),
    }
    results: dict[str, list[float]] = {k: [] for k in runs}
    failures: dict[str, int] = {}
    for rep in range(args.reps):  # interleaved repetitions
        print(f"sim: repetition {rep + 1}/{args.reps}", file=sys.stderr, flush=True)
        for key, fn in runs.items():
            rate, failures[key] = fn()
            results[key].append(rate)
    print(
        f"simulated bookseller sessions per second of real time, {args.sessions} sessions "
        f"per repetition, {args.reps} interleaved repetitions; sessions failed by the faults "
        f"(last repetition): "
        + ", ".join(f"{r.title.split(' (')[0]}: {failures[r.key]}" for r in rows)
        + "\n"
    )
    print(markdown(rows, results))


if __name__ == "__main__":
    main()
