"""A linearizability checker for operation histories (Wing & Gong, memoised as in Porcupine).

The search follows Porcupine's ``checkSingle``
(https://github.com/anishathalye/porcupine, ``checker.go``): the call and
return entries of every operation are sorted by time (calls before returns at
equal times, so operations that merely touch are concurrent) into a doubly
linked list; the search walks the list, and at a call entry tries to
linearize that operation next (``lift`` it and its return out of the list),
at a return entry it has run out of candidates and backtracks (``unlift``).
A cache of (linearized bitset, model state) pairs prunes every configuration
already explored. For a model that is P-compositional (a key-value store is:
each key is an independent register) the history is split by
``Model.partition`` and every part is checked on its own, which is what keeps
the search small.

Operations that never returned (the client crashed or timed out) have no
return time: ``ret`` is ``None`` or ``math.inf``. As in Porcupine their return
entry sits at +infinity, so such an operation may be linearized anywhere after
its call, including after every completed operation, which is the same as it
never taking effect. The checker passes ``UNKNOWN`` as their output, and a
model must accept any output for ``UNKNOWN`` (``kv_model`` does).

``brute_force`` is an independent oracle for small histories: it tries every
order consistent with real time, with the whole (unpartitioned) model, and
lets every pending operation either take effect somewhere after its call or
not at all.

Model states must be hashable (they are memoised).
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

__all__ = [
    "UNKNOWN",
    "HistoryRecorder",
    "Model",
    "Operation",
    "PartitionResult",
    "Result",
    "Verdict",
    "brute_force",
    "check",
    "is_linearization",
    "kv_model",
]

S = TypeVar("S", bound=Hashable)
Verdict = Literal["ok", "illegal", "unknown"]


class _Unknown:
    """The output of an operation that never returned."""

    _instance: _Unknown | None = None

    def __new__(cls) -> _Unknown:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNKNOWN"

    def __reduce__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Any = _Unknown()


@dataclass(frozen=True)
class Operation:
    """One client operation: ``input`` invoked at ``call``, ``output`` returned at ``ret``.

    ``ret`` is ``None`` or ``math.inf`` for an operation that never returned
    (its ``output`` is then ignored). Times are ints or floats on one clock.
    """

    client_id: Hashable
    input: Any
    output: Any
    call: float
    ret: float | None

    def __post_init__(self) -> None:
        if not math.isfinite(self.call):
            raise ValueError(f"call time must be finite: {self!r}")
        if self.ret is not None and self.ret < self.call:
            raise ValueError(f"operation returns before it is called: {self!r}")

    @property
    def pending(self) -> bool:
        """True if the operation never returned (it may or may not have taken effect)."""
        return self.ret is None or self.ret == math.inf

    @property
    def ret_time(self) -> float:
        """The return time, +infinity for a pending operation."""
        return math.inf if self.ret is None else self.ret

    @property
    def observed_output(self) -> Any:
        """``output``, or ``UNKNOWN`` for a pending operation."""
        return UNKNOWN if self.pending else self.output

    def precedes(self, other: Operation) -> bool:
        """Real-time order: ``self`` returned strictly before ``other`` was called."""
        return self.ret_time < other.call

    def __str__(self) -> str:
        ret = "pending" if self.pending else f"{self.ret}"
        out = "?" if self.pending else repr(self.output)
        return f"[{self.call}, {ret}] client {self.client_id}: {self.input!r} -> {out}"


@dataclass(frozen=True)
class Model(Generic[S]):
    """A sequential specification.

    ``init()`` gives the initial state; ``step(state, input, output)`` returns
    ``(ok, new_state)``, ``ok`` saying whether ``output`` is a legal result of
    ``input`` in ``state`` (``output`` is ``UNKNOWN`` for a pending
    operation: accept it). ``partition(history)``, if given, splits a history
    into independently checkable parts (P-compositionality).
    """

    init: Callable[[], S]
    step: Callable[[S, Any, Any], tuple[bool, S]]
    partition: Callable[[Sequence[Operation]], list[list[Operation]]] | None = None
    name: str = "model"


# -- the key-value model ----------------------------------------------------------

# The state: ``((key, value), ...)`` in first-write order. Equal tuples are equal
# stores (the converse need not hold, which only costs cache hits); within a
# part of the partition it is a single pair, cheap to build and hash.
KVState = tuple[tuple[Hashable, Hashable], ...]


def _kv_init() -> KVState:
    return ()


def _kv_get(state: KVState, key: Hashable) -> Hashable:
    for k, v in state:
        if k == key:
            return v
    return None


def _kv_set(state: KVState, key: Hashable, value: Hashable) -> KVState:
    if not state:
        return ((key, value),)
    if len(state) == 1 and state[0][0] == key:
        return ((key, value),)
    for n, (k, _) in enumerate(state):
        if k == key:
            return (*state[:n], (key, value), *state[n + 1 :])
    return (*state, (key, value))


def _kv_step(state: KVState, input: Any, output: Any) -> tuple[bool, KVState]:
    kind = input[0]
    if kind == "get":
        return (output is UNKNOWN or output == _kv_get(state, input[1])), state
    if kind == "put":
        return True, _kv_set(state, input[1], input[2])
    if kind == "append":
        old = _kv_get(state, input[1])
        return True, _kv_set(state, input[1], input[2] if old is None else old + input[2])
    raise ValueError(f"kv_model: unknown operation {input!r}")


def _kv_partition(history: Sequence[Operation]) -> list[list[Operation]]:
    by_key: dict[Hashable, list[Operation]] = {}
    for op in history:
        by_key.setdefault(op.input[1], []).append(op)
    return list(by_key.values())


kv_model: Model[KVState] = Model(_kv_init, _kv_step, _kv_partition, "kv")
"""A key-value store. Inputs ``("put", key, value)``, ``("get", key)``,
``("append", key, value)``; a get returns the value (``None`` if the key was
never written), put and append return ``None`` (their output is not checked).
Append concatenates (``old + value``; on an absent key it stores ``value``).
Partitioned by key. Keys and values must be hashable."""


# -- results ------------------------------------------------------------------------


@dataclass(frozen=True)
class PartitionResult:
    """The verdict for one part of the history.

    ``longest`` is the longest linearizable prefix the search found: the
    complete linearization when ``verdict == "ok"``. For ``"illegal"``,
    ``stuck`` is the operation that had to come next after that prefix
    (every operation not in it returns no earlier) but could not be
    linearized with any order of its concurrent candidates, and
    ``stuck_state`` is the model state after the prefix.
    """

    verdict: Verdict
    operations: tuple[Operation, ...]
    longest: tuple[Operation, ...]
    stuck: Operation | None = None
    stuck_state: Any = None
    explored: int = 0

    @property
    def linearization(self) -> tuple[Operation, ...] | None:
        return self.longest if self.verdict == "ok" else None

    def explain(self) -> str:
        lines = [f"{self.verdict}: {len(self.operations)} operations, {self.explored} steps"]
        if self.verdict == "illegal":
            lines.append(f"longest linearizable prefix ({len(self.longest)} operations):")
            lines += [f"  {op}" for op in self.longest]
            lines.append(f"model state after it: {self.stuck_state!r}")
            lines.append(f"cannot linearize next: {self.stuck}")
            lines.append("operations of this part, by call time:")
            lines += [f"  {op}" for op in sorted(self.operations, key=lambda o: o.call)]
        return "\n".join(lines)


@dataclass(frozen=True)
class Result:
    """The verdict for a whole history: ``ok`` only if every part is ``ok``."""

    verdict: Verdict
    partitions: tuple[PartitionResult, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"

    @property
    def illegal(self) -> bool:
        return self.verdict == "illegal"

    def __bool__(self) -> bool:
        return self.ok

    @property
    def failing(self) -> PartitionResult | None:
        """The first illegal part, if any."""
        return next((p for p in self.partitions if p.verdict == "illegal"), None)

    @property
    def longest_prefix(self) -> tuple[Operation, ...]:
        """The witness of an illegal history: the failing part's longest linearizable prefix."""
        f = self.failing
        return f.longest if f is not None else ()

    @property
    def linearizations(self) -> tuple[tuple[Operation, ...], ...] | None:
        """One linearization per part, if the history is linearizable."""
        if not self.ok:
            return None
        return tuple(p.longest for p in self.partitions)

    def explain(self) -> str:
        if self.ok:
            return f"linearizable ({len(self.partitions)} parts)"
        f = self.failing
        if f is not None:
            return "not linearizable; failing part:\n" + f.explain()
        return "unknown (timed out)"


