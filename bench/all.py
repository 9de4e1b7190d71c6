"""Run every benchmark, print its tables, and write them into ``docs/benchmarks.md``.

    .venv/bin/python bench/all.py [--quick] [--only NAME,...] [--out docs/benchmarks.md]

Each benchmark is a script in ``bench/`` run in its own process, one after the
other (never two at once: the machines have 2 cores). Its stdout (Markdown:
a line saying what was measured, then a table made by ``bench/_table.py``) is
printed and pasted into the page between the markers::

    <!-- bench:NAME -->
    ...replaced...
    <!-- /bench:NAME -->

Everything outside the markers (the analysis) is kept as written; a section
whose markers are missing is appended at the end. The ``machine`` section
describes where the figures were measured. ``--quick`` runs every script with
its ``--quick`` flag (tiny counts: a smoke test, not figures to publish) and
writes nothing unless ``--out`` is given.

A benchmark that cannot run here (PyChor not installed, say) gets a section
that says why; one that fails makes the command exit 1 after the others ran.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"


@dataclass(frozen=True)
class Bench:
    """One benchmark script.

    Args:
        name: its section's name in the page.
        script: the file in ``bench/``.
        args: extra arguments for a full run.
        needs: a module it imports that is optional (``None``: none).
        timeout: seconds a full run may take before it is killed.
    """

    name: str
    script: str
    args: tuple[str, ...] = ()
    needs: str | None = None
    timeout: float = 900.0


BENCHES = (
    Bench("projection", "projection.py"),
    Bench("transport", "transport.py"),
    Bench("tcp", "tcp.py"),
    Bench("pychor", "pychor_pingpong.py", needs="pychor"),
    Bench("protocols", "protocols.py"),
    Bench("sim", "sim.py"),
)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


_GIT_STATUS = ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "--", "."]


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            # the page this command writes does not make the code measured "uncommitted"
            [*_GIT_STATUS, ":!docs/benchmarks.md"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        return out + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine() -> str:
    """A Markdown description of this machine and of the versions measured.

    Returns:
        A few lines of Markdown.
    """
    libs = ", ".join(
        f"{d} {_version(d)}" for d in ("grpcio", "protobuf", "libcst", "uvloop", "pychor")
    )
    return (
        f"Machine of the last run of `python bench/all.py`: "
        f"{os.cpu_count()} CPUs ({_cpu()}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}; {libs}. Every process on 127.0.0.1. "
        "Each section below says when, and at which commit, it was measured."
    )


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def run_one(bench: Bench, quick: bool) -> tuple[bool, str]:
    """Run one benchmark script; its stderr (progress) goes straight through.

    Args:
        bench: the benchmark.
        quick: pass ``--quick`` (and a short timeout).

    Returns:
        ``(ok, markdown)``: whether it succeeded, and what goes into its section.
    """
    if bench.needs is not None and not _has(bench.needs):
        return True, (
            f"Not measured in this run: `{bench.needs}` is not installed "
            f'(`pip install -e ".[bench]"` installs it).'
        )
    cmd = [sys.executable, str(BENCH / bench.script), *(("--quick",) if quick else bench.args)]
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    shown = " ".join(["python", f"bench/{bench.script}", *cmd[2:]])
    print(f"== {shown}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    try:
        done = subprocess.run(
            cmd,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=120.0 if quick else bench.timeout,
        )
    except subprocess.TimeoutExpired:
        return False, f"`{shown}` did not finish within its time limit."
    took = time.perf_counter() - started
    out = done.stdout.strip()
    if done.returncode != 0:
        return False, f"`{shown}` failed (exit {done.returncode}).\n\n{out}".rstrip()
    if "|" not in out:
        return False, f"`{shown}` printed no table.\n\n{out}".rstrip()
    today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return True, f"`{shown}`, {today}, commit {_commit()} ({took:.0f} s):\n\n{out}"


_MARK = re.compile(r"<!-- bench:(?P<name>[\w-]+) -->\n.*?<!-- /bench:(?P=name) -->", re.S)


def splice(page: str, sections: dict[str, str]) -> str:
    """Replace each section between its markers in ``page``, append the missing ones.

    Args:
        page: the page as it is.
        sections: the new content of each section, by name.

    Returns:
        The page with every section replaced.
    """
    todo = dict(sections)

    def sub(m: re.Match[str]) -> str:
        name = m.group("name")
        if name not in todo:
            return m.group(0)
        return f"<!-- bench:{name} -->\n{todo.pop(name)}\n<!-- /bench:{name} -->"

    page = _MARK.sub(sub, page)
    for name, body in todo.items():
        page = (
            page.rstrip("\n")
            + f"\n\n## {name}\n\n<!-- bench:{name} -->\n{body}\n<!-- /bench:{name} -->\n"
        )
    return page


def main(
    argv: list[str] | None = None, run: Callable[[Bench, bool], tuple[bool, str]] = run_one
) -> int:
    """The command: run the benchmarks, print them, write the page.

    Args:
        argv: command-line arguments (``None``: ``sys.argv``).
        run: how one benchmark is run (the tests pass a fake).

    Returns:
        0 when every benchmark ran, 1 when one failed, 2 on bad arguments.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke test")
    parser.add_argument(
        "--only", help="comma-separated names: " + ",".join(b.name for b in BENCHES)
    )
    parser.add_argument("--out", type=Path, help="the page to write (default docs/benchmarks.md)")
    args = parser.parse_args(argv)
    chosen = list(BENCHES)
    if args.only:
        names = args.only.split(",")
        unknown = sorted(set(names) - {b.name for b in BENCHES})
        if unknown:
            parser.error(
                f"unknown benchmark {', '.join(unknown)}; known: {', '.join(b.name for b in BENCHES)}"
            )
        chosen = [b for b in BENCHES if b.name in names]
    out: Path | None = args.out
    if out is None and not args.quick:
        out = ROOT / "docs" / "benchmarks.md"

    sections = {"machine": machine()}
    failed = []
    for bench in chosen:
        ok, text = run(bench, args.quick)
        print(f"\n## {bench.name}\n\n{text}\n", flush=True)
        sections[bench.name] = text
        if not ok:
            failed.append(bench.name)
    if out is not None:
        page = out.read_text() if out.exists() else "# Benchmarks\n"
        out.write_text(splice(page, sections))
        print(f"wrote {out}", file=sys.stderr)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
