"""Groups of roles: central == projected for census sizes 1 to 7, quorum semantics, errors.

The reference is the central interpreter (``choreo._central``), which shares
nothing with the projector or the runtime. Quorum behaviour under silence and
lateness is shown in the simulator, where the schedule is exact.
"""

from __future__ import annotations

import copy
from collections import deque
from typing import Any

import pytest

import choreo
from choreo._central import central_results
from choreo._envelope import Envelope, Kind
from choreo._errors import ChoreoRuntimeError, DeadlineError, UsageError
from choreo._run import member_value, members_of, parse_census
from choreo._session import SessionCore
from choreo.sim import Crash, Deliver, Drop, Script, simulate
from tests import group_chors as g

SIZES = range(1, 8)


def _words(i: int) -> str:
    return " ".join(["alpha", "beta", "gamma", "delta", "beta"][: 1 + i % 5]) + f" w{i % 3}"


def _cases() -> list[tuple[Any, dict[str, Any]]]:
    out: list[tuple[Any, dict[str, Any]]] = []
    for n in SIZES:
        out += [
            (g.fan_sum, {"data": list(range(3 * n + 1)), "workers": n}),
            (g.vote, {"question": "ab" if n % 2 else "abc", "voters": n}),
            (g.chain, {"v": n, "nodes": n}),
            (
                g.shuffle,
                {
                    "texts": {f"mappers.{i}": _words(i) for i in range(n)},
                    "mappers": n,
                    "reducers": 8 - n,
                },
            ),
            (g.all_to_all, {"g": n}),
            (g.outer, {"value": n, "backups": n}),
            (g.group_decides, {"n": n, "g": n}),
            (g.group_loop, {"n": n % 4, "g": n}),
            (g.per_member, {"g": n}),
            (g.majority_count, {"g": n}),
            (g.named_members, {"bonus": 5, "g": n}),
            (g.named_members, {"bonus": {f"g.{i}": i * i for i in range(n)}, "g": n}),
            (g.sub_members, {"v": n, "g": n}),
        ]
    out.append((g.per_member, {"g": ["east", "west", "north"]}))
    return out


@pytest.mark.parametrize(
    ("chor", "inputs"),
    _cases(),
    ids=lambda v: v.name if hasattr(v, "name") else "-".join(f"{k}" for k in v),
)
def test_central_equals_projected(chor: Any, inputs: dict[str, Any]) -> None:
    expected = central_results(chor, **copy.deepcopy(inputs))
    assert choreo.run(chor, timeout=5, **copy.deepcopy(inputs)) == expected


def test_results_are_what_the_protocols_compute() -> None:
    """Spot checks against plain Python, so that central and projected cannot agree on nonsense."""
    assert g.fan_sum(data=list(range(101)), workers=7) == 5050
    assert g.chain(v=10, nodes=5) == 14  # one increment per hop
    out = choreo.run(
        g.shuffle, texts={"mappers.0": "a b a", "mappers.1": "b c"}, mappers=2, reducers=3
    )
    merged: dict[str, int] = {}
    for m in ("reducers.0", "reducers.1", "reducers.2"):
        assert not set(merged) & set(out[m])  # each word is counted at exactly one reducer
        merged.update(out[m])
    assert merged == {"a": 2, "b": 2, "c": 1}
    assert g.majority_count(g=7) == 4
    every = choreo.run(g.all_to_all, g=["x", "yy"])
    assert every["x"] == every["yy"] == {"x": 1 + ord("x"), "yy": 2 + 2 * ord("y")}
    assert g.per_member(g=["east", "west"]) == ["hi from east", "hi from west"]


def test_central_call_returns_where_the_result_is() -> None:
    assert g.all_to_all(g=2) == {
        "g.0": {"g.0": 3 + sum(map(ord, "g.0")), "g.1": 3 + sum(map(ord, "g.1"))},
        "g.1": {"g.0": 3 + sum(map(ord, "g.0")), "g.1": 3 + sum(map(ord, "g.1"))},
    }
    assert g.replicate(value=4, backups=2) == {"backups.0": 4, "backups.1": 4}


def test_census_by_name_and_size() -> None:
    assert members_of("c", "g", 3) == ("g.0", "g.1", "g.2")
    assert members_of("c", "g", ["a", "b"]) == ("a", "b")
    for bad in (0, -1, [], ["a", "a"], "abc", True, [1]):
        with pytest.raises(UsageError):
            members_of("c", "g", bad)
    with pytest.raises(UsageError, match="census of group 'g'"):
        choreo.run(g.all_to_all)
    with pytest.raises(UsageError, match="same name"):
        choreo.run(g.per_member, g=["leader", "x"])
    assert parse_census(["g=3", "h=a, b"]) == {"g": 3, "h": ["a", "b"]}
    for bad in ("g", "=3", "g="):
        with pytest.raises(UsageError):
            parse_census([bad])


def test_group_inputs_per_member_or_copied() -> None:
    members = ("g.0", "g.1")
    shared = {"k": [1]}
    a, b = (member_value(shared, members, m) for m in members)
    assert a == b == shared and a is not b and a is not shared
    assert member_value({"g.0": 1, "g.1": 2}, members, "g.1") == 2
    assert member_value({"g.0": 1}, members, "g.1") == {"g.0": 1}  # not every member: one value


