"""Single-decree Paxos (protocols/paxos.py): agreement, validity, promises kept, liveness.

- Random fault plans in service mode (``choreo.sim.Simulation``): acceptors and
  learners are long-lived servers whose state is in ``Storage``; 1 to 3
  proposers run attempts (sessions of ``propose``) at the same time, each
  retrying with a higher ballot after a random backoff, under drops, delays,
  partitions and crashes with restarts of acceptors and learners. Checked:
  agreement (proposers told "chosen" and learners never hold two values),
  validity (only proposed values), no acceptor goes back on a promise (both
  from the acceptors' own logs and from what they sent on the wire), and a
  proposer told "chosen" really has a majority of acceptors that accepted.
  120 plans by default, 1,000 under ``-m slow``.
- Liveness: a majority of acceptors up (2 of 5 down) and one proposer
  retrying under message loss: a value is chosen and every learner learns it.
- The classic walkthrough as a ``Script``: proposer 1 gets A accepted by a
  bare majority at ballot 2, then crashes; nobody learns it. Proposer 2, with
  a higher ballot and value B, hears of A in its promise quorum, proposes A,
  and every learner learns A.
- Acceptor state survives a crash only because it is in ``Storage``.
- One run over gRPC, every role its own process (``choreo up``).
"""

from __future__ import annotations

import ast
import asyncio
import json
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import pytest

import choreo
from choreo._central import central_results
from choreo.sim import (
    Crash,
    Deliver,
    Drop,
    RandomFaults,
    Script,
    SimResult,
    Simulation,
    Storage,
    simulate,
)
from protocols import paxos
from protocols.paxos import next_ballot, propose
from tests.checkers import agreement, promises_monotonic, validity
from tests.scenarios import ROOT

SOURCE = (ROOT / "protocols" / "paxos.py").read_text().splitlines()


def _line(code: str) -> int:
    """The number of the first line of the protocol's source that has ``code``: a label."""
    return next(i for i, text in enumerate(SOURCE, 1) if code in text)


PROMISE = _line("promises = acceptors.send(")
ACCEPT = _line("proposal = proposer.send(")
TO_LEARNERS = _line("heard = acceptors.send(")
TO_PROPOSER = _line("votes = acceptors.send(")


def _group(name: str, n: int) -> list[str]:
    return [f"{name}.{i}" for i in range(n)]


def _majority_accepted(events: Mapping[str, list[Any]], n: Any, v: Any) -> bool:
    accepted = sum(1 for evs in events.values() if ("accept", tuple(n), v) in evs)
    return 2 * accepted > len(events)


def _wire_events(trace: list[dict[str, Any]], acceptors: list[str]) -> dict[str, list[Any]]:
    """Per acceptor, its promises and accepts as it sent them (independent of its own log)."""
    out: dict[str, list[Any]] = {a: [] for a in acceptors}
    for rec in trace:
        if rec["event"] != "send" or rec["from"] not in out or rec["kind"] != "DATA":
            continue
        line = int(rec["label"].rsplit(":", 1)[1])
        if line not in (PROMISE, TO_PROPOSER):
            continue
        assert not rec["summary"].endswith("..."), rec  # values are short: never cut
        msg = ast.literal_eval(rec["summary"])
        if msg[0] == "promise":
            out[rec["from"]].append(("promise", tuple(msg[1])))
        elif msg[0] == "accepted":
            out[rec["from"]].append(("accept", tuple(msg[1]), msg[2]))
    return out


