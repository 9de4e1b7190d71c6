"""Limits of a role process: bounded buffering per peer, back-pressure, sessions, unknown roles.

Everything binds 127.0.0.1. Tests that run an event loop here do it under
``run()``, which bounds them in time and checks that no task outlives them.
The flood tests run the receiving role in a subprocess of its own, so that
its memory (``VmRSS``/``VmHWM`` from ``/proc/self/status``) is its own, and
flood it from a raw gRPC client that never waits for acknowledgements. No
assertion here is about elapsed time: "the flooder is blocked" means that a
write did not complete while the receiver sat idle, not that it was slow.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest

import choreo
from choreo import _codec
from choreo._cli import build_parser
from choreo._cluster import Cluster, load_cluster
from choreo._endpoint import Endpoint, Node
from choreo._envelope import Envelope, Kind
from choreo._errors import TransportError, UsageError
from choreo._grpc import GrpcTransport
from choreo._proto import transport_pb2 as pb
from choreo._proto import transport_pb2_grpc as pb_grpc
from choreo._run import play_role
from choreo._transport import LocalNetwork
from tests.inbox import Inbox

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
T = TypeVar("T")


def run(coro: Awaitable[T], timeout: float = 60.0) -> T:
    """Run ``coro`` on a fresh event loop, at most ``timeout`` seconds; no task may outlive it."""

    async def main() -> T:
        result = await asyncio.wait_for(coro, timeout)
        await asyncio.sleep(0)
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert not left, f"tasks left behind: {left}"
        return result

    return asyncio.run(main())


def data(session: str, sender: str, receiver: str, i: int, value: Any) -> Envelope:
    return Envelope(session, sender, receiver, f"f.py:{i}", Kind.DATA, _codec.encode(value), "h")


async def hello_stream(address: str, sender: str = "x", receiver: str = "b") -> Any:
    """A raw ``Connect`` stream to ``address``, past its handshake."""
    channel = grpc.aio.insecure_channel(address)
    call = pb_grpc.TransportStub(channel).Connect()
    await call.write(pb.Batch(hello=pb.Hello(sender=sender, receiver=receiver, incarnation="i1")))
    return channel, call


def raw_envelope(seq: int, size: int, session: str = "flood", receiver: str = "b") -> Any:
    return pb.Envelope(
        session=session, sender="x", receiver=receiver, label=f"f.py:{seq}", kind=0,
        payload=b"p" * size, chash="h", seq=seq,
    )  # fmt: skip


# -- a flooding peer, against a receiving role in a process of its own -----------

#: The receiving role: a Node for role ``b`` on gRPC with a small per-peer bound,
#: an echo session with role ``a`` (to show other sessions go on), and commands on
#: stdin: ``stats`` prints its memory and the node's view of the flooder ``x``.
RECEIVER = """
import asyncio, dataclasses, json, sys
from choreo._endpoint import Endpoint, Node
from choreo._grpc import GrpcTransport

def memory():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return {k: int(fields[k].split()[0]) * 1024 for k in ("VmRSS", "VmHWM")}

async def main(flood_session_open, limit):
    node = Node("b", GrpcTransport("b", "127.0.0.1:0"), max_buffered_bytes=limit)
    await node.start()
    if flood_session_open:  # opened, and never read
        node.open("flood", "h", 600.0, ["x"])
    echo = Endpoint(node.open("echo", "h", 600.0, ["a"]), {"a": "a"})

    async def echoes():
        i = 0
        while True:
            await echo.send("a", await echo.recv("a", f"e:{i}"), f"r:{i}")
            i += 1

    echoing = asyncio.ensure_future(echoes())
    print(json.dumps({"port": node.transport.port, "memory": memory()}), flush=True)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    while (line := await stdin.readline()).strip() == b"stats":
        count, nbytes = node.buffered("x")
        print(json.dumps({
            "memory": memory(), "buffered": nbytes, "count": count, "paused": node.paused_peers,
            "dropped": node.dropped_overflow, "grpc": dataclasses.asdict(node.transport.stats),
        }), flush=True)
    echoing.cancel()
    await node.aclose()

