"""Tests of the property checkers in tests/checkers (linearizability, consensus, 2PC).

The linearizability checker is tested on hand-written histories with known
verdicts, against the brute-force oracle on small random histories, and on
histories linearizable by construction (operations executed one at a time at
random points inside their intervals). ``-m slow`` runs the properties longer.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Hashable
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

try:
    from tests.checkers import (
        UNKNOWN,
        Decision,
        HistoryRecorder,
        Model,
        Operation,
        agreement,
        atomic_commit,
        brute_force,
        check,
        is_linearization,
        kv_model,
        log_prefixes,
        promises_monotonic,
        validity,
    )
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from checkers import (  # type: ignore[no-redef,import-not-found]
        UNKNOWN,
        Decision,
        HistoryRecorder,
        Model,
        Operation,
        agreement,
        atomic_commit,
        brute_force,
        check,
        is_linearization,
        kv_model,
        log_prefixes,
        promises_monotonic,
        validity,
    )

_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large]
CI = settings(max_examples=250, deadline=None, suppress_health_check=_HEALTH)
SLOW = settings(max_examples=5_000, deadline=None, suppress_health_check=_HEALTH)

INF = math.inf
# the same model without partitioning: the whole store is one state
kv_whole: Model[Any] = Model(kv_model.init, kv_model.step, None, "kv-unpartitioned")


def put(c: Hashable, k: str, v: Any, call: float, ret: float | None) -> Operation:
    return Operation(c, ("put", k, v), None, call, ret)


def get(c: Hashable, k: str, out: Any, call: float, ret: float | None) -> Operation:
    return Operation(c, ("get", k), out, call, ret)


def append(c: Hashable, k: str, v: Any, call: float, ret: float | None) -> Operation:
    return Operation(c, ("append", k, v), None, call, ret)


def verdict(history: list[Operation]) -> str:
    """check's verdict, cross-checked against the unpartitioned model and the brute force."""
    result = check(kv_model, history)
    assert check(kv_whole, history).verdict == result.verdict
    if len(history) <= 8:
        assert brute_force(kv_model, history) == result.ok, result.explain()
    _validate_witness(history, result)
    return result.verdict


def _validate_witness(history: list[Operation], result: Any) -> None:
    for part in result.partitions:
        ops = list(part.operations)
        assert is_linearization(kv_model, ops, part.longest), part.explain()
        if part.verdict == "ok":
            assert {id(o) for o in ops if not o.pending} <= {id(o) for o in part.longest}
        elif part.verdict == "illegal":
            assert part.stuck is not None and part.stuck not in part.longest
            assert not part.stuck.pending
            # nothing left out of the prefix returns before the stuck operation
            left = [o for o in ops if all(o is not p for p in part.longest)]
            assert min(o.ret_time for o in left) == part.stuck.ret_time


# -- hand-written histories --------------------------------------------------------


def test_empty_history_is_linearizable() -> None:
    assert check(kv_model, []).ok
    assert brute_force(kv_model, [])


def test_sequential_history() -> None:
    h = [
        get(0, "x", None, 0, 1),
        put(0, "x", 1, 2, 3),
        get(1, "x", 1, 4, 5),
        append(1, "x", 2, 6, 7),
        get(0, "x", 3, 8, 9),
    ]
    assert verdict(h) == "ok"


def test_concurrent_put_and_get_is_linearizable_either_way() -> None:
    w = put(0, "x", 1, 0, 10)
    assert verdict([w, get(1, "x", 1, 2, 5)]) == "ok"  # the get after the put
    assert verdict([w, get(1, "x", None, 2, 5)]) == "ok"  # the get before it


def test_stale_read_after_a_completed_write_is_not_linearizable() -> None:
    h = [put(0, "x", 1, 0, 1), put(1, "x", 2, 2, 3), get(2, "x", 1, 4, 5)]
    result = check(kv_model, h)
    assert result.illegal and verdict(h) == "illegal"
    failing = result.failing
    assert failing is not None
    assert failing.stuck is h[2]
    assert result.longest_prefix == (h[0], h[1])
    assert failing.stuck_state == (("x", 2),)
    assert "cannot linearize next" in result.explain()


