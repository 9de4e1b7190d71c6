"""Real network faults: role processes in separate Linux network namespaces.

Each test puts every role's ``choreo run`` process in a network namespace of
its own; the two namespaces are joined by one veth pair (10.231.0.1/30 <->
10.231.0.2/30), and the faults are made by the kernel on that link:

* ``tc qdisc ... netem delay 20ms loss 5%`` on both ends: the session completes
  with the right results (TCP retransmits; gRPC's streams survive);
* the same 5% random loss without ``netem``, for kernels built without it: a
  classic-BPF ``tc`` filter (``ld rand``) that drops 5% of the packets leaving
  each end (``clsact`` egress, direct action), so loss is tested wherever
  namespaces are;
* ``ip link set veth0 down`` mid-session, or before the first message: every
  waiting role fails with a ``DeadlineError``/``TransportError`` naming its peer
  within its deadline plus a margin, and its process exits, not hangs;
* the link set up again before the deadline: the session completes.

This needs root (``ip netns add`` needs CAP_SYS_ADMIN, links and qdiscs
CAP_NET_ADMIN), iproute2 (``ip``, ``tc``) and, for the netem case, a kernel with
``sch_netem``. What the machine does not allow is found out at run time, once,
by a probe that makes a throw-away namespace, and the tests that need it are
skipped with the exact reason (the command that failed and what it said). Run
them alone with ``pytest -m netem tests/test_netem.py``; they also run in the
normal run. Every namespace (and with it its veth end) is deleted by the
fixture's finalizer, also when a test fails; names are unique per run.
"""

from __future__ import annotations

import base64
import functools
import gzip
import itertools
import os
import queue
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from choreo import _codec
from choreo._cluster import Cluster, write_cluster
from choreo._trace import load_trace
from tests.scenarios import ROOT

pytestmark = pytest.mark.netem

CLI = [sys.executable, "-m", "choreo._cli"]
PING_PONG = "protocols/ping_pong.py"
BOOKSELLER = "protocols/bookseller.py"
SUBNET = "10.231.0"  # private to the test's own namespaces: it can clash with nothing
PORT = 50051  # the same in both namespaces: each has its own ports
# After its error, a failed role tells its peer (ABORT, at most 0.5 s), lets its
# transport flush (until the queued envelopes' deadlines + 2 s of backoff) and
# stops its server (about 1.2 s at most): its process must be gone by then.
EXIT_SLACK = 6.0


# -- what this machine allows -------------------------------------------------