# -- the checker ----------------------------------------------------------------


class _Timeout(Exception):
    pass


def _check_part(
    model: Model[Any], ops: Sequence[Operation], deadline: float | None
) -> PartitionResult:
    n = len(ops)
    operations = tuple(ops)
    if n == 0:
        return PartitionResult("ok", operations, ())
    # entries sorted by time, calls (kind 0) before returns (kind 1) at equal times
    entries = sorted(
        [(op.call, 0, i) for i, op in enumerate(ops)]
        + [(op.ret_time, 1, i) for i, op in enumerate(ops)],
        key=lambda e: (e[0], e[1]),
    )
    size = 2 * n
    head = size  # the sentinel node
    nxt = [*range(1, size), -1, 0]  # nxt[head] = 0
    prv = [head, *range(size - 1), -1]
    opid = [e[2] for e in entries]
    ret_node = {e[2]: k for k, e in enumerate(entries) if e[1] == 1}
    match = [ret_node[e[2]] if e[1] == 0 else -1 for e in entries]
    inputs = [op.input for op in ops]
    outputs = [op.observed_output for op in ops]
    step = model.step

    state = model.init()
    linearized = 0
    cache: set[tuple[int, Any]] = set()
    calls: list[tuple[int, Any]] = []  # (call node, state before it)
    best_len = -1
    best: list[int] = []
    best_stuck = -1
    best_state: Any = None
    entry = nxt[head]
    iterations = 0
    while nxt[head] != -1:
        iterations += 1
        if deadline is not None and iterations & 1023 == 1 and time.monotonic() >= deadline:
            raise _Timeout(iterations)
        m = match[entry]
        if m != -1:  # a call entry: try to linearize this operation next
            i = opid[entry]
            ok, new_state = step(state, inputs[i], outputs[i])
            if ok:
                new_linearized = linearized | (1 << i)
                key = (new_linearized, new_state)
                if key not in cache:
                    cache.add(key)
                    calls.append((entry, state))
                    state = new_state
                    linearized = new_linearized
                    # lift the call and its return out of the list
                    p, q = prv[entry], nxt[entry]
                    nxt[p] = q
                    prv[q] = p
                    p, q = prv[m], nxt[m]
                    nxt[p] = q
                    if q != -1:
                        prv[q] = p
                    entry = nxt[head]
                    continue
            entry = nxt[entry]
        else:  # a return entry: no candidate left before it, backtrack
            if len(calls) > best_len:
                best_len = len(calls)
                best = [opid[c] for c, _ in calls]
                best_stuck = opid[entry]
                best_state = state
            if not calls:
                break
            entry, state = calls.pop()
            linearized &= ~(1 << opid[entry])
            # unlift
            m = match[entry]
            p, q = prv[m], nxt[m]
            nxt[p] = m
            if q != -1:
                prv[q] = m
            p, q = prv[entry], nxt[entry]
            nxt[p] = entry
            prv[q] = entry
            entry = nxt[entry]
    if nxt[head] == -1:
        order = tuple(ops[opid[c]] for c, _ in calls)
        return PartitionResult("ok", operations, order, explored=iterations)
    return PartitionResult(
        "illegal",
        operations,
        tuple(ops[i] for i in best),
        ops[best_stuck],
        best_state,
        explored=iterations,
    )


