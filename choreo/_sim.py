"""Deterministic simulation: every role in one process, on virtual time, under faults.

Theory of operation
-------------------
Three pieces, each deterministic given one seed:

* ``SimLoop`` is an asyncio event loop whose clock is *virtual*. When no
  callback is ready, instead of sleeping until the next timer it jumps the
  clock to that timer. Receive deadlines (``asyncio.wait_for`` against
  ``loop.time()``), ``asyncio.sleep`` and message delays therefore fire in
  virtual time: a 30 s deadline costs no real time. The loop never blocks and
  never polls a socket; if nothing is ready and no timer is pending, nothing
  can ever happen again and the run fails with ``ChoreoRuntimeError``
  ("simulation stuck"). Only in-process code runs under it: no sockets, no
  threads.
* ``SimNetwork`` is a ``Transport`` factory like ``LocalNetwork``. Every
  ordered pair (sender, receiver) has a FIFO queue. A sent envelope is given a
  due time (now + a random latency + any delay from the fault plan); whenever
  heads of queues are due, the seeded scheduler picks which pair delivers
  next. Only the head of a pair can be delivered, so FIFO per pair holds
  whatever the delays, while different seeds interleave pairs differently.
  Faults: drop, delay, partition (a message whose *delivery* falls while its
  sender and receiver are on different sides of a partition is dropped, not
  held: a cut link loses what is in flight), crash (the role's node stops
  receiving, envelopes arriving for it are lost, its running session tasks
  are cancelled without telling anyone, its in-memory state is gone) and
  restart (the role receives again; in service mode its server is rebuilt
  from its state factory, so only ``Storage`` survives).
* A fault plan decides the faults: ``RandomFaults`` (seeded rates, bounded)
  or ``Script`` (an exact sequence of deliveries, drops, crashes, restarts,
  partitions, for replaying a walkthrough).

Determinism: the only source of randomness is one ``random.Random(seed)``;
the only clock is the virtual one; the ready queue of asyncio is FIFO; every
collection iterated to make a decision is ordered by insertion (never a
``set`` of strings, whose order depends on ``PYTHONHASHSEED``). Session ids
that the service code draws at random are renamed ``s1, s2, ...`` in order
of first appearance in the trace. So the same seed gives the same trace,
byte for byte (``trace_jsonl``).
"""

from __future__ import annotations

import asyncio
import json
import random
import selectors
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, TypeVar, cast

from choreo._cluster import Cluster
from choreo._dsl import Choreography
from choreo._endpoint import Node
from choreo._envelope import Envelope, Kind
from choreo._errors import (
    ChoreoError,
    ChoreoRuntimeError,
    CrashedError,
    PeerFailedError,
    TransportError,
    UsageError,
)
from choreo._loader import choreographies_in
from choreo._run import DEFAULT_TIMEOUT, play_role
from choreo._run import cast as cast_of
from choreo._service import Client, Server
from choreo._trace import summarize
from choreo._transport import DEFAULT_MAX_MESSAGE_SIZE, Transport
from choreo._transport import Deliver as DeliverFn

__all__ = [
    "Crash",
    "CrashedError",
    "Deliver",
    "Drop",
    "FaultPlan",
    "Heal",
    "Partition",
    "RandomFaults",
    "Restart",
    "Script",
    "SimLoop",
    "SimNetwork",
    "SimResult",
    "Simulation",
    "Storage",
    "Wait",
    "run_simulated",
    "simulate",
    "trace_jsonl",
]

T = TypeVar("T")

#: virtual seconds of latency every message gets, drawn uniformly, unless a run says otherwise
DEFAULT_LATENCY = (0.0005, 0.002)

#: tolerance when comparing virtual times (the clock is a float)
_EPS = 1e-9


# --------------------------------------------------------------------------
# the virtual-time event loop


class _VirtualSelector(selectors.SelectSelector):
    """A selector that never waits: it moves the loop's virtual clock instead."""

    def __init__(self) -> None:
        super().__init__()
        self.loop: SimLoop | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        loop = self.loop
        assert loop is not None
        if timeout is None:
            raise ChoreoRuntimeError(
                f"simulation stuck at virtual time {loop.time():.6f}s: no task can make "
                "progress and no timer is pending (a wait without a deadline, or a thread)"
            )
        if timeout > 0:
            loop._advance()
        return []


class SimLoop(asyncio.SelectorEventLoop):
    """An asyncio event loop on virtual time.

    ``time()`` starts at 0 and only moves when nothing is ready to run: then it
    jumps to the earliest pending timer. Do not use sockets or threads under it.
    """

    def __init__(self) -> None:
        selector = _VirtualSelector()
        super().__init__(selector)
        selector.loop = self
        self._now = 0.0

    def time(self) -> float:
        """The virtual clock.

        Returns:
            Virtual seconds since the loop was made.
        """
        return self._now

    def _advance(self) -> None:
        scheduled: list[asyncio.TimerHandle] = self._scheduled  # type: ignore[attr-defined]
        if scheduled:
            self._now = max(self._now, scheduled[0].when())


