"""Mermaid diagrams of choreographies and traces, checked against Mermaid's grammar.

``validate`` is a small checker of the subset of Mermaid's sequence-diagram
grammar (packages/mermaid/src/diagrams/sequence/parser/sequenceDiagram.jison)
that choreo emits. It follows the lexer's traps: keywords are matched
case-insensitively and before actor names, without word boundaries (an actor
``endpoint`` lexes as ``end``), ``;`` ends a statement and ``#`` starts a
comment unless it is an entity code such as ``#59;``. (@mermaid-js/parser, the
browser-free Mermaid parser on npm, has no sequence-diagram grammar, so there
is no external parser to check against here.)
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import choreo
from choreo._diagram import (
    KEYWORDS,
    choreography_diagram,
    mermaid_text,
    participant_ids,
    trace_diagram,
)
from choreo._ir import Call, For, GSend, If, Send, Stmt, While
from choreo._loader import choreographies_in, load_file
from choreo._trace import TraceRecord, TraceRecorder, load_trace
from tests.scenarios import CATALOGUE, ROOT, SOURCES

CLI = [sys.executable, "-m", "choreo._cli"]

_ID = r"[A-Za-z_][A-Za-z0-9_]*"
_ARROW = r"->>|-->>|->|-->|-x|--x|-\)|--\)"
_PARTICIPANT = re.compile(rf"participant ({_ID})(?: as (.+))?")
_MESSAGE = re.compile(rf"({_ID})({_ARROW})({_ID}): (.+)")
_NOTE = re.compile(rf"Note (?:over ({_ID})(?:,({_ID}))?|(?:left|right) of ({_ID})): (.+)")
_BLOCK = re.compile(r"(alt|loop|opt|critical|break|par)(?: (.*))?")
_RECT = re.compile(r"rect rgba?\(\s*\d+\s*,\s*\d+\s*,\s*\d+\s*(?:,\s*[\d.]+\s*)?\)")
_ENTITY = re.compile(r"#(?:\d+|[A-Za-z]+);")


def _text_problem(text: str) -> str | None:
    """Why ``text`` cannot be a Mermaid message/note/block text, or None."""
    bare = _ENTITY.sub("", text)
    bad = sorted({c for c in bare if c in "#;<>%" or not c.isprintable()})
    if bad:
        return f"forbidden characters {bad} in text {text!r}"
    return None


def validate(diagram: str) -> list[str]:
    """Every way ``diagram`` breaks the grammar (empty when it is valid)."""
    lines = diagram.splitlines()
    if not lines or lines[0] != "sequenceDiagram":
        return ["the first line must be `sequenceDiagram`"]
    problems: list[str] = []
    declared: set[str] = set()
    stack: list[str] = []

    def actor(ident: str, n: int) -> None:
        if ident.lower().startswith(KEYWORDS):
            problems.append(f"line {n}: participant id {ident!r} starts with a Mermaid keyword")
        if ident not in declared:
            problems.append(f"line {n}: participant {ident!r} used before it is declared")

    def text(value: str, n: int, required: bool) -> None:
        if required and not value.strip():
            problems.append(f"line {n}: empty text")
        why = _text_problem(value)
        if why:
            problems.append(f"line {n}: {why}")

    for n, raw in enumerate(lines[1:], 2):
        line = raw.strip()
        if not line or line.startswith("%%"):
            continue
        if m := _PARTICIPANT.fullmatch(line):
            ident, alias = m.groups()
            if ident.lower().startswith(KEYWORDS):
                problems.append(f"line {n}: participant id {ident!r} starts with a keyword")
            if ident in declared:
                problems.append(f"line {n}: participant {ident!r} declared twice")
            if alias is not None:
                text(alias, n, True)
            declared.add(ident)
        elif m := _MESSAGE.fullmatch(line):
            actor(m.group(1), n)
            actor(m.group(3), n)
            text(m.group(4), n, True)
        elif m := _NOTE.fullmatch(line):
            for ident in m.group(1, 2, 3):
                if ident is not None:
                    actor(ident, n)
            text(m.group(4), n, True)
        elif _RECT.fullmatch(line):
            stack.append("rect")
        elif m := _BLOCK.fullmatch(line):
            stack.append(m.group(1))
            text(m.group(2) or "", n, False)
        elif line == "else" or line.startswith("else "):
            if not stack or stack[-1] != "alt":
                problems.append(f"line {n}: `else` outside an `alt` block")
            text(line[4:], n, False)
        elif line == "end":
            if not stack:
                problems.append(f"line {n}: `end` closes no block")
            else:
                stack.pop()
        else:
            problems.append(f"line {n}: not a sequence-diagram statement: {line!r}")
    if stack:
        problems.append(f"unclosed blocks at the end: {stack}")
    return problems


# -- the validator itself can fail ---------------------------------------------------

GOOD = """sequenceDiagram
    participant a
    participant r_end as end
    a->>r_end: x #59; y #lt;= 2
    alt ok @ a
        Note over a,r_end: hi
    else
        loop for i in range(3)
            r_end-->>a: then
        end
    end
    rect rgb(240, 240, 255)
        Note over a: call f(a)
    end
