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
}