def test_read_of_initial_value_after_a_write_is_not_linearizable() -> None:
    assert verdict([put(0, "x", 1, 0, 1), get(1, "x", None, 2, 3)]) == "illegal"


def test_read_of_a_value_never_written() -> None:
    assert verdict([get(0, "x", 7, 0, 1)]) == "illegal"
    assert verdict([put(0, "x", 1, 0, 5), get(1, "x", 7, 1, 2)]) == "illegal"


def test_overlapping_writes_allow_either_order() -> None:
    a, b = put(0, "x", 1, 0, 5), put(1, "x", 2, 1, 6)
    assert verdict([a, b, get(2, "x", 1, 7, 8)]) == "ok"
    assert verdict([a, b, get(2, "x", 2, 7, 8)]) == "ok"
    # but once a reader has seen the order, later reads must agree with it
    assert verdict([a, b, get(2, "x", 1, 7, 8), get(2, "x", 2, 9, 10)]) == "illegal"
    assert verdict([a, b, get(2, "x", 2, 7, 8), get(3, "x", 1, 7, 8)]) == "illegal"


def test_concurrent_readers_may_see_a_write_at_different_points() -> None:
    w = put(0, "x", 1, 0, 10)
    # r1 before the write, r2 after; r1 and r2 overlap each other
    assert verdict([w, get(1, "x", None, 1, 4), get(2, "x", 1, 2, 5)]) == "ok"
    # r1 saw the write and returned before r2 started: r2 cannot miss it
    assert verdict([w, get(1, "x", 1, 1, 2), get(2, "x", None, 3, 4)]) == "illegal"


def test_touching_intervals_are_concurrent() -> None:
    # the put returns at the instant the get is called: either order is allowed
    assert verdict([put(0, "x", 1, 0, 5), get(1, "x", None, 5, 6)]) == "ok"
    assert verdict([put(0, "x", 1, 0, 5), get(1, "x", None, 5.001, 6)]) == "illegal"


def test_concurrent_appends() -> None:
    a, b = append(0, "x", "a", 0, 5), append(1, "x", "b", 1, 6)
    assert verdict([a, b, get(2, "x", "ab", 7, 8)]) == "ok"
    assert verdict([a, b, get(2, "x", "ba", 7, 8)]) == "ok"
    assert verdict([a, b, get(2, "x", "a", 7, 8)]) == "illegal"
    assert verdict([a, b, get(2, "x", "a", 3, 4), get(2, "x", "ba", 7, 8)]) == "illegal"


def test_pending_write_may_or_may_not_take_effect() -> None:
    w = put(0, "x", 1, 0, None)
    assert w.pending and put(0, "x", 1, 0, INF).pending
    assert verdict([w, get(1, "x", None, 1, 2)]) == "ok"  # not (yet) taken effect
    assert verdict([w, get(1, "x", 1, 1, 2)]) == "ok"  # taken effect
    assert verdict([w, get(1, "x", None, 1, 2), get(1, "x", 1, 3, 4)]) == "ok"  # took effect late
    assert verdict([w, get(1, "x", None, 100, 101)]) == "ok"  # never took effect


def test_pending_write_cannot_be_undone_or_act_before_its_call() -> None:
    w = put(0, "x", 1, 10, INF)
    assert verdict([w, get(1, "x", 1, 11, 12), get(1, "x", None, 13, 14)]) == "illegal"
    assert verdict([w, get(1, "x", 1, 0, 5)]) == "illegal"  # read before the write was issued


def test_pending_write_is_overwritten_or_lands_after() -> None:
    w = put(0, "x", 1, 0, INF)
    h = [w, put(1, "x", 2, 1, 2), get(1, "x", 2, 3, 4), get(2, "x", 1, 5, 6)]
    assert verdict(h) == "ok"  # the pending put took effect between the two gets
    h2 = [*h, get(2, "x", 2, 7, 8)]
    assert verdict(h2) == "illegal"


def test_pending_output_is_ignored() -> None:
    # a pending get's output is unknown: whatever was recorded, it constrains nothing
    assert verdict([get(0, "x", "garbage", 0, INF)]) == "ok"
    ok, _ = kv_model.step((), ("get", "x"), UNKNOWN)
    assert ok


