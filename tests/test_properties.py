"""Property tests: generated well-formed choreographies project and run like their reference.

For every module drawn from ``tests.strategies.choreographies()``:

- the checker accepts it (a ``CheckError`` on a well-formed program is a bug);
- projecting every role succeeds and is deterministic: two independent loads
  of the same text (different pseudo file names, so no cache is shared) give
  the same endpoint text, and so do two processes with different
  ``PYTHONHASHSEED`` (set iteration order must not leak into the output);
  the endpoint source compiles, and the endpoint of ``main`` for a role binds
  no name that only other roles ever hold (no foreign code is left in it);
- the centralized run (calling the choreography) terminates quickly;
- ``choreo.run`` terminates and every role returns the centralized result where
  the result is located, ``None`` elsewhere (a value every role knows, or no
  return at all, is returned by every role); the checker locates the result
  where the generator says; the run is repeated with the role parameters
  played by rotated role names (``choreo.run(main, a="b", b="c", ...)``);
- the run's trace carries exactly the DATA messages a plain-Python reference
  run (``run_reference``) records, per sender, receiver and source line; no
  message goes to oneself or to a role that takes no part; a selection for an
  ``if``/``while`` of ``main`` only goes to a role that takes part in it.

On failure the generated source is printed verbatim (``note``) above the
falsifying example.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import choreo
from choreo._envelope import Envelope, Kind
from choreo._loader import module_from_source

try:
    from tests.strategies import Program, choreographies, run_reference
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from strategies import Program, choreographies, run_reference  # type: ignore[no-redef]

_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large]
CI = settings(max_examples=300, deadline=None, suppress_health_check=_HEALTH)
SLOW = settings(max_examples=10_000, deadline=None, suppress_health_check=_HEALTH)

RUN_TIMEOUT = 5.0
# True: a role passed to a sub-choreography call in which it does nothing takes
# no part in the call (it needs no selection for an enclosing `if`/`while`; see
# test_no_selection_for_a_role_idle_in_the_callee). False: every role passed
# to a call counts as taking part (the looser rule, to get past a regression).
STRICT_CALL_SELECTIONS = True

# A hang guard, not a speed check: the generator's loops are bounded and a central run
# takes milliseconds; one this long means an unbounded loop (a loaded CI machine once
# took 2.8 s for a normal one, so the bound is far above any noise).
CENTRAL_LIMIT_S = 30.0
ROOT = Path(__file__).resolve().parent.parent


def _note_program(p: Program) -> None:
    note(f"generated source:\n{p.source}")
    where = "every role" if p.result_roles is None else sorted(p.result_roles)
    note(f"inputs: {p.inputs}; result located at: {where}")


def _load(p: Program, name: str = "prop", check: bool = True) -> Any:
    """The main choreography of ``p``; a ``CheckError`` fails with the diagnostics."""
    try:
        main = getattr(module_from_source(p.source, name), p.main_name)
        if check:
            main.check()
    except choreo.CheckError as exc:
        diags = "\n".join(
            d.render() if hasattr(d, "render") else str(d) for d in getattr(exc, "diagnostics", ())
        )
        pytest.fail(
            f"the checker rejected a well-formed program:\n{diags or exc}\n\n{p.source}",
            pytrace=False,
        )
    return main


def _central(main: Any, p: Program) -> Any:
    start = time.perf_counter()
    result = main(**p.inputs)
    elapsed = time.perf_counter() - start
    assert elapsed < CENTRAL_LIMIT_S, f"central run took {elapsed:.2f}s"
    return result


def _normalised(main: Any, text: str) -> str:
    """Endpoint text with what legitimately differs between two loads blanked out."""
    return text.replace(main.file.rsplit("/", 1)[-1], "<FILE>").replace(main.hash, "<HASH>")


def check_projection(p: Program) -> Any:
    """Project every role from two independent loads; returns the first load's main."""
    main = _load(p, "prop")
    again = _load(p, "prop_again")
    for role in p.roles:
        text = main.project(role)
        assert isinstance(text, str)
        assert main.project(role) == text
        assert _normalised(again, again.project(role)) == _normalised(main, text), (
            f"projection of {role} is not deterministic"
        )
        compile(text, f"<endpoint {role}>", "exec", dont_inherit=True)
        check_no_foreign_code(p, role, text)
    return main


def check_no_foreign_code(p: Program, role: str, text: str) -> None:
    """``role``'s endpoint for ``main`` binds none of the names only other roles ever hold."""
    tree = ast.parse(text)
    fns = [f for f in tree.body if isinstance(f, ast.AsyncFunctionDef)]
    assert fns, f"no endpoint function for {role}:\n{text}"
    for node in ast.walk(fns[0]):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            held = p.holders.get(node.id, None)
            assert held is None or role in held, (
                f"the endpoint of {role} binds `{node.id}` (line {node.lineno}), "
                f"which only {sorted(held)} hold:\n{text}"
            )


def _line(label: str) -> int:
    return int(label.rsplit(":", 1)[1])


