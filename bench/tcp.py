"""Benchmark: choreo's TCP transport against its gRPC transport and raw asyncio TCP.

    .venv/bin/python bench/tcp.py [--reps 5] [--rtt 2000] [--oneway 6400] [--quick]

Two OS processes, started with ``subprocess`` (never fork: see PERF-NOTES):

* ``server`` hosts role ``b`` twice, a ``Node`` on a ``TcpTransport`` and a
  ``Node`` on a ``GrpcTransport``, plus role ``e`` on a bare ``TcpTransport``
  that echoes every envelope, and a hand-written asyncio-streams echo server
  (4-byte length prefix, ``readexactly``);
* ``client`` hosts role ``a`` on both transports and runs every measurement,
  the repetitions interleaved (rep 1 of each row, then rep 2 of each row, ...),
  so that the machine's noise hits every row alike.

Rows:

* round trip: one 16-byte value a -> b -> a, repeated. For choreo through
  ``Endpoint.send``/``recv`` (codec, session matching, envelopes, acks), on
  TCP and on gRPC; for the bare TCP transport, ``send`` and the ``deliver``
  callback only (no codec, no session); for the baseline a 16-byte frame
  echoed over asyncio streams.
* one-way: messages a -> b as fast as a can send them, b answering once at the
  end, with 1 and with 64 concurrent sessions, on both transports.

Prints (stdout, Markdown, ``bench/_table.py``) a table: median, min and max
over the repetitions, and the ratio to the row's baseline of the same
repetition (round trips: lower is better; messages/s: higher is better).
Progress goes to stderr. ``--quick``: 2 repetitions with tiny counts, a smoke
test (about 10 s). Both processes run on asyncio's event loop, or on uvloop's
with ``--uvloop``. Not run by the tests; no timing is asserted anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402

from bench._table import Row, markdown  # noqa: E402
from choreo._endpoint import Endpoint, Node  # noqa: E402
from choreo._envelope import Envelope, Kind  # noqa: E402
from choreo._grpc import GrpcTransport  # noqa: E402
from choreo._tcp import TcpTransport  # noqa: E402

PAYLOAD = b"0123456789abcdef"  # 16 bytes, as in PERF-NOTES
ROLES = {"a": "a", "b": "b"}
HEAD = struct.Struct("!I")


# -- server process ----------------------------------------------------------


async def serve_node(node: Node) -> None:
    """Answer the client's commands on the control session of ``node``, until "stop"."""
    ctl = Endpoint(node.open("ctl", "bench", 300.0, ["a"]), ROLES)
    i = 0
    while True:
        cmd = await ctl.recv("a", f"ctl:{i}")
        i += 1
        if cmd[0] == "stop":
            break
        if cmd[0] == "rtt":
            _, sid, n = cmd
            ep = Endpoint(node.open(sid, "bench", 60.0, ["a"]), ROLES)
            for _ in range(n):
                await ep.send("a", await ep.recv("a", "f.py:1"), "f.py:2")
            node.close(sid)
        elif cmd[0] == "oneway":
            _, sids, per = cmd

            async def sink(sid: str, per: int = per) -> None:
                ep = Endpoint(node.open(sid, "bench", 60.0, ["a"]), ROLES)
                for _ in range(per):
                    await ep.recv("a", "f.py:1")
                await ep.send("a", "done", "f.py:2")
                node.close(sid)

            await asyncio.gather(*(sink(s) for s in sids))


async def echo_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readexactly(4)
            body = await reader.readexactly(HEAD.unpack(head)[0])
            writer.write(head + body)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


class Echo:
    """A bare ``TcpTransport`` for role ``e`` that sends every envelope back."""

    def __init__(self) -> None:
        self.transport = TcpTransport("e", "127.0.0.1:0")
        self.next: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()

    def deliver(self, env: Envelope) -> None:
        self.next.set_result(env)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            env = await self.next
            self.next = loop.create_future()
            if env.kind == Kind.ABORT:
                return
            await self.transport.send(
                Envelope(env.session, "e", env.sender, env.label, env.kind, env.payload, env.chash),
                10.0,
            )


async def serve() -> None:
    raw = await asyncio.start_server(echo_stream, "127.0.0.1", 0)
    tcp = Node("b", TcpTransport("b", "127.0.0.1:0"))  # learns a's address from its Hello
    rpc = Node("b", GrpcTransport("b", "127.0.0.1:0"))
    echo = Echo()
    await tcp.start()
    await rpc.start()
    await echo.transport.start(echo.deliver)
    ports = [
        raw.sockets[0].getsockname()[1],
        tcp.transport.port,  # type: ignore[attr-defined]
        rpc.transport.port,  # type: ignore[attr-defined]
        echo.transport.port,
    ]
    print("PORTS " + " ".join(map(str, ports)), flush=True)
    await asyncio.gather(serve_node(tcp), serve_node(rpc), echo.run())
    await tcp.aclose()
    await rpc.aclose()
    await echo.transport.close()
    raw.close()