def test_keys_are_independent_and_the_failing_key_is_reported() -> None:
    h = [
        put(0, "x", 1, 0, 1),
        put(0, "y", 1, 2, 3),
        get(1, "y", 1, 4, 5),
        get(1, "x", None, 6, 7),  # stale on x
    ]
    result = check(kv_model, h)
    assert result.illegal and verdict(h) == "illegal"
    assert len(result.partitions) == 2
    failing = result.failing
    assert failing is not None and {o.input[1] for o in failing.operations} == {"x"}
    assert failing.stuck is h[3]


def test_ok_result_carries_a_linearization() -> None:
    h = [put(0, "x", 1, 0, 10), get(1, "x", None, 1, 2), get(2, "x", 1, 3, 4)]
    result = check(kv_model, h)
    assert result.ok and bool(result)
    lins = result.linearizations
    assert lins is not None and lins[0] == (h[1], h[0], h[2])


def test_operation_validation() -> None:
    with pytest.raises(ValueError):
        Operation(0, ("get", "x"), None, 5, 4)
    with pytest.raises(ValueError):
        Operation(0, ("get", "x"), None, INF, INF)
    with pytest.raises(ValueError):
        kv_model.step((), ("cas", "x", 1, 2), True)


def test_custom_model_without_partition() -> None:
    # a counter: ("inc",) -> new value
    counter: Model[int] = Model(lambda: 0, lambda s, i, o: (o is UNKNOWN or o == s + 1, s + 1))
    inc = ("inc",)
    ok = [Operation(0, inc, 2, 0, 10), Operation(1, inc, 1, 1, 2)]
    assert check(counter, ok).ok and brute_force(counter, ok)
    bad = [Operation(0, inc, 1, 0, 1), Operation(1, inc, 1, 2, 3)]
    assert check(counter, bad).illegal and not brute_force(counter, bad)


# -- generated histories -----------------------------------------------------------

KEYS = ("x", "y")
VALUES = ("a", "b", "c")
READS = (None, "a", "b", "c", "ab", "ba", "aa", "ca")


@st.composite
def _op_specs(draw: st.DrawFn, max_ops: int) -> list[dict[str, Any]]:
    n = draw(st.integers(0, max_ops))
    nkeys = draw(st.integers(1, 2))
    specs = []
    for i in range(n):
        kind = draw(st.sampled_from(("put", "get", "get", "append")))
        call = draw(st.integers(0, 20))
        specs.append(
            {
                "client": i,
                "kind": kind,
                "key": draw(st.sampled_from(KEYS[:nkeys])),
                "value": draw(st.sampled_from(VALUES)),
                "call": call,
                "ret": call + draw(st.integers(0, 10)),
                "pending": draw(st.integers(0, 5)) == 0,
                "effect": draw(st.booleans()),
                "frac": draw(st.integers(0, 100)) / 100,
            }
        )
    return specs


def _execute(specs: list[dict[str, Any]]) -> list[Operation]:
    """A history that is linearizable by construction: each operation takes effect at a
    point inside its interval (a pending one somewhere after its call, or never)."""
    points = []
    for i, s in enumerate(specs):
        if not s["pending"]:
            points.append((s["call"] + s["frac"] * (s["ret"] - s["call"]), i))
        elif s["effect"]:
            points.append((s["call"] + s["frac"] * 40, i))
    store: dict[str, Any] = {}
    outputs: dict[int, Any] = {}
    for _, i in sorted(points):
        s = specs[i]
        if s["kind"] == "get":
            outputs[i] = store.get(s["key"])
        elif s["kind"] == "put":
            store[s["key"]] = s["value"]
        else:
            old = store.get(s["key"])
            store[s["key"]] = s["value"] if old is None else old + s["value"]
    return [_op(s, outputs.get(i)) for i, s in enumerate(specs)]


def _op(s: dict[str, Any], output: Any) -> Operation:
    inp = ("get", s["key"]) if s["kind"] == "get" else (s["kind"], s["key"], s["value"])
    return Operation(
        s["client"], inp, output if s["kind"] == "get" else None, s["call"],
        INF if s["pending"] else s["ret"],
    )  # fmt: skip