def check_run(p: Program, main: Any, rotate: int = 0) -> None:
    """Run ``p`` projected; with ``rotate``, role parameter i is played by role name i+rotate.

    (``choreo.run(main, a="b", b="a")``: the names of the processes are not the
    names of the parameters, which catches endpoints that confuse the two.)
    """
    central = _central(main, p)
    note(f"central result: {central!r}")
    names = {r: p.roles[(i + rotate) % len(p.roles)] for i, r in enumerate(p.roles)}
    param = {v: k for k, v in names.items()}
    played = {r: n for r, n in names.items() if r != n}
    if played:
        note(f"roles played by: {played}")
    trace: list[Envelope] = []
    results = choreo.run(main, timeout=RUN_TIMEOUT, trace=trace.append, **played, **p.inputs)
    note(f"projected results: {results!r}")
    for e in trace:
        e.sender, e.receiver = param[e.sender], param[e.receiver]
    note(
        "messages: " + ", ".join(f"{e.sender}->{e.receiver} {e.kind.name} {e.label}" for e in trace)
    )
    assert results == {names[r]: v for r, v in p.expected(central).items()}
    located = main.result_roles()
    assert (None if located is None else frozenset(located)) == p.result_roles

    # exactly the values the reference run moved were sent, from the lines that send them
    ref = run_reference(p.source, p.inputs)
    assert ref.result == central
    data = Counter((e.sender, e.receiver, _line(e.label)) for e in trace if e.kind == Kind.DATA)
    assert data == ref.messages, "DATA messages differ from the sends the reference run made"
    # a send to oneself moves nothing; a role that takes no part is never messaged
    for e in trace:
        assert e.sender != e.receiver, f"message to oneself: {e}"
        assert e.sender not in p.idle_roles and e.receiver not in p.idle_roles, (
            f"a role that takes no part is messaged: {e}"
        )
    assert not set(main.active_roles()) & p.idle_roles
    # knowledge of choice goes only to roles that take part in the `if`/`while`
    choices = p.choices if STRICT_CALL_SELECTIONS else p.choices_calls_all
    for e in trace:
        if e.kind == Kind.SELECT and _line(e.label) in choices:
            assert e.receiver in choices[_line(e.label)], (
                f"selection sent to {e.receiver}, which takes no part in line {_line(e.label)}"
            )


# -- CI (300 examples each) --------------------------------------------------


@CI
@given(choreographies())
def test_central_run_terminates(p: Program) -> None:
    _note_program(p)
    result = _central(_load(p, check=False), p)
    assert result is None or type(result) is int


@CI
@given(choreographies(), st.integers(0, 4))
def test_projection_is_deterministic_and_the_run_matches_the_central_run(
    p: Program, rotate: int
) -> None:
    _note_program(p)
    check_run(p, check_projection(p), rotate)


def test_no_selection_for_a_role_idle_in_the_callee() -> None:
    # found by the property with STRICT_CALL_SELECTIONS = True, minimised by hand
    # (the role `a` got a selection for the `if` and was counted as active)
    source = (
        "from choreo import At, Role, choreography\n"
        "\n"
        "\n"
        "@choreography\n"
        'def sub_0(x: Role, y: Role) -> At[int, "y"]:\n'
        "    with y:\n"
        "        r = 0\n"
        "    return r\n"
        "\n"
        "\n"
        "@choreography\n"
        'def main(a: Role, b: Role, in_b: At[int, "b"]):\n'
        "    if in_b > 0:\n"
        "        v = sub_0(a, b)\n"
        "    return 0\n"
    )
    main = module_from_source(source, "idle_in_callee").main
    trace: list[Envelope] = []
    assert choreo.run(main, timeout=RUN_TIMEOUT, trace=trace.append, in_b=5) == {"a": 0, "b": 0}
    # `a` does nothing in sub_0 (its endpoint is `return None`): it needs no selection
    assert [(e.sender, e.receiver, e.kind) for e in trace] == []
    assert main.active_roles() == ("b",)


# -- projection across processes with different hash seeds ----------------------

_PROJECT_ALL = """
import json, sys
from choreo._loader import module_from_source
out = []
for i, (source, roles) in enumerate(json.load(sys.stdin)):
    main = module_from_source(source, "seeded").main
    name, digest = main.file.rsplit("/", 1)[-1], main.hash
    out.append({r: main.project(r).replace(name, "<FILE>").replace(digest, "<HASH>")
                for r in roles})
json.dump(out, sys.stdout)
"""


def _sample(n: int) -> list[Program]:
    out: list[Program] = []

    @settings(
        max_examples=n,
        database=None,
        derandomize=True,
        deadline=None,
        suppress_health_check=_HEALTH,
    )
    @given(choreographies())
    def collect(p: Program) -> None:
        out.append(p)

    collect()
    return out


def _project_in_subprocess(programs: list[Program], seed: str) -> list[dict[str, str]]:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    proc = subprocess.run(
        [sys.executable, "-c", _PROJECT_ALL],
        input=json.dumps([(p.source, p.roles) for p in programs]),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: list[dict[str, str]] = json.loads(proc.stdout)
    return result


def check_hash_seed_independence(n: int) -> None:
    programs = _sample(n)
    first = _project_in_subprocess(programs, "1")
    second = _project_in_subprocess(programs, "2")
    for p, a, b in zip(programs, first, second, strict=True):
        for role in p.roles:
            assert a[role] == b[role], (
                f"projection of {role} depends on PYTHONHASHSEED:\n{p.source}\n"
                f"--- seed 1:\n{a[role]}\n--- seed 2:\n{b[role]}"
            )


def test_projection_does_not_depend_on_the_hash_seed() -> None:
    check_hash_seed_independence(40)


# -- long runs (pytest -m slow) ------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(0)
@SLOW
@given(choreographies(), st.integers(0, 4))
def test_projection_is_deterministic_and_the_run_matches_the_central_run_slow(
    p: Program, rotate: int
) -> None:
    _note_program(p)
    check_run(p, check_projection(p), rotate)


@pytest.mark.slow
@pytest.mark.timeout(0)
def test_projection_does_not_depend_on_the_hash_seed_slow() -> None:
    check_hash_seed_independence(1000)
