"""Roles as operating-system processes over gRPC or TCP: ``choreo run`` and ``choreo up``.

``run_role`` plays one role of one session (one-shot mode): it serves on the
role's address from the cluster file, sends to its peers at theirs, and
returns its result. ``up`` starts every active role of a choreography as its
own ``choreo run`` process on free ports of 127.0.0.1, shows which roles are
up and which have finished, and collects every result.

The parent talks to its children through their standard output, which the
child reserves for that purpose (``--report``): the child's own prints go to
its standard error, which the parent forwards, prefixed with the role. The
report lines are ``READY <address>``, ``RESULT <base64 codec bytes>`` (or
``RESULT-REPR <base64 text>`` for a result the codec cannot encode) and
``ERROR <base64 text>``. Nothing read from a child is evaluated: results are
decoded with the safe codec.

The transport is the cluster file's ``transport`` (``"grpc"`` or ``"tcp"``);
``choreo up --transport`` writes it into the cluster file it makes for its
children.

When a role fails, or on Ctrl-C, every child is stopped (SIGTERM, then
SIGKILL after a grace period); none is left behind.

Traces (``up(..., trace=PATH)``): every child records its own events into its
own file in the run's temporary directory (``choreo run --trace``, wall-clock
timestamps); once every child has stopped, ``up`` merges them, sorted by
timestamp, into ``PATH``, whether the run succeeded or not.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import IO, Any

from choreo import _codec
from choreo._cluster import TRANSPORTS, Cluster, make_transport, write_cluster
from choreo._dsl import Choreography
from choreo._endpoint import Endpoint, Node
from choreo._errors import (
    ChoreoRuntimeError,
    CodecError,
    RoleFailedError,
    UsageError,
)
from choreo._run import member_value, members_of, play_role
from choreo._tls import TlsConfig
from choreo._trace import Tracer, load_trace, sort_records, write_trace
from choreo._transport import LocalNetwork

__all__ = ["free_ports", "role_inputs", "run_role", "up"]


def role_inputs(chor: Choreography, role: str, inputs: dict[str, Any]) -> tuple[Any, ...]:
    """The positional inputs of ``role``'s endpoint function, from named inputs.

    Raises:
        UsageError: an input of ``role`` is missing, or a name is not an input.
    """
    names = {name for name, kind, _ in chor.params if kind in ("input", "group")}
    unknown = sorted(set(inputs) - names)
    if unknown:
        raise UsageError(
            f"{chor.name} has no input {unknown[0]!r}; its inputs are: " + ", ".join(sorted(names))
        )
    eir = chor.endpoints()[role]
    missing = [p for p in eir.params if p not in inputs]
    missing += [g for g in chor.groups if g not in inputs]
    if missing:
        raise UsageError(f"role {role} of {chor.name} needs the input {missing[0]!r}")
    return tuple(inputs[p] for p in eir.params)


async def run_role(
    chor: Choreography,
    role: str,
    addresses: dict[str, str],
    inputs: dict[str, Any],
    *,
    session: str,
    timeout: float,
    on_ready: Callable[[str], None] | None = None,
    before_start: Callable[[], Awaitable[None]] | None = None,
    on_error: Callable[[BaseException], None] | None = None,
    tls: TlsConfig | None = None,
    tracer: Tracer | None = None,
    groups: dict[str, list[str]] | None = None,
    transport: str = "grpc",
) -> Any:
    """Play ``role`` of one session of ``chor`` over gRPC or TCP, and return its result.

    Args:
        chor: the choreography.
        role: the role (or group member) to play; ``addresses[role]`` is where it listens.
        addresses: every role -> ``"host:port"``.
        inputs: the choreography's inputs (only those located at ``role`` are used).
        session: the session id, the same for every role of the run.
        timeout: receive (and send) deadline in seconds.
        on_ready: called with the bound address once the role serves.
        before_start: awaited after ``on_ready``, before the role plays its part
            (``choreo up`` starts every role at once when all of them serve).
        on_error: called with the role's error as soon as it fails, before the
            peers are told and the transport is closed.
        tls: TLS for the role's transport (``Cluster.tls_for(role)``), or plaintext.
        tracer: the node's tracer (e.g. a ``TraceRecorder``), or None.
        groups: every group of the choreography -> its members (the cluster
            file's ``[groups]``); a member plays its group's endpoint.
        transport: ``"grpc"`` or ``"tcp"`` (the cluster file's ``transport``).

    Returns:
        The role's result.

    Raises:
        UsageError: the role is not in the choreography or has no address.
        ChoreoRuntimeError: the session failed (deadline, peer failure, ...).
    """
    members = {
        g: members_of(chor.name, g, list((groups or {}).get(g, ())))
        if (groups or {}).get(g)
        else ()
        for g in chor.groups
    }
    missing_groups = [g for g in chor.groups if not members[g]]
    if missing_groups:
        raise UsageError(
            f"{chor.name} needs the members of group {missing_groups[0]!r}: list them in the "
            f"cluster file under [groups.{missing_groups[0]}]"
        )
    party = (
        role if role in chor.roles else next((g for g, ms in members.items() if role in ms), None)
    )
    if party is None:
        known = [*chor.roles, *(m for ms in members.values() for m in ms)]
        raise UsageError(
            f"{chor.name} has no role or group member {role!r}; they are: {', '.join(known)}"
        )
    if role not in addresses:
        raise UsageError(f"the cluster file gives no address for role {role!r}")
    census = {g: list(ms) for g, ms in members.items()}
    args = role_inputs(chor, party, {**inputs, **census})
    if party in members:
        args = tuple(member_value(v, members[party], role) for v in args)
    active = set(chor.active_roles())
    everyone = [r for r in chor.roles if r in active] + [
        m for g, ms in members.items() if g in active for m in ms
    ]
    peers = {r: a for r, a in addresses.items() if r != role}
    link = make_transport(transport, role, addresses[role], peers, tls=tls)
    node = Node(role, link)
    node.tracer = tracer
    await node.start()
    if on_ready is not None:
        on_ready(link.address or addresses[role])
    try:
        if before_start is not None:
            await before_start()
    except BaseException:
        await node.aclose()
        raise
    ctx = node.open(session, chor.hash, timeout, everyone)
    try:
        return await play_role(
            chor, party, ctx, {r: r for r in chor.roles}, args, on_error, groups=members
        )
    finally:
        node.close(session)
        await node.aclose()


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports that were free on ``host`` a moment ago."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def report_result(out: IO[str], value: Any) -> None:
    """Write a child's result line (see the module docstring)."""
    try:
        line = "RESULT " + base64.b64encode(_codec.encode(value)).decode()
    except CodecError:
        line = "RESULT-REPR " + _b64(repr(value))
    print(line, file=out, flush=True)


def report_error(out: IO[str], exc: BaseException) -> None:
    """Write a child's error line."""
    print("ERROR " + _b64(f"{type(exc).__name__}: {exc}"), file=out, flush=True)


class _Child:
    def __init__(self, role: str, proc: asyncio.subprocess.Process) -> None:
        self.role = role
        self.proc = proc
        self.address: str | None = None
        self.result: Any = None
        self.has_result = False
        self.error: str | None = None
        self.stopped = False  # stopped by us because another role failed


async def _read_reports(child: _Child, status: Callable[[str], None]) -> None:
    assert child.proc.stdout is not None
    async for raw in child.proc.stdout:
        line = raw.decode(errors="replace").strip()
        kind, _, data = line.partition(" ")
        try:
            if kind == "READY":
                child.address = data
                status(f"{child.role} is up on {data}")
            elif kind == "RESULT":
                child.result = _codec.decode(base64.b64decode(data))
                child.has_result = True
            elif kind == "RESULT-REPR":
                child.result = _Repr(base64.b64decode(data).decode())
                child.has_result = True
            elif kind == "ERROR":
                child.error = base64.b64decode(data).decode(errors="replace")
        except (ValueError, CodecError) as exc:
            child.error = f"unreadable report from role {child.role}: {exc}"


async def _forward(child: _Child, sink: IO[str]) -> None:
    assert child.proc.stderr is not None
    async for raw in child.proc.stderr:
        print(f"[{child.role}] {raw.decode(errors='replace').rstrip()}", file=sink, flush=True)


class _Repr(str):
    """A result only known by its ``repr`` (the codec could not encode it)."""

    def __repr__(self) -> str:
        return str(self)


async def _stop(children: Sequence[_Child], grace: float = 2.0) -> None:
    for c in children:
        if c.proc.returncode is None:
            c.stopped = True
            with contextlib.suppress(ProcessLookupError):
                c.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for c in children:
        if c.proc.returncode is None:
            try:
                await asyncio.wait_for(c.proc.wait(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    c.proc.kill()
                await c.proc.wait()


async def up(
    target: str,
    chor: Choreography,
    raw_inputs: Sequence[str],
    inputs: dict[str, Any],
    *,
    timeout: float,
    status: Callable[[str], None],
    output: IO[str] = sys.stderr,
    workdir: str | None = None,
    trace: str | Path | None = None,
    census: dict[str, int | list[str]] | None = None,
    transport: str = "grpc",
) -> dict[str, Any]:
    """Run every active role of ``chor`` as its own process; return every role's result.

    Args:
        target: ``FILE:CHOREOGRAPHY`` as the children must load it.
        chor: the loaded choreography (to know its roles and inputs).
        raw_inputs: the ``NAME=VALUE`` strings, forwarded to the role holding each input.
        inputs: the same, parsed (checked here before anything starts).
        timeout: receive deadline of every role, seconds.
        status: called with progress lines ("alice is up on ...", "bob finished").
        output: where the children's own output is forwarded.
        workdir: where to write the cluster file (a temporary directory by default).
        trace: write the merged trace of every role here (JSON lines, sorted by
            timestamp; see ``choreo._trace``), even when a role fails.
        transport: ``"grpc"`` or ``"tcp"``: written into the children's cluster file.
        census: every group's census (a size or member names); each member
            runs as its own process.

    Returns:
        ``{role: result}`` for every role and group member, in parameter order.

    Raises:
        UsageError: inputs are missing or unknown, or the trace cannot be written.
        ChoreoRuntimeError: a role failed; every other role has been stopped.
    """
    if transport not in TRANSPORTS:
        raise UsageError(f"unknown transport {transport!r} (known: {', '.join(TRANSPORTS)})")
    census = census or {}
    unknown = sorted(set(census) - set(chor.groups))
    if unknown:
        raise UsageError(
            f"{chor.name} has no group {unknown[0]!r}; its groups are: "
            + (", ".join(chor.groups) or "(none)")
        )
    members = {g: members_of(chor.name, g, census[g]) if g in census else () for g in chor.groups}
    for g, ms in members.items():
        if not ms:
            raise UsageError(f"{chor.name} needs the census of group {g!r}: --census {g}=SIZE")
    census_inputs = {g: list(ms) for g, ms in members.items()}
    for party in chor.parties:  # every input present, before anything starts
        role_inputs(chor, party, {**inputs, **census_inputs})
    party_of = {r: r for r in chor.roles} | {m: g for g, ms in members.items() for m in ms}
    players = list(party_of)
    active_parties = set(chor.active_roles())
    active = [p for p in players if party_of[p] in active_parties]
    results: dict[str, Any] = {}
    for role in chor.roles:
        if role not in active:  # never started: its projection communicates with nobody
            results[role] = await _run_idle(chor, role, inputs, timeout)
    for g, ms in members.items():
        if g not in active_parties:
            for m in ms:
                results[m] = None
    if not active:
        return {r: results[r] for r in players}
    ports = free_ports(len(active))
    addresses = {r: f"127.0.0.1:{p}" for r, p in zip(active, ports, strict=True)}
    session = f"up-{os.getpid()}-{int(time.time() * 1000)}"
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        cluster_path = Path(tmp) / "cluster.toml"
        write_cluster(
            cluster_path,
            Cluster(
                roles=addresses,
                timeout=timeout,
                groups={g: list(ms) for g, ms in members.items() if g in active_parties},
                transport=transport,
            ),
        )
        children: list[_Child] = []
        tasks: list[asyncio.Task[None]] = []
        try:
            for role in active:
                mine = [
                    item
                    for item in raw_inputs
                    if item.partition("=")[0].strip() in chor.endpoints()[party_of[role]].params
                ]
                argv = [
                    sys.executable,
                    "-m",
                    "choreo._cli",
                    "run",
                    target,
                    "--role",
                    role,
                    "--cluster",
                    str(cluster_path),
                    "--session",
                    session,
                    "--timeout",
                    str(timeout),
                    "--report",
                    "--wait-go",
                ]
                for item in mine:
                    argv += ["--input", item]
                if trace is not None:
                    argv += ["--trace", str(Path(tmp) / f"{role}.trace.jsonl")]
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
                child = _Child(role, proc)
                children.append(child)
                tasks.append(asyncio.ensure_future(_read_reports(child, status)))
                tasks.append(asyncio.ensure_future(_forward(child, output)))
            status("starting " + ", ".join(active))
            tasks.append(asyncio.ensure_future(_go_when_all_ready(children, status)))
            await _wait(children, status)  # returns early when one fails
        finally:
            await _stop(children)
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            if trace is not None:
                _merge_child_traces(Path(tmp), [c.role for c in children], trace, status)
    errors = [
        (c.role, c.error or f"exited with status {c.proc.returncode}")
        for c in children
        if not c.has_result and not c.stopped
    ]
    if errors or any(not c.has_result for c in children):
        root = [e for e in errors if "PeerFailedError" not in e[1]] or errors
        detail = "; ".join(f"{r}: {e}" for r, e in root) or "a role was stopped"
        raise ChoreoRuntimeError(f"{chor.name} failed: {detail}")
    for c in children:
        results[c.role] = c.result
    return {r: results[r] for r in players}


def _merge_child_traces(
    tmp: Path, roles: Sequence[str], out: str | Path, status: Callable[[str], None]
) -> None:
    """Merge the children's trace files into ``out``; an unreadable one is reported, skipped."""
    records = []
    for role in roles:
        path = tmp / f"{role}.trace.jsonl"
        if not path.exists():
            status(f"{role} wrote no trace")
            continue
        try:
            records.extend(load_trace(path))
        except UsageError as exc:  # e.g. a child killed in the middle of a line
            status(f"the trace of {role} is unreadable and left out: {exc}")
    write_trace(sort_records(records), out)


async def _go_when_all_ready(children: Sequence[_Child], status: Callable[[str], None]) -> None:
    """Tell every child to start its role once every child serves (said READY).

    A role that started at once could send to a peer whose process is still
    starting, and a deadline or a gather's ``timeout=`` would then measure the
    peer's start-up (a primary-backup put answered RETRY because a backup was
    still importing). A child that fails first ends the run (``_wait``) and
    this with it.
    """
    while not all(c.address is not None for c in children):
        if any(c.proc.returncode is not None for c in children):
            return
        await asyncio.sleep(0.01)
    status("every role serves: go")
    for c in children:
        if c.proc.stdin is not None:
            with contextlib.suppress(ConnectionError):
                c.proc.stdin.write(b"GO\n")
                await c.proc.stdin.drain()


async def _wait(children: Sequence[_Child], status: Callable[[str], None]) -> bool:
    """Wait for every child; return True (early) as soon as one has failed.

    The caller then stops the others (its ``finally``).
    """
    pending = {asyncio.ensure_future(c.proc.wait()): c for c in children}
    while pending:
        done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for fut in done:
            child = pending.pop(fut)
            await asyncio.sleep(0.05)  # let the report reader take the last lines
            if child.proc.returncode == 0 and child.error is None:
                status(f"{child.role} finished")
            else:
                status(
                    f"{child.role} FAILED ({child.error or f'exit status {child.proc.returncode}'})"
                )
                for other in pending:
                    other.cancel()
                return True
    return False


async def _run_idle(chor: Choreography, role: str, inputs: dict[str, Any], timeout: float) -> Any:
    """Run a role that communicates with nobody, in this process."""
    node = Node(role, LocalNetwork().transport(role))
    await node.start()
    ctx = node.open("idle", chor.hash, timeout, ())
    try:
        fn = chor._endpoint_function(role)
        return await fn(Endpoint(ctx, {r: r for r in chor.roles}), *role_inputs(chor, role, inputs))
    except ChoreoRuntimeError:
        raise
    except Exception as exc:
        raise RoleFailedError(role, f"role {role} raised {type(exc).__name__}: {exc}") from exc
    finally:
        await node.aclose()
