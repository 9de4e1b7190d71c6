"""The benchmark driver and table: what ``bench/all.py`` writes, and that the scripts still run.

No timing is asserted: the scripts run with ``--quick`` (tiny counts) and only
their output's shape is checked.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import all as driver  # noqa: E402
from bench._table import Row, markdown, ratio  # noqa: E402


def test_the_ratio_is_the_median_of_the_ratios_of_the_same_repetitions() -> None:
    # the median of the rows' medians would be 3/2.5; repetition by repetition it is 1.5
    assert ratio([2.0, 4.0, 3.0], [1.0, 4.0, 2.0]) == 1.5
    with pytest.raises(ValueError):
        ratio([1.0, 2.0], [1.0])


def test_a_table_has_one_line_per_row_with_median_min_max_and_ratio() -> None:
    rows = [Row("base", "b", "b", "us"), Row("mine", "m", "b", "us")]
    lines = markdown(rows, {"b": [10.0, 20.0, 30.0], "m": [30.0, 40.0, 45.0]}).splitlines()
    assert len(lines) == 4
    cells = [c.strip() for c in lines[3].strip("|").split("|")]
    assert cells == ["mine", "40.0", "30.0", "45.0", "us", "2.00x"]
    assert [c.strip() for c in lines[2].strip("|").split("|")][-1] == "1.00x"


def test_splice_replaces_sections_keeps_the_prose_and_appends_new_ones() -> None:
    page = (
        "# Benchmarks\n\nWhy we measure.\n\n"
        "<!-- bench:transport -->\nold table\n<!-- /bench:transport -->\n\n"
        "What the profile says.\n\n<!-- bench:sim -->\nold sim\n<!-- /bench:sim -->\n"
    )
    new = driver.splice(page, {"transport": "new table", "protocols": "pb table"})
    assert "old table" not in new and "new table" in new
    assert "Why we measure." in new and "What the profile says." in new
    assert "old sim" in new  # not re-run: left as it was
    assert new.index("new table") < new.index("What the profile says.")
    assert new.rstrip().endswith("<!-- bench:protocols -->\npb table\n<!-- /bench:protocols -->")
    assert driver.splice(new, {"transport": "new table"}) == new  # idempotent


def test_a_failing_benchmark_makes_the_command_fail_but_the_others_are_written(
    tmp_path: Path,
) -> None:
    out = tmp_path / "b.md"

    def fake(bench: driver.Bench, quick: bool) -> tuple[bool, str]:
        assert quick
        if bench.name == "tcp":
            return False, "`python bench/tcp.py --quick` failed (exit 3)."
        return True, f"| {bench.name} | table |"

    code = driver.main(["--quick", "--only", "projection,tcp", "--out", str(out)], run=fake)
    assert code == 1
    page = out.read_text()
    assert "| projection | table |" in page and "failed (exit 3)" in page
    assert "<!-- bench:machine -->" in page and "transport" not in page


def test_an_unknown_benchmark_name_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        driver.main(["--only", "nope"])
    assert exc.value.code == 2
    assert "unknown benchmark nope" in capsys.readouterr().err


def test_the_benchmarks_page_has_every_section_the_driver_writes() -> None:
    page = (ROOT / "docs" / "benchmarks.md").read_text()
    for name in ["machine", *(b.name for b in driver.BENCHES)]:
        assert f"<!-- bench:{name} -->" in page, name
        assert f"<!-- /bench:{name} -->" in page, name


@pytest.mark.timeout(600)
@pytest.mark.parametrize("bench", driver.BENCHES, ids=lambda b: b.name)
def test_every_benchmark_runs_quick_and_prints_a_table(bench: driver.Bench) -> None:
    if bench.needs is not None and not driver._has(bench.needs):
        ok, text = driver.run_one(bench, quick=True)
        assert ok and "is not installed" in text
        return
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / bench.script), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = [ln for ln in done.stdout.splitlines() if ln.startswith("|")]
    assert len(table) >= 3, done.stdout  # a header, its rule, at least one row
    widths = {ln.count("|") for ln in table}
    assert len(widths) == 1, table  # every line of the table has the same columns
