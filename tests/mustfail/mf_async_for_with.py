"""`async for` and `async with` at choreography level."""

from choreo import Role, choreography

TICKS = [1, 2, 3]


@choreography
async def async_stmts(alice: Role) -> None:  # error: a choreography cannot be `async def`
    async for t in TICKS:  # error: `async for` is not allowed in a choreography
        with alice:
            print(t)
    async with alice:  # error: `async with` is not allowed in a choreography
        print("hi")
