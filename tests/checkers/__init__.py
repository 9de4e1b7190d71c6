"""Property checkers for protocol tests: linearizability of key-value histories and
safety of consensus/commit records. Pure Python, independent of choreo."""

from __future__ import annotations

from .consensus import (
    Decision,
    agreement,
    atomic_commit,
    log_prefixes,
    promises_monotonic,
    validity,
)
from .linearizability import (
    UNKNOWN,
    HistoryRecorder,
    Model,
    Operation,
    PartitionResult,
    Result,
    Verdict,
    brute_force,
    check,
    is_linearization,
    kv_model,
)

__all__ = [
    "UNKNOWN",
    "Decision",
    "HistoryRecorder",
    "Model",
    "Operation",
    "PartitionResult",
    "Result",
    "Verdict",
    "agreement",
    "atomic_commit",
    "brute_force",
    "check",
    "is_linearization",
    "kv_model",
    "log_prefixes",
    "promises_monotonic",
    "validity",
]
