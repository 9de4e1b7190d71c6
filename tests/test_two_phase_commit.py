"""Two-phase commit (protocols/two_phase_commit.py): atomic commit under faults.

- Random fault plans (drops, delays, crashes of any role, the coordinator
  included, and restarts), each one commit session followed by ``recover``
  sessions until every participant has decided: the atomic commit checks of
  ``tests.checkers.atomic_commit`` (deciders agree, commit only if all voted
  yes, no decision reversed, a prepared participant never decides alone), a
  blocked participant's session fails instead of deciding, and the outcome is
  the one the coordinator logged. 200 plans by default, 1,000 under ``-m slow``.
- Scripted cases: a participant that never votes, or whose vote is lost,
  means abort; a coordinator that crashes after logging commit but before
  telling anyone blocks the participants until ``recover`` commits
  everywhere; one that crashes before logging makes ``recover`` abort.
- One run over gRPC, every role its own process (``choreo up``).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest

import choreo
from choreo._central import central_results
from choreo.sim import Crash, Deliver, Drop, RandomFaults, Script, SimResult, Storage, simulate
from protocols import two_phase_commit as tpc
from protocols.two_phase_commit import (
    VOTE_TIMEOUT,
    logged_decision,
    logged_vote,
    recover,
    two_phase_commit,
)
from tests.checkers import Decision, atomic_commit
from tests.scenarios import ROOT

TX = "tx1"
#: receive deadline of every session: a blocked participant gives up waiting after this long
DEADLINE = 5.0
SOURCE = (ROOT / "protocols" / "two_phase_commit.py").read_text().splitlines()


def _line(code: str) -> int:
    """The number of the first line of the protocol's source that has ``code``: a label."""
    return next(i for i, text in enumerate(SOURCE, 1) if code in text)


PREPARE = _line("tx = coordinator.send(")
VOTE = _line("votes = participants.send(")
DECISION = _line("outcome = coordinator.send(")


def _members(n: int) -> list[str]:
    return [f"participants.{i}" for i in range(n)]


@dataclass
class Transaction:
    """One transaction's durable state: the coordinator's and every participant's log."""

    members: list[str]
    cstore: Storage
    pstores: dict[str, Storage]

    @classmethod
    def fresh(cls, n: int) -> Transaction:
        members = _members(n)
        return cls(members, Storage(), {m: Storage() for m in members})

    def commit(self, can_commit: Any, seed: int = 0, faults: Any = None) -> SimResult:
        return simulate(
            two_phase_commit,
            seed=seed,
            faults=faults,
            timeout=DEADLINE,
            transaction=TX,
            can_commit=can_commit,
            cstore=self.cstore,
            pstore=self.pstores,
            participants=self.members,
        )

    def recover(self, seed: int = 0, faults: Any = None) -> SimResult:
        return simulate(
            recover,
            seed=seed,
            faults=faults,
            timeout=DEADLINE,
            transaction=TX,
            cstore=self.cstore,
            pstore=self.pstores,
            participants=self.members,
        )

    def undecided(self) -> list[str]:
        return [m for m in self.members if logged_decision(self.pstores[m], TX) is None]

    def blocked(self) -> list[str]:
        """Participants that voted yes and have not heard the outcome."""
        return [m for m in self.undecided() if logged_vote(self.pstores[m], TX) == "yes"]

    def votes(self) -> dict[str, str | None]:
        return {m: logged_vote(self.pstores[m], TX) for m in self.members}

    def decisions(self) -> dict[str, list[Decision]]:
        """Every decision each role logged, in order, as ``atomic_commit`` reads them."""
        out = {"coordinator": _decisions(self.cstore, "coordinator")}
        out.update({m: _decisions(self.pstores[m], m) for m in self.members})
        return out


def _decisions(store: Storage, node: str) -> list[Decision]:
    return [
        Decision(r[2], "coordinator" if r[3] == "coordinator" else node)
        for r in store.get("log", [])
        if r[0] == "decision" and r[1] == TX
    ]