def test_scatter_without_a_part_for_every_member_fails_alike() -> None:
    with pytest.raises(ChoreoRuntimeError, match="no entry for g.2"):
        central_results(g.bad_scatter, g=3)
    with pytest.raises(ChoreoRuntimeError, match="no entry for g.2"):
        choreo.run(g.bad_scatter, g=3, timeout=2)


# -- quorum ------------------------------------------------------------------


def test_quorum_gather_completes_without_a_crashed_member() -> None:
    """A member that crashed before answering does not block a majority."""
    out = simulate(g.majority_count, seed=1, faults=Script([Crash("g.2")]), g=3)
    assert out.results["leader"] == 2
    assert type(out.errors["g.2"]).__name__ == "CrashedError"


def test_quorum_gather_completes_without_a_member_that_never_answers() -> None:
    out = simulate(
        g.majority_count, seed=2, faults=Script([Drop("g.0", "leader"), Drop("g.4", "leader")]), g=5
    )
    assert out.results["leader"] == 3
    assert out.ok or set(out.errors) <= {"g.0", "g.4"}


def test_without_enough_members_the_gather_fails_at_its_deadline_naming_them() -> None:
    out = simulate(
        g.majority_count, seed=3, faults=Script([Crash("g.1"), Crash("g.2")]), timeout=2.0, g=3
    )
    err = out.errors["leader"]
    assert isinstance(err, DeadlineError)
    assert "2 of 3" in str(err) and "g.1" in str(err) and "g.2" in str(err)


def test_a_late_reply_never_reaches_the_next_gather() -> None:
    """Round 0 completes with g.0 and g.1; g.2's round-0 reply arrives during round 1.

    It must be dropped, and round 1 must hear g.2's round-1 reply instead: the
    script delivers g.2's late reply first, then its round-1 reply before g.0's.
    """
    late = Script(
        [
            Deliver("g.0", "leader", "group_chors.py:162"),
            Deliver("g.1", "leader", "group_chors.py:162"),
            Deliver("g.2", "leader", "group_chors.py:162"),  # round 0's, late
            Deliver("g.2", "leader", "group_chors.py:162"),  # round 1's
            Deliver("g.0", "leader", "group_chors.py:162"),
        ]
    )
    out = simulate(g.rounds, seed=4, faults=late, n=2, g=3)
    assert out.ok, out.errors
    round0, round1 = out.results["leader"]
    assert round0 == [(0, "g.0"), (0, "g.1")]
    assert round1 == [(1, "g.0"), (1, "g.2")]  # g.2's round-0 reply was not taken for round 1
    delivered = [r for r in out.trace if r["event"] == "recv" and r["from"] == "g.2"]
    assert len([r for r in delivered if r["to"] == "leader"]) == 2  # it did arrive: dropped


def test_rounds_under_random_schedules_never_mix_rounds() -> None:
    for seed in range(40):
        out = simulate(g.rounds, seed=seed, latency=(0.001, 0.05), n=3, g=3)
        assert out.ok, (seed, out.errors)
        for i, heard in enumerate(out.results["leader"]):
            assert len(heard) == 2 and all(r == i for r, _ in heard), (seed, heard)


def _env(sender: str, label: str, payload: bytes = b"", kind: Kind = Kind.DATA) -> Envelope:
    return Envelope("s", sender, "leader", label, kind, payload, "h")


def test_session_core_skips_exactly_the_late_reply() -> None:
    core = SessionCore("s", "leader", "h")
    core.skip("g.2", "f.py:1")  # not there yet: dropped on arrival
    core.deliver(_env("g.2", "f.py:1", b"late"))
    assert core.late == 1 and core.take("g.2", "f.py:1", Kind.DATA) is None
    core.deliver(_env("g.2", "f.py:1", b"next"))  # the next one with the same label is kept
    got = core.take("g.2", "f.py:1", Kind.DATA)
    assert got is not None and got.payload == b"next"
    core.deliver(_env("g.1", "f.py:1", b"queued"))
    core.skip("g.1", "f.py:1")  # already queued: dropped at once
    assert core.late == 2 and core.take("g.1", "f.py:1", Kind.DATA) is None
    core.skip("g.0", "f.py:1")
    core.deliver(_env("g.0", "f.py:9", b"other"))  # another label is not the late reply
    assert core.late == 2
    assert isinstance(core._skip, dict) and core._skip["g.0"] == deque(["f.py:1"])


def test_gather_with_a_timeout_goes_on_with_who_answered() -> None:
    assert choreo.run(g.patient, g=3)["leader"] == ["g.0", "g.1", "g.2"]  # all, at once
    out = simulate(g.patient, seed=5, faults=Script([Crash("g.1")]), timeout=10.0, g=3)
    assert out.results["leader"] == ["g.0", "g.2"]
    assert 1.0 <= out.time < 2.0  # it waited its 1 s, not the 10 s deadline
