"""An in-memory sink for the envelopes a raw transport delivers (transport tests)."""

from __future__ import annotations

import asyncio

from choreo._envelope import Envelope


class Inbox:
    """Collects the envelopes one raw transport delivers."""

    def __init__(self) -> None:
        self.got: list[Envelope] = []
        self._changed = asyncio.Event()

    def deliver(self, env: Envelope) -> None:
        self.got.append(env)
        self._changed.set()

    async def wait_for(self, n: int) -> list[Envelope]:
        while len(self.got) < n:
            self._changed.clear()
            await self._changed.wait()
        return self.got
