"""The table every benchmark prints: median, min, max, ratio to a baseline of the same run.

A benchmark collects, per row, one value per repetition, the repetitions
interleaved across rows (rep 1 of every row, then rep 2, ...), so that the
machine's noise of the moment hits every row alike. The ratio column is the
median over the repetitions of ``value / baseline value of the same
repetition``: noise that slows both cancels out.

Every script in ``bench/`` prints its tables with :func:`markdown` on stdout
(progress goes to stderr), so that ``bench/all.py`` can paste them into
``docs/benchmarks.md`` as they are.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    """One row of a table.

    Args:
        title: what was measured, as the reader should read it.
        key: the key of its values in the results.
        baseline: the key of the baseline's values (the row itself for the baseline).
        unit: ``us``, ``ms``, ``msg/s``, ...
    """

    title: str
    key: str
    baseline: str
    unit: str


def ratio(values: Sequence[float], baseline: Sequence[float]) -> float:
    """Median of the per-repetition ratios ``values[i] / baseline[i]``.

    Args:
        values: a row's values, one per repetition.
        baseline: the baseline's values, of the same repetitions.

    Returns:
        The median ratio.
    """
    return statistics.median(v / b for v, b in zip(values, baseline, strict=True))


def _fmt(value: float, unit: str) -> str:
    if unit in ("msg/s", "ops/s") or abs(value) >= 10_000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}"


def markdown(rows: Sequence[Row], results: Mapping[str, Sequence[float]]) -> str:
    """A GitHub-flavoured Markdown table of ``rows``.

    Args:
        rows: the rows, in order.
        results: every key's values, one per repetition.

    Returns:
        The table, without a trailing newline.
    """
    width = max(len("measurement"), *(len(r.title) for r in rows))
    out = [
        f"| {'measurement':<{width}} | median | min | max | unit | vs baseline |",
        f"|{'-' * (width + 2)}|-------:|----:|----:|------|------------:|",
    ]
    for r in rows:
        vals = results[r.key]
        out.append(
            f"| {r.title:<{width}} | {_fmt(statistics.median(vals), r.unit)} | "
            f"{_fmt(min(vals), r.unit)} | {_fmt(max(vals), r.unit)} | {r.unit} | "
            f"{ratio(vals, results[r.baseline]):.2f}x |"
        )
    return "\n".join(out)