@st.composite
def linearizable_histories(draw: st.DrawFn, max_ops: int = 7) -> list[Operation]:
    return _execute(draw(_op_specs(max_ops)))


@st.composite
def random_histories(draw: st.DrawFn, max_ops: int = 7) -> list[Operation]:
    """Random reads, or a linearizable history with some reads' outputs changed."""
    specs = draw(_op_specs(max_ops))
    if draw(st.booleans()):
        return [_op(s, draw(st.sampled_from(READS))) for s in specs]
    history = _execute(specs)
    for k, op in enumerate(history):
        if op.input[0] == "get" and draw(st.integers(0, 3)) == 0:
            history[k] = Operation(
                op.client_id, op.input, draw(st.sampled_from(READS)), op.call, op.ret
            )
    return history


def _note(history: list[Operation]) -> None:
    for op in sorted(history, key=lambda o: o.call):
        note(str(op))


def check_agrees_with_brute_force(history: list[Operation]) -> None:
    _note(history)
    result = check(kv_model, history)
    event(result.verdict)
    assert result.verdict in ("ok", "illegal")
    assert brute_force(kv_model, history) == result.ok, result.explain()
    assert check(kv_whole, history).verdict == result.verdict
    _validate_witness(history, result)


def check_linearizable_by_construction(history: list[Operation]) -> None:
    _note(history)
    result = check(kv_model, history)
    assert result.ok, result.explain()
    _validate_witness(history, result)


@CI
@given(random_histories())
def test_check_agrees_with_brute_force(history: list[Operation]) -> None:
    check_agrees_with_brute_force(history)


@CI
@given(linearizable_histories(max_ops=12))
def test_histories_linearizable_by_construction_are_accepted(history: list[Operation]) -> None:
    check_linearizable_by_construction(history)


def test_check_agrees_with_brute_force_seeded() -> None:
    """Seeded random histories (no shrinking), and the mix of verdicts is not degenerate."""
    rng = random.Random(20240601)
    verdicts = {"ok": 0, "illegal": 0}
    for _ in range(300):
        specs = _random_specs(rng, rng.randint(1, 7), nkeys=rng.randint(1, 2), horizon=20)
        history = _execute(specs)
        for k, op in enumerate(history):
            if op.input[0] == "get" and rng.random() < 0.3:
                history[k] = Operation(op.client_id, op.input, rng.choice(READS), op.call, op.ret)
        result = check(kv_model, history)
        assert brute_force(kv_model, history) == result.ok, result.explain()
        verdicts[result.verdict] += 1
    assert min(verdicts.values()) > 50, verdicts


def _random_specs(rng: random.Random, n: int, nkeys: int, horizon: int) -> list[dict[str, Any]]:
    specs = []
    for i in range(n):
        call = rng.randint(0, horizon)
        specs.append(
            {
                "client": i,
                "kind": rng.choice(("put", "get", "get", "append")),
                "key": rng.choice(KEYS[:nkeys]),
                "value": rng.choice(VALUES),
                "call": call,
                "ret": call + rng.randint(0, 10),
                "pending": rng.random() < 0.15,
                "effect": rng.random() < 0.5,
                "frac": rng.random(),
            }
        )
    return specs


# -- scale ---------------------------------------------------------------------------


def _client_history(
    rng: random.Random, clients: int, ops: int, keys: tuple[str, ...], appends: bool = False
) -> list[Operation]:
    """``clients`` clients each issuing operations back to back (so they overlap with the
    other clients'), linearizable by construction; now and then a client crashes
    mid-operation (which stays pending) and a fresh client takes its place."""
    specs: list[dict[str, Any]] = []
    clock = [rng.uniform(0, 3) for _ in range(clients)]
    ids = list(range(clients))
    while len(specs) < ops:
        c = rng.randrange(clients)
        call = clock[c] + rng.uniform(0, 2)
        ret = call + rng.uniform(0.5, 6)
        clock[c] = ret
        client = ids[c]
        pending = rng.random() < 0.01
        if pending:
            ids[c] = len(specs) + clients  # a fresh client id
        kind = rng.choice(("put", "get", "get", "append" if appends else "put"))
        specs.append(
            {
                "client": client,
                "kind": kind,
                "key": rng.choice(keys),
                "value": f"v{len(specs)}" if kind == "put" else rng.choice(VALUES),
                "call": call,
                "ret": ret,
                "pending": pending,
                "effect": rng.random() < 0.5,
                "frac": rng.random(),
            }
        )
    return _execute(specs)


