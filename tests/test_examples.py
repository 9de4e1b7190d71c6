"""The examples run as a reader would run them, and agree with each other."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.scenarios import ROOT


def _run(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize(("title", "budget"), [("TAPL", 100), ("TAPL", 10), ("Nope", 100)])
def test_hand_written_bookseller_matches_the_choreography(title: str, budget: int) -> None:
    by_hand = _run("examples/01_bookseller_by_hand.py", title, str(budget)).strip()
    projected = _run("examples/02_bookseller.py", title, str(budget)).splitlines()
    # "buyer: '2023-08-03'" by hand; "projected: {'buyer': '2023-08-03', 'seller': None}"
    buyer = by_hand.removeprefix("buyer: ")
    assert projected[0] == f"central:  {'None' if buyer == 'None' else buyer.strip(chr(39))}"
    assert projected[1] == f"projected: {{'buyer': {buyer}, 'seller': None}}"
