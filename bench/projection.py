"""How long checking and projecting a choreography takes, against its size.

    python bench/projection.py [--repeat 7] [--sizes 10,50,200,1000,2000] [--quick]

Generates choreographies of 10 to 2,000 lines (three roles; sends, multicasts,
local blocks, nested ifs and bounded whiles), then times parse + check +
project of every role + code generation from a cold cache. Prints median, min
and max of the repetitions and the time per line, with the 50-line case as the
baseline of the ratio column. Goals (issue "Core"): 50 lines <= 20 ms,
1,000 lines <= 0.5 s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid

import choreo


def make_source(lines: int, tag: str) -> str:
    """A well-formed choreography of about ``lines`` lines."""
    body: list[str] = []
    i = 0
    while len(body) < lines - 6:
        i += 1
        kind = i % 5
        if kind == 0:
            body += [f"    v{i} = a.send(x + {i}, to=b)", "    with b:", f"        x{i} = v{i} * 2"]
        elif kind == 1:
            body += [
                f"    w{i} = b.send(1, to=[a, c])",
                "    with c:",
                f"        c{i} = w{i} + {i}",
            ]
        elif kind == 2:
            body += [
                "    with a:",
                f"        k{i} = x % 3",
                f"    if k{i} > 0:",
                f"        y{i} = a.send(k{i}, to=c)",
                "        with c:",
                f"            z{i} = y{i} + 1",
                "    else:",
                "        with b:",
                f"            q{i} = {i}",
            ]
        elif kind == 3:
            body += [
                "    with a:",
                f"        n{i} = 2",
                f"    while n{i} > 0:",
                f"        m{i} = a.send(n{i}, to=b)",
                "        with a:",
                f"            n{i} = n{i} - 1",
            ]
        else:
            body += ["    with a:", f"        x = x + {i}", f"    t{i} = a.send(x, to=c)"]
    head = [
        f"# {tag}",
        "from choreo import At, Role, choreography",
        "",
        "@choreography",
        'def big(a: Role, b: Role, c: Role, x: At[int, "a"]) -> At[int, "a"]:',
    ]
    return "\n".join([*head, *body, "    return x", ""])


def measure(lines: int) -> float:
    src = make_source(lines, uuid.uuid4().hex)  # a new source: nothing cached
    mod = choreo.module_from_source(src, "bench_projection")
    start = time.perf_counter()
    for role in mod.big.roles:
        mod.big.project(role)
    return time.perf_counter() - start


GOALS_MS = {50: 20.0, 1000: 500.0}  # issue "Benchmarks and performance"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--sizes", default="10,50,200,1000,2000")
    parser.add_argument("--quick", action="store_true", help="2 repetitions, up to 200 lines")
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.sizes = 2, "10,50,200"
    sizes = [int(s) for s in args.sizes.split(",")]
    measure(50)  # warm up imports
    samples: dict[int, list[float]] = {n: [] for n in sizes}
    for rep in range(args.repeat):  # interleaved repetitions
        print(f"projection: repetition {rep + 1}/{args.repeat}", file=sys.stderr, flush=True)
        for n in sizes:
            samples[n].append(measure(n))
    print(
        f"check + project every role of a generated choreography (3 roles), "
        f"{args.repeat} interleaved repetitions, cold cache; ratio: median time / median "
        f"time of the {sizes[0]}-line case\n"
    )
    print("| lines | median ms | min ms | max ms | us/line | ratio | goal |")
    print("|------:|----------:|-------:|-------:|--------:|------:|------|")
    base = statistics.median(samples[sizes[0]])
    for n in sizes:
        med = statistics.median(samples[n])
        goal = GOALS_MS.get(n)
        verdict = (
            "" if goal is None else f"<= {goal:g} ms: {'met' if med * 1e3 <= goal else 'MISSED'}"
        )
        print(
            f"| {lines_of(n)} | {med * 1e3:.1f} | {min(samples[n]) * 1e3:.1f} | "
            f"{max(samples[n]) * 1e3:.1f} | {med / lines_of(n) * 1e6:.1f} | {med / base:.1f} | "
            f"{verdict} |"
        )


def lines_of(n: int) -> int:
    """Lines of the source ``make_source(n, ...)`` generates."""
    return make_source(n, "x").count("\n")


if __name__ == "__main__":
    main()
