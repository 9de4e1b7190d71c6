"""`await` (only possible in an `async def`, itself an error)."""

import asyncio

from choreo import Role, choreography


@choreography
async def waits(alice: Role) -> None:  # error: a choreography cannot be `async def`
    with alice:
        await asyncio.sleep(0)  # error: `await` is not allowed in a choreography
