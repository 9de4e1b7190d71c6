"""Knowledge of choice: selections go to exactly the roles whose behaviour differs."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

import choreo
from choreo._envelope import Envelope, Kind

SOURCE = """
from choreo import At, Role, choreography

@choreography
def branchy(a: Role, b: Role, c: Role, d: Role, e: Role, x: At[int, "a"]) -> At[int, "a"]:
    # c gets the same thing on both paths; d takes part in neither branch;
    # e only runs identical local code in both; b behaves differently.
    y = a.send(x, to=c)
    if x > 0:
        r = b.send(1, to=a)
        with e:
            note = "same"
    else:
        with b:
            z = 2
        r = a.send(0, to=a)
        with e:
            note = "same"
    with c:
        w = y + 1
    v = c.send(w, to=d)
    with a:
        out = r + x
    return out

@choreography
def loop(a: Role, b: Role, c: Role, n: At[int, "a"]) -> At[int, "a"]:
    # b is in the loop body, c never is: only b hears "continue"/"stop".
    with a:
        k = n
        total = 0
    while k > 0:
        got = a.send(k, to=b)
        with b:
            twice = got * 2
        back = b.send(twice, to=a)
        with a:
            total = total + back
            k = k - 1
    with a:
        done = total
    return done

@choreography
def merged(a: Role, b: Role, x: At[int, "a"]) -> At[int, "b"]:
    # b's branches start with the same local code: it is hoisted before the offer.
    if x > 0:
        with b:
            base = 10
            r = base + 1
    else:
        with b:
            base = 10
            r = base - 1
    return r

@choreography
def replicated_condition(a: Role, b: Role, x: At[int, "a"]) -> At[int, "b"]:
    k = 3
    if k > 2:
        y = a.send(x, to=b)
    else:
        y = a.send(x + 1, to=b)
    return y
"""


@pytest.fixture(scope="module")
def mod() -> Any:
    return choreo.module_from_source(SOURCE, "koc")


def _selections(chor: Any, **inputs: Any) -> tuple[dict[str, Any], Counter[tuple[str, str]]]:
    seen: list[Envelope] = []
    result = choreo.run(chor, timeout=5, trace=seen.append, **inputs)
    return result, Counter((e.sender, e.receiver) for e in seen if e.kind == Kind.SELECT)


@pytest.mark.parametrize("x", [5, -5])
def test_if_selects_only_roles_that_behave_differently(mod: Any, x: int) -> None:
    result, sel = _selections(mod.branchy, x=x)
    assert result["a"] == mod.branchy(x=x)
    assert sel == Counter({("a", "b"): 1})
    # and the projections say the same: c, d and e never offer
    for role in ("c", "d", "e"):
        assert ".offer(" not in mod.branchy.project(role)
    assert ".offer(" in mod.branchy.project("b")


@pytest.mark.parametrize("n", [0, 1, 4])
def test_while_selects_each_iteration_and_only_for_participants(mod: Any, n: int) -> None:
    result, sel = _selections(mod.loop, n=n)
    assert result["a"] == mod.loop(n=n)
    assert sel == Counter({("a", "b"): n + 1})  # one "continue" per iteration, one "stop"
    assert mod.loop.project("c").count("await") == 0
    assert "c" not in mod.loop.active_roles()


def test_common_prefix_is_merged_before_the_offer(mod: Any) -> None:
    src = mod.merged.project("b")
    assert src.index("base = 10") < src.index(".offer(")
    assert src.count("base = 10") == 1
    for x in (1, -1):
        assert choreo.run(mod.merged, x=x)["b"] == mod.merged(x=x)


def test_replicated_condition_needs_no_selection(mod: Any) -> None:
    result, sel = _selections(mod.replicated_condition, x=4)
    assert result["b"] == 4
    assert sel == Counter()
