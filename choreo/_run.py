"""Running every projected role of a choreography in this process.

``run_async`` starts one task per active role, each with its own ``Node`` on a
shared in-process network, in one fresh session. When a role fails, it tells
every peer (ABORT) so that they stop at once instead of waiting for their
deadlines; the error that caused the failure is raised, not the echoes.
"""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from choreo._dsl import Choreography
from choreo._endpoint import Endpoint, Node, SessionContext
from choreo._envelope import Envelope
from choreo._errors import ChoreoError, PeerFailedError, RoleFailedError, UsageError
from choreo._session import MEMBER_PREFIX
from choreo._trace import Tracer
from choreo._transport import LocalNetwork

__all__ = [
    "DEFAULT_TIMEOUT",
    "Cast",
    "cast",
    "member_value",
    "members_of",
    "parse_census",
    "play_role",
    "run",
    "run_async",
    "split_inputs",
]

#: seconds a receive waits before failing, unless a run says otherwise
DEFAULT_TIMEOUT = 10.0


def members_of(chor_name: str, group: str, census: Any) -> tuple[str, ...]:
    """A group's members from its census: a size (``g.0``, ``g.1``, ...) or a list of names.

    Raises:
        UsageError: the census is neither, is empty, or repeats a name.
    """
    if isinstance(census, int) and not isinstance(census, bool):
        if census < 1:
            raise UsageError(f"{chor_name}: group {group!r} needs at least one member")
        return tuple(f"{group}.{i}" for i in range(census))
    if isinstance(census, list | tuple) and all(isinstance(m, str) and m for m in census):
        names = tuple(census)
        if not names:
            raise UsageError(f"{chor_name}: group {group!r} needs at least one member")
        if len(set(names)) != len(names):
            raise UsageError(f"{chor_name}: group {group!r} names a member twice: {names}")
        return names
    raise UsageError(
        f"{chor_name}: the census of group {group!r} must be a size (e.g. {group}=3) or a list "
        f"of member names, got {census!r}"
    )


@dataclass
class Cast:
    """Who plays what in one run: the roles, every group's members, and their inputs.

    Attributes:
        roles: role parameter -> the name of the role playing it.
        groups: group parameter -> its members' names.
        players: ``(party, name)`` for every role and every member, in order
            (``party`` is the role or group parameter whose endpoint it runs).
        args: name -> that player's positional inputs.
    """

    roles: dict[str, str]
    groups: dict[str, tuple[str, ...]]
    players: list[tuple[str, str]]
    args: dict[str, tuple[Any, ...]]

    def names(self, parties: set[str] | None = None) -> list[str]:
        """Names of the players of ``parties`` (all when None)."""
        return [n for p, n in self.players if parties is None or p in parties]


def cast(chor: Choreography, inputs: dict[str, Any]) -> Cast:
    """The cast of a run, from ``run``'s keyword arguments (census included).

    An input located at a group is a dict member -> value (its keys exactly the
    members), or one value every member gets its own copy of.

    Raises:
        UsageError: an input or a census is missing, unknown or malformed.
    """
    bound = chor.bind_inputs((), inputs)
    roles: dict[str, str] = {}
    groups: dict[str, tuple[str, ...]] = {}
    for name, kind, _ in chor.params:
        if kind == "role":
            value = bound[name]
            roles[name] = value if isinstance(value, str) else getattr(value, "name", name)
        elif kind == "group":
            groups[name] = members_of(chor.name, name, bound[name])
    everyone = list(roles.values()) + [m for ms in groups.values() for m in ms]
    if len(set(everyone)) != len(everyone):
        raise UsageError(f"{chor.name}: two roles or members have the same name: {everyone}")
    players = [(r, n) for r, n in roles.items()] + [(g, m) for g, ms in groups.items() for m in ms]
    eirs = chor.endpoints()
    args: dict[str, tuple[Any, ...]] = {}
    for party, name in players:
        values = [bound[p] for p in eirs[party].params]
        if party in groups:
            values = [member_value(v, groups[party], name) for v in values]
        args[name] = tuple(values)
    return Cast(roles, groups, players, args)


def member_value(value: Any, members: tuple[str, ...], member: str) -> Any:
    """A group input's value at ``member``: ``value[member]`` if ``value`` is a dict
    whose keys are exactly the members, else a copy of ``value``."""
    if isinstance(value, dict) and value and set(value) == set(members):
        return value[member]
    return copy.deepcopy(value)


def parse_census(items: list[str]) -> dict[str, int | list[str]]:
    """``--census GROUP=SIZE`` or ``--census GROUP=name1,name2`` -> ``{group: census}``.

    Raises:
        UsageError: an item is malformed.
    """
    out: dict[str, int | list[str]] = {}
    for item in items:
        group, sep, value = item.partition("=")
        group, value = group.strip(), value.strip()
        if not sep or not group.isidentifier() or not value:
            raise UsageError(f"--census {item!r}: write GROUP=SIZE or GROUP=name1,name2")
        if value.isdigit():
            out[group] = int(value)
        else:
            out[group] = [v.strip() for v in value.split(",") if v.strip()]
    return out


