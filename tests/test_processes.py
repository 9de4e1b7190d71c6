"""End to end: roles as real OS processes over gRPC on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from choreo._cluster import Cluster, write_cluster
from choreo._process import free_ports
from tests.scenarios import ROOT

CLI = [sys.executable, "-m", "choreo._cli"]
FAILING = "tests/e2e/failing.py"


def _up(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "up", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def _leftovers(marker: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args", "-ww"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if marker in line and "ps -eo" not in line]


def test_up_ping_pong_runs_every_role_as_a_process() -> None:
    out = _up("protocols/ping_pong.py:ping_pong")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["alice: 'hi'", "bob: None"]
    assert "alice is up on 127.0.0.1:" in out.stderr and "bob finished" in out.stderr
    assert "[bob] bob heard 'hello'" in out.stderr  # the role's own output, forwarded


def test_up_bookseller_json() -> None:
    out = _up(
        "protocols/bookseller.py:two_buyer_bookseller",
        "--input", "title=TAPL", "--input", "budget=50", "--input", "limit=30",
        "--input", "catalogue={'TAPL': 80}", "--json", "--quiet",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"buyer1": "2023-08-03", "buyer2": None, "seller": None}


def test_a_failing_role_stops_everything_and_exits_non_zero() -> None:
    start = time.monotonic()
    out = _up(f"{FAILING}:bob_fails", "--input", "x=7", "--timeout", "30")
    assert out.returncode == 1
    assert (
        "bob_fails failed: bob: RoleFailedError: role bob raised ValueError: bob cannot handle 7"
        in out.stderr
    )
    assert " FAILED (" in out.stderr  # the progress line of the first role that stopped
    # alice was told (ABORT) instead of waiting for her 30 s deadline
    assert time.monotonic() - start < 25
    assert not _leftovers(f"{FAILING}:bob_fails")


def test_ctrl_c_stops_every_child() -> None:
    proc = subprocess.Popen(
        [*CLI, "up", f"{FAILING}:slow", "--input", "seconds=60", "--timeout", "90"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        seen = ""
        deadline = time.monotonic() + 60
        while "bob is up" not in seen or "alice is up" not in seen:
            assert time.monotonic() < deadline, seen
            assert proc.stderr is not None
            seen += proc.stderr.readline()
        assert len(_leftovers(f"{FAILING}:slow")) == 3  # choreo up and its two children
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
        assert proc.returncode == 130
        time.sleep(0.5)
        assert not _leftovers(f"{FAILING}:slow")
    finally:
        proc.kill()
        proc.communicate()
        for line in _leftovers(f"{FAILING}:slow"):
            os.kill(int(line.split()[0]), signal.SIGKILL)


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "no output in time"
    return proc.stdout.readline()


def test_sigkill_mid_session_fails_the_others_within_the_deadline(tmp_path: Path) -> None:
    deadline = 2.0
    ports = free_ports(2)
    cluster = tmp_path / "c.toml"
    write_cluster(
        cluster, Cluster(roles={"alice": f"127.0.0.1:{ports[0]}", "bob": f"127.0.0.1:{ports[1]}"})
    )

    def start(role: str, *extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*CLI, "run", "protocols/ping_pong.py:ping_pong_n", "--role", role,
             "--cluster", str(cluster), "--timeout", str(deadline), "--report", *extra],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip

    alice = start("alice", "--input", "rounds=100000000")
    bob = start("bob")
    try:
        assert _readline(alice, 60).startswith("READY")
        assert _readline(bob, 60).startswith("READY")
        time.sleep(1.0)  # mid-session: thousands of rounds are going back and forth
        assert alice.poll() is None and bob.poll() is None
        bob.kill()  # SIGKILL
        killed = time.monotonic()
        line = _readline(alice, deadline * 3)
        elapsed = time.monotonic() - killed
        assert line.startswith("ERROR"), line
        message = base64.b64decode(line.split()[1]).decode()
        assert "bob" in message and "ping_pong.py:" in message, message
        assert elapsed <= deadline * 1.1, f"alice failed {elapsed:.2f}s after bob died"
        assert alice.wait(10) != 0
    finally:
        for p in (alice, bob):
            p.kill()
            p.communicate()


SLOW_MEMBER = """
import sys
import time

from choreo import At, Role, Roles, choreography

if "workers.1" in sys.argv:  # this member's process takes long to start
    time.sleep(2.0)


@choreography
def roll_call(leader: Role, workers: Roles) -> At[int, "leader"]:
    with workers:
        here = 1
    answers = workers.send(here, to=leader, timeout=0.5)
    with leader:
        count = len(answers)
    return count
"""


def test_up_starts_the_roles_when_every_role_serves(tmp_path: Path) -> None:
    """A member that starts late is not late for a gather: `up` says GO once all serve."""
    chor = tmp_path / "slow_member.py"
    chor.write_text(SLOW_MEMBER)
    out = _up(f"{chor}:roll_call", "--census", "workers=2", "--json", "--quiet")
    assert out.returncode == 0, out.stderr
    # had the leader started at once, its 0.5 s gather would have ended without workers.1
    assert json.loads(out.stdout) == {"leader": 2, "workers.0": None, "workers.1": None}