def _sh(*cmd: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _check(*cmd: str) -> str:
    out = _sh(*cmd)
    if out.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed: {(out.stderr or out.stdout).strip()}")
    return out.stdout


def _kernel_config(*names: str) -> str:
    """How /proc/config.gz sets ``names`` (e.g. 'CONFIG_NET_SCH_NETEM is not set')."""
    try:
        text = gzip.decompress(Path("/proc/config.gz").read_bytes()).decode()
    except OSError:
        return "no /proc/config.gz to tell how the kernel was built"
    facts = []
    for name in names:
        line = next(
            (ln for ln in text.splitlines() if ln.startswith(f"{name}=") or f" {name} " in ln),
            f"{name} absent",
        )
        facts.append(line.lstrip("# "))
    return "/proc/config.gz: " + ", ".join(facts)


def _docker_state() -> str:
    if shutil.which("docker") is None:
        return "docker is not installed"
    try:
        out = _sh("docker", "info", "--format", "{{.ServerVersion}}", timeout=15)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer in 15 s"
    if out.returncode != 0 or not out.stdout.strip():
        lines = (out.stderr or out.stdout).strip().splitlines()
        return "docker has no engine here (`docker info`: " + (lines[-1] if lines else "?") + ")"
    return f"docker engine {out.stdout.strip()} is up"


@dataclass(frozen=True)
class Support:
    """Why each kind of test cannot run here; ``None``: it can."""

    netns: str | None
    netem: str | None
    bpf_loss: str | None


def _bpf_drop(percent: float) -> str:
    """Classic BPF for ``tc filter ... bpf da``: drop ``percent`` % of packets at random.

    ``A = random u32`` (ancillary load SKF_AD_OFF + SKF_AD_RANDOM); ``A >= K``:
    return TC_ACT_SHOT (2), else TC_ACT_OK (0).
    """
    k = int((1 - percent / 100) * 2**32)
    return f"4,32 0 0 {(-0x1000 + 56) & 0xFFFFFFFF},53 0 1 {k},6 0 0 2,6 0 0 0"


@functools.cache
def support() -> Support:
    """Probe once, in a throw-away namespace, what this machine allows."""
    missing = [tool for tool in ("ip", "tc") if shutil.which(tool) is None]
    if missing:
        reason = (
            f"iproute2 is not installed ({', '.join(missing)} not found; "
            "`apt-get install -y iproute2`)"
        )
        return Support(reason, reason, reason)
    ns = f"choreo-probe-{os.getpid()}-{secrets.token_hex(3)}"
    out = _sh("ip", "netns", "add", ns)
    if out.returncode != 0:
        reason = (
            f"ip netns add failed: {out.stderr.strip()} (needs root, or CAP_SYS_ADMIN and "
            f"CAP_NET_ADMIN; running as uid {os.geteuid()}); a `docker run --privileged` "
            f"container would have them: {_docker_state()}"
        )
        return Support(reason, reason, reason)
    try:
        out = _sh("ip", "netns", "exec", ns, sys.executable, "-c", "pass")
        if out.returncode != 0:
            reason = f"ip netns exec failed: {out.stderr.strip()}"
            return Support(reason, reason, reason)
        out = _sh("ip", "-n", ns, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1")
        if out.returncode != 0:
            reason = f"ip link add ... type veth failed: {out.stderr.strip()} (needs CAP_NET_ADMIN)"
            return Support(reason, reason, reason)
        netem: str | None = None
        out = _sh("tc", "-n", ns, "qdisc", "add", "dev", "veth0", "root", "netem", "delay", "20ms",
                  "loss", "5%")  # fmt: skip
        if out.returncode != 0:
            netem = f"`tc qdisc add dev veth0 root netem delay 20ms loss 5%` failed ({out.stderr.strip()})"
            if "unknown" in out.stderr:
                netem += (
                    f": this kernel has no sch_netem "
                    f"({_kernel_config('CONFIG_NET_SCH_NETEM', 'CONFIG_MODULES')}), and docker "
                    f"--privileged cannot add it: containers share the host's kernel; "
                    f"{_docker_state()}"
                )
        bpf: str | None = None
        for cmd in (
            ("tc", "-n", ns, "qdisc", "add", "dev", "veth1", "clsact"),
            ("tc", "-n", ns, "filter", "add", "dev", "veth1", "egress", "bpf", "da", "bytecode",
             _bpf_drop(5)),
        ):  # fmt: skip
            out = _sh(*cmd)
            if out.returncode != 0:
                bpf = f"`{' '.join(cmd)}` failed: {out.stderr.strip()}"
                break
        return Support(None, netem, bpf)
    finally:
        _sh("ip", "netns", "del", ns)


def _require(reason: str | None) -> None:
    if reason is not None:
        pytest.skip(reason)


# -- two namespaces, one link -------------------------------------------------


@dataclass
class Report:
    kind: str  # RESULT or ERROR
    value: Any  # the decoded result, or the error text
    at: float  # time.monotonic() when the line arrived


class Role:
    """One ``choreo run --report`` process, in its namespace.

    A thread reads its report lines as they come and stamps each with the time
    it arrived, so that one role's failure is timed right while we wait for another.
    """

    def __init__(self, proc: subprocess.Popen[str], stderr: Path) -> None:
        self.proc = proc
        self.stderr = stderr
        self.lines: queue.Queue[tuple[float, str]] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put((time.monotonic(), line))

    def line(self, timeout: float) -> tuple[float, str]:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"no report in {timeout:g}s; stderr: {self.stderr.read_text()}"
            ) from None

    def ready(self, timeout: float = 30) -> None:
        _, line = self.line(timeout)
        assert line.startswith("READY "), f"{line!r}; stderr: {self.stderr.read_text()}"

    def report(self, timeout: float) -> Report:
        at, line = self.line(timeout)
        kind, _, data = line.strip().partition(" ")
        if kind == "RESULT":
            return Report(kind, _codec.decode(base64.b64decode(data)), at)
        assert kind == "ERROR", f"{line!r}; stderr: {self.stderr.read_text()}"
        return Report(kind, base64.b64decode(data).decode(errors="replace"), at)

    def exits(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.reader.join(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


class Net:
    """Two namespaces joined by a veth pair: ``veth0`` in each, ``SUBNET.1`` and ``SUBNET.2``."""

    def __init__(self, tmp: Path, roles: tuple[str, str]) -> None:
        self.tmp = tmp
        self.roles = roles
        prefix = f"choreo-{os.getpid()}-{secrets.token_hex(3)}"
        self.ns = {r: f"{prefix}-{i}" for i, r in enumerate(roles)}
        self.ip = {r: f"{SUBNET}.{i + 1}" for i, r in enumerate(roles)}
        self.procs: list[Role] = []
        self.made: list[str] = []

    def setup(self) -> None:
        for ns in self.ns.values():
            _check("ip", "netns", "add", ns)
            self.made.append(ns)
        a, b = (self.ns[r] for r in self.roles)
        # Made directly inside the namespaces: the name veth0 never meets the host's.
        _check("ip", "link", "add", "veth0", "netns", a, "type", "veth",
               "peer", "name", "veth0", "netns", b)  # fmt: skip
        for role, ns in self.ns.items():
            _check("ip", "-n", ns, "addr", "add", f"{self.ip[role]}/30", "dev", "veth0")
            _check("ip", "-n", ns, "link", "set", "lo", "up")
            _check("ip", "-n", ns, "link", "set", "veth0", "up")

    def teardown(self) -> None:
        for role in self.procs:
            role.stop()
        failed = []
        for ns in self.made:  # deleting a namespace deletes its veth end, and so the pair
            out = _sh("ip", "netns", "del", ns)
            if out.returncode != 0:
                failed.append(f"{ns}: {out.stderr.strip()}")
        left = [ns for ns in self.made if ns in _sh("ip", "netns", "list").stdout]
        assert not failed and not left, f"namespaces not deleted: {failed or left}"

    def cluster(self, timeout: float) -> Path:
        path = self.tmp / "cluster.toml"
        # Not 127.0.0.1 as in the other tests: each role binds to its own namespace's
        # veth address, so that everything between the roles crosses the faulty link.
        write_cluster(
            path, Cluster(roles={r: f"{self.ip[r]}:{PORT}" for r in self.roles}, timeout=timeout)
        )
        return path

    def start(
        self, target: str, role: str, deadline: float, *inputs: str, trace: Path | None = None
    ) -> Role:
        stderr = self.tmp / f"{role}.stderr"
        cmd = [
            "ip", "netns", "exec", self.ns[role], *CLI, "run", target, "--role", role,
            "--cluster", str(self.cluster(deadline)), "--timeout", str(deadline), "--report",
        ]  # fmt: skip
        for item in inputs:
            cmd += ["--input", item]
        if trace is not None:
            cmd += ["--trace", str(trace)]
        with stderr.open("w") as err:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True)
        role_proc = Role(proc, stderr)
        self.procs.append(role_proc)
        return role_proc

    def tc(self, *args: str) -> None:
        for ns in self.ns.values():
            _check("tc", "-n", ns, *args)

    def dropped(self) -> int:
        """Packets the qdiscs of both ends dropped (``tc -s qdisc``)."""
        total = 0
        for ns in self.ns.values():
            words = _check("tc", "-n", ns, "-s", "qdisc", "show", "dev", "veth0").split()
            total += sum(int(words[i + 1].rstrip(",")) for i, w in enumerate(words)
                         if w == "(dropped")  # fmt: skip
        return total

    def cut(self, role: str) -> None:
        _check("ip", "-n", self.ns[role], "link", "set", "veth0", "down")

    def restore(self, role: str) -> None:
        _check("ip", "-n", self.ns[role], "link", "set", "veth0", "up")


def _net(tmp_path: Path, roles: tuple[str, str]) -> Iterator[Net]:
    _require(support().netns)
    net = Net(tmp_path, roles)
    try:
        net.setup()
        yield net
    finally:
        net.teardown()


@pytest.fixture
def ping_pong_net(tmp_path: Path) -> Iterator[Net]:
    yield from _net(tmp_path, ("alice", "bob"))


@pytest.fixture
def bookseller_net(tmp_path: Path) -> Iterator[Net]:
    yield from _net(tmp_path, ("buyer", "seller"))


def _run_both(net: Net, target: str, first: tuple[str, ...], second: tuple[str, ...],
              deadline: float, timeout: float) -> dict[str, Any]:  # fmt: skip
    """Start both roles at once (they may start in any order); every role's result."""
    procs = {role: net.start(target, role, deadline, *inputs) for role, *inputs in (first, second)}
    for proc in procs.values():
        proc.ready()
    results = {}
    for role, proc in procs.items():
        rep = proc.report(timeout)
        assert rep.kind == "RESULT", f"{role}: {rep.value}"
        results[role] = rep.value
        assert proc.exits(10) == 0
    return results


# -- (a) delay and loss: the session completes with the right results ---------

LOSS = {
    "netem": ("root", "netem", "delay", "20ms", "loss", "5%"),
    "bpf-loss": ("clsact",),  # plus the filter, below
}


def _add_loss(net: Net, how: str) -> None:
    net.tc("qdisc", "add", "dev", "veth0", *LOSS[how])
    if how == "bpf-loss":
        net.tc("filter", "add", "dev", "veth0", "egress", "bpf", "da", "bytecode", _bpf_drop(5))


@pytest.mark.parametrize("how", ["netem", "bpf-loss"])
def test_delay_and_loss_ping_pong_completes(ping_pong_net: Net, how: str) -> None:
    _require(support().netem if how == "netem" else support().bpf_loss)
    _add_loss(ping_pong_net, how)
    rounds = 60  # 120 messages, each one way over the faulty link (+ TCP's acks)
    start = time.monotonic()
    results = _run_both(
        ping_pong_net, f"{PING_PONG}:ping_pong_n", ("bob",), ("alice", f"rounds={rounds}"),
        deadline=10, timeout=40,
    )  # fmt: skip
    assert results == {"bob": None, "alice": rounds}
    assert ping_pong_net.dropped() > 0, "no packet was lost: the fault was not applied"
    assert time.monotonic() - start < 40


@pytest.mark.parametrize("how", ["netem", "bpf-loss"])
def test_delay_and_loss_bookseller_completes(bookseller_net: Net, how: str) -> None:
    _require(support().netem if how == "netem" else support().bpf_loss)
    _add_loss(bookseller_net, how)
    # the buying branch: every message of the choreography (title, price, choice, date)
    results = _run_both(
        bookseller_net, f"{BOOKSELLER}:bookseller", ("seller", "catalogue={'TAPL': 80}"),
        ("buyer", "title=TAPL", "budget=100"), deadline=10, timeout=40,
    )  # fmt: skip
    assert results == {"seller": None, "buyer": "2023-08-03"}


# -- (b) a cut link: clear errors within the deadline, no hang -----------------


def _fails_in_time(proc: Role, peer: str, since: float, deadline: float) -> str:
    rep = proc.report(deadline + EXIT_SLACK)
    assert rep.kind == "ERROR", f"expected a failure, got the result {rep.value!r}"
    assert rep.value.startswith(("DeadlineError: ", "TransportError: ")), rep.value
    assert peer in rep.value, rep.value
    margin = max(0.5, 0.1 * deadline)
    assert rep.at - since <= deadline + margin, (
        f"failed {rep.at - since:.2f}s after the cut (deadline {deadline}s): {rep.value}"
    )
    assert proc.exits(max(0.0, since + deadline + EXIT_SLACK - time.monotonic())) == 1
    return str(rep.value)


def test_link_cut_mid_session_fails_both_roles_within_the_deadline(ping_pong_net: Net) -> None:
    deadline = 2.0
    bob = ping_pong_net.start(f"{PING_PONG}:ping_pong_n", "bob", deadline)
    alice = ping_pong_net.start(f"{PING_PONG}:ping_pong_n", "alice", deadline, "rounds=100000000")
    bob.ready()
    alice.ready()
    time.sleep(0.5)  # mid-session: rounds are going back and forth
    assert alice.proc.poll() is None and bob.proc.poll() is None
    ping_pong_net.cut("alice")  # alice's end down; bob's end loses its carrier
    cut = time.monotonic()
    msg_alice = _fails_in_time(alice, "bob", cut, deadline)
    msg_bob = _fails_in_time(bob, "alice", cut, deadline)
    assert "ping_pong.py:" in msg_alice and "ping_pong.py:" in msg_bob


def test_link_cut_before_the_first_message_fails_both_roles(bookseller_net: Net) -> None:
    deadline = 2.0
    seller = bookseller_net.start(f"{BOOKSELLER}:bookseller", "seller", deadline,
                                  "catalogue={'TAPL': 80}")  # fmt: skip
    seller.ready()  # the seller now waits for the title
    bookseller_net.cut("seller")
    cut = time.monotonic()
    buyer = bookseller_net.start(f"{BOOKSELLER}:bookseller", "buyer", deadline,
                                 "title=TAPL", "budget=100")  # fmt: skip
    buyer.ready()
    started = time.monotonic()  # the buyer's session (and its deadline) begins after READY
    # The buyer cannot deliver the title: a TransportError naming the seller; the
    # seller's wait for the title began at the latest at the cut.
    assert "could not be reached" in _fails_in_time(buyer, "seller", started, deadline)
    assert "from buyer" in _fails_in_time(seller, "buyer", cut, deadline)


# -- (c) the link restored before the deadline: the session completes ----------


def test_link_restored_before_the_deadline_completes(ping_pong_net: Net) -> None:
    deadline, outage, rounds = 4.0, 1.0, 3000
    trace = ping_pong_net.tmp / "alice.jsonl"
    bob = ping_pong_net.start(f"{PING_PONG}:ping_pong_n", "bob", deadline)
    bob.ready()
    alice = ping_pong_net.start(f"{PING_PONG}:ping_pong_n", "alice", deadline,
                                f"rounds={rounds}", trace=trace)  # fmt: skip
    alice.ready()
    wait_until = time.monotonic() + 30
    while not trace.exists() or trace.read_text().count("\n") < 200:  # mid-session
        assert time.monotonic() < wait_until and alice.proc.poll() is None, "no progress"
        time.sleep(0.01)
    ping_pong_net.cut("alice")
    cut = time.time()
    time.sleep(outage)
    ping_pong_net.restore("alice")
    restored = time.time()
    rep = alice.report(deadline + 30)
    assert rep.kind == "RESULT" and rep.value == rounds, rep.value
    rep = bob.report(10)
    assert rep.kind == "RESULT" and rep.value is None, rep.value
    assert alice.exits(10) == 0 and bob.exits(10) == 0
    # The outage fell in the middle of the session: alice sent before the cut and
    # after the restore, and nothing crossed the link while it was down.
    times = [r.t for r in load_trace(trace) if r.event == "send"]
    assert min(times) < cut and max(times) > restored, (cut, restored, min(times), max(times))
    stall = max(b - a for a, b in itertools.pairwise(sorted(r.t for r in load_trace(trace))))
    assert stall >= outage * 0.9, f"the longest pause in alice's trace is {stall:.2f}s"
