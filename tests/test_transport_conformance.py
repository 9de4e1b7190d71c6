"""One conformance suite for every transport (after trio's ``testing/_check_streams.py``).

Every test takes ``harness``, a factory of connected transports, and runs
unchanged on the in-process ``LocalNetwork``, on ``GrpcTransport`` and on
``TcpTransport`` (all roles in this process, each with its own server on
127.0.0.1, port 0). Tests
go through ``Node`` and ``Endpoint`` where the runtime's behaviour is the
point (sessions, deadlines, selections, aborts, version skew) and through the
raw ``Transport`` interface where the transport's own contract is (FIFO per
ordered pair, size limits). There is no pytest-asyncio: every test is a sync
function that runs one coroutine with ``run()``, which bounds it in time and
checks that it left no task behind.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest

from choreo._endpoint import Endpoint, Node
from choreo._envelope import Envelope, Kind
from choreo._errors import (
    DeadlineError,
    PeerFailedError,
    TransportError,
    VersionMismatchError,
)
from choreo._grpc import GrpcTransport
from choreo._tcp import TcpTransport
from choreo._transport import LocalNetwork, Transport
from tests.inbox import Inbox

T = TypeVar("T")
MiB = 1024 * 1024


def run(coro: Awaitable[T], timeout: float = 30.0) -> T:
    """Run ``coro`` on a fresh event loop, at most ``timeout`` seconds; no task may outlive it."""

    async def main() -> T:
        result = await asyncio.wait_for(coro, timeout)
        await asyncio.sleep(0)
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert not left, f"tasks left behind: {left}"
        return result

    return asyncio.run(main())


# -- harnesses ---------------------------------------------------------------


class Harness(abc.ABC):
    """Makes transports for role names, then connects them to each other."""

    #: the largest payload the transport accepts, or None if it sets no limit
    max_payload: int | None = None

    @abc.abstractmethod
    def transport(self, role: str) -> Transport:
        """A new, not yet started transport for ``role``."""

    def wire(self) -> None:  # noqa: B027 (most transports need no wiring)
        """After every transport was started: tell each where the others are."""


class LocalHarness(Harness):
    max_payload = 4 * MiB

    def __init__(self) -> None:
        self.network = LocalNetwork()

    def transport(self, role: str) -> Transport:
        return self.network.transport(role)


class GrpcHarness(Harness):
    max_payload = 4 * MiB

    def __init__(self) -> None:
        self.transports: dict[str, GrpcTransport | TcpTransport] = {}

    def transport(self, role: str) -> Transport:
        t = GrpcTransport(role, "127.0.0.1:0")
        self.transports[role] = t
        return t

    def wire(self) -> None:
        for t in self.transports.values():
            for other in self.transports.values():
                if other is not t:
                    assert other.address is not None
                    t.add_peer(other.role, other.address)


class TcpHarness(GrpcHarness):
    def transport(self, role: str) -> Transport:
        t = TcpTransport(role, "127.0.0.1:0")
        self.transports[role] = t
        return t


@pytest.fixture(params=["local", "grpc", "tcp"])
def harness(request: pytest.FixtureRequest) -> Iterator[Callable[[], Harness]]:
    """A factory of harnesses (one per test body) for each transport."""
    kinds: dict[str, Callable[[], Harness]] = {
        "local": LocalHarness,
        "grpc": GrpcHarness,
        "tcp": TcpHarness,
    }
    yield kinds[request.param]


@contextlib.asynccontextmanager
async def nodes(h: Harness, *roles: str) -> AsyncIterator[dict[str, Node]]:
    """Started, connected nodes for ``roles``; closed on exit."""
    ns = {r: Node(r, h.transport(r)) for r in roles}
    for n in ns.values():
        await n.start()
    h.wire()
    try:
        yield ns
    finally:
        await asyncio.gather(*(n.aclose() for n in ns.values()))


@contextlib.asynccontextmanager
async def raw(
    h: Harness, *roles: str
) -> AsyncIterator[tuple[dict[str, Transport], dict[str, Inbox]]]:
    """Started, connected raw transports for ``roles`` and their inboxes; closed on exit."""
    ts = {r: h.transport(r) for r in roles}
    boxes = {r: Inbox() for r in roles}
    for r, t in ts.items():
        await t.start(boxes[r].deliver)
    h.wire()
    try:
        yield ts, boxes
    finally:
        await asyncio.gather(*(t.close() for t in ts.values()))


def env(sender: str, receiver: str, i: int, session: str = "s", payload: bytes = b"") -> Envelope:
    return Envelope(
        session, sender, receiver, f"f.py:{i}", Kind.DATA, payload or str(i).encode(), "h"
    )


def endpoint(node: Node, session: str, chash: str = "h", timeout: float = 10.0) -> Endpoint:
    ctx = node.open(session, chash, timeout, ("a", "b", "c"))
    return Endpoint(ctx, {"a": "a", "b": "b", "c": "c"})


# -- through Node and Endpoint ----------------------------------------------


@pytest.mark.timeout(60)
def test_round_trip_and_multicast(harness: Callable[[], Harness]) -> None:
    async def body() -> tuple[Any, ...]:
        async with nodes(harness(), "a", "b", "c") as ns:
            ea, eb, ec = (endpoint(ns[r], "s1") for r in "abc")

            async def a() -> Any:
                await ea.send(("b", "c"), {"n": 1, "xs": [1, 2]}, "f.py:1")
                return await ea.recv("b", "f.py:2"), await ea.recv("c", "f.py:3")

            async def b() -> Any:
                v = await eb.recv("a", "f.py:1")
                await eb.send("a", v["n"] + 1, "f.py:2")
                return v

            async def c() -> Any:
                v = await ec.recv("a", "f.py:1")
                await ec.send("a", v["xs"], "f.py:3")
                return v

            return tuple(await asyncio.gather(a(), b(), c()))

    ra, rb, rc = run(body())
    assert ra == (2, [1, 2])
    assert rb == rc == {"n": 1, "xs": [1, 2]}


@pytest.mark.timeout(60)
def test_interleaved_sessions_get_exactly_their_own_messages(
    harness: Callable[[], Harness],
) -> None:
    sessions, per = 8, 60

    async def body() -> dict[str, list[Any]]:
        async with nodes(harness(), "a", "b") as ns:
            senders = {f"s{k}": endpoint(ns["a"], f"s{k}") for k in range(sessions)}
            receivers = {f"s{k}": endpoint(ns["b"], f"s{k}") for k in range(sessions)}
            for i in range(per):  # round-robin: the sessions' envelopes interleave on the wire
                for sid, ep in senders.items():
                    await ep.send("b", (sid, i), f"f.py:{i}")
            got: dict[str, list[Any]] = {}
            for sid, ep in reversed(list(receivers.items())):
                got[sid] = [await ep.recv("a", f"f.py:{i}") for i in range(per)]
                assert ep._ctx.core.unread() == 0
            return got

    got = run(body())
    assert got == {f"s{k}": [(f"s{k}", i) for i in range(per)] for k in range(sessions)}


@pytest.mark.timeout(90)
def test_thousand_concurrent_sessions_round_trip(harness: Callable[[], Harness]) -> None:
    n = 1000

    async def body() -> list[Any]:
        async with nodes(harness(), "a", "b") as ns:

            async def a(k: int) -> Any:
                ep = endpoint(ns["a"], f"s{k}")
                await ep.send("b", k, "f.py:1")
                r = await ep.recv("b", "f.py:2")
                ns["a"].close(f"s{k}")
                return r

            async def b(k: int) -> None:
                ep = endpoint(ns["b"], f"s{k}")
                v = await ep.recv("a", "f.py:1")
                await ep.send("a", (k, v * 3), "f.py:2")
                ns["b"].close(f"s{k}")

            results = await asyncio.gather(*(a(k) for k in range(n)), *(b(k) for k in range(n)))
            assert ns["a"].dropped_late == ns["b"].dropped_late == 0
            return results[:n]

    assert run(body(), timeout=60) == [(k, 3 * k) for k in range(n)]


@pytest.mark.timeout(60)
def test_receive_deadline_names_role_peer_session_and_label(
    harness: Callable[[], Harness],
) -> None:
    async def body() -> DeadlineError:
        async with nodes(harness(), "a", "b") as ns:
            ep = endpoint(ns["a"], "sess-42", timeout=0.3)
            endpoint(ns["b"], "sess-42")  # b is there but never sends
            with pytest.raises(DeadlineError) as info:
                await ep.recv("b", "proto.py:17")
            return info.value

    msg = str(run(body()))
    for part in ("a waited", "from b", "sess-42", "proto.py:17"):
        assert part in msg


@pytest.mark.timeout(60)
def test_selection_messages(harness: Callable[[], Harness]) -> None:
    async def body() -> tuple[list[bool], list[bool]]:
        async with nodes(harness(), "a", "b", "c") as ns:
            ea, eb, ec = (endpoint(ns[r], "sel") for r in "abc")
            chosen = [
                await ea.select(v, ("b", "c"), f"f.py:{i}") for i, v in enumerate([1, 0, "x", ""])
            ]
            seen_b = [await eb.offer("a", f"f.py:{i}") for i in range(4)]
            seen_c = [await ec.offer("a", f"f.py:{i}") for i in range(4)]
            assert seen_b == seen_c
            return chosen, seen_b

    chosen, seen = run(body())
    assert chosen == seen == [True, False, True, False]


@pytest.mark.timeout(60)
def test_abort_reaches_peers_as_peer_failed(harness: Callable[[], Harness]) -> None:
    async def body() -> tuple[Any, PeerFailedError]:
        async with nodes(harness(), "a", "b") as ns:
            ea, eb = endpoint(ns["a"], "s"), endpoint(ns["b"], "s")
            await ea.send("b", "before", "f.py:1")
            await ns["a"].abort(ea._ctx, "ZeroDivisionError at f.py:2")
            first = await eb.recv("a", "f.py:1")  # sent before the abort: still delivered
            with pytest.raises(PeerFailedError) as info:
                await eb.recv("a", "f.py:3")
            return first, info.value

    first, err = run(body())
    assert first == "before"
    assert "peer a failed" in str(err) and "ZeroDivisionError" in str(err)


@pytest.mark.timeout(60)
def test_version_mismatch_fails_both_sides(harness: Callable[[], Harness]) -> None:
    async def body() -> tuple[BaseException, BaseException]:
        async with nodes(harness(), "a", "b") as ns:
            ea = endpoint(ns["a"], "v", chash="aaaa1111", timeout=5.0)
            eb = endpoint(ns["b"], "v", chash="bbbb2222", timeout=5.0)

            async def a() -> None:
                await ea.send("b", 1, "f.py:1")
                await ea.recv("b", "f.py:2")

            async def b() -> None:
                await eb.recv("a", "f.py:1")

            ra, rb = await asyncio.gather(a(), b(), return_exceptions=True)
            assert isinstance(ra, BaseException) and isinstance(rb, BaseException)
            return ra, rb

    ra, rb = run(body())
    assert isinstance(ra, VersionMismatchError), ra
    assert isinstance(rb, VersionMismatchError), rb
    for err in (ra, rb):
        assert "aaaa1111" in str(err) and "bbbb2222" in str(err)


# -- raw transport contract ---------------------------------------------------


@pytest.mark.timeout(60)
def test_fifo_per_ordered_pair(harness: Callable[[], Harness]) -> None:
    n = 2000

    async def body() -> tuple[list[Envelope], list[Envelope]]:
        async with raw(harness(), "a", "b", "c") as (ts, boxes):

            async def pump(sender: str, receiver: str) -> None:
                for i in range(n):
                    await ts[sender].send(env(sender, receiver, i), 10.0)
                    if i % 97 == 0:
                        await asyncio.sleep(0)  # let the other pumps interleave

            await asyncio.gather(pump("a", "b"), pump("c", "b"), pump("b", "a"))
            return await boxes["b"].wait_for(2 * n), await boxes["a"].wait_for(n)

    at_b, at_a = run(body())
    assert len(at_b) == 2 * n and len(at_a) == n
    for sender in "ac":
        labels = [e.label for e in at_b if e.sender == sender]
        assert labels == [f"f.py:{i}" for i in range(n)]
    assert [e.payload for e in at_a] == [str(i).encode() for i in range(n)]
    assert all(e.receiver == "b" and e.kind == Kind.DATA and e.chash == "h" for e in at_b)


@pytest.mark.timeout(60)
def test_every_field_survives(harness: Callable[[], Harness]) -> None:
    sent = [
        Envelope("sess-é", "a", "b", "mod.py:12", kind, bytes(range(256)) * 3, "c0ffee")
        for kind in Kind
    ]

    async def body() -> list[Envelope]:
        async with raw(harness(), "a", "b") as (ts, boxes):
            for e in sent:
                await ts["a"].send(e, 10.0)
            return await boxes["b"].wait_for(len(sent))

    got = run(body())
    assert got == sent
    assert all(type(e.kind) is Kind for e in got)


@pytest.mark.timeout(60)
def test_payload_up_to_the_limit_passes(harness: Callable[[], Harness]) -> None:
    h = harness()
    size = h.max_payload or 4 * MiB
    big = bytes(range(256)) * (size // 256) + b"z" * (size % 256)

    async def body() -> list[Envelope]:
        async with raw(h, "a", "b") as (ts, boxes):
            await ts["a"].send(env("a", "b", 1, payload=big), 10.0)
            await ts["a"].send(env("a", "b", 2), 10.0)  # a small one right behind it
            return await boxes["b"].wait_for(2)

    got = run(body())
    assert len(got[0].payload) == size and got[0].payload == big
    assert got[1].payload == b"2"


@pytest.mark.timeout(60)
def test_payload_over_the_limit_is_rejected(
    harness: Callable[[], Harness], request: pytest.FixtureRequest
) -> None:
    h = harness()
    size = (h.max_payload or 4 * MiB) + 1

    async def body() -> list[Envelope]:
        async with raw(h, "a", "b") as (ts, boxes):
            with pytest.raises(TransportError, match="limit"):
                await ts["a"].send(env("a", "b", 1, payload=b"x" * size), 10.0)
            await ts["a"].send(env("a", "b", 2), 10.0)  # the pair still works
            return await boxes["b"].wait_for(1)

    got = run(body())
    assert [e.label for e in got] == ["f.py:2"]


@pytest.mark.timeout(60)
def test_send_to_unknown_role_raises_transport_error(harness: Callable[[], Harness]) -> None:
    async def body() -> str:
        async with raw(harness(), "a", "b") as (ts, _):
            with pytest.raises(TransportError) as info:
                await ts["a"].send(env("a", "nobody", 1), 1.0)
            return str(info.value)

    assert "nobody" in run(body())


@pytest.mark.timeout(60)
def test_close_is_idempotent_and_stops_delivery(harness: Callable[[], Harness]) -> None:
    async def body() -> list[Envelope]:
        async with raw(harness(), "a", "b") as (ts, boxes):
            await ts["a"].send(env("a", "b", 1), 10.0)
            await boxes["b"].wait_for(1)
            await ts["b"].close()
            await ts["b"].close()
            # A network transport may accept a send or two before it sees the peer gone
            # (they are reported later: test_grpc_transport); then sends must fail.
            for i in range(2, 40):
                try:
                    await ts["a"].send(env("a", "b", i), 0.3)
                except TransportError:
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail("sends to a closed transport kept succeeding")
            return boxes["b"].got

    assert [e.label for e in run(body())] == ["f.py:1"]
