"""The receive path waits on a timer handle, not ``asyncio.wait_for``: same guarantees.

``Endpoint`` waits for an envelope by awaiting a future that ``wake`` resolves,
with a timer handle that resolves it at the session's deadline; the gRPC
transport holds acks back with a timer too, which shutdown cuts short. These
tests pin the behaviour (deadlines, wake-ups, cancellation, no leftover
waiter), never a timing.
"""

from __future__ import annotations

import asyncio

import pytest

from choreo._endpoint import Endpoint, Node
from choreo._errors import DeadlineError
from choreo._grpc import GrpcTransport
from choreo._transport import LocalNetwork

ROLES = {"a": "a", "b": "b"}


def _pair(timeout: float) -> tuple[Endpoint, Endpoint, Node, Node]:
    net = LocalNetwork()
    na, nb = Node("a", net.transport("a")), Node("b", net.transport("b"))
    ea = Endpoint(na.open("s", "h", timeout, ["b"]), ROLES)
    eb = Endpoint(nb.open("s", "h", timeout, ["a"]), ROLES)
    return ea, eb, na, nb


def test_a_recv_that_waits_gets_the_value_sent_later() -> None:
    async def main() -> object:
        ea, eb, na, nb = _pair(5.0)
        await na.start()
        await nb.start()

        async def later() -> None:
            await asyncio.sleep(0.01)
            await ea.send("b", {"x": 1}, "f.py:1")

        task = asyncio.ensure_future(later())
        got = await eb.recv("a", "f.py:1")
        await task
        assert eb._ctx.waiter is None and eb._ctx.waiting_on is None
        return got

    assert asyncio.run(main()) == {"x": 1}


def test_a_recv_that_nothing_answers_fails_at_the_deadline() -> None:
    async def main() -> None:
        _, eb, na, nb = _pair(0.05)
        await na.start()
        await nb.start()
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(DeadlineError, match=r"waited 0\.05s"):
            await eb.recv("a", "f.py:1")
        assert loop.time() - start >= 0.05
        assert eb._ctx.waiter is None

    asyncio.run(main())


def test_a_cancelled_recv_leaves_no_waiter_and_the_next_recv_works() -> None:
    async def main() -> object:
        ea, eb, na, nb = _pair(5.0)
        await na.start()
        await nb.start()
        task = asyncio.ensure_future(eb.recv("a", "f.py:1"))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert eb._ctx.waiter is None
        await ea.send("b", 7, "f.py:1")
        return await eb.recv("a", "f.py:1")

    assert asyncio.run(main()) == 7


def test_a_gather_with_a_soft_timeout_returns_what_came() -> None:
    async def main() -> dict[str, object]:
        net = LocalNetwork()
        nodes = {r: Node(r, net.transport(r)) for r in ("a", "m0", "m1")}
        for node in nodes.values():
            await node.start()
        roles = {"a": "a"}
        ea = Endpoint(nodes["a"].open("s", "h", 5.0, ["m0", "m1"]), roles, {"g": ("m0", "m1")})
        em0 = Endpoint(nodes["m0"].open("s", "h", 5.0, ["a"]), roles)
        await em0.send("a", "only me", "f.py:1")
        return await ea.gather(ea.group("g"), "f.py:1", timeout=0.05)

    assert asyncio.run(main()) == {"m0": "only me"}


def test_closing_a_grpc_transport_cuts_a_held_back_ack_short() -> None:
    async def main() -> float:
        b = Node("b", GrpcTransport("b", "127.0.0.1:0", ack_delay=30.0))
        await b.start()
        port = b.transport.port  # type: ignore[attr-defined]
        a = Node("a", GrpcTransport("a", None, {"b": f"127.0.0.1:{port}"}, learn_peers=False))
        await a.start()
        eb = Endpoint(b.open("s", "h", 5.0, ["a"]), ROLES)
        ea = Endpoint(a.open("s", "h", 5.0, ["b"]), ROLES)
        for i in range(3):
            await ea.send("b", i, "f.py:1")
        assert [await eb.recv("a", "f.py:1") for _ in range(3)] == [0, 1, 2]
        await asyncio.sleep(0.05)  # b's stream handler now holds its ack back (30 s)
        loop = asyncio.get_running_loop()
        start = loop.time()
        await b.aclose()  # shutdown ends the held-back ack at once, then acks
        took = loop.time() - start
        await a.aclose()
        assert a.transport.stats.lost == 0  # type: ignore[attr-defined]
        return took

    assert asyncio.run(main()) < 20.0
