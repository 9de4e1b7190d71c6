"""The gRPC transport: one long-lived bidi stream per ordered pair of roles.

Wire (``choreo/_proto/transport.proto``)
----------------------------------------
Every role process runs one ``grpc.aio`` server with one method,
``Transport.Connect(stream Batch) returns (stream Ack)``, plus the standard
``grpc.health.v1`` service (status SERVING). A role that sends to a peer opens
ONE stream to that peer's server on its first send and keeps it: role A's
envelopes to B travel on A's stream to B, B's envelopes to A on B's stream to
A. The first ``Batch`` on a stream carries only a ``Hello`` (sender role,
expected receiver role, the sender's *incarnation* id, its own address); the
receiver answers at once with an ``Ack``.

Batching (PERF-NOTES: the cost is per gRPC message, not per byte): each peer
has an outgoing queue, and at most one write in flight on its stream (gRPC
allows no more). ``send`` appends to the queue; if no write is in flight, it
starts one at once, before it returns, with *everything* queued (up to one
maximum-size message) as one ``Batch``; when a write completes, the next one
takes everything queued meanwhile. So a lone envelope leaves at once (no hop
to another task: its bytes are in gRPC's hands when ``send`` returns), and
envelopes sent while a write is in flight, or by one task in a row without
waiting, leave together. ``send`` never waits for the write to complete (that
would make a single session's one-way throughput 5-10x lower, measured with
``bench/transport.py``): the write is started the way a task would start it
(``_drive``) and completes in the background. A writer task per peer does the
rest: it connects, shakes hands, retransmits after a reconnect, and half-closes
the stream on ``close()``.

Delivery guarantees
-------------------
* FIFO per ordered pair: one write in flight per pair, one stream at a time,
  and the receiver delivers envelopes in the order of their sequence numbers.
* Sequence numbers and acks make a reconnect lossless and duplicate-free. Each
  transport instance draws a random incarnation id; towards each peer it
  numbers its envelopes 1, 2, 3, ... An envelope stays in the sender's
  ``unacked`` list after it is written, until the receiver acknowledges it.
  The receiver keeps, per sending role, the sender's incarnation and the
  highest sequence number delivered; it delivers an envelope only if its
  number is higher (so a retransmitted envelope is dropped, and counted), and
  acknowledges that number: right after the ``Hello``, then coalesced (at most
  every ``ack_delay`` seconds, or at once after ``ack_every`` envelopes), and
  a last time when the stream ends. On a reconnect the sender first reads the
  receiver's ``Ack`` (what it has delivered of this incarnation), drops those,
  and retransmits the rest in order before anything newer.
* A receiver that is *closed* (``close()``) stops delivering, then sends a
  final ``Ack`` for exactly what it delivered before it ends the stream; so a
  receiver restarted on the same address (a new incarnation, knowing nothing)
  gets exactly the envelopes its predecessor did not: none lost, none twice.
  A receiver that *crashes* cannot say what it delivered after its last ack:
  its successor may then receive again envelopes the dead process had
  received (at least once across a crash, exactly once otherwise).
* A sender that restarts is a new incarnation: the receiver starts a new
  sequence for it.

Failures and deadlines
----------------------
``send(env, timeout)`` returns as soon as the envelope is queued when the
stream to the peer is up and the queue is below ``max_queued_bytes``.
Otherwise it waits until the writer has written the envelope to a stream, and
raises ``TransportError`` naming the peer, its address and the last connection
error if that did not happen within ``timeout`` seconds (the envelope is then
withdrawn, never sent later). Meanwhile the writer reconnects with exponential
backoff (20 ms doubling to 1 s), a fresh channel per attempt, so the schedule
is ours and not the channel's. An envelope accepted while the stream was up
but lost with it is retransmitted on reconnect; if the peer stays unreachable
until that envelope's own deadline it is dropped, counted in ``stats.lost``,
logged and reported to ``on_lost``, and the next ``send`` to that peer raises
``TransportError`` naming it (FIFO to that peer is broken from then on: the
receiver sees a gap in the sequence, logs it and counts it in ``stats.gaps``).
There is an unavoidable window: a send right after the peer died, before the
stream's end has reached this process, is accepted and then reported this way.

A stream ended by the receiver with a status that retrying cannot fix
(wrong role at that address, message too large, permission denied) fails every
envelope waiting for it at once, with that status in the message.

Limits: ``max_message_size`` bounds one envelope's payload (default 4 MiB).
The sender rejects a larger payload with ``TransportError`` before queueing it;
the receiver's gRPC limit is that size plus room for the envelope header, and
a payload over the limit inside a ``Batch`` (only a foreign or misconfigured
sender can produce one) ends that one stream with ``RESOURCE_EXHAUSTED``;
other streams, and so other peers' sessions, are unaffected. A ``Hello`` or an
envelope for a role this process does not host ends its stream with
``NOT_FOUND`` (logged; the sender fails at once, it does not retry).

Back-pressure: the receiving ``Node`` calls ``pause_peer(role)`` when it holds
as much from ``role`` as it may (``Node``'s ``max_buffered`` bounds), and
``resume_peer(role)`` once its program has caught up. While a role is paused
its streams are not read, between two envelopes: the rest of the current
batch waits in this transport (one message at most), the rest of the stream
in gRPC's flow-control window, whose HTTP/2 ``WINDOW_UPDATE`` s stop, so the
sender's writes stop completing, its queue grows, and its ``send`` waits once
the queue holds ``max_queued_bytes``, then fails after its deadline ("it is
not reading"). Nothing is dropped: what was not delivered is not acknowledged.

``close()`` first flushes: every writer finishes its queue and waits for the
final ``Ack`` (bounded by the envelopes' deadlines, or by ``linger``); then
the server stops delivering, acknowledges, and shuts down.

Everything runs on the event loop that called ``start()``; ``deliver`` is
called on it, one envelope at a time. grpc's exceptions never leave this
module: they become ``TransportError`` (or gRPC statuses towards peers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from choreo._cluster import check_address
from choreo._envelope import Envelope, Kind
from choreo._errors import TransportError, UsageError
from choreo._proto import transport_pb2 as pb
from choreo._tls import TlsConfig, dns_name, peer_identity
from choreo._transport import DEFAULT_MAX_MESSAGE_SIZE, Deliver, Transport

__all__ = ["DEFAULT_MAX_MESSAGE_SIZE", "GrpcStats", "GrpcTransport"]

log = logging.getLogger("choreo.grpc")

#: Default bound on one envelope's payload, in bytes.
#: Bound on an envelope's header strings (session, roles, label, hash), in bytes.
_MAX_HEADER = 16 * 1024
#: Room the receiver's gRPC limit leaves above ``max_message_size``.
_SLACK = 64 * 1024
#: Protobuf framing of one envelope inside a batch, generously.
_OVERHEAD = 64

_BACKOFF_MIN = 0.02
_BACKOFF_MAX = 1.0

#: Statuses that retrying the same stream cannot cure.
_FATAL = frozenset(
    {
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)

_KINDS = {int(k): k for k in Kind}
_SERVICE = "choreo.transport.Transport"
_CONNECT = f"/{_SERVICE}/Connect"


@dataclass(slots=True)
class GrpcStats:
    """Counters of one ``GrpcTransport`` (for tests, benchmarks and logs).

    Attributes:
        batches_sent: gRPC messages carrying envelopes written to peers.
        envelopes_sent: envelopes written (a retransmitted one counts again).
        batches_received: gRPC messages carrying envelopes read from peers.
        envelopes_received: envelopes delivered to ``deliver``.
        acks_sent: ``Ack`` messages written to peers.
        duplicates: envelopes received again (after a reconnect) and dropped.
        gaps: times a sender's sequence jumped (envelopes it dropped as lost).
        retransmitted: envelopes written again after a reconnect.
        connects: streams opened to peers (the first one and every reconnect).
        lost: envelopes dropped at the sender after being accepted, because the
            peer stayed unreachable past their deadline.
        pauses: times a sending role was paused (``pause_peer``): its streams
            were left unread until the receiving program caught up.
    """

    batches_sent: int = 0
    envelopes_sent: int = 0
    batches_received: int = 0
    envelopes_received: int = 0
    acks_sent: int = 0
    duplicates: int = 0
    gaps: int = 0
    retransmitted: int = 0
    connects: int = 0
    lost: int = 0
    pauses: int = 0


class _Out:
    """One outgoing envelope: its number, deadline, size, and maybe a waiting send."""

    __slots__ = ("deadline", "env", "seq", "size", "timeout", "waiter", "written")

    def __init__(self, seq: int, env: Envelope, timeout: float, deadline: float, size: int) -> None:
        self.seq = seq
        self.env = env
        self.timeout = timeout
        self.deadline = deadline
        self.size = size
        #: resolved with None once written, or with the error that stopped it
        self.waiter: asyncio.Future[TransportError | None] | None = None
        self.written = False


class _StreamError(Exception):
    """A stream to a peer failed; ``fatal`` when reconnecting cannot help."""

    def __init__(self, text: str, fatal: bool = False) -> None:
        super().__init__(text)
        self.fatal = fatal


class _Peer:
    """Sending state towards one peer role."""

    def __init__(self, role: str, address: str) -> None:
        self.role = role
        self.address = address
        self.queue: deque[_Out] = deque()  # not yet written on the current stream
        self.unacked: deque[_Out] = deque()  # written, not yet acknowledged
        self.queued_bytes = 0
        self.next_seq = 1
        self.wake = asyncio.Event()  # something to write, or the stream's reader ended
        self.poke = asyncio.Event()  # cut a backoff short: close() began or a send gave up
        self.task: asyncio.Task[None] | None = None
        self.connected = False
        #: the current stream, once its handshake is done (writes go straight to it)
        self.call: Any = None
        #: a write on ``call`` has not completed yet (gRPC allows one at a time), and its size
        self.inflight = False
        self.inflight_bytes = 0
        #: a ``_pump`` is scheduled for the end of this event-loop turn
        self.pump_soon = False
        #: why the last write on ``call`` failed, for the writer task to raise
        self.write_error: Exception | None = None
        self.last_error = ""
        self.remote_incarnation = ""
        #: an envelope send() had accepted was dropped: the next send raises this
        self.lost: TransportError | None = None


def _drive(coro: Coroutine[Any, Any, None], done: Callable[[Exception | None], None]) -> None:
    """Run ``coro`` at once up to its first suspension, then on from its futures' callbacks.

    An eager task without the task (Python 3.11 has no eager task factory): a
    gRPC write started here hands its message to gRPC's core before this
    returns, instead of one event-loop iteration later in a task of its own.
    ``done`` is called once with ``None`` or with the exception ``coro`` raised
    (a cancellation becomes a ``_StreamError``).
    """

    def step(_: object = None) -> None:
        try:
            yielded = coro.send(None)
        except StopIteration:
            done(None)
            return
        except asyncio.CancelledError:
            done(_StreamError("the write was cancelled"))
            return
        except Exception as exc:
            done(exc)
            return
        if yielded is None:  # a bare yield (asyncio.sleep(0)): resume on the next iteration
            asyncio.get_running_loop().call_soon(step)
            return
        yielded._asyncio_future_blocking = False  # what a Task does with the future it awaits
        yielded.add_done_callback(step)

    step()


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _Inbound:
    """Receiving state for one sending role: its incarnation and what was delivered."""

    __slots__ = ("delivered", "generation", "incarnation")

    def __init__(self, incarnation: str) -> None:
        self.incarnation = incarnation
        self.delivered = 0
        self.generation = 0


class _Reject(Exception):
    """Ends one inbound stream with a gRPC status."""

    def __init__(self, code: Any, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class _Link:
    """One inbound stream being served."""

    __slots__ = ("acked", "event", "generation", "sender", "state", "unacked")

    def __init__(self, sender: str, state: _Inbound) -> None:
        self.sender = sender
        self.state = state
        self.generation = state.generation
        self.event = asyncio.Event()
        self.acked = state.delivered
        self.unacked = 0  # envelopes delivered since the last ack


async def _read(context: Any) -> Any:
    """The next ``Batch`` of an inbound stream, or ``grpc.aio.EOF``.

    Raises:
        _Reject: the frame is not a ``Batch`` (INVALID_ARGUMENT).
    """
    data = await context.read()
    if data is grpc.aio.EOF:
        return data
    return _parse(data)


def _parse(data: bytes) -> Any:
    """One frame of an inbound stream as a ``Batch``.

    Raises:
        _Reject: the frame is not a ``Batch`` (INVALID_ARGUMENT).
    """
    try:
        return pb.Batch.FromString(data)
    except DecodeError:
        raise _Reject(
            grpc.StatusCode.INVALID_ARGUMENT, f"a frame of {len(data)} bytes is not a Batch"
        ) from None


def _describe(exc: BaseException) -> str:
    """A one-line account of a grpc (or other) exception."""
    if isinstance(exc, grpc.aio.AioRpcError):
        code = exc.code()
        name = code.name if code is not None else "UNKNOWN"
        return f"{name}: {exc.details() or 'no details'}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class GrpcTransport(Transport):
    """A ``Transport`` over gRPC (``grpc.aio``): one bidi stream per ordered role pair.

    Args:
        role: the role (or group member) this transport receives for and sends as.
        listen: ``"host:port"`` to serve on (port 0 picks a free port, see
            ``port`` and ``address`` after ``start()``), or ``None`` to only send.
        peers: peer role -> ``"host:port"``; more can be added with ``add_peer``.
        max_message_size: largest envelope payload accepted, in bytes.
        max_queued_bytes: above this many bytes queued for one peer, ``send``
            waits until its envelope is written (back-pressure).
        advertise: the address peers should use to reach this role (sent in
            the ``Hello``); defaults to the bound address unless the listen
            host is a wildcard.
        learn_peers: add the advertised address of a role that connects to us
            and is not in ``peers`` yet (a client joining a running cluster).
        ack_delay: longest time a receiver holds back an acknowledgement.
        ack_every: acknowledge at once after this many envelopes.
        connect_timeout: bound on one connection attempt, in seconds.
        on_lost: called with an envelope that ``send`` had accepted but that
            could not be delivered before its deadline, and the error.
        tls: serve and connect over TLS (``None``: plaintext). With mutual
            TLS a peer may only send as the role its certificate names: a
            ``Hello`` naming another sender ends that stream with
            ``PERMISSION_DENIED`` (see ``choreo._tls``).

    Raises:
        UsageError: an address is malformed or a limit is not positive.
    """

    def __init__(
        self,
        role: str,
        listen: str | None,
        peers: Mapping[str, str] | None = None,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_queued_bytes: int = 64 * 1024 * 1024,
        advertise: str | None = None,
        learn_peers: bool = True,
        ack_delay: float = 0.01,
        ack_every: int = 256,
        connect_timeout: float = 5.0,
        on_lost: Callable[[Envelope, TransportError], None] | None = None,
        tls: TlsConfig | None = None,
    ) -> None:
        if max_message_size <= 0 or max_queued_bytes <= 0 or ack_every <= 0:
            raise UsageError("GrpcTransport: sizes and ack_every must be positive")
        if listen is not None:
            check_address(listen, f"listen address of {role}", allow_port_zero=True)
        self.role = role
        self.listen = listen
        self.max_message_size = max_message_size
        self.max_queued_bytes = max_queued_bytes
        self.advertise = advertise
        self.learn_peers = learn_peers
        self.ack_delay = ack_delay
        self.ack_every = ack_every
        self.connect_timeout = connect_timeout
        self.on_lost = on_lost
        self.tls = tls
        self._channel_credentials = tls.channel_credentials() if tls is not None else None
        #: the bound port, after ``start()`` (``None`` without ``listen``)
        self.port: int | None = None
        #: ``host:port`` peers can reach this role at, after ``start()``
        self.address: str | None = None
        #: random id of this instance (sequence numbers restart with it)
        self.incarnation = secrets.token_hex(8)
        self.stats = GrpcStats()
        self._limit = max_message_size + _SLACK
        self._peers: dict[str, _Peer] = {}
        for name, addr in (peers or {}).items():
            self.add_peer(name, addr)
        self._deliver: Deliver | None = None
        self._server: Any = None
        self._health: Any = None
        self._inbound: dict[str, _Inbound] = {}
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Future[Any]] = set()
        #: sending roles whose streams are not read now (back-pressure), and the event
        #: that ``resume_peer`` sets
        self._paused: dict[str, asyncio.Event] = {}
        self._flushing = False  # close() began: writers end once their queues are empty
        self._stopping = False  # the server no longer delivers
        self._stop_event = asyncio.Event()  # set with _stopping
        self._closed = False
        #: the event loop of ``start()`` (everything runs on it)
        self._loop: asyncio.AbstractEventLoop | None = None
        #: the ack timers of ``_serve`` that are waiting: shutdown ends them early
        self._ack_waits: set[asyncio.Future[None]] = set()
        self._channel_options = [
            ("grpc.max_send_message_length", self._limit),
            ("grpc.max_receive_message_length", self._limit),
            ("grpc.use_local_subchannel_pool", 1),
            ("grpc.enable_retries", 0),
        ]

    # -- peers ---------------------------------------------------------------

    def add_peer(self, role: str, address: str) -> None:
        """Tell this transport where ``role`` listens (or move it).

        A moved address is used from the next connection attempt on.

        Args:
            role: the peer's role name.
            address: ``"host:port"``.

        Raises:
            UsageError: ``address`` is malformed.
        """
        check_address(address, f"address of role {role!r}")
        peer = self._peers.get(role)
        if peer is None:
            self._peers[role] = _Peer(role, address)
        else:
            peer.address = address

    @property
    def peers(self) -> dict[str, str]:
        """Every known peer role and its address."""
        return {role: p.address for role, p in self._peers.items()}

    @property
    def connected_peers(self) -> list[str]:
        """The roles whose streams to this transport are open now (sorted)."""
        return sorted({link.sender for link in self._links})

    # -- back-pressure ---------------------------------------------------------

    def pause_peer(self, role: str) -> None:
        """Deliver nothing more from ``role`` until ``resume_peer(role)``.

        Called by the receiving ``Node`` (from inside ``deliver``) when it holds
        as much from ``role`` as it may. The streams from ``role`` are then not
        read: what they carry waits in gRPC's flow-control window (HTTP/2 stops
        the sender), then in the sender's queue, whose ``send`` waits once it
        holds ``max_queued_bytes`` and fails after its deadline. Nothing is
        lost or reordered; what was not delivered is not acknowledged.
        """
        if role not in self._paused:
            self._paused[role] = asyncio.Event()
            self.stats.pauses += 1
            log.info("%s: paused reading from %s (its envelopes are not taken fast enough)",
                     self.role, role)  # fmt: skip

    def resume_peer(self, role: str) -> None:
        """Read and deliver from ``role`` again (undoes ``pause_peer``)."""
        event = self._paused.pop(role, None)
        if event is not None:
            event.set()
            log.info("%s: resumed reading from %s", self.role, role)

    @property
    def paused_peers(self) -> list[str]:
        """The sending roles whose streams are not read now (sorted)."""
        return sorted(self._paused)

    # -- Transport -----------------------------------------------------------

    async def start(self, deliver: Deliver) -> None:
        """Start serving: bind ``listen``, register the health service.

        Args:
            deliver: called with every inbound envelope, on this event loop.

        Raises:
            TransportError: the address cannot be bound.
            UsageError: the transport was already started or closed.
        """
        if self._deliver is not None or self._closed:
            raise UsageError(f"GrpcTransport for {self.role} was already started")
        self._deliver = deliver
        self._loop = asyncio.get_running_loop()
        if self.listen is None:
            return
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self._limit),
                ("grpc.max_send_message_length", self._limit),
                ("grpc.so_reuseport", 0),
            ]
        )
        connect = grpc.stream_stream_rpc_method_handler(
            self._serve,
            # bytes: a frame that is not a Batch is rejected by us (_read), not by grpc
            request_deserializer=None,
            response_serializer=pb.Ack.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(_SERVICE, {"Connect": connect}),)
        )
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        try:
            if self.tls is not None:
                port = server.add_secure_port(self.listen, self.tls.server_credentials())
            else:
                port = server.add_insecure_port(self.listen)
        except RuntimeError as exc:
            await server.stop(None)
            raise TransportError(
                f"{self.role} cannot listen on {self.listen}: {exc} (is the port in use?)"
            ) from None
        if not port:
            await server.stop(None)
            raise TransportError(
                f"{self.role} cannot listen on {self.listen} (is the port in use?)"
            )
        host = self.listen.rpartition(":")[0]
        self.port = port
        self.address = f"{host}:{port}"
        if self.advertise is None and host not in ("0.0.0.0", "[::]", ""):
            self.advertise = self.address
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self._health.set(_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        await server.start()
        self._server = server

    async def send(self, env: Envelope, timeout: float) -> None:
        """Queue ``env`` for ``env.receiver``; wait only while the peer is not connected.

        Args:
            env: the envelope; ``env.receiver`` must be a known peer.
            timeout: seconds the envelope may take to reach a stream to the peer.

        Raises:
            TransportError: the transport is closed, the receiver has no
                address, the payload exceeds ``max_message_size``, or the peer
                could not be reached within ``timeout`` seconds.
        """
        if self._closed or self._flushing:
            raise TransportError(f"the transport of {self.role} is closed")
        peer = self._peers.get(env.receiver)
        if peer is None:
            known = ", ".join(sorted(self._peers)) or "none"
            raise TransportError(
                f"{self.role} has no address for role {env.receiver!r} (known peers: {known})"
            )
        lost = peer.lost
        if lost is not None:
            peer.lost = None
            raise lost
        size = len(env.payload)
        if size > self.max_message_size:
            raise TransportError(
                f"envelope {env.label} of session {env.session} has a payload of {size} bytes, "
                f"over the limit of {self.max_message_size} bytes (max_message_size)"
            )
        header = len(env.session) + len(env.sender) + len(env.receiver)
        header += len(env.label) + len(env.chash)
        if header * 4 > _MAX_HEADER:
            raise TransportError(
                f"envelope {env.label[:80]} has header strings (session, roles, label, hash) "
                f"of {header} characters, over the limit of {_MAX_HEADER // 4}"
            )
        loop = self._loop or asyncio.get_running_loop()
        out = _Out(
            peer.next_seq, env, timeout, loop.time() + timeout, size + header * 4 + _OVERHEAD
        )
        peer.next_seq += 1
        peer.queue.append(out)
        peer.queued_bytes += out.size
        if peer.call is not None:
            if not peer.inflight and not peer.pump_soon:
                # The stream is idle: write as soon as the sender yields, together with
                # whatever else it sends to this peer before that (a START and the first
                # message of a session, a Prepare to every acceptor then its decision...):
                # one gRPC message instead of a write and a wait for it per envelope.
                peer.pump_soon = True
                loop.call_soon(self._pump_soon, peer)
        elif peer.task is None:
            peer.task = loop.create_task(self._run_peer(peer), name=f"choreo-grpc-{peer.role}")
        else:
            peer.wake.set()
        if peer.connected and peer.queued_bytes <= self.max_queued_bytes:
            return
        waiter: asyncio.Future[TransportError | None] = loop.create_future()
        out.waiter = waiter
        done, _ = await asyncio.wait((waiter,), timeout=max(timeout, 0.0))
        if done:
            error = waiter.result()
            if error is not None:
                raise error
            return
        error = self._unreachable(peer, timeout, out.written)  # before the queue shrinks
        # Not written in time: withdraw it, so that it is never sent after we said it failed.
        with contextlib.suppress(ValueError):
            peer.queue.remove(out)
            peer.queued_bytes -= out.size
        out.waiter = None
        peer.poke.set()
        raise error

    async def close(self, linger: float | None = None) -> None:
        """Flush what was sent, then stop serving and release everything; idempotent.

        Args:
            linger: longest wait for queued envelopes to be delivered; by
                default, until the last queued envelope's own deadline.
        """
        if self._closed:
            return
        self._flushing = True
        loop = asyncio.get_running_loop()
        writers = [p.task for p in self._peers.values() if p.task is not None]
        if writers:
            if linger is None:
                now = loop.time()
                pending = [o.deadline for p in self._peers.values() for o in (*p.queue, *p.unacked)]
                linger = max(pending, default=now) - now + 2 * _BACKOFF_MAX
            for p in self._peers.values():
                p.wake.set()
                p.poke.set()
            _, late = await asyncio.wait(writers, timeout=max(linger, 0.0))
            for task in late:
                task.cancel()
            for result in await asyncio.gather(*writers, return_exceptions=True):
                if isinstance(result, Exception):
                    log.error("%s: a writer task failed", self.role, exc_info=result)
        self._closed = True
        await self._stop_server()

    # -- sending -------------------------------------------------------------

    def _unreachable(self, peer: _Peer, timeout: float, written: bool = False) -> TransportError:
        why = peer.last_error or ("not connected yet" if not written else "connection lost")
        if peer.connected and (peer.inflight or peer.queued_bytes > self.max_queued_bytes):
            # the stream is up and gRPC's flow control holds our writes back
            waiting = peer.queued_bytes + peer.inflight_bytes
            why = f"it is not reading ({waiting} bytes wait to be sent to it)"
        return TransportError(
            f"peer {peer.role} at {peer.address} could not be reached within {timeout:g}s ({why})"
        )

    async def _run_peer(self, peer: _Peer) -> None:
        """The writer: (re)connects to ``peer`` and writes its queue, until close."""
        backoff = _BACKOFF_MIN
        while True:
            if not peer.queue and not peer.unacked:
                if self._flushing:
                    return
                peer.wake.clear()
                await peer.wake.wait()
                continue
            progress = False
            try:
                progress = await self._stream(peer)
            except _StreamError as exc:
                peer.last_error = str(exc)
                if exc.fatal:
                    self._fail_all(peer, exc)
            peer.connected = False
            if progress:
                backoff = _BACKOFF_MIN
            self._expire(peer, asyncio.get_running_loop().time())
            if not peer.queue and not peer.unacked:
                continue
            peer.poke.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(peer.poke.wait(), backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)
            self._expire(peer, asyncio.get_running_loop().time())

    def _fail_all(self, peer: _Peer, exc: _StreamError) -> None:
        error = TransportError(f"peer {peer.role} at {peer.address} refused the stream: {exc}")
        for out in (*peer.unacked, *peer.queue):
            self._drop(peer, out, error)
        peer.unacked.clear()
        peer.queue.clear()
        peer.queued_bytes = 0

    def _expire(self, peer: _Peer, now: float) -> None:
        """Drop the envelopes whose deadline passed while the peer was unreachable."""
        for name in ("unacked", "queue"):
            items: deque[_Out] = getattr(peer, name)
            if not any(o.deadline <= now for o in items):
                continue
            keep: deque[_Out] = deque()
            for out in items:
                if out.deadline > now:
                    keep.append(out)
                    continue
                if name == "queue":
                    peer.queued_bytes -= out.size
                self._drop(peer, out, self._unreachable(peer, out.timeout, out.written))
            setattr(peer, name, keep)

    def _drop(self, peer: _Peer, out: _Out, error: TransportError) -> None:
        waiter = out.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(error)  # its send() is still waiting: it raises the error
            return
        self.stats.lost += 1
        env = out.env
        if peer.lost is None:
            peer.lost = TransportError(
                f"envelope {env.label} of session {env.session}, sent earlier, was lost: {error}"
            )
        log.warning(
            "%s: dropped envelope %s of session %s to %s: %s",
            self.role,
            env.label,
            env.session,
            env.receiver,
            error,
        )
        if self.on_lost is not None:
            try:
                self.on_lost(env, error)
            except Exception:
                log.exception("on_lost callback raised")

    def _acked(self, peer: _Peer, delivered: int) -> None:
        unacked = peer.unacked
        while unacked and unacked[0].seq <= delivered:
            out = unacked.popleft()
            waiter = out.waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    async def _stream(self, peer: _Peer) -> bool:
        """One stream to ``peer``: handshake, retransmit, then write batches until it ends.

        Returns:
            Whether the stream got as far as the receiver's first ``Ack``.

        Raises:
            _StreamError: the stream could not be opened, or broke.
        """
        self.stats.connects += 1
        if self._channel_credentials is not None:
            # the peer's certificate must name the role we mean to reach, whatever its address
            options = [
                *self._channel_options,
                ("grpc.ssl_target_name_override", dns_name(peer.role)),
            ]
            channel = grpc.aio.secure_channel(peer.address, self._channel_credentials, options)
        else:
            channel = grpc.aio.insecure_channel(peer.address, options=self._channel_options)
        call: Any = None
        reader: asyncio.Task[None] | None = None
        try:
            call = channel.stream_stream(
                _CONNECT,
                request_serializer=pb.Batch.SerializeToString,
                response_deserializer=pb.Ack.FromString,
            )()
            hello = pb.Hello(
                sender=self.role,
                receiver=peer.role,
                incarnation=self.incarnation,
                address=self.advertise or "",
            )
            await call.write(pb.Batch(hello=hello))
            first = await asyncio.wait_for(call.read(), self.connect_timeout)
            if first is grpc.aio.EOF:
                raise _StreamError(await self._status(call), fatal=await self._fatal(call))
            self._resync(peer, first)
            peer.connected = True
            peer.last_error = ""
            reader = asyncio.get_running_loop().create_task(self._read_acks(peer, call))
            reader.add_done_callback(lambda _: peer.wake.set())
            await self._write_loop(peer, call, reader)
            return True
        except _StreamError:
            raise
        except grpc.aio.AioRpcError as exc:
            raise _StreamError(_describe(exc), fatal=exc.code() in _FATAL) from None
        except Exception as exc:  # grpc raises a few non-grpc types (InvalidStateError...)
            raise _StreamError(_describe(exc)) from None
        finally:
            peer.connected = False
            peer.call = None  # a write still in flight on it completes unheeded
            peer.inflight = False
            peer.inflight_bytes = 0
            peer.write_error = None
            if reader is not None and not reader.done():
                reader.cancel()
            if reader is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader
            if call is not None:
                call.cancel()
            await channel.close()

    async def _status(self, call: Any) -> str:
        code = await call.code()
        details = await call.details()
        if code == grpc.StatusCode.OK:
            return "the peer ended the stream"
        return f"{code.name}: {details or 'no details'}"

    async def _fatal(self, call: Any) -> bool:
        return bool(await call.code() in _FATAL)

    def _resync(self, peer: _Peer, ack: Any) -> None:
        """After the handshake: requeue what is unacknowledged, minus what was delivered."""
        if peer.remote_incarnation and peer.remote_incarnation != ack.incarnation:
            log.info("%s: peer %s restarted (new incarnation)", self.role, peer.role)
        peer.remote_incarnation = ack.incarnation
        if peer.unacked:
            self.stats.retransmitted += len(peer.unacked)
            peer.queued_bytes += sum(o.size for o in peer.unacked)
            peer.unacked.extend(peer.queue)
            peer.queue, peer.unacked = peer.unacked, deque()
        queue = peer.queue
        while queue and queue[0].seq <= ack.delivered:
            out = queue.popleft()
            peer.queued_bytes -= out.size
            if out.waiter is not None and not out.waiter.done():
                out.waiter.set_result(None)

    def _take_batch(self, peer: _Peer) -> tuple[Any, list[_Out]]:
        """Everything queued (up to one maximum-size message), moved to ``unacked``."""
        queue = peer.queue
        limit = self._limit - _SLACK // 2
        batch = pb.Batch()
        add = batch.envelopes.add
        written: list[_Out] = []
        total = 0
        while queue and (not written or total + queue[0].size <= limit):
            out = queue.popleft()
            total += out.size
            e = out.env
            add(
                session=e.session,
                sender=e.sender,
                receiver=e.receiver,
                label=e.label,
                kind=e.kind,
                payload=e.payload,
                chash=e.chash,
                seq=out.seq,
            )
            written.append(out)
        peer.queued_bytes -= total
        peer.inflight_bytes = total
        # Kept for retransmission before the write, since a failed write may have gone out.
        peer.unacked.extend(written)
        return batch, written

    def _written(self, written: list[_Out]) -> None:
        self.stats.batches_sent += 1
        self.stats.envelopes_sent += len(written)
        for out in written:
            out.written = True
            waiter = out.waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def _pump_soon(self, peer: _Peer) -> None:
        peer.pump_soon = False
        self._pump(peer)

    def _pump(self, peer: _Peer) -> None:
        """Start writing everything queued for ``peer``, unless a write is in flight.

        Called at the end of the event-loop turn in which ``send`` found the
        stream idle (so that a lone envelope leaves at once, and the envelopes
        of a burst leave together), and when a write completes (so that what
        was queued meanwhile leaves together).
        """
        call = peer.call
        if call is None or peer.inflight or not peer.queue:
            return
        batch, written = self._take_batch(peer)
        peer.inflight = True
        _drive(call.write(batch), lambda exc: self._wrote(peer, call, written, exc))

    def _wrote(self, peer: _Peer, call: Any, written: list[_Out], exc: Exception | None) -> None:
        if call is not peer.call:
            return  # that stream has ended: its envelopes are in unacked, for the next one
        peer.inflight = False
        peer.inflight_bytes = 0
        if exc is not None:
            peer.write_error = exc
            peer.wake.set()
            return
        self._written(written)
        if peer.queue:
            self._pump(peer)
        elif self._flushing:
            peer.wake.set()

    async def _write_loop(self, peer: _Peer, call: Any, reader: asyncio.Task[None]) -> None:
        """Watch one stream while ``_pump`` writes on it; half-close it on ``close()``."""
        peer.call = call
        self._pump(peer)
        while True:
            if reader.done():
                exc = reader.exception()
                if exc is not None:
                    raise exc
                raise _StreamError(await self._status(call), fatal=await self._fatal(call))
            error = peer.write_error
            if error is not None:
                raise error
            if not peer.inflight:
                self._pump(peer)  # e.g. a send that gave up left the queue as it was
            if self._flushing and not peer.queue and not peer.inflight:
                # Half-close: the receiver delivers what it read, acks it, and ends the stream.
                await call.done_writing()
                await asyncio.wait((reader,), timeout=self.connect_timeout)
                return
            peer.wake.clear()
            await peer.wake.wait()

    async def _read_acks(self, peer: _Peer, call: Any) -> None:
        while True:
            ack = await call.read()
            if ack is grpc.aio.EOF:
                return
            self._acked(peer, ack.delivered)

    # -- receiving -----------------------------------------------------------

    async def _serve(self, requests: Any, context: Any) -> None:
        """One inbound stream: handshake, then deliver batches and send acks."""
        if self._stopping:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.role} is shutting down")
        try:
            first = await _read(context)
        except _Reject as exc:
            log.warning("%s: rejected a stream: %s", self.role, exc.details)
            await context.abort(exc.code, exc.details)
        if first is grpc.aio.EOF:
            return
        if not first.HasField("hello") or first.envelopes:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "the first message of a stream must be a Hello"
            )
        hello = first.hello
        if hello.receiver != self.role:
            details = (
                f"this address ({self.address}) serves role {self.role!r}, "
                f"not {hello.receiver[:100]!r}: check the cluster file"
            )
            log.warning("%s: rejected a stream from %s: %s", self.role, context.peer(), details)
            await context.abort(grpc.StatusCode.NOT_FOUND, details)
        if not hello.sender:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Hello names no sender")
        if self.tls is not None and self.tls.mutual:
            identity = peer_identity(context)
            if identity != hello.sender:
                details = (
                    f"a peer whose certificate names {identity!r} may not send as "
                    f"{hello.sender[:100]!r} to {self.role}"
                )
                log.warning("%s: rejected a stream from %s: %s", self.role, context.peer(), details)
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, details)
        state = self._inbound.get(hello.sender)
        if state is None or state.incarnation != hello.incarnation:
            state = self._inbound[hello.sender] = _Inbound(hello.incarnation)
        state.generation += 1
        if hello.address and self.learn_peers and hello.sender not in self._peers:
            try:
                self.add_peer(hello.sender, hello.address)
            except UsageError as exc:
                log.warning("%s: ignoring the address of %s: %s", self.role, hello.sender, exc)
        link = _Link(hello.sender, state)
        await context.write(pb.Ack(incarnation=self.incarnation, delivered=state.delivered))
        self.stats.acks_sent += 1
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._links.add(link)
        reader = asyncio.get_running_loop().create_task(self._read_batches(context, link))
        reader.add_done_callback(lambda _: link.event.set())
        rejected: _Reject | None = None
        try:
            while not reader.done() and not self._stopping:
                await link.event.wait()
                link.event.clear()
                if link.acked == state.delivered or reader.done() or self._stopping:
                    continue
                if link.unacked < self.ack_every:
                    # Hold the ack back to coalesce it with later ones; shutdown cuts it short.
                    await self._ack_pause()
                    if self._stopping:
                        break  # the final ack below covers it
                await self._ack(context, link)
        finally:
            # Stop delivering before the last ack, so that it covers exactly what was delivered.
            self._links.discard(link)
            self._handlers.discard(task)
            if not reader.done():
                reader.cancel()
            # gather: our own cancellation still propagates; the reader's outcome is a value.
            (outcome,) = await asyncio.gather(reader, return_exceptions=True)
            if isinstance(outcome, _Reject):
                rejected = outcome
            elif isinstance(outcome, Exception) and not isinstance(outcome, grpc.aio.AioRpcError):
                log.error("%s: reading from %s failed", self.role, link.sender, exc_info=outcome)
        if rejected is not None:
            log.warning("%s: rejected the stream from %s: %s", self.role, link.sender, rejected)
            await context.abort(rejected.code, rejected.details)
        if link.generation == state.generation:
            with contextlib.suppress(Exception):
                await self._ack(context, link)

    async def _ack_pause(self) -> None:
        """Sleep ``ack_delay`` seconds, or until shutdown begins (a timer, not a task)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(self.ack_delay, _resolve, fut)
        self._ack_waits.add(fut)
        try:
            await fut
        finally:
            timer.cancel()
            self._ack_waits.discard(fut)

    async def _ack(self, context: Any, link: _Link) -> None:
        link.acked = link.state.delivered
        link.unacked = 0
        await context.write(pb.Ack(incarnation=self.incarnation, delivered=link.acked))
        self.stats.acks_sent += 1

    async def _read_batches(self, context: Any, link: _Link) -> None:
        """Read and deliver batches until EOF, a newer stream, or shutdown.

        While the sender is paused (``pause_peer``) this stops between two
        envelopes and reads nothing more: the rest of the batch waits here
        (at most one message), the rest of the stream in gRPC's window.
        """
        state = link.state
        sender = link.sender
        role = self.role
        limit = self.max_message_size
        deliver = self._deliver
        assert deliver is not None
        stats = self.stats
        paused = self._paused
        kinds = _KINDS
        read = context.read
        eof = grpc.aio.EOF
        while True:
            data = await read()
            if data is eof:
                return
            batch = _parse(data)
            if self._stopping or link.generation != state.generation:
                return  # not delivered, so not acked: the sender will send it again
            n = 0
            for e in batch.envelopes:
                if paused and sender in paused:
                    self._delivered(link, n)
                    n = 0
                    while (event := paused.get(sender)) is not None and not self._stopping:
                        await event.wait()
                    if self._stopping or link.generation != state.generation:
                        return
                payload = e.payload  # every read of a field makes a new object: once each
                label = e.label
                if len(payload) > limit:
                    raise _Reject(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"envelope {label} of session {e.session} from {sender} has a payload "
                        f"of {len(payload)} bytes, over {role}'s limit of {limit} bytes",
                    )
                kind = kinds.get(e.kind)
                if kind is None or e.sender != sender:
                    raise _Reject(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"malformed envelope {label} from {sender}: kind {e.kind}, "
                        f"sender {e.sender!r}",
                    )
                if e.receiver != role:
                    raise _Reject(
                        grpc.StatusCode.NOT_FOUND,
                        f"envelope {label} of session {e.session} from {sender} is addressed "
                        f"to role {e.receiver[:100]!r}, which this process does not host "
                        f"(it hosts {role!r})",
                    )
                seq = e.seq
                delivered = state.delivered
                if seq <= delivered:
                    stats.duplicates += 1
                    continue
                if delivered and seq != delivered + 1:
                    stats.gaps += 1
                    log.warning(
                        "%s: envelopes %d..%d from %s were lost (dropped by the sender)",
                        role,
                        delivered + 1,
                        seq - 1,
                        sender,
                    )
                state.delivered = seq
                n += 1
                try:
                    deliver(Envelope(e.session, sender, role, label, kind, payload, e.chash))
                except Exception:
                    log.exception("%s: delivering %s from %s raised", role, label, sender)
            stats.batches_received += 1
            stats.envelopes_received += n
            link.unacked += n
            link.event.set()

    def _delivered(self, link: _Link, n: int) -> None:
        """Count ``n`` envelopes delivered on ``link``; its ack is due (see ``_serve``)."""
        self.stats.envelopes_received += n
        link.unacked += n
        link.event.set()

    async def _stop_server(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping = True
        self._stop_event.set()
        for fut in list(self._ack_waits):
            _resolve(fut)
        for event in self._paused.values():
            event.set()  # paused readers see _stopping and end
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        for link in list(self._links):
            link.event.set()
        handlers = list(self._handlers)
        if handlers:
            await asyncio.wait(handlers, timeout=1.0)
        await server.stop(0.2)