# -- client process ----------------------------------------------------------


async def client(ports: list[int], reps: int, rtt_n: int, oneway_n: int) -> None:
    raw_port, tcp_port, rpc_port, echo_port = ports
    tcp = Node("a", TcpTransport("a", "127.0.0.1:0", {"b": f"127.0.0.1:{tcp_port}"}))
    rpc = Node("a", GrpcTransport("a", "127.0.0.1:0", {"b": f"127.0.0.1:{rpc_port}"}))
    bare = TcpTransport("a", "127.0.0.1:0", {"e": f"127.0.0.1:{echo_port}"})
    await tcp.start()
    await rpc.start()
    loop = asyncio.get_running_loop()
    reply: list[asyncio.Future[Envelope]] = []

    def bare_deliver(env: Envelope) -> None:
        reply[0].set_result(env)

    await bare.start(bare_deliver)
    ctls = {
        "tcp": (tcp, Endpoint(tcp.open("ctl", "bench", 300.0, ["b"]), ROLES)),
        "grpc": (rpc, Endpoint(rpc.open("ctl", "bench", 300.0, ["b"]), ROLES)),
    }
    steps = {"tcp": 0, "grpc": 0}

    async def command(which: str, *cmd: Any) -> None:
        await ctls[which][1].send("b", cmd, f"ctl:{steps[which]}")
        steps[which] += 1

    reader, writer = await asyncio.open_connection("127.0.0.1", raw_port)
    frame = HEAD.pack(len(PAYLOAD)) + PAYLOAD

    async def raw_rtt() -> float:
        start = time.perf_counter()
        for _ in range(rtt_n):
            writer.write(frame)
            head = await reader.readexactly(4)
            await reader.readexactly(HEAD.unpack(head)[0])
        return (time.perf_counter() - start) / rtt_n * 1e6

    async def bare_rtt() -> float:
        env = Envelope("bare", "a", "e", "f.py:1", Kind.DATA, PAYLOAD, "bench")
        start = time.perf_counter()
        for _ in range(rtt_n):
            reply[:] = [loop.create_future()]
            await bare.send(env, 10.0)
            await reply[0]
        return (time.perf_counter() - start) / rtt_n * 1e6

    async def choreo_rtt(which: str, rep: int) -> float:
        node = ctls[which][0]
        sid = f"rtt-{rep}"
        await command(which, "rtt", sid, rtt_n + 1)
        ep = Endpoint(node.open(sid, "bench", 60.0, ["b"]), ROLES)
        await ep.send("b", PAYLOAD, "f.py:1")  # warm up
        await ep.recv("b", "f.py:2")
        start = time.perf_counter()
        for _ in range(rtt_n):
            await ep.send("b", PAYLOAD, "f.py:1")
            await ep.recv("b", "f.py:2")
        elapsed = time.perf_counter() - start
        node.close(sid)
        return elapsed / rtt_n * 1e6

    async def choreo_oneway(which: str, rep: int, sessions: int) -> float:
        node = ctls[which][0]
        per = oneway_n // sessions
        sids = [f"ow{sessions}-{rep}-{k}" for k in range(sessions)]
        await command(which, "oneway", sids, per)

        async def source(sid: str) -> None:
            ep = Endpoint(node.open(sid, "bench", 60.0, ["b"]), ROLES)
            for _ in range(per):
                await ep.send("b", PAYLOAD, "f.py:1")
            assert await ep.recv("b", "f.py:2") == "done"
            node.close(sid)

        start = time.perf_counter()
        await asyncio.gather(*(source(s) for s in sids))
        return per * sessions / (time.perf_counter() - start)

    def plan(rep: int) -> list[tuple[str, Any]]:
        return [
            ("rtt_raw", raw_rtt()),
            ("rtt_bare", bare_rtt()),
            ("rtt_tcp", choreo_rtt("tcp", rep)),
            ("rtt_grpc", choreo_rtt("grpc", rep)),
            ("ow_tcp_1", choreo_oneway("tcp", rep, 1)),
            ("ow_grpc_1", choreo_oneway("grpc", rep, 1)),
            ("ow_tcp_64", choreo_oneway("tcp", rep, 64)),
            ("ow_grpc_64", choreo_oneway("grpc", rep, 64)),
        ]

    for _, measure in plan(-1):  # one untimed pass: connections, imports, allocator warm-up
        await measure
    rows: dict[str, list[float]] = {}
    for rep in range(reps):
        print(f"tcp: repetition {rep + 1}/{reps}", file=sys.stderr, flush=True)
        for name, measure in plan(rep):
            rows.setdefault(name, []).append(await measure)
    stats = tcp.transport.stats  # type: ignore[attr-defined]
    rows["_tcp_writes"] = [stats.writes, stats.envelopes_sent]
    await command("tcp", "stop")
    await command("grpc", "stop")
    await bare.send(Envelope("bare", "a", "e", "stop", Kind.ABORT, b"", "bench"), 10.0)
    writer.close()
    await tcp.aclose()
    await rpc.aclose()
    await bare.close()
    print("RESULT " + json.dumps(rows), flush=True)


