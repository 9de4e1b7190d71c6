"""Sharded key-value store (protocols/sharded_kv.py): placement, rebalancing, faults.

* Any sequence of puts, gets, joins and leaves, under both placement schemes,
  against a dict model: after every step every key is at exactly its owner,
  with its last value, and every get returns the model's value; the central
  run (the IR interpreter) leaves the same stores as the projected one.
* The fraction of keys a join moves, measured through the rebalance
  choreography on 2,000 keys: about N/(N+1) with ``mod``, about 1/(N+1) with
  consistent hashing.
* Seeded fault plans in the simulator (messages to and from nodes lost or
  delayed, nodes crash; the coordinator stays up, stores are durable): a
  rebalance commits or fails at the coordinator within ``ACK_TIMEOUT``, no key
  is ever lost (the owner under the placement in force holds its last value),
  and a later fault-free rebalance leaves every key at exactly its owner.
"""

from __future__ import annotations

import inspect
import json
import random
import subprocess
import sys
from collections import Counter
from typing import Any

import pytest

import choreo
from choreo._central import central_results
from choreo.sim import Crash, Drop, RandomFaults, Script, simulate
from protocols import sharded_kv
from protocols.sharded_kv import (
    ACK_TIMEOUT,
    SCHEMES,
    ShardedKV,
    get,
    owner_of,
    placement,
    put,
    rebalance,
)
from tests.scenarios import ROOT

DEADLINE = 10.0  # the nodes' receive deadline in the simulated runs (> ACK_TIMEOUT)


def _exactly_at_owners(
    stores: dict[str, dict], members: list[str], scheme: str, model: dict
) -> None:
    """Every key of ``model`` is at its owner with its value, and nowhere else."""
    where = {n: dict(s) for n, s in stores.items() if s}
    expected: dict[str, dict] = {}
    for k, v in model.items():
        expected.setdefault(owner_of(k, members, scheme), {})[k] = v
    assert where == expected


def _owners_hold(stores: dict[str, dict], members: list[str], scheme: str, model: dict) -> None:
    """No key lost: the owner of every key under ``members`` holds its last value."""
    for k, v in model.items():
        owner = owner_of(k, members, scheme)
        assert stores.get(owner, {}).get(k, "MISSING") == v, (k, owner, v)


# -- sequences against a dict model ------------------------------------------------


def _sequence(kv: ShardedKV, rng: random.Random, steps: int) -> dict[str, Any]:
    model: dict[str, Any] = {}
    spare = [f"n{i}" for i in range(8) if f"n{i}" not in kv.members]
    keys = [f"k{i}" for i in range(30)] + ["", "ключ", "a b"]
    for _ in range(steps):
        op = rng.choice(["put"] * 4 + ["get"] * 2 + ["join", "leave"])
        if op == "join" and spare:
            node = spare.pop(rng.randrange(len(spare)))
            assert kv.join(node)["members"] == kv.members
        elif op == "leave" and len(kv.members) > 1:
            node = rng.choice(kv.members)
            kv.leave(node)
            spare.append(node)
        elif op == "get":
            key = rng.choice(keys)
            assert kv.get(key) == model.get(key)
        else:
            key, value = rng.choice(keys), rng.choice([rng.randrange(100), None, [1, "x"]])
            assert kv.put(key, value) == "OK"
            model[key] = value
        _exactly_at_owners(kv.stores, kv.members, kv.scheme, model)
    for key in keys:
        assert kv.get(key) == model.get(key)
    return model


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("seed", range(3))
def test_any_sequence_of_puts_joins_and_leaves_keeps_every_key_at_its_owner(
    scheme: str, seed: int
) -> None:
    rng = random.Random(seed)
    kv = ShardedKV([f"n{i}" for i in range(rng.randint(1, 3))], scheme)
    _sequence(kv, rng, 60)


