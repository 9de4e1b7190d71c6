"""What the replication protocols' tests share: histories on virtual time, fault plans, labels.

A ``History`` records client operations with their call and return times on
the simulation's virtual clock (``sim.now()``). An operation that failed or
timed out is left *pending* (``ret=None``): the client does not know whether
it took effect, which is the linearizability checker's convention.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from choreo.sim import RandomFaults, Simulation
from tests.checkers import Operation, check, kv_model


@dataclass
class History:
    """Operations of a simulated run, timed on the virtual clock."""

    sim: Simulation
    ops: list[Operation] = field(default_factory=list)

    def call(self) -> float:
        """The virtual time of an operation's call (take it before starting its session)."""
        return self.sim.now()

    def done(self, client: str, input: tuple[Any, ...], call: float, output: Any) -> None:
        """An operation that returned ``output`` now."""
        self.ops.append(Operation(client, input, output, call, self.sim.now()))

    def pending(self, client: str, input: tuple[Any, ...], call: float) -> None:
        """An operation whose outcome the client does not know (failed, timed out, retry)."""
        self.ops.append(Operation(client, input, None, call, None))

    @property
    def completed(self) -> list[Operation]:
        return [op for op in self.ops if not op.pending]

    def assert_linearizable(self, what: str) -> None:
        # a get that never returned changes nothing and showed nothing: leaving it out
        # changes no verdict, and spares the search its possible places
        ops = [op for op in self.ops if not (op.pending and op.input[0] == "get")]
        result = check(kv_model, ops, timeout=30)
        assert result.verdict != "unknown", f"{what}: the checker timed out"
        assert result.ok, f"{what}: {result.explain()}"


def line_of(module: ModuleType, text: str) -> str:
    """The label ``file.py:LINE`` of the (unique) line of ``module`` that contains ``text``."""
    lines, _ = inspect.findsource(module)
    found = [i + 1 for i, line in enumerate(lines) if text in line]
    assert len(found) == 1, f"{text!r} is on lines {found} of {module.__name__}"
    return f"{module.__name__.rsplit('.', 1)[-1]}.py:{found[0]}"


def random_faults(roles: list[str], seed: int) -> RandomFaults:
    """A bounded random fault plan: drops, delays, a partition, crashes with or without restarts.

    The seed also picks one of five kinds of plan, so plans differ in kind as
    well as in timing: (0) drops and a crash, (1) drops, two crashes and a
    partition, (2) two crashes with long downtimes, (3) drops and a
    partition only, (4) a crash for good (crash-stop) and drops.
    """
    kind = seed % 5
    return RandomFaults(
        drop=(0.01, 0.03, 0.0, 0.02, 0.01)[kind],
        delay=(0.0, 0.02),
        crash=(0.01, 0.005, 0.02, 0.0, 0.01)[kind],
        max_crashes=(1, 2, 2, 0, 1)[kind],
        restart=((0.2, 1.5), (0.2, 1.5), (1.0, 3.0), None, None)[kind],
        partition=(0.0, 0.005, 0.0, 0.01, 0.0)[kind],
        partition_for=(0.1, 0.6),
        max_partitions=1,
        roles=roles,
    )


async def every(period: float, stop: Callable[[], bool], step: Callable[[], Any]) -> None:
    """Run ``await step()`` every ``period`` virtual seconds until ``stop()``."""
    import asyncio

    while not stop():
        await step()
        await asyncio.sleep(period)
