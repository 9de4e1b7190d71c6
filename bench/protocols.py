"""Benchmark: choreographed protocols in service mode against hand-written grpc.aio.

    .venv/bin/python bench/protocols.py [--reps 5] [--quick] [--puts N] [--rounds N] [--rtt N]

Every role, every group member, is its own OS process on 127.0.0.1, started
with ``subprocess`` (never fork: see PERF-NOTES), every process on asyncio's
own event loop. The driver (this script without ``--proc``) only starts
processes, waits for them with deadlines and prints the tables; the
measurements run in one ``client`` process, repetitions interleaved across
rows (rep 1 of every row, then rep 2, ...; the order of the rows rotates from
one repetition to the next).

Primary-backup PUT, 2 backups (``protocols/primary_backup.py``):

* choreo: ``primary``, ``backups.0`` and ``backups.1`` are served by
  ``choreo.Server`` (service mode, gRPC transport, one process each, role
  state kept across sessions); the client process plays ``client`` through
  ``choreo.Client.run(put, key="x", value=i)``, one session per PUT, one after
  the other. Two figures per PUT: the whole ``Client.run`` call (the STARTs,
  the protocol, and every role's RESULT, which ``run`` waits for), and the
  client role's own latency, from the call to the moment the client's
  projected endpoint returns the primary's answer.
* hand-written on grpc.aio, raw bytes messages (no serializer, ``struct``
  framing): client -> primary on one long-lived bidi stream; the primary
  gives the request the next sequence number, writes the update on its
  long-lived bidi stream to each backup (both writes before any read), reads
  both acknowledgements (with the protocol's ``ACK_TIMEOUT`` as a deadline),
  applies the update to its store (only if both acknowledged the sequence
  number) and writes ``OK`` back; each backup applies the update to its own
  store, keeping the newer version, and acknowledges. 4 processes.
* diagnostic row: ``bench/_pb_loop.py``'s ``put_loop`` runs ``put`` as a
  sub-choreography 50 times in one session, against 3 more served processes;
  the client notes the time between answers: the per-PUT cost of choreo's
  runtime and transport without a session's STARTs and RESULTs.

Paxos decision, 3/5/7/9 acceptors (``protocols/paxos.py``'s ``propose``):
9 acceptor processes and 1 learner process (a group has at least one member:
the fewest learners the protocol allows) served by ``choreo.Server``; a
session with ``n`` acceptors uses ``acceptors.0`` .. ``acceptors.n-1``. The
client process is the proposer: one ``Client.run(propose, ...)`` per round,
each with a higher ballot ``(k, 0)``, so every round runs both phases and
ends ``chosen``. Decision latency: from the call to ``Client.run`` (the
proposer starts its round: it sends the STARTs and Prepare) to the moment the
proposer's projected endpoint returns ``("chosen", v, n)`` (a majority of
Accepted received and read). Also shown: the whole ``Client.run`` (which
then waits for every acceptor's and the learner's RESULT). Baseline, same
invocation: one round trip of a 16-byte raw-bytes message on a long-lived
grpc.aio bidi stream between the client process and an echo process.

Paxos hand-written on grpc.aio, raw bytes (``bench/_paxos_hw.py``): the same
flow with 9 more acceptor processes and 1 more learner process (promised and
accepted held in memory); the client process is the proposer, a long-lived
bidi stream to each acceptor, each acceptor one to the learner. A round with
``n`` acceptors: Prepare(n) written to the first ``n`` acceptors at once, the
first majority of Promises read, the value chosen (the highest accepted,
else its own), Accept(n, v) written to the ``n``, each acceptor writing its
Accepted to the learner and then to the proposer, the first majority of
Accepted read. Decision latency: from the first Prepare written to the
majority of Accepted read (the same ballots ``(k, 0)``, the same value). A
further row gives choreo's decision latency over the hand-written one's, of
the same repetitions.

Each repetition's value of a row is the median over that row's operations
in that repetition; the table gives the median, min and max of those over
the repetitions and the ratio to the baseline of the same repetitions
(``bench/_table.py``). No timing is asserted anywhere.

Acceptor state: the acceptors keep ``promised``/``accepted`` across rounds as
the protocol says, but their ``events`` log (kept for the tests) is capped
to its last 64 entries (``_CappedStore``): ``protocols/paxos.py`` copies the
whole log on every promise and accept, which would make later rounds of a
long run slower than earlier ones.

A third table gives the CPU time per operation (user + system, every thread,
from ``/proc``) summed over the processes of the row (the client process
always included: the proposer, or the client): less sensitive than latency
to what else the machine runs.

Every process is stopped on exit, error or Ctrl-C; a child also exits when
its stdin (a pipe from the driver) closes, so that even a killed driver
leaves nothing behind. Every wait has a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import select
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this file's directory comes first on sys.path, and this file (named
# protocols.py) would shadow the ``protocols`` package: put the repository there instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HOST = "127.0.0.1"
PAYLOAD = b"0123456789abcdef"  # 16 bytes, as in PERF-NOTES
ACCEPTORS = (3, 5, 7, 9)
MAX_ACCEPTORS = max(ACCEPTORS)
OP_TIMEOUT = 10.0  # seconds: every single operation's deadline
START_TIMEOUT = 60.0  # seconds: every process must be ready within this
PUT_PATH = "/bench.PB/Put"
REPLICATE_PATH = "/bench.PB/Replicate"
ECHO_PATH = "/bench.Echo/PingPong"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _watch_stdin() -> None:
    """Exit this process as soon as the driver goes away (its pipe to our stdin closes)."""

    def watch() -> None:
        with contextlib.suppress(OSError):
            while os.read(0, 4096):  # the raw fd: no buffer lock held at shutdown
                pass
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


# -- hand-written primary-backup on grpc.aio (raw bytes) ----------------------
#
# request: key length (1 byte), key, value (int64); update: seq (uint64) + request;
# ack: seq (uint64); reply: b"OK" or b"RT" (retry) + seq (uint64).

ACK_TIMEOUT = 0.3  # protocols.primary_backup.ACK_TIMEOUT, not imported: no choreo here


def _apply(store: dict[bytes, tuple[int, int]], update: bytes) -> int:
    seq = struct.unpack_from("<Q", update)[0]
    klen = update[8]
    key = update[9 : 9 + klen]
    value = struct.unpack_from("<q", update, 9 + klen)[0]
    held = store.get(key)
    if held is None or held[0] < seq:
        store[key] = (seq, value)
    return seq


async def hw_backup() -> None:
    import grpc

    store: dict[bytes, tuple[int, int]] = {}

    async def replicate(updates: Any, context: Any) -> None:
        async for update in updates:
            await context.write(struct.pack("<Q", _apply(store, update)))

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "bench.PB", {"Replicate": grpc.stream_stream_rpc_method_handler(replicate)}
            ),
        )
    )
    port = server.add_insecure_port(f"{HOST}:0")
    await server.start()
    print(f"READY {port}", flush=True)
    await server.wait_for_termination()


async def hw_primary(backup_ports: list[int]) -> None:
    import grpc

    store: dict[bytes, tuple[int, int]] = {}
    seq = 0
    channels = [grpc.aio.insecure_channel(f"{HOST}:{p}") for p in backup_ports]
    for ch in channels:
        await asyncio.wait_for(ch.channel_ready(), START_TIMEOUT)
    streams = [ch.stream_stream(REPLICATE_PATH)() for ch in channels]  # long-lived

    async def put(requests: Any, context: Any) -> None:
        nonlocal seq
        async for request in requests:
            seq += 1
            update = struct.pack("<Q", seq) + request
            for s in streams:  # to both backups before waiting for either
                await s.write(update)
            acked = 0
            try:
                async with asyncio.timeout(ACK_TIMEOUT):
                    for s in streams:
                        if struct.unpack("<Q", await s.read())[0] == seq:
                            acked += 1
            except TimeoutError:
                pass  # a real primary would drop the backup from its view here
            if acked == len(streams):
                _apply(store, update)  # the commit point
                await context.write(b"OK" + struct.pack("<Q", seq))
            else:
                await context.write(b"RT" + struct.pack("<Q", seq))

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "bench.PB", {"Put": grpc.stream_stream_rpc_method_handler(put)}
            ),
        )
    )
    port = server.add_insecure_port(f"{HOST}:0")
    await server.start()
    print(f"READY {port}", flush=True)
    await server.wait_for_termination()


async def echo() -> None:
    import grpc

    async def ping_pong(requests: Any, context: Any) -> None:
        async for msg in requests:
            await context.write(msg)

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "bench.Echo", {"PingPong": grpc.stream_stream_rpc_method_handler(ping_pong)}
            ),
        )
    )
    port = server.add_insecure_port(f"{HOST}:0")
    await server.start()
    print(f"READY {port}", flush=True)
    await server.wait_for_termination()


# -- choreo role servers --------------------------------------------------------


class _CappedStore(dict):  # type: ignore[type-arg]
    """An acceptor's or learner's state whose ``events`` log keeps only its last 64 entries."""

    def __setitem__(self, key: Any, value: Any) -> None:
        if key == "events":
            value = value[-64:]
        super().__setitem__(key, value)


async def choreo_server(protocol: str, role: str, cluster_path: str) -> None:
    import choreo
    from choreo._cluster import load_cluster

    module: Any
    if protocol in ("pb", "pbloop"):
        if protocol == "pb":
            from protocols import primary_backup as module
        else:
            from bench import _pb_loop as module

        inputs: dict[str, Any] = {"pstore": {}} if role == "primary" else {"bstore": {}}
    else:
        from protocols import paxos as module

        inputs = {"astore": _CappedStore()} if role.startswith("acceptors.") else {}
        if role.startswith("learners."):
            inputs = {"lstore": _CappedStore()}
    server = choreo.Server(module, role, load_cluster(cluster_path), inputs, timeout=OP_TIMEOUT)
    await server.start()
    print(f"READY {role}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()


# -- the measuring client -------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system, every thread) used so far by this process and by ``pids``."""
    total = time.process_time()
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:  # utime, stime: fields 14, 15
            fields = f.read().rpartition(")")[2].split()
        total += (int(fields[11]) + int(fields[12])) / _TICK
    return total


