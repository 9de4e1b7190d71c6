"""What only the TCP transport does: its framing against a raw socket, batching, TLS, restarts.

The transport-independent contract is in ``test_transport_conformance.py``
(which runs on ``TcpTransport`` too). Everything binds 127.0.0.1; a test that
needs a known port takes a free one from the kernel first. Every test runs one
coroutine under ``run()``, which bounds it in time and checks that no task
outlives it, and runs twice: on asyncio's event loop and on uvloop's (the
``loop`` fixture). Raw frames are built here from the wire format documented
in ``choreo/_tcp.py``, not with the transport's own helpers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from choreo._cluster import Cluster, load_cluster, make_transport, write_cluster
from choreo._endpoint import Endpoint, Node
from choreo._envelope import Envelope, Kind
from choreo._errors import TransportError, UsageError
from choreo._proto import transport_pb2 as pb
from choreo._tcp import TcpTransport
from choreo._tls import TlsConfig
from tests.inbox import Inbox
from tests.scenarios import ROOT

T = TypeVar("T")


#: the event loop the running test uses (set by the ``loop`` fixture)
LOOP = {"name": "asyncio"}


@pytest.fixture(autouse=True, params=["asyncio", "uvloop"])
def loop(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs on asyncio's event loop and on uvloop's (skipped if it is not installed).

    ``CHOREO_LOOP`` is set too: the ``choreo`` processes a test starts use the same loop.
    """
    name: str = request.param
    if name == "uvloop":
        pytest.importorskip("uvloop")
    monkeypatch.setenv("CHOREO_LOOP", name)
    monkeypatch.setitem(LOOP, "name", name)
    return name


def run(coro: Awaitable[T], timeout: float = 30.0) -> T:
    """Run ``coro`` on a fresh event loop, at most ``timeout`` seconds; no task may outlive it."""
    name = LOOP["name"]

    async def main() -> T:
        assert type(asyncio.get_running_loop()).__module__.split(".")[0] == name
        result = await asyncio.wait_for(coro, timeout)
        await asyncio.sleep(0)
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert not left, f"tasks left behind: {left}"
        return result

    if name == "uvloop":
        import uvloop

        return uvloop.run(main())
    return asyncio.run(main())


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def env(i: int, sender: str = "a", receiver: str = "b", payload: bytes = b"") -> Envelope:
    return Envelope("s", sender, receiver, f"f.py:{i}", Kind.DATA, payload or str(i).encode(), "h")


def labels(envs: list[Envelope]) -> list[str]:
    return [e.label for e in envs]


def expected(n: int, start: int = 0) -> list[str]:
    return [f"f.py:{i}" for i in range(start, n)]


@contextlib.asynccontextmanager
async def receiver(
    role: str = "b", port: int = 0, **kw: Any
) -> AsyncIterator[tuple[TcpTransport, Inbox]]:
    t = TcpTransport(role, f"127.0.0.1:{port}", **kw)
    box = Inbox()
    await t.start(box.deliver)
    try:
        yield t, box
    finally:
        await t.close()


@contextlib.asynccontextmanager
async def sender(peers: dict[str, str], role: str = "a", **kw: Any) -> AsyncIterator[TcpTransport]:
    t = TcpTransport(role, "127.0.0.1:0", peers, **kw)
    await t.start(Inbox().deliver)
    try:
        yield t
    finally:
        await t.close(linger=2.0)


# -- raw frames (the documented wire format) ----------------------------------------


def frame(ftype: int, body: bytes = b"") -> bytes:
    return struct.pack("!IB", len(body) + 1, ftype) + body


def hello_frame(sender: str = "x", receiver: str = "b", incarnation: str = "i1") -> bytes:
    hello = pb.Hello(sender=sender, receiver=receiver, incarnation=incarnation)
    return frame(1, b"CHT1" + hello.SerializeToString())


def env_frame(
    seq: int,
    payload: bytes = b"p",
    *,
    kind: int = 0,
    session: bytes = b"s",
    label: bytes | None = None,
    chash: bytes = b"h",
    lengths: tuple[int, int, int] | None = None,
) -> bytes:
    label = f"f.py:{seq}".encode() if label is None else label
    ls, ll, lc = lengths or (len(session), len(label), len(chash))
    body = struct.pack("!BQHHB", kind, seq, ls, ll, lc) + session + label + chash + payload
    return frame(3, body)


BYE = frame(4)


