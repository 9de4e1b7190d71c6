"""Benchmark: choreo's gRPC transport against hand-written grpc.aio streams.

    .venv/bin/python bench/transport.py [--reps 5] [--rtt 2000] [--oneway 6400] [--quick]

``--quick``: tiny counts (the whole run takes a few seconds; for smoke tests).

Two OS processes, started with ``subprocess`` (never fork: see PERF-NOTES):

* ``server`` hosts a ``Node`` for role ``b`` on a ``GrpcTransport``, a
  plain ``grpc.aio`` server with two hand-written methods: an echoing bidi
  stream (ping-pong) and a client stream counted to the end (one-way), and
  a hand-written asyncio-streams TCP echo (4-byte length prefix);
* ``client`` hosts role ``a`` and runs every measurement, the repetitions
  interleaved (rep 1 of each row, then rep 2 of each row, ...), so that the
  machine's noise hits every row alike.

Rows:

* round trip: one 16-byte value a -> b -> a, repeated; for choreo through
  ``Endpoint.send``/``recv`` (codec, session matching, envelopes, acks), for
  the baseline one protobuf ``Batch`` with one envelope each way on one bidi
  stream; as a second reference, the 16-byte payload echoed over a raw
  asyncio TCP connection (``readexactly`` of a 4-byte length, then of the
  payload), the floor for an asyncio program on a socket;
* one-way: messages a -> b as fast as a can send them, b answering once at the
  end; for choreo with exactly 1, 16 and 256 concurrent sessions (the
  transport batches envelopes that are ready together), for the baseline one
  gRPC message per envelope on one stream.

Prints (stdout, Markdown, ``bench/_table.py``) a line saying what was
measured, then a table: median, min and max over the repetitions, and the ratio to
the baseline: the median over the repetitions of the ratio of the row's value
to the baseline's value *of the same repetition* (they ran one after the
other, so the machine's noise of the moment cancels out; for round trips,
lower is better; for messages/s, higher is). Not run by the tests; no timing
is asserted anywhere.
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
from choreo._grpc import GrpcTransport  # noqa: E402
from choreo._proto import transport_pb2 as pb  # noqa: E402

PAYLOAD = b"0123456789abcdef"  # 16 bytes, as in PERF-NOTES
ROLES = {"a": "a", "b": "b"}
PING = "/bench.Raw/PingPong"
ONEWAY = "/bench.Raw/OneWay"
#: concurrent sessions of the one-way rows
SESSIONS = (1, 16, 256)
_LEN = struct.Struct("!I")


def one(seq: int) -> Any:
    return pb.Batch(
        envelopes=[
            pb.Envelope(
                session="s", sender="a", receiver="b", label="f.py:1", payload=PAYLOAD, seq=seq
            )
        ]
    )


# -- server process ----------------------------------------------------------


async def serve() -> None:
    async def ping_pong(requests: Any, context: Any) -> None:
        async for batch in requests:
            await context.write(batch)

    async def one_way(requests: Any, context: Any) -> Any:
        n = 0
        async for batch in requests:
            n += len(batch.envelopes)
        return pb.Ack(delivered=n)

    raw = grpc.aio.server()
    handlers = {
        "PingPong": grpc.stream_stream_rpc_method_handler(
            ping_pong, pb.Batch.FromString, pb.Batch.SerializeToString
        ),
        "OneWay": grpc.stream_unary_rpc_method_handler(
            one_way, pb.Batch.FromString, pb.Ack.SerializeToString
        ),
    }
    raw.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Raw", handlers),))
    raw_port = raw.add_insecure_port("127.0.0.1:0")
    await raw.start()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readexactly(4)
                writer.write(head + await reader.readexactly(_LEN.unpack(head)[0]))
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    tcp = await asyncio.start_server(echo, "127.0.0.1", 0)
    tcp_port = tcp.sockets[0].getsockname()[1]

    node = Node("b", GrpcTransport("b", "127.0.0.1:0"))  # learns a's address from its Hello
    await node.start()
    port = node.transport.port  # type: ignore[attr-defined]
    print(f"PORTS {raw_port} {port} {tcp_port}", flush=True)

    ctl = Endpoint(node.open("ctl", "bench", 120.0, ["a"]), ROLES)
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
    await node.aclose()
    await raw.stop(None)
    tcp.close()


# -- client process ----------------------------------------------------------


async def client(
    raw_port: int, node_port: int, tcp_port: int, reps: int, rtt_n: int, oneway_n: int
) -> None:
    node = Node("a", GrpcTransport("a", "127.0.0.1:0", {"b": f"127.0.0.1:{node_port}"}))
    await node.start()
    ctl = Endpoint(node.open("ctl", "bench", 120.0, ["b"]), ROLES)
    step = 0

    async def command(*cmd: Any) -> None:
        nonlocal step
        await ctl.send("b", cmd, f"ctl:{step}")
        step += 1

    channel = grpc.aio.insecure_channel(f"127.0.0.1:{raw_port}")
    ping = channel.stream_stream(PING, pb.Batch.SerializeToString, pb.Batch.FromString)
    oneway = channel.stream_unary(ONEWAY, pb.Batch.SerializeToString, pb.Ack.FromString)

    async def raw_rtt() -> float:
        call = ping()
        await call.write(one(0))  # warm the stream up
        await call.read()
        start = time.perf_counter()
        for i in range(rtt_n):
            await call.write(one(i))
            await call.read()
        elapsed = time.perf_counter() - start
        await call.done_writing()
        return elapsed / rtt_n * 1e6

    tcp_reader, tcp_writer = await asyncio.open_connection("127.0.0.1", tcp_port)
    frame = _LEN.pack(len(PAYLOAD)) + PAYLOAD

    async def tcp_rtt() -> float:
        read, write = tcp_reader.readexactly, tcp_writer.write
        write(frame)  # warm up
        await read(_LEN.unpack(await read(4))[0])
        start = time.perf_counter()
        for _ in range(rtt_n):
            write(frame)
            await read(_LEN.unpack(await read(4))[0])
        return (time.perf_counter() - start) / rtt_n * 1e6

    async def choreo_rtt(rep: int) -> float:
        sid = f"rtt-{rep}"
        await command("rtt", sid, rtt_n + 1)
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

    async def raw_oneway() -> float:
        batches = [one(i) for i in range(oneway_n)]
        start = time.perf_counter()
        call = oneway()
        for b in batches:
            await call.write(b)
        await call.done_writing()
        ack = await call
        elapsed = time.perf_counter() - start
        assert ack.delivered == oneway_n
        return oneway_n / elapsed

    async def choreo_oneway(rep: int, sessions: int) -> float:
        per = max(1, oneway_n // sessions)
        sids = [f"ow{sessions}-{rep}-{k}" for k in range(sessions)]
        await command("oneway", sids, per)

        async def source(sid: str) -> None:
            ep = Endpoint(node.open(sid, "bench", 60.0, ["b"]), ROLES)
            for _ in range(per):
                await ep.send("b", PAYLOAD, "f.py:1")
            assert await ep.recv("b", "f.py:2") == "done"
            node.close(sid)

        start = time.perf_counter()
        await asyncio.gather(*(source(s) for s in sids))
        return per * sessions / (time.perf_counter() - start)

    # One untimed pass of everything: connections, imports, allocator warm-up.
    await raw_rtt()
    await tcp_rtt()
    await choreo_rtt(-1)
    await raw_oneway()
    await choreo_oneway(-1, 16)

    rows: dict[str, list[float]] = {}
    for rep in range(reps):
        print(f"transport bench: repetition {rep + 1} of {reps}", file=sys.stderr)
        measures = [
            ("rtt_raw", raw_rtt()),
            ("rtt_tcp", tcp_rtt()),
            ("rtt_choreo", choreo_rtt(rep)),
            ("ow_raw", raw_oneway()),
        ]
        measures += [(f"ow_choreo_{k}", choreo_oneway(rep, k)) for k in SESSIONS]
        for name, measure in measures:
            rows.setdefault(name, []).append(await measure)
    stats = node.transport.stats  # type: ignore[attr-defined]
    rows["_batches"] = [stats.batches_sent, stats.envelopes_sent]
    await command("stop")
    tcp_writer.close()
    await channel.close()
    await node.aclose()
    print("RESULT " + json.dumps(rows), flush=True)


# -- driver ------------------------------------------------------------------


TABLE = [
    Row("round trip: grpc.aio bidi ping-pong, hand-written (baseline)", "rtt_raw", "rtt_raw", "us"),
    Row("round trip: asyncio streams TCP echo, hand-written", "rtt_tcp", "rtt_raw", "us"),
    Row("round trip: choreo GrpcTransport, Node/Endpoint", "rtt_choreo", "rtt_raw", "us"),
    Row("one-way: grpc.aio stream, 1 envelope per message (baseline)", "ow_raw", "ow_raw", "msg/s"),
    *(
        Row(
            f"one-way: choreo, {k} concurrent session{'s' if k > 1 else ''}",
            f"ow_choreo_{k}",
            "ow_raw",
            "msg/s",
        )
        for k in SESSIONS
    ),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--rtt", type=int, default=2000, help="round trips per repetition")
    parser.add_argument("--oneway", type=int, default=6400, help="messages per one-way repetition")
    parser.add_argument(
        "--quick", action="store_true", help="tiny counts: a smoke test, not a measurement"
    )
    parser.add_argument("--role", choices=["server", "client"], help=argparse.SUPPRESS)
    parser.add_argument("--ports", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.reps, args.rtt, args.oneway = 2, 50, 512
    if args.role == "server":
        asyncio.run(serve())
        return
    if args.role == "client":
        asyncio.run(client(*args.ports, args.reps, args.rtt, args.oneway))
        return

    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    me = [sys.executable, __file__]
    started = time.perf_counter()
    print("transport bench: starting the server process", file=sys.stderr)
    server = subprocess.Popen([*me, "--role", "server"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert server.stdout is not None
        line = server.stdout.readline().split()
        if not line or line[0] != "PORTS":
            raise SystemExit(f"bench server did not start: {line!r}")
        sizes = ["--reps", str(args.reps), "--rtt", str(args.rtt), "--oneway", str(args.oneway)]
        out = subprocess.run(
            [*me, "--role", "client", "--ports", *line[1:], *sizes],
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
    batches, envelopes = rows.pop("_batches")
    print(
        f"transport: 2 processes on 127.0.0.1, 16-byte payloads, {args.reps} interleaved "
        f"repetitions, {args.rtt} round trips / {args.oneway} one-way messages each "
        f"(python {sys.version.split()[0]}, grpcio {grpc.__version__})\n"
    )
    print(markdown(TABLE, rows))
    print(
        f"client GrpcTransport: {envelopes:.0f} envelopes in {batches:.0f} gRPC messages; "
        f"total {time.perf_counter() - started:.1f}s",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