async def client(cfg: dict[str, Any]) -> None:
    import grpc

    import choreo
    from bench import _paxos_hw, _pb_loop
    from bench._pb_loop import put_loop
    from choreo import _service
    from choreo._cluster import load_cluster
    from protocols.paxos import propose
    from protocols.primary_backup import put

    # When the role this process plays returns, note the time: the client's answer
    # (put) or the proposer's decision (propose). Wraps choreo's own function.
    marks: list[float] = []
    play = _service._play

    async def timed_play(*args: Any, **kwargs: Any) -> dict[str, Any]:
        outcome = await play(*args, **kwargs)
        marks.append(time.perf_counter())
        return outcome

    _service._play = timed_play  # type: ignore[assignment]

    pb_client = choreo.Client(load_cluster(cfg["pb_cluster"]), timeout=OP_TIMEOUT)
    px_client = choreo.Client(load_cluster(cfg["px_cluster"]), timeout=OP_TIMEOUT)
    await pb_client.__aenter__()
    await px_client.__aenter__()
    hw_channel = grpc.aio.insecure_channel(f"{HOST}:{cfg['hw_port']}")
    echo_channel = grpc.aio.insecure_channel(f"{HOST}:{cfg['echo_port']}")
    hw_call = hw_channel.stream_stream(PUT_PATH)()
    echo_call = echo_channel.stream_stream(ECHO_PATH)()
    value = 0
    ballot = 0
    sessions = {"pb": 0, "px": 0}

    pids = cfg["pids"]

    async def pb_hw(n: int) -> dict[str, float]:
        nonlocal value
        lat = []
        cpu = cpu_seconds(pids["hw"])
        key = b"x"
        for _ in range(n):
            value += 1
            request = bytes([len(key)]) + key + struct.pack("<q", value)
            t0 = time.perf_counter()
            async with asyncio.timeout(OP_TIMEOUT):
                await hw_call.write(request)
                reply = await hw_call.read()
            lat.append(time.perf_counter() - t0)
            assert reply[:2] == b"OK", reply
        cpu = cpu_seconds(pids["hw"]) - cpu
        return {"pb_hw": statistics.median(lat), "cpu_pb_hw": cpu / n}

    async def pb_choreo(n: int) -> dict[str, float]:
        nonlocal value
        whole, mine = [], []
        cpu = cpu_seconds(pids["pb"])
        for _ in range(n):
            value += 1
            marks.clear()
            t0 = time.perf_counter()
            res = await pb_client.run(put, key="x", value=value)
            sessions["pb"] += 1
            t2 = time.perf_counter()
            assert res["client"][0] == "OK", res
            whole.append(t2 - t0)
            mine.append(marks[0] - t0)
        cpu = cpu_seconds(pids["pb"]) - cpu
        return {
            "pb_run": statistics.median(whole),
            "pb_client": statistics.median(mine),
            "cpu_pb_choreo": cpu / n,
        }

    loop_client = choreo.Client(load_cluster(cfg["loop_cluster"]), timeout=OP_TIMEOUT)
    await loop_client.__aenter__()

    async def pb_loop(n: int) -> dict[str, float]:
        nonlocal value
        steps: list[float] = []
        for _ in range(max(1, n // _pb_loop.LOOP)):
            value += 1
            _pb_loop.STAMPS.clear()
            res = await loop_client.run(put_loop, key="x", value=value)
            assert res["client"][0] == "OK", res
            stamps = _pb_loop.STAMPS
            steps += [b - a for a, b in itertools.pairwise(stamps)]
        return {"pb_loop": statistics.median(steps)}

    async def ping(n: int) -> dict[str, float]:
        lat = []
        cpu = cpu_seconds(pids["echo"])
        for _ in range(n):
            t0 = time.perf_counter()
            async with asyncio.timeout(OP_TIMEOUT):
                await echo_call.write(PAYLOAD)
                got = await echo_call.read()
            lat.append(time.perf_counter() - t0)
            assert got == PAYLOAD
        cpu = cpu_seconds(pids["echo"]) - cpu
        return {"rtt": statistics.median(lat), "cpu_rtt": cpu / n}

    def paxos(acceptors: int) -> Any:
        members = [f"acceptors.{i}" for i in range(acceptors)]
        involved = pids["acceptors"][:acceptors] + pids["learners"]

        async def measure(n: int) -> dict[str, float]:
            nonlocal ballot
            whole, decided = [], []
            cpu = cpu_seconds(involved)
            for _ in range(n):
                ballot += 1
                marks.clear()
                t0 = time.perf_counter()
                res = await px_client.run(
                    propose,
                    value="A",
                    ballot=(ballot, 0),
                    acceptors=members,
                    learners=["learners.0"],
                )
                t2 = time.perf_counter()
                sessions["px"] += 1
                assert res["proposer"][0] == "chosen", res
                whole.append(t2 - t0)
                decided.append(marks[0] - t0)
            cpu = cpu_seconds(involved) - cpu
            return {
                f"px{acceptors}_dec": statistics.median(decided),
                f"px{acceptors}_run": statistics.median(whole),
                f"cpu_px{acceptors}": cpu / n,
            }

        return measure

    proposer = _paxos_hw.Proposer(cfg["px_hw_ports"], OP_TIMEOUT)
    await proposer.open()

    def paxos_hw(acceptors: int) -> Any:
        involved = pids["hw_acceptors"][:acceptors] + pids["hw_learners"]

        async def measure(n: int) -> dict[str, float]:
            nonlocal ballot
            decided = []
            cpu = cpu_seconds(involved)
            for _ in range(n):
                ballot += 1
                t0 = time.perf_counter()
                outcome = await proposer.propose(b"A", (ballot, 0), acceptors)
                decided.append(time.perf_counter() - t0)
                assert outcome[0] == "chosen", outcome
            cpu = cpu_seconds(involved) - cpu
            return {
                f"px{acceptors}_hw": statistics.median(decided),
                f"cpu_px{acceptors}_hw": cpu / n,
            }

        return measure

    blocks: list[tuple[str, Any, int]] = [
        ("PB hand-written", pb_hw, cfg["puts"]),
        ("PB choreo", pb_choreo, cfg["puts"]),
        ("PB choreo, one session", pb_loop, cfg["puts"]),
        ("ping-pong", ping, cfg["rtt"]),
        *((f"Paxos {a} acceptors", paxos(a), cfg["rounds"]) for a in ACCEPTORS),
        *((f"Paxos {a} hand-written", paxos_hw(a), cfg["rounds"]) for a in ACCEPTORS),
    ]
    try:
        log("warm-up (untimed): every row once")
        for _name, measure, n in blocks:
            await measure(max(3, n // 5))
        rows: dict[str, list[float]] = {}
        for rep in range(cfg["reps"]):
            started = time.perf_counter()
            k = rep % len(blocks)
            for _name, measure, n in blocks[k:] + blocks[:k]:  # rotate the order per rep
                for key, seconds in (await measure(n)).items():
                    rows.setdefault(key, []).append(seconds * 1e6)
            log(
                f"rep {rep + 1}/{cfg['reps']} done in {time.perf_counter() - started:.1f}s: "
                + ", ".join(f"{k} {v[-1]:.0f}us" for k, v in rows.items())
            )
        for name, c in (("pb", pb_client), ("px", px_client)):
            stats = c.transport.stats  # type: ignore[union-attr]
            rows[f"_{name}_msgs"] = [stats.envelopes_sent, stats.batches_sent, sessions[name]]
    finally:
        await hw_call.done_writing()
        await echo_call.done_writing()
        await hw_channel.close()
        await echo_channel.close()
        await pb_client.__aexit__(None, None, None)
        await px_client.__aexit__(None, None, None)
        await loop_client.__aexit__(None, None, None)
        await proposer.close()
    print("RESULT " + json.dumps(rows), flush=True)


# -- driver ---------------------------------------------------------------------


class Procs:
    """Every child process, stopped together (their stdin pipes closed, then SIGTERM, SIGKILL)."""

    def __init__(self) -> None:
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        )

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--proc", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=self.env,
            start_new_session=True,  # Ctrl-C reaches the driver only; it stops everyone
        )
        self.children.append((name, proc))
        return proc

    def stop(self) -> None:
        for _, proc in self.children:
            with contextlib.suppress(OSError):
                if proc.stdin is not None:
                    proc.stdin.close()
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    proc.terminate()
        deadline = time.monotonic() + 3.0
        for _, proc in self.children:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def read_line(name: str, proc: subprocess.Popen[bytes], deadline: float) -> str:
    """The child's next stdout line, or SystemExit if it dies or says nothing in time."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise SystemExit(f"bench: {name} said nothing in time (got {buf!r})")
        ready, _, _ = select.select([fd], [], [], min(left, 0.5))
        if ready:
            chunk = os.read(fd, 1)
            if not chunk:
                raise SystemExit(f"bench: {name} exited (status {proc.wait()}) before it was ready")
            buf += chunk
        elif proc.poll() is not None:
            raise SystemExit(f"bench: {name} exited (status {proc.returncode}) before it was ready")
    return buf.decode().strip()


def write_cluster(path: Path, roles: list[str]) -> None:
    socks = [socket.socket() for _ in roles]  # ports free a moment ago (as choreo up does)
    for sock in socks:
        sock.bind((HOST, 0))
    ports = [sock.getsockname()[1] for sock in socks]
    for sock in socks:
        sock.close()
    lines = ["[roles]"] + [f'"{r}" = "{HOST}:{p}"' for r, p in zip(roles, ports, strict=True)]
    lines += ["", "[defaults]", f"timeout = {OP_TIMEOUT}"]
    path.write_text("\n".join(lines) + "\n")


def run(args: argparse.Namespace) -> dict[str, list[float]]:
    procs = Procs()
    try:
        with tempfile.TemporaryDirectory(prefix="choreo-bench-") as tmp:
            pb_cluster, px_cluster = Path(tmp, "pb.toml"), Path(tmp, "paxos.toml")
            loop_cluster = Path(tmp, "pbloop.toml")
            pb_roles = ["primary", "backups.0", "backups.1"]
            px_roles = [f"acceptors.{i}" for i in range(MAX_ACCEPTORS)] + ["learners.0"]
            write_cluster(pb_cluster, pb_roles)
            write_cluster(px_cluster, px_roles)
            write_cluster(loop_cluster, pb_roles)
            t0 = time.perf_counter()
            hw_learner = procs.start("hand-written learner", "hw-learner")
            waiting = [procs.start(f"hand-written backup {i}", "hw-backup") for i in range(2)]
            echo_proc = procs.start("echo", "echo")
            served = {r: procs.start(r, "serve", "pb", r, str(pb_cluster)) for r in pb_roles}
            served |= {r: procs.start(r, "serve", "paxos", r, str(px_cluster)) for r in px_roles}
            looped = {r: procs.start(r, "serve", "pbloop", r, str(loop_cluster)) for r in pb_roles}
            deadline = time.monotonic() + START_TIMEOUT
            learner_port = read_line("hand-written learner", hw_learner, deadline).split()[1]
            hw_acceptors = [
                procs.start(f"hand-written acceptor {i}", "hw-acceptor", learner_port)
                for i in range(MAX_ACCEPTORS)
            ]
            backup_ports = [read_line("hw backup", p, deadline).split()[1] for p in waiting]
            primary = procs.start("hand-written primary", "hw-primary", *backup_ports)
            echo_port = read_line("echo", echo_proc, deadline).split()[1]
            for name, proc in [*served.items(), *looped.items()]:
                read_line(name, proc, deadline)
            hw_port = read_line("hand-written primary", primary, deadline).split()[1]
            px_hw_ports = [
                int(read_line(f"hand-written acceptor {i}", p, deadline).split()[1])
                for i, p in enumerate(hw_acceptors)
            ]
            log(f"{len(procs.children)} role processes up in {time.perf_counter() - t0:.1f}s")
            cfg = {
                "pb_cluster": str(pb_cluster),
                "px_cluster": str(px_cluster),
                "loop_cluster": str(loop_cluster),
                "hw_port": int(hw_port),
                "echo_port": int(echo_port),
                "px_hw_ports": px_hw_ports,
                "reps": args.reps,
                "puts": args.puts,
                "rounds": args.rounds,
                "rtt": args.rtt,
                "pids": {
                    "hw": [primary.pid] + [p.pid for p in waiting],
                    "pb": [served[r].pid for r in pb_roles],
                    "echo": [echo_proc.pid],
                    "acceptors": [served[f"acceptors.{i}"].pid for i in range(MAX_ACCEPTORS)],
                    "learners": [served["learners.0"].pid],
                    "hw_acceptors": [p.pid for p in hw_acceptors],
                    "hw_learners": [hw_learner.pid],
                },
            }
            measurer = procs.start("client", "client", json.dumps(cfg))
            line = read_line("client", measurer, time.monotonic() + args.timeout)
            if not line.startswith("RESULT "):
                raise SystemExit(f"bench: the client printed {line!r}")
            measurer.wait(timeout=30)
            return json.loads(line[7:])  # type: ignore[no-any-return]
    finally:
        procs.stop()


def tables(args: argparse.Namespace, rows: dict[str, list[float]]) -> str:
    import grpc

    from bench._pb_loop import LOOP as _LOOP
    from bench._table import Row, markdown

    pb = [
        Row("PUT, hand-written grpc.aio, raw bytes (baseline)", "pb_hw", "pb_hw", "us"),
        Row("PUT, choreo: whole Client.run(put)", "pb_run", "pb_hw", "us"),
        Row(
            "PUT, choreo: Client.run called -> client role has the answer",
            "pb_client",
            "pb_hw",
            "us",
        ),
        Row(
            f"PUT, choreo: {_LOOP} PUTs in one session (no START/RESULT per PUT)",
            "pb_loop",
            "pb_hw",
            "us",
        ),
    ]
    px = [Row("grpc.aio bidi ping-pong round trip, 16 B raw bytes (baseline)", "rtt", "rtt", "us")]
    px += [
        Row(f"Paxos, {a} acceptors: decision at the proposer", f"px{a}_dec", "rtt", "us")
        for a in ACCEPTORS
    ]
    px += [
        Row(f"Paxos, {a} acceptors: whole Client.run(propose)", f"px{a}_run", "rtt", "us")
        for a in ACCEPTORS
    ]
    px += [
        Row(f"Paxos, {a} acceptors: hand-written grpc.aio decision", f"px{a}_hw", "rtt", "us")
        for a in ACCEPTORS
    ]
    px += [
        Row(
            f"Paxos, {a} acceptors: choreo decision (ratio: to the hand-written one)",
            f"px{a}_dec",
            f"px{a}_hw",
            "us",
        )
        for a in ACCEPTORS
    ]
    cpu = [
        Row(
            "PUT, hand-written: client + primary + 2 backups (baseline)",
            "cpu_pb_hw",
            "cpu_pb_hw",
            "us",
        ),
        Row("PUT, choreo: client + primary + 2 backups", "cpu_pb_choreo", "cpu_pb_hw", "us"),
        Row("ping-pong round trip: both processes (baseline)", "cpu_rtt", "cpu_rtt", "us"),
    ]
    cpu += [
        Row(
            f"Paxos, {a} acceptors: proposer + {a} acceptors + learner",
            f"cpu_px{a}",
            "cpu_rtt",
            "us",
        )
        for a in ACCEPTORS
    ]
    cpu += [
        Row(
            f"Paxos, {a} acceptors, hand-written: proposer + {a} acceptors + learner",
            f"cpu_px{a}_hw",
            "cpu_rtt",
            "us",
        )
        for a in ACCEPTORS
    ]
    setup = (
        f"python {sys.version.split()[0]}, grpcio {grpc.__version__}, asyncio's loop, all on "
        f"127.0.0.1, {args.reps} interleaved repetitions, each the median of its operations"
    )
    msgs = []
    for name, what in (("pb", "PUT"), ("px", "Paxos round")):
        envelopes, batches, n = rows.pop(f"_{name}_msgs")
        msgs.append(
            f"{envelopes / n:.1f} envelopes in {batches / n:.1f} gRPC messages sent by the "
            f"client per {what}"
        )
    return "\n".join(
        [
            f"Primary-backup PUT with 2 backups, every role its own process over gRPC; choreo "
            f"in service mode (3 choreo.Server processes, Client.run per PUT), hand-written: "
            f"grpc.aio bidi streams, raw bytes; {args.puts} PUTs one at a time per repetition "
            f"({setup}):",
            "",
            markdown(pb, rows),
            "",
            f"Single-decree Paxos, one proposer (the client process), n acceptors and 1 learner "
            f"each its own choreo.Server process over gRPC; decision = Client.run called -> the "
            f"proposer's endpoint returns 'chosen' (both phases, a majority of Accepted); "
            f"hand-written: the same flow on grpc.aio bidi streams, raw bytes, n acceptor "
            f"processes and 1 learner process of its own, decision = first Prepare written -> "
            f"a majority of Accepted read; {args.rounds} rounds per repetition, size and "
            f"implementation, {args.rtt} ping-pongs ({setup}):",
            "",
            markdown(px, rows),
            "",
            f"CPU time per operation (user + system, every thread) summed over the processes "
            f"of the row, from /proc; the client process's idle choreo clients included "
            f"({setup}; {'; '.join(msgs)}):",
            "",
            markdown(cpu, rows),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 5; 2 quick)")
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke test")
    parser.add_argument("--puts", type=int, default=None, help="PUTs per row and repetition")
    parser.add_argument("--rounds", type=int, default=None, help="Paxos rounds per row and rep")
    parser.add_argument("--rtt", type=int, default=None, help="ping-pongs per repetition")
    parser.add_argument("--timeout", type=float, default=None, help="seconds for the whole run")
    parser.add_argument("--proc", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.proc:
        _watch_stdin()
        from bench import _paxos_hw

        kind, rest = args.proc[0], args.proc[1:]
        main_of = {
            "hw-backup": lambda: hw_backup(),
            "hw-primary": lambda: hw_primary([int(p) for p in rest]),
            "hw-acceptor": lambda: _paxos_hw.acceptor(int(rest[0])),
            "hw-learner": lambda: _paxos_hw.learner(),
            "echo": lambda: echo(),
            "serve": lambda: choreo_server(*rest),
            "client": lambda: client(json.loads(rest[0])),
        }[kind]
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(main_of())
        return
    quick = args.quick
    args.reps = args.reps or (2 if quick else 5)
    args.puts = args.puts or (30 if quick else 400)
    args.rounds = args.rounds or (15 if quick else 150)
    args.rtt = args.rtt or (50 if quick else 1000)
    args.timeout = args.timeout or (120.0 if quick else 800.0)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup on SIGTERM too
    started = time.perf_counter()
    rows = run(args)
    print(tables(args, rows))
    log(f"total {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