async def raw_exchange(
    address: str, data: bytes, timeout: float = 10.0, eof: bool = False
) -> list[tuple[int, bytes]]:
    """Write ``data`` on a fresh connection (then end it, with ``eof``); return every frame
    read back until the server closes."""
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(data)
        if eof:
            writer.write_eof()
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        raw = b""
        with contextlib.suppress(ConnectionError):
            raw = await asyncio.wait_for(reader.read(), timeout)  # until EOF
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    frames = []
    while len(raw) >= 5:
        (n,) = struct.unpack_from("!I", raw)
        frames.append((raw[4], raw[5 : 4 + n]))
        raw = raw[4 + n :]
    assert raw == b"", "the server ended the connection in the middle of a frame"
    return frames


def acks(frames: list[tuple[int, bytes]]) -> list[int]:
    return [pb.Ack.FromString(body).delivered for t, body in frames if t == 2]


def error_of(frames: list[tuple[int, bytes]]) -> str:
    errors = [body[1:].decode() for t, body in frames if t == 5]
    assert len(errors) == 1, frames
    return errors[0]


# -- batching --------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_lone_envelope_is_written_inside_send() -> None:
    async def body() -> tuple[int, int]:
        async with receiver() as (b, box), sender({"b": str(b.address)}) as a:
            await a.send(env(0), 5.0)
            await box.wait_for(1)
            before = a.stats.writes
            await a.send(env(1), 5.0)
            after = a.stats.writes  # no loop turn in between: it left inside send()
            await box.wait_for(2)
            return before, after

    before, after = run(body())
    assert after == before + 1