def _session_violations(t: Transaction, r: SimResult) -> list[str]:
    """What must hold right after a session: who finished decided what it returned; the
    blocked did not finish."""
    out = []
    for m in t.members:
        decided = logged_decision(t.pstores[m], TX)
        if m in r.results and r.results[m] != decided:
            out.append(f"{m} returned {r.results[m]!r} but logged {decided!r}")
    for m in t.blocked():
        if m in r.results:
            out.append(f"{m} is prepared and undecided, yet its session finished")
    logged = logged_decision(t.cstore, TX)
    for m in t.members:  # the log is written first: nobody hears what it does not hold
        told = [d.outcome for d in t.decisions()[m] if d.source == "coordinator"]
        if told and told[0] != logged:
            out.append(f"{m} was told {told[0]!r}, the coordinator's log holds {logged!r}")
    return out


def run_plan(seed: int) -> tuple[list[str], Counter[str]]:
    """One random fault plan: a commit session, then ``recover`` until everyone decided.

    Returns the violations and what happened (for coverage figures).
    """
    rng = random.Random(seed)
    t = Transaction.fresh(rng.randint(2, 4))
    can_commit = {m: rng.random() < 0.85 for m in t.members}
    faults = RandomFaults(
        drop=0.05, delay=(0.0, 0.6), crash=0.06, max_crashes=2, restart=(0.2, 2.0)
    )
    first = t.commit(can_commit, seed=seed, faults=faults)
    violations = _session_violations(t, first)
    logged = logged_decision(t.cstore, TX)
    seen: Counter[str] = Counter()
    seen["coordinator crashed"] += any(
        e["event"] == "crash" and e["role"] == "coordinator" for e in first.trace
    )
    seen["participant crashed"] += any(
        e["event"] == "crash" and e["role"] != "coordinator" for e in first.trace
    )
    seen["blocked"] += bool(t.blocked())
    seen["logged commit, blocked"] += bool(t.blocked()) and logged == tpc.COMMIT
    # the coordinator is back: recover until every participant decided (lossy, then not)
    for attempt in range(1, 6):
        if not t.undecided() and logged_decision(t.cstore, TX) is not None:
            break
        lossy = RandomFaults(drop=0.2, delay=(0.0, 0.3)) if attempt < 5 else None
        again = t.recover(seed=seed * 1000 + attempt, faults=lossy)
        violations += _session_violations(t, again)
    if t.undecided():
        violations.append(f"still undecided after recovery: {t.undecided()}")
    final = logged_decision(t.cstore, TX)
    if logged is not None and final != logged:
        violations.append(f"the coordinator logged {logged!r} but recovery decided {final!r}")
    violations += atomic_commit(t.votes(), t.decisions())
    seen[str(final)] += 1
    return [f"seed {seed}: {v}" for v in violations], seen


def _check_plans(seeds: range) -> Counter[str]:
    violations: list[str] = []
    seen: Counter[str] = Counter()
    for seed in seeds:
        found, what = run_plan(seed)
        violations += found
        seen.update(what)
    assert not violations, "\n".join(violations[:20])
    return seen


def test_atomic_commit_under_random_fault_plans() -> None:
    seen = _check_plans(range(200))
    # the plans reach the interesting cases, not just the happy path
    cases = ("commit", "abort", "coordinator crashed", "participant crashed", "blocked")
    for case in (*cases, "logged commit, blocked"):
        assert seen[case] >= 3, (case, seen)


@pytest.mark.slow
def test_atomic_commit_under_random_fault_plans_slow() -> None:
    seen = _check_plans(range(1000))
    assert seen["logged commit, blocked"] >= 5, seen


