"""What projected code calls: ``Endpoint`` (one role in one session) and ``Node``.

A ``Node`` is one role's presence on a transport: it routes every inbound
envelope to the ``SessionCore`` of its session, buffers envelopes of sessions
that have not been opened here yet (a peer may start sooner), and drops (and
counts) envelopes of sessions already closed. An ``Endpoint`` is the API the
generated code uses: ``send``, ``recv``, ``select``, ``offer`` and ``call``
(sub-choreographies, with the callee's role names mapped onto ours).
A node's optional ``tracer`` sees every envelope it sends or is delivered, on
any transport (records: ``choreo._trace``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from choreo import _codec
from choreo._envelope import Envelope, Kind
from choreo._errors import ChoreoError, CodecError, DeadlineError, TransportError
from choreo._session import MISMATCH_PREFIX, SessionCore
from choreo._transport import Transport

if TYPE_CHECKING:
    from choreo._dsl import Choreography

__all__ = ["Endpoint", "Node", "SessionContext"]

log = logging.getLogger("choreo.runtime")

#: seconds spent trying to tell one peer that this role failed
ABORT_TIMEOUT = 0.5

_TRUE = b"\x01"
_FALSE = b"\x00"


class SessionContext:
    """The state one role keeps for one session: its core, its waiter, its peers."""

    __slots__ = (
        "chash",
        "core",
        "node",
        "peers",
        "result_waiter",
        "results",
        "role",
        "session",
        "timeout",
        "waiter",
        "waiting_on",
    )

    def __init__(
        self,
        node: Node,
        session: str,
        chash: str,
        timeout: float,
        peers: Iterable[str] = (),
    ) -> None:
        self.node = node
        self.role = node.role
        self.session = session
        self.chash = chash
        self.timeout = timeout
        self.core = SessionCore(session, node.role, chash)
        self.peers = tuple(p for p in peers if p != node.role)
        self.waiter: asyncio.Future[None] | None = None
        self.waiting_on: str | None = None
        #: service mode: RESULT envelopes by sender, and who waits for them
        self.results: dict[str, Envelope] = {}
        self.result_waiter: asyncio.Future[None] | None = None

    def wake(self, sender: str) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            if sender == self.waiting_on or self.core.failure is not None:
                waiter.set_result(None)


class Node:
    """One role attached to a transport, hosting any number of sessions.

    Args:
        role: the role (or group member) name this node receives for.
        transport: how envelopes travel.
        max_pending: envelopes buffered for sessions not opened yet, at most.
    """

    def __init__(self, role: str, transport: Transport, *, max_pending: int = 100_000) -> None:
        self.role = role
        self.transport = transport
        self._sessions: dict[str, SessionContext] = {}
        self._pending: dict[str, list[Envelope]] = {}
        self._pending_count = 0
        self._max_pending = max_pending
        self._closed: OrderedDict[str, None] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        #: envelopes dropped because their session had already finished here
        self.dropped_late = 0
        #: envelopes dropped because the pending buffer was full
        self.dropped_overflow = 0
        #: service mode: called with every START envelope
        self.on_start: Callable[[Envelope], None] | None = None
        #: tracing (see ``choreo._trace``): called as ``tracer("send", env)`` just before
        #: this node hands an envelope to the transport (or delivers one to itself) and
        #: as ``tracer("recv", env)`` for every envelope delivered here. None (the
        #: default) costs one attribute check per envelope.
        self.tracer: Callable[[str, Envelope], None] | None = None

    async def start(self) -> None:
        """Start receiving from the transport."""
        await self.transport.start(self.deliver)

    def open(
        self, session: str, chash: str, timeout: float, peers: Iterable[str] = ()
    ) -> SessionContext:
        """Join ``session``: envelopes already buffered for it are delivered now."""
        ctx = SessionContext(self, session, chash, timeout, peers)
        self._sessions[session] = ctx
        for env in self._pending.pop(session, ()):
            self._pending_count -= 1
            ctx.core.deliver(env)
        self._answer_rejects(ctx)
        return ctx

    def close(self, session: str) -> None:
        """Leave ``session``; later envelopes for it are dropped and counted."""
        if self._sessions.pop(session, None) is not None:
            self._closed[session] = None
            while len(self._closed) > 10_000:
                self._closed.popitem(last=False)

    def deliver(self, env: Envelope) -> None:
        """Route one inbound envelope (the transport's callback)."""
        if self.tracer is not None:
            self.tracer("recv", env)
        ctx = self._sessions.get(env.session)
        if ctx is not None:
            if env.kind == Kind.RESULT:  # service mode: outside the session's FIFO matching
                ctx.results[env.sender] = env
                if ctx.result_waiter is not None and not ctx.result_waiter.done():
                    ctx.result_waiter.set_result(None)
                return
            ctx.core.deliver(env)
            if ctx.core.reject:
                self._answer_rejects(ctx)
            ctx.wake(env.sender)
            return
        if env.kind == Kind.START and self.on_start is not None:
            self.on_start(env)
            return
        if env.session in self._closed:
            self.dropped_late += 1
            return
        if self._pending_count >= self._max_pending:
            self.dropped_overflow += 1
            log.warning(
                "%s: dropped %s from %s for session %s: %d envelopes already wait for "
                "sessions not opened here",
                self.role,
                env.label,
                env.sender,
                env.session,
                self._pending_count,
            )
            return
        self._pending.setdefault(env.session, []).append(env)
        self._pending_count += 1

    def _answer_rejects(self, ctx: SessionContext) -> None:
        rejected, ctx.core.reject = ctx.core.reject, []
        for env in rejected:
            reason = (
                f"{MISMATCH_PREFIX}{self.role} runs choreography source {ctx.chash}, "
                f"{env.sender} sent from source {env.chash}"
            )
            self.spawn(self._abort_one(ctx, env.sender, reason))

    async def _abort_one(self, ctx: SessionContext, peer: str, reason: str) -> None:
        env = Envelope(
            ctx.session, self.role, peer, "abort", Kind.ABORT, reason.encode(), ctx.chash
        )
        if self.tracer is not None:
            self.tracer("send", env)
        try:
            await self.transport.send(env, min(ctx.timeout, ABORT_TIMEOUT))
        except ChoreoError:
            pass  # best effort: the peer's deadline still bounds its wait

    def spawn(self, coro: Awaitable[None]) -> None:
        """Run ``coro`` in the background, keeping a reference until it ends."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def abort(self, ctx: SessionContext, reason: str) -> None:
        """Tell every peer of the session that this role failed (best effort, concurrently).

        A dead peer cannot be told; each attempt is bounded by ``ABORT_TIMEOUT``
        so that a failing role does not linger for a whole deadline per peer.
        """
        if ctx.peers:
            await asyncio.gather(*(self._abort_one(ctx, p, reason) for p in ctx.peers))

    async def aclose(self) -> None:
        """Close the transport and wait for background sends."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.transport.close()


class Endpoint:
    """One role's view of one session, as used by projected code.

    ``roles`` maps the role names the code was written with (the
    choreography's parameters) to the names of the roles that run them.
    """

    __slots__ = ("_ctx", "roles")

    def __init__(self, ctx: SessionContext, roles: Mapping[str, str]) -> None:
        self._ctx = ctx
        self.roles = roles

    @property
    def session(self) -> str:
        """The session id."""
        return self._ctx.session

    @property
    def role(self) -> str:
        """The name of the role running this endpoint."""
        return self._ctx.role

    async def send(self, to: str | tuple[str, ...], value: Any, label: str) -> None:
        """Send ``value`` to one role or to several (multicast).

        Raises:
            CodecError: ``value`` cannot be encoded.
            TransportError: a receiver could not be reached in time.
        """
        ctx = self._ctx
        try:
            payload = _codec.encode(value)
        except CodecError as exc:
            raise CodecError(f"{ctx.role} cannot send the value at {label}: {exc}") from None
        targets = (to,) if isinstance(to, str) else to
        for name in targets:
            env = Envelope(
                ctx.session, ctx.role, self.roles[name], label, Kind.DATA, payload, ctx.chash
            )
            await self._put(env)

    async def recv(self, frm: str, label: str) -> Any:
        """Receive the value sent by ``frm`` at ``label``.

        Raises:
            DeadlineError: nothing came before the session's deadline.
            ProtocolError: something other than the expected message came.
            PeerFailedError: the peer (or another role) failed.
        """
        env = await self._take(self.roles[frm], label, Kind.DATA)
        try:
            return _codec.decode(env.payload)
        except CodecError as exc:
            raise CodecError(
                f"{self._ctx.role} received an undecodable value from {env.sender} at {label}: {exc}"
            ) from None

    async def select(self, value: Any, to: tuple[str, ...], label: str) -> bool:
        """Decide a branch: tell every role in ``to`` which one, return it."""
        ctx = self._ctx
        taken = bool(value)
        payload = _TRUE if taken else _FALSE
        for name in to:
            env = Envelope(
                ctx.session, ctx.role, self.roles[name], label, Kind.SELECT, payload, ctx.chash
            )
            await self._put(env)
        return taken

    async def offer(self, frm: str, label: str) -> bool:
        """Learn from ``frm`` which branch was taken at ``label``."""
        env = await self._take(self.roles[frm], label, Kind.SELECT)
        return env.payload == _TRUE

    async def call(
        self, chor: Choreography, role: str, mapping: Mapping[str, str], *args: Any
    ) -> Any:
        """Run ``chor``'s projection at ``role``, its roles mapped by ``mapping`` to ours."""
        roles = {callee: self.roles[ours] for callee, ours in mapping.items()}
        return await chor._endpoint_function(role)(Endpoint(self._ctx, roles), *args)

    async def _put(self, env: Envelope) -> None:
        ctx = self._ctx
        tracer = ctx.node.tracer
        if tracer is not None:  # before the send: a local transport delivers inside it
            tracer("send", env)
        if env.receiver == ctx.role:  # a send to oneself moves nothing over the network
            if tracer is not None:
                tracer("recv", env)
            ctx.core.deliver(env)
            return
        try:
            await ctx.node.transport.send(env, ctx.timeout)
        except TransportError as exc:
            raise TransportError(
                f"{ctx.role} could not send {env.label} to {env.receiver} in session "
                f"{ctx.session}: {exc}"
            ) from None

    async def _take(self, peer: str, label: str, kind: Kind) -> Envelope:
        ctx = self._ctx
        env = ctx.core.take(peer, label, kind)
        if env is not None:
            return env
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ctx.timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                what = "the selection" if kind == Kind.SELECT else "the message"
                raise DeadlineError(
                    f"{ctx.role} waited {ctx.timeout:g}s in session {ctx.session} for {what} "
                    f"from {peer} sent at {label}, and it did not come"
                )
            fut: asyncio.Future[None] = loop.create_future()
            ctx.waiter, ctx.waiting_on = fut, peer
            try:
                await asyncio.wait_for(fut, remaining)
            except TimeoutError:
                pass
            finally:
                ctx.waiter = ctx.waiting_on = None
            env = ctx.core.take(peer, label, kind)
            if env is not None:
                return env
