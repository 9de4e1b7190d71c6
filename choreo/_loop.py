"""Which event loop choreo's processes run on: uvloop's when it is installed.

uvloop (``pip install 'choreo[fast]'``) runs the same asyncio code on a loop
written in Cython over libuv; a round trip over the TCP transport costs about
a third less CPU on it (``docs/benchmarks.md``). choreo never needs it: without
it, or with the environment variable ``CHOREO_LOOP=asyncio``, everything runs
on asyncio's own loop.

``run`` is what ``choreo up`` / ``choreo run`` / ``choreo serve`` start their
coroutine with; role processes started by ``choreo up`` inherit the
environment, hence the choice. ``choreo.run`` (one process, the in-process
transport) and code that calls ``asyncio.run`` itself are not affected.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

from choreo._errors import UsageError

__all__ = ["ENV_VAR", "loop_name", "run"]

T = TypeVar("T")

#: the environment variable that chooses the loop: ``asyncio``, or ``uvloop``
#: / ``auto`` / unset (uvloop if it is installed, else asyncio)
ENV_VAR = "CHOREO_LOOP"


def loop_name() -> str:
    """The event loop ``run`` would use now: ``"uvloop"`` or ``"asyncio"``.

    Returns:
        ``"asyncio"`` if ``CHOREO_LOOP`` is ``asyncio`` or uvloop cannot be
        imported, else ``"uvloop"``.

    Raises:
        UsageError: ``CHOREO_LOOP`` has another value than ``asyncio``,
            ``uvloop``, ``auto`` or the empty string.
    """
    wanted = os.environ.get(ENV_VAR, "").strip().lower()
    if wanted not in ("", "auto", "asyncio", "uvloop"):
        raise UsageError(
            f"{ENV_VAR}={os.environ[ENV_VAR]!r}: expected 'asyncio', 'uvloop' or 'auto'"
        )
    if wanted == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a new event loop: uvloop's if installed (see above).

    Args:
        main: the coroutine.

    Returns:
        What ``main`` returned.

    Raises:
        UsageError: ``CHOREO_LOOP`` is malformed (``main`` is closed, not run).
        Exception: whatever ``main`` raised.
    """
    try:
        name = loop_name()
    except UsageError:
        main.close()
        raise
    if name == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)