@pytest.mark.slow
@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_hundred_sequences_keep_every_key_at_its_owner(scheme: str) -> None:
    for seed in range(100, 200):
        rng = random.Random(seed)
        _sequence(ShardedKV([f"n{i}" for i in range(rng.randint(1, 4))], scheme), rng, 60)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_central_and_projected_runs_leave_the_same_stores(scheme: str) -> None:
    central = ShardedKV(["n0", "n1"], scheme, run=central_results)
    projected = ShardedKV(["n0", "n1"], scheme)
    assert _sequence(central, random.Random(7), 40) == _sequence(projected, random.Random(7), 40)
    assert central.stores == projected.stores and central.members == projected.members


def test_put_and_get_talk_to_the_owner_only() -> None:
    stores = {f"nodes.{i}": {} for i in range(4)}
    rec = choreo.TraceRecorder()
    choreo.run(put, key="k", value=1, scheme="ring", store=stores, nodes=4, tracer=rec)
    owner = owner_of("k", list(stores), "ring")
    data = [r for r in rec.records if r.event == "send" and r.kind == "DATA"]
    assert {(r.sender, r.receiver) for r in data} == {("client", owner), (owner, "client")}
    assert [n for n, s in stores.items() if s] == [owner]


def test_a_bad_plan_is_refused_before_anything_moves() -> None:
    stores = {"a": {"x": 1}, "b": {}}
    with pytest.raises(
        choreo.RoleFailedError,
        match=r"^role coordinator raised ValueError: c must be in the census of nodes \(a, b\)",
    ):
        choreo.run(
            rebalance, old=["a"], new=["c"], scheme="mod", store=stores, log={}, nodes=["a", "b"]
        )
    with pytest.raises(choreo.RoleFailedError, match="unknown placement scheme"):
        choreo.run(
            rebalance, old=["a"], new=["b"], scheme="md5", store=stores, log={}, nodes=["a", "b"]
        )
    assert stores == {"a": {"x": 1}, "b": {}}


# -- keys moved on a join -------------------------------------------------------------

KEYS = [f"key{i}" for i in range(2000)]


def _moved_on_join(n: int, scheme: str) -> float:
    old = [f"nodes.{i}" for i in range(n)]
    new = [*old, f"nodes.{n}"]
    stores: dict[str, dict] = {m: {} for m in new}
    for k, owner in placement(KEYS, old, scheme).items():
        stores[owner][k] = 0
    out = choreo.run(rebalance, old=old, new=new, scheme=scheme, store=stores, log={}, nodes=new)
    _exactly_at_owners(stores, new, scheme, dict.fromkeys(KEYS, 0))
    return out["coordinator"]["moved"] / len(KEYS)


def test_fraction_of_keys_moved_on_a_join_mod_n_versus_consistent_hashing() -> None:
    lines = [
        "",
        "| N -> N+1 | mod N: moved | N/(N+1) | ring: moved | 1/(N+1) |",
        "|---|---|---|---|---|",
    ]
    measured = {n: (_moved_on_join(n, "mod"), _moved_on_join(n, "ring")) for n in range(1, 9)}
    for n, (mod, ring) in measured.items():
        lines.append(
            f"| {n} -> {n + 1} | {mod:.3f} | {n / (n + 1):.3f} | {ring:.3f} | {1 / (n + 1):.3f} |"
        )
    print("\n".join(lines))
    for n, (mod, ring) in measured.items():
        assert abs(mod - n / (n + 1)) <= 0.03, (n, mod)
        assert abs(ring - 1 / (n + 1)) <= 0.2 / (n + 1), (n, ring)  # vnode imbalance


# -- faults -------------------------------------------------------------------------


NODES = [f"nodes.{i}" for i in range(6)]


def _coordinator_done(trace: list[dict[str, Any]]) -> float:
    """When the coordinator sent its last message (its decision, or its ABORT)."""
    return max(t["t"] for t in trace if t["event"] == "send" and t["from"] == "coordinator")


def _put(seed: int, scheme: str, members: list[str], stores: dict, key: str, value: int) -> None:
    out = simulate(
        put, seed=seed, key=key, value=value, scheme=scheme, store=_sub(stores, members),
        nodes=members,
    )  # fmt: skip
    assert out.results["client"] == "OK", out.errors


