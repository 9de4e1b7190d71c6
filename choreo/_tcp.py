"""The raw TCP transport: one long-lived connection per ordered pair of roles.

For deployments that want the lowest latency: no HTTP/2, no gRPC, just
asyncio over TCP (``TCP_NODELAY``), optionally inside TLS (the standard
``ssl`` module). The delivery guarantees are the gRPC transport's (see
``choreo._grpc``): FIFO per ordered pair, sequence numbers and acknowledgements
so that a reconnect, or a receiver restarted after ``close()``, loses and
duplicates nothing.

Wire
----
Role A's envelopes to B travel on a connection A opens to B's listening
address; B answers on it with acknowledgements only. Everything is a *frame*::

    u32 length (big-endian, bytes after this field) | u8 type | body

=========  ===========  =========================================================
type       direction    body
=========  ===========  =========================================================
1 HELLO    A -> B       ``b"CHT1"`` + ``Hello`` (protobuf, ``choreo/_proto/transport.proto``)
2 ACK      B -> A       ``Ack`` (protobuf): B's incarnation, the highest sequence delivered
3 ENV      A -> B       one envelope, below
4 BYE      A -> B       empty: A is closing; B acknowledges everything and closes
5 ERROR    B -> A       u8 fatal + UTF-8 text; B closes the connection after it
=========  ===========  =========================================================

An ENV body is ``u8 kind | u64 seq | u16 session length | u16 label length |
u8 chash length`` then the UTF-8 session, label and chash, then the payload
(the codec's bytes, untouched) up to the end of the frame. Sender and
receiver are not repeated in every envelope: they are the connection's, fixed
by its ``Hello``. No pickle, nothing evaluated: a frame that does not parse is
an error of that one connection.

A connection opens with A's HELLO (sender, expected receiver, A's incarnation,
A's advertised address); B answers with an ACK saying how much of this
incarnation it has already delivered (0 for a new one), or with an ERROR
(wrong role at this address, a certificate naming another role, ...) and
closes. A retransmits what was not acknowledged, then writes new envelopes.

Batching: ``send`` writes an envelope to an idle connection at once, inside
``send``: a lone envelope is never held back. An envelope that follows the
previous write to the same peer within ``burst_window`` (20 us) *corks* the
connection until the event loop's next turn: envelopes sent meanwhile (by one
task in a row, or by other tasks in the same turn) are then written together,
many frames in one ``write``. A ping-pong, whose writes are a round trip
apart, never pays for that extra turn; a burst pays one turn for many
envelopes. Envelopes queued while a connection is down or its write buffer is
full go out the same way, up to 1 MiB per ``write``.

Receiving: a ``BufferedProtocol`` reads into one reusable buffer (no per-read
allocation), parses every frame a read brought and delivers each envelope
straight from the read callback, in order (no task, no queue). Both ends keep
the encoded strings (session, label, hash) of recent envelopes, so that a
conversation's recurring ones are encoded and decoded once.
Acknowledgements are coalesced: at most every ``ack_delay`` seconds, at once
after ``ack_every`` envelopes, on a BYE, and a last time when the receiver
closes (so that a successor on the same address gets exactly what it did not
deliver).

Failures and limits
-------------------
``send(env, timeout)`` returns as soon as the envelope is written (or corked,
or queued while the connection's write buffer is full, up to
``max_queued_bytes``). Otherwise it waits until it is written, and raises
``TransportError`` naming the peer, its address and the last connection error
if that did not happen within ``timeout`` seconds. Meanwhile the peer's
connector task reconnects with exponential backoff (20 ms doubling to 1 s).
An envelope written but lost with its connection is retransmitted on
reconnect; if the peer stays unreachable past its deadline it is dropped,
counted in ``stats.lost``, reported to ``on_lost``, and the next ``send`` to
that peer raises. An ERROR frame marked fatal fails every waiting envelope at
once with its text.

A payload over ``max_message_size`` (4 MiB by default) is rejected by
``send`` with ``TransportError``. A frame from the network that is longer
than an envelope can be, announces a payload over the limit, is not
well-formed, or comes before the HELLO, is answered with an ERROR, logged and
ends that one connection; the process and the other connections carry on. A
connection that sends no HELLO within ``connect_timeout`` is closed.

TLS: with a ``TlsConfig``, the server presents the role's certificate; the
client checks it against the CA and that it names the role it meant to reach
(``dns_name(role)``). With mutual TLS the server requires a client
certificate signed by the CA, and serves a connection only if the HELLO's
sender is the certificate's common name; since envelopes carry no sender of
their own, every envelope on it is then the certified role's. A mismatch is
logged, answered with a fatal ERROR and the connection closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import ssl
import struct
import tempfile
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from time import monotonic
from typing import Any, cast

from google.protobuf.message import DecodeError

from choreo._cluster import check_address
from choreo._envelope import Envelope, Kind
from choreo._errors import TransportError, UsageError
from choreo._proto import transport_pb2 as pb
from choreo._tls import TlsConfig, dns_name
from choreo._transport import DEFAULT_MAX_MESSAGE_SIZE, Deliver, Transport

__all__ = ["DEFAULT_MAX_MESSAGE_SIZE", "TcpStats", "TcpTransport"]

log = logging.getLogger("choreo.tcp")

T_HELLO = 1
T_ACK = 2
T_ENV = 3
T_BYE = 4
T_ERROR = 5

#: first bytes of a HELLO body: this protocol, version 1
MAGIC = b"CHT1"

_LEN = struct.Struct("!I")
#: frame length, type, kind, seq, session / label / chash lengths
_ENV_HEAD = struct.Struct("!IBBQHHB")
_ENV_FIXED = _ENV_HEAD.size - _LEN.size  # body bytes before the strings
#: an envelope frame as sent: this prefix, then the (cached) lengths and strings, then the payload
_ENV_PRE = struct.Struct("!IBBQ")
_ENV_LENS = struct.Struct("!HHB")
#: an envelope frame's body up to the strings: kind, seq, string lengths
_ENV_BODY = struct.Struct("!BQHHB")
_PRE_BODY = _ENV_PRE.size - _LEN.size
#: at most this many encoded (session, label, hash) kept by a sender, and decoded by a
#: receiver per connection; only those of at most _CACHED bytes
_TAILS = 4096
_CACHED = 512
#: bound on an envelope's encoded session + label + chash, in bytes
_MAX_HEADER = 16 * 1024
#: bound on every frame that is not an envelope (HELLO, ACK, ERROR)
_MAX_CONTROL = 64 * 1024
#: the read buffer's usual size, and the least free room offered to a read
_BUF_SIZE = 64 * 1024
_MIN_READ = 16 * 1024
#: at most this many bytes of queued envelopes go into one write
_CHUNK = 1024 * 1024
#: the write buffer above which a connection stops taking envelopes (they queue)
_HIGH_WATER = 1024 * 1024

_BACKOFF_MIN = 0.02
_BACKOFF_MAX = 1.0

_KINDS = {int(k): k for k in Kind}


@dataclass(slots=True)
class TcpStats:
    """Counters of one ``TcpTransport`` (for tests, benchmarks and logs).

    Attributes:
        writes: socket writes carrying envelopes (one may carry many).
        envelopes_sent: envelopes written (a retransmitted one counts again).
        envelopes_received: envelopes delivered to ``deliver``.
        acks_sent: ACK frames written to peers.
        duplicates: envelopes received again (after a reconnect) and dropped.
        gaps: times a sender's sequence jumped (envelopes it dropped as lost).
        retransmitted: envelopes written again after a reconnect.
        connects: connections opened to peers (the first one and every reconnect).
        lost: envelopes dropped at the sender after being accepted, because the
            peer stayed unreachable past their deadline.
        rejected: inbound connections ended for a malformed, oversize or
            unauthorised frame.
    """

    writes: int = 0
    envelopes_sent: int = 0
    envelopes_received: int = 0
    acks_sent: int = 0
    duplicates: int = 0
    gaps: int = 0
    retransmitted: int = 0
    connects: int = 0
    lost: int = 0
    rejected: int = 0


def _frame(ftype: int, body: bytes = b"") -> bytes:
    return _LEN.pack(len(body) + 1) + bytes((ftype,)) + body


def _error_frame(text: str, fatal: bool) -> bytes:
    return _frame(T_ERROR, bytes((int(fatal),)) + text.encode("utf-8", "replace")[:4000])


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# -- TLS -------------------------------------------------------------------------------


def _load_chain(ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """``ctx.load_cert_chain`` from PEM bytes (the ``ssl`` module only reads files).

    The key goes to an anonymous memory file where the platform has one, else
    to a private temporary directory that is removed at once.
    """
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fds = [os.memfd_create("choreo-cert"), os.memfd_create("choreo-key")]
        try:
            for fd, data in zip(fds, (cert, key), strict=True):
                os.write(fd, data)
            ctx.load_cert_chain(f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}")
            return
        finally:
            for fd in fds:
                os.close(fd)
    with tempfile.TemporaryDirectory(prefix="choreo-tls-") as tmp:
        paths = [os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")]
        for path, data in zip(paths, (cert, key), strict=True):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        ctx.load_cert_chain(paths[0], paths[1])


def server_context(tls: TlsConfig) -> ssl.SSLContext:
    """The ``ssl`` context a role's TCP server uses.

    Raises:
        UsageError: the role has no certificate, or the PEM data is unusable.
    """
    if tls.cert is None or tls.key is None:
        raise UsageError("TLS: a role that listens needs a certificate and a key")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        _load_chain(ctx, tls.cert, tls.key)
        if tls.mutual:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(cadata=tls.ca.decode("ascii", "replace"))
    except (ssl.SSLError, ValueError) as exc:
        raise UsageError(f"TLS: cannot use this certificate, key or CA: {exc}") from None
    return ctx


def client_context(tls: TlsConfig) -> ssl.SSLContext:
    """The ``ssl`` context for connections a role opens (checks the peer's role name).

    Raises:
        UsageError: the PEM data is unusable.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the name
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_verify_locations(cadata=tls.ca.decode("ascii", "replace"))
        if tls.mutual and tls.cert is not None and tls.key is not None:
            _load_chain(ctx, tls.cert, tls.key)
    except (ssl.SSLError, ValueError) as exc:
        raise UsageError(f"TLS: cannot use this certificate, key or CA: {exc}") from None
    return ctx


def _common_name(transport: asyncio.BaseTransport) -> str | None:
    """The subject common name of the peer's verified certificate, if exactly one."""
    cert = transport.get_extra_info("peercert")
    if not cert:
        return None
    names = [value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"]
    return names[0] if len(names) == 1 else None


# -- framing ---------------------------------------------------------------------------


class _Framed(asyncio.BufferedProtocol):
    """Reads length-prefixed frames into one reusable buffer; subclasses handle them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buf = bytearray(_BUF_SIZE)
        self.mv = memoryview(self.buf)
        self.start = 0
        self.end = 0
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.paused = False
        self.dead = False  # a frame ended the connection: ignore whatever still comes

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports quack like asyncio.Transport without subclassing it)
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False

    def get_buffer(self, sizehint: int) -> memoryview:
        end = self.end
        if end == 0:  # as nearly always: every frame read so far was whole
            return self.mv
        if len(self.buf) - end < _MIN_READ:
            self._reserve(_MIN_READ)
        return self.mv[self.end :]

    def _reserve(self, room: int) -> None:
        """Make ``room`` bytes free after the unread ones (moved to the front of a new buffer).

        Never resized in place: asyncio may still hold a view of the old buffer.
        """
        if self.start == 0 and len(self.buf) - self.end >= room:
            return
        pending = self.end - self.start
        buf = bytearray(max(_BUF_SIZE, pending + room))
        buf[:pending] = self.mv[self.start : self.end]
        self.buf, self.mv = buf, memoryview(buf)
        self.start, self.end = 0, pending

    def buffer_updated(self, nbytes: int) -> None:
        if self.dead:
            return
        self.end += nbytes
        buf = self.buf
        pos, end = self.start, self.end
        unpack = _LEN.unpack_from
        while end - pos >= 4:
            (flen,) = unpack(buf, pos)
            if flen == 0 or flen > self.limit:
                self.dead = True
                self.reject(
                    f"a frame of {flen} bytes, over the limit of {self.limit} bytes", fatal=True
                )
                return
            stop = pos + 4 + flen
            if stop > end:
                if stop > len(buf):  # make room for the whole frame, and a read more
                    self.start = pos
                    self._reserve(stop - end + _MIN_READ)
                    return
                break
            if not self.frame(buf[pos + 4], pos + 5, stop) or self.transport is None:
                self.dead = True  # the connection is ending: nothing more is read
                return
            pos = stop
        if pos == end:
            self.start = self.end = 0
            if len(self.buf) > _BUF_SIZE:  # after a large frame: give the memory back
                self.buf = bytearray(_BUF_SIZE)
                self.mv = memoryview(self.buf)
        else:
            self.start = pos

    def frame(self, ftype: int, start: int, stop: int) -> bool:
        """Handle one complete frame (body ``buf[start:stop]``); False stops reading."""
        raise NotImplementedError

    def reject(self, why: str, fatal: bool) -> None:
        """A frame broke the protocol: end the connection."""
        raise NotImplementedError

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def shut(self) -> None:
        """Close after what was written (idempotent)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


# -- sending ---------------------------------------------------------------------------


class _Out:
    """One outgoing envelope: its frame, number, deadline, and maybe a waiting send."""

    __slots__ = ("deadline", "env", "frame", "seq", "timeout", "waiter", "written")

    def __init__(
        self, seq: int, env: Envelope, frame: bytes, timeout: float, deadline: float, written: bool
    ) -> None:
        self.seq = seq
        self.env = env
        self.frame = frame
        self.timeout = timeout
        self.deadline = deadline
        #: resolved with None once written, or with the error that stopped it
        self.waiter: asyncio.Future[TransportError | None] | None = None
        self.written = written


class _StreamError(Exception):
    """A connection to a peer failed; ``fatal`` when reconnecting cannot help."""

    def __init__(self, text: str, fatal: bool = False) -> None:
        super().__init__(text)
        self.fatal = fatal


class _Peer:
    """Sending state towards one peer role."""

    def __init__(self, role: str, address: str) -> None:
        self.role = role
        self.address = address
        self.queue: deque[_Out] = deque()  # not yet written on the current connection
        self.unacked: deque[_Out] = deque()  # written, not yet acknowledged
        self.queued_bytes = 0
        self.next_seq = 1
        self.wake = asyncio.Event()  # something to send: (re)connect
        self.poke = asyncio.Event()  # cut a backoff short: close() began or a send gave up
        self.task: asyncio.Task[None] | None = None
        self.conn: _OutConn | None = None  # the connection, once its handshake is done
        self.corked = False  # a burst: sends queue until _uncork, at the loop's next turn
        self.last_write = -1.0  # loop time of the last fast-path write
        self.bye = False  # BYE written on the current connection
        self.last_error = ""
        self.remote_incarnation = ""
        #: an envelope send() had accepted was dropped: the next send raises this
        self.lost: TransportError | None = None


class _OutConn(_Framed):
    """A connection this transport opened to a peer: writes envelopes, reads ACKs."""

    def __init__(self, owner: TcpTransport, peer: _Peer) -> None:
        super().__init__(_MAX_CONTROL)
        self.owner = owner
        self.peer = peer
        self.hello: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.error: _StreamError | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        self.transport.set_write_buffer_limits(high=_HIGH_WATER)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.hello.done():
            why = self.error or _StreamError(
                "the peer closed the connection"
                + (f" ({_describe(exc)})" if exc is not None else "")
            )
            self.hello.set_exception(why)
            self.hello.exception()  # retrieved: nobody may be waiting any more
        if self.peer.conn is self:
            self.peer.conn = None
            self.peer.bye = False

    def resume_writing(self) -> None:
        super().resume_writing()
        self.owner._pump(self.peer)

    def frame(self, ftype: int, start: int, stop: int) -> bool:
        body = bytes(self.mv[start:stop])
        if ftype == T_ACK:
            try:
                ack = pb.Ack.FromString(body)
            except DecodeError:
                self.reject("an ACK that does not parse", fatal=False)
                return False
            if not self.hello.done():
                self.hello.set_result(ack)
            else:
                self.owner._acked(self.peer, ack.delivered)
            return True
        if ftype == T_ERROR and body:
            text = body[1:].decode("utf-8", "replace")
            self.error = _StreamError(
                f"{self.peer.role} refused the connection: {text}", body[0] == 1
            )
            if not self.hello.done():
                self.hello.set_exception(self.error)
                self.hello.exception()
            self.shut()
            return False
        self.reject(f"an unexpected frame of type {ftype}", fatal=False)
        return False

    def reject(self, why: str, fatal: bool) -> None:
        # Not fatal here: what answers at that address may be fixed (or replaced) in time.
        log.warning("%s: peer %s broke the protocol: %s", self.owner.role, self.peer.role, why)
        self.error = _StreamError(f"{self.peer.role} broke the protocol: {why}")
        if self.transport is not None:
            self.transport.abort()


# -- receiving -------------------------------------------------------------------------


class _Inbound:
    """Receiving state for one sending role: its incarnation and what was delivered."""

    __slots__ = ("conn", "delivered", "incarnation")

    def __init__(self, incarnation: str) -> None:
        self.incarnation = incarnation
        self.delivered = 0
        self.conn: _InConn | None = None  # the current connection from this sender


class _InConn(_Framed):
    """A connection a peer opened to us: reads its HELLO and envelopes, writes ACKs."""

    def __init__(self, owner: TcpTransport) -> None:
        super().__init__(_MAX_CONTROL)  # until the HELLO: no envelope may come
        self.owner = owner
        self.sender = ""
        self.state: _Inbound | None = None
        self.acked = 0
        self.unacked = 0
        self.ack_timer: asyncio.TimerHandle | None = None
        self.hello_timer: asyncio.TimerHandle | None = None
        self.peername: Any = None
        #: an envelope's encoded strings -> (session, label, chash), for the ones seen lately
        self.names: dict[bytes, tuple[str, str, str]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.peername = transport.get_extra_info("peername")
        owner = self.owner
        owner._conns.add(self)
        if owner._stopping:
            self.refuse(f"{owner.role} is shutting down", fatal=False, quiet=True)
            return
        self.hello_timer = asyncio.get_running_loop().call_later(
            owner.connect_timeout, self._no_hello
        )

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.owner._conns.discard(self)
        for timer in (self.ack_timer, self.hello_timer):
            if timer is not None:
                timer.cancel()
        if self.state is not None and self.state.conn is self:
            self.state.conn = None

    def _no_hello(self) -> None:
        self.hello_timer = None
        if self.state is None:
            self.refuse(f"no HELLO within {self.owner.connect_timeout:g}s", fatal=False)

    def refuse(self, why: str, fatal: bool, quiet: bool = False) -> None:
        """Answer with an ERROR frame, then close this one connection."""
        if not quiet:
            self.owner.stats.rejected += 1
            log.warning(
                "%s: refused a connection from %s%s: %s",
                self.owner.role,
                self.sender or "an unknown sender",
                f" at {self.peername[0]}:{self.peername[1]}"
                if isinstance(self.peername, tuple) and len(self.peername) >= 2
                else "",
                why,
            )
        self.write(_error_frame(why, fatal))
        self.shut()

    def reject(self, why: str, fatal: bool) -> None:
        self.refuse(why, fatal)

    def ack(self) -> None:
        """Acknowledge everything delivered from this sender so far."""
        if self.ack_timer is not None:
            self.ack_timer.cancel()
            self.ack_timer = None
        state = self.state
        if state is None or self.transport is None:
            return
        self.acked = state.delivered
        self.unacked = 0
        self.write(
            _frame(
                T_ACK,
                pb.Ack(
                    incarnation=self.owner.incarnation, delivered=state.delivered
                ).SerializeToString(),
            )
        )
        self.owner.stats.acks_sent += 1

    def _timed_ack(self) -> None:
        self.ack_timer = None
        self.ack()

    def frame(self, ftype: int, start: int, stop: int) -> bool:
        state = self.state
        if ftype == T_ENV and state is not None:
            # The hot path, inline: one envelope, delivered at once.
            owner = self.owner
            if owner._stopping or state.conn is not self:
                return False  # not delivered, so not acknowledged: the sender sends it again
            if stop - start < _ENV_FIXED - 1:
                self.refuse("an envelope frame too short for its header", fatal=True)
                return False
            kind, seq, ls, ll, lc = _ENV_BODY.unpack_from(self.buf, start)
            p = start + _ENV_BODY.size
            q = p + ls + ll + lc
            if q > stop:
                self.refuse("an envelope whose strings run past its frame", fatal=True)
                return False
            if stop - q > owner.max_message_size:
                self.refuse(
                    f"an envelope with a payload of {stop - q} bytes, over {owner.role}'s "
                    f"limit of {owner.max_message_size} bytes",
                    fatal=True,
                )
                return False
            k = _KINDS.get(kind)
            if k is None:
                self.refuse(f"an envelope of unknown kind {kind}", fatal=True)
                return False
            mv = self.mv
            raw = mv[p:q].tobytes()
            names = self.names.get(raw)
            if names is None:
                names = self._names(raw, ls, ll)
                if names is None:
                    return False
            session, label, chash = names
            delivered = state.delivered
            if seq <= delivered:
                owner.stats.duplicates += 1
                return True
            if delivered and seq != delivered + 1:
                owner.stats.gaps += 1
                log.warning(
                    "%s: envelopes %d..%d from %s were lost (dropped by the sender)",
                    owner.role,
                    delivered + 1,
                    seq - 1,
                    self.sender,
                )
            state.delivered = seq
            owner.stats.envelopes_received += 1
            deliver = owner._deliver
            assert deliver is not None  # set by start(), before anything is accepted
            try:
                deliver(
                    Envelope(
                        session, self.sender, owner.role, label, k, mv[q:stop].tobytes(), chash
                    )
                )
            except Exception:
                log.exception("%s: delivering %s from %s raised", owner.role, label, self.sender)
            self.unacked += 1
            if self.unacked >= owner.ack_every:
                self.ack()
            elif self.ack_timer is None:
                self.ack_timer = asyncio.get_running_loop().call_later(
                    owner.ack_delay, self._timed_ack
                )
            return self.transport is not None
        if ftype == T_HELLO and state is None:
            return self._hello(bytes(self.mv[start:stop]))
        if ftype == T_BYE and state is not None:
            self.ack()
            self.shut()
            return False
        self.refuse(
            f"a frame of type {ftype} "
            + ("before the HELLO" if state is None else "after the HELLO"),
            fatal=True,
        )
        return False

    def _names(self, raw: bytes, ls: int, ll: int) -> tuple[str, str, str] | None:
        """Decode an envelope's strings (session, label, chash) and remember them.

        Returns:
            The strings, or None after refusing the connection (not UTF-8).
        """
        try:
            session = raw[:ls].decode()
            label = raw[ls : ls + ll].decode()
            chash = raw[ls + ll :].decode()
        except UnicodeDecodeError:
            self.refuse("an envelope whose strings are not UTF-8", fatal=True)
            return None
        result = (session, label, chash)
        if len(raw) <= _CACHED:
            names = self.names
            if len(names) >= _TAILS:
                names.clear()
            names[raw] = result
        return result

    def _hello(self, body: bytes) -> bool:
        owner = self.owner
        if self.hello_timer is not None:
            self.hello_timer.cancel()
            self.hello_timer = None
        if not body.startswith(MAGIC):
            self.refuse("not a choreo TCP HELLO (another protocol or version?)", fatal=True)
            return False
        try:
            hello = pb.Hello.FromString(body[len(MAGIC) :])
        except DecodeError:
            self.refuse("a HELLO that does not parse", fatal=True)
            return False
        if not hello.sender:
            self.refuse("the HELLO names no sender", fatal=True)
            return False
        self.sender = hello.sender[:200]
        if hello.receiver != owner.role:
            self.refuse(
                f"this address ({owner.address}) serves role {owner.role!r}, not "
                f"{hello.receiver[:200]!r}: check the cluster file",
                fatal=True,
            )
            return False
        if owner._stopping:
            self.refuse(f"{owner.role} is shutting down", fatal=False, quiet=True)
            return False
        if owner.tls is not None and owner.tls.mutual:
            assert self.transport is not None
            identity = _common_name(self.transport)
            if identity != hello.sender:
                self.refuse(
                    f"a peer whose certificate names {identity!r} may not send as "
                    f"{self.sender!r} to {owner.role}",
                    fatal=True,
                )
                return False
        state = owner._inbound.get(hello.sender)
        if state is None or state.incarnation != hello.incarnation:
            state = owner._inbound[hello.sender] = _Inbound(hello.incarnation)
        old = state.conn
        if old is not None and old is not self:
            old.state = None  # superseded by this connection: it reads nothing more
            old.dead = True
            old.shut()
        state.conn = self
        self.state = state
        self.limit = _ENV_FIXED + _MAX_HEADER + owner.max_message_size
        if hello.address and owner.learn_peers and hello.sender not in owner._peers:
            try:
                owner.add_peer(hello.sender, hello.address)
            except UsageError as exc:
                log.warning("%s: ignoring the address of %s: %s", owner.role, hello.sender, exc)
        self.ack()
        return True


# -- the transport ---------------------------------------------------------------------


class TcpTransport(Transport):
    """A ``Transport`` over raw TCP (asyncio): one connection per ordered role pair.

    Args:
        role: the role (or group member) this transport receives for and sends as.
        listen: ``"host:port"`` to serve on (port 0 picks a free port, see
            ``port`` and ``address`` after ``start()``), or ``None`` to only
            send. Only that host is bound.
        peers: peer role -> ``"host:port"``; more can be added with ``add_peer``.
        max_message_size: largest envelope payload accepted, in bytes.
        max_queued_bytes: above this many bytes queued for one peer (while
            its connection is down or its write buffer full), ``send`` waits
            until its envelope is written (back-pressure).
        advertise: the address peers should use to reach this role (sent in
            the HELLO); defaults to the bound address unless the listen host
            is a wildcard.
        learn_peers: add the advertised address of a role that connects to us
            and is not in ``peers`` yet (a client joining a running cluster).
        ack_delay: longest time a receiver holds back an acknowledgement.
        ack_every: acknowledge at once after this many envelopes.
        connect_timeout: bound on one connection attempt (TCP, TLS, HELLO), seconds.
        on_lost: called with an envelope that ``send`` had accepted but that
            could not be delivered before its deadline, and the error.
        tls: serve and connect over TLS (``None``: plaintext); with mutual TLS
            a peer may only send as the role its certificate names.
        burst_window: an envelope sent within this many seconds of the
            previous write to the same peer starts a batch (see above).

    Raises:
        UsageError: an address is malformed, a limit is not positive, or the
            TLS material is unusable.
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
        burst_window: float = 20e-6,
    ) -> None:
        if max_message_size <= 0 or max_queued_bytes <= 0 or ack_every <= 0:
            raise UsageError("TcpTransport: sizes and ack_every must be positive")
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
        self.burst_window = burst_window
        self._client_ssl = client_context(tls) if tls is not None else None
        self._server_ssl = server_context(tls) if tls is not None and listen is not None else None
        #: the bound port, after ``start()`` (``None`` without ``listen``)
        self.port: int | None = None
        #: ``host:port`` peers can reach this role at, after ``start()``
        self.address: str | None = None
        #: random id of this instance (sequence numbers restart with it)
        self.incarnation = secrets.token_hex(8)
        self.stats = TcpStats()
        #: (session, label, chash) -> the frame bytes between seq and payload
        self._tails: dict[tuple[str, str, str], bytes] = {}
        self._peers: dict[str, _Peer] = {}
        for name, addr in (peers or {}).items():
            self.add_peer(name, addr)
        self._deliver: Deliver | None = None
        self._server: asyncio.Server | None = None
        self._inbound: dict[str, _Inbound] = {}
        self._conns: set[_InConn] = set()
        self._flushing = False  # close() began: connector tasks end once their queues are empty
        self._stopping = False  # the server no longer delivers
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- peers ---------------------------------------------------------------

    def add_peer(self, role: str, address: str) -> None:
        """Tell this transport where ``role`` listens (or move it).

        A moved address is used from the next connection attempt on.

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
        """The roles whose connections to this transport are open now (sorted)."""
        return sorted({c.sender for c in self._conns if c.state is not None})

    # -- Transport -----------------------------------------------------------

    async def start(self, deliver: Deliver) -> None:
        """Start serving: bind ``listen`` (that host only).

        Args:
            deliver: called with every inbound envelope, on this event loop.

        Raises:
            TransportError: the address cannot be bound.
            UsageError: the transport was already started or closed.
        """
        if self._deliver is not None or self._closed:
            raise UsageError(f"TcpTransport for {self.role} was already started")
        self._deliver = deliver
        self._loop = asyncio.get_running_loop()
        if self.listen is None:
            return
        host, port = check_address(self.listen, allow_port_zero=True)
        try:
            server = await self._loop.create_server(
                lambda: _InConn(self),
                host,
                port,
                ssl=self._server_ssl,
                ssl_handshake_timeout=self.connect_timeout if self._server_ssl else None,
                ssl_shutdown_timeout=self.connect_timeout if self._server_ssl else None,
            )
        except OSError as exc:
            raise TransportError(
                f"{self.role} cannot listen on {self.listen}: {exc.strerror or exc} "
                "(is the port in use?)"
            ) from None
        self._server = server
        self.port = int(server.sockets[0].getsockname()[1])
        shown = self.listen.rpartition(":")[0]
        self.address = f"{shown}:{self.port}"
        if self.advertise is None and host not in ("0.0.0.0", "::", ""):
            self.advertise = self.address

    async def send(self, env: Envelope, timeout: float) -> None:
        """Write ``env`` to ``env.receiver``'s connection; wait only while it is not up.

        Args:
            env: the envelope; ``env.receiver`` must be a known peer and
                ``env.sender`` this transport's role.
            timeout: seconds the envelope may take to be written to the peer.

        Raises:
            TransportError: the transport is closed, the receiver has no
                address, the payload exceeds ``max_message_size``, an earlier
                envelope to that peer was lost, or the peer could not be
                reached within ``timeout`` seconds.
        """
        if self._flushing:  # also set once closed
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
        payload = env.payload
        if len(payload) > self.max_message_size:
            raise TransportError(
                f"envelope {env.label} of session {env.session} has a payload of "
                f"{len(payload)} bytes, over the limit of {self.max_message_size} bytes "
                "(max_message_size)"
            )
        if env.sender != self.role:
            raise TransportError(
                f"the transport of {self.role} cannot send envelope {env.label} as {env.sender!r}"
            )
        key = (env.session, env.label, env.chash)
        tail = self._tails.get(key)
        if tail is None:
            tail = self._tail(env, key)
        seq = peer.next_seq
        peer.next_seq = seq + 1
        frame = b"".join(
            (
                _ENV_PRE.pack(_PRE_BODY + len(tail) + len(payload), T_ENV, env.kind, seq),
                tail,
                payload,
            )
        )
        now = monotonic()  # (deadlines: this module's clock, whatever the event loop's)
        conn = peer.conn
        if conn is not None and not peer.corked and not peer.queue and not conn.paused:
            # The fast path: an idle connection, written now.
            transport = conn.transport
            if transport is not None:
                transport.write(frame)
                peer.unacked.append(_Out(seq, env, frame, timeout, now + timeout, True))
                stats = self.stats
                stats.writes += 1
                stats.envelopes_sent += 1
                if now - peer.last_write < self.burst_window:
                    # Envelopes in quick succession: batch the next ones until the loop's next turn.
                    peer.corked = True
                    (self._loop or asyncio.get_running_loop()).call_soon(self._uncork, peer)
                peer.last_write = now
                return
        out = _Out(seq, env, frame, timeout, now + timeout, False)
        peer.queue.append(out)
        peer.queued_bytes += len(frame)
        if conn is not None and peer.queued_bytes <= self.max_queued_bytes:
            return  # corked, or the write buffer is full: written when it drains
        loop = self._loop or asyncio.get_running_loop()
        if peer.task is None:
            peer.task = loop.create_task(self._run_peer(peer), name=f"choreo-tcp-{peer.role}")
        peer.wake.set()
        waiter: asyncio.Future[TransportError | None] = loop.create_future()
        out.waiter = waiter
        done, _ = await asyncio.wait((waiter,), timeout=max(timeout, 0.0))
        if done:
            error = waiter.result()
            if error is not None:
                raise error
            return
        # Not written in time: withdraw it, so that it is never sent after we said it failed.
        with contextlib.suppress(ValueError):
            peer.queue.remove(out)
            peer.queued_bytes -= len(frame)
        out.waiter = None
        peer.poke.set()
        raise self._unreachable(peer, timeout, out.written)

    def _tail(self, env: Envelope, key: tuple[str, str, str]) -> bytes:
        """The frame bytes after ``seq`` (string lengths, strings) for ``env``, cached.

        Returns:
            The bytes between ``seq`` and the payload.

        Raises:
            TransportError: a string is not encodable or the strings are too long.
        """
        try:
            s = env.session.encode()
            label = env.label.encode()
            c = env.chash.encode()
        except UnicodeEncodeError as exc:
            raise TransportError(f"envelope {env.label[:80]!r}: {exc}") from None
        ls, ll, lc = len(s), len(label), len(c)
        if ls > 0xFFFF or ll > 0xFFFF or lc > 0xFF or ls + ll + lc > _MAX_HEADER:
            raise TransportError(
                f"envelope {env.label[:80]} has header strings (session, label, hash) of "
                f"{ls + ll + lc} bytes, over the limit of {_MAX_HEADER}"
            )
        tail = b"".join((_ENV_LENS.pack(ls, ll, lc), s, label, c))
        if len(tail) <= _CACHED:
            tails = self._tails
            if len(tails) >= _TAILS:
                tails.clear()
            tails[key] = tail
        return tail

    async def close(self, linger: float | None = None) -> None:
        """Flush what was sent, then stop serving and release everything; idempotent.

        Args:
            linger: longest wait for queued envelopes to be delivered; by
                default, until the last queued envelope's own deadline.
        """
        if self._closed:
            return
        self._flushing = True
        writers = [p.task for p in self._peers.values() if p.task is not None]
        if writers:
            if linger is None:
                now = monotonic()
                pending = [o.deadline for p in self._peers.values() for o in (*p.queue, *p.unacked)]
                linger = max(pending, default=now) - now + 2 * _BACKOFF_MAX
            for p in self._peers.values():
                self._pump(p)  # and a BYE on every idle connection
                p.wake.set()
                p.poke.set()
            _, late = await asyncio.wait(writers, timeout=max(linger, 0.0))
            for task in late:
                task.cancel()
            for result in await asyncio.gather(*writers, return_exceptions=True):
                if isinstance(result, Exception):
                    log.error("%s: a connector task failed", self.role, exc_info=result)
        self._closed = True
        await self._stop_server()

    # -- sending -------------------------------------------------------------

    def _uncork(self, peer: _Peer) -> None:
        peer.corked = False
        if peer.queue:
            self._pump(peer)

    def _pump(self, peer: _Peer) -> None:
        """Write the queue to the connection, in chunks, until its write buffer is full."""
        conn = peer.conn
        if conn is None:
            return
        queue = peer.queue
        stats = self.stats
        while queue and not conn.paused and conn.transport is not None:
            parts: list[bytes] = []
            written: list[_Out] = []
            total = 0
            while queue and total < _CHUNK:
                out = queue.popleft()
                parts.append(out.frame)
                written.append(out)
                total += len(out.frame)
            peer.queued_bytes -= total
            peer.unacked.extend(written)  # kept for retransmission before the write
            conn.write(parts[0] if len(parts) == 1 else b"".join(parts))
            stats.writes += 1
            stats.envelopes_sent += len(written)
            for out in written:
                out.written = True
                waiter = out.waiter
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
        if self._flushing and not queue and not peer.bye and conn.transport is not None:
            peer.bye = True
            conn.write(_frame(T_BYE))

    def _acked(self, peer: _Peer, delivered: int) -> None:
        unacked = peer.unacked
        while unacked and unacked[0].seq <= delivered:
            unacked.popleft()

    def _unreachable(self, peer: _Peer, timeout: float, written: bool = False) -> TransportError:
        why = peer.last_error or ("not connected yet" if not written else "connection lost")
        if peer.conn is not None and peer.queued_bytes > self.max_queued_bytes:
            why = f"it is not reading ({peer.queued_bytes} bytes queued)"
        return TransportError(
            f"peer {peer.role} at {peer.address} could not be reached within {timeout:g}s ({why})"
        )

    async def _run_peer(self, peer: _Peer) -> None:
        """The connector: (re)connects to ``peer`` while something waits for it, until close."""
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
                progress = await self._connection(peer)
            except _StreamError as exc:
                peer.last_error = str(exc)
                if exc.fatal:
                    self._fail_all(peer, exc)
            if progress:
                backoff = _BACKOFF_MIN
            self._expire(peer, monotonic())
            if not peer.queue and not peer.unacked:
                continue
            peer.poke.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(peer.poke.wait(), backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)
            self._expire(peer, monotonic())

    async def _connection(self, peer: _Peer) -> bool:
        """One connection to ``peer``: handshake, retransmit, then serve until it ends.

        Returns:
            Whether the connection got as far as the receiver's first ACK.

        Raises:
            _StreamError: the connection could not be opened, was refused, or broke.
        """
        self.stats.connects += 1
        loop = asyncio.get_running_loop()
        host, port = check_address(peer.address)
        conn: _OutConn | None = None
        try:
            try:
                _, proto = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: _OutConn(self, peer),
                        host,
                        port,
                        ssl=self._client_ssl,
                        server_hostname=dns_name(peer.role) if self._client_ssl else None,
                        ssl_handshake_timeout=self.connect_timeout if self._client_ssl else None,
                        ssl_shutdown_timeout=self.connect_timeout if self._client_ssl else None,
                    ),
                    self.connect_timeout,
                )
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                raise _StreamError(f"cannot connect: {_describe(exc)}") from None
            conn = proto
            hello = pb.Hello(
                sender=self.role,
                receiver=peer.role,
                incarnation=self.incarnation,
                address=self.advertise or "",
            )
            conn.write(_frame(T_HELLO, MAGIC + hello.SerializeToString()))
            try:
                ack = await asyncio.wait_for(asyncio.shield(conn.hello), self.connect_timeout)
            except TimeoutError:
                raise _StreamError("no answer to the HELLO in time") from None
            if conn.transport is None:
                raise conn.error or _StreamError("the peer closed the connection")
            self._resync(peer, ack)
            peer.conn = conn
            peer.bye = False
            peer.last_error = ""
            self._pump(peer)
            await asyncio.shield(conn.closed)
            if conn.error is not None:
                raise conn.error
            peer.last_error = "the connection was closed"
            return True
        finally:
            if peer.conn is conn:
                peer.conn = None
            if conn is not None and conn.transport is not None:
                conn.transport.abort()
            if conn is not None:
                with contextlib.suppress(BaseException):
                    await asyncio.wait((conn.closed,), timeout=1.0)

    def _resync(self, peer: _Peer, ack: Any) -> None:
        """After the handshake: requeue what is unacknowledged, minus what was delivered."""
        if peer.remote_incarnation and peer.remote_incarnation != ack.incarnation:
            log.info("%s: peer %s restarted (new incarnation)", self.role, peer.role)
        peer.remote_incarnation = ack.incarnation
        if peer.unacked:
            self.stats.retransmitted += len(peer.unacked)
            peer.queued_bytes += sum(len(o.frame) for o in peer.unacked)
            peer.unacked.extend(peer.queue)
            peer.queue, peer.unacked = peer.unacked, deque()
        queue = peer.queue
        while queue and queue[0].seq <= ack.delivered:
            out = queue.popleft()
            peer.queued_bytes -= len(out.frame)
            if out.waiter is not None and not out.waiter.done():
                out.waiter.set_result(None)

    def _fail_all(self, peer: _Peer, exc: _StreamError) -> None:
        error = TransportError(f"peer {peer.role} at {peer.address}: {exc}")
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
                    peer.queued_bytes -= len(out.frame)
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

    # -- receiving -----------------------------------------------------------

    async def _stop_server(self) -> None:
        """Stop accepting and delivering; acknowledge what was delivered; close every connection."""
        self._stopping = True
        server, self._server = self._server, None
        if server is not None:
            server.close()
        conns = list(self._conns)
        for conn in conns:
            conn.ack()  # exactly what was delivered: nothing is delivered from now on
            conn.shut()
        if conns:
            await asyncio.wait([c.closed for c in conns], timeout=1.0)
            for conn in conns:
                if conn.transport is not None:
                    conn.transport.abort()
        if server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 1.0)