def test_the_checks_catch_a_recovery_that_presumes_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A broken recovery (nothing logged: commit) is caught: the checks have teeth."""

    def presume_commit(store: dict[str, Any], tx: str) -> str:
        logged = logged_decision(store, tx)
        return tpc.COMMIT if logged is None else logged

    monkeypatch.setattr(tpc, "logged_decision", presume_commit)
    violations = [v for seed in range(200) for v in run_plan(seed)[0]]
    assert any("did not vote yes" in v or "disagree" in v for v in violations), violations


# -- scripted cases -------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [Crash("participants.1"), Drop("participants.1", "coordinator", VOTE)],
    ids=["crashed before voting", "vote lost"],
)
def test_a_participant_that_does_not_vote_in_time_means_abort(fault: Any) -> None:
    t = Transaction.fresh(3)
    r = t.commit(True, seed=1, faults=Script([fault]))
    assert logged_decision(t.cstore, TX) == tpc.ABORT
    assert r.time >= VOTE_TIMEOUT  # the coordinator waited for the vote, then gave up
    for m in ("participants.0", "participants.2"):
        assert r.results[m] == "abort"
    if isinstance(fault, Drop):  # it voted yes, and learns the abort from the coordinator
        assert r.results["participants.1"] == "abort"
        assert t.votes()["participants.1"] == "yes"
    assert atomic_commit(t.votes(), t.decisions()) == []


def test_a_no_vote_aborts_at_once_even_if_the_decision_is_lost() -> None:
    t = Transaction.fresh(2)
    can_commit = {"participants.0": True, "participants.1": False}
    r = t.commit(can_commit, faults=Script([Drop("coordinator", "participants.1", DECISION)]))
    assert r.results["participants.0"] == "abort"
    assert t.decisions()["participants.1"] == [Decision("abort", "participants.1")]  # alone
    assert atomic_commit(t.votes(), t.decisions()) == []


def test_coordinator_crash_after_logging_commit_blocks_until_recovery() -> None:
    """The decision is logged, then the coordinator crashes and its messages are lost."""
    t = Transaction.fresh(3)
    lost = [Drop("coordinator", m, DECISION) for m in t.members]
    r = t.commit(True, seed=2, faults=Script([*lost, Crash("coordinator")]))
    assert logged_decision(t.cstore, TX) == tpc.COMMIT
    assert t.blocked() == t.members  # all prepared, none decided...
    for m in t.members:  # ...and none decided alone: the session failed at its deadline
        assert isinstance(r.errors[m], choreo.DeadlineError | choreo.PeerFailedError), r.errors
    assert isinstance(r.error, choreo.DeadlineError) and r.time >= DEADLINE
    assert atomic_commit(t.votes(), t.decisions()) == []

    back = t.recover(seed=3)
    assert back.ok, back.errors
    assert all(back.results[m] == "commit" for m in t.members)
    for m in t.members:
        assert t.decisions()[m] == [Decision("commit", "coordinator")]  # learned, once
    assert ("end", TX) in t.cstore["log"]  # everyone acknowledged
    assert atomic_commit(t.votes(), t.decisions()) == []


def test_coordinator_crash_before_logging_means_abort_after_recovery() -> None:
    t = Transaction.fresh(2)
    prepared = [Deliver("coordinator", m, PREPARE) for m in t.members]
    r = t.commit(True, seed=4, faults=Script([*prepared, Crash("coordinator")]))
    assert logged_decision(t.cstore, TX) is None
    assert t.blocked() == t.members and not any(m in r.results for m in t.members)
    back = t.recover(seed=5)
    assert back.ok, back.errors
    assert back.results == {"coordinator": None, **{m: "abort" for m in t.members}}
    assert logged_decision(t.cstore, TX) == tpc.ABORT
    assert atomic_commit(t.votes(), t.decisions()) == []


def test_central_and_projected_runs_agree() -> None:
    inputs = {"transaction": TX, "can_commit": True, "cstore": {}, "pstore": {}}
    expected = central_results(two_phase_commit, participants=4, **inputs)
    assert choreo.run(two_phase_commit, participants=4, **inputs) == expected
    assert set(expected.values()) == {None, "commit"}


# -- over gRPC -------------------------------------------------------------------------


def test_two_phase_commit_over_grpc() -> None:
    """Every role its own process; one participant votes no, so everyone aborts."""
    can_commit = {"participants.0": True, "participants.1": False, "participants.2": True}
    out = subprocess.run(
        [
            sys.executable, "-m", "choreo._cli", "up",
            "protocols/two_phase_commit.py:two_phase_commit",
            "--census", "participants=3",
            "--input", f"transaction={TX}", "--input", f"can_commit={can_commit}",
            "--input", "cstore={}", "--input", "pstore={}",
            "--json", "--quiet",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    expected = central_results(
        two_phase_commit, transaction=TX, can_commit=can_commit, cstore={}, pstore={},
        participants=3,
    )  # fmt: skip
    assert got == expected == {"coordinator": None, **{m: "abort" for m in can_commit}}
