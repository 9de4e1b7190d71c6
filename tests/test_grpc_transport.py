"""What only the gRPC transport does: batching, health, reconnects, limits at the receiver.

The transport-independent contract is in ``test_transport_conformance.py``.
Everything binds 127.0.0.1; a test that needs a known port takes a free one
from the kernel first. Every test runs one coroutine under ``run()``, which
bounds it in time and checks that no task outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from choreo._endpoint import Endpoint, Node
from choreo._envelope import Envelope, Kind
from choreo._errors import TransportError, UsageError
from choreo._grpc import GrpcTransport
from choreo._proto import transport_pb2 as pb
from choreo._proto import transport_pb2_grpc as pb_grpc
from tests.inbox import Inbox

T = TypeVar("T")


def run(coro: Awaitable[T], timeout: float = 30.0) -> T:
    """Run ``coro`` on a fresh event loop, at most ``timeout`` seconds; no task may outlive it."""

    async def main() -> T:
        result = await asyncio.wait_for(coro, timeout)
        await asyncio.sleep(0)
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert not left, f"tasks left behind: {left}"
        return result

    return asyncio.run(main())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def env(i: int, sender: str = "a", receiver: str = "b", payload: bytes = b"") -> Envelope:
    return Envelope("s", sender, receiver, f"f.py:{i}", Kind.DATA, payload or str(i).encode(), "h")


@contextlib.asynccontextmanager
async def receiver(
    role: str = "b", port: int = 0, **kw: Any
) -> AsyncIterator[tuple[GrpcTransport, Inbox]]:
    t = GrpcTransport(role, f"127.0.0.1:{port}", **kw)
    box = Inbox()
    await t.start(box.deliver)
    try:
        yield t, box
    finally:
        await t.close()


@contextlib.asynccontextmanager
async def sender(peers: dict[str, str], role: str = "a", **kw: Any) -> AsyncIterator[GrpcTransport]:
    t = GrpcTransport(role, "127.0.0.1:0", peers, **kw)
    await t.start(Inbox().deliver)
    try:
        yield t
    finally:
        await t.close(linger=2.0)


def labels(envs: list[Envelope]) -> list[str]:
    return [e.label for e in envs]


def expected(n: int, start: int = 0) -> list[str]:
    return [f"f.py:{i}" for i in range(start, n)]


# -- batching, health ----------------------------------------------------------


@pytest.mark.timeout(60)
def test_envelopes_ready_together_travel_in_one_batch() -> None:
    n = 500

    async def body() -> tuple[Any, Any, list[Envelope]]:
        async with receiver() as (b, box), sender({"b": str(b.address)}) as a:
            await a.send(env(-1), 5.0)  # opens the stream
            await box.wait_for(1)
            before = a.stats.batches_sent
            await asyncio.gather(*(a.send(env(i), 5.0) for i in range(n)))
            got = await box.wait_for(n + 1)
            return a.stats, a.stats.batches_sent - before, got

    stats, batches, got = run(body())
    assert labels(got) == expected(n, -1)
    assert batches < n // 10, f"{n} envelopes queued together took {batches} gRPC messages"
    assert stats.envelopes_sent == n + 1


@pytest.mark.timeout(60)
def test_a_lone_envelope_is_not_held_back() -> None:
    async def body() -> tuple[int, list[Envelope]]:
        async with receiver() as (b, box), sender({"b": str(b.address)}) as a:
            for i in range(20):
                await a.send(env(i), 5.0)
                # It must arrive with nothing sent after it to push it out.
                await asyncio.wait_for(box.wait_for(i + 1), 5.0)
            return a.stats.batches_sent, list(box.got)

    batches, got = run(body())
    assert labels(got) == expected(20)
    assert batches == 20


@pytest.mark.timeout(60)
def test_health_service_answers_serving() -> None:
    async def body() -> tuple[Any, Any]:
        async with receiver() as (b, _):
            async with grpc.aio.insecure_channel(str(b.address)) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                overall = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
                service = await stub.Check(
                    health_pb2.HealthCheckRequest(service="choreo.transport.Transport"), timeout=5
                )
                return overall.status, service.status

    assert run(body()) == (health_pb2.HealthCheckResponse.SERVING,) * 2


# -- unreachable peers, restarts ---------------------------------------------


@pytest.mark.timeout(60)
def test_peer_never_up_fails_within_timeout() -> None:
    port = free_port()
    timeout = 0.8

    async def body() -> tuple[float, str]:
        async with sender({"b": f"127.0.0.1:{port}"}) as a:
            start = time.monotonic()
            with pytest.raises(TransportError) as info:
                await a.send(env(1), timeout)
            return time.monotonic() - start, str(info.value)

    elapsed, msg = run(body())
    assert timeout * 0.9 <= elapsed < timeout + 2.0
    assert "peer b" in msg and f"127.0.0.1:{port}" in msg


@pytest.mark.timeout(60)
def test_peer_started_within_the_deadline_gets_everything_once_in_order() -> None:
    port = free_port()
    n = 60

    async def body() -> tuple[list[Envelope], Any]:
        async with sender({"b": f"127.0.0.1:{port}"}) as a:
            # Concurrent sends while b is down: each waits for the connection.
            first = asyncio.gather(*(a.send(env(i), 10.0) for i in range(n // 2)))
            await asyncio.sleep(0.4)
            assert not first.done()
            async with receiver(port=port) as (_, box):
                await first
                for i in range(n // 2, n):
                    await a.send(env(i), 10.0)
                got = await box.wait_for(n)
                await asyncio.sleep(0.1)  # a duplicate would show up now
                return list(got), a.stats

    got, stats = run(body())
    assert labels(got) == expected(n)
    assert stats.connects >= 2  # at least one refused attempt, then the stream


@pytest.mark.timeout(90)
def test_receiver_restarted_mid_stream_loses_and_duplicates_nothing() -> None:
    port = free_port()
    n = 2000

    async def body() -> tuple[list[Envelope], list[Envelope], Any]:
        async with sender({"b": f"127.0.0.1:{port}"}) as a:
            first_box: Inbox
            async with receiver(port=port) as (_, first_box):

                async def pump() -> None:
                    for i in range(n):
                        await a.send(env(i), 20.0)
                        if i % 20 == 0:
                            await asyncio.sleep(0.001)

                pumping = asyncio.ensure_future(pump())
                await first_box.wait_for(n // 3)
            # The first b is gone (closed mid-stream); a keeps sending; a new b comes up.
            await asyncio.sleep(0.2)
            async with receiver(port=port) as (_, second_box):
                await pumping
                await second_box.wait_for(n - len(first_box.got))
                await asyncio.sleep(0.1)  # a duplicate would show up now
                return list(first_box.got), list(second_box.got), a.stats

    first, second, stats = run(body(), timeout=60)
    assert 0 < len(first) < n and second
    assert labels(first) + labels(second) == expected(n)
    assert stats.connects >= 2


@pytest.mark.timeout(60)
def test_closed_receiver_acks_exactly_what_it_delivered() -> None:
    port = free_port()

    async def body() -> tuple[list[Envelope], list[Envelope], float]:
        async with sender({"b": f"127.0.0.1:{port}"}) as a:
            # No timely acks: only the handshake's and the one sent on close.
            async with receiver(port=port, ack_delay=60.0) as (_, first):
                for i in range(10):
                    await a.send(env(i), 10.0)
                await first.wait_for(10)
                start = time.monotonic()
            closing = time.monotonic() - start
            async with receiver(port=port, ack_delay=60.0) as (_, second):
                for i in range(10, 15):
                    await a.send(env(i), 10.0)
                await second.wait_for(5)
                await asyncio.sleep(0.1)  # a duplicate would show up now
                return list(first.got), list(second.got), closing

    first, second, closing = run(body())
    assert labels(first) == expected(10)
    assert labels(second) == expected(15, 10)  # nothing of the first ten again
    assert closing < 5.0  # the held-back ack did not hold up close()


@pytest.mark.timeout(60)
def test_nothing_sent_to_a_vanished_peer_is_lost_silently() -> None:
    lost: list[str] = []

    async def body() -> tuple[list[tuple[str, str]], list[Envelope], Any]:
        outcome = []
        b = GrpcTransport("b", "127.0.0.1:0")
        box = Inbox()
        await b.start(box.deliver)
        a = GrpcTransport(
            "a", "127.0.0.1:0", {"b": str(b.address)}, on_lost=lambda e, _: lost.append(e.label)
        )
        await a.start(Inbox().deliver)
        try:
            await a.send(env(0), 5.0)
            await box.wait_for(1)
            await b.close()
            for i in range(1, 6):
                try:
                    await a.send(env(i), 0.3)
                    outcome.append(("accepted", f"f.py:{i}"))
                except TransportError as exc:
                    outcome.append(("raised", str(exc)))
            # the sender may not have noticed the stream end yet (a race with b's
            # close): by now it has, and the accepted envelopes have expired
            await asyncio.sleep(0.6)
            try:
                await a.send(env(6), 0.3)
                outcome.append(("accepted", "f.py:6"))
            except TransportError as exc:
                outcome.append(("raised", str(exc)))
        finally:
            await a.close(linger=3.0)  # accepted envelopes expire meanwhile
        return outcome, list(box.got), a.stats

    outcome, got, stats = run(body())
    assert labels(got) == ["f.py:0"]
    accepted = [x for kind, x in outcome if kind == "accepted"]
    assert accepted == lost, outcome  # every accepted one was reported as lost
    assert stats.lost == len(lost)
    raised = [x for kind, x in outcome if kind == "raised"]
    assert raised and all("peer b at" in x or "was lost" in x for x in raised), outcome
    if lost:  # the send after a loss names the lost envelope
        assert any(lost[0] in x and "was lost" in x for x in raised), outcome


@pytest.mark.timeout(60)
def test_sender_restart_starts_a_new_sequence() -> None:
    async def body() -> list[Envelope]:
        async with receiver() as (b, box):
            for round_ in range(3):
                async with sender({"b": str(b.address)}) as a:
                    for i in range(10):
                        await a.send(env(round_ * 10 + i), 5.0)
                # close() flushed: everything is delivered before it returns
                assert len(box.got) == 10 * (round_ + 1)
            assert b.stats.duplicates == b.stats.gaps == 0
            return box.got

    assert labels(run(body())) == expected(30)


@pytest.mark.timeout(60)
def test_close_flushes_queued_envelopes() -> None:
    n = 300

    async def body() -> list[Envelope]:
        async with receiver() as (b, box):
            a = GrpcTransport("a", "127.0.0.1:0", {"b": str(b.address)})
            await a.start(Inbox().deliver)
            await a.send(env(0), 5.0)
            for i in range(1, n):
                await a.send(env(i), 5.0)  # connected: returns once queued
            await a.close()
            return list(box.got)

    assert labels(run(body())) == expected(n)


@pytest.mark.timeout(60)
def test_wrong_role_at_address_fails_fast_and_clearly() -> None:
    async def body() -> tuple[float, str]:
        async with receiver(role="c") as (c, _), sender({"b": str(c.address)}) as a:
            start = time.monotonic()
            with pytest.raises(TransportError) as info:
                await a.send(env(1), 20.0)
            return time.monotonic() - start, str(info.value)

    elapsed, msg = run(body())
    assert elapsed < 10.0  # not retried until the 20 s deadline
    assert "serves role 'c', not 'b'" in msg


@pytest.mark.timeout(60)
def test_client_joining_is_learned_from_its_hello() -> None:
    async def body() -> Any:
        ta = GrpcTransport("server", "127.0.0.1:0")
        server = Node("server", ta)
        await server.start()
        client = Node("client", GrpcTransport("client", "127.0.0.1:0", {"server": str(ta.address)}))
        await client.start()
        try:
            es = Endpoint(server.open("j", "h", 5.0), {"c": "client", "s": "server"})
            ec = Endpoint(client.open("j", "h", 5.0), {"c": "client", "s": "server"})
            await ec.send("s", "ping", "f.py:1")
            assert await es.recv("c", "f.py:1") == "ping"
            await es.send("c", "pong", "f.py:2")  # the server had no address for client
            return await ec.recv("s", "f.py:2")
        finally:
            await asyncio.gather(server.aclose(), client.aclose())

    assert run(body()) == "pong"


@pytest.mark.timeout(60)
def test_bind_conflict_is_a_transport_error() -> None:
    async def body() -> str:
        async with receiver() as (b, _):
            t = GrpcTransport("c", str(b.address))
            with pytest.raises(TransportError) as info:
                await t.start(Inbox().deliver)
            await t.close()
            return str(info.value)

    assert "cannot listen" in run(body())


def test_bad_addresses_are_usage_errors() -> None:
    with pytest.raises(UsageError):
        GrpcTransport("a", "127.0.0.1")
    with pytest.raises(UsageError):
        GrpcTransport("a", "127.0.0.1:0", {"b": "localhost:99999"})


# -- the receiver's limits, against a raw client ------------------------------


async def raw_stream(address: str, batches: list[Any]) -> tuple[Any, list[Any]]:
    """Send ``batches`` on a raw Connect stream; return the final status code and the acks."""
    async with grpc.aio.insecure_channel(
        address, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
    ) as channel:
        call = pb_grpc.TransportStub(channel).Connect()
        acks = []
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
            for batch in batches:
                await call.write(batch)
            await call.done_writing()
        with contextlib.suppress(grpc.aio.AioRpcError):
            async for ack in call:
                acks.append(ack)
        return await call.code(), acks


def hello(sender: str = "x", receiver: str = "b") -> Any:
    return pb.Batch(hello=pb.Hello(sender=sender, receiver=receiver, incarnation="i1"))


def raw_env(seq: int, size: int, sender: str = "x") -> Any:
    return pb.Envelope(
        session="s", sender=sender, receiver="b", label=f"f.py:{seq}", kind=0,
        payload=b"p" * size, chash="h", seq=seq,
    )  # fmt: skip


@pytest.mark.timeout(60)
def test_oversized_envelope_is_rejected_at_the_receiver_without_harming_others() -> None:
    limit = 1024

    async def body() -> tuple[Any, Any, Any, list[Envelope]]:
        async with receiver(max_message_size=limit) as (b, box):
            addr = str(b.address)
            # One byte over the envelope limit: the transport's own check.
            over = await raw_stream(addr, [hello(), pb.Batch(envelopes=[raw_env(1, limit + 1)])])
            # Far over gRPC's message limit: gRPC's own check.
            huge = await raw_stream(
                addr, [hello(), pb.Batch(envelopes=[raw_env(1, 2 * 1024 * 1024)])]
            )
            # A well-behaved stream from another sender, meanwhile, is served.
            ok = await raw_stream(
                addr, [hello("y"), pb.Batch(envelopes=[raw_env(1, limit, "y"), raw_env(2, 5, "y")])]
            )
            return over[0], huge[0], ok, list(box.got)

    over, huge, (ok_code, ok_acks), got = run(body())
    assert over == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert huge == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert ok_code == grpc.StatusCode.OK
    assert ok_acks[-1].delivered == 2
    assert [(e.sender, len(e.payload)) for e in got] == [("y", limit), ("y", 5)]


@pytest.mark.timeout(60)
def test_stream_must_open_with_a_hello_for_this_role() -> None:
    async def body() -> tuple[Any, Any, Any]:
        async with receiver() as (b, box):
            addr = str(b.address)
            no_hello = await raw_stream(addr, [pb.Batch(envelopes=[raw_env(1, 3)])])
            wrong = await raw_stream(addr, [hello(receiver="c")])
            forged = await raw_stream(addr, [hello(), pb.Batch(envelopes=[raw_env(1, 3, "z")])])
            assert box.got == []
            return no_hello[0], wrong[0], forged[0]

    assert run(body()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,  # a role this process does not host
        grpc.StatusCode.INVALID_ARGUMENT,
    )


@pytest.mark.timeout(60)
def test_retransmitted_envelopes_are_delivered_once() -> None:
    async def body() -> tuple[list[Envelope], list[Any], Any]:
        async with receiver() as (b, box):
            addr = str(b.address)
            first = [raw_env(i, 3) for i in (1, 2, 3)]
            await raw_stream(addr, [hello(), pb.Batch(envelopes=first)])
            # Same incarnation reconnects and sends 2..5: 2 and 3 are duplicates.
            again = [raw_env(i, 3) for i in (2, 3, 4, 5)]
            _, acks = await raw_stream(addr, [hello(), pb.Batch(envelopes=again)])
            return list(box.got), acks, b.stats

    got, acks, stats = run(body())
    assert labels(got) == [f"f.py:{i}" for i in (1, 2, 3, 4, 5)]
    assert acks[0].delivered == 3  # the handshake ack says what the last stream delivered
    assert acks[-1].delivered == 5
    assert stats.duplicates == 2