#: Not a speed check: with memoisation these searches take milliseconds; without it, the
#: search over 200 concurrent operations is exponential (hours). A loaded machine is
#: far from either.
SEARCH_GUARD_S = 15.0


@pytest.mark.parametrize("appends", [False, True])
def test_two_hundred_ops_check_quickly(appends: bool) -> None:
    rng = random.Random(7 + appends)
    history = _client_history(rng, clients=6, ops=200, keys=("k1", "k2", "k3"), appends=appends)
    start = time.perf_counter()
    result = check(kv_model, history)
    elapsed = time.perf_counter() - start
    assert result.ok, result.explain()
    assert elapsed < SEARCH_GUARD_S, elapsed
    _validate_witness(history, result)

    # a stale read late in the history is found, quickly
    gets = [k for k, op in enumerate(history) if op.input[0] == "get" and not op.pending]
    k = gets[-1]
    op = history[k]
    bad = [*history]
    bad[k] = Operation(op.client_id, op.input, "never-written", op.call, op.ret)
    start = time.perf_counter()
    result = check(kv_model, bad)
    elapsed = time.perf_counter() - start
    assert result.illegal and result.failing is not None and result.failing.stuck is bad[k]
    assert elapsed < SEARCH_GUARD_S, elapsed


def test_timeout_gives_unknown() -> None:
    # 16 concurrent appends of distinct strings, then an impossible read: the search must
    # explore every order of the appends, far more than the time allows
    h = [append(i, "x", chr(ord("a") + i), 0, 10) for i in range(16)]
    h.append(get(99, "x", "impossible", 11, 12))
    start = time.perf_counter()
    result = check(kv_model, h, timeout=0.1)
    assert time.perf_counter() - start < 5.0  # timeout=0.1 is honoured, give or take noise
    assert result.verdict == "unknown" and not result.ok and not result.illegal
    assert "timed out" in result.explain()
    # an illegal part found in time wins over a part that timed out
    h2 = [*h, put(0, "y", 1, 0, 1), get(1, "y", 2, 2, 3)]
    assert check(kv_model, h2, timeout=0.1).verdict == "illegal"