# -- driver ------------------------------------------------------------------

SPEC = [
    Row("round trip: asyncio streams echo, hand-written (baseline)", "rtt_raw", "rtt_raw", "us"),
    Row("round trip: bare TcpTransport send/deliver", "rtt_bare", "rtt_raw", "us"),
    Row("round trip: choreo TcpTransport, Node/Endpoint", "rtt_tcp", "rtt_raw", "us"),
    Row("round trip: choreo GrpcTransport, Node/Endpoint", "rtt_grpc", "rtt_raw", "us"),
    Row("one-way: choreo GrpcTransport, 1 session (baseline)", "ow_grpc_1", "ow_grpc_1", "msg/s"),
    Row("one-way: choreo TcpTransport, 1 session", "ow_tcp_1", "ow_grpc_1", "msg/s"),
    Row(
        "one-way: choreo GrpcTransport, 64 sessions (baseline)", "ow_grpc_64", "ow_grpc_64", "msg/s"
    ),
    Row("one-way: choreo TcpTransport, 64 sessions", "ow_tcp_64", "ow_grpc_64", "msg/s"),
]


def _run(coro: Any, uvloop: bool) -> None:
    if uvloop:
        import uvloop as _uvloop

        _uvloop.run(coro)
    else:
        asyncio.run(coro)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--rtt", type=int, default=2000, help="round trips per repetition")
    parser.add_argument("--oneway", type=int, default=6400, help="messages per one-way repetition")
    parser.add_argument(
        "--quick", action="store_true", help="2 repetitions, 200 round trips, 640 messages"
    )
    parser.add_argument(
        "--uvloop", action="store_true", help="run both processes on uvloop (pip install uvloop)"
    )
    parser.add_argument("--role", choices=["server", "client"], help=argparse.SUPPRESS)
    parser.add_argument("--ports", nargs=4, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "server":
        _run(serve(), args.uvloop)
        return
    if args.role == "client":
        _run(client(args.ports, args.reps, args.rtt, args.oneway), args.uvloop)
        return
    if args.quick:
        args.reps, args.rtt, args.oneway = 2, 200, 640
    loop = "asyncio"
    if args.uvloop:
        try:
            import uvloop  # noqa: F401
        except ImportError:
            raise SystemExit("uvloop is not installed: pip install -e '.[fast]'") from None
        loop = "uvloop"
    on_loop = ["--uvloop"] if args.uvloop else []

    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    me = [sys.executable, __file__]
    started = time.perf_counter()
    server = subprocess.Popen(
        [*me, "--role", "server", *on_loop], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline().split()
        if not line or line[0] != "PORTS":
            raise SystemExit(f"bench server did not start: {line!r}")
        sizes = ["--reps", str(args.reps), "--rtt", str(args.rtt), "--oneway", str(args.oneway)]
        out = subprocess.run(
            [*me, "--role", "client", "--ports", *line[1:], *sizes, *on_loop],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            timeout=300,
            check=True,
        ).stdout
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    rows = json.loads(next(ln for ln in out.splitlines() if ln.startswith("RESULT "))[7:])
    writes, envelopes = rows.pop("_tcp_writes")
    print(
        f"choreo TCP bench: 2 processes on 127.0.0.1 ({loop} event loop), 16-byte payloads, "
        f"{args.reps} interleaved repetitions, {args.rtt} round trips / {args.oneway} one-way "
        f"messages each (python {sys.version.split()[0]}, grpcio {grpc.__version__})\n"
    )
    print(markdown(SPEC, rows))
    print(f"\nclient TcpTransport: {envelopes:.0f} envelopes in {writes:.0f} socket writes.")
    print(f"tcp: total {time.perf_counter() - started:.1f}s", file=sys.stderr)


if __name__ == "__main__":
    main()