def check(model: Model[Any], history: Iterable[Operation], timeout: float | None = None) -> Result:
    """Is ``history`` linearizable with respect to ``model``?

    ``timeout`` (seconds) bounds the whole search; when it runs out the
    verdict is ``"unknown"`` unless some part was already found illegal.
    """
    ops = list(history)
    parts = model.partition(ops) if model.partition is not None else [ops]
    deadline = None if timeout is None else time.monotonic() + timeout
    # smallest parts first, so that a timeout spent on a big part hides no quick verdict
    results: list[PartitionResult | None] = [None] * len(parts)
    for k in sorted(range(len(parts)), key=lambda k: len(parts[k])):
        try:
            results[k] = _check_part(model, parts[k], deadline)
        except _Timeout as t:
            results[k] = PartitionResult("unknown", tuple(parts[k]), (), explored=t.args[0])
    done = [r for r in results if r is not None]
    verdicts = {r.verdict for r in done}
    verdict: Verdict = (
        "illegal" if "illegal" in verdicts else "unknown" if "unknown" in verdicts else "ok"
    )
    return Result(verdict, tuple(done))


def is_linearization(
    model: Model[Any], history: Sequence[Operation], order: Sequence[Operation]
) -> bool:
    """Is ``order`` a linearization of a prefix-closed subset of ``history``?

    True if ``order`` holds distinct operations of ``history``, respects real
    time (an operation of ``history`` that precedes one in ``order`` is
    earlier in ``order``), and replays in ``model`` (pending operations with
    output ``UNKNOWN``). It must contain every completed operation for a
    complete linearization; check that separately.
    """
    ids = [id(op) for op in order]
    if len(set(ids)) != len(ids) or not set(ids) <= {id(op) for op in history}:
        return False
    placed: set[int] = set()
    for op in order:
        if any(o.precedes(op) and id(o) not in placed for o in history):
            return False
        placed.add(id(op))
    state = model.init()
    for op in order:
        ok, state = model.step(state, op.input, op.observed_output)
        if not ok:
            return False
    return True


