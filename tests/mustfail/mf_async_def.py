"""A choreography cannot be a coroutine function."""

from choreo import Role, choreography


@choreography
async def coro(alice: Role) -> None:  # error: a choreography cannot be `async def`
    with alice:
        print("hi")