"""


@pytest.mark.parametrize(
    ("diagram", "problem"),
    [
        (GOOD.replace("sequenceDiagram", "graph TD"), "first line"),
        (GOOD.replace("    end\n    rect", "    rect"), "unclosed blocks"),
        (GOOD + "end\n", "closes no block"),
        (GOOD.replace("alt ok @ a", "opt ok @ a"), "`else` outside"),
        (GOOD.replace("a->>r_end", "a->>b"), "'b' used before it is declared"),
        (GOOD.replace("x #59; y", "x ; y"), "forbidden characters [';']"),
        (GOOD.replace("x #59; y", "x # y"), "forbidden characters ['#']"),
        (GOOD.replace("#lt;=", "<="), "forbidden characters ['<']"),
        (GOOD.replace("r_end", "endpoint"), "starts with a"),
        (GOOD.replace(": hi", ": "), "not a sequence-diagram statement"),
        (GOOD.replace("a->>r_end", "a=>r_end"), "not a sequence-diagram statement"),
        (GOOD.replace("participant a\n", "participant a\n    participant a\n"), "twice"),
    ],
)
def test_the_validator_rejects_broken_diagrams(diagram: str, problem: str) -> None:
    assert validate(GOOD) == []
    found = validate(diagram)
    assert any(problem in p for p in found), found


# -- diagrams of every shipped choreography ------------------------------------------


def _all_choreographies() -> list[tuple[str, Any]]:
    out = []
    for path in SOURCES:
        for name, chor in choreographies_in(load_file(path)).items():
            out.append((f"{path.relative_to(ROOT)}:{name}", chor))
    return out


CHOREOGRAPHIES = _all_choreographies()


def _sends(body: tuple[Stmt, ...]) -> int:
    n = 0
    for s in body:
        if isinstance(s, Send | GSend):
            n += len(s.receivers)
        elif isinstance(s, If):
            n += _sends(s.then) + _sends(s.orelse)
        elif isinstance(s, While | For):
            n += _sends(s.body)
    return n


def _calls(body: tuple[Stmt, ...]) -> int:
    n = 0
    for s in body:
        if isinstance(s, Call):
            n += 1
        elif isinstance(s, If):
            n += _calls(s.then) + _calls(s.orelse)
        elif isinstance(s, While | For):
            n += _calls(s.body)
    return n


def test_every_shipped_file_has_a_choreography_to_draw() -> None:
    assert len(CHOREOGRAPHIES) >= 8


@pytest.mark.parametrize(("name", "chor"), CHOREOGRAPHIES, ids=[n for n, _ in CHOREOGRAPHIES])
def test_every_shipped_choreography_draws_a_valid_diagram(name: str, chor: Any) -> None:
    diagram = choreography_diagram(chor)
    assert validate(diagram) == [], diagram
    lines = [ln.strip() for ln in diagram.splitlines()]
    assert [ln.split()[-1] for ln in lines if ln.startswith("participant ")] == list(chor.parties)
    arrows = [ln for ln in lines if _MESSAGE.fullmatch(ln)]
    ir = chor._check()
    assert len(arrows) == _sends(ir.body)
    assert sum(ln.startswith("rect ") for ln in lines) == _calls(ir.body)


def _diagram(file: str, name: str) -> str:
    return choreography_diagram(getattr(load_file(ROOT / file), name))


def _between(diagram: str, start: str, line: str) -> bool:
    """Whether ``line`` is inside the block opened by the line ``start``."""
    lines = [ln.strip() for ln in diagram.splitlines()]
    depth = None
    for ln in lines:
        if depth is None:
            if ln == start:
                depth = 0
            continue
        if ln == line:
            return True
        if ln == "end":
            if depth == 0:
                return False
            depth -= 1
        elif _BLOCK.fullmatch(ln) or _RECT.fullmatch(ln):
            depth += 1
    return False


def test_bookseller_diagram() -> None:
    d = _diagram("protocols/bookseller.py", "bookseller")
    assert d.startswith("sequenceDiagram\n    participant buyer\n    participant seller\n")
    assert "    buyer->>seller: title\n" in d
    assert "Note over seller: price = catalogue.get(t)" in d
    assert "Note over buyer: ok = p is not None and p #lt;= budget" in d
    assert _between(d, "alt ok @ buyer", "seller->>buyer: ship_date(t)")
    assert not _between(d, "alt ok @ buyer", "buyer->>seller: title")


def test_two_buyer_diagram_shows_the_multicast_and_the_call() -> None:
    d = _diagram("protocols/bookseller.py", "two_buyer_bookseller")
    assert "seller->>buyer1: price\n    seller->>buyer2: price\n" in d
    assert _between(
        d,
        "rect rgb(240, 240, 255)",
        "Note over buyer1,buyer2: call ok = split_decision(buyer1, buyer2, p, budget, share)",
    )


def test_ping_pong_n_has_a_loop() -> None:
    d = _diagram("protocols/ping_pong.py", "ping_pong_n")
    assert _between(d, "loop left #gt; 0 @ alice", "alice->>bob: left")
    assert _between(d, "loop left #gt; 0 @ alice", "bob->>alice: pong")
    assert d.rstrip().endswith("Note over alice: return replies")


AWKWARD = """
from choreo import At, Role, choreography

