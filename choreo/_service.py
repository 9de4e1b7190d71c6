"""Service mode: long-running role processes that take part in many sessions.

``serve`` keeps one role of a cluster running: it hosts a ``Node`` on the
cluster file's transport (gRPC or TCP) and joins a new session whenever a
client asks (a START envelope), for any choreography defined in the served
file, concurrently with the sessions already running. Role state lives on
across sessions: the inputs given to ``serve`` (``--input store={}``) are the
*same objects* in every session, and module globals of the served file
persist in the process.

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
import contextlib
import logging
import os
import secrets
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from choreo import _codec, _errors
from choreo._cluster import Cluster, load_cluster, make_transport
from choreo._dsl import Choreography
from choreo._endpoint import ABORT_TIMEOUT, Node, SessionContext
from choreo._envelope import Envelope, Kind
from choreo._errors import (
    ChoreoError,
    ChoreoRuntimeError,
    CodecError,
    DeadlineError,
    PeerFailedError,
    ProtocolError,
    RoleFailedError,
    TransportError,
    UsageError,
    VersionMismatchError,
)
from choreo._loader import choreographies_in
from choreo._run import member_value, members_of, play_role
from choreo._session import MISMATCH_PREFIX

__all__ = ["Client", "Server", "serve"]

log = logging.getLogger("choreo.service")

#: seconds a client still waits for results after the session is known to have failed
_ECHO_GRACE = 0.25
#: seconds a client waits for a group member's result once every role has finished
_MEMBER_GRACE = 1.0

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
        max_sessions: sessions run at once, at most; a START beyond is refused
            (the client raises ``TransportError`` saying this role is at its
            limit) and the sessions already running go on. ``None``: the
            cluster file's ``[limits] max_sessions``, else no limit.

    Raises:
        UsageError: the role is not in the cluster, the module has no
            choreography, or a limit is not positive.
    """

    def __init__(
        self,
        module: ModuleType,
        role: str,
        cluster: Cluster,
        inputs: Mapping[str, Any] | None = None,
        *,
        timeout: float = 10.0,
        max_sessions: int | None = None,
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
        self.transport = make_transport(
            cluster.transport,
            role,
            cluster.roles[role],
            peers,
            learn_peers=True,
            tls=cluster.tls_for(role),
        )
        limits = dict(getattr(cluster, "limits", {}))
        if max_sessions is not None:
            limits["max_sessions"] = max_sessions
        self.node = Node(role, self.transport, **limits)
        self.node.on_start = self._on_start
        self.sessions_done = 0
        self.sessions_failed = 0
        #: STARTs refused because ``max_sessions`` sessions were running
        self.sessions_refused = 0
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

    @property
    def max_sessions(self) -> int | None:
        """Sessions run at once, at most (``None``: no limit)."""
        return self.node.max_sessions

    def _on_start(self, env: Envelope) -> None:
        limit = self.node.max_sessions
        if env.session in self._running:
            return  # a START sent again: the session runs already
        if limit is not None and len(self._running) >= limit:
            # Counted when the START arrives, not when the session opens: a burst of STARTs
            # cannot overshoot. The running sessions are not touched.
            self.sessions_refused += 1
            busy = TransportError(
                f"{self.role} is at its limit of {limit} concurrent sessions (max_sessions): "
                f"session {env.session} of {env.label} was refused; try again later"
            )
            log.warning("%s", busy)
            self.node.discard(env.session)
            self.node.spawn(self._refuse(env, busy, self.timeout, everyone=True))
            return
        task = asyncio.ensure_future(self._session(env))
        self._running[env.session] = task
        task.add_done_callback(lambda _t: self._running.pop(env.session, None))

    async def _refuse(
        self, env: Envelope, exc: ChoreoError, timeout: float, *, everyone: bool = False
    ) -> None:
        """Do not join the session: tell the client to stop (ABORT), then why (RESULT).

        ``everyone``: tell the session's other roles too (the START's ``peers``),
        so that none waits for this role until its deadline.
        """
        prefix = MISMATCH_PREFIX if isinstance(exc, VersionMismatchError) else ""
        reason = f"{prefix}{type(exc).__name__}: {exc}".encode()
        told = [env.sender]
        if everyone:
            with contextlib.suppress(ChoreoError, TypeError, ValueError):
                start = _codec.decode(env.payload)
                peers = start.get("peers", []) if isinstance(start, dict) else []
                told += [p for p in peers if isinstance(p, str) and p not in (self.role, *told)]

        async def abort(peer: str, wait: float) -> None:
            envelope = Envelope(
                env.session, self.role, peer, "abort", Kind.ABORT, reason, env.chash
            )
            try:
                await self.transport.send(envelope, wait)
            except ChoreoError:
                pass  # the RESULT below (or the peer's deadline) still ends the session

        await asyncio.gather(
            abort(env.sender, timeout), *(abort(p, min(timeout, ABORT_TIMEOUT)) for p in told[1:])
        )
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
        groups = {str(g): tuple(ms) for g, ms in dict(start.get("groups", {})).items()}
        mine = [p for p, actual in roles.items() if actual == self.role]
        mine += [g for g, ms in groups.items() if self.role in ms]
        if len(mine) != 1:
            await self._refuse(
                env, ProtocolError(f"{self.role} is not one role of this session"), timeout
            )
            return
        role = mine[0]
        given = dict(start.get("inputs", {}))
        if role in groups:  # a member: its own entry of a per-member input from the client
            given = {k: member_value(v, groups[role], self.role) for k, v in given.items()}
        inputs = {**self.inputs, **given}  # the server's own state is used as is
        try:
            ctx = self.node.open(env.session, chor.hash, timeout, list(start.get("peers", [])))
        except TransportError as exc:  # max_sessions, should _on_start have let it through
            self.node.discard(env.session)
            await self._refuse(env, exc, timeout, everyone=True)
            return
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
        result = await _play(chor, role, ctx, roles, args, groups)
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
    groups: Mapping[str, tuple[str, ...]] | None = None,
) -> dict[str, Any]:
    """Run one role of a session; the outcome as a RESULT payload."""
    try:
        return {"ok": await play_role(chor, role, ctx, roles, args, groups=groups)}
    except ChoreoError as exc:
        return _error_result(exc)


