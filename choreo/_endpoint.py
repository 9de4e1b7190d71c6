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
from choreo._errors import (
    ChoreoError,
    ChoreoRuntimeError,
    CodecError,
    DeadlineError,
    TransportError,
)
from choreo._session import MISMATCH_PREFIX, SessionCore
from choreo._transport import Transport

if TYPE_CHECKING:
    from choreo._dsl import Choreography

__all__ = ["Endpoint", "Node", "SessionContext", "majority"]

log = logging.getLogger("choreo.runtime")

#: seconds spent trying to tell one peer that this role failed
ABORT_TIMEOUT = 0.5

_TRUE = b"\x01"
_FALSE = b"\x00"


class _Majority:
    """``quorum=majority``: more than half of the members."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "majority"


#: ``g.send(v, to=r, quorum=majority)``: return once more than half of ``g`` replied
majority = _Majority()


def _quorum(quorum: Any, n: int, role: str, label: str) -> int:
    if quorum is None:
        return n
    if quorum is majority:
        return n // 2 + 1
    if isinstance(quorum, bool) or not isinstance(quorum, int) or not 0 <= quorum <= n:
        raise ChoreoRuntimeError(
            f"{role}: the quorum at {label} is {quorum!r}; it must be an int between 0 and "
            f"the number of members ({n}), or `majority`"
        )
    return quorum


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
        #: the sender (or, in a gather, the senders) the waiter waits for
        self.waiting_on: str | frozenset[str] | None = None
        #: service mode: RESULT envelopes by sender, and who waits for them
        self.results: dict[str, Envelope] = {}
        self.result_waiter: asyncio.Future[None] | None = None

    def wake(self, sender: str) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiting_on = self.waiting_on
            if (
                sender == waiting_on
                or self.core.failure is not None
                or (isinstance(waiting_on, frozenset) and sender in waiting_on)
            ):
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
    choreography's parameters) to the names of the roles that run them;
    ``groups`` maps each group parameter to its members' names. Wherever a
    role is expected, the group methods (``send_to``, ``recv_from``,
    ``gather``, ``scatter``, ``select``) take a role parameter's name, a
    member's name, or a tuple of members (a group or a slice of one).
    """

    __slots__ = ("_ctx", "groups", "roles")

    def __init__(
        self,
        ctx: SessionContext,
        roles: Mapping[str, str],
        groups: Mapping[str, tuple[str, ...]] | None = None,
    ) -> None:
        self._ctx = ctx
        self.roles = roles
        self.groups: Mapping[str, tuple[str, ...]] = groups or {}

    @property
    def me(self) -> str:
        """The name of the role or group member running this endpoint."""
        return self._ctx.role

    def group(self, name: str) -> tuple[str, ...]:
        """The members of group parameter ``name``, in census order."""
        return tuple(self.groups.get(name, ()))

    def _names(self, to: Any) -> list[str]:
        """Role expressions (a name, or tuples of names, possibly nested) -> role names."""
        if isinstance(to, str):
            return [self.roles.get(to, to)]
        out: list[str] = []
        for item in to:
            out.extend(self._names(item))
        return out

    def among(self, *refs: Any) -> bool:
        """Whether this member is one of ``refs``."""
        return self._ctx.role in self._names(refs)

    async def send_to(self, to: Any, value: Any, label: str) -> None:
        """Send ``value`` to every role or member ``to`` names (a multicast to groups)."""
        ctx = self._ctx
        try:
            payload = _codec.encode(value)
        except CodecError as exc:
            raise CodecError(f"{ctx.role} cannot send the value at {label}: {exc}") from None
        for name in self._names(to):
            await self._put(
                Envelope(ctx.session, ctx.role, name, label, Kind.DATA, payload, ctx.chash)
            )

    async def scatter(self, to: Any, value: Any, label: str) -> None:
        """Send each member ``to`` names its own part: ``value[member]``.

        Raises:
            ChoreoRuntimeError: ``value`` is not a mapping with an entry for every member.
        """
        ctx = self._ctx
        names = self._names(to)
        if not isinstance(value, Mapping):
            raise ChoreoRuntimeError(
                f"{ctx.role} scatters a {type(value).__name__} at {label}: a scatter needs a "
                "dict member -> value"
            )
        missing = [n for n in names if n not in value]
        if missing:
            raise ChoreoRuntimeError(
                f"{ctx.role} scatters at {label} a dict with no entry for "
                + ", ".join(missing)
                + f" (it has {sorted(map(str, value))})"
            )
        for name in names:
            try:
                payload = _codec.encode(value[name])
            except CodecError as exc:
                raise CodecError(f"{ctx.role} cannot send the value at {label}: {exc}") from None
            await self._put(
                Envelope(ctx.session, ctx.role, name, label, Kind.DATA, payload, ctx.chash)
            )

    async def recv_from(self, frm: str, label: str) -> Any:
        """Receive from one role or member (``frm`` a role parameter or a member's name)."""
        env = await self._take(self.roles.get(frm, frm), label, Kind.DATA)
        return self._decode(env, label)

    def _decode(self, env: Envelope, label: str) -> Any:
        try:
            return _codec.decode(env.payload)
        except CodecError as exc:
            raise CodecError(
                f"{self._ctx.role} received an undecodable value from {env.sender} at {label}: {exc}"
            ) from None

    async def gather(
        self, frm: Any, label: str, quorum: Any = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Receive one value from each member ``frm`` names: ``{member: value}``.

        With ``quorum=k`` (or ``quorum=majority``) return as soon as ``k`` have
        arrived, with exactly those ``k``; the others' replies are dropped when
        they come (counted in ``late_replies``), never delivered to a later
        receive. With ``timeout=t``, return after ``t`` seconds with what has
        arrived by then (at least the quorum, which defaults to 0), or as soon
        as every member answered.

        Raises:
            DeadlineError: fewer than the quorum arrived before the deadline.
            ChoreoRuntimeError: the quorum is not between 0 and the number of members.
        """
        ctx = self._ctx
        names = self._names(frm)
        if timeout is not None and quorum is None:
            quorum = 0
        need = _quorum(quorum, len(names), ctx.role, label)
        got: dict[str, Envelope] = {}
        core = ctx.core
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ctx.timeout
        soft = None if timeout is None else loop.time() + max(0.0, float(timeout))
        while len(got) < need or (soft is not None and len(got) < len(names)):
            for name in names:
                if name not in got:
                    env = core.take(name, label, Kind.DATA)
                    if env is not None:
                        got[name] = env
                        if soft is None and len(got) >= need:  # exactly the quorum
                            break
            if len(got) >= need and (soft is None or loop.time() >= soft):
                break
            if len(got) == len(names):
                break
            remaining = (soft if soft is not None and len(got) >= need else deadline) - loop.time()
            if soft is not None and len(got) >= need and remaining <= 0:
                break
            if remaining <= 0:
                missing = [n for n in names if n not in got]
                raise DeadlineError(
                    f"{ctx.role} waited {ctx.timeout:g}s in session {ctx.session} for "
                    f"{need} of {len(names)} replies sent at {label}; got {len(got)}, none "
                    f"came from {', '.join(missing)}"
                )
            fut: asyncio.Future[None] = loop.create_future()
            ctx.waiter = fut
            ctx.waiting_on = frozenset(n for n in names if n not in got)
            try:
                await asyncio.wait_for(fut, remaining)
            except TimeoutError:
                pass
            finally:
                ctx.waiter = ctx.waiting_on = None
        for name in names:
            if name not in got:
                core.skip(name, label)
        return {n: self._decode(got[n], label) for n in names if n in got}

    @property
    def late_replies(self) -> int:
        """Replies dropped in this session because their quorum gather had completed."""
        return self._ctx.core.late

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
        return self._decode(env, label)

    async def select(
        self, value: Any, to: tuple[Any, ...], label: str, by: tuple[str, ...] | None = None
    ) -> bool:
        """Decide a branch: tell every role in ``to`` which one, return it.

        ``by``: when a group decides, only its first member tells the others.
        """
        ctx = self._ctx
        taken = bool(value)
        if by is not None and (not by or by[0] != ctx.role):
            return taken
        payload = _TRUE if taken else _FALSE
        for name in self._names(to):
            env = Envelope(ctx.session, ctx.role, name, label, Kind.SELECT, payload, ctx.chash)
            await self._put(env)
        return taken

    async def offer(self, frm: str, label: str) -> bool:
        """Learn from ``frm`` which branch was taken at ``label``."""
        env = await self._take(self.roles.get(frm, frm), label, Kind.SELECT)
        return env.payload == _TRUE

    async def call(
        self,
        chor: Choreography,
        role: str,
        mapping: Mapping[str, str],
        *args: Any,
        groups: Mapping[str, Any] | None = None,
    ) -> Any:
        """Run ``chor``'s projection at ``role``, its roles mapped by ``mapping`` to ours.

        ``groups`` maps the callee's group parameters to the members passed in.
        """
        roles = {callee: self.roles.get(ours, ours) for callee, ours in mapping.items()}
        members = {k: tuple(self._names(v)) for k, v in (groups or {}).items()}
        return await chor._endpoint_function(role)(Endpoint(self._ctx, roles, members), *args)

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