def _get(seed: int, scheme: str, members: list[str], stores: dict, key: str) -> Any:
    out = simulate(
        get, seed=seed, key=key, scheme=scheme, store=_sub(stores, members), nodes=members
    )
    return out.results["client"]


def _fault_run(seed: int) -> list[str]:
    """Puts, then a join or a leave under a random fault plan, three times; then a
    fault-free rebalance of every node. The invariants are checked after each step."""
    rng = random.Random(seed)
    scheme = SCHEMES[seed % 2]
    members = NODES[: rng.randint(1, 4)]
    stores: dict[str, dict] = {n: {} for n in NODES}  # durable: they survive crashes
    log = {"members": members}  # the coordinator's decision log, durable too
    model: dict[str, int] = {}
    outcomes = []
    for step in range(3):
        for _ in range(rng.randint(0, 20 if step == 0 else 6)):
            key, value = f"k{rng.randrange(40)}", rng.randrange(1000)
            _put(seed, scheme, members, stores, key, value)
            model[key] = value
        spare = [n for n in NODES if n not in members]
        if len(members) > 1 and (not spare or rng.random() < 0.4):
            leaving = rng.choice(members)
            new = [m for m in members if m != leaving]
        else:
            new = [*members, rng.choice(spare)]
        census = list(dict.fromkeys([*members, *new]))
        faults = RandomFaults(
            drop=rng.choice([0.0, 0.0, 0.01, 0.03, 0.08]),
            delay=rng.choice([(0.0, 0.0), (0.0, 0.2), (0.0, 1.0), (0.0, 3.0)]),
            crash=rng.choice([0.0, 0.0, 0.02, 0.1]),
            restart=None,
            roles=census,  # the coordinator stays up
        )
        out = simulate(
            rebalance, seed=seed, faults=faults, timeout=DEADLINE, old=members, new=new,
            scheme=scheme, store=_sub(stores, census), log=log, nodes=census,
        )  # fmt: skip
        assert _coordinator_done(out.trace) <= ACK_TIMEOUT + 0.1, seed  # within its deadline
        if "coordinator" in out.results:
            assert out.results["coordinator"]["members"] == new == log["members"], seed
            outcome = "committed"
        else:
            err = str(out.errors["coordinator"])
            assert "RebalanceError" in err and log["members"] == members, (seed, err)
            outcome = "aborted"
            if not any(t["event"] in ("drop", "lost", "crash") for t in out.trace):
                outcome += " (delays only)"
        members = list(log["members"])
        _owners_hold(stores, members, scheme, model)  # no key lost
        if _stale(stores, members, scheme):
            outcome += ", stale copies left"
        outcomes.append(outcome)
        for key in rng.sample(sorted(model), min(3, len(model))):
            assert _get(seed, scheme, members, stores, key) == model[key], (seed, key)
    # a fault-free rebalance over every node drops every stale copy
    again = simulate(
        rebalance, seed=seed, timeout=DEADLINE, old=members, new=members, scheme=scheme,
        store=stores, log=log, nodes=NODES,
    )  # fmt: skip
    assert again.ok, (seed, again.errors)
    _exactly_at_owners(stores, members, scheme, model)
    return outcomes


def _stale(stores: dict[str, dict], members: list[str], scheme: str) -> bool:
    """Whether some node holds a key it does not own under ``members``."""
    return any(owner_of(k, members, scheme) != n for n, s in stores.items() for k in s)


def _sub(stores: dict[str, dict], names: list[str]) -> dict[str, dict]:
    return {n: stores[n] for n in names}


def _check_seeds(seeds: range) -> Counter[str]:
    tally = Counter(o for seed in seeds for o in _fault_run(seed))
    print(f"\nsharded_kv: {len(seeds)} fault plans, {tally.total()} rebalances, 0 keys lost:")
    for outcome, n in sorted(tally.items()):
        print(f"  {n:4}  {outcome}")
    return Counter(o.split(" ")[0].rstrip(",") for o in tally.elements())


def test_random_fault_plans_lose_no_key() -> None:
    tally = _check_seeds(range(60))
    assert tally["committed"] >= 60 and tally["aborted"] >= 30