asyncio.run(main(sys.argv[1] == "open", int(sys.argv[2])))
"""


class Receiver:
    """The receiving role's process; ``stats()`` asks it for its numbers."""

    def __init__(self, flood_session_open: bool, limit: int) -> None:
        env = dict(
            os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", RECEIVER, "open" if flood_session_open else "never", str(limit)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        self.started = self._line()
        self.address = f"127.0.0.1:{self.started['port']}"

    def _line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the receiver answers at once, or has died
        assert line, f"the receiver died (exit status {self.proc.wait(10)})"
        answer: dict[str, Any] = json.loads(line)
        return answer

    def stats(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return self._line()

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def receiver(request: pytest.FixtureRequest) -> Iterator[Receiver]:
    r = Receiver(*request.param)
    try:
        yield r
    finally:
        r.stop()


LIMIT = 4 * MiB  # the receiving node's bound per peer
ENVELOPE = 64 * 1024  # the flooder's payloads
FLOOD = 2000  # envelopes the flooder tries to push: 125 MiB, 31 times the bound
GROWTH = 48 * MiB  # the receiver's memory may grow this much at most (bound + gRPC's windows)
STALL = (
    3.0  # seconds a write may hang, with the receiver idle, before the flooder counts as blocked
)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "receiver",
    [
        pytest.param((False, LIMIT), id="session-never-opened"),
        pytest.param((True, LIMIT), id="session-never-read"),
    ],
    indirect=True,
)
def test_a_flooding_peer_is_blocked_and_the_receivers_memory_stays_bounded(
    receiver: Receiver,
) -> None:
    async def echo(a: Endpoint, i: int) -> Any:
        await a.send("b", f"ping {i}", f"e:{i}")
        return await a.recv("b", f"r:{i}")

    async def body() -> tuple[int, dict[str, Any], list[Any]]:
        node = Node("a", GrpcTransport("a", "127.0.0.1:0", {"b": receiver.address}))
        await node.start()
        a = Endpoint(node.open("echo", "h", 20.0, ["b"]), {"b": "b"})
        echoed = [await echo(a, 0)]
        channel, call = await hello_stream(receiver.address)
        written = 0
        try:
            await call.read()  # the handshake's ack
            for seq in range(1, FLOOD + 1):
                write = asyncio.ensure_future(
                    call.write(pb.Batch(envelopes=[raw_envelope(seq, ENVELOPE)]))
                )
                done, _ = await asyncio.wait((write,), timeout=STALL)
                if not done:
                    break  # blocked: the receiver is not reading
                write.result()
                written += 1
            stats = receiver.stats()
            # the flooder is stuck, and the receiving role's other sessions go on
            echoed += [await echo(a, i) for i in (1, 2, 3)]
        finally:
            call.cancel()
            await channel.close()
            await node.aclose()
        return written, stats, echoed

    written, stats, echoed = run(body(), timeout=100)
    assert written < FLOOD, "the receiver took the whole flood"
    assert stats["paused"] == ["x"] and stats["grpc"]["pauses"] == 1
    # what the receiving node holds from the flooder: its bound, give or take one envelope
    assert LIMIT <= stats["buffered"] <= LIMIT + ENVELOPE
    assert stats["dropped"] == 0  # held back, not dropped
    growth = stats["memory"]["VmHWM"] - receiver.started["memory"]["VmRSS"]
    assert growth <= GROWTH, f"the receiver grew by {growth / MiB:.1f} MiB"
    assert written * ENVELOPE >= LIMIT  # it did get as far as the bound
    assert echoed == [f"ping {i}" for i in range(4)]


# -- back-pressure between two choreo roles: the sender waits, nothing is lost --------


@pytest.mark.timeout(60)
def test_a_paused_sender_waits_then_fails_and_loses_nothing_it_was_told_was_sent() -> None:
    value = b"v" * 16_000

    async def body() -> tuple[int, str, list[Any], Node, GrpcTransport]:
        b = Node("b", GrpcTransport("b", "127.0.0.1:0"), max_buffered_bytes=256 * 1024)
        await b.start()
        address = b.transport.address  # type: ignore[attr-defined]
        a = GrpcTransport("a", "127.0.0.1:0", {"b": address}, max_queued_bytes=256 * 1024)
        await a.start(Inbox().deliver)
        accepted = 0
        error = ""
        try:
            for i in range(2000):  # the session is not opened at b: all of it waits there
                try:
                    await a.send(data("s", "a", "b", i, (i, value)), 1.0)
                except TransportError as exc:
                    error = str(exc)
                    break
                accepted += 1
            assert error, "a never had to wait"
            held = b.buffered("a")
            assert held[1] <= 256 * 1024 + 17_000, held
            # b's program catches up: every envelope a was told was sent arrives, in order
            ep = Endpoint(b.open("s", "h", 10.0, ["a"]), {"a": "a"})
            got = [await ep.recv("a", f"f.py:{i}") for i in range(accepted)]
            # b resumes a once its backlog is down to half the bound (b looks every 20 ms)
            for _ in range(100):
                if not b.paused_peers:
                    break
                await asyncio.sleep(0.01)
            return accepted, error, got, b, a
        finally:
            await a.close(linger=2.0)
            await b.aclose()

    accepted, error, got, b, a = run(body())
    assert "it is not reading" in error
    assert got == [(i, value) for i in range(accepted)]
    assert b.paused_peers == [] and b.transport.stats.pauses >= 1  # type: ignore[attr-defined]
    assert b.dropped_overflow == 0 and a.stats.lost == 0


@pytest.mark.timeout(60)
def test_envelopes_of_a_session_never_opened_expire_and_the_sender_resumes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body() -> tuple[Node, list[Any]]:
        b = Node("b", GrpcTransport("b", "127.0.0.1:0"), max_buffered=20, pending_ttl=0.3)
        await b.start()
        address = b.transport.address  # type: ignore[attr-defined]
        a = GrpcTransport("a", "127.0.0.1:0", {"b": address})
        await a.start(Inbox().deliver)
        try:
            for i in range(100):
                await a.send(data("ghost", "a", "b", i, i), 30.0)
            for i in range(3):
                await a.send(data("real", "a", "b", i, i), 30.0)
            # every "ghost" envelope must be dropped (20 at a time) before "real" comes through
            ep = Endpoint(b.open("real", "h", 30.0, ["a"]), {"a": "a"})
            got = [await ep.recv("a", f"f.py:{i}") for i in range(3)]
            return b, got
        finally:
            await a.close(linger=2.0)
            await b.aclose()

    with caplog.at_level(logging.WARNING, logger="choreo.runtime"):
        b, got = run(body())
    assert got == [0, 1, 2]
    assert b.dropped_unknown == 100 and b.dropped_overflow == 0
    assert b.transport.stats.pauses >= 4  # type: ignore[attr-defined]
    assert any("session ghost, which was not opened here" in r.message for r in caplog.records)


def test_pending_envelopes_are_bounded_per_peer_without_back_pressure() -> None:
    async def body() -> tuple[Node, list[Any]]:
        net = LocalNetwork()  # cannot pause a peer: overflow is dropped
        b = Node("b", net.transport("b"), max_buffered=10)
        await b.start()
        for i in range(50):
            b.deliver(data("s", "x", "b", i, i))
        for i in range(5):
            b.deliver(data("s", "y", "b", i, -i))
        ep = Endpoint(b.open("s", "h", 1.0, ["x", "y"]), {"x": "x", "y": "y"})
        got = [await ep.recv("y", f"f.py:{i}") for i in range(5)]
        got += [await ep.recv("x", f"f.py:{i}") for i in range(20)]
        return b, got

    b, got = run(body())
    # x may not crowd y out: x's first 20 (twice the bound) are kept, y's 5 too
    assert got == [0, -1, -2, -3, -4, *range(20)]
    assert b.dropped_overflow == 30
    assert b.paused_peers == []


# -- unknown roles --------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_role_this_process_does_not_host_is_not_found(caplog: pytest.LogCaptureFixture) -> None:
    async def rejected(address: str, batches: list[Any], receiver: str) -> tuple[Any, str]:
        channel, call = await hello_stream(address, receiver=receiver)
        try:
            with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
                for batch in batches:
                    await call.write(batch)
                await call.done_writing()
            with contextlib.suppress(grpc.aio.AioRpcError):
                async for _ in call:
                    pass
            return await call.code(), await call.details()
        finally:
            await channel.close()

    async def body() -> tuple[Any, Any, list[Envelope]]:
        box = Inbox()
        b = GrpcTransport("b", "127.0.0.1:0")
        await b.start(box.deliver)
        address = str(b.address)
        a = GrpcTransport("a", "127.0.0.1:0", {"b": address})
        await a.start(Inbox().deliver)
        try:
            await a.send(data("s", "a", "b", 0, 0), 5.0)
            stream = await rejected(address, [], receiver="c")
            envelope = await rejected(
                address, [pb.Batch(envelopes=[raw_envelope(1, 3, receiver="c")])], receiver="b"
            )
            await a.send(data("s", "a", "b", 1, 1), 5.0)
            await box.wait_for(2)
            return stream, envelope, list(box.got)
        finally:
            await a.close(linger=2.0)
            await b.close()

    with caplog.at_level(logging.WARNING, logger="choreo.grpc"):
        stream, envelope, got = run(body())
    assert stream[0] == grpc.StatusCode.NOT_FOUND
    assert "serves role 'b', not 'c'" in stream[1]
    assert envelope[0] == grpc.StatusCode.NOT_FOUND
    assert "addressed to role 'c', which this process does not host" in envelope[1]
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "not 'c'" in logged and "does not host" in logged
    # the other stream's session was not disturbed
    assert [(e.session, _codec.decode(e.payload)) for e in got] == [("s", 0), ("s", 1)]


# -- sessions ---------------------------------------------------------------------


def test_a_node_opens_at_most_max_sessions() -> None:
    node = Node("b", LocalNetwork().transport("b"), max_sessions=2)
    node.open("s1", "h", 1.0)
    node.open("s2", "h", 1.0)
    with pytest.raises(TransportError, match="at its limit of 2 concurrent sessions"):
        node.open("s3", "h", 1.0)
    node.close("s1")
    node.open("s3", "h", 1.0)
    with pytest.raises(UsageError, match="max_sessions must be positive"):
        Node("b", LocalNetwork().transport("b"), max_sessions=0)


ECHO = """
from choreo import At, Role, choreography

@choreography
def echo(client: Role, server: Role, x: At[int, "client"]) -> At[int, "client"]:
    y = client.send(x, to=server)
    with server:
        z = y + 1
    w = server.send(z, to=client)
    return w
"""


@pytest.mark.timeout(90)
def test_a_start_over_max_sessions_is_refused_and_running_sessions_go_on() -> None:
    mod = choreo.module_from_source(ECHO, "echo_limits")
    chor = mod.echo

    async def body() -> tuple[str, Any, Any, choreo.Server]:
        server = choreo.Server(
            mod, "server", Cluster(roles={"server": "127.0.0.1:0"}), max_sessions=1, timeout=20
        )
        await server.start()
        cluster = Cluster(roles={"server": str(server.address)})
        # A session that holds the only slot: started by hand, its client silent for now.
        holder = Node("holder", GrpcTransport("holder", "127.0.0.1:0", dict(cluster.roles)))
        await holder.start()
        roles = {"client": "holder", "server": "server"}
        ctx = holder.open("held", chor.hash, 20.0, ["holder", "server"])
        start = {"roles": roles, "inputs": {}, "timeout": 20.0, "peers": ["holder", "server"]}
        await holder.transport.send(
            Envelope(
                "held", "holder", "server", chor.name, Kind.START, _codec.encode(start), chor.hash
            ),
            10.0,
        )
        try:
            for _ in range(500):
                if server.node._sessions:  # the held session is open at the server
                    break
                await asyncio.sleep(0.01)
            async with choreo.Client(cluster, timeout=10) as client:
                with pytest.raises(TransportError) as refused:
                    await client.run(chor, x=1)
                # the held session was not disturbed: it completes now
                held = await play_role(chor, "client", ctx, roles, (41,))
                holder.close("held")
                # and the slot is free again
                for _ in range(500):
                    if not server.node._sessions:
                        break
                    await asyncio.sleep(0.01)
                after = await client.run(chor, x=2)
            return str(refused.value), held, after, server
        finally:
            await holder.aclose()
            await server.close()

    message, held, after, server = run(body())
    assert "server is at its limit of 1 concurrent sessions (max_sessions)" in message
    assert held == 42
    assert after["client"] == 3
    assert server.sessions_refused == 1 and server.sessions_done == 2


def test_limits_from_the_cluster_file_and_the_command_line(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[roles]\nb = "127.0.0.1:5001"\n\n[limits]\nmax_sessions = 3\nmax_buffered_bytes = 1048576\n'
    )
    cluster = load_cluster(path)
    assert cluster.limits == {"max_sessions": 3, "max_buffered_bytes": 1048576}
    mod = choreo.module_from_source(ECHO, "echo_limits_cluster")
    server = choreo.Server(mod, "b", cluster)
    assert server.max_sessions == 3 and server.node.max_buffered_bytes == MiB
    assert choreo.Server(mod, "b", cluster, max_sessions=7).max_sessions == 7
    for bad in ("max_sessions = 0", "max_sessions = true", 'max_buffered = "10"', "max_queue = 1"):
        path.write_text(f'[roles]\nb = "127.0.0.1:5001"\n\n[limits]\n{bad}\n')
        with pytest.raises(UsageError, match=r"limits\."):
            load_cluster(path)
    args = build_parser().parse_args(
        ["serve", "f.py", "--role", "b", "--cluster", "c.toml", "--max-sessions", "5"]
    )
    assert args.max_sessions == 5
