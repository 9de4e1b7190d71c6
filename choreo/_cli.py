"""The ``choreo`` command line.

    choreo check FILE                      check every choreography in FILE
    choreo project FILE [-o DIR]           write (or print) every role's endpoint module
    choreo up FILE:CHOR [--input N=V]...   run every role, print each role's result
    choreo run FILE:CHOR --role R --cluster cluster.toml
                                           run one role as a process over gRPC or TCP
    choreo diagram FILE:CHOR | TRACE.jsonl [-o OUT]
                                           draw a Mermaid sequence diagram

Exit status: 0 on success; 1 when a choreography has static errors or a role
failed; 2 on bad usage; 3 on an internal error (a bug in choreo).
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from choreo._errors import CheckError, ChoreoError, ChoreoInternalError, UsageError

__all__ = ["main", "parse_inputs"]


def parse_value(text: str) -> Any:
    """A command-line value: a Python literal if it is one, else the string itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def parse_inputs(items: Sequence[str]) -> dict[str, Any]:
    """``NAME=VALUE`` pairs -> a dict; values read with ``parse_value``.

    Raises:
        UsageError: an item has no ``=`` or names an input twice.
    """
    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise UsageError(f"--input expects NAME=VALUE, got {item!r}")
        if name in out:
            raise UsageError(f"--input {name} is given twice")
        out[name] = parse_value(value)
    return out


def print_results(results: dict[str, Any], as_json: bool) -> None:
    """Each role's result as ``role: repr(value)``, or one JSON object."""
    if as_json:
        try:
            print(json.dumps(results, default=repr))
        except (TypeError, ValueError):
            print(json.dumps({k: repr(v) for k, v in results.items()}))
        return
    for role, value in results.items():
        print(f"{role}: {value!r}")


def _cmd_check(args: argparse.Namespace) -> int:
    from choreo._loader import choreographies_in, load_file

    mod = load_file(args.file)
    found = choreographies_in(mod)
    if not found:
        print(f"{args.file}: no @choreography found", file=sys.stderr)
        return 1
    diagnostics = []
    for chor in found.values():
        try:
            chor.check()
        except CheckError as exc:
            diagnostics.extend(exc.diagnostics)
    diagnostics = list(dict.fromkeys(diagnostics))  # a callee's errors come with its callers'
    if diagnostics:
        for d in diagnostics:
            print(d.render(), file=sys.stderr)
        n = len(diagnostics)
        print(f"{n} error{'s' if n != 1 else ''} in {args.file}", file=sys.stderr)
        return 1
    names = ", ".join(found)
    print(f"{args.file}: {len(found)} choreograph{'ies' if len(found) != 1 else 'y'} OK ({names})")
    return 0


def _cmd_project(args: argparse.Namespace) -> int:
    from choreo._codegen import function_name
    from choreo._loader import choreographies_in, load_file

    mod = load_file(args.file)
    found = choreographies_in(mod)
    if args.choreography:
        if args.choreography not in found:
            raise UsageError(f"{args.file} has no choreography {args.choreography!r}")
        found = {args.choreography: found[args.choreography]}
    outdir = Path(args.output) if args.output else None
    if outdir is not None:
        outdir.mkdir(parents=True, exist_ok=True)
    for chor in found.values():
        for role in chor.parties:
            src = chor.project(role)
            if outdir is None:
                print(src)
            else:
                path = outdir / f"{function_name(chor.name, role)}.py"
                path.write_text(src)
                print(f"wrote {path}")
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    from choreo._loader import load_target
    from choreo._loop import run as run_loop
    from choreo._process import up
    from choreo._run import parse_census

    chor = load_target(args.target)
    inputs = parse_inputs(args.input or [])
    census = parse_census(args.census or [])
    chor.check()
    if args.in_process:
        from choreo._run import run
        from choreo._trace import TraceRecorder

        recorder = TraceRecorder(args.trace) if args.trace else None
        try:
            everything: dict[str, Any] = {**inputs, **census}
            results = run(chor, timeout=args.timeout, tracer=recorder, **everything)
        finally:
            if recorder is not None:
                recorder.close()
    else:

        def status(line: str) -> None:
            if not args.quiet:
                print(f"choreo: {line}", file=sys.stderr, flush=True)

        results = run_loop(
            up(
                args.target,
                chor,
                args.input or [],
                inputs,
                timeout=args.timeout,
                status=status,
                trace=args.trace,
                census=census,
                transport=args.transport,
            )
        )
    print_results(results, args.json)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import logging

    from choreo._cluster import load_cluster
    from choreo._loader import load_file
    from choreo._loop import run as run_loop
    from choreo._service import serve

    logging.basicConfig(level=logging.INFO, format="choreo: %(message)s", stream=sys.stderr)
    mod = load_file(args.file)
    cluster = load_cluster(args.cluster)
    inputs = parse_inputs(args.input or [])
    timeout = args.timeout or cluster.timeout or 10.0
    run_loop(
        serve(mod, args.role, cluster, inputs, timeout=timeout, max_sessions=args.max_sessions)
    )
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from choreo._cluster import load_cluster
    from choreo._loader import load_target
    from choreo._loop import run as run_loop
    from choreo._process import report_error, report_result, run_role
    from choreo._trace import TraceRecorder

    report = sys.stdout
    recorder: TraceRecorder | None = None
    if args.report:  # stdout carries reports to `choreo up`; the role's prints go to stderr
        sys.stdout = sys.stderr
    try:
        chor = load_target(args.target)
        cluster = load_cluster(args.cluster)
        inputs = parse_inputs(args.input or [])
        chor.check()
        timeout = args.timeout or cluster.timeout or 10.0
        session = args.session or f"oneshot-{chor.name}-{chor.hash}"
        if args.trace:
            recorder = TraceRecorder(args.trace)

        reported: list[BaseException] = []

        def ready(address: str) -> None:
            if args.report:
                print(f"READY {address}", file=report, flush=True)

        async def go() -> None:
            import asyncio

            # `choreo up` says GO on stdin once every role serves (EOF: it is gone)
            line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            if line.strip() != "GO":
                raise UsageError("choreo up did not say GO (its pipe closed): not starting")

        def failed(exc: BaseException) -> None:
            if args.report:
                report_error(report, exc)
                reported.append(exc)

        result = run_loop(
            run_role(
                chor,
                args.role,
                cluster.roles,
                inputs,
                session=session,
                timeout=timeout,
                on_ready=ready,
                before_start=go if args.wait_go else None,
                on_error=failed,
                tls=cluster.tls_for(args.role),
                tracer=recorder,
                groups=cluster.groups,
                transport=cluster.transport,
            )
        )
    except BaseException as exc:
        if args.report and not reported and not isinstance(exc, KeyboardInterrupt | SystemExit):
            report_error(report, exc)
        raise
    finally:
        if recorder is not None:
            recorder.close()
    if args.report:
        report_result(report, result)
    else:
        print_results({args.role: result}, args.json)
    return 0