def test_history_recorder_with_threads() -> None:
    def run(stale: bool) -> list[Operation]:
        rec = HistoryRecorder()
        lock = threading.Lock()
        store: dict[str, int] = {}
        cache: dict[str, int] = {}  # a buggy replica: reads may come from a stale copy

        def client(c: int) -> None:
            rng = random.Random(c)
            for n in range(40):
                key = rng.choice(("a", "b"))
                if rng.random() < 0.5:
                    t = rec.invoke(c, ("put", key, c * 1000 + n))
                    with lock:
                        store[key] = c * 1000 + n
                        if rng.random() < 0.5:
                            cache[key] = store[key]
                    rec.complete(t, None)
                else:
                    t = rec.invoke(c, ("get", key))
                    with lock:
                        out = cache.get(key) if stale else store.get(key)
                    rec.complete(t, out)
            t = rec.invoke(c, ("put", "a", -c))  # crashes without a reply: pending
            if c % 2:
                rec.discard(t)  # ... or is known not to have happened

        threads = [threading.Thread(target=client, args=(c,)) for c in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        return rec.history()

    good = run(stale=False)
    assert len(good) == 4 * 40 + 2 and sum(op.pending for op in good) == 2
    assert check(kv_model, good).ok
    assert check(kv_model, run(stale=True)).illegal


# -- long runs (pytest -m slow) ------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(0)
@SLOW
@given(random_histories(max_ops=8))
def test_check_agrees_with_brute_force_slow(history: list[Operation]) -> None:
    check_agrees_with_brute_force(history)


@pytest.mark.slow
@pytest.mark.timeout(0)
@SLOW
@given(linearizable_histories(max_ops=25))
def test_histories_linearizable_by_construction_are_accepted_slow(
    history: list[Operation],
) -> None:
    check_linearizable_by_construction(history)


@pytest.mark.slow
@pytest.mark.timeout(0)
def test_large_histories_slow() -> None:
    for seed in range(20):
        rng = random.Random(seed)
        h = _client_history(rng, clients=10, ops=1000, keys=("k1", "k2", "k3", "k4"), appends=True)
        start = time.perf_counter()
        result = check(kv_model, h)
        assert result.ok, result.explain()
        assert time.perf_counter() - start < 10


# -- consensus checks -----------------------------------------------------------


def test_agreement() -> None:
    assert agreement([]) == []
    ok = [("a", 1, "x"), ("b", 1, "x"), ("a", 2, "y"), ("c", 2, "y"), ("a", 1, "x")]
    assert agreement(ok) == []
    bad = [*ok, ("c", 1, "z")]
    (v,) = agreement(bad)
    assert "instance 1" in v and "'c' decided 'z'" in v
    # unhashable values are compared by ==
    assert agreement([("a", 0, ["x"]), ("b", 0, ["x"])]) == []
    assert len(agreement([("a", 0, ["x"]), ("b", 0, ["y"]), ("a", 1, 1), ("b", 1, 2)])) == 2


def test_validity() -> None:
    decisions = [("a", 1, "x"), ("b", 2, "y")]
    assert validity(decisions, {"x", "y", "z"}) == []
    assert validity(decisions, {1: ["x"], 2: ["y", "w"]}) == []
    (v,) = validity(decisions, {1: ["x"], 2: ["x"]})
    assert "'b' decided 'y'" in v and "instance 2" in v
    (v,) = validity(decisions, ["x"])
    assert "'y'" in v
    assert len(validity(decisions, {1: ["x"]})) == 1  # nothing proposed for instance 2


def test_promises_monotonic() -> None:
    ok = {
        "a1": [
            ("promise", 1),
            ("accept", 1, "x"),
            ("promise", 3),
            ("promise", 3),
            ("accept", 5, "y"),
        ],
        "a2": [("accept", 2, "x"), ("promise", 2)],
        "a3": [],
    }
    assert promises_monotonic(ok) == []
    (v,) = promises_monotonic({"a1": [("promise", 3), ("promise", 2)]})
    assert "'a1'" in v and "promised ballot 2 after promising 3" in v
    (v,) = promises_monotonic({"a1": [("promise", 3), ("accept", 2, "x")]})
    assert "accepted 'x' at ballot 2 below its promise 3" in v
    # accepting raises the promise
    (v,) = promises_monotonic({"a1": [("accept", 4, "x"), ("promise", 3)]})
    assert "promised ballot 3 after promising 4" in v
    # tuple ballots
    assert promises_monotonic({"a": [("promise", (1, "p2")), ("accept", (2, "p1"), "v")]}) == []
    assert len(promises_monotonic({"a": [("promise", (2, "p1")), ("accept", (1, "p2"), "v")]})) == 1
    with pytest.raises(ValueError):
        promises_monotonic({"a": [("prepare", 1)]})
    with pytest.raises(ValueError):
        promises_monotonic({"a": [("accept", 1)]})


def test_log_prefixes() -> None:
    logs: dict[str, Any] = {
        "r1": ["a", "b", "c"],
        "r2": ["a", "b"],
        "r3": ["a", None, "c", "d"],  # slot 1 not yet decided here
        "r4": {0: "a", 1: "b", 3: "d"},
        "r5": [],
    }
    assert log_prefixes(logs) == []
    (v,) = log_prefixes({"r1": ["a", "b", "c"], "r2": ["a", "x"]})
    assert "'r1' and 'r2' differ at slot 1 (in their contiguous decided prefixes)" in v
    (v,) = log_prefixes({"r1": ["a", None, "c"], "r2": ["a", "b", "x"]})
    assert "slot 2 (beyond the contiguous decided prefix)" in v
    # one violation per pair, at the first differing slot
    bad = log_prefixes({"r1": ["a", "b", "c"], "r2": ["x", "y", "z"], "r3": ["a", "b", "c"]})
    assert len(bad) == 2 and all("slot 0" in v for v in bad)
    # slots counted from 1, and a custom hole marker (None is a value here)
    hole = object()
    assert log_prefixes({"r1": {1: None, 2: "b"}, "r2": {1: None}}, first_slot=1) == []
    assert log_prefixes({"r1": [None, hole, "c"], "r2": [None, "b"]}, hole=hole) == []
    assert len(log_prefixes({"r1": [None, "b"], "r2": ["a", "b"]}, hole=hole)) == 1


def test_atomic_commit_ok() -> None:
    yes = {"p1": "yes", "p2": True}
    commit: dict[str, list[Any]] = {
        "coordinator": [Decision("commit", "self")],
        "p1": [Decision("commit", "coordinator"), ("commit", "coordinator")],  # re-delivered
        "p2": [{"outcome": True, "source": "coordinator"}],
    }
    assert atomic_commit(yes, commit) == []
    # a participant that voted no (or never voted) may abort on its own
    votes = {"p1": "no", "p2": "yes", "p3": None}
    abort = {
        "coordinator": [Decision("abort", "self")],
        "p1": [Decision("abort", "self")],
        "p2": [Decision("abort", "coordinator")],
        "p3": [Decision("abort", "p3")],
    }
    assert atomic_commit(votes, abort) == []
    # a blocked participant decides nothing: fine
    assert atomic_commit(yes, {"coordinator": [], "p1": [], "p2": []}) == []
    # cooperative termination, when allowed
    relay = {"coordinator": [Decision("commit", "self")], "p1": [Decision("commit", "coordinator")],
             "p2": [Decision("commit", "p1")]}  # fmt: skip
    assert atomic_commit(yes, relay, peers_may_relay=True) == []
    assert len(atomic_commit(yes, relay)) == 1


def test_atomic_commit_violations() -> None:
    yes = {"p1": "yes", "p2": "yes"}

    def one(votes: dict[str, Any], decisions: dict[str, Any], fragment: str, **kw: Any) -> None:
        violations = atomic_commit(votes, decisions, **kw)
        assert any(fragment in v for v in violations), violations

    # a decision reversed
    one(yes, {"coordinator": [("commit", "self")],
              "p1": [("commit", "coordinator"), ("abort", "coordinator")]},
        "'p1' reversed its decision: commit -> abort")  # fmt: skip
    # deciders disagree
    one(yes, {"coordinator": [("commit", "self")], "p2": [("abort", "coordinator")]},
        "deciders disagree")  # fmt: skip
    # commit although someone voted no / never voted
    one({"p1": "yes", "p2": "no"}, {"coordinator": [("commit", "self")]},
        "did not vote yes")  # fmt: skip
    one({"p1": "yes", "p2": None}, {"coordinator": [("commit", "self")]}, "'p2' did not vote yes")
    # a prepared participant aborts alone (blocked participants must wait)
    one(yes, {"p1": [("abort", "self")]}, "aborted on its own after voting yes")
    # a participant commits alone
    one(yes, {"p1": [("commit", "p1")]}, "committed on its own")
    # learned from someone who is not the coordinator
    one(yes, {"p1": [("abort", "p2")]}, "not the coordinator 'coordinator'")
    # learned from the coordinator an outcome it never decided
    one(yes, {"coordinator": [], "p1": [("abort", "coordinator")]}, "which never decided abort")
    # relayed from a peer who never decided
    one(yes, {"p1": [("abort", "p2")], "p2": []}, "'p2', which never decided", peers_may_relay=True)
    # custom coordinator name
    one(yes, {"tm": [("commit", "self")], "p1": [("commit", "tm")], "p2": [("commit", "coordinator")]},
        "not the coordinator 'tm'", coordinator="tm")  # fmt: skip
    with pytest.raises(ValueError):
        atomic_commit(yes, {"p1": [("maybe", "coordinator")]})
    with pytest.raises(ValueError):
        atomic_commit({"p1": "perhaps"}, {})