def run_simulated(main: Callable[[], Awaitable[T]]) -> T:
    """Run ``main()`` to completion on a fresh ``SimLoop``; close the loop after.

    Args:
        main: makes the coroutine to run.

    Returns:
        What ``main()`` returned.

    Raises:
        UsageError: called from inside a running event loop.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise UsageError("a simulation runs its own event loop: call it outside any event loop")
    loop = SimLoop()
    try:
        return loop.run_until_complete(main())
    finally:
        try:
            left = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in left:
                task.cancel()
            if left:
                loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


# --------------------------------------------------------------------------
# persistence


class Storage(dict[str, Any]):
    """A dict that survives its role's crash and restart in a simulation.

    Everything else a role holds in memory is lost when it crashes. A protocol
    keeps state across a crash by taking a ``Storage`` as a located input
    (``store: At[dict, "acceptor"]``) and writing to it; a write is durable as
    soon as it returns (like a synchronous, fsync'd disk write).
    """


# --------------------------------------------------------------------------
# trace records


def _record(net: SimNetwork, event: str, env: Envelope | None = None, **extra: Any) -> None:
    rec: dict[str, Any] = {"t": round(net.now(), 9), "event": event}
    if env is not None:  # the fields of choreo._trace records, in virtual time
        rec.update(
            session=net.session_name(env.session),
            **{"from": env.sender, "to": env.receiver},
            label=env.label,
            kind=Kind(env.kind).name,
            size=len(env.payload),
            # only values the choreography computes: START/RESULT/ABORT payloads carry
            # random session ids and client names, which would break byte-for-byte replay
            summary=summarize(env) if env.kind in (Kind.DATA, Kind.SELECT) else "",
        )
    rec.update(extra)
    net.trace.append(rec)


def trace_jsonl(trace: Iterable[Mapping[str, Any]]) -> bytes:
    """A trace as JSON lines (sorted keys, no spaces): the bytes the same seed reproduces.

    Args:
        trace: trace records, as in ``SimResult.trace``.

    Returns:
        UTF-8 bytes, one record per line, each line ending in a newline.
    """
    return b"".join(
        json.dumps(r, sort_keys=True, separators=(",", ":")).encode() + b"\n" for r in trace
    )


# --------------------------------------------------------------------------
# fault plans


class FaultPlan:
    """Decides the faults of one simulated run (the base plan injects none).

    A plan is told about every send and asked about every envelope at the head
    of a queue; it acts on the network with ``crash``, ``restart``,
    ``partition``, ``heal``. A plan object keeps state: use one per run.
    """

    def attach(self, net: SimNetwork) -> None:
        """Called once, when the run starts, before any message is sent.

        Args:
            net: the simulated network.
        """

    def on_send(self, net: SimNetwork, env: Envelope) -> tuple[bool, float]:
        """Called at every send of an envelope.

        Args:
            net: the simulated network.
            env: the envelope sent.

        Returns:
            ``(drop, delay)``: whether to drop ``env`` at once, and how many extra
            virtual seconds it takes.
        """
        return False, 0.0

    def hold(self, net: SimNetwork, env: Envelope) -> bool:
        """Asked about an envelope due at the head of its queue.

        Args:
            net: the simulated network.
            env: the envelope.

        Returns:
            Whether ``env`` must wait for now.
        """
        return False

    def on_arrive(self, net: SimNetwork, env: Envelope) -> bool:
        """Called when ``env`` leaves its queue.

        Args:
            net: the simulated network.
            env: the envelope.

        Returns:
            True to drop ``env`` instead of delivering it.
        """
        return False


@dataclass
class RandomFaults(FaultPlan):
    """Faults drawn from the run's seed, at given rates and within given bounds.

    Args:
        drop: probability that a sent envelope is lost.
        delay: extra delay of every envelope, uniform in ``(low, high)`` virtual seconds.
        crash: probability, at every send, that a random role crashes then.
        max_crashes: crashes in the whole run, at most.
        restart: a crashed role restarts after a delay uniform in ``(low, high)``
            seconds; ``None``: it stays down.
        partition: probability, at every send, that the roles split in two
            random sides (when no partition is active).
        partition_for: how long a partition lasts, uniform in ``(low, high)`` seconds.
        max_partitions: partitions in the whole run, at most.
        roles: the roles that may crash or be partitioned (``None``: every role
            the simulation lets crash).
    """

    drop: float = 0.0
    delay: tuple[float, float] = (0.0, 0.0)
    crash: float = 0.0
    max_crashes: int = 1
    restart: tuple[float, float] | None = (0.5, 2.0)
    partition: float = 0.0
    partition_for: tuple[float, float] = (0.1, 1.0)
    max_partitions: int = 1
    roles: Sequence[str] | None = None
    crashes: int = field(default=0, init=False)
    partitions: int = field(default=0, init=False)

    def attach(self, net: SimNetwork) -> None:
        """Reset the counts of crashes and partitions for a new run.

        Args:
            net: the simulated network.
        """
        self.crashes = self.partitions = 0

    def _roles(self, net: SimNetwork) -> list[str]:
        allowed = net.crashable()
        if self.roles is not None:
            allowed = [r for r in allowed if r in self.roles]
        return allowed

    def on_send(self, net: SimNetwork, env: Envelope) -> tuple[bool, float]:
        """Draw this send's faults: a crash or partition now, a drop, a delay.

        Args:
            net: the simulated network.
            env: the envelope sent.

        Returns:
            ``(drop, delay)``: whether ``env`` is lost, and its extra virtual seconds.
        """
        rng = net.rng
        if self.crash and self.crashes < self.max_crashes and rng.random() < self.crash:
            alive = [r for r in self._roles(net) if not net.is_down(r)]
            if alive:
                victim = alive[rng.randrange(len(alive))]
                self.crashes += 1
                net.call_soon(net.crash, victim)
                if self.restart is not None:
                    net.call_later(rng.uniform(*self.restart), net.restart, victim)
        if (
            self.partition
            and self.partitions < self.max_partitions
            and not net.partitioned()
            and rng.random() < self.partition
        ):
            roles = self._roles(net)
            if len(roles) >= 2:
                shuffled = roles[:]
                rng.shuffle(shuffled)
                cut = rng.randrange(1, len(shuffled))
                self.partitions += 1
                net.partition(shuffled[:cut], shuffled[cut:])
                net.call_later(rng.uniform(*self.partition_for), net.heal)
        if self.drop and rng.random() < self.drop:
            return True, 0.0
        low, high = self.delay
        return False, rng.uniform(low, high) if high > 0 else 0.0


@dataclass(frozen=True)
class Deliver:
    """Script step: deliver the envelope ``sender -> receiver`` (with ``label``) now.

    ``label`` is a whole label (``"file.py:12"``), its end (``":12"``, ``"abort"``),
    a line number, or ``None`` for any label.
    """

    sender: str
    receiver: str
    label: str | int | None = None


@dataclass(frozen=True)
class Drop:
    """Script step: lose the envelope ``sender -> receiver`` (with ``label``) instead."""

    sender: str
    receiver: str
    label: str | int | None = None


@dataclass(frozen=True)
class Crash:
    """Script step: crash ``role`` now."""

    role: str


@dataclass(frozen=True)
class Restart:
    """Script step: restart ``role`` now."""

    role: str


@dataclass(frozen=True)
class Partition:
    """Script step: cut every link between ``side_a`` and ``side_b`` until ``Heal``."""

    side_a: tuple[str, ...]
    side_b: tuple[str, ...]


@dataclass(frozen=True)
class Heal:
    """Script step: end the partition."""


@dataclass(frozen=True)
class Wait:
    """Script step: let ``seconds`` of virtual time pass before the next step."""

    seconds: float


Step = Deliver | Drop | Crash | Restart | Partition | Heal | Wait


def _matches(step: Deliver | Drop, env: Envelope) -> bool:
    if step.sender != env.sender or step.receiver != env.receiver:
        return False
    label = step.label
    if label is None:
        return True
    if isinstance(label, int):
        return env.label.rsplit(":", 1)[-1] == str(label)
    return env.label == label or env.label.endswith(label)


class Script(FaultPlan):
    """An exact schedule: steps performed in order, for replaying a run step by step.

    Actions (``Crash``, ``Restart``, ``Partition``, ``Heal``) happen as soon as
    they become the current step; ``Wait`` lets virtual time pass. A
    ``Deliver`` or ``Drop`` step waits until a matching envelope is due at the
    head of its queue and then delivers or drops it. While steps remain, an
    envelope that matches a *remaining* ``Deliver``/``Drop`` step is held until
    its step is current; every other envelope flows under the seeded
    scheduler. So a script names only the messages whose order matters. When
    the last step is done, everything flows.

    Args:
        steps: the schedule.
    """

    def __init__(self, steps: Iterable[Step]) -> None:
        self.steps: list[Step] = list(steps)
        self.position = 0
        self._waiting = False

    def attach(self, net: SimNetwork) -> None:
        """Start the schedule from its first step, performing the leading actions.

        Args:
            net: the simulated network.
        """
        self.position, self._waiting = 0, False
        self._run_actions(net)

    @property
    def done(self) -> bool:
        """Whether every step has been performed."""
        return self.position >= len(self.steps)

    def _run_actions(self, net: SimNetwork) -> None:
        while not self._waiting and self.position < len(self.steps):
            step = self.steps[self.position]
            if isinstance(step, Deliver | Drop):
                return
            self.position += 1
            if isinstance(step, Crash):
                net.crash(step.role)
            elif isinstance(step, Restart):
                net.restart(step.role)
            elif isinstance(step, Partition):
                net.partition(step.side_a, step.side_b)
            elif isinstance(step, Heal):
                net.heal()
            else:
                self._waiting = True
                net.call_later(step.seconds, self._resume, net)

    def _resume(self, net: SimNetwork) -> None:
        self._waiting = False
        self._run_actions(net)
        net.wake()

    def hold(self, net: SimNetwork, env: Envelope) -> bool:
        """Hold back an envelope that a later ``Deliver``/``Drop`` step names.

        Args:
            net: the simulated network.
            env: the envelope.

        Returns:
            Whether ``env`` must wait for its step.
        """
        remaining = [s for s in self.steps[self.position :] if isinstance(s, Deliver | Drop)]
        if not any(_matches(s, env) for s in remaining):
            return False
        if self._waiting:
            return True
        current = self.steps[self.position] if not self.done else None
        return not (isinstance(current, Deliver | Drop) and _matches(current, env))

    def on_arrive(self, net: SimNetwork, env: Envelope) -> bool:
        """Perform the current ``Deliver``/``Drop`` step if it names ``env``.

        Args:
            net: the simulated network.
            env: the envelope.

        Returns:
            True when the step is a ``Drop``: ``env`` is lost.
        """
        if self.done or self._waiting:
            return False
        current = self.steps[self.position]
        if not (isinstance(current, Deliver | Drop) and _matches(current, env)):
            return False
        self.position += 1
        net.call_soon(self._resume, net)
        return isinstance(current, Drop)


# --------------------------------------------------------------------------
# the network


@dataclass
class _InFlight:
    env: Envelope
    due: float


class SimNetwork:
    """A simulated network: FIFO per ordered pair, seeded interleaving, faults.

    Make it inside a running ``SimLoop`` (it schedules on the running loop).

    Args:
        seed: seeds the scheduler and the fault plan (or pass ``rng``).
        faults: the fault plan; ``None`` injects none.
        latency: every envelope takes a uniform ``(low, high)`` virtual seconds.
        max_message_size: payloads over this are refused with ``TransportError``.
        rng: the random generator to use instead of ``random.Random(seed)``.
    """

    def __init__(
        self,
        seed: int = 0,
        faults: FaultPlan | None = None,
        *,
        latency: tuple[float, float] = DEFAULT_LATENCY,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        rng: random.Random | None = None,
    ) -> None:
        self.rng = rng if rng is not None else random.Random(seed)
        self.faults = faults if faults is not None else FaultPlan()
        self.latency = latency
        self.max_message_size = max_message_size
        self.loop = asyncio.get_running_loop()
        #: every event so far, in order (see ``trace_jsonl``)
        self.trace: list[dict[str, Any]] = []
        #: called with a role's name when it crashes / restarts (by its owner)
        self.on_crash: Callable[[str], None] | None = None
        self.on_restart: Callable[[str], None] | None = None
        self._inboxes: dict[str, DeliverFn] = {}
        self._transports: dict[str, SimTransport] = {}
        self._known: dict[str, None] = {}  # every role ever attached, in order
        self._down: dict[str, None] = {}
        self._crashable: dict[str, None] = {}
        self._queues: dict[tuple[str, str], deque[_InFlight]] = {}
        self._sides: tuple[frozenset[str], frozenset[str]] | None = None
        self._sessions: dict[str, str] = {}
        self._started = False

    # -- what fault plans and owners use ------------------------------------

    def now(self) -> float:
        """The virtual time.

        Returns:
            Virtual seconds since the run started.
        """
        return self.loop.time()

    def session_name(self, session: str) -> str:
        """A session's name in the trace, by first appearance.

        Args:
            session: the session's id.

        Returns:
            ``s1``, ``s2``, ...
        """
        name = self._sessions.get(session)
        if name is None:
            name = self._sessions[session] = f"s{len(self._sessions) + 1}"
        return name

    def call_soon(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop as soon as possible.

        Args:
            fn: the callback.
            *args: its arguments.
        """
        self.loop.call_soon(fn, *args)

    def call_later(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` after ``delay`` virtual seconds.

        Args:
            delay: virtual seconds to wait.
            fn: the callback.
            *args: its arguments.
        """
        self.loop.call_later(delay, fn, *args)

    def allow_crash(self, roles: Iterable[str]) -> None:
        """Let the fault plan crash ``roles`` (in this order).

        Args:
            roles: role (or member) names.
        """
        for r in roles:
            self._crashable[r] = None

    def crashable(self) -> list[str]:
        """The roles a fault plan may crash.

        Returns:
            Their names, in a fixed order.
        """
        return list(self._crashable)

    def is_down(self, role: str) -> bool:
        """Whether ``role`` is down.

        Args:
            role: a role (or member) name.

        Returns:
            True if it has crashed and not restarted.
        """
        return role in self._down

    def partitioned(self) -> bool:
        """Whether a partition is active.

        Returns:
            True between a ``partition`` and its ``heal``.
        """
        return self._sides is not None

    def crash(self, role: str) -> None:
        """Crash ``role``: it stops receiving, and its owner cancels its tasks.

        Args:
            role: a role (or member) name; crashing one that is down does nothing.
        """
        if role in self._down:
            return
        self._down[role] = None
        self._inboxes.pop(role, None)
        transport = self._transports.get(role)
        if transport is not None:
            transport.dead = True
        _record(self, "crash", role=role)
        if self.on_crash is not None:
            self.on_crash(role)

    def restart(self, role: str) -> None:
        """Bring ``role`` back: it receives again; its owner rebuilds its process.

        Args:
            role: a role (or member) name; restarting one that is up does nothing.
        """
        if role not in self._down:
            return
        del self._down[role]
        _record(self, "restart", role=role)
        if self.on_restart is not None:
            self.on_restart(role)

    def partition(self, side_a: Iterable[str], side_b: Iterable[str]) -> None:
        """Lose every envelope delivered between the two sides until ``heal``.

        Args:
            side_a: the roles on one side.
            side_b: the roles on the other side.
        """
        a, b = tuple(side_a), tuple(side_b)
        self._sides = (frozenset(a), frozenset(b))
        _record(self, "partition", sides=[sorted(a), sorted(b)])

    def heal(self) -> None:
        """End the partition."""
        if self._sides is not None:
            self._sides = None
            _record(self, "heal")
            self.wake()

    def wake(self) -> None:
        """Look for deliverable envelopes again (after the fault plan changed its mind)."""
        self.loop.call_soon(self._pump)

    def transport(self, role: str) -> SimTransport:
        """A transport receiving the envelopes addressed to ``role``.

        Args:
            role: a role (or member) name.

        Returns:
            A new transport, which replaces ``role``'s previous one.
        """
        self._known.setdefault(role, None)
        transport = self._transports[role] = SimTransport(self, role)
        return transport

    # -- moving envelopes ------------------------------------------------------

    def _start(self) -> None:
        if not self._started:
            self._started = True
            self.faults.attach(self)

    def _send(self, env: Envelope) -> None:
        self._start()
        if len(env.payload) > self.max_message_size:
            raise TransportError(
                f"message {env.label} from {env.sender} to {env.receiver} has a payload of "
                f"{len(env.payload)} bytes, over the limit of {self.max_message_size} bytes"
            )
        if env.receiver not in self._known:
            raise TransportError(
                f"no role {env.receiver!r} on this simulated network "
                f"(message {env.label} from {env.sender})"
            )
        _record(self, "send", env)
        drop, extra = self.faults.on_send(self, env)
        if drop:
            _record(self, "drop", env)
            return
        due = self.now() + self.rng.uniform(*self.latency) + extra
        key = (env.sender, env.receiver)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
        queue.append(_InFlight(env, due))
        self.loop.call_at(due, self._pump)

    def _pump(self) -> None:
        now = self.now() + _EPS
        ready = [
            q
            for q in self._queues.values()
            if q and q[0].due <= now and not self.faults.hold(self, q[0].env)
        ]
        if not ready:
            return
        queue = ready[self.rng.randrange(len(ready))] if len(ready) > 1 else ready[0]
        env = queue.popleft().env
        if len(ready) > 1 or (queue and queue[0].due <= now):
            self.loop.call_soon(self._pump)
        if self.faults.on_arrive(self, env):
            _record(self, "drop", env)
            return
        if self._sides is not None:
            a, b = self._sides
            if (env.sender in a and env.receiver in b) or (env.sender in b and env.receiver in a):
                _record(self, "lost", env, why="partition")
                return
        deliver = self._inboxes.get(env.receiver)
        if deliver is None or env.receiver in self._down:
            _record(self, "lost", env, why="receiver down")
            return
        _record(self, "recv", env)
        deliver(env)


class SimTransport(Transport):
    """One role's end of a ``SimNetwork``.

    ``send`` never blocks: it hands the envelope to the network (which may
    lose it, as a real network may); a sender learns of a loss only through
    its peers' silence, i.e. deadlines.
    """

    def __init__(self, network: SimNetwork, role: str) -> None:
        self._network = network
        self.role = role
        self._deliver: DeliverFn | None = None
        #: set when the role crashes: this transport never sends again
        self.dead = False

    async def start(self, deliver: DeliverFn) -> None:
        self.attach(deliver)

    def attach(self, deliver: DeliverFn) -> None:
        """Begin receiving at once (``start`` without awaiting)."""
        self._deliver = deliver
        self._network._inboxes[self.role] = deliver

    async def send(self, env: Envelope, timeout: float) -> None:
        if not self.dead:  # a crashed process sends nothing
            self._network._send(env)

    async def close(self) -> None:
        inboxes = self._network._inboxes
        if self._deliver is not None and inboxes.get(self.role) is self._deliver:
            del inboxes[self.role]


def _kill(node: Node) -> None:
    """Stop every session task of a crashed node, silently.

    Cancelling is not enough: in Python 3.11, ``asyncio.wait_for`` swallows a
    cancellation that races with the wakeup it was waiting for, and the task
    would run on. So every session of the node also fails (its unread
    envelopes are discarded), and its next receive raises ``CrashedError``;
    its transport is dead, so nothing it sends leaves.
    """
    for ctx in node._sessions.values():
        ctx.core._queues.clear()
        ctx.core.failure = CrashedError(f"{node.role} crashed in session {ctx.session}")
        ctx.wake(node.role)
    for task in list(node._tasks):
        task.cancel()


# --------------------------------------------------------------------------
# one session: simulate()


@dataclass
class SimResult:
    """The outcome of one simulated session.

    Attributes:
        seed: the seed of the run.
        results: role name -> result, for every role that finished.
        errors: role name -> the error it failed with (``CrashedError`` if it crashed).
        trace: every event, in order: sends, deliveries, drops, losses, crashes,
            restarts, partitions (see ``trace_jsonl``).
        time: virtual seconds the run took.
    """

    seed: int
    results: dict[str, Any]
    errors: dict[str, ChoreoError]
    trace: list[dict[str, Any]]
    time: float

    @property
    def ok(self) -> bool:
        """Whether every role finished."""
        return not self.errors

    @property
    def error(self) -> ChoreoError | None:
        """The root cause of the failure (not its echoes), or ``None``."""
        errors = list(self.errors.values())
        root = [e for e in errors if not isinstance(e, PeerFailedError | CrashedError)]
        first = root or errors
        return first[0] if first else None

    def trace_jsonl(self) -> bytes:
        """The trace as deterministic JSON lines (see ``trace_jsonl``).

        Returns:
            One JSON record per line, UTF-8.
        """
        return trace_jsonl(self.trace)


def simulate(
    chor: Choreography,
    *,
    seed: int = 0,
    faults: FaultPlan | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    latency: tuple[float, float] = DEFAULT_LATENCY,
    **inputs: Any,
) -> SimResult:
    """Run one session of ``chor``, every role in this process, on virtual time.

    Like ``choreo.run``, but over a ``SimNetwork``: the seed picks the
    interleaving of messages between different pairs of roles and every
    random fault; a failing seed replays exactly. A crashed role's session
    is not resumed when it restarts (one-shot mode): its error is
    ``CrashedError``.

    Args:
        chor: a ``@choreography``.
        seed: seeds the scheduler and ``faults``.
        faults: the fault plan (``RandomFaults``, ``Script``); ``None``: no faults.
        timeout: virtual seconds any receive may wait.
        latency: every message takes a uniform ``(low, high)`` virtual seconds.
        **inputs: the choreography's inputs, as for ``choreo.run``.

    Returns:
        A ``SimResult``: per-role results and errors, and the trace. Role
        failures are reported there, not raised.

    Raises:
        CheckError: the choreography has static errors.
        UsageError: inputs are missing or unknown, or called inside an event loop.
    """
    if not isinstance(chor, Choreography):
        raise UsageError(f"simulate expects a @choreography function, got {chor!r}")
    chor.check()
    c = cast_of(chor, inputs)

    async def main() -> SimResult:
        net = SimNetwork(seed, faults, latency=latency)
        active = set(chor.active_roles())
        names = c.names()
        peers = c.names(active)
        nodes = {n: Node(n, net.transport(n)) for n in names}
        for node in nodes.values():
            await node.start()
        net.allow_crash(peers)
        session = "s1"
        contexts = {n: nodes[n].open(session, chor.hash, timeout, peers) for n in names}
        tasks = {
            n: asyncio.ensure_future(
                play_role(chor, party, contexts[n], c.roles, c.args[n], groups=c.groups)
            )
            for party, n in c.players
        }
        crashed: dict[str, None] = {}
        by_name = nodes

        def on_crash(name: str) -> None:
            crashed[name] = None
            _kill(by_name[name])
            tasks[name].cancel()

        net.on_crash = on_crash
        net._start()
        results: dict[str, Any] = {}
        errors: dict[str, ChoreoError] = {}
        for name, task in tasks.items():
            try:
                results[name] = await task
            except asyncio.CancelledError:
                if name not in crashed:
                    raise
            except ChoreoError as exc:
                errors[name] = exc
            if name in crashed:
                results.pop(name, None)
                errors[name] = CrashedError(f"{name} crashed in session {session}")
        for n in names:
            nodes[n].close(session)
        for name, node in by_name.items():
            if name not in crashed:
                await node.aclose()
        return SimResult(seed, results, errors, net.trace, net.now())

    return run_simulated(main)


# --------------------------------------------------------------------------
# service mode: Simulation


class _SimServer(Server):
    """``choreo.Server`` on a ``SimNetwork`` instead of gRPC (same session logic)."""

    def __init__(
        self,
        choreographies: dict[str, Choreography],
        role: str,
        net: SimNetwork,
        inputs: Mapping[str, Any],
        timeout: float,
    ) -> None:
        # Server.__init__ would build a gRPC transport; set what its methods use
        self.choreographies = choreographies
        self.role = role
        self.inputs = dict(inputs)
        self.timeout = timeout
        self.sim_transport = net.transport(role)
        self.transport = self.sim_transport  # type: ignore[assignment]
        self.node = Node(role, self.sim_transport)
        self.node.on_start = self._on_start
        self.sessions_done = 0
        self.sessions_failed = 0
        self._running = {}

    @property
    def address(self) -> str | None:
        return f"sim:{self.role}"

    def crash(self) -> None:
        """Stop dead: cancel every running session and background send, tell nobody."""
        _kill(self.node)
        for task in list(self._running.values()):
            task.cancel()


class _SimClient(Client):
    """``choreo.Client`` on a ``SimNetwork`` instead of gRPC (same session logic)."""

    def __init__(self, net: SimNetwork, name: str, served: Iterable[str], timeout: float) -> None:
        # Client.__init__ would build a gRPC transport; set what its methods use
        self.cluster = Cluster(roles={r: f"sim:{r}" for r in served})
        self.name = name
        self.timeout = timeout
        self.transport = net.transport(name)  # type: ignore[assignment]
        self.node = Node(name, self.transport)


@dataclass
class _Served:
    choreographies: dict[str, Choreography]
    state: Callable[[], Mapping[str, Any]]
    server: _SimServer | None = None


class Simulation:
    """Service mode on virtual time: long-lived role servers, clients running sessions.

    Servers are ``choreo.Server`` and clients ``choreo.Client`` (their session
    logic, unchanged), moved onto a ``SimNetwork``. A crashed server loses its
    in-memory state: on restart it is rebuilt from its ``state`` factory, so
    only what it keeps in ``storage(role)`` survives.

    Use::

        sim = Simulation(seed=7, faults=RandomFaults(drop=0.01, crash=0.01))
        sim.serve("primary", kv, state=lambda: {"pstore": sim.storage("primary")})
        sim.serve("backup", kv, state=lambda: {"bstore": sim.storage("backup")})

        async def workload() -> None:
            async with sim.client("c1") as c:
                await c.run(kv.put, key="x", value=1)

        sim.run(workload)
        sim.trace_jsonl()

    Args:
        seed: seeds the scheduler and the fault plan.
        faults: the fault plan; it may crash served roles only.
        timeout: virtual seconds any receive may wait.
        latency: every message takes a uniform ``(low, high)`` virtual seconds.
    """

    def __init__(
        self,
        seed: int = 0,
        faults: FaultPlan | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        latency: tuple[float, float] = DEFAULT_LATENCY,
    ) -> None:
        self.seed = seed
        self.faults = faults
        self.timeout = timeout
        self.latency = latency
        self._served: dict[str, _Served] = {}
        self._storage: dict[str, Storage] = {}
        self._net: SimNetwork | None = None
        self.trace: list[dict[str, Any]] = []

    def storage(self, role: str) -> Storage:
        """The durable storage of ``role``: the same object before and after a crash.

        Args:
            role: a role (or member) name.

        Returns:
            Its ``Storage``, made empty on first use.
        """
        store = self._storage.get(role)
        if store is None:
            store = self._storage[role] = Storage()
        return store

    def serve(
        self,
        role: str,
        module: ModuleType | Iterable[Choreography],
        state: Callable[[], Mapping[str, Any]] | Mapping[str, Any] | None = None,
    ) -> None:
        """Run a server for ``role`` serving the choreographies of ``module``.

        Args:
            role: the role name.
            module: a module (its ``@choreography`` functions) or the choreographies.
            state: the role's located inputs, reused by every session; a
                callable is called at start and again at every restart (so a
                fresh ``{}`` there is lost on crash, ``storage(role)`` is not).

        Raises:
            UsageError: nothing to serve, or the role is served twice.
        """
        if role in self._served:
            raise UsageError(f"role {role!r} is already served")
        chors = (
            choreographies_in(module)
            if isinstance(module, ModuleType)
            else {c.name: c for c in cast("Iterable[Choreography]", module)}
        )
        if not chors:
            raise UsageError(f"no @choreography to serve for role {role!r}")
        for chor in chors.values():
            chor.check()
        if state is None:
            factory: Callable[[], Mapping[str, Any]] = dict
        elif callable(state):
            factory = state
        else:
            fixed = state
            factory = lambda: fixed  # noqa: E731
        self._served[role] = _Served(chors, factory)

    def server(self, role: str) -> Server:
        """The running server of ``role`` (a new object after each restart).

        Args:
            role: a served role.

        Returns:
            Its current ``Server``.

        Raises:
            UsageError: the role is not served or is down.
        """
        served = self._served.get(role)
        if served is None or served.server is None:
            raise UsageError(f"role {role!r} is not running")
        return served.server

    def client(self, name: str) -> Client:
        """A client named ``name``: ``async with sim.client("c1") as c: await c.run(...)``.

        Args:
            name: the client's name, its address on the simulated network.

        Returns:
            A client of the served roles, with the simulation's timeout.

        Raises:
            UsageError: called outside ``run``.
        """
        net = self._network()
        return _SimClient(net, name, list(self._served), self.timeout)

    def crash(self, role: str) -> None:
        """Crash a served role now (from a workload, for scripted scenarios).

        Args:
            role: the served role.
        """
        self._network().crash(role)

    def restart(self, role: str) -> None:
        """Restart a crashed role now.

        Args:
            role: the crashed role.
        """
        self._network().restart(role)

    def partition(self, side_a: Iterable[str], side_b: Iterable[str]) -> None:
        """Cut the links between two sides now, until ``heal``.

        Args:
            side_a: the roles on one side.
            side_b: the roles on the other side.
        """
        self._network().partition(side_a, side_b)

    def heal(self) -> None:
        """End the partition now."""
        self._network().heal()

    def now(self) -> float:
        """The virtual time.

        Returns:
            Virtual seconds since the run started.
        """
        return self._network().now()

    def _network(self) -> SimNetwork:
        if self._net is None:
            raise UsageError("the simulation is not running: call this inside sim.run(...)")
        return self._net

    def _boot(self, role: str) -> None:
        served = self._served[role]
        assert self._net is not None
        server = _SimServer(served.choreographies, role, self._net, served.state(), self.timeout)
        served.server = server
        server.sim_transport.attach(server.node.deliver)

    def _on_crash(self, role: str) -> None:
        served = self._served.get(role)
        if served is None or served.server is None:
            return
        server, served.server = served.server, None
        server.crash()

    def run(self, workload: Callable[[], Awaitable[T]]) -> T:
        """Start every server, run ``workload()`` to completion, stop everything.

        The trace is in ``self.trace`` afterwards (also after an error).

        Args:
            workload: makes the coroutine that drives clients (and may call
                ``crash``/``restart``/``partition``/``heal``).

        Returns:
            What ``workload()`` returned.

        Raises:
            UsageError: called inside an event loop, or while already running.
        """
        if self._net is not None:
            raise UsageError("this simulation is already running")

        async def main() -> T:
            net = self._net = SimNetwork(self.seed, self.faults, latency=self.latency)
            self.trace = net.trace
            net.on_crash = self._on_crash
            net.on_restart = self._boot
            net.allow_crash(self._served)
            for role, served in self._served.items():
                served.server = _SimServer(
                    served.choreographies, role, net, served.state(), self.timeout
                )
                await served.server.start()
            net._start()
            try:
                return await workload()
            finally:
                for served in self._served.values():
                    if served.server is not None:
                        await served.server.close()
                        served.server = None

        try:
            return run_simulated(main)
        finally:
            self._net = None

    def trace_jsonl(self) -> bytes:
        """The last run's trace as deterministic JSON lines.

        Returns:
            One JSON record per line, UTF-8.
        """
        return trace_jsonl(self.trace)
