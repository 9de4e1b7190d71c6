"""The in-process runtime: results, failures, deadlines, protocol checks, caching."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import choreo
from choreo._dsl import stats
from choreo._endpoint import Endpoint, Node
from choreo._envelope import Envelope, Kind
from choreo._session import SessionCore
from choreo._transport import LocalNetwork

SOURCE = """
from choreo import At, Role, choreography

def boom(x):
    raise ValueError(f"bad input {x}")

@choreography
def fails_at_b(a: Role, b: Role, c: Role, x: At[int, "a"]) -> At[int, "c"]:
    y = a.send(x, to=b)
    with b:
        z = boom(y)
    w = b.send(z, to=c)
    return w

@choreography
def waits(a: Role, b: Role, x: At[int, "a"]) -> At[int, "b"]:
    y = a.send(x, to=b)
    return y

@choreography
def multicast(a: Role, b: Role, c: Role, x: At[list, "a"]) -> At[list, "c"]:
    y = a.send(x, to=[a, b, c])
    with a:
        mine = list(y)
        mine.append("a-only")   # a changes its own copy: b and c do not see this
    with b:
        n = len(y)
    m = b.send(n, to=c)
    with c:
        out = y + [m]
    return out

@choreography
def mutate_then_share(a: Role, b: Role, x: At[list, "a"]) -> At[list, "b"]:
    y = a.send(x, to=[a, b])
    with a:
        y.append(1)
    with b:
        z = y + [0]
    return z