@choreography
def awkward(endpoint: Role, note: Role, x: At[int, "endpoint"]) -> At[int, "note"]:
    with endpoint:
        s = "a;b#c%d<e>"; t = 1
    with note:
        z = 0
    for i in range(2):
        y = endpoint.send((s, i, x % 3), to=[note, endpoint])
        with note:
            z = z + len(y) - 2
    while z > 100:
        with note:
            z = z - 1
    w = note.send(z, to=endpoint)
    v = endpoint.send(w, to=note)
    return v
"""


def test_awkward_roles_and_code_still_draw_a_valid_diagram() -> None:
    chor = choreo.module_from_source(AWKWARD, "diagram_awkward").awkward
    d = choreography_diagram(chor)
    assert validate(d) == [], d
    assert "participant r_endpoint as endpoint\n" in d
    assert "participant r_note as note\n" in d
    assert 'Note over r_endpoint: s = "a#59;b#35;c#37;d#lt;e#gt;"#59; t = 1\n' in d
    assert "loop for i in range(2)" in d
    assert "r_endpoint->>r_endpoint: (s, i, x #37; 3)" in d  # a send to oneself
    assert "loop z #gt; 100 @ note" in d
    assert choreo.run(chor, x=5, timeout=5) == {"endpoint": None, "note": 2}


def test_participant_ids_and_texts() -> None:
    ids = participant_ids(["alice", "end", "Andrew", "workers.0", "workers_0", "r_end", "x"])
    assert ids == {
        "alice": "alice",
        "end": "r_end",
        "Andrew": "r_Andrew",
        "workers.0": "r_workers_0",
        "workers_0": "workers_0",
        "r_end": "r_end_2",
        "x": "x",
    }
    assert mermaid_text("a;b\n#c") == "a#59;b #35;c"
    assert mermaid_text("x" * 100) == "x" * 57 + "..."
    assert mermaid_text("a\x00b\tc") == "a b c"


# -- diagrams of recorded traces ------------------------------------------------------


def test_trace_diagram_of_a_recorded_run() -> None:
    mod = load_file(ROOT / "protocols" / "bookseller.py")
    rec = TraceRecorder()
    choreo.run(mod.bookseller, tracer=rec, title="TAPL", budget=100, catalogue=CATALOGUE)
    d = trace_diagram(rec.records)
    assert validate(d) == [], d
    body = [ln.strip() for ln in d.splitlines()[3:]]
    assert [ln.split(":")[0] for ln in body] == [
        "buyer->>seller",
        "seller->>buyer",
        "buyer-->>seller",
        "seller->>buyer",
    ]
    assert body[0].endswith(" 'TAPL'") and body[2].endswith(" then")
    assert body[3].endswith(" '2023-08-03'")
    assert "rect" not in d  # one session


def test_trace_diagram_of_a_failure_and_of_several_sessions() -> None:
    failing = load_file(ROOT / "tests" / "e2e" / "failing.py")
    pp = load_file(ROOT / "protocols" / "ping_pong.py")
    rec = TraceRecorder()
    with pytest.raises(choreo.RoleFailedError):
        choreo.run(failing.bob_fails, tracer=rec, x=7, timeout=5)
    choreo.run(pp.ping_pong, tracer=rec, timeout=5)
    d = trace_diagram(rec.records)
    assert validate(d) == [], d
    assert "bob-xalice: abort abort: RoleFailedError" in d
    assert d.count("rect rgb(245, 245, 245)") == 2
    assert d.count("Note over alice,bob: session ") == 2


def test_trace_diagram_draws_receives_whose_send_is_missing() -> None:
    rec = TraceRecord("s", "w.0", "end", "f.py:3", "DATA", "recv", 1.0, 2, "'a;b'")
    d = trace_diagram([rec])
    assert validate(d) == [], d
    assert "r_w_0->>r_end: f.py:3 'a#59;b'" in d


# -- the command line -----------------------------------------------------------------


def test_cli_diagram_of_a_choreography_and_of_a_trace(tmp_path: Path) -> None:
    out = subprocess.run(
        [*CLI, "diagram", "protocols/ping_pong.py:ping_pong"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == _diagram("protocols/ping_pong.py", "ping_pong")

    trace = tmp_path / "t.jsonl"
    with TraceRecorder(trace) as rec:
        choreo.run(load_file(ROOT / "protocols" / "ping_pong.py").ping_pong, tracer=rec)
    target = tmp_path / "d.mmd"
    out = subprocess.run(
        [*CLI, "diagram", str(trace), "-o", str(target)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert target.read_text() == trace_diagram(load_trace(trace))
    assert validate(target.read_text()) == []


def test_cli_diagram_of_a_malformed_trace_is_a_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{}\n")
    out = subprocess.run(
        [*CLI, "diagram", str(bad)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    assert f"{bad}:1: missing field" in out.stderr


# -- docs/diagrams.md is generated ----------------------------------------------------


def test_docs_diagrams_page_is_up_to_date() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gen_diagrams
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    page = ROOT / "docs" / "diagrams.md"
    assert page.read_text() == gen_diagrams.render(), (
        "docs/diagrams.md is stale: run `python scripts/gen_diagrams.py`"
    )
    blocks = re.findall(r"```mermaid\n(.*?)```", page.read_text(), re.DOTALL)
    assert len(blocks) == len(CHOREOGRAPHIES)
    for block in blocks:
        assert validate(block) == [], block
