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
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from choreo import _codec
from choreo._envelope import Envelope, Kind
from choreo._errors import (
    ChoreoError,
    ChoreoRuntimeError,
    CodecError,
    DeadlineError,
    PeerFailedError,
    TransportError,
    UsageError,
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
        return n // 2 + 1 if n else 0
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
        "draining",
        "members",
        "node",
        "outbox",
        "peers",
        "result_waiter",
        "results",
        "role",
        "session",
        "timeout",
        "unsent",
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
        #: envelopes for group members, sent in the background in order (see Endpoint._put)
        self.outbox: dict[str, deque[Envelope]] = {}
        self.draining: set[str] = set()
        #: every group member of the session: what goes to them goes through ``outbox``
        self.members: set[str] = set()
        #: envelopes for members that could not be reached, dropped
        self.unsent = 0

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


def _expire(fut: asyncio.Future[None]) -> None:
    """A wait's timer: end the wait (the waiter then finds what it waits for, or not)."""
    if not fut.done():
        fut.set_result(None)


async def _wait(ctx: SessionContext, fut: asyncio.Future[None], deadline: float) -> None:
    """Wait until ``fut`` is resolved (``SessionContext.wake``) or the loop time ``deadline``.

    The hot path of every receive that has to wait: the waiting task awaits
    ``fut`` itself, and a timer handle resolves it at the deadline. Unlike
    ``asyncio.wait_for`` this costs no intermediate future nor its callback:
    the task wakes up in the loop iteration after ``wake`` resolves ``fut``.
    """
    timer = fut.get_loop().call_at(deadline, _expire, fut)
    try:
        await fut
    finally:
        timer.cancel()
        ctx.waiter = ctx.waiting_on = None


#: seconds between two looks at the backlog of a paused peer
_RESUME_POLL = 0.02


class _Held:
    """What one peer sent that a node holds and its program has not taken yet.

    ``pending`` and ``pending_bytes`` count exactly the envelopes waiting for
    sessions not opened here. ``count`` and ``nbytes`` (kept only when the
    transport can pause a peer) also count what went into open sessions:
    nothing tells the node when a session takes an envelope, so they only
    grow, and ``Node._check`` sets them right (a recount) whenever they reach
    ``check_count`` or ``check_bytes``.
    """

    __slots__ = ("check_bytes", "check_count", "count", "nbytes", "pending", "pending_bytes")

    def __init__(self, check_count: int, check_bytes: int) -> None:
        self.pending = 0
        self.pending_bytes = 0
        self.count = 0
        self.nbytes = 0
        self.check_count = check_count
        self.check_bytes = check_bytes


def _unread_from(core: SessionCore, sender: str) -> Sequence[Envelope]:
    """The envelopes from ``sender`` that ``core`` holds and its role has not taken yet."""
    queues = getattr(core, "_queues", None)  # SessionCore's FIFO queue per sender
    if isinstance(queues, dict):
        return queues.get(sender) or ()
    return ()


class Node:
    """One role attached to a transport, hosting any number of sessions.

    Limits (docs/running.md, "Limits"):

    * per peer, at most ``max_buffered`` envelopes and ``max_buffered_bytes``
      payload bytes that this role's program has not taken yet, whether they
      wait for a session not opened here or were delivered to an open session
      and not received yet. On a transport that can pause a peer
      (``pause_peer``/``resume_peer``: the gRPC transport) the node pauses a
      peer that reaches either bound (or an eighth more: the count is checked
      in steps) and resumes it once its backlog is down to half; the peer's
      sends then wait, and fail after their deadline if this role never
      catches up. Envelopes for sessions not opened here beyond twice these
      bounds (only a transport that cannot pause lets so many through) are
      dropped and counted in ``dropped_overflow``;
    * at most ``max_pending`` envelopes, from all peers, wait for sessions not
      opened here (beyond: dropped, counted in ``dropped_overflow``);
    * on a transport that can pause a peer, envelopes of a session that is not
      opened here within ``pending_ttl`` seconds are dropped, counted in
      ``dropped_unknown`` and logged: a session that never starts here cannot
      keep its sender paused;
    * at most ``max_sessions`` sessions are open at once: ``open`` raises
      ``TransportError`` beyond.

    Args:
        role: the role (or group member) name this node receives for.
        transport: how envelopes travel.
        max_pending: envelopes buffered for sessions not opened yet, at most.
        max_buffered: per peer, envelopes held and not taken yet (see above).
        max_buffered_bytes: per peer, payload bytes held and not taken yet.
        max_sessions: sessions open at once, at most (``None``: no limit).
        pending_ttl: seconds an envelope waits for its session to be opened
            here (``None``: forever).

    Raises:
        UsageError: a limit is not positive.
    """

    def __init__(
        self,
        role: str,
        transport: Transport,
        *,
        max_pending: int = 100_000,
        max_buffered: int = 10_000,
        max_buffered_bytes: int = 64 * 1024 * 1024,
        max_sessions: int | None = None,
        pending_ttl: float | None = 60.0,
    ) -> None:
        for name, value in (
            ("max_pending", max_pending),
            ("max_buffered", max_buffered),
            ("max_buffered_bytes", max_buffered_bytes),
            ("max_sessions", max_sessions),
            ("pending_ttl", pending_ttl),
        ):
            if value is not None and (isinstance(value, bool) or not value > 0):
                raise UsageError(f"Node {role}: {name} must be positive, got {value!r}")
        self.role = role
        self.transport = transport
        self._sessions: dict[str, SessionContext] = {}
        self._pending: dict[str, list[Envelope]] = {}
        self._pending_count = 0
        self._max_pending = max_pending
        self.max_buffered = max_buffered
        self.max_buffered_bytes = max_buffered_bytes
        self.max_sessions = max_sessions
        self.pending_ttl = pending_ttl
        self._closed: OrderedDict[str, None] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._held: dict[str, _Held] = {}
        #: when the first envelope of each session not opened here arrived
        self._pending_since: dict[str, float] = {}
        self._paused: set[str] = set()
        pause = getattr(transport, "pause_peer", None)
        resume = getattr(transport, "resume_peer", None)
        flow = callable(pause) and callable(resume)
        self._pause: Callable[[str], None] | None = pause if flow else None
        self._resume: Callable[[str], None] | None = resume if flow else None
        self._poll_timer: asyncio.TimerHandle | None = None
        self._sweep_timer: asyncio.TimerHandle | None = None
        #: envelopes dropped because their session had already finished here
        self.dropped_late = 0
        #: envelopes dropped because the pending buffer was full
        self.dropped_overflow = 0
        #: envelopes dropped because their session was not opened here within pending_ttl
        self.dropped_unknown = 0
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
        """Join ``session``: envelopes already buffered for it are delivered now.

        Raises:
            TransportError: ``max_sessions`` sessions are open already.
        """
        limit = self.max_sessions
        if limit is not None and len(self._sessions) >= limit and session not in self._sessions:
            raise TransportError(
                f"{self.role} is at its limit of {limit} concurrent sessions (max_sessions): "
                f"session {session} cannot be opened until one ends"
            )
        ctx = SessionContext(self, session, chash, timeout, peers)
        self._sessions[session] = ctx
        self._pending_since.pop(session, None)
        for env in self._pending.pop(session, ()):
            self._pending_count -= 1
            held = self._held[env.sender]
            held.pending -= 1
            held.pending_bytes -= len(env.payload)
            ctx.core.deliver(env)
        self._answer_rejects(ctx)
        return ctx

    def close(self, session: str) -> None:
        """Leave ``session``; later envelopes for it are dropped and counted."""
        if self._sessions.pop(session, None) is not None:
            self._closed[session] = None
            while len(self._closed) > 10_000:
                self._closed.popitem(last=False)

    def discard(self, session: str) -> None:
        """Never join ``session``: drop what waits for it, and what comes later."""
        self._drop_pending(session)
        if session not in self._sessions:
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
            if self._pause is not None:
                held = self._held.get(env.sender) or self._new_held(env.sender)
                held.count += 1
                held.nbytes += len(env.payload)
                if held.count >= held.check_count or held.nbytes >= held.check_bytes:
                    self._check(env.sender, held)
            return
        if env.kind == Kind.START and self.on_start is not None:
            self.on_start(env)
            return
        if env.session in self._closed:
            self.dropped_late += 1
            return
        self._buffer(env)

    # -- limits ----------------------------------------------------------------

    @property
    def paused_peers(self) -> list[str]:
        """The peers this node asked its transport to stop delivering from (sorted)."""
        return sorted(self._paused)

    def buffered(self, peer: str) -> tuple[int, int]:
        """Envelopes from ``peer`` held here and not taken yet, and their payload bytes."""
        held = self._held.get(peer)
        if held is None:
            return 0, 0
        return self._recount(peer, held)

    def _new_held(self, peer: str) -> _Held:
        held = self._held[peer] = _Held(self.max_buffered, self.max_buffered_bytes)
        return held

    def _buffer(self, env: Envelope) -> None:
        """Keep ``env`` until its session is opened here, within the limits."""
        sender = env.sender
        held = self._held.get(sender) or self._new_held(sender)
        size = len(env.payload)
        if (
            held.pending >= 2 * self.max_buffered
            or held.pending_bytes >= 2 * self.max_buffered_bytes
            or self._pending_count >= self._max_pending
        ):
            self.dropped_overflow += 1
            if self.dropped_overflow % 1000 == 1:  # the first, then one in a thousand
                log.warning(
                    "%s: dropped %s from %s for session %s (%d dropped so far): %d envelopes "
                    "(%d from %s, %d bytes) already wait for sessions not opened here",
                    self.role, env.label, sender, env.session, self.dropped_overflow,
                    self._pending_count, held.pending, sender, held.pending_bytes,
                )  # fmt: skip
            return
        waiting = self._pending.get(env.session)
        if waiting is None:
            waiting = self._pending[env.session] = []
            if self._pause is not None and self.pending_ttl is not None:
                loop = asyncio.get_running_loop()
                self._pending_since[env.session] = loop.time()
                if self._sweep_timer is None:
                    self._sweep_timer = loop.call_later(self.pending_ttl, self._sweep)
        waiting.append(env)
        self._pending_count += 1
        held.pending += 1
        held.pending_bytes += size
        if self._pause is not None:
            held.count += 1
            held.nbytes += size
            if held.count >= held.check_count or held.nbytes >= held.check_bytes:
                self._check(sender, held)

    def _recount(self, peer: str, held: _Held) -> tuple[int, int]:
        """Exactly what ``peer`` has here, not taken yet; sets ``held`` right."""
        count, nbytes = held.pending, held.pending_bytes
        for ctx in self._sessions.values():
            unread = _unread_from(ctx.core, peer)
            if unread:
                count += len(unread)
                nbytes += sum(len(e.payload) for e in unread)
        held.count, held.nbytes = count, nbytes
        return count, nbytes

    def _check(self, peer: str, held: _Held) -> None:
        """``peer``'s count reached its next check: pause it if it holds too much here."""
        count, nbytes = self._recount(peer, held)
        if count >= self.max_buffered or nbytes >= self.max_buffered_bytes:
            if peer not in self._paused and self._pause is not None:
                self._paused.add(peer)
                log.info(
                    "%s: holding %d envelopes (%d bytes) from %s that are not taken yet: "
                    "pausing it",
                    self.role, count, nbytes, peer,
                )  # fmt: skip
                self._pause(peer)
                if self._poll_timer is None:
                    loop = asyncio.get_running_loop()
                    self._poll_timer = loop.call_later(_RESUME_POLL, self._poll)
        # Recount again after an eighth of the bound at least: a recount costs what is held.
        held.check_count = max(self.max_buffered, count + self.max_buffered // 8)
        held.check_bytes = max(self.max_buffered_bytes, nbytes + self.max_buffered_bytes // 8)

    def _poll(self) -> None:
        """Resume the paused peers whose backlog is down to half the bounds."""
        self._poll_timer = None
        for peer in sorted(self._paused):
            held = self._held[peer]
            count, nbytes = self._recount(peer, held)
            if count <= self.max_buffered // 2 and nbytes <= self.max_buffered_bytes // 2:
                self._paused.discard(peer)
                held.check_count, held.check_bytes = self.max_buffered, self.max_buffered_bytes
                if self._resume is not None:
                    self._resume(peer)
        if self._paused:
            loop = asyncio.get_running_loop()
            self._poll_timer = loop.call_later(_RESUME_POLL, self._poll)

    def _sweep(self) -> None:
        """Drop what waited longer than ``pending_ttl`` for a session never opened here."""
        self._sweep_timer = None
        ttl = self.pending_ttl
        if ttl is None or not self._pending_since:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        for session, since in list(self._pending_since.items()):
            if now - since >= ttl:
                senders = sorted({e.sender for e in self._pending.get(session, ())})
                dropped = self._drop_pending(session)
                self.dropped_unknown += dropped
                log.warning(
                    "%s: dropped %d envelopes from %s for session %s, which was not opened "
                    "here within %gs (pending_ttl): an unknown session",
                    self.role, dropped, ", ".join(senders), session, ttl,
                )  # fmt: skip
        if self._pending_since:
            first = min(self._pending_since.values())
            self._sweep_timer = loop.call_later(max(first + ttl - now, 0.0), self._sweep)

    def _drop_pending(self, session: str) -> int:
        """Forget the envelopes waiting for ``session``; how many there were."""
        self._pending_since.pop(session, None)
        envs = self._pending.pop(session, ())
        for env in envs:
            held = self._held[env.sender]
            held.pending -= 1
            held.pending_bytes -= len(env.payload)
            held.count = max(held.count - 1, 0)
            held.nbytes = max(held.nbytes - len(env.payload), 0)
        self._pending_count -= len(envs)
        return len(envs)

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
        for timer in (self._poll_timer, self._sweep_timer):
            if timer is not None:
                timer.cancel()
        self._poll_timer = self._sweep_timer = None
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
        for members in self.groups.values():
            ctx.members.update(members)

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
                if name not in got and name not in core.failed:
                    env = core.take(name, label, Kind.DATA)
                    if env is not None:
                        got[name] = env
                        if soft is None and len(got) >= need:  # exactly the quorum
                            break
            if len(got) >= need and (soft is None or loop.time() >= soft):
                break
            alive = [n for n in names if n not in got and n not in core.failed]
            if not alive and len(got) >= need:
                break  # everyone who can still answer has
            if len(got) + len(alive) < need:  # failed members make the quorum impossible
                gone = [n for n in names if n in core.failed and n not in got]
                raise PeerFailedError(
                    f"{ctx.role} needs {need} of {len(names)} replies sent at {label} in session "
                    f"{ctx.session}, but {', '.join(gone)} failed: "
                    + "; ".join(str(core.failed[n]) for n in gone[:1])
                )
            until = soft if soft is not None and len(got) >= need else deadline
            remaining = until - loop.time()
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
            await _wait(ctx, fut, until)
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
        if env.receiver in ctx.members:  # one path per peer, or FIFO would break
            self._enqueue(env)
            return
        try:
            await ctx.node.transport.send(env, ctx.timeout)
        except TransportError as exc:
            raise TransportError(
                f"{ctx.role} could not send {env.label} to {env.receiver} in session "
                f"{ctx.session}: {exc}"
            ) from None

    def _enqueue(self, env: Envelope) -> None:
        """Send to a group member in the background, in order (FIFO per member).

        A member that is down or unreachable must not stop the sender (the
        protocol tolerates it with quorum and timeout gathers, as in the
        simulator, where sends never fail): what cannot reach it is dropped,
        counted in ``unsent`` and logged, and the member is marked failed in
        this session, so that waiting for it fails at once.
        """
        ctx = self._ctx
        peer = env.receiver
        if peer in ctx.core.failed:
            ctx.unsent += 1
            return
        ctx.outbox.setdefault(peer, deque()).append(env)
        if peer not in ctx.draining:
            ctx.draining.add(peer)
            ctx.node.spawn(self._drain(peer))

    async def _drain(self, peer: str) -> None:
        ctx = self._ctx
        queue = ctx.outbox[peer]
        try:
            while queue:
                try:
                    await ctx.node.transport.send(queue[0], ctx.timeout)
                except TransportError as exc:
                    ctx.unsent += len(queue)
                    log.warning(
                        "%s: group member %s unreachable in session %s, %d message(s) dropped: %s",
                        ctx.role,
                        peer,
                        ctx.session,
                        len(queue),
                        exc,
                    )
                    queue.clear()
                    ctx.core.failed.setdefault(
                        peer,
                        PeerFailedError(
                            f"{ctx.role} could not reach group member {peer} in session "
                            f"{ctx.session}: {exc}"
                        ),
                    )
                    ctx.wake(peer)
                    return
                queue.popleft()
        finally:
            ctx.draining.discard(peer)

    async def _take(self, peer: str, label: str, kind: Kind) -> Envelope:
        ctx = self._ctx
        env = ctx.core.take(peer, label, kind)
        if env is not None:
            return env
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ctx.timeout
        while True:
            if loop.time() >= deadline:
                what = "the selection" if kind == Kind.SELECT else "the message"
                raise DeadlineError(
                    f"{ctx.role} waited {ctx.timeout:g}s in session {ctx.session} for {what} "
                    f"from {peer} sent at {label}, and it did not come"
                )
            fut: asyncio.Future[None] = loop.create_future()
            ctx.waiter, ctx.waiting_on = fut, peer
            await _wait(ctx, fut, deadline)
            env = ctx.core.take(peer, label, kind)
            if env is not None:
                return env