"""


@pytest.fixture(scope="module")
def mod() -> Any:
    return choreo.module_from_source(SOURCE, "rt")


def test_local_failure_is_reported_and_peers_stop_early(mod: Any) -> None:
    start = time.monotonic()
    with pytest.raises(choreo.RoleFailedError, match=r"role b raised ValueError: bad input 7"):
        choreo.run(mod.fails_at_b, timeout=30, x=7)
    # c was waiting for b: the ABORT makes it stop long before its 30 s deadline
    assert time.monotonic() - start < 5


def test_deadline_names_role_peer_session_and_label(mod: Any) -> None:
    async def only_b() -> None:
        net = LocalNetwork()
        node = Node("b", net.transport("b"))
        await node.start()
        ctx = node.open("sess-1", mod.waits.hash, 0.2, ["a", "b"])
        await mod.waits._endpoint_function("b")(Endpoint(ctx, {"a": "a", "b": "b"}))

    start = time.monotonic()
    with pytest.raises(choreo.DeadlineError) as info:
        asyncio.run(only_b())  # a never runs
    assert time.monotonic() - start < 0.2 + 1.5  # it fails at its 0.2 s deadline, not later
    msg = str(info.value)
    assert "b waited 0.2s" in msg and "from a" in msg and "session sess-1" in msg
    lines = SOURCE.splitlines()
    line = (
        lines.index(
            "    y = a.send(x, to=b)",
            lines.index('def waits(a: Role, b: Role, x: At[int, "a"]) -> At[int, "b"]:'),
        )
        + 1
    )
    assert f":{line}" in msg  # the choreography line of the send b was waiting for


def test_multicast_copies_are_independent(mod: Any) -> None:
    central = mod.multicast(x=[1, 2])
    assert central == [1, 2, 2]
    assert choreo.run(mod.multicast, x=[1, 2])["c"] == central


def test_changing_a_shared_value_in_place_is_an_error(mod: Any) -> None:
    with pytest.raises(choreo.CheckError, match="`y` is held by a and b; changing it in place"):
        mod.mutate_then_share.check()


def test_roles_can_be_renamed_and_results_are_keyed_by_name(mod: Any) -> None:
    out = choreo.run(mod.multicast, a="alice", b="bob", x=[0])
    assert out == {"alice": None, "bob": None, "c": [0, 1]}


def test_missing_and_unknown_inputs_are_usage_errors(mod: Any) -> None:
    with pytest.raises(choreo.UsageError, match="needs the input 'x'"):
        choreo.run(mod.multicast)
    with pytest.raises(choreo.UsageError, match="no parameter 'nope'"):
        choreo.run(mod.multicast, x=[], nope=1)


def test_run_inside_event_loop_points_to_run_async(mod: Any) -> None:
    async def inner() -> dict[str, Any]:
        with pytest.raises(choreo.UsageError, match="run_async"):
            choreo.run(mod.multicast, x=[])
        return await choreo.run_async(mod.multicast, x=[5])

    assert asyncio.run(inner())["c"] == [5, 1]


def test_projection_is_cached_by_source_hash() -> None:
    src = SOURCE.replace("fails_at_b", "fails_at_b2")
    first = choreo.module_from_source(src, "cache1")
    first.multicast.project("a")
    before = (stats.parses, stats.checks, stats.projections)
    again = choreo.module_from_source(src, "cache1")  # the same source, imported again
    assert again.multicast.project("a") == first.multicast.project("a")
    assert choreo.run(again.multicast, x=[1])["c"] == [1, 1]
    assert (stats.parses, stats.checks, stats.projections) == before


def _env(label: str, kind: Kind = Kind.DATA, chash: str = "h") -> Envelope:
    return Envelope("s", "a", "b", label, kind, b"", chash)


def test_session_core_rejects_unexpected_label() -> None:
    core = SessionCore("s", "b", "h")
    core.deliver(_env("f.py:3"))
    with pytest.raises(
        choreo.ProtocolError, match=r"expected DATA f.py:2 from a but received DATA f.py:3"
    ):
        core.take("a", "f.py:2", Kind.DATA)


def test_session_core_rejects_selection_where_data_expected() -> None:
    core = SessionCore("s", "b", "h")
    core.deliver(_env("f.py:2", Kind.SELECT))
    with pytest.raises(choreo.ProtocolError, match="expected DATA"):
        core.take("a", "f.py:2", Kind.DATA)


def test_version_mismatch_fails_on_both_sides() -> None:
    async def scenario() -> tuple[BaseException | None, BaseException | None]:
        net = LocalNetwork()
        na, nb = Node("a", net.transport("a")), Node("b", net.transport("b"))
        await na.start()
        await nb.start()
        ca = na.open("s1", "source-v1", 2.0, ["a", "b"])
        cb = nb.open("s1", "source-v2", 2.0, ["a", "b"])
        ea, eb = Endpoint(ca, {"a": "a", "b": "b"}), Endpoint(cb, {"a": "a", "b": "b"})

        async def side_a() -> None:
            await ea.send("b", 1, "f.py:1")
            await ea.recv("b", "f.py:2")

        async def side_b() -> None:
            await eb.recv("a", "f.py:1")

        ra, rb = await asyncio.gather(side_a(), side_b(), return_exceptions=True)
        await na.aclose()
        await nb.aclose()
        return ra, rb  # type: ignore[return-value]

    ra, rb = asyncio.run(scenario())
    assert isinstance(rb, choreo.VersionMismatchError) and "source-v2" in str(rb)
    assert isinstance(ra, choreo.VersionMismatchError) and "rejected" in str(ra)


def test_envelopes_for_unopened_sessions_wait_and_late_ones_are_counted() -> None:
    async def scenario() -> tuple[Any, int]:
        net = LocalNetwork()
        na, nb = Node("a", net.transport("a")), Node("b", net.transport("b"))
        await na.start()
        await nb.start()
        ca = na.open("s", "h", 1.0, ["a", "b"])
        await Endpoint(ca, {"b": "b"}).send("b", "early", "f.py:1")  # b has not opened s yet
        cb = nb.open("s", "h", 1.0, ["a", "b"])
        got = await Endpoint(cb, {"a": "a"}).recv("a", "f.py:1")
        nb.close("s")
        await Endpoint(ca, {"b": "b"}).send("b", "late", "f.py:2")
        return got, nb.dropped_late

    assert asyncio.run(scenario()) == ("early", 1)