@pytest.mark.slow
def test_a_thousand_random_fault_plans_lose_no_key() -> None:
    tally = _check_seeds(range(1000, 2000))
    assert tally["committed"] >= 1000 and tally["aborted"] >= 500


def test_a_crashed_new_node_aborts_the_join_within_the_deadline_and_no_key_moves() -> None:
    rng = random.Random(3)
    old = ["nodes.0", "nodes.1"]
    new = [*old, "nodes.2"]
    model = {f"k{i}": rng.randrange(100) for i in range(50)}
    stores: dict[str, dict] = {m: {} for m in new}
    for k, v in model.items():
        stores[owner_of(k, old, "ring")][k] = v
    before = {n: dict(s) for n, s in stores.items()}
    log = {"members": old}
    out = simulate(
        rebalance, seed=1, faults=Script([Crash("nodes.2")]), timeout=DEADLINE,
        old=old, new=new, scheme="ring", store=stores, log=log, nodes=new,
    )  # fmt: skip
    err = str(out.errors["coordinator"])
    assert "RebalanceError" in err and "no acknowledgement from nodes.2 within 5s" in err
    assert "nodes.0 got no keys from nodes.2 within 3s" in err
    assert "nodes.1 got no keys from nodes.2 within 3s" in err
    assert set(out.errors) == {"coordinator", "nodes.2"}  # the others ended cleanly
    assert ACK_TIMEOUT <= _coordinator_done(out.trace) < ACK_TIMEOUT + 0.1
    assert stores == before and log == {"members": old}  # nothing moved, nothing committed


def test_a_lost_decision_leaves_a_stale_copy_that_is_never_read_and_is_dropped_later() -> None:
    old, new = ["nodes.0"], ["nodes.0", "nodes.1"]
    model = {f"k{i}": i for i in range(40)}
    stores: dict[str, dict] = {"nodes.0": dict(model), "nodes.1": {}}
    log: dict[str, Any] = {}
    out = simulate(
        rebalance, seed=2, faults=Script([Drop("coordinator", "nodes.0", _decision_line())]),
        timeout=DEADLINE, old=old, new=new, scheme="mod", store=stores, log=log, nodes=new,
    )  # fmt: skip
    assert out.results["coordinator"]["members"] == new == log["members"]  # committed
    assert type(out.errors["nodes.0"]).__name__ == "DeadlineError"  # waited for the decision
    moved = {k for k in model if owner_of(k, new, "mod") == "nodes.1"}
    assert set(stores["nodes.1"]) == moved and set(stores["nodes.0"]) == set(model)  # stale
    _owners_hold(stores, new, "mod", model)
    for k in moved:  # routed to the new owner, never to the stale copy
        assert choreo.run(get, key=k, scheme="mod", store=stores, nodes=new)["client"] == model[k]
    choreo.run(rebalance, old=new, new=new, scheme="mod", store=stores, log={}, nodes=new)
    _exactly_at_owners(stores, new, "mod", model)


def _decision_line() -> int:
    src, first = inspect.getsourcelines(sharded_kv.rebalance)
    return first + next(i for i, s in enumerate(src) if "decision = coordinator.send" in s)


# -- every role and member its own process, over gRPC --------------------------------


def test_a_join_over_grpc_with_every_node_a_process() -> None:
    old, new = ["nodes.0", "nodes.1"], ["nodes.0", "nodes.1", "nodes.2"]
    store = {f"k{i}": i for i in range(20)}  # one value: every node starts with a copy
    out = subprocess.run(
        [
            sys.executable, "-m", "choreo._cli", "up", "protocols/sharded_kv.py:rebalance",
            "--census", "nodes=3", "--input", f"old={old!r}", "--input", f"new={new!r}",
            "--input", "scheme=ring", "--input", f"store={store!r}", "--input", "log={}",
            "--json", "--quiet",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    central = central_results(
        rebalance, old=old, new=new, scheme="ring", store=store, log={}, nodes=3
    )
    assert got == central
    before, after = placement(store, old, "ring"), placement(store, new, "ring")
    moved = sum(before[k] != after[k] for k in store)
    assert got["coordinator"] == {"members": new, "moved": moved} and moved > 0
