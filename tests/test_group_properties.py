"""Property tests for groups of roles: generated group choreographies run like their model.

For every module drawn from ``tests.strategies.group_choreographies()`` (1..2
groups beside 1..4 roles, every group construct of DESIGN.md section 2) and
every run drawn for it by ``group_runs`` (each group's census 1..7, given as a
size or as a list of member names; inputs located at a group given as one
value or per member; role parameters played by rotated role names):

- the checker accepts it (a ``CheckError`` on a well-formed program is a bug);
- projecting every role and group succeeds and is deterministic: two
  independent loads of the same text give the same endpoint text, and so do
  two processes with different ``PYTHONHASHSEED``; the endpoint source
  compiles and binds no name that only other roles or groups ever hold;
- the central run (``choreo._central.central_results``) terminates quickly and
  equals the generator's own model (``run_model``: the generated statements
  run by a small evaluator that shares nothing with choreo); calling the
  choreography (``main(...)``) returns the central result where it is located;
- ``choreo.run`` (every role and member projected, in-process) returns exactly
  the central results; the checker locates the result where the generator says;
- the run's trace carries exactly the DATA messages the model moves, per
  sender, receiver and source line (every member of a quorum gather sends,
  heard or not); no message goes to oneself or to a role that takes no part;
  a selection for an ``if``/``while`` of ``main`` only goes to a role or to the
  members of a group that takes part in it.

Quorum gathers: the projected run may hear other members than the central run
(which hears the first ``k`` in census order), so the generator only uses the
size of what a quorum gather returns, or its values when every member sent the
same value (``test_strategies_selfcheck`` checks that the model's results do not
depend on which members are heard).

Constructs that once exposed choreo bugs are generated (``Options.empty_receivers``,
``empty_majority``, ``faceted_deciders``, all on): a gather to a slice that may be
empty, ``quorum=majority`` over a slice that may be empty, a condition at a role
on a value some members of a group hold too. A send from a member (or role) to a
group it belongs to delivers to itself locally, and the trace shows that
envelope (``GROUP_SELF_MESSAGES``): the model counts those messages too, and only
they may go to oneself.
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
from choreo._central import central_results
from choreo._envelope import Envelope, Kind
from choreo._loader import module_from_source

try:
    from tests.strategies import GroupRun, Program, group_choreographies, group_runs, run_model
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from strategies import (  # type: ignore[no-redef]
        GroupRun,
        Program,
        group_choreographies,
        group_runs,
        run_model,
    )

_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large]
# the same example counts as the core properties (tests/test_properties.py)
CI = settings(max_examples=300, deadline=None, suppress_health_check=_HEALTH)
SLOW = settings(max_examples=10_000, deadline=None, suppress_health_check=_HEALTH)

RUN_TIMEOUT = 5.0
# A hang guard, not a speed check: the generator's loops are bounded and a central run
# takes milliseconds; one this long means an unbounded loop (a loaded CI machine once
# took 2.8 s for a normal one, so the bound is far above any noise).
CENTRAL_LIMIT_S = 30.0
# True while choreo sends a message from a sender of a group send to itself when it is
# also a receiver (/tmp/group_bugs/04_group_send_messages_oneself.py): the model counts
# them too, so the messages still must match exactly. False once a send to oneself
# moves nothing in group sends as in role sends.
GROUP_SELF_MESSAGES = True
ROOT = Path(__file__).resolve().parent.parent


def _note(p: Program, run: GroupRun | None = None) -> None:
    note(f"generated source:\n{p.source}")
    where = "every role" if p.result_roles is None else sorted(p.result_roles)
    note(f"result located at: {where}")
    if run is not None:
        note(f"run: {run.kwargs()}")


def _load(p: Program, name: str) -> Any:
    """The main choreography of ``p``; a ``CheckError`` fails with the diagnostics."""
    try:
        main = getattr(module_from_source(p.source, name), p.main_name)
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


def _normalised(main: Any, text: str) -> str:
    return text.replace(main.file.rsplit("/", 1)[-1], "<FILE>").replace(main.hash, "<HASH>")


def check_projection(p: Program) -> Any:
    """Project every role and group from two independent loads; returns the first's main."""
    main = _load(p, "gprop")
    again = _load(p, "gprop_again")
    assert list(main.parties) == p.parties
    for party in p.parties:
        text = main.project(party)
        assert main.project(party) == text
        assert _normalised(again, again.project(party)) == _normalised(main, text), (
            f"projection of {party} is not deterministic"
        )
        compile(text, f"<endpoint {party}>", "exec", dont_inherit=True)
        check_no_foreign_code(p, party, text)
    return main


def check_no_foreign_code(p: Program, party: str, text: str) -> None:
    """``party``'s endpoint binds none of the names only other parties ever hold."""
    tree = ast.parse(text)
    fns = [f for f in tree.body if isinstance(f, ast.AsyncFunctionDef)]
    assert fns, f"no endpoint function for {party}:\n{text}"
    for node in ast.walk(fns[0]):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            held = p.holders.get(node.id, None)
            assert held is None or party in held, (
                f"the endpoint of {party} binds `{node.id}` (line {node.lineno}), "
                f"which only {sorted(held)} hold:\n{text}"
            )


