"""Must-fail cases: every file in tests/mustfail/ breaks a rule of the language.

Each offending line carries its expected error inline, as a trailing comment::

    y = x + 1  # error: `x` is located at alice

(several ``# error:`` markers may share one line). A case passes when the
diagnostics of every choreography in the file match the markers exactly:
every marker has a diagnostic on its line whose message contains the
marker's text, and every diagnostic is claimed by a marker on its own line
(so a cascade of follow-on errors, or an error on the wrong line, fails).
"""

from __future__ import annotations

import io
import re
import tokenize
from collections import defaultdict
from pathlib import Path

import pytest

from choreo._cli import main as cli_main
from choreo._errors import CheckError
from choreo._loader import choreographies_in, load_file
from choreo._source import Diagnostic

MUSTFAIL = Path(__file__).resolve().parent / "mustfail"
ERRORS_DOC = Path(__file__).resolve().parent.parent / "docs" / "errors.md"
# module names are the file stems (load_file); the mf_ prefix keeps them unique
CASES = sorted(MUSTFAIL.glob("mf_*.py"))
MARKER = re.compile(r"#\s*error:\s*")


def parse_markers(source: str) -> dict[int, list[str]]:
    """``{line: [expected message substrings]}`` from the ``# error:`` comments of ``source``.

    Only real comments count (not text inside strings); a marker ends at the
    next ``  #`` so that other comments may follow it.
    """
    out: dict[int, list[str]] = defaultdict(list)
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type != tokenize.COMMENT:
            continue
        for part in MARKER.split(tok.string)[1:]:
            text = part.split("  #", 1)[0].strip()
            assert text, f"line {tok.start[0]}: empty `# error:` marker"
            out[tok.start[0]].append(text)
    return dict(out)


def markers(path: Path) -> dict[int, list[str]]:
    return parse_markers(path.read_text())


def diagnostics(path: Path) -> list[Diagnostic]:
    """Every diagnostic of every choreography defined in ``path`` (each one once)."""
    mod = load_file(path)
    chors = choreographies_in(mod)
    assert chors, f"{path.name} defines no choreography"
    found: dict[tuple[str, int, int, str], Diagnostic] = {}
    for chor in chors.values():
        try:
            chor.check()
        except CheckError as exc:
            for d in exc.diagnostics:
                found.setdefault((d.span.file, d.span.line, d.span.col, d.message), d)
    return list(found.values())


def mismatches(expected: dict[int, list[str]], got: list[Diagnostic]) -> list[str]:
    by_line: dict[int, list[str]] = defaultdict(list)
    for d in got:
        by_line[d.span.line].append(d.message)
    problems = []
    for line, subs in sorted(expected.items()):
        for sub in subs:
            if not any(sub in msg for msg in by_line.get(line, [])):
                problems.append(
                    f"line {line}: expected an error containing {sub!r}, "
                    f"got {by_line.get(line) or 'none'}"
                )
    for line, msgs in sorted(by_line.items()):
        for msg in msgs:
            if not any(sub in msg for sub in expected.get(line, [])):
                problems.append(f"line {line}: unexpected error {msg!r}")
    return problems


def test_enough_cases() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_expected_errors(path: Path) -> None:
    expected = markers(path)
    assert expected, f"{path.name} has no `# error:` marker"
    got = diagnostics(path)
    problems = mismatches(expected, got)
    assert not problems, "\n".join(
        [f"{path.name}:", *problems, "", "diagnostics:", *(d.render() for d in got)]
    )


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_rendering(path: Path) -> None:
    lines = path.read_text().splitlines()
    for d in diagnostics(path):
        assert d.span.file == str(path)
        text = d.render().splitlines()
        assert text[0].startswith(f"{path}:{d.span.line}:{d.span.col + 1}: error: "), text[0]
        assert text[1] == "    " + lines[d.span.line - 1], "the source line follows the header"
        assert re.fullmatch(r" *\^~*", text[2]), f"no caret line under:\n{d.render()}"
        assert text[2].index("^") == 4 + d.span.col, "the caret points at the column"


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_only_check_errors(path: Path) -> None:
    """No case crashes the front end or the checker: every failure is a CheckError."""
    mod = load_file(path)
    failed = 0
    for chor in choreographies_in(mod).values():
        try:
            chor.check()
        except CheckError:
            failed += 1
        # anything else (ChoreoInternalError, a traceback from the checker) fails the test
    assert failed, f"no choreography in {path.name} failed to check"


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_cli_check(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`choreo check FILE` exits 1 and prints each error once, at every marked line."""
    assert cli_main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err, err
    for line in markers(path):
        assert f"{path}:{line}:" in err, f"nothing reported at line {line}:\n{err}"
    headers = [h for h in err.splitlines() if h.startswith(f"{path}:") and ": error: " in h]
    assert len(headers) == len(set(headers)), f"an error is printed twice:\n{err}"


def doc_examples() -> list[pytest.ParameterSet]:
    """``(code, expected output)`` for every example of docs/errors.md, named by its heading."""
    found = re.findall(
        r"^### (.*?)\n\n<!-- error example -->\n```python\n(.*?)```\n\n```text\n(.*?)```",
        ERRORS_DOC.read_text(),
        re.S | re.M,
    )
    assert len(found) >= 40
    return [
        pytest.param(code, text, id=re.sub(r"\W+", "_", title).strip("_")[:60])
        for title, code, text in found
    ]


@pytest.mark.parametrize(("code", "expected"), doc_examples())
def test_errors_doc(
    code: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each example of the error catalogue prints exactly what the catalogue shows."""
    example = tmp_path / "example.py"
    example.write_text(code)
    assert cli_main(["check", str(example)]) == 1
    err = capsys.readouterr().err.replace(f"{tmp_path}/", "")
    printed = "\n".join(line for line in err.splitlines() if not line.endswith(" in example.py"))
    assert printed.rstrip() == expected.rstrip()


def test_markers_are_parsed() -> None:
    src = 'x = 1  # noqa: E1  # error: `a` is bad  # error: b  # why\ns = "# error: no"\n'
    assert parse_markers(src) == {1: ["`a` is bad", "b"]}
