"""The examples run as a reader would run them, and print what they should.

Each example is run with a command its own docstring documents (the test
checks that the docstring still shows that command, word for word), from the
repository's root, with this venv's ``python`` and ``choreo``; its output is
compared with what the protocol must compute. ``test_every_example_is_run``
fails when an example has no test here.
"""

from __future__ import annotations

import ast
import os
import re
import select
import signal
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from choreo._process import free_ports
from tests.scenarios import ROOT

EXAMPLES = ROOT / "examples"


def documented(example: str) -> list[str]:
    """The commands the docstring of ``examples/<example>`` shows (continuations joined)."""
    doc = ast.get_docstring(ast.parse((EXAMPLES / example).read_text())) or ""
    doc = re.sub(r"\s*\\\n\s*", " ", doc)
    found = []
    for line in doc.splitlines():
        quoted = re.findall(r"``((?:python|choreo) [^`]*examples/[^`]*)``", line)
        if quoted:
            found += quoted
        elif re.match(r"\s*(python|choreo) .*examples/", line):
            found.append(line.strip())
    return [" ".join(command.split()) for command in found]


def run(example: str, command: str, cwd: Path = ROOT) -> str:
    """Run a documented ``command`` of ``example``; its stdout (it must exit 0)."""
    assert command in documented(example), f"examples/{example} no longer documents `{command}`"
    out = subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, f"`{command}` exited with {out.returncode}:\n{out.stderr}"
    return out.stdout


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


# -- 1 and 2: the bookseller, by hand and as a choreography ----------------------------


def test_bookseller_by_hand() -> None:
    out = run("01_bookseller_by_hand.py", "python examples/01_bookseller_by_hand.py TAPL 100")
    assert out == "buyer: '2023-08-03'\n"


def test_bookseller_choreography_central_and_projected() -> None:
    out = run("02_bookseller.py", "python examples/02_bookseller.py TAPL 100")
    assert out == "central:  2023-08-03\nprojected: {'buyer': '2023-08-03', 'seller': None}\n"


def test_bookseller_choreography_as_processes() -> None:
    out = run(
        "02_bookseller.py",
        "choreo up examples/02_bookseller.py:bookseller --input title=TAPL --input budget=100",
    )
    assert out == "buyer: '2023-08-03'\nseller: None\n"


def _python(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize(("title", "budget"), [("TAPL", 100), ("TAPL", 10), ("Nope", 100)])
def test_hand_written_bookseller_matches_the_choreography(title: str, budget: int) -> None:
    by_hand = _python("examples/01_bookseller_by_hand.py", title, str(budget)).strip()
    projected = _python("examples/02_bookseller.py", title, str(budget)).splitlines()
    # "buyer: '2023-08-03'" by hand; "projected: {'buyer': '2023-08-03', 'seller': None}"
    buyer = by_hand.removeprefix("buyer: ")
    assert projected[0] == f"central:  {'None' if buyer == 'None' else buyer.strip(chr(39))}"
    assert projected[1] == f"projected: {{'buyer': {buyer}, 'seller': None}}"


# -- 3: Karatsuba -----------------------------------------------------------------------


def test_karatsuba_as_processes() -> None:
    out = run(
        "03_karatsuba.py",
        "choreo up examples/03_karatsuba.py:karatsuba --input x=1234567 --input y=7654321",
    )
    assert out == f"a: {1234567 * 7654321}\nb: None\nc: None\n"


# -- 4: the key-value store in service mode ---------------------------------------------


@pytest.fixture
def kv_servers(tmp_path: Path) -> Iterator[Path]:
    """The docstring's kv.toml (on free ports) and its two `choreo serve` commands, running.

    The commands run in ``tmp_path``, where ``examples`` links to the repository's.
    """
    example = "04_kv_service.py"
    doc = ast.get_docstring(ast.parse((EXAMPLES / example).read_text())) or ""
    m = re.search(r"^( +)\[roles\]\n(?:\1\w+ = \".*\"\n)+", doc, re.M)
    assert m, "the docstring no longer shows kv.toml"
    cluster = textwrap.dedent(m.group(0))
    roles = tomllib.loads(cluster)["roles"]
    assert set(roles) == {"primary", "backup"}
    for address, port in zip(roles.values(), free_ports(len(roles)), strict=True):
        cluster = cluster.replace(address, f"127.0.0.1:{port}")
    (tmp_path / "kv.toml").write_text(cluster)
    (tmp_path / "examples").symlink_to(EXAMPLES)
    commands = [c for c in documented(example) if c.startswith("choreo serve")]
    assert len(commands) == 2
    servers = [
        subprocess.Popen(
            ["bash", "-c", f"exec {command}"],
            cwd=tmp_path,
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for command in commands
    ]
    try:
        for p in servers:  # each logs "choreo: <role> serving put, get on <address>"
            assert p.stderr is not None
            ready, _, _ = select.select([p.stderr], [], [], 60)
            assert ready, "a server did not start"
            line = p.stderr.readline().decode()
            assert " serving " in line, line
        yield tmp_path
    finally:
        for p in servers:
            p.send_signal(signal.SIGTERM)
        for p in servers:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            assert p.stderr is not None
            p.stderr.close()


def test_kv_service_client_against_served_roles(kv_servers: Path) -> None:
    out = run("04_kv_service.py", "python examples/04_kv_service.py kv.toml", cwd=kv_servers)
    # a put acknowledged by the client, then a get that sees it
    assert (
        out == "{'client': True, 'primary': None, 'backup': None}\n{'client': 1, 'primary': None}\n"
    )


# -- 5 to 7: groups of roles ----------------------------------------------------------


def test_kv_with_a_group_of_backups() -> None:
    out = run("05_kv_backups.py", "python examples/05_kv_backups.py 3")
    assert out.splitlines() == [
        "put x=1: OK",
        "put y=2: OK",
        "put x=3: OK",
        "get x: 3",
        "primary: {'x': 3, 'y': 2}",
        *(f"backups.{i}: {{'x': 3, 'y': 2}}" for i in range(3)),  # every backup has every put
    ]


def test_fan_out_fan_in_sum() -> None:
    out = run("06_fan_sum.py", "python examples/06_fan_sum.py 4 1 2 3 4 5 6 7 8 9 10")
    assert out == f"central: {sum(range(1, 11))}\nprojected: {sum(range(1, 11))}\n"


def test_majority_vote() -> None:
    out = run("07_majority_vote.py", "python examples/07_majority_vote.py yes no yes")
    # two of three voted yes: every voter acts on the same decision
    assert out == "voters.0: accepted\nvoters.1: accepted\nvoters.2: accepted\n"


def test_every_example_is_run() -> None:
    examples = {p.name for p in EXAMPLES.glob("*.py")}
    tested = set(re.findall(r'\brun\(\s*"(\w+\.py)"', Path(__file__).read_text()))
    assert examples <= tested, f"examples without a test in {__file__}: {sorted(examples - tested)}"
