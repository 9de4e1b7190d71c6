"""Benchmark: PyChor's TCP backend against choreo's TCP transport, ping-pong round trips.

    pip install -e ".[bench,fast]"     # pychor==0.4.0, uvloop
    .venv/bin/python bench/pychor_pingpong.py [--reps 7] [--rtt 2000] [--no-uvloop] [--quick]

Four OS processes, started with ``subprocess``, all on 127.0.0.1, each pair
idle while the other measures; the repetitions are interleaved (rep 1 of every
row, then rep 2, ...), so that the machine's noise hits every row alike:

* PyChor 0.4.0: ``alice`` and ``bob`` each run the same program under
  ``pychor.TCPBackend`` (blocking sockets, pickle, one connection per pair).
  A round: ``x = PAYLOAD @ alice; x.send(alice, bob); x.only(bob).send(bob, alice)``.
* raw blocking sockets, on PyChor's own connection: the same 16 bytes framed
  as PyChor frames them (4-byte length), without pickle: the floor for any
  Python code on these sockets.
* choreo: role ``a`` and role ``b`` on ``TcpTransport``. A round through
  ``Endpoint.send``/``recv`` (what projected code calls: codec, session
  matching, deadline), and a round through the bare transport
  (``send`` and the ``deliver`` callback: no codec, no session).

When uvloop is installed (``pip install 'choreo[fast]'``), a second pair of
choreo processes runs the same two rows on uvloop's event loop (``--no-uvloop``
leaves them out; ``--uvloop`` fails if uvloop is missing).

Payload: 16 bytes. Prints (stdout, Markdown, ``bench/_table.py``) median, min
and max per row (wall-clock microseconds per round trip) and the ratio to
PyChor's of the same repetition; then the same for the CPU time both
processes of the row spent per round trip (user + system,
``time.process_time``): the work done, which a busy machine disturbs far less
than the latency. Progress goes to stderr. ``--quick``: 3 repetitions of 200
round trips, a smoke test (about 10 s). Not run by the tests; no timing is
asserted anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PAYLOAD = b"0123456789abcdef"  # 16 bytes
ROLES = {"a": "a", "b": "b"}


# -- PyChor processes ----------------------------------------------------------


def pychor_party(me: str, ports: list[int]) -> None:
    """One PyChor party; reads ``pychor N`` / ``raw N`` / ``stop`` lines from stdin."""
    import pychor

    alice, bob = pychor.Party("alice"), pychor.Party("bob")
    addresses = {alice: ("127.0.0.1", ports[0]), bob: ("127.0.0.1", ports[1])}
    party = alice if me == "alice" else bob
    with pychor.TCPBackend([alice, bob], me=party, addresses=addresses) as backend:
        other = bob if party == alice else alice
        stream = backend.streams[other]
        frame = len(PAYLOAD).to_bytes(4, "big") + PAYLOAD
        print("READY", flush=True)
        for line in sys.stdin:
            cmd, _, count = line.strip().partition(" ")
            if cmd == "stop":
                break
            n = int(count)
            cpu = time.process_time()
            start = time.perf_counter()
            if cmd == "pychor":
                for _ in range(n):
                    x = PAYLOAD @ alice
                    x.send(alice, bob)
                    x.only(bob).send(bob, alice)
                    backend.views[party].clear()  # do not let the transcript grow
            else:  # raw: PyChor's socket and framing, no pickle
                writer, reader = stream.writer, stream.reader
                for _ in range(n):
                    if party == alice:
                        writer.write(frame)
                        writer.flush()
                        reader.read(int.from_bytes(reader.read(4), "big"))
                    else:
                        reader.read(int.from_bytes(reader.read(4), "big"))
                        writer.write(frame)
                        writer.flush()
            elapsed = time.perf_counter() - start
            cpu = time.process_time() - cpu
            print(f"TIME {elapsed / n * 1e6} {cpu / n * 1e6}", flush=True)


# -- choreo processes ----------------------------------------------------------


async def choreo_b() -> None:
    """Role ``b`` (Node on TcpTransport) and ``e`` (bare echo), obeying ``a`` until "stop"."""
    from choreo._endpoint import Endpoint, Node
    from choreo._envelope import Envelope
    from choreo._tcp import TcpTransport

    loop = asyncio.get_running_loop()
    node = Node("b", TcpTransport("b", "127.0.0.1:0"))  # learns a's address from its HELLO
    await node.start()
    echo = TcpTransport("e", "127.0.0.1:0")
    box: list[asyncio.Future[Envelope]] = [loop.create_future()]

    def deliver(env: Envelope) -> None:
        box[0].set_result(env)

    await echo.start(deliver)
    print(f"PORTS {node.transport.port} {echo.port}", flush=True)  # type: ignore[attr-defined]
    ctl = Endpoint(node.open("ctl", "bench", 300.0, ["a"]), ROLES)
    i = 0
    while True:
        cmd = await ctl.recv("a", f"ctl:{i}")
        i += 1
        if cmd[0] == "stop":
            break
        if cmd[0] == "cpu":
            await ctl.send("a", time.process_time(), f"cpu:{i}")
        elif cmd[0] == "rtt":
            _, sid, n = cmd
            ep = Endpoint(node.open(sid, "bench", 60.0, ["a"]), ROLES)
            for _ in range(n):
                await ep.send("a", await ep.recv("a", "f.py:1"), "f.py:2")
            node.close(sid)
        elif cmd[0] == "bare":
            for _ in range(cmd[1]):
                env = await box[0]
                box[0] = loop.create_future()
                reply = Envelope(env.session, "e", env.sender, "f.py:2", env.kind, env.payload, "")
                await echo.send(reply, 10.0)
    await node.aclose()
    await echo.close()


async def choreo_a(ports: list[int]) -> None:
    """Role ``a``: reads ``choreo N`` / ``bare N`` / ``stop`` lines from stdin."""
    from choreo._endpoint import Endpoint, Node
    from choreo._envelope import Envelope, Kind
    from choreo._tcp import TcpTransport

    loop = asyncio.get_running_loop()
    peers = {"b": f"127.0.0.1:{ports[0]}", "e": f"127.0.0.1:{ports[1]}"}
    transport = TcpTransport("a", "127.0.0.1:0", peers)
    box: list[asyncio.Future[Envelope]] = [loop.create_future()]
    node = Node("a", transport)

    def deliver(env: Envelope) -> None:
        if env.sender == "e":
            box[0].set_result(env)
        else:
            node.deliver(env)

    await transport.start(deliver)
    ctl = Endpoint(node.open("ctl", "bench", 300.0, ["b"]), ROLES)
    step = 0
    rep = 0

    async def command(*cmd: Any) -> None:
        nonlocal step
        await ctl.send("b", cmd, f"ctl:{step}")
        step += 1

    async def cpu_of_b() -> float:
        await command("cpu")
        seconds: float = await ctl.recv("b", f"cpu:{step}")
        return seconds

    async def endpoint_rtt(n: int) -> tuple[float, float]:
        nonlocal rep
        rep += 1
        sid = f"rtt-{rep}"
        await command("rtt", sid, n + 1)
        ep = Endpoint(node.open(sid, "bench", 60.0, ["b"]), ROLES)
        await ep.send("b", PAYLOAD, "f.py:1")  # warm up
        await ep.recv("b", "f.py:2")
        cpu = time.process_time()
        start = time.perf_counter()
        for _ in range(n):
            await ep.send("b", PAYLOAD, "f.py:1")
            await ep.recv("b", "f.py:2")
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu
        node.close(sid)
        return elapsed, cpu

    async def bare_rtt(n: int) -> tuple[float, float]:
        await command("bare", n + 1)
        env = Envelope("bare", "a", "e", "f.py:1", Kind.DATA, PAYLOAD, "")
        await transport.send(env, 10.0)  # warm up
        await box[0]
        cpu = time.process_time()
        start = time.perf_counter()
        for _ in range(n):
            box[0] = loop.create_future()
            await transport.send(env, 10.0)
            await box[0]
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu
        box[0] = loop.create_future()
        return elapsed, cpu

    print("READY", flush=True)
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        cmd, _, count = line.strip().partition(" ")
        if cmd in ("stop", ""):
            break
        n = int(count)
        b_before = await cpu_of_b()
        elapsed, cpu = await (endpoint_rtt(n) if cmd == "choreo" else bare_rtt(n))
        cpu += await cpu_of_b() - b_before  # b's share (its setup for the run included)
        print(f"TIME {elapsed / n * 1e6} {cpu / n * 1e6}", flush=True)
    await command("stop")
    await node.aclose()


# -- driver --------------------------------------------------------------------


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Worker:
    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )

    def tell(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def expect(self, word: str) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith(word):
            raise SystemExit(f"bench worker said {line!r}, expected {word}")
        return line[len(word) :].strip()


SPEC = [
    ("PyChor 0.4.0 TCPBackend (pickle, blocking sockets) (baseline)", "pychor"),
    ("raw blocking sockets, PyChor's connection and framing, no pickle", "raw"),
    ("choreo TcpTransport, Node/Endpoint (codec, session, deadline)", "choreo"),
    ("choreo TcpTransport, bare send/deliver", "bare"),
]
UVLOOP_SPEC = [
    ("choreo TcpTransport, Node/Endpoint, on uvloop", "choreo-uvloop"),
    ("choreo TcpTransport, bare send/deliver, on uvloop", "bare-uvloop"),
]


def _run(coro: Any, uvloop: bool) -> None:
    if uvloop:
        import uvloop as _uvloop

        _uvloop.run(coro)
    else:
        asyncio.run(coro)


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--rtt", type=int, default=2000, help="round trips per repetition")
    parser.add_argument(
        "--uvloop",
        action="store_true",
        help="insist on the uvloop rows (they are there by default when uvloop is installed)",
    )
    parser.add_argument("--no-uvloop", action="store_true", help="leave out the uvloop rows")
    parser.add_argument(
        "--quick", action="store_true", help="3 repetitions of 200 round trips (a smoke test)"
    )
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--ports", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role in ("alice", "bob"):
        pychor_party(args.role, args.ports)
        return
    if args.role in ("b", "b-uvloop"):
        _run(choreo_b(), args.role.endswith("uvloop"))
        return
    if args.role in ("a", "a-uvloop"):
        _run(choreo_a(args.ports), args.role.endswith("uvloop"))
        return
    if args.quick:
        args.reps, args.rtt = 3, 200

    try:
        import pychor  # noqa: F401
    except ImportError:
        raise SystemExit("PyChor is not installed: pip install -e '.[bench]'") from None
    if args.uvloop and not _has_uvloop():
        raise SystemExit("uvloop is not installed: pip install -e '.[fast]'")
    with_uvloop = _has_uvloop() and not args.no_uvloop
    from importlib.metadata import version

    from bench._table import Row, markdown

    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    me = [sys.executable, __file__]
    ports = [str(p) for p in _free_ports(2)]
    started = time.perf_counter()
    workers: list[Worker] = []
    rows: dict[str, list[float]] = {}
    try:
        alice = Worker([*me, "--role", "alice", "--ports", *ports], env)
        bob = Worker([*me, "--role", "bob", "--ports", *ports], env)
        workers += [alice, bob]
        loops = ["asyncio", "uvloop"] if with_uvloop else ["asyncio"]
        choreo: dict[str, Worker] = {}
        for loop in loops:
            suffix = "" if loop == "asyncio" else "-uvloop"
            b = Worker([*me, "--role", f"b{suffix}"], env)
            workers.append(b)
            a = Worker([*me, "--role", f"a{suffix}", "--ports", *b.expect("PORTS").split()], env)
            workers.append(a)
            a.expect("READY")
            choreo[loop] = a
        alice.expect("READY")
        bob.expect("READY")

        def pychor_rtt(kind: str, n: int) -> tuple[float, float]:
            alice.tell(f"{kind} {n}")
            bob.tell(f"{kind} {n}")
            _, bob_cpu = map(float, bob.expect("TIME").split())
            wall, alice_cpu = map(float, alice.expect("TIME").split())
            return wall, alice_cpu + bob_cpu

        def choreo_rtt(loop: str, kind: str, n: int) -> tuple[float, float]:
            choreo[loop].tell(f"{kind} {n}")
            wall, cpu = map(float, choreo[loop].expect("TIME").split())
            return wall, cpu

        def plan(n: int) -> list[tuple[str, Any]]:
            steps = [
                ("pychor", lambda: pychor_rtt("pychor", n)),
                ("raw", lambda: pychor_rtt("raw", n)),
            ]
            for loop in loops:
                for kind in ("choreo", "bare"):
                    key = kind if loop == "asyncio" else f"{kind}-{loop}"
                    steps.append((key, lambda loop=loop, kind=kind: choreo_rtt(loop, kind, n)))
            return steps

        print("pychor_pingpong: warming up", file=sys.stderr, flush=True)
        for _, measure in plan(max(args.rtt // 4, 50)):  # untimed warm-up pass
            measure()
        for rep in range(args.reps):
            print(f"pychor_pingpong: repetition {rep + 1}/{args.reps}", file=sys.stderr, flush=True)
            for name, measure in plan(args.rtt):
                wall, cpu = measure()
                rows.setdefault(name, []).append(wall)
                rows.setdefault(f"cpu:{name}", []).append(cpu)
        for w in workers:
            w.tell("stop")
        for w in workers:
            w.proc.wait(timeout=30)
    finally:
        for w in workers:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()
    spec = SPEC + (UVLOOP_SPEC if with_uvloop else [])
    print(
        f"PyChor vs choreo ping-pong: 4 processes on 127.0.0.1, 16-byte payloads, {args.reps} "
        f"interleaved repetitions of {args.rtt} round trips (python {sys.version.split()[0]}, "
        f"pychor {version('pychor')}"
        + (f", uvloop {version('uvloop')}" if with_uvloop else "")
        + "). Latency, wall-clock per round trip:\n"
    )
    print(markdown([Row(title, key, "pychor", "us") for title, key in spec], rows))
    print(
        "\nCPU time both processes of a row spend per round trip (user + system; "
        "a busy machine disturbs it far less than the latency):\n"
    )
    print(
        markdown(
            [Row(f"CPU: {title}", f"cpu:{key}", "cpu:pychor", "us") for title, key in spec], rows
        )
    )
    print(f"\npychor_pingpong: total {time.perf_counter() - started:.1f}s", file=sys.stderr)


if __name__ == "__main__":
    main()
