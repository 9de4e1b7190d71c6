"""Groups end to end: every role and every group member its own process over gRPC.

``choreo up --census GROUP=SIZE`` starts one process per member; the results
must equal the central run's (the IR interpreter's), member by member.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from choreo._central import central_results
from choreo._loader import choreographies_in, load_file
from tests.scenarios import ROOT

CLI = [sys.executable, "-m", "choreo._cli"]


def _up(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "up", *args, "--json", "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _central(file: str, name: str, **inputs: object) -> dict[str, object]:
    chor = choreographies_in(load_file(ROOT / file))[name]
    return json.loads(json.dumps(central_results(chor, **inputs)))


@pytest.mark.parametrize("n", [1, 3, 5])
def test_fan_sum_over_grpc(n: int) -> None:
    numbers = list(range(1, 21))
    out = _up(
        "examples/06_fan_sum.py:fan_sum",
        "--census",
        f"workers={n}",
        "--input",
        f"numbers={numbers}",
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got == _central("examples/06_fan_sum.py", "fan_sum", numbers=numbers, workers=n)
    assert got["client"] == 210 and len(got) == n + 1


def test_kv_backups_over_grpc() -> None:
    out = _up(
        "examples/05_kv_backups.py:put",
        "--census", "backups=3",
        "--input", "key=x", "--input", "value=1", "--input", "pstore={}", "--input", "bstore={}",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {
        "client": "OK", "primary": None, "backups.0": None, "backups.1": None, "backups.2": None
    }  # fmt: skip


def test_named_members_and_per_member_inputs_over_grpc() -> None:
    opinion = {"ann": True, "bob": False, "cy": True}
    out = _up(
        "examples/07_majority_vote.py:vote",
        "--census", "voters=ann,bob,cy",
        "--input", "proposal=lunch", "--input", f"opinion={opinion}",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got == _central(
        "examples/07_majority_vote.py", "vote", proposal="lunch", opinion=opinion,
        voters=["ann", "bob", "cy"],
    )  # fmt: skip
    assert got == {"coordinator": None, "ann": True, "bob": True, "cy": True}


def test_up_rejects_a_missing_or_unknown_census() -> None:
    out = _up("examples/06_fan_sum.py:fan_sum", "--input", "numbers=[1]")
    assert out.returncode != 0 and "census of group 'workers'" in out.stderr
    out = _up("examples/06_fan_sum.py:fan_sum", "--census", "nobody=2", "--input", "numbers=[1]")
    assert out.returncode != 0 and "has no group 'nobody'" in out.stderr


def test_serve_group_members_as_processes_and_run_sessions_over_grpc(tmp_path: Path) -> None:
    """`choreo serve` for a primary and three backups (a group in the cluster file)."""
    import asyncio
    import select
    import signal

    import choreo
    from choreo._cluster import Cluster, write_cluster
    from choreo._process import free_ports

    members = ["backups.0", "backups.1", "backups.2"]
    ports = free_ports(4)
    addresses = dict(zip(["primary", *members], (f"127.0.0.1:{p}" for p in ports), strict=True))
    path = tmp_path / "kv.toml"
    write_cluster(path, Cluster(roles=addresses, groups={"backups": members}))

    def serve(role: str, store: str) -> subprocess.Popen[bytes]:
        argv = [*CLI, "serve", "examples/05_kv_backups.py", "--role", role]
        argv += ["--cluster", str(path), "--input", f"{store}={{}}", "--timeout", "5"]
        return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    procs = {role: serve(role, "pstore" if role == "primary" else "bstore") for role in addresses}
    try:
        for p in procs.values():
            assert p.stderr is not None
            ready, _, _ = select.select([p.stderr], [], [], 60)
            assert ready, "server did not start"
            assert " serving " in p.stderr.readline().decode()
        chors = choreographies_in(load_file(ROOT / "examples/05_kv_backups.py"))

        async def workload() -> list[object]:
            async with choreo.Client(path, timeout=5) as client:
                out = []
                for k, v in [("x", 1), ("y", 2), ("x", 3)]:
                    r = await client.run(chors["put"], key=k, value=v)
                    out.append(r["client"])
                got = await client.run(chors["get"], key="x")
                out.append(got["client"])
                # a session over two of the three members (a smaller view)
                r = await client.run(chors["put"], key="z", value=9, backups=members[:2])
                out.append(r["client"])
                return out

        assert asyncio.run(workload()) == ["OK", "OK", "OK", 3, "OK"]
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            assert p.stderr is not None
            p.stderr.close()


def test_a_member_that_is_down_does_not_stop_the_sender_over_grpc() -> None:
    """g.2 never starts: the leader's multicast must not block on it, the majority answers."""
    import asyncio

    from choreo._process import free_ports, run_role
    from tests.group_chors import ask

    names = ["leader", "g.0", "g.1", "g.2"]
    addresses = {n: f"127.0.0.1:{p}" for n, p in zip(names, free_ports(4), strict=True)}
    groups = {"g": names[1:]}

    async def play(role: str) -> object:
        return await run_role(
            ask, role, addresses, {"x": 1}, session="s1", timeout=5.0, groups=groups
        )

    async def main() -> list[object]:
        return await asyncio.gather(*(play(n) for n in names[:3]))  # g.2 is down

    assert asyncio.run(main()) == [2, None, None]