class Cluster:
    """Acceptors and learners as servers of a ``Simulation``, state in ``Storage``."""

    def __init__(
        self,
        seed: int,
        acceptors: int,
        learners: int,
        faults: Any = None,
        *,
        durable: bool = True,
        timeout: float = 2.0,
    ) -> None:
        self.sim = Simulation(seed=seed, faults=faults, timeout=timeout)
        self.acceptors = _group("acceptors", acceptors)
        self.learners = _group("learners", learners)
        self.chosen: list[tuple[str, Any, tuple[int, int]]] = []  # (proposer, value, ballot)
        self.proposed: list[Any] = []
        self.outcomes: Counter[str] = Counter()
        for m in self.acceptors:
            self.sim.serve(m, [propose], state=self._state(m, "astore", durable))
        for m in self.learners:
            self.sim.serve(m, [propose], state=self._state(m, "lstore", True))

    def _state(self, member: str, name: str, durable: bool) -> Callable[[], dict[str, Any]]:
        if durable:
            return lambda: {name: _logged(self.sim.storage(member))}
        return lambda: {name: {}}  # lost on a crash

    async def attempt(self, client: Any, name: str, value: Any, ballot: Any) -> tuple[Any, ...]:
        """One session of ``propose``; a failed session counts as a refusal with no news."""
        self.proposed.append(value)
        try:
            out = (await client.run(propose, value=value, ballot=ballot))["proposer"]
        except choreo.ChoreoRuntimeError:
            out = ("failed", None, None)
        self.outcomes[out[0]] += 1
        if out[0] == "chosen":
            self.chosen.append((name, out[1], tuple(out[2])))
        return tuple(out)

    async def proposer(
        self, pid: int, value: Any, attempts: int, rng: random.Random, until_learned: bool = False
    ) -> None:
        """Retry with higher ballots (random backoff) until chosen (and learned), at most ``attempts``."""
        name = f"proposer{pid}"
        ballot = paxos.ballot_of(1, pid)
        async with self.sim.client(name) as client:
            for _ in range(attempts):
                out = await self.attempt(client, name, value, ballot)
                if out[0] == "chosen" and (not until_learned or all(self.learned().values())):
                    return
                ballot = next_ballot(ballot, out[2])
                await asyncio.sleep(rng.uniform(0.0, 0.2))

    def learned(self) -> dict[str, Any]:
        return {m: self.sim.storage(m).get("learned") for m in self.learners}

    def acceptor_events(self) -> dict[str, list[Any]]:
        return {m: list(self.sim.storage(m).get("events", [])) for m in self.acceptors}

    def violations(self) -> list[str]:
        decisions = [(who, "paxos", v) for who, v, _ in self.chosen]
        for m in self.learners:
            decisions += [(m, "paxos", v) for _, v in self.sim.storage(m).get("events", [])]
        events = self.acceptor_events()
        out = agreement(decisions) + validity(decisions, self.proposed)
        out += promises_monotonic(events)
        out += promises_monotonic(_wire_events(self.sim.trace, self.acceptors))
        for who, v, n in self.chosen:
            if not _majority_accepted(events, n, v):
                out.append(f"{who} was told {v!r} is chosen at {n}, without a majority accepting")
        return out


def run_plan(seed: int) -> tuple[list[str], Counter[str]]:
    """One random fault plan: concurrent proposers against crashing acceptors and learners."""
    rng = random.Random(seed)
    faults = RandomFaults(
        drop=0.05,
        delay=(0.0, 0.05),
        crash=0.03,
        max_crashes=2,
        restart=(0.1, 1.0),
        partition=0.005,
        partition_for=(0.1, 0.5),
    )
    c = Cluster(seed, rng.choice([3, 5]), 2, faults)
    proposers = rng.randint(1, 3)

    async def workload() -> None:
        async def one(pid: int) -> None:
            await asyncio.sleep(rng.uniform(0.0, 0.05))
            await c.proposer(pid, f"v{pid}", 8, rng)

        await asyncio.gather(*(one(pid) for pid in range(proposers)))
        await asyncio.sleep(3.0)  # let every session still running end

    c.sim.run(workload)
    seen = Counter(c.outcomes)
    seen["decided"] += bool(c.chosen)
    seen["crash"] += any(e["event"] == "crash" for e in c.sim.trace)
    seen["dueling"] += proposers > 1 and c.outcomes["retry"] > 0
    seen["adopted"] += any(v != f"v{p[-1]}" for p, v, _ in c.chosen)
    return [f"seed {seed}: {v}" for v in c.violations()], seen


