"""Which event loop choreo's processes run on: ``choreo._loop`` and the CLI commands using it.

uvloop is in the ``dev`` extra, so these tests normally see it installed; the
"not installed" cases hide it by making its import fail.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from pathlib import Path

import pytest

from choreo import _loop
from choreo._cli import main
from choreo._cluster import Cluster, write_cluster
from choreo._errors import UsageError
from tests.scenarios import ROOT


async def loop_module() -> str:
    """The module of the running loop's class (``uvloop`` or ``asyncio.unix_events``)."""
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


@pytest.fixture
def no_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` raises ImportError


@pytest.mark.parametrize("setting", [None, "", "auto", "uvloop", " UVLOOP "])
def test_uvloop_is_used_when_installed_unless_asyncio_is_asked_for(
    monkeypatch: pytest.MonkeyPatch, setting: str | None
) -> None:
    pytest.importorskip("uvloop")
    if setting is None:
        monkeypatch.delenv("CHOREO_LOOP", raising=False)
    else:
        monkeypatch.setenv("CHOREO_LOOP", setting)
    assert _loop.loop_name() == "uvloop"
    assert _loop.run(loop_module()) == "uvloop"


@pytest.mark.parametrize("setting", ["asyncio", "Asyncio"])
def test_choreo_loop_asyncio_runs_on_asyncio_even_with_uvloop_installed(
    monkeypatch: pytest.MonkeyPatch, setting: str
) -> None:
    monkeypatch.setenv("CHOREO_LOOP", setting)
    assert _loop.loop_name() == "asyncio"
    assert _loop.run(loop_module()) == "asyncio"


@pytest.mark.parametrize("setting", [None, "auto", "uvloop", "asyncio"])
@pytest.mark.usefixtures("no_uvloop")
def test_without_uvloop_everything_runs_on_asyncio(
    monkeypatch: pytest.MonkeyPatch, setting: str | None
) -> None:
    if setting is None:
        monkeypatch.delenv("CHOREO_LOOP", raising=False)
    else:
        monkeypatch.setenv("CHOREO_LOOP", setting)
    assert _loop.loop_name() == "asyncio"
    assert _loop.run(loop_module()) == "asyncio"


@pytest.mark.parametrize("setting", ["asyncio", "uvloop"])
def test_results_and_exceptions_come_back_on_either_loop(
    monkeypatch: pytest.MonkeyPatch, setting: str
) -> None:
    if setting == "uvloop":
        pytest.importorskip("uvloop")
    monkeypatch.setenv("CHOREO_LOOP", setting)

    async def answer() -> int:
        await asyncio.sleep(0.001)
        return 42

    async def fail() -> None:
        await asyncio.sleep(0)
        raise KeyError("boom")

    assert _loop.run(answer()) == 42
    with pytest.raises(KeyError, match="boom"):
        _loop.run(fail())


def test_a_misspelt_setting_is_a_usage_error_and_runs_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHOREO_LOOP", "asycnio")
    with pytest.raises(UsageError, match="CHOREO_LOOP='asycnio'"):
        _loop.loop_name()
    coro = loop_module()
    with pytest.raises(UsageError):
        _loop.run(coro)
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED  # no "never awaited"


@pytest.mark.parametrize("command", ["up", "run", "serve"])
def test_every_process_command_chooses_its_loop_with_choreo_loop(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    command: str,
) -> None:
    cluster = tmp_path / "cluster.toml"
    write_cluster(cluster, Cluster(roles={"alice": "127.0.0.1:1", "bob": "127.0.0.1:2"}))
    target = str(ROOT / "protocols" / "ping_pong.py")
    argv = {
        "up": ["up", f"{target}:ping_pong", "--transport", "tcp"],
        "run": ["run", f"{target}:ping_pong", "--role", "alice", "--cluster", str(cluster)],
        "serve": ["serve", target, "--role", "alice", "--cluster", str(cluster)],
    }[command]
    monkeypatch.setenv("CHOREO_LOOP", "trio")  # nothing may start: the loop is chosen first
    assert main(argv) == 2
    assert "CHOREO_LOOP='trio'" in capsys.readouterr().err