def split_inputs(
    chor: Choreography, inputs: dict[str, Any]
) -> tuple[dict[str, str], dict[str, tuple[Any, ...]]]:
    """Role names and each role's positional inputs (choreographies without groups).

    Raises:
        UsageError: an input is missing or unknown.
    """
    c = cast(chor, inputs)
    return c.roles, {r: c.args[n] for r, n in c.roles.items()}


async def play_role(
    chor: Choreography,
    role: str,
    ctx: SessionContext,
    roles: Mapping[str, str],
    args: tuple[Any, ...],
    on_error: Callable[[ChoreoError], None] | None = None,
    groups: Mapping[str, tuple[str, ...]] | None = None,
) -> Any:
    """Run ``role``'s endpoint in the session ``ctx``; on failure, tell every peer.

    Args:
        chor: the choreography.
        role: the role (or group) parameter to play.
        ctx: this role's state in the session.
        roles: role parameters -> the names of the processes playing them.
        args: the role's inputs, in its endpoint's parameter order.
        on_error: called with the error as soon as the role fails, before the
            peers are told (so that it can be reported without delay).
        groups: group parameters -> their members' names.

    Raises:
        ChoreoRuntimeError: the role failed; local code that raised is wrapped
            in ``RoleFailedError`` (the original exception is its cause).
    """
    try:
        return await chor._endpoint_function(role)(Endpoint(ctx, roles, groups), *args)
    except ChoreoError as exc:
        error, cause = exc, None
    except Exception as exc:
        actual = ctx.role
        error = RoleFailedError(actual, f"role {actual} raised {type(exc).__name__}: {exc}")
        cause = exc
    if on_error is not None:
        on_error(error)
    # a member's failure fails only what waits for it (see choreo._session)
    prefix = MEMBER_PREFIX if groups and role in groups else ""
    await ctx.node.abort(ctx, f"{prefix}{type(error).__name__}: {error}")
    raise error from cause


async def run_async(
    chor: Choreography,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    trace: Callable[[Envelope], None] | None = None,
    tracer: Tracer | None = None,
    **inputs: Any,
) -> dict[str, Any]:
    """Run every role of ``chor`` as its own task over the in-process transport.

    Args:
        chor: a ``@choreography``.
        timeout: seconds any receive may wait.
        trace: called with every envelope a role sends (the ``"send"`` events
            of ``tracer``, without the event name).
        tracer: every role's ``Node.tracer``: called as ``tracer(event, envelope)``
            for every envelope sent and received, e.g. a ``TraceRecorder``.
        **inputs: the choreography's inputs by parameter name; a role parameter
            may be given a name (str) for the role that plays it; a group
            parameter its census (a size, or a list of member names).

    Returns:
        ``{role: result}`` for every role and every group member (``None``
        where the result is not located).

    Raises:
        CheckError: the choreography has static errors.
        UsageError: inputs are missing or unknown.
        ChoreoRuntimeError: a role failed (the root cause, not its echoes).
    """
    if not isinstance(chor, Choreography):
        raise UsageError(f"choreo.run expects a @choreography function, got {chor!r}")
    c = cast(chor, inputs)
    active = set(chor.active_roles())
    network = LocalNetwork()
    session = uuid.uuid4().hex
    chash = chor.hash
    peers = c.names(active)
    names = c.names()
    nodes = {n: Node(n, network.transport(n)) for n in names}
    node_tracer = tracer
    if trace is not None:  # one mechanism: the plain callback is a tracer of sends
        sends, full = trace, tracer

        def node_tracer(event: str, env: Envelope) -> None:
            if event == "send":
                sends(env)
            if full is not None:
                full(event, env)

    for node in nodes.values():
        node.tracer = node_tracer
        await node.start()
    contexts = {n: nodes[n].open(session, chash, timeout, peers) for n in names}

    try:
        outcomes = await asyncio.gather(
            *(
                play_role(chor, party, contexts[n], c.roles, c.args[n], groups=c.groups)
                for party, n in c.players
            ),
            return_exceptions=True,
        )
    finally:
        for n in names:
            nodes[n].close(session)
        for node in nodes.values():
            await node.aclose()
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    if errors:
        root = [e for e in errors if not isinstance(e, PeerFailedError)]
        raise (root or errors)[0]
    return dict(zip(names, outcomes, strict=True))


def run(
    chor: Choreography,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    trace: Callable[[Envelope], None] | None = None,
    tracer: Tracer | None = None,
    **inputs: Any,
) -> dict[str, Any]:
    """Synchronous ``run_async``: run every projected role in this process.

    Args:
        chor: a ``@choreography``.
        timeout: seconds any receive may wait.
        trace: called with every envelope the in-process network carries.
        tracer: called as ``tracer(event, envelope)`` for every envelope sent and
            received (e.g. a ``TraceRecorder``).
        **inputs: the choreography's inputs by parameter name.

    Returns:
        ``{role: result}`` for every role.

    Raises:
        UsageError: called from inside a running event loop (use ``run_async``), or
            inputs are missing or unknown.
        CheckError: the choreography has static errors.
        ChoreoRuntimeError: a role failed.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(run_async(chor, timeout=timeout, trace=trace, tracer=tracer, **inputs))
    raise UsageError(
        "choreo.run was called inside an event loop: use `await choreo.run_async(...)`"
    )
