"""Shared test helpers."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def expected_results(
    chor: Any, central: Any, roles: dict[str, str] | None = None
) -> dict[str, Any]:
    """What ``choreo.run`` must return, given the centralized result."""
    where = chor.result_roles()
    return {
        (roles or {}).get(r, r): (central if where is None or r in where else None)
        for r in chor.roles
    }