def _check_plans(seeds: range) -> Counter[str]:
    violations: list[str] = []
    seen: Counter[str] = Counter()
    for seed in seeds:
        found, what = run_plan(seed)
        violations += found
        seen.update(what)
    assert not violations, "\n".join(violations[:20])
    return seen


def test_safety_under_random_fault_plans() -> None:
    seen = _check_plans(range(120))
    for case in ("chosen", "retry", "failed", "crash", "dueling", "adopted"):
        assert seen[case] >= 5, (case, seen)


@pytest.mark.slow
def test_safety_under_random_fault_plans_slow() -> None:
    _check_plans(range(1000))


def test_the_checks_catch_a_proposer_that_ignores_accepted_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broken phase 1 (always propose one's own value) is caught: the checks have teeth."""
    real = paxos.choose_value
    monkeypatch.setattr(paxos, "choose_value", lambda ps, own: (own, real(ps, own)[1]))
    violations = [v for seed in range(30) for v in run_plan(seed)[0]]
    assert any("agreement" in v for v in violations), violations


# -- liveness ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_one_proposer_retrying_with_a_majority_up_decides(seed: int) -> None:
    c = Cluster(seed, 5, 3, RandomFaults(drop=0.05, delay=(0.0, 0.02)))

    async def workload() -> None:
        c.sim.crash("acceptors.1")  # f = 2 of 2f+1 = 5 down for good
        c.sim.crash("acceptors.4")
        await c.proposer(7, "only", 40, random.Random(seed), until_learned=True)

    c.sim.run(workload)
    assert [v for _, v, _ in c.chosen][:1] == ["only"], c.outcomes
    assert c.learned() == {m: "only" for m in c.learners}, c.outcomes
    assert c.violations() == []


# -- the classic walkthrough ------------------------------------------------------------


def _logged(store: Storage) -> Storage:
    """``store``, keeping the protocol's event log (an ``events`` list) from now on."""
    store.setdefault("events", [])
    return store


def _session(
    value: str, ballot: tuple[int, int], stores: dict[str, Any], script: Script, seed: int
) -> SimResult:
    return simulate(
        propose,
        seed=seed,
        faults=script,
        timeout=2.0,
        value=value,
        ballot=ballot,
        astore=stores["acceptors"],
        lstore=stores["learners"],
        acceptors=list(stores["acceptors"]),
        learners=list(stores["learners"]),
    )


def test_walkthrough_a_value_accepted_by_a_majority_survives_a_higher_ballot() -> None:
    stores = {
        "acceptors": {m: Storage(events=[]) for m in _group("acceptors", 3)},
        "learners": {m: Storage(events=[]) for m in _group("learners", 2)},
    }
    a, ls = stores["acceptors"], stores["learners"]
    # Proposer 1, ballot (2, 1), value A: its Accept reaches acceptors 0 and 1 only (a
    # majority), then it crashes; the learners hear nothing. A is chosen, nobody knows it.
    first = Script(
        [
            Drop("proposer", "acceptors.2", ACCEPT),
            Deliver("proposer", "acceptors.0", ACCEPT),
            Deliver("proposer", "acceptors.1", ACCEPT),
            Crash("proposer"),
            *[Drop(x, y, TO_LEARNERS) for x in ("acceptors.0", "acceptors.1") for y in ls],
        ]
    )
    r1 = _session("A", (2, 1), stores, first, seed=1)
    assert "proposer" in r1.errors and first.done
    assert [a[m].get("accepted") for m in a] == [((2, 1), "A"), ((2, 1), "A"), None]
    assert [a[m]["promised"] for m in a] == [(2, 1)] * 3
    assert all(s.get("learned") is None for s in ls.values())

    # Proposer 2, ballot (3, 2), value B: its promise quorum is acceptors 2 (accepted
    # nothing) and 1 (accepted (2, 1) A); acceptor 0's promise comes late and is dropped.
    second = Script(
        [
            Deliver("acceptors.2", "proposer", PROMISE),
            Deliver("acceptors.1", "proposer", PROMISE),
            Deliver("acceptors.0", "proposer", PROMISE),
        ]
    )
    r2 = _session("B", (3, 2), stores, second, seed=2)
    assert r2.ok, r2.errors
    assert r2.results["proposer"] == ("chosen", "A", (3, 2))  # it proposed A, not B
    assert [a[m]["accepted"] for m in a] == [((3, 2), "A")] * 3
    assert {m: s["learned"] for m, s in ls.items()} == {m: "A" for m in ls}
    events = {m: s["events"] for m, s in a.items()}
    assert promises_monotonic(events) == []
    decided = [(m, "paxos", s["learned"]) for m, s in ls.items()] + [("proposer2", "paxos", "A")]
    assert agreement(decided) == [] and validity(decided, ["A", "B"]) == []


def test_a_refused_proposer_retries_with_a_higher_ballot() -> None:
    stores = {
        "acceptors": {m: Storage(promised=(5, 1), accepted=None) for m in _group("acceptors", 3)},
        "learners": {m: Storage() for m in _group("learners", 1)},
    }
    r1 = _session("B", (1, 0), stores, Script([]), seed=3)
    assert r1.ok and r1.results["proposer"] == ("retry", None, (5, 1))
    assert next_ballot((1, 0), (5, 1)) == (6, 0)
    r2 = _session("B", next_ballot((1, 0), (5, 1)), stores, Script([]), seed=4)
    assert r2.results["proposer"] == ("chosen", "B", (6, 0))
    assert stores["learners"]["learners.0"]["learned"] == "B"


@pytest.mark.parametrize("durable", [True, False], ids=["storage", "memory"])
def test_acceptor_state_survives_a_crash_only_in_storage(durable: bool) -> None:
    """A is chosen at (5, 0); every acceptor crashes and restarts; B is proposed at (3, 1).

    With ``Storage`` the promise of (5, 0) survives: (3, 1) is refused, and the retry at
    (6, 1) proposes A again. Held in memory, the state is lost and B is chosen too.
    """
    c = Cluster(0, 3, 1, durable=durable)
    got: list[tuple[Any, ...]] = []

    async def workload() -> None:
        async with c.sim.client("p0") as p0, c.sim.client("p1") as p1:
            got.append(await c.attempt(p0, "p0", "A", (5, 0)))
            for m in c.acceptors:
                c.sim.crash(m)
                c.sim.restart(m)
            got.append(await c.attempt(p1, "p1", "B", (3, 1)))
            if got[-1][0] == "retry":
                got.append(await c.attempt(p1, "p1", "B", next_ballot((3, 1), got[-1][2])))

    c.sim.run(workload)
    if durable:
        assert got == [("chosen", "A", (5, 0)), ("retry", None, (5, 0)), ("chosen", "A", (6, 1))]
        assert c.violations() == []
    else:
        assert got == [("chosen", "A", (5, 0)), ("chosen", "B", (3, 1))]
        assert any("agreement" in v for v in c.violations())


def test_central_and_projected_runs_agree() -> None:
    inputs = {"value": "A", "ballot": (1, 0), "astore": {}, "lstore": {}}
    expected = central_results(propose, acceptors=5, learners=2, **inputs)
    assert choreo.run(propose, acceptors=5, learners=2, **inputs) == expected
    assert expected["proposer"] == ("chosen", "A", (1, 0))


# -- over gRPC ----------------------------------------------------------------------------


def test_paxos_over_grpc() -> None:
    """Every role its own process; the acceptors already accepted X at (2, 1): X is chosen."""
    astore = {"promised": (2, 1), "accepted": ((2, 1), "X")}
    out = subprocess.run(
        [
            sys.executable, "-m", "choreo._cli", "up", "protocols/paxos.py:propose",
            "--census", "acceptors=3", "--census", "learners=2",
            "--input", "value=Y", "--input", "ballot=(3, 0)",
            "--input", f"astore={astore}", "--input", "lstore={}",
            "--json", "--quiet",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    expected = central_results(
        propose, value="Y", ballot=(3, 0), astore=astore, lstore={}, acceptors=3, learners=2
    )
    assert got == json.loads(json.dumps(expected))
    assert got["proposer"] == ["chosen", "X", [3, 0]]
