"""Groups of roles: central == projected for census sizes 1 to 7, quorum semantics, errors.

The reference is the central interpreter (``choreo._central``), which shares
nothing with the projector or the runtime. Quorum behaviour under silence and
lateness is shown in the simulator, where the schedule is exact.
"""

from __future__ import annotations

import copy
from collections import deque
from pathlib import Path
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
    with pytest.raises(ChoreoRuntimeError, match=r"no entry for g\.2"):
        central_results(g.bad_scatter, g=3)
    with pytest.raises(ChoreoRuntimeError, match=r"no entry for g\.2"):
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


def _line_of(text: str) -> str:
    """The label (``file:line``) of the statement of tests/group_chors.py containing ``text``."""
    lines = Path(g.__file__).read_text().splitlines()
    (n,) = [i for i, line in enumerate(lines, 1) if text in line]
    return f"group_chors.py:{n}"


def test_a_late_reply_never_reaches_the_next_gather() -> None:
    """Round 0 completes with g.0 and g.1; g.2's round-0 reply arrives during round 1.

    It must be dropped, and round 1 must hear g.2's round-1 reply instead: the
    script delivers g.2's late reply first, then its round-1 reply before g.0's.
    """
    REPLY = _line_of("got = g.send(reply, to=leader, quorum=2)")
    late = Script(
        [
            Deliver("g.0", "leader", REPLY),
            Deliver("g.1", "leader", REPLY),
            Deliver("g.2", "leader", REPLY),  # round 0's, late
            Deliver("g.2", "leader", REPLY),  # round 1's
            Deliver("g.0", "leader", REPLY),
            Deliver("g.1", "leader", REPLY),  # round 1's, late in its turn
        ]
    )
    out = simulate(g.rounds, seed=4, faults=late, n=2, g=3)
    assert out.ok, out.errors
    round0, round1 = out.results["leader"]
    assert round0 == [(0, "g.0"), (0, "g.1")]
    assert round1 == [(1, "g.0"), (1, "g.2")]  # g.2's round-0 reply was not taken for round 1
    delivered = [r for r in out.trace if r["event"] == "recv" and r["to"] == "leader"]
    assert len([r for r in delivered if r["from"] == "g.2"]) == 2  # it did arrive: dropped


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


# -- service mode ------------------------------------------------------------


def _service(seed: int = 1) -> Any:
    from choreo.sim import Simulation

    sim = Simulation(seed=seed)
    sim.serve("primary", [g.replicated_put], state=lambda: {"pstore": sim.storage("primary")})
    for i in range(3):
        name = f"backups.{i}"
        sim.serve(name, [g.replicated_put], state=lambda n=name: {"bstore": sim.storage(n)})
    return sim


def test_service_sessions_over_a_group_tolerate_a_crashed_member() -> None:
    sim = _service()

    async def workload() -> Any:
        async with sim.client("c1") as c:
            first = await c.run(g.replicated_put, key="x", value=1)
            sim.crash("backups.1")
            second = await c.run(g.replicated_put, key="y", value=2)
            errors = dict(c.member_errors)
            view = ["backups.0", "backups.2"]  # the next view leaves the crashed member out
            third = await c.run(g.replicated_put, key="z", value=3, backups=view)
            return first, second, errors, third, dict(c.member_errors)

    first, second, errors, third, later = sim.run(workload)
    assert first["client"] == "OK 3" and second["client"] == "OK 2" and third["client"] == "OK 2"
    assert list(errors) == ["backups.1"] and later == {}
    assert "backups.1" not in third  # not a member of that session
    assert sim.storage("primary") == {"x": 1, "y": 2, "z": 3}
    assert sim.storage("backups.0") == sim.storage("backups.2") == {"x": 1, "y": 2, "z": 3}
    assert sim.storage("backups.1") == {"x": 1}  # the server's own state, not a copy


def test_service_census_must_name_served_members() -> None:
    sim = _service()

    async def workload() -> None:
        async with sim.client("c1") as c:
            await c.run(g.replicated_put, key="x", value=1, backups=["backups.0", "nobody"])

    with pytest.raises(UsageError, match="'nobody' of group 'backups' is not served"):
        sim.run(workload)


# -- who talks to whom -------------------------------------------------------


def _envelopes(chor: Any, **inputs: Any) -> list[Envelope]:
    sent: list[Envelope] = []
    choreo.run(chor, trace=sent.append, **inputs)
    return sent


def test_a_sub_group_call_leaves_the_other_members_out() -> None:
    sent = _envelopes(g.outer, value=3, backups=4)
    assert sent, "the run sent nothing"
    touched = {e.sender for e in sent} | {e.receiver for e in sent}
    assert "backups.0" not in touched  # `replicate(primary, backups[1:], v)`
    assert {"backups.1", "backups.2", "backups.3"} <= touched


@pytest.mark.parametrize("n", [1, 3, 6])
def test_a_condition_the_group_holds_needs_no_selection_among_its_members(n: int) -> None:
    for k in (1, 5):  # both branches
        sent = _envelopes(g.group_decides, n=k, g=n)
        selects = [(e.sender, e.receiver) for e in sent if e.kind == Kind.SELECT]
        # decided by the group (k was multicast to it): its first member tells the two
        # roles outside it whose behaviour differs; no member is ever told
        assert sorted(selects) == [("g.0", "leader"), ("g.0", "outsider")]


def test_a_loop_the_group_decides_tells_outsiders_once_per_iteration() -> None:
    sent = _envelopes(g.group_loop, n=3, g=4)
    selects = [(e.sender, e.receiver) for e in sent if e.kind == Kind.SELECT]
    assert selects == [("g.0", "outsider")] * 4  # three iterations and the end


# -- a failed member fails only what waits for it -----------------------------


def test_a_member_that_fails_does_not_end_the_session_for_the_others() -> None:
    # g.2 loses the first request: it reads the second where it expects the first
    # (ProtocolError) and fails; the majority gather goes on with g.0 and g.1
    out = simulate(g.two_requests, seed=1, faults=Script([Drop("leader", "g.2")]), x=1, g=3)
    assert out.results["leader"] == 2
    assert set(out.errors) == {"g.2"}


def test_a_failed_member_that_makes_the_quorum_impossible_fails_the_gather_at_once() -> None:
    drops = Script([Drop("leader", "g.1"), Drop("leader", "g.2")])
    out = simulate(g.two_requests, seed=1, faults=drops, timeout=30.0, x=1, g=3)
    err = out.errors["leader"]
    assert type(err).__name__ == "PeerFailedError" and "g.1" in str(err)
    assert out.time < 1.0  # told by the members' aborts, not by its own 30 s deadline


def test_waiting_for_a_failed_member_fails_with_its_error() -> None:
    out = simulate(
        g.from_the_last, seed=1, faults=Script([Drop("leader", "g.2")]), timeout=30.0, x=1, g=3
    )
    err = out.errors["leader"]
    assert type(err).__name__ in ("PeerFailedError", "DeadlineError")
    assert "g.2" in str(err)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_a_branch_that_differs_at_one_member_tells_only_that_member(n: int) -> None:
    sent = _envelopes(g.route, key=3, nodes=n)
    selects = [e.receiver for e in sent if e.kind == Kind.SELECT]
    assert selects == [f"nodes.{i}" for i in range(n)]  # one per iteration, to that member
    assert choreo.run(g.route, key=3, nodes=n) == central_results(g.route, key=3, nodes=n)
