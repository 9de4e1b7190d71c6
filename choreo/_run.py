"""Running every projected role of a choreography in this process.

``run_async`` starts one task per active role, each with its own ``Node`` on a
shared in-process network, in one fresh session. When a role fails, it tells
every peer (ABORT) so that they stop at once instead of waiting for their
deadlines; the error that caused the failure is raised, not the echoes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from choreo._dsl import Choreography
from choreo._endpoint import Endpoint, Node, SessionContext
from choreo._envelope import Envelope
from choreo._errors import ChoreoError, PeerFailedError, RoleFailedError, UsageError
from choreo._trace import Tracer
from choreo._transport import LocalNetwork

__all__ = ["DEFAULT_TIMEOUT", "play_role", "run", "run_async", "split_inputs"]

#: seconds a receive waits before failing, unless a run says otherwise
DEFAULT_TIMEOUT = 10.0


def split_inputs(
    chor: Choreography, inputs: dict[str, Any]
) -> tuple[dict[str, str], dict[str, tuple[Any, ...]]]:
    """Role names and each role's positional inputs, from ``run``'s keyword arguments.

    Raises:
        UsageError: an input is missing or unknown.
    """
    bound = chor.bind_inputs((), inputs)
    roles: dict[str, str] = {}
    for name, kind, _ in chor.params:
        if kind == "role":
            value = bound[name]
            roles[name] = value if isinstance(value, str) else getattr(value, "name", name)
    if len(set(roles.values())) != len(roles):
        raise UsageError(f"{chor.name}: two roles were given the same name: {roles}")
    args: dict[str, tuple[Any, ...]] = {}
    for role, eir in chor.endpoints().items():
        args[role] = tuple(bound[p] for p in eir.params)
    return roles, args


async def play_role(
    chor: Choreography,
    role: str,
    ctx: SessionContext,
    roles: Mapping[str, str],
    args: tuple[Any, ...],
    on_error: Callable[[ChoreoError], None] | None = None,
) -> Any:
    """Run ``role``'s endpoint in the session ``ctx``; on failure, tell every peer.

    Args:
        chor: the choreography.
        role: the role parameter to play.
        ctx: this role's state in the session.
        roles: role parameters -> the names of the processes playing them.
        args: the role's inputs, in its endpoint's parameter order.
        on_error: called with the error as soon as the role fails, before the
            peers are told (so that it can be reported without delay).

    Raises:
        ChoreoRuntimeError: the role failed; local code that raised is wrapped
            in ``RoleFailedError`` (the original exception is its cause).
    """
    try:
        return await chor._endpoint_function(role)(Endpoint(ctx, roles), *args)
    except ChoreoError as exc:
        error, cause = exc, None
    except Exception as exc:
        actual = roles[role]
        error = RoleFailedError(actual, f"role {actual} raised {type(exc).__name__}: {exc}")
        cause = exc
    if on_error is not None:
        on_error(error)
    await ctx.node.abort(ctx, f"{type(error).__name__}: {error}")
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
            may be given a name (str) for the role that plays it.

    Returns:
        ``{role: result}`` for every role (``None`` where the result is not located).

    Raises:
        CheckError: the choreography has static errors.
        UsageError: inputs are missing or unknown.
        ChoreoRuntimeError: a role failed (the root cause, not its echoes).
    """
    if not isinstance(chor, Choreography):
        raise UsageError(f"choreo.run expects a @choreography function, got {chor!r}")
    roles, args = split_inputs(chor, inputs)
    active = set(chor.active_roles())
    network = LocalNetwork()
    session = uuid.uuid4().hex
    chash = chor.hash
    peers = [roles[r] for r in chor.roles if r in active]
    nodes = {r: Node(roles[r], network.transport(roles[r])) for r in chor.roles}
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
    contexts = {r: nodes[r].open(session, chash, timeout, peers) for r in chor.roles}

    names = list(chor.roles)
    try:
        outcomes = await asyncio.gather(
            *(play_role(chor, r, contexts[r], roles, args[r]) for r in names),
            return_exceptions=True,
        )
    finally:
        for r in names:
            nodes[r].close(session)
        for node in nodes.values():
            await node.aclose()
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    if errors:
        root = [e for e in errors if not isinstance(e, PeerFailedError)]
        raise (root or errors)[0]
    return {roles[r]: o for r, o in zip(names, outcomes, strict=True)}


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
