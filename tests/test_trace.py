"""Traces: records from the in-process transport and from role processes over gRPC."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import choreo
from choreo import _codec
from choreo._endpoint import Endpoint, Node
from choreo._envelope import Envelope, Kind
from choreo._loader import load_file
from choreo._trace import (
    SUMMARY_LIMIT,
    TraceRecord,
    TraceRecorder,
    load_trace,
    merge_traces,
    summarize,
)
from choreo._transport import LocalNetwork
from tests.scenarios import CATALOGUE, ROOT

CLI = [sys.executable, "-m", "choreo._cli"]
FIELDS = {
    "session": str,
    "from": str,
    "to": str,
    "label": str,
    "kind": str,
    "event": str,
    "t": float,
    "size": int,
    "summary": str,
}


def _protocol(name: str) -> Any:
    return load_file(ROOT / "protocols" / f"{name}.py")


def _key(r: TraceRecord) -> tuple[str, str, str, str, str]:
    return (r.session, r.sender, r.receiver, r.label, r.kind)


def assert_well_formed(records: list[TraceRecord]) -> None:
    """Every field typed; every DATA/SELECT send received once, with the same key, later."""
    assert records
    for r in records:
        for name, typ in FIELDS.items():
            assert type(r.to_json()[name]) is typ, (name, r)
        assert r.event in ("send", "recv") and r.kind in ("DATA", "SELECT", "ABORT")
        assert r.size >= 0 and len(r.summary) <= SUMMARY_LIMIT
    sends = Counter(_key(r) for r in records if r.event == "send" and r.kind != "ABORT")
    recvs = Counter(_key(r) for r in records if r.event == "recv" and r.kind != "ABORT")
    assert sends == recvs
    assert any(k[4] == "DATA" for k in sends)
    first_send: dict[tuple[str, ...], float] = {}
    for r in records:
        if r.event == "send":
            first_send.setdefault(_key(r), r.t)
        elif r.kind != "ABORT":
            assert _key(r) in first_send and first_send[_key(r)] <= r.t, r


def test_in_process_ping_pong_records_every_send_and_receive() -> None:
    mod = _protocol("ping_pong")
    rec = TraceRecorder()
    assert choreo.run(mod.ping_pong, tracer=rec, timeout=5) == {"alice": "hi", "bob": None}
    assert_well_formed(rec.records)
    data = [(r.event, r.sender, r.receiver, r.summary) for r in rec.records if r.kind == "DATA"]
    assert data == [
        ("send", "alice", "bob", "'hello'"),
        ("recv", "alice", "bob", "'hello'"),
        ("send", "bob", "alice", "'hi'"),
        ("recv", "bob", "alice", "'hi'"),
    ]
    lines = (ROOT / "protocols" / "ping_pong.py").read_text().splitlines()
    sends = [f"ping_pong.py:{n}" for n, t in enumerate(lines, 1) if ".send(" in t][:2]
    assert {r.label for r in rec.records} == set(sends)
    assert len({r.session for r in rec.records}) == 1


@pytest.mark.parametrize(("budget", "branch"), [(100, "then"), (10, "else")])
def test_in_process_bookseller_records_the_selection(budget: int, branch: str) -> None:
    mod = _protocol("bookseller")
    rec = TraceRecorder()
    seen: list[Envelope] = []
    choreo.run(
        mod.bookseller,
        tracer=rec,
        trace=seen.append,  # the older raw hook still sees Envelope objects
        title="TAPL",
        budget=budget,
        catalogue=CATALOGUE,
        timeout=5,
    )
    assert_well_formed(rec.records)
    assert all(isinstance(e, Envelope) for e in seen)
    assert len(seen) == sum(r.event == "send" for r in rec.records)
    selects = [r for r in rec.records if r.kind == "SELECT"]
    assert [(r.event, r.sender, r.receiver, r.summary) for r in selects] == [
        ("send", "buyer", "seller", branch),
        ("recv", "buyer", "seller", branch),
    ]
    sizes = {r.summary: r.size for r in rec.records if r.kind == "DATA"}
    assert sizes["'TAPL'"] == len(_codec.encode("TAPL"))


def test_a_send_to_oneself_is_recorded_as_send_and_receive() -> None:
    # projection drops a send to oneself; the endpoint still handles one (a role
    # mapped twice), and the node traces it as a send and a receive
    rec = TraceRecorder()

    async def main() -> Any:
        node = Node("a", LocalNetwork().transport("a"))
        node.tracer = rec
        await node.start()
        ep = Endpoint(node.open("s1", "h", 5.0), {"me": "a"})
        await ep.send("me", 41, "f.py:1")
        try:
            return await ep.recv("me", "f.py:1")
        finally:
            await node.aclose()

    assert asyncio.run(main()) == 41
    assert [(r.event, r.sender, r.receiver, r.summary) for r in rec.records] == [
        ("send", "a", "a", "41"),
        ("recv", "a", "a", "41"),
    ]


def test_a_failing_role_records_its_aborts() -> None:
    mod = load_file(ROOT / "tests" / "e2e" / "failing.py")
    rec = TraceRecorder()
    with pytest.raises(choreo.RoleFailedError):
        choreo.run(mod.bob_fails, tracer=rec, x=7, timeout=5)
    aborts = [r for r in rec.records if r.kind == "ABORT"]
    by_bob = [(r.event, r.receiver, r.label) for r in aborts if r.sender == "bob"]
    assert by_bob == [("send", "alice", "abort"), ("recv", "alice", "abort")]
    assert aborts[0].summary.startswith("RoleFailedError: role bob raised ValueError")


def test_the_clock_can_be_injected() -> None:
    ticks = iter(range(100))
    rec = TraceRecorder(clock=lambda: float(next(ticks)))
    choreo.run(_protocol("ping_pong").ping_pong, tracer=rec, timeout=5)
    assert [r.t for r in rec.records] == [float(i) for i in range(len(rec.records))]


def test_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    with TraceRecorder(path, keep=True) as rec:
        choreo.run(_protocol("ping_pong").ping_pong_n, tracer=rec, rounds=3, timeout=5)
    lines = path.read_text().splitlines()
    assert len(lines) == len(rec.records) > 0
    assert all(set(json.loads(line)) == set(FIELDS) for line in lines)
    assert load_trace(path) == rec.records
    merged = merge_traces([path, path], tmp_path / "m.jsonl")
    assert len(merged) == 2 * len(rec.records)
    assert [r.t for r in merged] == sorted(r.t for r in merged)
    assert load_trace(tmp_path / "m.jsonl") == merged


def test_summaries_are_short_safe_and_never_raise() -> None:
    def env(kind: Kind, payload: bytes) -> Envelope:
        return Envelope("s", "a", "b", "f.py:1", kind, payload)

    assert summarize(env(Kind.DATA, _codec.encode({"k": [1, 2]}))) == "{'k': [1, 2]}"
    long = summarize(env(Kind.DATA, _codec.encode("x\n" * 500)))
    assert len(long) == SUMMARY_LIMIT and long.endswith("...") and "\n" not in long
    assert summarize(env(Kind.DATA, b"\xff\xfe garbage")) == "<10 bytes>"
    assert summarize(env(Kind.SELECT, b"\x01")) == "then"
    assert summarize(env(Kind.SELECT, b"\x00")) == "else"
    assert summarize(env(Kind.ABORT, b"line1\nline2")) == "line1 line2"


GOOD = {
    "session": "s",
    "from": "a",
    "to": "b",
    "label": "f.py:1",
    "kind": "DATA",
    "event": "send",
    "t": 1.5,
    "size": 3,
    "summary": "1",
}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "not a JSON trace record"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "label"}), "missing field 'label'"),
        (json.dumps({**GOOD, "extra": 1}), "unknown field 'extra'"),
        (json.dumps({**GOOD, "size": "3"}), "field 'size' must be int"),
        (json.dumps({**GOOD, "size": True}), "field 'size' must be int"),
        (json.dumps({**GOOD, "t": "now"}), "field 't' must be int or float"),
        (json.dumps({**GOOD, "kind": "DATUM"}), "kind must be one of DATA"),
        (json.dumps({**GOOD, "event": "lost"}), "event must be send or recv"),
        (json.dumps({**GOOD, "size": -1}), "size must be >= 0"),
    ],
)
def test_malformed_lines_are_rejected(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n" + line + "\n")
    with pytest.raises(choreo.UsageError, match=message) as info:
        load_trace(path)
    assert f"{path}:3:" in str(info.value)


def test_a_missing_trace_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(choreo.UsageError, match="cannot read the trace"):
        load_trace(tmp_path / "nope.jsonl")


# -- role processes over gRPC -------------------------------------------------------


def _up(target: str, trace: Path, *inputs: str) -> subprocess.CompletedProcess[str]:
    args = [*CLI, "up", target, "--trace", str(trace), "--quiet", "--timeout", "20"]
    for item in inputs:
        args += ["--input", item]
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_up_traces_ping_pong_processes(tmp_path: Path) -> None:
    trace = tmp_path / "pp.jsonl"
    out = _up("protocols/ping_pong.py:ping_pong", trace)
    assert out.returncode == 0, out.stderr
    records = load_trace(trace)
    assert_well_formed(records)
    assert [r.t for r in records] == sorted(r.t for r in records)  # merged by timestamp
    assert len({r.session for r in records}) == 1 and records[0].session.startswith("up-")
    assert [(r.event, r.sender, r.summary) for r in records if r.kind == "DATA"] == [
        ("send", "alice", "'hello'"),
        ("recv", "alice", "'hello'"),
        ("send", "bob", "'hi'"),
        ("recv", "bob", "'hi'"),
    ]


def test_up_traces_bookseller_processes(tmp_path: Path) -> None:
    trace = tmp_path / "bs.jsonl"
    out = _up(
        "protocols/bookseller.py:two_buyer_bookseller",
        trace,
        "title=TAPL",
        "budget=50",
        "limit=30",
        "catalogue={'TAPL': 80}",
    )
    assert out.returncode == 0, out.stderr
    records = load_trace(trace)
    assert_well_formed(records)
    roles = {r.sender for r in records} | {r.receiver for r in records}
    assert roles == {"buyer1", "buyer2", "seller"}
    assert any(r.kind == "SELECT" and r.summary == "then" for r in records)
    assert any(r.kind == "DATA" and r.summary == "'2023-08-03'" for r in records)


def test_up_writes_the_trace_of_a_failed_run(tmp_path: Path) -> None:
    trace = tmp_path / "fail.jsonl"
    out = _up("tests/e2e/failing.py:bob_fails", trace, "x=7")
    assert out.returncode == 1
    records = load_trace(trace)
    assert any(r.kind == "DATA" and r.event == "recv" and r.receiver == "bob" for r in records)
    assert any(r.kind == "ABORT" and r.sender == "bob" for r in records)


def test_up_in_process_trace(tmp_path: Path) -> None:
    trace = tmp_path / "local.jsonl"
    out = subprocess.run(
        [*CLI, "up", "protocols/ping_pong.py:ping_pong", "--in-process", "--trace", str(trace)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert_well_formed(load_trace(trace))
