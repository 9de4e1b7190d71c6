"""Fuzzing the gRPC wire: hostile ``Batch`` bytes against a running ``GrpcTransport``.

A role ``bob`` serves on 127.0.0.1 (port 0) on an event loop of its own, in a
background thread; role ``alice`` plays ping-pong with it all along (alice
sends, bob's ``deliver`` echoes the envelope back), counting round trips.
Meanwhile Hypothesis opens raw ``Connect`` streams to bob from a plain grpc
client and writes malformed, truncated, bit-flipped and hostile frames:
random bytes, ``Batch`` messages with odd hellos, kinds, sequence numbers,
senders, receivers and payloads. For every stream:

* it ends within a bound, with OK or a status that names a rejection (never
  ``UNKNOWN``, which is what an exception escaping the handler turns into,
  and never a deadline: the server must not hang on it);
* choreo logs no error (an unexpected exception in the server);
* the ping-pong between alice and bob keeps going: it makes progress across
  the stream, and no round trip ever fails.

Hostile senders never claim to be ``alice``: without mutual TLS, any client
may name any role in its ``Hello`` (``tests/test_tls.py`` covers that case).
The codec's own hostile-bytes tests are in ``tests/test_codec.py``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from choreo._envelope import Envelope, Kind
from choreo._grpc import GrpcTransport
from choreo._proto import transport_pb2 as pb

CONNECT = "/choreo.transport.Transport/Connect"
LIMIT = 4096  # bob's max_message_size: small, so that oversized envelopes are easy to make
ACCEPTABLE = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,  # a Hello or an envelope for a role bob does not host
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.INTERNAL,  # gRPC's answer to bytes that are not a Batch
    grpc.StatusCode.CANCELLED,  # the server ended the call after an error of its own
}


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Cluster:
    """bob's server, alice's ping-pong, on a loop in a background thread."""

    loop: asyncio.AbstractEventLoop
    address: str = ""
    rounds: int = 0
    failures: list[str] = field(default_factory=list)
    hostile_delivered: int = 0
    stop: asyncio.Event | None = None

    def call(self, coro: Any, timeout: float = 10.0) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)


async def _serve(c: Cluster, ready: threading.Event, done: threading.Event) -> None:
    c.stop = asyncio.Event()
    echoes: asyncio.Queue[Envelope] = asyncio.Queue()
    bob = GrpcTransport("bob", "127.0.0.1:0", max_message_size=LIMIT)
    alice = GrpcTransport("alice", "127.0.0.1:0")
    tasks: set[asyncio.Task[None]] = set()

    def bob_deliver(e: Envelope) -> None:
        if e.sender != "alice":
            c.hostile_delivered += 1
            return
        back = Envelope(e.session, "bob", "alice", e.label, Kind.DATA, e.payload, e.chash)
        task = asyncio.get_running_loop().create_task(bob.send(back, 5.0))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    await bob.start(bob_deliver)
    await alice.start(echoes.put_nowait)
    bob.add_peer("alice", str(alice.address))
    alice.add_peer("bob", str(bob.address))
    c.address = str(bob.address)

    async def ping_pong() -> None:
        i = 0
        while not c.stop.is_set():  # type: ignore[union-attr]
            i += 1
            label = f"ping.py:{i}"
            try:
                await alice.send(Envelope("legit", "alice", "bob", label, Kind.DATA, b"x", "h"), 5)
                got = await asyncio.wait_for(echoes.get(), 5)
            except Exception as exc:
                c.failures.append(f"round {i}: {type(exc).__name__}: {exc}")
                continue
            if got.label != label or got.sender != "bob" or got.session != "legit":
                c.failures.append(f"round {i}: got {got}")
            c.rounds += 1
            await asyncio.sleep(0.002)

    pinger = asyncio.get_running_loop().create_task(ping_pong())
    ready.set()
    await c.stop.wait()
    await pinger
    await alice.close(linger=2.0)
    await bob.close(linger=2.0)
    done.set()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    loop = asyncio.new_event_loop()
    c = Cluster(loop)
    ready, done = threading.Event(), threading.Event()
    errors = _Errors()
    logging.getLogger("choreo").addHandler(errors)

    def main() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(_serve(c, ready, done))

    thread = threading.Thread(target=main, name="wire-fuzz-server", daemon=True)
    thread.start()
    assert ready.wait(10), "the server did not start"
    try:
        yield c
    finally:
        assert c.stop is not None
        loop.call_soon_threadsafe(c.stop.set)
        thread.join(15)
        logging.getLogger("choreo").removeHandler(errors)
        alive = thread.is_alive()
        if not alive:
            loop.close()
        assert not alive, "the server thread did not stop"
    assert not [r for r in errors.records if r.name.startswith("choreo")], [
        r.getMessage() for r in errors.records
    ]
    assert not c.failures, c.failures


# -- hostile frames -------------------------------------------------------------

names = st.sampled_from(["bob", "mallory", "", "x" * 300, "bob\x00", "ünï", "carol.0"])
uint64 = st.one_of(st.integers(0, 5), st.integers(0, 2**64 - 1))


@st.composite
def envelopes(draw: st.DrawFn) -> pb.Envelope:
    return pb.Envelope(
        session=draw(st.sampled_from(["s", "legit", "", "z" * 1000])),
        sender=draw(st.sampled_from(["mallory", "mallory", "bob", ""])),
        receiver=draw(st.sampled_from(["bob", "bob", "alice", ""])),
        label=draw(st.text(max_size=20)),
        kind=draw(st.one_of(st.integers(0, 5), st.integers(0, 2**32 - 1))),
        payload=draw(st.one_of(st.binary(max_size=64), st.just(b"p" * (LIMIT + 1)))),
        chash=draw(st.text(max_size=8)),
        seq=draw(uint64),
    )


@st.composite
def batches(draw: st.DrawFn) -> pb.Batch:
    b = pb.Batch()
    if draw(st.booleans()):
        b.hello.CopyFrom(
            pb.Hello(
                sender=draw(names),
                receiver=draw(st.sampled_from(["bob", "bob", "alice", ""])),
                incarnation=draw(st.sampled_from(["i1", "i2", ""])),
                address=draw(st.sampled_from(["", "127.0.0.1:1", "nonsense", "[::1", ":0"])),
            )
        )
    b.envelopes.extend(draw(st.lists(envelopes(), max_size=4)))
    return b


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """One gRPC message's bytes: a Batch, maybe damaged, or random bytes."""
    how = draw(st.sampled_from(["batch", "batch", "truncated", "flipped", "random"]))
    if how == "random":
        return draw(st.binary(max_size=200))
    data = draw(batches()).SerializeToString()
    if how == "truncated" and data:
        return data[: draw(st.integers(0, len(data) - 1))]
    if how == "flipped" and data:
        out = bytearray(data)
        for bit in draw(st.lists(st.integers(0, len(data) * 8 - 1), min_size=1, max_size=4)):
            out[bit // 8] ^= 1 << (bit % 8)
        return bytes(out)
    return data


def claims_alice(frame: bytes) -> bool:
    """Whether ``frame`` parses as a Batch that names alice as a sender."""
    try:
        b = pb.Batch.FromString(frame)
    except Exception:
        return False
    return b.hello.sender.startswith("alice") or any(
        e.sender.startswith("alice") for e in b.envelopes
    )


def hello(sender: str = "mallory") -> bytes:
    return pb.Batch(
        hello=pb.Hello(sender=sender, receiver="bob", incarnation="i")
    ).SerializeToString()


streams = st.lists(frames(), min_size=1, max_size=5).filter(
    lambda fs: not any(claims_alice(f) for f in fs)
)


def send_raw(address: str, frames: list[bytes]) -> grpc.StatusCode:
    """Write ``frames`` on one raw Connect stream and read it to the end; its final status."""
    with grpc.insecure_channel(address) as channel:
        method = channel.stream_stream(
            CONNECT, request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        call = method(iter(frames), timeout=10.0)
        try:
            for _ in call:
                pass
        except grpc.RpcError:
            pass
        code: grpc.StatusCode = call.code()
        return code


def assert_alive(c: Cluster, since: int) -> None:
    """The ping-pong made progress since ``since`` round trips (waits up to 5 s)."""
    for _ in range(500):
        if c.rounds > since:
            break
        threading.Event().wait(0.01)
    assert c.rounds > since, "the legitimate session stopped making progress"
    assert not c.failures, c.failures


# -- tests ------------------------------------------------------------------------


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(frames=streams, with_hello=st.booleans())
def test_hostile_streams_are_rejected_or_ignored(
    cluster: Cluster, frames: list[bytes], with_hello: bool
) -> None:
    before = cluster.rounds
    if with_hello:  # past the handshake, so the envelopes themselves are looked at
        frames = [hello(), *frames]
    code = send_raw(cluster.address, frames)
    assert code in ACCEPTABLE, f"{code} for {frames!r}"
    assert_alive(cluster, before)


def test_well_formed_hostile_envelopes_are_delivered_only_as_their_sender(
    cluster: Cluster,
) -> None:
    """A stranger's well-formed envelopes reach bob as the stranger's, never as alice's."""
    before, delivered = cluster.rounds, cluster.hostile_delivered
    env = pb.Envelope(session="s", sender="eve", receiver="bob", label="l", kind=0, seq=1)
    ok = pb.Batch(envelopes=[env]).SerializeToString()
    forged = pb.Batch(
        envelopes=[pb.Envelope(session="legit", sender="alice", receiver="bob", label="l", seq=2)]
    ).SerializeToString()
    assert send_raw(cluster.address, [hello("eve"), ok]) == grpc.StatusCode.OK
    # An envelope whose sender differs from the stream's Hello ends the stream.
    assert send_raw(cluster.address, [hello("eve"), forged]) == grpc.StatusCode.INVALID_ARGUMENT
    assert cluster.hostile_delivered == delivered + 1
    assert_alive(cluster, before)


def test_many_concurrent_hostile_streams(cluster: Cluster) -> None:
    """Thirty garbage streams at once: all answered, the session keeps going."""
    before = cluster.rounds
    garbage = [b"\xff" * 7, b"\x0a\x80", hello("eve") + b"\x12\xff\xff\xff\xff\x0f", b""]
    results: list[grpc.StatusCode] = []

    def worker(i: int) -> None:
        results.append(send_raw(cluster.address, [hello(f"m{i}"), garbage[i % len(garbage)]]))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(results) == 30 and set(results) <= ACCEPTABLE, results
    assert_alive(cluster, before)
