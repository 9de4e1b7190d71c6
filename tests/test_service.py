"""Service mode: long-running role processes serving many concurrent sessions."""

from __future__ import annotations

import asyncio
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import choreo
from choreo._cluster import Cluster, write_cluster
from choreo._loader import load_file
from choreo._process import free_ports
from tests.scenarios import ROOT

KV = ROOT / "examples" / "04_kv_service.py"


SERVERS: dict[Path, dict[str, subprocess.Popen[bytes]]] = {}


@pytest.fixture
def kv_cluster(tmp_path: Path) -> Iterator[Path]:
    """primary and backup as `choreo serve` processes on 127.0.0.1."""
    ports = free_ports(2)
    path = tmp_path / "kv.toml"
    write_cluster(
        path,
        Cluster(roles={"primary": f"127.0.0.1:{ports[0]}", "backup": f"127.0.0.1:{ports[1]}"}),
    )
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "choreo._cli",
                "serve",
                str(KV),
                "--role",
                role,
                "--cluster",
                str(path),
                "--input",
                f"{store}={{}}",
                "--timeout",
                "5",
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for role, store in (("primary", "pstore"), ("backup", "bstore"))
    ]
    SERVERS[path] = dict(zip(("primary", "backup"), procs, strict=True))
    try:
        for p in procs:  # wait until both serve (they log "<role> serving ... on <address>")
            assert p.stderr is not None
            ready, _, _ = select.select([p.stderr], [], [], 60)
            assert ready, "server did not start"
            line = p.stderr.readline().decode()
            assert " serving " in line, line
        yield path
    finally:
        SERVERS.pop(path, None)
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            assert p.stderr is not None
            p.stderr.close()


def test_many_sessions_against_long_running_roles(kv_cluster: Path) -> None:
    kv = load_file(KV)

    async def scenario() -> None:
        async with choreo.Client(kv_cluster, timeout=10) as client:
            # the servers take a moment to start: the first session waits for them
            assert (await client.run(kv.put, key="warm", value=0))["client"] is True
            sem = asyncio.Semaphore(32)

            async def put(i: int) -> bool:
                async with sem:
                    out = await client.run(kv.put, key=f"k{i}", value=i * i)
                    return bool(out["client"])

            assert all(await asyncio.gather(*(put(i) for i in range(200))))
            # state lives on across sessions: every value is there
            got = await asyncio.gather(*(client.run(kv.get, key=f"k{i}") for i in range(0, 200, 7)))
            assert [g["client"] for g in got] == [i * i for i in range(0, 200, 7)]
            assert (await client.run(kv.get, key="never"))["client"] is None
            # overwrite, then read: the newest value
            await client.run(kv.put, key="k1", value="new")
            assert (await client.run(kv.get, key="k1"))["client"] == "new"

    asyncio.run(asyncio.wait_for(scenario(), 120))


def test_sessions_never_see_each_others_messages(kv_cluster: Path) -> None:
    kv = load_file(KV)

    async def scenario() -> None:
        async with choreo.Client(kv_cluster) as c1, choreo.Client(kv_cluster) as c2:
            await c1.run(kv.put, key="warm", value=0)

            async def pair(i: int) -> None:
                a, b = await asyncio.gather(
                    c1.run(kv.put, key=f"a{i}", value=("c1", i)),
                    c2.run(kv.put, key=f"b{i}", value=("c2", i)),
                )
                assert a["client"] is True and b["client"] is True
                ga, gb = await asyncio.gather(
                    c2.run(kv.get, key=f"a{i}"), c1.run(kv.get, key=f"b{i}")
                )
                assert ga["client"] == ("c1", i) and gb["client"] == ("c2", i)

            await asyncio.gather(*(pair(i) for i in range(40)))

    asyncio.run(asyncio.wait_for(scenario(), 120))


MISMATCH = """
from choreo import At, Role, choreography

@choreography
def get(client: Role, primary: Role, key: At[str, "client"], pstore: At[dict, "primary"]) -> At[object, "client"]:
    k = client.send(key + "!", to=primary)   # a different version of `get`
    with primary:
        value = pstore.get(k)
    answer = primary.send(value, to=client)
    return answer
"""


def test_version_mismatch_is_an_error_on_both_sides() -> None:
    kv = load_file(KV)
    other = choreo.module_from_source(MISMATCH, "kv_v2")

    async def scenario() -> tuple[int, BaseException | None]:
        port = free_ports(1)[0]
        cluster = Cluster(roles={"primary": f"127.0.0.1:{port}"})
        server = choreo.Server(kv, "primary", cluster, {"pstore": {"x": 1}}, timeout=3)
        await server.start()
        try:
            async with choreo.Client(cluster, timeout=3) as client:
                assert (await client.run(kv.get, key="x"))["client"] == 1
                try:
                    await client.run(other.get, key="x")
                except choreo.ChoreoError as exc:
                    return server.sessions_failed, exc
                return server.sessions_failed, None
        finally:
            await server.close()

    failed, exc = asyncio.run(scenario())
    assert isinstance(exc, choreo.VersionMismatchError)
    assert "every role must run the same version" in str(exc)
    assert failed == 1  # the server saw (and logged) it too


def test_serve_rejects_a_role_missing_from_the_cluster(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    write_cluster(path, Cluster(roles={"primary": "127.0.0.1:1"}))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "choreo._cli",
            "serve",
            str(KV),
            "--role",
            "backup",
            "--cluster",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 2
    assert "no address for role 'backup'" in out.stderr


def test_killed_server_makes_the_client_fail_within_the_deadline(kv_cluster: Path) -> None:
    kv = load_file(KV)

    async def scenario() -> float:
        async with choreo.Client(kv_cluster, timeout=2) as client:
            await client.run(kv.put, key="warm", value=0)
            SERVERS[kv_cluster]["backup"].kill()  # SIGKILL
            start = time.monotonic()
            with pytest.raises(choreo.ChoreoRuntimeError):
                await client.run(kv.put, key="after", value=1)
            return time.monotonic() - start

    elapsed = asyncio.run(asyncio.wait_for(scenario(), 60))
    # the primary's receive from the dead backup times out after 2 s; the client
    # hears about it (ABORT / RESULT) right after, well within its own deadline
    assert elapsed < 2 * 2 * 1.1, f"the client failed after {elapsed:.2f}s"