@pytest.mark.timeout(60)
def test_strings_arrive_exactly_whether_repeated_new_long_or_not_ascii(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Both ends remember the encoded strings of recent envelopes (at most _TAILS, each at
    # most _CACHED bytes): shrink the bound so that this test goes past it, and mix
    # repeats, new ones, non-ASCII ones and ones too long to be remembered.
    import choreo._tcp as tcp

    monkeypatch.setattr(tcp, "_TAILS", 8)
    strings = ["s", "sé", "s\u00e9\u4e2d", "x" * (tcp._CACHED + 1), "f.py:1", "\U0001f600"]
    sent = [
        Envelope(
            strings[i % 6] + str(i % 20),
            "a",
            "b",
            strings[(i // 6) % 6] + str(i % 7),
            Kind.DATA if i % 3 else Kind.SELECT,
            bytes([i % 256]) * (i % 5),
            strings[(i + 1) % 6][:200],
        )
        for i in range(300)
    ]

    async def body() -> list[Envelope]:
        async with receiver() as (b, box), sender({"b": str(b.address)}) as a:
            for e in sent:
                await a.send(e, 5.0)
            return list(await box.wait_for(len(sent)))

    assert run(body()) == sent


@pytest.mark.timeout(60)
def test_envelopes_sent_in_a_burst_share_writes() -> None:
    n = 500

    async def body() -> tuple[list[Envelope], int]:
        async with receiver() as (b, box):
            # A burst window of an hour: every send after the first one is "quick".
            async with sender({"b": str(b.address)}, burst_window=3600.0) as a:
                await a.send(env(0), 5.0)
                await box.wait_for(1)
                before = a.stats.writes
                for i in range(1, n):
                    await a.send(env(i), 5.0)  # one task in a row, never yielding
                got = await box.wait_for(n)
                return list(got), a.stats.writes - before

    got, writes = run(body())
    assert labels(got) == expected(n)
    assert writes <= 3  # the first one or two at once, then everything corked in one write


# -- malformed and hostile input -----------------------------------------------------


MAX = 1024  # the receiver's max_message_size in these tests
LIMIT = 1 + 14 + 16 * 1024 + MAX  # the longest envelope frame it accepts

BAD: dict[str, tuple[bytes, str]] = {
    "not this protocol (HTTP)": (b"GET / HTTP/1.1\r\nHost: b\r\n\r\n", "over the limit"),
    "an empty frame": (b"\x00\x00\x00\x00", "a frame of 0 bytes"),
    "a first frame longer than a HELLO can be": (
        struct.pack("!IB", 70_000, 1),  # only the header: not buffered
        "over the limit of 65536 bytes",
    ),
    "an envelope before the HELLO": (env_frame(1), "before the HELLO"),
    "a HELLO without the magic": (frame(1, b"XXXX" + b"\x0a\x01x"), "not a choreo TCP HELLO"),
    "a HELLO that is not protobuf": (frame(1, b"CHT1\xff\xff\xff"), "does not parse"),
    "a HELLO for another role": (hello_frame(receiver="c"), "serves role 'b', not 'c'"),
    "a HELLO naming no sender": (hello_frame(sender=""), "names no sender"),
    "a frame longer than any envelope": (
        hello_frame() + struct.pack("!IB", LIMIT + 1, 3),  # only the header: not buffered
        "over the limit",
    ),
    "a payload over the limit": (hello_frame() + env_frame(1, b"p" * (MAX + 1)), "over b's limit"),
    "strings running past the frame": (
        hello_frame() + env_frame(1, lengths=(60000, 1, 1)),
        "run past its frame",
    ),
    "an envelope frame too short": (hello_frame() + frame(3, b"\x00\x01"), "too short"),
    "a session that is not UTF-8": (hello_frame() + env_frame(1, session=b"\xff\xfe"), "UTF-8"),
    "an unknown kind": (hello_frame() + env_frame(1, kind=99), "unknown kind 99"),
    "an unknown frame type": (hello_frame() + frame(77, b"?"), "type 77"),
    "a second HELLO": (hello_frame() + hello_frame(), "type 1 after the HELLO"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", list(BAD))
def test_malformed_input_ends_only_its_own_connection(case: str) -> None:
    data, why = BAD[case]

    async def body() -> tuple[list[tuple[int, bytes]], list[Envelope], int]:
        async with receiver(max_message_size=MAX) as (b, box):
            async with sender({"b": str(b.address)}) as a:
                await a.send(env(1), 5.0)
                await box.wait_for(1)
                frames = await raw_exchange(str(b.address), data)
                # The well-behaved sender's connection and session carry on.
                await a.send(env(2, payload=b"q" * MAX), 5.0)
                await box.wait_for(2)
                assert a.stats.connects == 1
            return frames, list(box.got), b.stats.rejected

    frames, got, rejected = run(body())
    assert why in error_of(frames), frames
    assert [(e.sender, e.label) for e in got] == [("a", "f.py:1"), ("a", "f.py:2")]
    assert rejected == 1


@pytest.mark.timeout(60)
def test_a_truncated_frame_then_eof_disturbs_nobody() -> None:
    async def body() -> list[Envelope]:
        async with receiver() as (b, box), sender({"b": str(b.address)}) as a:
            data = hello_frame() + env_frame(1)[:-3]
            frames = await raw_exchange(str(b.address), data, eof=True)
            assert acks(frames) == [0]  # the HELLO was answered; the half envelope was not
            await a.send(env(1), 5.0)
            return list(await box.wait_for(1))

    assert [(e.sender, e.label) for e in run(body())] == [("a", "f.py:1")]


@pytest.mark.timeout(60)
def test_a_connection_that_never_says_hello_is_closed() -> None:
    async def body() -> str:
        async with receiver(connect_timeout=0.3) as (b, _):
            return error_of(await raw_exchange(str(b.address), b""))

    assert "no HELLO" in run(body())


@pytest.mark.timeout(60)
def test_raw_sender_is_acknowledged_and_retransmissions_are_delivered_once() -> None:
    async def body() -> tuple[list[Envelope], list[int], list[int], Any]:
        async with receiver() as (b, box):
            addr = str(b.address)
            first = hello_frame() + b"".join(env_frame(i) for i in (1, 2, 3)) + BYE
            acks1 = acks(await raw_exchange(addr, first))
            # The same incarnation reconnects and sends 2..5: 2 and 3 are duplicates.
            again = hello_frame() + b"".join(env_frame(i) for i in (2, 3, 4, 5)) + BYE
            acks2 = acks(await raw_exchange(addr, again))
            return list(box.got), acks1, acks2, b.stats

    got, acks1, acks2, stats = run(body())
    assert labels(got) == [f"f.py:{i}" for i in (1, 2, 3, 4, 5)]
    assert all(e.sender == "x" and e.receiver == "b" and e.chash == "h" for e in got)
    assert acks1[0] == 0 and acks1[-1] == 3
    assert acks2[0] == 3 and acks2[-1] == 5  # the handshake ack says what was delivered
    assert stats.duplicates == 2


# -- unreachable peers, restarts ---------------------------------------------------------


@pytest.mark.timeout(60)
def test_peer_never_up_is_a_transport_error_naming_it() -> None:
    port = free_port()

    async def body() -> str:
        async with sender({"b": f"127.0.0.1:{port}"}) as a:
            with pytest.raises(TransportError) as info:
                await a.send(env(1), 0.5)
            return str(info.value)

    msg = run(body())
    assert "peer b" in msg and f"127.0.0.1:{port}" in msg and "could not be reached" in msg


@pytest.mark.timeout(60)
def test_peer_started_late_gets_everything_once_in_order() -> None:
    port = free_port()
    n = 60

    async def body() -> tuple[list[Envelope], Any]:
        async with sender({"b": f"127.0.0.1:{port}"}) as a:
            # Concurrent sends while b is down: each waits for the connection.
            first = asyncio.gather(*(a.send(env(i), 10.0) for i in range(n // 2)))
            await asyncio.sleep(0.3)
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
    assert stats.connects >= 2  # at least one refused attempt, then the connection


@pytest.mark.timeout(90)
def test_peer_down_then_up_mid_stream_loses_and_duplicates_nothing() -> None:
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

    async def body() -> tuple[list[Envelope], list[Envelope]]:
        async with sender({"b": f"127.0.0.1:{port}"}) as a:
            # No timely acks: only the handshake's and the one sent on close.
            async with receiver(port=port, ack_delay=60.0) as (_, first):
                for i in range(10):
                    await a.send(env(i), 10.0)
                await first.wait_for(10)
            async with receiver(port=port, ack_delay=60.0) as (_, second):
                for i in range(10, 15):
                    await a.send(env(i), 10.0)
                await second.wait_for(5)
                await asyncio.sleep(0.1)  # a duplicate would show up now
                return list(first.got), list(second.got)

    first, second = run(body())
    assert labels(first) == expected(10)
    assert labels(second) == expected(15, 10)  # nothing of the first ten again


async def crash(t: TcpTransport) -> None:
    """End ``t`` as a crash would: its connections drop without a last acknowledgement."""
    t._stopping = True  # delivers nothing more
    for conn in list(t._conns):
        assert conn.transport is not None
        conn.transport.abort()
    await asyncio.sleep(0.05)  # the connections are lost: close() has nothing to acknowledge
    await t.close()


@pytest.mark.timeout(60)
def test_after_a_receiver_crash_unacknowledged_envelopes_are_sent_again() -> None:
    port = free_port()

    async def body() -> tuple[list[Envelope], list[Envelope], Any]:
        async with sender({"b": f"127.0.0.1:{port}"}) as a:
            first = TcpTransport("b", f"127.0.0.1:{port}", ack_delay=60.0)  # no timely acks
            first_box = Inbox()
            await first.start(first_box.deliver)
            for i in range(10):
                await a.send(env(i), 10.0)
            await first_box.wait_for(10)
            await crash(first)
            async with receiver(port=port) as (_, second_box):
                for i in range(10, 15):
                    await a.send(env(i), 10.0)
                await second_box.wait_for(15)
                await asyncio.sleep(0.1)  # a duplicate would show up now
                return list(first_box.got), list(second_box.got), a.stats

    first, second, stats = run(body())
    assert labels(first) == expected(10)
    # The crashed receiver could not say what it delivered: at least once, in order.
    assert labels(second) == expected(15)
    assert stats.retransmitted == 10


@pytest.mark.timeout(60)
def test_nothing_sent_to_a_vanished_peer_is_lost_silently() -> None:
    lost: list[str] = []

    async def body() -> tuple[list[tuple[str, str]], list[Envelope], Any]:
        outcome = []
        b = TcpTransport("b", "127.0.0.1:0")
        box = Inbox()
        await b.start(box.deliver)
        a = TcpTransport(
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
            # the sender may not have noticed the connection end yet (a race with b's
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
            a = TcpTransport("a", "127.0.0.1:0", {"b": str(b.address)})
            await a.start(Inbox().deliver)
            await a.send(env(0), 5.0)
            for i in range(1, n):
                await a.send(env(i), 5.0)  # connected: returns once written or corked
            await a.close()
            return list(box.got)

    assert labels(run(body())) == expected(n)


@pytest.mark.timeout(60)
def test_wrong_role_at_address_fails_before_the_deadline() -> None:
    async def body() -> str:
        async with receiver(role="c") as (c, _), sender({"b": str(c.address)}) as a:
            with pytest.raises(TransportError) as info:
                await a.send(env(1), 120.0)  # refused for good: not retried until then
            return str(info.value)

    assert "serves role 'c', not 'b'" in run(body(), timeout=30)


@pytest.mark.timeout(60)
def test_a_sender_may_only_send_as_itself() -> None:
    async def body() -> str:
        async with receiver() as (b, _), sender({"b": str(b.address)}) as a:
            with pytest.raises(TransportError) as info:
                await a.send(env(1, sender="z"), 5.0)
            return str(info.value)

    assert "cannot send" in run(body())


@pytest.mark.timeout(60)
def test_client_joining_is_learned_from_its_hello() -> None:
    async def body() -> Any:
        ta = TcpTransport("server", "127.0.0.1:0")
        server = Node("server", ta)
        await server.start()
        client = Node("client", TcpTransport("client", "127.0.0.1:0", {"server": str(ta.address)}))
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
            t = TcpTransport("c", str(b.address))
            with pytest.raises(TransportError) as info:
                await t.start(Inbox().deliver)
            await t.close()
            return str(info.value)

    assert "cannot listen" in run(body())


def test_bad_addresses_and_limits_are_usage_errors() -> None:
    with pytest.raises(UsageError):
        TcpTransport("a", "127.0.0.1")
    with pytest.raises(UsageError):
        TcpTransport("a", "127.0.0.1:0", {"b": "localhost:99999"})
    with pytest.raises(UsageError):
        TcpTransport("a", "127.0.0.1:0", max_message_size=0)


@pytest.mark.timeout(60)
def test_only_the_given_host_is_bound() -> None:
    async def body() -> Any:
        async with receiver() as (b, _):
            assert b._server is not None
            return [s.getsockname()[0] for s in b._server.sockets]

    assert run(body()) == ["127.0.0.1"]


# -- TLS -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki() -> dict[str, Any]:
    pytest.importorskip("cryptography")
    from choreo._tls import issue, make_ca

    ca, ca_key = make_ca()
    return {
        "ca": ca,
        **{r: issue(ca, ca_key, r, ("127.0.0.1",)) for r in ("a", "b", "c")},
    }


def tls(pki: dict[str, Any], role: str, mutual: bool = True) -> TlsConfig:
    cert, key = pki[role]
    return TlsConfig(pki["ca"], cert, key, mutual=mutual)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mutual", [True, False], ids=["mutual", "server-only"])
def test_round_trip_over_tls(pki: dict[str, Any], mutual: bool) -> None:
    async def body() -> tuple[Any, Any]:
        a = Node("a", TcpTransport("a", "127.0.0.1:0", tls=tls(pki, "a", mutual)))
        b = Node("b", TcpTransport("b", "127.0.0.1:0", tls=tls(pki, "b", mutual)))
        await a.start()
        await b.start()
        a.transport.add_peer("b", str(b.transport.address))  # type: ignore[attr-defined]
        try:
            ea = Endpoint(a.open("t", "h", 5.0), {"a": "a", "b": "b"})
            eb = Endpoint(b.open("t", "h", 5.0), {"a": "a", "b": "b"})
            await ea.send("b", {"big": b"x" * 100_000}, "f.py:1")
            got = await eb.recv("a", "f.py:1")
            await eb.send("a", "back", "f.py:2")  # b learned a's address from the HELLO
            return got, await ea.recv("b", "f.py:2")
        finally:
            await asyncio.gather(a.aclose(), b.aclose())

    got, back = run(body())
    assert got == {"big": b"x" * 100_000} and back == "back"


@pytest.mark.timeout(60)
def test_plaintext_client_against_a_tls_server_is_refused(pki: dict[str, Any]) -> None:
    async def body() -> tuple[str, list[tuple[int, bytes]], list[Envelope]]:
        async with receiver(tls=tls(pki, "b")) as (b, box):
            async with sender({"b": str(b.address)}) as plain:
                with pytest.raises(TransportError) as info:
                    await plain.send(env(1), 1.0)
            # A raw plaintext client with a well-formed HELLO and envelope gets nothing.
            frames = await raw_exchange(str(b.address), hello_frame(sender="a") + env_frame(1))
            # A TLS client is still served.
            async with sender({"b": str(b.address)}, tls=tls(pki, "a")) as good:
                await good.send(env(2), 5.0)
                await box.wait_for(1)
            return str(info.value), frames, list(box.got)

    msg, frames, got = run(body())
    assert "peer b" in msg and "could not be reached" in msg
    assert not any(t == 2 for t, _ in frames)  # no ACK: the HELLO was never read
    assert labels(got) == ["f.py:2"]


@pytest.mark.timeout(60)
def test_a_certificate_for_another_role_cannot_send_as_this_one(pki: dict[str, Any]) -> None:
    async def body() -> tuple[str, list[Envelope], int]:
        async with receiver(tls=tls(pki, "b")) as (b, box):
            # Holds c's certificate, claims to be a.
            impostor = TcpTransport(
                "a", "127.0.0.1:0", {"b": str(b.address)}, tls=tls(pki, "c"), connect_timeout=2.0
            )
            await impostor.start(Inbox().deliver)
            async with sender({"b": str(b.address)}, role="c", tls=tls(pki, "c")) as honest:
                try:
                    with pytest.raises(TransportError) as info:
                        await impostor.send(env(1), 60.0)  # refused for good, not retried
                finally:
                    await impostor.close(linger=1.0)
                await honest.send(env(2, sender="c"), 5.0)
                await box.wait_for(1)
            return str(info.value), list(box.got), b.stats.rejected

    msg, got, rejected = run(body())
    assert "certificate names 'c'" in msg and "may not send as 'a'" in msg
    assert [(e.sender, e.label) for e in got] == [("c", "f.py:2")]
    assert rejected == 1


@pytest.mark.timeout(60)
def test_a_client_refuses_a_server_certified_for_another_role(pki: dict[str, Any]) -> None:
    async def body() -> tuple[str, list[Envelope]]:
        # The process at b's address holds c's certificate (and c's role).
        async with receiver(role="c", tls=tls(pki, "c")) as (c, box):
            async with sender({"b": str(c.address)}, tls=tls(pki, "a")) as a:
                with pytest.raises(TransportError) as info:
                    await a.send(env(1), 1.0)
            return str(info.value), list(box.got)

    msg, got = run(body())
    assert "peer b" in msg and got == []


# -- the cluster file, choreo up, service mode ----------------------------------------------


def test_cluster_file_names_the_transport(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    write_cluster(path, Cluster(roles={"a": "127.0.0.1:5001"}, transport="tcp"))
    assert path.read_text().startswith('transport = "tcp"\n')
    assert load_cluster(path).transport == "tcp"
    write_cluster(path, Cluster(roles={"a": "127.0.0.1:5001"}))
    assert "transport" not in path.read_text()
    assert load_cluster(path).transport == "grpc"  # the default
    path.write_text('transport = "udp"\n[roles]\na = "127.0.0.1:5001"\n')
    with pytest.raises(UsageError, match="transport: expected one of 'grpc', 'tcp', got 'udp'"):
        load_cluster(path)
    assert isinstance(make_transport("tcp", "a", "127.0.0.1:0"), TcpTransport)
    with pytest.raises(UsageError, match="unknown transport"):
        make_transport("carrier-pigeon", "a", "127.0.0.1:0")


@pytest.mark.timeout(60)
def test_service_mode_over_tcp() -> None:
    import choreo
    from choreo._loader import load_file
    from choreo._process import free_ports

    kv = load_file(ROOT / "examples" / "04_kv_service.py")
    ports = free_ports(2)
    cluster = Cluster(
        roles={"primary": f"127.0.0.1:{ports[0]}", "backup": f"127.0.0.1:{ports[1]}"},
        transport="tcp",
    )

    async def body() -> tuple[Any, Any, Any]:
        primary = choreo.Server(kv, "primary", cluster, {"pstore": {}}, timeout=5.0)
        backup = choreo.Server(kv, "backup", cluster, {"bstore": {}}, timeout=5.0)
        await primary.start()
        await backup.start()
        try:
            async with choreo.Client(cluster, timeout=5.0) as client:
                assert isinstance(client.transport, TcpTransport)
                put = await client.run(kv.put, key="x", value=1)
                got = await client.run(kv.get, key="x")
                return put, got, backup.inputs["bstore"]
        finally:
            await primary.close()
            await backup.close()

    put, got, bstore = run(body())
    assert put["client"] is True and got["client"] == 1 and bstore == {"x": 1}


@pytest.mark.timeout(180)
def test_up_ping_pong_over_tcp_runs_every_role_as_a_process() -> None:
    out = subprocess.run(
        [
            sys.executable, "-m", "choreo._cli", "up", "protocols/ping_pong.py:ping_pong",
            "--transport", "tcp", "--json",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"alice": "hi", "bob": None}
    assert "alice is up on 127.0.0.1:" in out.stderr and "bob finished" in out.stderr
    assert "[bob] bob heard 'hello'" in out.stderr  # the role's own output, forwarded