async def serve(
    module: ModuleType,
    role: str,
    cluster: Cluster,
    inputs: Mapping[str, Any] | None = None,
    *,
    timeout: float = 10.0,
    max_sessions: int | None = None,
) -> None:
    """Serve ``role`` until cancelled (``max_sessions``: see ``Server``).

    Raises:
        UsageError: the role is not in the cluster or the module has no choreography.
    """
    server = Server(module, role, cluster, inputs, timeout=timeout, max_sessions=max_sessions)
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
        self.transport = make_transport(
            cluster.transport,
            self.name,
            listen,
            dict(cluster.roles),
            tls=cluster.tls_for(self.name),
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

        A group's members are given like an input (``backups=["backups.0",
        "backups.1"]``: a subset of the served members, e.g. the current view);
        by default they are the cluster file's ``[groups]`` members, or else
        the served roles named ``<group>.<index>``. Members are where a
        protocol's redundancy lives: a member that fails or never answers does
        not fail the session when every role succeeded; its error is kept in
        ``member_errors`` and its result is ``None``.

        Args:
            chor: the choreography to run.
            timeout: the session's receive deadline in seconds (default: the
                client's own).
            **inputs: the choreography's inputs, and the members of its groups.

        Returns:
            ``{role: result}`` for every role (and group member) of ``chor``.

        Raises:
            UsageError: more than one role would have to run here, an input is
                unknown, or a group's members are not known.
            ChoreoRuntimeError: a role failed (the root cause).
        """
        timeout = timeout or self.timeout
        inputs = dict(inputs)
        groups = {g: self._members(chor, g, inputs.pop(g, None)) for g in chor.groups}
        active_parties = set(chor.active_roles())
        active = [r for r in chor.roles if r in active_parties]
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
        members = [m for g in chor.groups if g in active_parties for m in groups[g]]
        party_of = {r: r for r in chor.roles} | {m: g for g, ms in groups.items() for m in ms}
        session = secrets.token_hex(12)
        everyone = [roles[r] for r in active] + members
        ctx = self.node.open(session, chor.hash, timeout, everyone)
        remote = [r for r in active if r not in local] + members
        member_set = set(members)
        unstarted: dict[str, ChoreoRuntimeError] = {}
        self.member_errors: dict[str, ChoreoRuntimeError] = {}
        try:
            for r in remote:
                params = chor.endpoints()[party_of[r]].params
                mine = {p: inputs[p] for p in params if p in inputs}
                payload = {
                    "roles": roles,
                    "inputs": mine,
                    "timeout": timeout,
                    "peers": everyone,
                    "groups": {g: list(ms) for g, ms in groups.items()},
                }
                env = Envelope(
                    session, self.name, r, chor.name, Kind.START, _codec.encode(payload), chor.hash
                )
                if r in member_set:  # a member that is down must not stop the session
                    self.node.spawn(self._start_member(env, timeout, unstarted))
                else:
                    await self.transport.send(env, timeout)
            results: dict[str, Any] = {r: None for r in party_of}
            errors: list[ChoreoRuntimeError] = []
            if local:
                role = local[0]
                try:
                    args = tuple(inputs[p] for p in chor.endpoints()[role].params)
                except KeyError as missing:
                    raise UsageError(
                        f"role {role} of {chor.name} needs the input {missing}"
                    ) from None
                outcome = await _play(chor, role, ctx, roles, args, groups)
                if "ok" in outcome:
                    results[role] = outcome["ok"]
                else:
                    errors.append(_rebuild(outcome))
            for r in remote:
                if r in groups.get(party_of[r], ()):
                    continue  # members last: their failures may be tolerated
                # once the session has failed, the other results are echoes of that
                # failure (or never come, from a dead role): do not wait long for them
                wait = timeout if not errors else min(timeout, _ECHO_GRACE)
                outcome = await self._result(ctx, r, wait)
                if "ok" in outcome:
                    results[r] = outcome["ok"]
                elif not (errors and outcome.get("error") == "DeadlineError"):
                    errors.append(_rebuild(outcome))
            for m in members:
                if m in unstarted:
                    self.member_errors[m] = unstarted[m]
                    continue
                # every role is done: a member still silent now is down or cut off
                wait = timeout if not active else min(timeout, _MEMBER_GRACE)
                outcome = await self._result(ctx, m, wait)
                if "ok" in outcome:
                    results[m] = outcome["ok"]
                else:
                    self.member_errors[m] = _rebuild(outcome)
        finally:
            self.node.close(session)
        if errors:
            root = [e for e in errors if not isinstance(e, PeerFailedError)] or errors
            raise root[0]
        if self.member_errors and not active:  # only members took part: they are the result
            raise next(iter(self.member_errors.values()))
        for r in chor.roles:
            if r not in active:  # never started: runs here, it talks to nobody
                results[r] = None
        return results

    async def _start_member(
        self, env: Envelope, timeout: float, unstarted: dict[str, ChoreoRuntimeError]
    ) -> None:
        """Send a START to a group member in the background; note it if it cannot be reached."""
        try:
            await self.transport.send(env, timeout)
        except ChoreoError as exc:
            log.warning("%s: could not start %s: %s", self.name, env.receiver, exc)
            unstarted[env.receiver] = TransportError(
                f"{self.name} could not start group member {env.receiver} in session "
                f"{env.session}: {exc}"
            )

    def _members(self, chor: Choreography, group: str, census: Any) -> tuple[str, ...]:
        """A group's members for one session (see ``run``)."""
        if census is None:
            census = self.cluster.groups.get(group)
        if census is None:
            prefix = f"{group}."
            numbered = [r for r in self.cluster.roles if r.startswith(prefix)]
            numbered = [r for r in numbered if r[len(prefix) :].isdigit()]
            census = sorted(numbered, key=lambda r: int(r[len(prefix) :])) or None
        if census is None:
            raise UsageError(
                f"{chor.name}: the members of group {group!r} are not known: pass "
                f"{group}=[...] or list them under [groups.{group}] in the cluster file"
            )
        members = members_of(chor.name, group, census)
        missing = [m for m in members if m not in self.cluster.roles]
        if missing:
            raise UsageError(
                f"{chor.name}: member {missing[0]!r} of group {group!r} is not served by the "
                "cluster"
            )
        return members

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