def _cmd_diagram(args: argparse.Namespace) -> int:
    from choreo._diagram import choreography_diagram, trace_diagram
    from choreo._loader import load_target
    from choreo._trace import load_trace

    if args.source.partition(":")[0].endswith(".py"):  # FILE.py[:CHOR]; anything else is a trace
        chor = load_target(args.source)
        chor.check()
        text = choreography_diagram(chor)
    else:
        text = trace_diagram(load_trace(args.source))
    if args.output:
        try:
            Path(args.output).write_text(text)
        except OSError as exc:
            raise UsageError(f"cannot write {args.output}: {exc}") from None
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        print(text, end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``choreo`` command."""
    parser = argparse.ArgumentParser(
        prog="choreo",
        description="Choreographic programming: check, project and run choreographies.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check", help="check every choreography in FILE")
    p.add_argument("file")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("project", help="write every role's endpoint module")
    p.add_argument("file")
    p.add_argument("-o", "--output", help="directory to write <choreography>_<role>.py into")
    p.add_argument("-c", "--choreography", help="only this choreography")
    p.set_defaults(func=_cmd_project)

    p = sub.add_parser(
        "up", help="start every role as its own process over gRPC or TCP, print each role's result"
    )
    p.add_argument("target", help="FILE:CHOREOGRAPHY")
    p.add_argument("--input", "-i", action="append", metavar="NAME=VALUE")
    p.add_argument(
        "--census",
        "-n",
        action="append",
        metavar="GROUP=SIZE",
        help="a group's members: GROUP=SIZE (GROUP.0, GROUP.1, ...) or GROUP=name1,name2",
    )
    p.add_argument("--timeout", type=float, default=10.0, help="receive deadline, seconds")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    p.add_argument(
        "--in-process", action="store_true", help="run every role as a task in this process"
    )
    p.add_argument(
        "--trace", metavar="TRACE.jsonl", help="record every role's envelopes, merged, here"
    )
    p.add_argument(
        "--transport",
        choices=["grpc", "tcp"],
        default="grpc",
        help="how the role processes talk (default: grpc; ignored with --in-process)",
    )
    p.set_defaults(func=_cmd_up)

    p = sub.add_parser("serve", help="keep one role running, serving any number of sessions")
    p.add_argument("file")
    p.add_argument("--role", required=True)
    p.add_argument("--cluster", required=True, help="TOML file: every role's host:port")
    p.add_argument(
        "--input",
        "-i",
        action="append",
        metavar="NAME=VALUE",
        help="role state, kept across sessions",
    )
    p.add_argument("--timeout", type=float, default=None, help="receive deadline, seconds")
    p.add_argument(
        "--max-sessions",
        type=int,
        default=None,
        metavar="N",
        help="sessions run at once, at most; more STARTs are refused (default: the cluster "
        "file's [limits] max_sessions, else no limit)",
    )
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser(
        "run", help="run one role as a process over the cluster file's transport (gRPC or TCP)"
    )
    p.add_argument("target", help="FILE:CHOREOGRAPHY")
    p.add_argument("--role", required=True)
    p.add_argument("--cluster", required=True, help="TOML file: every role's host:port")
    p.add_argument("--input", "-i", action="append", metavar="NAME=VALUE")
    p.add_argument("--timeout", type=float, default=None, help="receive deadline, seconds")
    p.add_argument("--session", help="session id (the same for every role of the run)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--report", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--wait-go", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--trace", metavar="TRACE.jsonl", help="record this role's envelopes here")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("diagram", help="draw a choreography or a trace as a Mermaid diagram")
    p.add_argument("source", help="FILE.py:CHOREOGRAPHY, or a TRACE.jsonl recorded with --trace")
    p.add_argument("-o", "--output", help="write the diagram to this file instead of stdout")
    p.set_defaults(func=_cmd_diagram)

    from choreo._tls import add_certs_command  # `choreo certs`: a development CA

    add_certs_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``choreo`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except CheckError as exc:
        for d in exc.diagnostics:
            print(d.render(), file=sys.stderr)
        return 1
    except UsageError as exc:
        print(f"choreo: error: {exc}", file=sys.stderr)
        return 2
    except ChoreoInternalError as exc:
        print(f"choreo: {exc}", file=sys.stderr)
        return 3
    except ChoreoError as exc:
        print(f"choreo: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("choreo: interrupted", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        print(
            "choreo: internal error (this is a bug in choreo, please report it with the "
            "traceback above)",
            file=sys.stderr,
        )
        return 3


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