def _line(label: str) -> int:
    return int(label.rsplit(":", 1)[1])


def _central(main: Any, run: GroupRun) -> dict[str, Any]:
    start = time.perf_counter()
    results = central_results(main, **run.kwargs())
    elapsed = time.perf_counter() - start
    assert elapsed < CENTRAL_LIMIT_S, f"central run took {elapsed:.2f}s"
    return results


def check_run(p: Program, main: Any, run: GroupRun) -> None:
    """Model == central == projected, messages as the model moves them."""
    model = run_model(p, run.members, run.inputs, run.names, self_messages=GROUP_SELF_MESSAGES)
    note(f"model results: {model.results!r}")
    central = _central(main, run)
    note(f"central results: {central!r}")
    assert central == model.results, "the central run differs from the model"

    # calling the choreography returns the central result where it is located
    called = main(**run.kwargs())
    names = {r: run.names.get(r, r) for r in p.roles}
    if p.result_roles is None:
        first = names[p.roles[0]]
        assert called == central[first]
    else:
        party = next(x for x in p.parties if x in p.result_roles)
        if party in names:
            assert called == central[names[party]]
        else:
            assert called == {m: central[m] for m in run.members[party]}

    trace: list[Envelope] = []
    results = choreo.run(main, timeout=RUN_TIMEOUT, trace=trace.append, **run.kwargs())
    note(f"projected results: {results!r}")
    note(
        "messages: " + ", ".join(f"{e.sender}->{e.receiver} {e.kind.name} {e.label}" for e in trace)
    )
    assert results == central, "the projected run differs from the central run"
    located = main.result_roles()
    assert (None if located is None else frozenset(located)) == p.result_roles

    data = Counter((e.sender, e.receiver, _line(e.label)) for e in trace if e.kind == Kind.DATA)
    assert data == model.messages, "DATA messages differ from the sends of the model"
    party_of = {n: r for r, n in names.items()}
    for g, ms in run.members.items():
        party_of.update(dict.fromkeys(ms, g))
    idle = {names[r] for r in p.idle_roles}
    for e in trace:
        if not (GROUP_SELF_MESSAGES and e.kind == Kind.DATA):
            assert e.sender != e.receiver, f"message to oneself: {e}"
        assert e.sender not in idle and e.receiver not in idle, (
            f"a role that takes no part is messaged: {e}"
        )
    assert not set(main.active_roles()) & p.idle_roles
    for e in trace:
        if e.kind == Kind.SELECT and _line(e.label) in p.choices:
            assert party_of[e.receiver] in p.choices[_line(e.label)], (
                f"selection sent to {e.receiver}, which takes no part in line {_line(e.label)}"
            )


# -- CI (300 examples, as the core properties) -------------------------------------


@CI
@given(group_choreographies(), st.data())
def test_group_projection_is_deterministic_and_runs_match_the_central_run_and_the_model(
    p: Program, data: st.DataObject
) -> None:
    _note(p)
    main = check_projection(p)
    run = data.draw(group_runs(p), label="run")
    _note(p, run)
    check_run(p, main, run)


# -- projection across processes with different hash seeds ----------------------

_PROJECT_ALL = """
import json, sys
from choreo._loader import module_from_source
out = []
for i, (source, parties) in enumerate(json.load(sys.stdin)):
    main = module_from_source(source, "gseeded").main
    name, digest = main.file.rsplit("/", 1)[-1], main.hash
    out.append({r: main.project(r).replace(name, "<FILE>").replace(digest, "<HASH>")
                for r in parties})
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
    @given(group_choreographies())
    def collect(p: Program) -> None:
        out.append(p)

    collect()
    return out


def _project_in_subprocess(programs: list[Program], seed: str) -> list[dict[str, str]]:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    proc = subprocess.run(
        [sys.executable, "-c", _PROJECT_ALL],
        input=json.dumps([(p.source, p.parties) for p in programs]),
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
        for party in p.parties:
            assert a[party] == b[party], (
                f"projection of {party} depends on PYTHONHASHSEED:\n{p.source}\n"
                f"--- seed 1:\n{a[party]}\n--- seed 2:\n{b[party]}"
            )


def test_group_projection_does_not_depend_on_the_hash_seed() -> None:
    check_hash_seed_independence(40)


# -- long runs (pytest -m slow) ------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(0)
@SLOW
@given(group_choreographies(), st.data())
def test_group_projection_is_deterministic_and_runs_match_the_central_run_and_the_model_slow(
    p: Program, data: st.DataObject
) -> None:
    _note(p)
    main = check_projection(p)
    run = data.draw(group_runs(p), label="run")
    _note(p, run)
    check_run(p, main, run)


@pytest.mark.slow
@pytest.mark.timeout(0)
def test_group_projection_does_not_depend_on_the_hash_seed_slow() -> None:
    check_hash_seed_independence(1000)