def brute_force(model: Model[Any], history: Iterable[Operation]) -> bool:
    """Is ``history`` linearizable? Tries every real-time-consistent order (small histories only).

    Ignores ``model.partition``. A pending operation may take effect anywhere
    after its call, or not at all.
    """
    ops = list(history)
    n = len(ops)
    preds = [frozenset(j for j in range(n) if ops[j].precedes(ops[i])) for i in range(n)]
    required = frozenset(i for i in range(n) if not ops[i].pending)

    def search(done: frozenset[int], skipped: frozenset[int], state: Any) -> bool:
        if required <= done:
            return True
        for i in range(n):
            if i in done or i in skipped or not preds[i] <= done | skipped:
                continue
            ok, new_state = model.step(state, ops[i].input, ops[i].observed_output)
            if ok and search(done | {i}, skipped, new_state):
                return True
            # a pending operation may instead never take effect
            if ops[i].pending and search(done, skipped | {i}, state):
                return True
        return False

    return search(frozenset(), frozenset(), model.init())


# -- recording histories --------------------------------------------------------


class HistoryRecorder:
    """Records a history from concurrent clients (threads or asyncio tasks) on a logical clock.

    ``t = rec.invoke(client, input)`` just before sending the request,
    ``rec.complete(t, output)`` as soon as the reply arrives; leave an
    operation open if the client crashed or timed out without knowing the
    outcome (it is pending: it may or may not have taken effect), or
    ``rec.discard(t)`` if it certainly did not take effect. Every event ticks
    one shared clock, so real-time order is exact.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clock = itertools.count()
        self._open: dict[int, tuple[Hashable, Any, int]] = {}
        self._done: list[tuple[int, Operation]] = []
        self._tokens = itertools.count()

    def invoke(self, client_id: Hashable, input: Any) -> int:
        with self._lock:
            token = next(self._tokens)
            self._open[token] = (client_id, input, next(self._clock))
            return token

    def complete(self, token: int, output: Any) -> None:
        with self._lock:
            client_id, input, call = self._open.pop(token)
            ret = next(self._clock)
            self._done.append((token, Operation(client_id, input, output, call, ret)))

    def discard(self, token: int) -> None:
        with self._lock:
            del self._open[token]

    def history(self) -> list[Operation]:
        """Completed operations, plus every still-open one as pending."""
        with self._lock:
            ops = list(self._done) + [
                (t, Operation(c, i, None, call, math.inf)) for t, (c, i, call) in self._open.items()
            ]
        return [op for _, op in sorted(ops, key=lambda x: x[0])]
