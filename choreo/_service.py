"""Service mode: long-running role processes that take part in many sessions.

``serve`` keeps one role of a cluster running: it hosts a ``Node`` on the gRPC
transport and joins a new session whenever a client asks (a START envelope),
for any choreography defined in the served file, concurrently with the
sessions already running. Role state lives on across sessions: the inputs
given to ``serve`` (``--input store={}``) are the *same objects* in every
session, and module globals of the served file persist in the process.

A ``Client`` starts sessions against a running cluster. It may play roles
itself (a role of the choreography that is not in the cluster file, such as
``client`` in a key-value store's ``put``), sends START to every active role
that the cluster serves, runs its own part, and collects every role's RESULT.

START payload (codec-encoded dict): ``roles`` (the choreography's role
parameters -> the names of the processes playing them), ``inputs`` (the
inputs the client supplies for that role), ``timeout``, ``peers`` (every
active role of the session). The envelope's label is the choreography's name
and its ``chash`` the source hash: a server running another version answers
with a ``VersionMismatchError`` RESULT instead of joining, so the mismatch is
reported on both sides and no message of the session is ever misread.

RESULT payload: ``{"ok": value}`` or ``{"error": type name, "message": text}``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from choreo import _codec, _errors
from choreo._cluster import Cluster, load_cluster
from choreo._dsl import Choreography
from choreo._endpoint import Node, SessionContext
from choreo._envelope import Envelope, Kind
from choreo._errors import (
    ChoreoError,
    ChoreoRuntimeError,
    CodecError,
    DeadlineError,
    PeerFailedError,
    ProtocolError,
    RoleFailedError,
    UsageError,
    VersionMismatchError,
)
from choreo._grpc import GrpcTransport
from choreo._loader import choreographies_in
from choreo._run import play_role
from choreo._session import MISMATCH_PREFIX

__all__ = ["Client", "Server", "serve"]

log = logging.getLogger("choreo.service")

#: seconds a client still waits for results after the session is known to have failed
_ECHO_GRACE = 0.25

#: runtime errors a RESULT may carry, by class name (rebuilt on the client's side)
_ERRORS: dict[str, type[ChoreoRuntimeError]] = {
    name: cls
    for name in _errors.__all__
    if isinstance(cls := getattr(_errors, name), type) and issubclass(cls, ChoreoRuntimeError)
}


def _error_result(exc: BaseException) -> dict[str, Any]:
    return {"error": type(exc).__name__, "message": str(exc)}


class Server:
    """One role of a cluster, serving sessions of the choreographies of a module.

    Args:
        module: the module whose choreographies are served.
        role: the role this process plays.
        cluster: every role's address.
        inputs: role state: inputs located at ``role``, reused in every session.
        timeout: default deadline of a session's receives, seconds.
    """

    def __init__(
        self,
        module: ModuleType,
        role: str,
        cluster: Cluster,
        inputs: Mapping[str, Any] | None = None,
        *,
        timeout: float = 10.0,
    ) -> None:
        if role not in cluster.roles:
            raise UsageError(f"the cluster file gives no address for role {role!r}")
        self.choreographies = choreographies_in(module)
        if not self.choreographies:
            raise UsageError(f"{module.__file__}: no @choreography to serve")
        for chor in self.choreographies.values():
            chor.check()
        self.role = role
        self.inputs = dict(inputs or {})
        self.timeout = timeout
        peers = {r: a for r, a in cluster.roles.items() if r != role}
        self.transport = GrpcTransport(
            role, cluster.roles[role], peers, learn_peers=True, tls=cluster.tls_for(role)
        )
        self.node = Node(role, self.transport)
        self.node.on_start = self._on_start
        self.sessions_done = 0
        self.sessions_failed = 0
        self._running: dict[str, asyncio.Task[None]] = {}

    @property
    def address(self) -> str | None:
        """Where this role listens, once started."""
        return self.transport.address

    async def start(self) -> None:
        """Start serving."""
        await self.node.start()

    async def close(self) -> None:
        """Stop serving; running sessions are cancelled."""
        for task in list(self._running.values()):
            task.cancel()
        if self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)
        await self.node.aclose()

    def _on_start(self, env: Envelope) -> None:
        task = asyncio.ensure_future(self._session(env))
        self._running[env.session] = task
        task.add_done_callback(lambda _t: self._running.pop(env.session, None))

    async def _refuse(self, env: Envelope, exc: ChoreoError, timeout: float) -> None:
        """Do not join the session: tell the client to stop (ABORT), then why (RESULT)."""
        prefix = MISMATCH_PREFIX if isinstance(exc, VersionMismatchError) else ""
        abort = Envelope(
            env.session, self.role, env.sender, "abort", Kind.ABORT,
            f"{prefix}{type(exc).__name__}: {exc}".encode(), env.chash,
        )  # fmt: skip
        try:
            await self.transport.send(abort, timeout)
        except ChoreoError:
            pass  # the RESULT below (or the client's deadline) still ends the session
        await self._reply(env, _error_result(exc), timeout)

    async def _reply(self, env: Envelope, payload: dict[str, Any], ctx_timeout: float) -> None:
        try:
            data = _codec.encode(payload)
        except CodecError as exc:
            data = _codec.encode(_error_result(exc))
        reply = Envelope(env.session, self.role, env.sender, "result", Kind.RESULT, data, env.chash)
        try:
            await self.transport.send(reply, ctx_timeout)
        except ChoreoError as exc:
            log.warning(
                "%s: could not return the result of session %s: %s", self.role, env.session, exc
            )

    async def _session(self, env: Envelope) -> None:
        try:
            start = _codec.decode(env.payload)
            if not isinstance(start, dict):
                raise ProtocolError("malformed START")
            chor = self.choreographies.get(env.label)
            timeout = float(start.get("timeout") or self.timeout)
        except (ChoreoError, TypeError, ValueError) as exc:
            await self._refuse(env, ProtocolError(f"malformed START: {exc}"), self.timeout)
            return
        if chor is None:
            await self._refuse(
                env, ProtocolError(f"{self.role} serves no choreography {env.label!r}"), timeout
            )
            return
        if env.chash != chor.hash:
            mismatch = VersionMismatchError(
                f"{self.role} runs {chor.name} from source {chor.hash}, the client from "
                f"{env.chash}: every role must run the same version"
            )
            log.warning("%s", mismatch)
            self.sessions_failed += 1
            await self._refuse(env, mismatch, timeout)
            return
        roles: dict[str, str] = dict(start.get("roles", {}))
        mine = [p for p, actual in roles.items() if actual == self.role]
        if len(mine) != 1:
            await self._refuse(
                env, ProtocolError(f"{self.role} is not one role of this session"), timeout
            )
            return
        role = mine[0]
        inputs = {**self.inputs, **dict(start.get("inputs", {}))}
        ctx = self.node.open(env.session, chor.hash, timeout, list(start.get("peers", [])))
        try:
            args = tuple(inputs[p] for p in chor.endpoints()[role].params)
        except KeyError as missing:
            self.node.close(env.session)
            await self._refuse(
                env,
                RoleFailedError(self.role, f"role {self.role} needs the input {missing}"),
                timeout,
            )
            return
        result = await _play(chor, role, ctx, roles, args)
        self.node.close(env.session)
        if "error" in result:
            self.sessions_failed += 1
        else:
            self.sessions_done += 1
        await self._reply(env, result, timeout)


async def _play(
    chor: Choreography,
    role: str,
    ctx: SessionContext,
    roles: Mapping[str, str],
    args: tuple[Any, ...],
) -> dict[str, Any]:
    """Run one role of a session; the outcome as a RESULT payload."""
    try:
        return {"ok": await play_role(chor, role, ctx, roles, args)}
    except ChoreoError as exc:
        return _error_result(exc)


async def serve(
    module: ModuleType,
    role: str,
    cluster: Cluster,
    inputs: Mapping[str, Any] | None = None,
    *,
    timeout: float = 10.0,
) -> None:
    """Serve ``role`` until cancelled.

    Raises:
        UsageError: the role is not in the cluster or the module has no choreography.
    """
    server = Server(module, role, cluster, inputs, timeout=timeout)
    await server.start()
    log.info("%s serving %s on %s", role, ", ".join(server.choreographies), server.address)
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()


class Client:
    """Starts sessions against a running cluster and collects their results.

    Use as ``async with Client(cluster) as client: await client.run(chor, ...)``.

    Args:
        cluster: every served role's address (a ``Cluster`` or a cluster file).
        name: this client's process name (unique per client; random by default).
        listen: where the client receives messages (``127.0.0.1:0`` by default).
        timeout: default receive deadline of a session, seconds.
    """

    def __init__(
        self,
        cluster: Cluster | str | os.PathLike[str],
        *,
        name: str | None = None,
        listen: str = "127.0.0.1:0",
        timeout: float = 10.0,
    ) -> None:
        if not isinstance(cluster, Cluster):
            cluster = load_cluster(cluster)
        self.cluster = cluster
        self.name = name or f"client-{secrets.token_hex(4)}"
        self.timeout = cluster.timeout or timeout
        self.transport = GrpcTransport(
            self.name, listen, dict(cluster.roles), tls=cluster.tls_for(self.name)
        )
        self.node = Node(self.name, self.transport)

    async def __aenter__(self) -> Client:
        await self.node.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.node.aclose()

    async def run(
        self, chor: Choreography, *, timeout: float | None = None, **inputs: Any
    ) -> dict[str, Any]:
        """Run one session of ``chor``: served roles remotely, the rest here.

        The client plays the (at most one) active role of ``chor`` that the
        cluster does not serve. Inputs located at a served role are sent to it
        (and override that server's own inputs for this session).

        Returns:
            ``{role: result}`` for every role of ``chor``.

        Raises:
            UsageError: more than one role would have to run here, or an input is unknown.
            ChoreoRuntimeError: a role failed (the root cause).
        """
        timeout = timeout or self.timeout
        active = [r for r in chor.roles if r in set(chor.active_roles())]
        local = [r for r in active if r not in self.cluster.roles]
        if len(local) > 1:
            raise UsageError(
                f"roles {', '.join(local)} of {chor.name} are not in the cluster; a client can "
                "play at most one role"
            )
        names = {n for n, kind, _ in chor.params if kind == "input"}
        unknown = sorted(set(inputs) - names)
        if unknown:
            raise UsageError(f"{chor.name} has no input {unknown[0]!r}")
        roles = {r: (self.name if r in local else r) for r in chor.roles}
        session = secrets.token_hex(12)
        ctx = self.node.open(session, chor.hash, timeout, [roles[r] for r in active])
        remote = [r for r in active if r not in local]
        try:
            for r in remote:
                mine = {p: inputs[p] for p in chor.endpoints()[r].params if p in inputs}
                payload = {
                    "roles": roles,
                    "inputs": mine,
                    "timeout": timeout,
                    "peers": [roles[x] for x in active],
                }
                env = Envelope(
                    session, self.name, r, chor.name, Kind.START, _codec.encode(payload), chor.hash
                )
                await self.transport.send(env, timeout)
            results: dict[str, Any] = {r: None for r in chor.roles}
            errors: list[ChoreoRuntimeError] = []
            if local:
                role = local[0]
                try:
                    args = tuple(inputs[p] for p in chor.endpoints()[role].params)
                except KeyError as missing:
                    raise UsageError(
                        f"role {role} of {chor.name} needs the input {missing}"
                    ) from None
                outcome = await _play(chor, role, ctx, roles, args)
                if "ok" in outcome:
                    results[role] = outcome["ok"]
                else:
                    errors.append(_rebuild(outcome))
            for r in remote:
                # once the session has failed, the other results are echoes of that
                # failure (or never come, from a dead role): do not wait long for them
                wait = timeout if not errors else min(timeout, _ECHO_GRACE)
                outcome = await self._result(ctx, r, wait)
                if "ok" in outcome:
                    results[r] = outcome["ok"]
                elif not (errors and outcome.get("error") == "DeadlineError"):
                    errors.append(_rebuild(outcome))
        finally:
            self.node.close(session)
        if errors:
            root = [e for e in errors if not isinstance(e, PeerFailedError)] or errors
            raise root[0]
        for r in chor.roles:
            if r not in active:  # never started: runs here, it talks to nobody
                results[r] = None
        return results

    async def _result(self, ctx: SessionContext, role: str, timeout: float) -> dict[str, Any]:
        """Wait for ``role``'s RESULT envelope (kept aside from the session's messages)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            env = ctx.results.pop(role, None)
            if env is not None:
                try:
                    outcome = _codec.decode(env.payload)
                except CodecError as exc:
                    return _error_result(exc)
                if isinstance(outcome, dict):
                    return outcome
                return _error_result(ProtocolError(f"malformed RESULT from {role}"))
            remaining = deadline - loop.time()
            if remaining <= 0:
                return _error_result(
                    DeadlineError(
                        f"{self.name} waited {timeout:g}s for the result of role {role} in "
                        f"session {ctx.session}"
                    )
                )
            waiter: asyncio.Future[None] = loop.create_future()
            ctx.result_waiter = waiter
            try:
                await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                pass
            finally:
                ctx.result_waiter = None


def _rebuild(outcome: Mapping[str, Any]) -> ChoreoRuntimeError:
    cls = _ERRORS.get(str(outcome.get("error")), ChoreoRuntimeError)
    return cls(str(outcome.get("message", "")))
