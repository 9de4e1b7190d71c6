"""Golden projections: every role of every shipped choreography, diffed, loaded and run.

Regenerate after an intended change with:
    CHOREO_UPDATE_GOLDEN=1 pytest tests/test_golden.py
"""

from __future__ import annotations

import copy
import difflib
import os
from pathlib import Path
from typing import Any

import pytest

import choreo
from choreo._central import central_results
from choreo._dsl import Choreography, load_endpoint
from choreo._loader import choreographies_in, load_file
from tests.conftest import expected_results
from tests.scenarios import ROOT, SCENARIOS, SOURCES

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("CHOREO_UPDATE_GOLDEN") == "1"


def _cases() -> list[tuple[Path, str, str]]:
    out = []
    for path in SOURCES:
        for name, chor in choreographies_in(load_file(path)).items():
            out.extend((path, name, role) for role in chor.parties)
    return out


def _golden_path(path: Path, chor: str, role: str) -> Path:
    return GOLDEN / path.parent.name / path.stem / f"{chor}_{role}.py"


def _load(path: Path, name: str) -> Choreography:
    return choreographies_in(load_file(path))[name]


@pytest.mark.parametrize(
    ("path", "chor", "role"), _cases(), ids=lambda v: v.name if isinstance(v, Path) else v
)
def test_projection_matches_golden(path: Path, chor: str, role: str) -> None:
    actual = _load(path, chor).project(role)
    golden = _golden_path(path, chor, role)
    if UPDATE:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(actual)
    assert golden.exists(), f"no golden file {golden}; run CHOREO_UPDATE_GOLDEN=1 pytest {__file__}"
    expected = golden.read_text()
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(True), actual.splitlines(True), str(golden), "projected"
            )
        )
        pytest.fail(f"projection differs from {golden} (CHOREO_UPDATE_GOLDEN=1 to accept):\n{diff}")


def test_every_source_has_goldens_and_no_stale_ones() -> None:
    wanted = {_golden_path(p, c, r) for p, c, r in _cases()}
    present = set(GOLDEN.rglob("*.py"))
    assert present - wanted == set(), "stale golden files; delete them"


def test_every_choreography_has_a_scenario() -> None:
    names = {(str(p.relative_to(ROOT)), c) for p, c, _ in _cases()}
    assert names <= set(SCENARIOS), f"add inputs to tests/scenarios.py for {names - set(SCENARIOS)}"


def _scenario_cases() -> list[tuple[str, str, dict[str, Any]]]:
    return [(f, c, inputs) for (f, c), runs in SCENARIOS.items() for inputs in runs]


@pytest.mark.parametrize(("file", "name", "inputs"), _scenario_cases())
def test_central_equals_every_projected_role(file: str, name: str, inputs: dict[str, Any]) -> None:
    chor = _load(ROOT / file, name)
    # a copy: a run changes role state in place (a store), which the next run must not see
    assert choreo.run(chor, timeout=5, **copy.deepcopy(inputs)) == _expected(chor, inputs)


@pytest.mark.parametrize(("file", "name", "inputs"), _scenario_cases())
def test_golden_modules_run(
    file: str, name: str, inputs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Load the golden files themselves (not fresh projections) and run them."""
    path = ROOT / file
    everything = choreographies_in(load_file(path))
    for cname, c in everything.items():
        functions = {
            role: load_endpoint(_golden_path(path, cname, role).read_text(), c, role)
            for role in c.parties
        }
        monkeypatch.setattr(c, "_functions", functions)
    chor = everything[name]
    assert choreo.run(chor, timeout=5, **copy.deepcopy(inputs)) == _expected(chor, inputs)


def _expected(chor: Choreography, inputs: dict[str, Any]) -> dict[str, Any]:
    """The central run's result at every role (and member), as ``choreo.run`` returns it."""
    if chor.groups:  # the central interpreter gives every member's result itself
        return central_results(chor, **copy.deepcopy(inputs))
    return expected_results(chor, chor(**copy.deepcopy(inputs)))
