"""Deterministic simulation of choreographies: virtual time, seeded schedules, faults.

See ``docs/simulation.md``. Everything here is re-exported from ``choreo._sim``.
"""

from choreo._sim import (
    Crash,
    CrashedError,
    Deliver,
    Drop,
    FaultPlan,
    Heal,
    Partition,
    RandomFaults,
    Restart,
    Script,
    SimLoop,
    SimNetwork,
    SimResult,
    Simulation,
    Storage,
    Wait,
    run_simulated,
    simulate,
    trace_jsonl,
)

__all__ = [
    "Crash",
    "CrashedError",
    "Deliver",
    "Drop",
    "FaultPlan",
    "Heal",
    "Partition",
    "RandomFaults",
    "Restart",
    "Script",
    "SimLoop",
    "SimNetwork",
    "SimResult",
    "Simulation",
    "Storage",
    "Wait",
    "run_simulated",
    "simulate",
    "trace_jsonl",
]
