"""Every shipped protocol and example, with inputs to run it on.

Used by the golden-projection tests and the central == projected tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

#: files whose choreographies are golden-tested
SOURCES = sorted(
    p
    for p in [*ROOT.glob("protocols/*.py"), *ROOT.glob("examples/*.py")]
    if p.name != "__init__.py"
)

CATALOGUE = {"TAPL": 80, "PFPL": 60, "SICP": 45}

_PB_STORE = {
    "data": {"x": (4, "four")},
    "seq": 4,
    "view": ["backups.0", "backups.1"],
    "joining": ["backups.2"],
    "view_id": 2,
}
_CR_NODE = {"epoch": 1, "chain": ["chain.0"], "data": {"x": ((1, 3), "c")}, "next": 3}


def _cr_node(name: str) -> dict[str, Any]:
    """A chain node in epoch 0 after writes (0, 1) reached the tail and (0, 2) reached chain.1."""
    if name == "chain.3":
        return {}
    store: dict[str, Any] = {
        "epoch": 0,
        "chain": ["chain.0", "chain.1", "chain.2"],
        "data": {"x": ((0, 2), "b") if name != "chain.2" else ((0, 1), "a")},
        "next": 2 if name == "chain.0" else 0,
        "sent": {},
        "seen": set(),
    }
    if name != "chain.2":
        store["sent"] = {(0, 2): ((0, 2), "x", "b")}
        store["seen"] = {(0, 2)}
    return store


_MP_ACCEPTOR = {
    "promised": (1, "replicas.1"),
    "accepted": {0: ((1, "replicas.1"), ("put", "x", 7, "z"))},
}


def _mp_leader(n: int, proposals: dict[int, Any] | None = None) -> dict[str, Any]:
    """Leader state per replica: replicas.0 leads with ballot (2, replicas.0)."""
    active = {"active": True, "ballot": (2, "replicas.0"), "proposals": dict(proposals or {})}
    active.update(next=len(active["proposals"]), waiting={})
    return {f"replicas.{i}": (active if i == 0 else {}) for i in range(n)}


#: (file relative to the root, choreography) -> list of inputs
SCENARIOS: dict[tuple[str, str], list[dict[str, Any]]] = {
    ("protocols/ping_pong.py", "ping_pong"): [{}],
    ("protocols/ping_pong.py", "ping_pong_n"): [{"rounds": n} for n in (0, 1, 5)],
    ("protocols/bookseller.py", "bookseller"): [
        {"title": t, "budget": b, "catalogue": CATALOGUE}
        for t, b in [("TAPL", 100), ("TAPL", 79), ("SICP", 45), ("Missing", 1000)]
    ],
    ("protocols/bookseller.py", "split_decision"): [
        {"price": p, "budget": b, "contribution": c}
        for p, b, c in [(80, 50, 30), (80, 40, 30), (None, 100, 0)]
    ],
    ("protocols/bookseller.py", "two_buyer_bookseller"): [
        {"title": t, "budget": b, "limit": lim, "catalogue": CATALOGUE}
        for t, b, lim in [("TAPL", 50, 30), ("TAPL", 20, 30), ("PFPL", 30, 100), ("Nope", 99, 99)]
    ],
    ("examples/02_bookseller.py", "bookseller"): [
        {"title": t, "budget": b} for t, b in [("TAPL", 100), ("PFPL", 10), ("X", 5)]
    ],
    ("examples/04_kv_service.py", "put"): [
        {"key": k, "value": v, "pstore": {}, "bstore": {"old": 0}}
        for k, v in [("x", 1), ("y", [1, 2]), ("x", None)]
    ],
    ("examples/04_kv_service.py", "get"): [
        {"key": k, "pstore": {"x": 1}} for k in ("x", "missing")
    ],
    ("examples/05_kv_backups.py", "put"): [
        {"key": k, "value": v, "pstore": {}, "bstore": {}, "backups": n}
        for k, v, n in [("x", 1, 1), ("y", [1, 2], 3), ("x", None, 7)]
    ],
    ("examples/05_kv_backups.py", "get"): [
        {"key": k, "pstore": {"x": 1}} for k in ("x", "missing")
    ],
    ("examples/06_fan_sum.py", "fan_sum"): [
        {"numbers": list(range(k)), "workers": n} for k, n in [(0, 1), (10, 3), (100, 7), (5, 7)]
    ],
    ("examples/07_majority_vote.py", "vote"): [
        {"proposal": p, "opinion": o, "voters": n}
        for p, o, n in [("x", True, 3), ("x", False, 1), ("", True, 5)]
    ]
    + [
        {
            "proposal": "lunch",
            "opinion": {f"voters.{i}": i % 3 != 0 for i in range(n)},
            "voters": n,
        }
        for n in (1, 2, 4, 7)
    ],
    ("examples/03_karatsuba.py", "karatsuba"): [
        {"x": x, "y": y} for x, y in [(3, 4), (12, 34), (1234567, 7654321), (10**12 + 7, 99991)]
    ],
    # stores given as one value: every member gets its own copy, so reruns see the same state
    ("protocols/two_phase_commit.py", "two_phase_commit"): [
        {"transaction": "t1", "can_commit": c, "cstore": {}, "pstore": {}, "participants": n}
        for c, n in [(True, 1), (True, 3), (False, 2)]
    ]
    + [
        {
            "transaction": "t2",
            "can_commit": {f"participants.{i}": i != 1 for i in range(3)},
            "cstore": {},
            "pstore": {},
            "participants": 3,
        }
    ],
    ("protocols/two_phase_commit.py", "recover"): [
        {"transaction": "t1", "cstore": c, "pstore": {}, "participants": n}
        for c, n in [
            ({"log": [("decision", "t1", "commit", "self")]}, 3),
            ({"log": [("decision", "t1", "abort", "self")]}, 2),
            ({}, 2),  # nothing logged: the coordinator decides abort
        ]
    ],
    ("protocols/paxos.py", "propose"): [
        {"value": v, "ballot": b, "astore": a, "lstore": {}, "acceptors": n, "learners": k}
        for v, b, a, n, k in [
            ("A", (1, 0), {}, 3, 2),
            ("A", (1, 0), {}, 1, 1),
            ("B", (3, 0), {"promised": (2, 1), "accepted": ((2, 1), "A")}, 5, 3),  # adopts A
            ("B", (3, 0), {"promised": (5, 1), "accepted": None}, 3, 1),  # refused
        ]
    ],
    ("protocols/mapreduce.py", "word_count"): [
        {"splits": sp, "mappers": m, "reducers": r}
        for sp, m, r in [
            (["a b a", "b c", "", "c c d"], 2, 3),
            (["the cat sat on the mat"], 1, 1),
            ([], 3, 2),
            ([f"w{i} w{i % 3} x" for i in range(9)], 5, 4),
        ]
    ],
    # primary_backup: a primary store whose view is set (else the first census is the view)
    ("protocols/primary_backup.py", "put"): [
        {"key": k, "value": v, "pstore": p, "bstore": {}, "backups": n}
        for k, v, p, n in [
            ("x", 1, {}, 1),
            ("y", [1, 2], {}, 3),
            ("x", 2, _PB_STORE, 3),  # every backup of the view and the joining one: OK
            ("x", 3, _PB_STORE, 2),  # backups.2 (joining) left out: RETRY, nobody dropped
        ]
    ],
    ("protocols/primary_backup.py", "put_alone"): [
        {"key": "x", "value": 1, "pstore": p}
        for p in ({}, _PB_STORE)  # OK, then RETRY
    ],
    ("protocols/primary_backup.py", "get"): [
        {"key": k, "pstore": p} for k, p in [("x", _PB_STORE), ("z", _PB_STORE), ("x", {})]
    ],
    ("protocols/primary_backup.py", "rejoin"): [
        {"pstore": p, "bstore": b, "backups": n}
        for p, b, n in [(_PB_STORE, {}, 3), (_PB_STORE, {"x": (9, "newer")}, 1), ({}, {}, 2)]
    ],
    # chain_replication: fresh stores take epoch 0 with the census as the chain
    ("protocols/chain_replication.py", "write"): [
        {"key": k, "value": v, "epoch": e, "store": {}, "chain": n}
        for k, v, e, n in [("x", 1, 0, 1), ("y", [1, 2], 0, 3), ("x", 2, 1, 2)]  # last: stale
    ],
    ("protocols/chain_replication.py", "read"): [
        {"key": k, "epoch": e, "store": s, "mstore": m, "chain": 1}
        for k, e, s, m in [
            ("x", 0, {}, {}),
            ("x", 1, _CR_NODE, {"epoch": 1}),
            ("x", 1, _CR_NODE, {"epoch": 2}),  # the epoch is over: stale
            ("x", 2, _CR_NODE, {"epoch": 2}),  # the node was never told: stale
        ]
    ],
    ("protocols/chain_replication.py", "config"): [
        {"mstore": m} for m in ({}, {"epoch": 2, "chain": ["chain.1"], "proposed": 3})
    ],
    ("protocols/chain_replication.py", "probe"): [
        {"mstore": m, "store": {}, "chain": n}
        for m, n in [({}, 3), ({"epoch": 1, "chain": ["chain.1"], "proposed": 1}, 2)]
    ],
    ("protocols/chain_replication.py", "reconfigure"): [
        {
            "mstore": {"epoch": 0, "chain": ["chain.0", "chain.1", "chain.2"], "proposed": 0},
            "store": {n: _cr_node(n) for n in census},
            "chain": census,
        }
        for census in [
            ["chain.0", "chain.2"],  # middle failed: chain.0 re-sends (0, 2) to chain.2
            ["chain.1", "chain.2", "chain.3"],  # head failed; chain.3 joins with a snapshot
            ["chain.0", "chain.1"],  # tail failed
            ["chain.2", "chain.0"],  # not the chain's order: nobody adopts it
        ]
    ],
    # multi_paxos: replicas.0 leads when its leader state says so
    ("protocols/multi_paxos.py", "elect"): [
        {"store": s, "leader": {}, "replicas": n}
        for s, n in [
            ({}, 1),
            ({}, 3),
            (_MP_ACCEPTOR, 3),  # (1, replicas.0) is below the promise: refused
            ({**_MP_ACCEPTOR, "round": 3}, 3),  # (4, replicas.0) leads, re-proposes slot 0
            ({"promised": (7, "replicas.1")}, 3),
        ]
    ],
    ("protocols/multi_paxos.py", "submit"): [
        {"op": op, "store": s, "leader": ld, "replicas": n}
        for op, s, ld, n in [
            (("put", "x", 1, "a"), {}, _mp_leader(3), 3),
            (("get", "x", "b"), _MP_ACCEPTOR, _mp_leader(3, {0: ("put", "x", 7, "z")}), 3),
            (("get", "x", "c"), {}, {}, 3),  # nobody leads: retry
            (("put", "x", 1, "d"), {"promised": (9, "replicas.2")}, _mp_leader(3), 3),  # refused
            (("get", "y", "e"), {}, _mp_leader(1), 1),
        ]
    ],
    # sharded_kv: a store given as one dict is copied to every node (reruns see the same state)
    ("protocols/sharded_kv.py", "put"): [
        {"key": k, "value": v, "scheme": s, "store": {}, "nodes": n}
        for k, v, s, n in [("x", 1, "mod", 1), ("y", [1, 2], "ring", 3), ("z", None, "mod", 4)]
    ],
    ("protocols/sharded_kv.py", "get"): [
        {"key": k, "scheme": s, "store": {"x": 1, "y": [2]}, "nodes": n}
        for k, s, n in [("x", "ring", 3), ("y", "mod", 2), ("missing", "ring", 1)]
    ],
    ("protocols/sharded_kv.py", "rebalance"): [
        {
            "old": [f"nodes.{i}" for i in old],
            "new": [f"nodes.{i}" for i in new],
            "scheme": s,
            "store": {f"k{i}": i for i in range(30)},
            "log": {},
            "nodes": n,
        }
        for old, new, s, n in [
            ([0], [0, 1], "mod", 2),  # a join
            ([0, 1, 2], [0, 1, 2, 3], "ring", 4),
            ([0, 1, 2], [0, 2], "ring", 3),  # a leave
            ([0, 1], [0, 1], "mod", 3),  # nothing moves; nodes.2 drops its stale copies
        ]
    ],
}
