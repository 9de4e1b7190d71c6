"""Hypothesis strategies that generate small well-formed choreographies as source text.

``choreographies()`` draws a whole module: maybe a module constant and a plain
helper function, 0..2 sub-choreographies (2..3 roles each, each may call the
earlier ones), then a ``main`` choreography over 2..5 roles, in the language
subset of DESIGN.md section 2 without groups. Every generated program is
well-formed by construction: the generator tracks, for every name, the set of
roles that hold it (``None`` for a value every role knows: literals, module
and top-level constants, loop indices) and only reads a name where it is held.

The rules the generator keeps (``tests/test_strategies_selfcheck.py``
re-checks them on the parsed source, with its own location checker):

- a ``with r:`` block and the expression of a send from ``r`` read only names
  held by ``r``, literals, constants, enclosing loop indices and global
  functions (``abs``/``min``/``max`` and the module's helper);
- a condition reads at least one located name, and all the located names it
  reads are held by a common set of roles (a single role or a multicast set);
- names bound inside a compound statement are not used after it; the only
  names rebound inside one are single-role locals (``with r: v = v + 1``),
  which stay where they were;
- plain (replicated) statements are only ``cN = <constant expression>`` at
  the top level of a choreography body;
- ``for`` loops run over ``range(0..3)`` (a literal or a constant);
  ``while`` loops follow the counter pattern (``with r: kN = 0..3`` before,
  ``with r: kN = kN - 1`` first in the body, condition ``kN > 0 [and <more at
  r>]``), so everything terminates;
- ``return`` is the last statement, or ends both branches of a final ``if``
  (both at the same role, or both literals); ints only, no division, products
  are kept bounded with ``% 1000``;
- a sub-choreography returns a name held by exactly the role its annotation
  names; a call passes distinct roles in any order and value arguments held
  by the role the callee's parameter names.

Besides the source, a ``Program`` carries what the property tests need to
judge a run: where the result is located, which roles take no part, the
roles that take part in each ``if``/``while`` of ``main`` (selections may only
go to them) and where each name of ``main`` is ever held. ``run_reference``
runs a module as plain Python with stand-ins and records every value that
had to move (sender, receiver, line).

Shrinking goes towards fewer roles, fewer statements and the simplest
statement kinds (a local block first); optional twists are drawn so that
they shrink away.

Groups. ``group_choreographies()`` (``Options(groups=True)``) draws modules whose
``main`` has 1..4 roles and 1..2 groups (``g``, ``h``: ``Roles``, census given at
run time by ``group_runs``: 1..7 members, a size or a list of names), maybe an
input located at a group, and sub-choreographies that are core ones or take a
group ``w`` beside 1..2 roles. Besides the core statements, bodies use:

- ``with P [as m]:`` at a group, a slice (``g[1:]``, ``g[:-1]``), a member
  (``g[0]``, ``g[-1]``) or a loop's member, computing facets from ``m``
  (``len(m)``, ``ord(m[-1])``), ``len(g)`` and what the members hold;
- sends from a role or a member to places of which one is in a group
  (multicast ``to=g``, ``to=g[1:]``, ``to=g[0]``, ``to=[a, g]``; a member to
  its own group); scatters ``s.scatter({q: ... for q in g}, to=g)``;
- gathers ``g.send(e, to=r)`` (or from a slice, to several places, to a
  group, all-to-all) with or without ``quorum=`` (``majority``, ``1``,
  ``len(g)``, ``len(g) - 1``, ``0``: valid for every census), and group-to-group
  sends and scatters (shuffles); each receiver folds the dict at once into an
  int that does not depend on which members a quorum heard (its size; a sum,
  min or max of its values only when every sender sent the same value or
  there is no quorum);
- ``for m in g:`` (or a slice) with ``m`` sending, receiving or running code;
  ``for a, b in zip(g, g[1:]):`` chains; a relay (a value passed from member to
  member, rebound at each); ``for i in range(len(g)):``;
- ``if``/``elif`` decided by a group on a value multicast to it as a whole
  (``x = a.send(e, to=g)``; ``g[0]`` tells the outsiders taking part), and
  ``while`` loops decided by a group (a counter multicast to it, counted
  down at ``g[0]`` and multicast again);
- calls passing a group or a slice to a sub-choreography's group, or a member
  as one of its roles.

Where a value lives is tracked per place, so a block at ``g[0]`` never reads
what only ``g[-1]`` holds (the same member only when the census is 1), and a
sub-choreography whose group may be passed an empty slice uses no single
member and decides nothing at its group. ``run_model`` runs the generator's
own statements with one namespace per role and member: the reference the
group properties compare ``choreo.run`` and choreo's central run against.
"""

from __future__ import annotations

import builtins
import copy
import inspect
import itertools
import random
import re
import sys
import types
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from hypothesis import strategies as st

__all__ = [
    "ALL_FEATURES",
    "GROUP_FEATURES",
    "GroupRun",
    "ModelRun",
    "Options",
    "Program",
    "Reference",
    "choreographies",
    "group_choreographies",
    "group_runs",
    "run_model",
    "run_reference",
]

T = TypeVar("T")

_LOOP_INDEX = re.compile(r"i[0-9]+")

# value names that generated endpoint code might use for itself
_TRICKY = (
    "ep",
    "ep_",
    "main_a",
    "main_b",
    "sub_0_a",
    "send",
    "recv",
    "call",
    "label",
    "session",
    "result",
    "self",
    "asyncio",
    "choreo",
    "i",
    "_",
)

Loc = frozenset[str] | None  # None: every role knows the value

ALL_FEATURES = frozenset(
    {
        "local",
        "rebind",
        "send",
        "multicast",
        "multicast_self",
        "self_send",
        "const",
        "const_expr",
        "range_const",
        "module_global",
        "builtin_call",
        "helper_call",
        "ternary",
        "tricky_name",
        "if",
        "else",
        "if_multi",
        "elif",
        "nested_if",
        "while",
        "while_and",
        "for",
        "loop_index",
        "call",
        "call_permuted",
        "call_in_sub",
        "idle_role",
        "return_single",
        "return_multi",
        "return_literal",
        "return_const",
        "return_none",
        "return_branches",
        "return_branches_literal",
        "return_branches_in_sub",
    }
)


# the statements of ``_Gen.group_stmt``
_GROUP_STMTS = frozenset(
    {"glocal", "gsend", "gather", "shuffle", "scatter", "gfor", "chain", "relay", "gwhile"}
    | {"range_len", "gcall", "mcall"}
)

# what ``group_choreographies()`` generates beyond the core constructs
GROUP_FEATURES = frozenset(
    {
        "all_to_all",  # a group sends (or scatters) to itself
        "call_group",  # a sub-choreography with a group parameter
        "call_group_slice",  # ... passed a slice
        "call_member",  # a sub-choreography's role played by a member
        "chain",  # for a, b in zip(g, g[1:])
        "for_group_size",  # for i in range(len(g))
        "for_member",  # for m in g
        "for_member_slice",  # for m in g[1:]
        "gather",
        "gather_majority",
        "gather_quorum",
        "gather_quorum_slice",
        "gather_slice",
        "gather_to_group",
        "gather_to_several",
        "glocal_as",  # with g as m
        "glocal_group",  # with g
        "glocal_loop_member",  # with m (a loop's member)
        "glocal_member",  # with g[0] / with g[-1]
        "glocal_member_as",  # with g[0] as m
        "glocal_slice",  # with g[1:] / with g[:-1]
        "group_input",  # an input located at a group
        "group_size",  # len(g) in an expression
        "group_to_group",  # a group sends to a group
        "if_group",  # a condition decided by a group
        "if_group_outsider",  # ... with roles outside the group in the branch
        "member_name",  # len(m) / ord(m[-1])
        "member_send",  # a member sends
        "multicast_group",  # to=g
        "multicast_mixed",  # to=[a, g]
        "multicast_slice",  # to=g[1:]
        "relay",  # a value passed along the members
        "return_group",  # main's result at a group
        "return_group_in_sub",
        "scatter",
        "scatter_from_member",
        "scatter_slice",
        "send_to_member",  # to=g[0]
        "send_within_group",  # a member sends to its own group
        "shuffle",  # a group scatters to a group
        "while_group",  # a loop decided by a group
        "while_group_and",
    }
)


@dataclass(frozen=True)
class Options:
    """Which constructs the generator may use (narrow it to isolate a core bug)."""

    max_roles: int = 5
    subs: bool = True
    multicast: bool = True
    self_send: bool = True
    ifs: bool = True
    whiles: bool = True
    fors: bool = True
    consts: bool = True
    rebind: bool = True
    idle_roles: bool = True
    multi_conditions: bool = True  # conditions located at a multicast set
    elifs: bool = True
    tricky_names: bool = True  # now and then a value named like projector internals (`ep`, ...)
    globals: bool = True  # module constant, helper function, abs/min/max in expressions
    ternaries: bool = True  # `x if c else y` in local code and send expressions
    loop_index_reads: bool = True
    returns: tuple[str, ...] = (
        "single",
        "literal",
        "multi",
        "const",
        "none",
        "branches",
        "branches_literal",
    )
    branch_returns: bool = True  # `return` in both branches of a final `if`
    max_depth: int = 3
    main_budget: int = 14
    sub_budget: int = 6
    # groups of roles (``g: Roles``): off for the core generator; ``group_choreographies()``
    # turns them on (1..2 groups beside 1..4 roles) with the constructs in ``group_kinds``
    groups: bool = False
    max_groups: int = 2
    # a gather or shuffle whose receivers may all be an empty slice (``to=g[1:]`` with one
    # member); once crashed choreo's central interpreter (fixed, generated again)
    empty_receivers: bool = True
    # a condition at a role on a value some members of a group hold too (``v`` after
    # ``a.send(x, to=[b, g[0]])``, decided by ``b``); once rejected (fixed, generated again)
    faceted_deciders: bool = True
    # ``quorum=majority`` from a slice (or a sub-choreography's group) that may have no
    # member; once failed the projected run (fixed: a majority of nobody is 0)
    empty_majority: bool = True
    group_kinds: frozenset[str] = frozenset(
        {
            "glocal",
            "gsend",
            "gather",
            "quorum",
            "scatter",
            "shuffle",
            "gfor",
            "chain",
            "relay",
            "gif",
            "gwhile",
            "range_len",
            "gcall",
            "mcall",
            "group_inputs",
        }
    )


@dataclass(frozen=True)
class Program:
    """A generated module and how to run it."""

    source: str
    inputs: dict[str, int]
    roles: list[str]  # every role parameter of the main choreography, in order
    main_name: str
    result_roles: frozenset[str] | None  # None: the result is known to every role
    features: frozenset[str] = field(default=frozenset())
    idle_roles: frozenset[str] = field(default=frozenset())
    # line of every `if`/`elif`/`while` of the main choreography -> the roles that take
    # part in it; a selection (knowledge of choice) for it can only be needed by them
    choices: dict[int, frozenset[str]] = field(default_factory=dict)
    # the same, counting every role passed to a sub-choreography call as taking part
    choices_calls_all: dict[int, frozenset[str]] = field(default_factory=dict)
    # every name the main choreography binds -> the roles that ever hold it (None: every role)
    holders: dict[str, frozenset[str] | None] = field(default_factory=dict)
    # group parameters of the main choreography, in order (roles and groups are its parties)
    groups: list[str] = field(default_factory=list)
    # inputs located at a group (name -> group); their values are drawn with the census
    group_inputs: dict[str, str] = field(default_factory=dict)
    # every choreography of the module as the generator built it: what ``run_model`` runs
    chors: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    prelude: str = field(default="", repr=False)  # the module's constants and helper

    @property
    def parties(self) -> list[str]:
        """Roles then groups: every endpoint of the main choreography."""
        return [*self.roles, *self.groups]

    def expected(self, central: Any) -> dict[str, Any]:
        """Each role's result in a projected run, given the centralized result."""
        return {
            r: central if self.result_roles is None or r in self.result_roles else None
            for r in self.roles
        }


# --------------------------------------------------------------------------
# expressions: (text, precedence); 100 for atoms


_PREC = {"+": 1, "-": 1, "*": 2, "%": 2}


def _bin(op: str, left: tuple[str, int], right: tuple[str, int]) -> tuple[str, int]:
    p = _PREC[op]
    lt = left[0] if left[1] >= p else f"({left[0]})"
    rt = right[0] if right[1] > p else f"({right[0]})"
    return f"{lt} {op} {rt}", p


def _mod(e: tuple[str, int]) -> tuple[str, int]:
    return _bin("%", e if e[1] == 100 else (f"({e[0]})", 100), ("1000", 100))


# --------------------------------------------------------------------------
# statements of the generated program


@dataclass
class _Local:
    role: str
    assigns: list[tuple[str, str]]


@dataclass
class _Send:
    target: str
    sender: str
    expr: str
    to: list[str]
    as_list: bool
    line: int = 0  # filled when rendered


@dataclass
class _Const:
    target: str
    value: str  # an int expression over literals and constants


@dataclass
class _Globals:
    """What the module defines above the choreographies."""

    consts: dict[str, int]
    helper: str | None


@dataclass
class _If:
    cond: str
    then: list[Any]
    orelse: list[Any]
    as_elif: bool = False  # rendered as `elif` in its parent's else
    where: frozenset[str] = frozenset()  # the roles that evaluate the condition


@dataclass
class _While:
    cond: str
    body: list[Any]
    where: frozenset[str] = frozenset()


@dataclass
class _For:
    var: str
    n: str  # a literal or a constant's name
    body: list[Any]


@dataclass
class _Call:
    target: str
    callee: str
    roles: list[str]
    args: list[str]
    involved: frozenset[str] = frozenset()  # the caller's roles that do anything in the callee
    at: frozenset[str] = frozenset()  # where the result is located
    line: int = 0


@dataclass
class _Return:
    expr: str | None
    at: frozenset[str] | None = None  # roles that return a value (None: every role)


@dataclass
class _GLocal:
    """``with place [as member]:`` at a group, a slice, one member or a loop's member."""

    place: str
    member: str | None
    assigns: list[tuple[str, str]]


@dataclass
class _GSend:
    """A send involving a group: multicast, member send, gather, scatter, shuffle."""

    target: str
    sender: str  # a place
    expr: str
    to: list[str]  # places
    scatter: bool = False
    quorum: str | None = None
    as_list: bool = False
    line: int = 0


@dataclass
class _GFor:
    """``for var in over:`` over a group or a slice of one; ``var`` is a member."""

    var: str
    over: str
    body: list[Any]


@dataclass
class _Chain:
    """``for first, second in zip(g, g[1:]):``."""

    first: str
    second: str
    group: str
    body: list[Any]


@dataclass
class _Sub:
    """A generated sub-choreography's signature."""

    name: str
    roles: list[str]
    params: list[tuple[str, str]]  # (name, role or group)
    ret_role: str  # a role, or the group (each member returns its own value)
    # roles that do anything in it (run code, send, receive, decide, return, get an argument)
    involved: frozenset[str] = frozenset()
    groups: list[str] = field(default_factory=list)
    # whether it needs its group non-empty (single members, group-decided conditions)
    nonempty: bool = True


def _party(token: str, var_group: dict[str, str] | None = None) -> str:
    """The role or group a place or location token belongs to.

    ``a`` -> ``a``; ``g``, ``g=``, ``g[0]``, ``g[1:]`` -> ``g``; a loop's member -> its group.
    """
    if var_group and token in var_group:
        return var_group[token]
    return token.split("[", 1)[0].rstrip("=")


def _parties(tokens: Sequence[str], var_group: dict[str, str] | None = None) -> frozenset[str]:
    return frozenset(_party(t, var_group) for t in tokens)


def _involved(
    stmts: Sequence[Any],
    everyone: frozenset[str],
    calls_all: bool = False,
    var_group: dict[str, str] | None = None,
) -> frozenset[str]:
    """Roles (and groups) that do anything in ``stmts``.

    For a sub-choreography call, the roles that do anything in the callee (or,
    with ``calls_all``, every role passed to it).
    """
    out: set[str] = set()
    vg = var_group
    for s in stmts:
        match s:
            case _Local(role=role):
                out.add(role)
            case _Send(sender=snd, to=to):
                out |= {snd, *to}
            case _GLocal(place=place):
                out.add(_party(place, vg))
            case _GSend(sender=snd, to=to):
                out |= _parties([snd, *to], vg)
            case _If(then=then, orelse=orelse, where=where):
                out |= _parties(sorted(where), vg)
                out |= _involved(then, everyone, calls_all, vg)
                out |= _involved(orelse, everyone, calls_all, vg)
            case _While(body=body, where=where):
                out |= _parties(sorted(where), vg) | _involved(body, everyone, calls_all, vg)
            case _For(body=body) | _GFor(body=body) | _Chain(body=body):
                out |= _involved(body, everyone, calls_all, vg)
            case _Call(roles=roles, involved=involved):
                out |= _parties(roles, vg) if calls_all else involved
            case _Return(at=at):
                out |= everyone if at is None else _parties(sorted(at), vg)
    return frozenset(out)


def _holders(
    stmts: Sequence[Any],
    out: dict[str, frozenset[str] | None],
    var_group: dict[str, str] | None = None,
) -> None:
    """Every name bound in ``stmts`` -> the roles (and groups) that ever hold it.

    None: every role (a replicated value, a loop variable).
    """
    vg = var_group

    def add(name: str, where: frozenset[str] | None) -> None:
        old = out.get(name, frozenset())
        out[name] = None if where is None or old is None else old | where

    for s in stmts:
        match s:
            case _Local(role=role, assigns=assigns):
                for t, _ in assigns:
                    add(t, frozenset({role}))
            case _GLocal(place=place, member=member, assigns=assigns):
                for t, _ in assigns:
                    add(t, frozenset({_party(place, vg)}))
                if member is not None:
                    add(member, frozenset({_party(place, vg)}))
            case _Send(target=t, to=to):
                add(t, frozenset(to))
            case _GSend(target=t, to=to):
                add(t, _parties(to, vg))
            case _Const(target=t):
                add(t, None)
            case _Call(target=t, at=at):
                add(t, _parties(sorted(at), vg))
            case _If(then=then, orelse=orelse):
                _holders(then, out, vg)
                _holders(orelse, out, vg)
            case _While(body=body):
                _holders(body, out, vg)
            case _For(var=v, body=body) | _GFor(var=v, body=body):
                add(v, None)
                _holders(body, out, vg)
            case _Chain(first=a, second=b, body=body):
                add(a, None)
                add(b, None)
                _holders(body, out, vg)


def _render(
    stmts: Sequence[Any],
    indent: int,
    out: list[str],
    choices: dict[int, frozenset[str]] | None = None,
    everyone: frozenset[str] = frozenset(),
    choices_calls_all: dict[int, frozenset[str]] | None = None,
    var_group: dict[str, str] | None = None,
) -> None:
    """Append the source of ``stmts`` to ``out``; note each send's line in it.

    With ``choices``, record for the line of every ``if``/``elif``/``while``
    the roles that take part in it (the only ones a selection may be sent to);
    ``choices_calls_all`` counts every role passed to a call as taking part.
    """
    pad = "    " * indent

    def inner(body: Sequence[Any], more: int) -> None:
        _render(body, indent + more, out, choices, everyone, choices_calls_all, var_group)

    def note_choice(s: Any) -> None:
        if choices is not None and choices_calls_all is not None:
            choices[len(out)] = _involved([s], everyone, False, var_group)
            choices_calls_all[len(out)] = _involved([s], everyone, True, var_group)

    for s in stmts:
        match s:
            case _Local(role=role, assigns=assigns):
                out.append(f"{pad}with {role}:")
                out.extend(f"{pad}    {t} = {e}" for t, e in assigns)
            case _GLocal(place=place, member=member, assigns=assigns):
                out.append(f"{pad}with {place}{'' if member is None else ' as ' + member}:")
                out.extend(f"{pad}    {t} = {e}" for t, e in assigns)
            case _Send(target=t, sender=snd, expr=e, to=to, as_list=as_list):
                dest = f"[{', '.join(to)}]" if as_list else to[0]
                out.append(f"{pad}{t} = {snd}.send({e}, to={dest})")
                s.line = len(out)
            case _GSend(target=t, sender=snd, expr=e, to=to, as_list=as_list):
                dest = f"[{', '.join(to)}]" if as_list else to[0]
                method = "scatter" if s.scatter else "send"
                quorum = "" if s.quorum is None else f", quorum={s.quorum}"
                one = f"{pad}{t} = {snd}.{method}({e}, to={dest}{quorum})"
                if len(one) <= 100:
                    out.append(one)
                    s.line = len(out)
                else:  # one argument a line; the statement's line is its first
                    out.append(f"{pad}{t} = {snd}.{method}(")
                    s.line = len(out)
                    out.append(f"{pad}    {e},")
                    out.append(f"{pad}    to={dest},")
                    if s.quorum is not None:
                        out.append(f"{pad}    quorum={s.quorum},")
                    out.append(f"{pad})")
            case _Const(target=t, value=v):
                out.append(f"{pad}{t} = {v}")
            case _If(cond=c, then=then, orelse=orelse, as_elif=as_elif):
                out.append(f"{pad}{'elif' if as_elif else 'if'} {c}:")
                note_choice(s)
                inner(then, 1)
                if len(orelse) == 1 and isinstance(orelse[0], _If) and orelse[0].as_elif:
                    inner(orelse, 0)
                elif orelse:
                    out.append(f"{pad}else:")
                    inner(orelse, 1)
            case _While(cond=c, body=body):
                out.append(f"{pad}while {c}:")
                note_choice(s)
                inner(body, 1)
            case _For(var=v, n=n, body=body):
                out.append(f"{pad}for {v} in range({n}):")
                inner(body, 1)
            case _GFor(var=v, over=over, body=body):
                out.append(f"{pad}for {v} in {over}:")
                inner(body, 1)
            case _Chain(first=a, second=b, group=g, body=body):
                out.append(f"{pad}for {a}, {b} in zip({g}, {g}[1:]):")
                inner(body, 1)
            case _Call(target=t, callee=callee, roles=roles, args=args):
                out.append(f"{pad}{t} = {callee}({', '.join([*roles, *args])})")
                s.line = len(out)
            case _Return(expr=e):
                out.append(f"{pad}return" if e is None else f"{pad}return {e}")
            case _:  # pragma: no cover
                raise TypeError(s)


# --------------------------------------------------------------------------
# the generator


class _Gen:
    """Generates one choreography body, tracking where every name is held."""

    def __init__(
        self,
        draw: Callable[[st.SearchStrategy[Any]], Any],
        opts: Options,
        active: list[str],
        subs: list[_Sub],
        budget: int,
        features: set[str],
        in_sub: bool,
        module: _Globals,
        groups: Sequence[str] = (),
        maybe_empty: frozenset[str] = frozenset(),
    ) -> None:
        self.draw = draw
        self.module = module
        self.const_values: dict[str, int] = dict(module.consts)
        self.opts = opts
        self.active = active
        self.subs = subs
        self.budget = budget
        self.features = features
        self.in_sub = in_sub
        self.counter = 0
        self.used: set[str] = set()
        # groups (``g: Roles``) this body may use; those that may have no member (a
        # sub-choreography's group passed a slice) get no single-member places and
        # never decide a condition
        self.groups = list(groups)
        self.maybe_empty = maybe_empty
        self.var_group: dict[str, str] = {}  # every loop member variable -> its group
        self.member_vars: list[str] = []  # loop member variables in scope
        self.str_atoms: list[str] = []  # member names readable here (loop variables, `as m`)
        self.uniform: set[str] = set()  # names every group member that holds them has equal
        self.weight = 1  # how many times the statement being generated may run (loops)

    # -- drawing helpers ----------------------------------------------------
    def choice(self, seq: Sequence[T]) -> T:
        return self.draw(st.sampled_from(list(seq)))

    def integer(self, lo: int, hi: int) -> int:
        return self.draw(st.integers(lo, hi))

    def flag(self) -> bool:
        return self.draw(st.booleans())

    def fresh(self, prefix: str = "v") -> str:
        self.counter += 1
        if prefix == "v" and self.opts.tricky_names and self.integer(0, 9) == 9:
            # names a projector might use itself (endpoint parameter, function names, ...)
            free = [n for n in _TRICKY if n not in self.used and n not in self.active]
            if free:
                self.features.add("tricky_name")
                name = self.choice(free)
                self.used.add(name)
                return name
        return f"{prefix}{self.counter}"

    # -- expressions ----------------------------------------------------------
    @staticmethod
    def names_at(env: dict[str, Loc], where: frozenset[str]) -> list[str]:
        """Located names held by every role of ``where``."""
        return sorted(n for n, loc in env.items() if loc is not None and where <= loc)

    def deciding(self, env: dict[str, Loc], where: frozenset[str]) -> list[str]:
        """Names held at ``where`` that may be read by a condition decided there.

        Without ``Options.faceted_deciders``, not a name also held by some members of a
        group (/tmp/group_bugs/05_...: choreo rejects such a condition).
        """
        out = self.names_at(env, where)
        if self.opts.faceted_deciders:
            return out
        roles = set(self.active)
        return [n for n in out if all(t in roles or t.endswith("=") for t in env[n] or ())]

    def replicated(self, env: dict[str, Loc], loops: list[str]) -> list[str]:
        consts = sorted(n for n, loc in env.items() if loc is None and n not in loops)
        return consts + (loops if self.opts.loop_index_reads else [])

    def atom(self, located: list[str], shared: list[str], nest: int = 0) -> tuple[str, int]:
        kinds = (["name", "name"] if located else []) + ["literal"] + (["shared"] if shared else [])
        if self.opts.globals and nest == 0 and self.integer(0, 5) == 5:
            kinds.append("call")
        if self.groups:
            kinds.append("size")
            if self.str_atoms:
                kinds.append("member")
        kind = self.choice(kinds)
        if kind == "size":
            self.features.add("group_size")
            return f"len({self.choice(self.groups)})", 100
        if kind == "member":
            self.features.add("member_name")
            m = self.choice(self.str_atoms)
            return (f"len({m})" if self.flag() else f"ord({m}[-1])"), 100
        if kind == "call":
            fns = ["abs", "max", "min"] + ([self.module.helper] if self.module.helper else [])
            fn = self.choice(fns)
            self.features.add("helper_call" if fn == self.module.helper else "builtin_call")
            first = self.atom(located, shared, nest + 1)
            if fn == "abs":
                return f"abs({_bin('-', first, self.atom(located, shared, nest + 1))[0]})", 100
            if fn == self.module.helper:
                return f"{fn}({first[0]})", 100
            return f"{fn}({first[0]}, {self.atom(located, shared, nest + 1)[0]})", 100
        if kind == "name":
            return self.choice(located), 100
        if kind == "shared":
            name = self.choice(shared)
            if _LOOP_INDEX.fullmatch(name):
                self.features.add("loop_index")
            if name in self.module.consts:
                self.features.add("module_global")
            return name, 100
        return str(self.integer(0, 9)), 100

    def expr(self, located: list[str], shared: list[str], depth: int = 2) -> tuple[str, int]:
        """An int expression over ``located`` names (held where it runs) and ``shared`` ones."""
        e = self.atom(located, shared)
        has_mul = False
        for _ in range(self.integer(0, depth)):
            op = self.choice(["+", "-", "*"])
            has_mul |= op == "*"
            e = _bin(op, e, self.atom(located, shared))
        e = _mod(e) if has_mul else e
        if self.opts.ternaries and located and self.integer(0, 15) == 15:
            self.features.add("ternary")
            other = self.atom(located, shared)
            e = f"{e[0]} if {self.cond(located, shared)} else {other[0]}", 0
        return e

    def cond(self, located: list[str], shared: list[str]) -> str:
        """A comparison that reads at least one of ``located``."""
        e: tuple[str, int] = (self.choice(located), 100)
        form = self.integer(0, 2)
        if form == 1:
            e = _bin(self.choice(["+", "-"]), e, self.atom(located, shared))
            lit = self.integer(0, 20)
        elif form == 2:
            m = self.integer(2, 4)
            e = _bin("%", e, (str(m), 100))
            lit = self.integer(0, m - 1)
        else:
            lit = self.integer(0, 20)
        cmp = self.choice([">", "<", "==", "!=", ">=", "<="])
        return f"{e[0]} {cmp} {lit}"

    # -- statements -----------------------------------------------------------
    def block(
        self,
        env: dict[str, Loc],
        mutable: set[str],
        loops: list[str],
        depth: int,
        top: bool,
        prefix: Sequence[Any] = (),
    ) -> list[Any]:
        """A non-empty list of statements; ``env``/``mutable`` are updated in place."""
        out: list[Any] = list(prefix)
        n = self.integer(0 if prefix else 1, 4)
        for i in range(n):
            if i > 0 and self.budget <= 0:
                break
            out.extend(self.stmt(env, mutable, loops, depth, top))
        return out

    def stmt(
        self,
        env: dict[str, Loc],
        mutable: set[str],
        loops: list[str],
        depth: int,
        top: bool,
    ) -> list[Any]:
        self.budget -= 1
        o = self.opts
        kinds = ["local", "send"] if len(self.active) >= 2 else ["local"]
        if o.multicast and len(self.active) >= 2:
            kinds.append("multicast")
        if o.self_send:
            kinds.append("self_send")
        if o.consts and top:
            kinds.append("const")
        compound = depth < o.max_depth and self.budget >= 1
        if compound and o.ifs:
            kinds.append("if")
        if compound and o.fors:
            kinds.append("for")
        if compound and o.whiles:
            kinds.append("while")
        callable_subs = [s for s in self.subs if not s.groups and len(s.roles) <= len(self.active)]
        if callable_subs:
            kinds.append("call")
        if self.groups:
            kinds += self.group_kinds(compound)
        kind = self.choice(kinds)
        shared = self.replicated(env, loops)
        if kind in _GROUP_STMTS:
            return self.group_stmt(kind, env, mutable, loops, depth, shared)

        if kind == "local":
            self.features.add("local")
            role = self.choice(self.active)
            assigns = []
            for _ in range(self.integer(1, 3)):
                located = self.names_at(env, frozenset({role}))
                own = sorted(n for n in mutable if env.get(n) == frozenset({role}))
                if o.rebind and own and self.integer(0, 3) == 3:
                    target = self.choice(own)
                    self.features.add("rebind")
                    e = _mod(_bin("+", (target, 100), self.expr(located, shared, depth=1)))[0]
                else:
                    target = self.fresh()
                    e = self.expr(located, shared)[0]
                assigns.append((target, e))
                env[target] = frozenset({role})
                mutable.add(target)
            return [_Local(role, assigns)]

        if kind in ("send", "multicast", "self_send"):
            sender = self.choice(self.active)
            others = [r for r in self.active if r != sender]
            if kind == "send":
                self.features.add("send")
                to, as_list = [self.choice(others)], self.integer(0, 3) == 3
            elif kind == "self_send":
                self.features.add("self_send")
                to, as_list = [sender], False
            else:
                self.features.add("multicast")
                perm = self.draw(st.permutations(self.active))
                k = self.integer(2, len(self.active))
                to = list(perm[:k])
                if sender in to:
                    self.features.add("multicast_self")
                as_list = True
            located = self.names_at(env, frozenset({sender}))
            e = self.expr(located, shared, depth=1)[0]
            target = self.fresh()
            env[target] = frozenset(to)
            return [_Send(target, sender, e, to, as_list)]

        if kind == "const":
            self.features.add("const")
            target = self.fresh("c")
            value = self.integer(0, 9)
            text = str(value)
            known = sorted(n for n in self.const_values if env.get(n, 0) is None)
            if known and self.flag():
                self.features.add("const_expr")
                other = self.choice(known)
                value = self.const_values[other] + value
                text = f"{other} + {text}"
            env[target] = None
            self.const_values[target] = value
            return [_Const(target, text)]

        if kind == "if":
            return self.if_stmt(env, mutable, loops, depth, shared)

        if kind == "for":
            self.features.add("for")
            var = self.fresh("i")
            inner = dict(env)
            inner[var] = None
            weight, self.weight = self.weight, self.weight * 4
            body = self.block(inner, set(mutable), [*loops, var], depth + 1, False)
            self.weight = weight
            small = sorted(
                n for n, v in self.const_values.items() if 0 <= v <= 3 and env.get(n, 0) is None
            )
            if small and self.flag():
                self.features.add("range_const")
                return [_For(var, self.choice(small), body)]
            return [_For(var, str(self.integer(0, 3)), body)]

        if kind == "while":
            self.features.add("while")
            role = self.choice(self.active)
            counter = self.fresh("k")
            init = _Local(role, [(counter, str(self.integer(0, 3)))])
            env[counter] = frozenset({role})  # not mutable: only the decrement rebinds it
            c = f"{counter} > 0"
            located = [n for n in self.deciding(env, frozenset({role})) if n != counter]
            if located and self.integer(0, 2) == 2:
                self.features.add("while_and")
                c = f"{c} and {self.cond(located, shared)}"
            dec = _Local(role, [(counter, f"{counter} - 1")])
            weight, self.weight = self.weight, self.weight * 4
            body = self.block(dict(env), set(mutable), loops, depth + 1, False, prefix=[dec])
            self.weight = weight
            return [init, _While(c, body, frozenset({role}))]

        assert kind == "call"
        self.features.add("call")
        if self.in_sub:
            self.features.add("call_in_sub")
        sub = self.choice(callable_subs)
        perm = self.draw(st.permutations(self.active))
        roles = list(perm[: len(sub.roles)])
        if roles != sub.roles:
            self.features.add("call_permuted")
        pre: list[Any] = []
        args = []
        for _, prole in sub.params:
            role = roles[sub.roles.index(prole)]
            held = self.names_at(env, frozenset({role}))
            if held:
                args.append(self.choice(held))
            else:
                name = self.fresh()
                pre.append(_Local(role, [(name, str(self.integer(0, 9)))]))
                env[name] = frozenset({role})
                mutable.add(name)
                args.append(name)
        target = self.fresh()
        at = frozenset({roles[sub.roles.index(sub.ret_role)]})
        env[target] = at
        mapping = dict(zip(sub.roles, roles, strict=True))
        involved = frozenset(mapping[r] for r in sub.involved)
        return [*pre, _Call(target, sub.name, roles, args, involved, at)]

    # -- groups -----------------------------------------------------------------
    #
    # A place is where code runs or whom a message is for: a role (``a``), a whole
    # group (``g``), a slice (``g[1:]``, ``g[:-1]``: may be empty), one member
    # (``g[0]``, ``g[-1]``) or a loop's member variable (``m3`` in ``for m3 in g:``).
    # A name's location is a set of tokens: roles, places (the members of that
    # place hold it; ``g``: every member, each its own value) and ``g=`` (every
    # member of ``g`` holds the same value and the checker knows it: a multicast
    # to the whole group; only such a value may decide a condition at ``g``).
    # ``self.uniform`` has the names whose holders all hold the same value in
    # truth (a quorum gather may use their values, not only count them).

    def group_of(self, place: str) -> str | None:
        """The group a place is part of (None for a role)."""
        if place in self.var_group:
            return self.var_group[place]
        base = place.split("[", 1)[0]
        return base if base in self.groups else None

    def is_single(self, place: str) -> bool:
        """Whether a place is one role or one member."""
        return (
            self.group_of(place) is None
            or place in self.var_group
            or place.endswith(("[0]", "[-1]"))
        )

    def multi_places(self, groups: Sequence[str] | None = None) -> list[str]:
        out: list[str] = []
        for g in self.groups if groups is None else groups:
            out += [g, f"{g}[1:]", f"{g}[:-1]"]
        return out

    def member_places(self) -> list[str]:
        out = [f"{g}{i}" for g in self.groups if g not in self.maybe_empty for i in ("[0]", "[-1]")]
        return out + self.member_vars

    def nonempty_groups(self) -> list[str]:
        return [g for g in self.groups if g not in self.maybe_empty]

    def readable(self, env: dict[str, Loc], place: str) -> list[str]:
        """Located names every role or member of ``place`` holds."""
        g = self.group_of(place)
        if g is None:
            return self.names_at(env, frozenset({place}))
        ok = {g, g + "=", place}
        return sorted(n for n, loc in env.items() if loc is not None and loc & ok)

    def token(self, place: str, uniform_group: bool) -> str:
        """The location token of a value received (or bound) at ``place``."""
        return place + "=" if uniform_group and place in self.groups else place

    def uniform_expr(self, text: str, env: dict[str, Loc], member: str | None) -> bool:
        """Whether ``text`` has the same value at every member that evaluates it."""
        ids = set(re.findall(r"[A-Za-z_][A-Za-z_0-9]*", text))
        if member is not None and member in ids:
            return False
        return all(n in self.uniform for n in ids if env.get(n) is not None)

    def group_kinds(self, compound: bool) -> list[str]:
        """The group statements that may come next."""
        gk = self.opts.group_kinds
        kinds = [k for k in ("glocal", "gsend", "gather", "scatter", "shuffle") if k in gk]
        if compound and self.weight * 7 <= 49:
            kinds += [k for k in ("gfor", "chain", "range_len") if k in gk]
            if self.nonempty_groups():
                kinds += [k for k in ("relay", "gwhile") if k in gk]
        if "gcall" in gk and self.group_callees():
            kinds.append("gcall")
        if "mcall" in gk and self.member_places() and self.member_callees():
            kinds.append("mcall")
        return kinds

    def group_callees(self) -> list[_Sub]:
        whole = bool(self.nonempty_groups())
        return [
            s
            for s in self.subs
            if s.groups and len(s.roles) <= len(self.active) and (whole or not s.nonempty)
        ]

    def member_callees(self) -> list[_Sub]:
        return [s for s in self.subs if not s.groups and len(s.roles) - 1 <= len(self.active)]

    def group_stmt(
        self,
        kind: str,
        env: dict[str, Loc],
        mutable: set[str],
        loops: list[str],
        depth: int,
        shared: list[str],
    ) -> list[Any]:
        if kind == "glocal":
            return [self.glocal(env, shared)]
        if kind == "gsend":
            return [self.gsend(env, shared)]
        if kind in ("gather", "shuffle"):
            return self.gather(env, mutable, shared, kind == "shuffle")
        if kind == "scatter":
            return [self.scatter(env, shared)]
        if kind == "gfor":
            return [self.gfor(env, mutable, loops, depth)]
        if kind == "chain":
            return [self.chain(env, mutable, loops, depth)]
        if kind == "relay":
            return self.relay(env, shared)
        if kind == "gwhile":
            return self.gwhile(env, mutable, loops, depth, shared)
        if kind == "range_len":
            self.features.add("for_group_size")
            var = self.fresh("i")
            inner = dict(env)
            inner[var] = None
            weight, self.weight = self.weight, self.weight * 7
            body = self.block(inner, set(mutable), [*loops, var], depth + 1, False)
            self.weight = weight
            return [_For(var, f"len({self.choice(self.groups)})", body)]
        if kind == "gcall":
            return self.gcall(env, mutable)
        assert kind == "mcall"
        return self.mcall(env, mutable)

    def glocal(self, env: dict[str, Loc], shared: list[str], place: str | None = None) -> _GLocal:
        """``with place [as m]:`` computing facets from ``m`` and what the members hold."""
        if place is None:
            place = self.choice([*self.multi_places(), *self.member_places()])
        member = None
        if not self.is_single(place):
            self.features.add("glocal_group" if place in self.groups else "glocal_slice")
            if self.integer(0, 2) > 0:
                member = self.fresh("m")
                self.features.add("glocal_as")
        elif place in self.var_group:
            self.features.add("glocal_loop_member")
        else:
            self.features.add("glocal_member")
            if self.integer(0, 2) == 2:
                member = self.fresh("m")
                self.features.add("glocal_member_as")
        saved = self.str_atoms
        if member is not None:
            self.str_atoms = [*saved, member]
        assigns = []
        for _ in range(self.integer(1, 2)):
            located = self.readable(env, place)
            t = self.fresh()
            e = self.expr(located, shared)[0]
            assigns.append((t, e))
            if self.uniform_expr(e, env, member):
                self.uniform.add(t)
            env[t] = frozenset({place})
        self.str_atoms = saved
        return _GLocal(place, member, assigns)

    def gsend(
        self,
        env: dict[str, Loc],
        shared: list[str],
        sender: str | None = None,
        to: list[str] | None = None,
    ) -> _GSend:
        """One role or member sends to places of which at least one is in a group."""
        if sender is None:
            sender = self.choice([*self.active, *self.member_places()])
        if to is None:
            groupish = [*self.multi_places(), *self.member_places()]
            firsts = [p for p in groupish if p != sender]
            if self.group_of(sender) is not None:
                firsts += [r for r in self.active]
            to = [self.choice(firsts)]
            if self.integer(0, 3) == 3:
                taken = {_party(to[0], self.var_group)}
                more = [
                    p
                    for p in [*self.active, *groupish]
                    if _party(p, self.var_group) not in taken and p != sender
                ]
                if more:
                    to.append(self.choice(more))
                    self.features.add("multicast_mixed")
        if self.group_of(sender) is not None:
            self.features.add("member_send")
        for r in to:
            if r in self.groups:
                self.features.add("multicast_group")
            elif not self.is_single(r):
                self.features.add("multicast_slice")
            elif self.group_of(r) is not None:
                self.features.add("send_to_member")
            g = self.group_of(r)
            if g is not None and g == self.group_of(sender):
                self.features.add("send_within_group")
        located = self.readable(env, sender)
        e = self.expr(located, shared, depth=1)[0]
        t = self.fresh()
        env[t] = frozenset(self.token(r, True) for r in to)
        self.uniform.add(t)
        return _GSend(t, sender, e, to, as_list=len(to) > 1 or self.integer(0, 5) == 5)

    def quorum(self, place: str) -> str | None:
        """A quorum for a gather from ``place`` (valid for every census), or None."""
        if "quorum" not in self.opts.group_kinds or self.integer(0, 2) != 2:
            return None
        g = self.group_of(place)
        assert g is not None
        if place == g and g not in self.maybe_empty:
            options = ["majority", "1", f"len({g})", f"len({g}) - 1", "0"]
        elif place == g:
            options = [f"len({g})", "0"]
        else:  # a slice (may be empty)
            options = ["0", f"len({place})"]
        if place != g or g in self.maybe_empty:
            options += ["majority"] if self.opts.empty_majority else []
        q = self.choice(options)
        self.features.add("gather_quorum")
        if q == "majority":
            self.features.add("gather_majority")
        if place != g:
            self.features.add("gather_quorum_slice")
        return q

    def comprehension(self, e: tuple[str, int], over: str) -> tuple[str, bool]:
        """A dict member -> part over the members of ``over``; whether the parts are equal."""
        q = self.fresh("q")
        form = self.integer(0, 2)
        if form == 0:
            return f"{{{q}: {e[0]} for {q} in {over}}}", True
        if form == 1:
            j = self.fresh("j")
            part = _mod(_bin("+", e, (j, 100)))[0]
            return f"{{{q}: {part} for {j}, {q} in enumerate({over})}}", False
        part = _bin("+", e, (f"len({q})", 100))[0]
        return f"{{{q}: {part} for {q} in {over}}}", False

    def scatter(self, env: dict[str, Loc], shared: list[str]) -> _GSend:
        """``x = s.scatter({member: part ...}, to=g)`` from one role or member."""
        sender = self.choice([*self.active, *self.member_places()])
        over = self.choice(self.multi_places())
        self.features.add("scatter" if over in self.groups else "scatter_slice")
        if self.group_of(sender) is not None:
            self.features.add("scatter_from_member")
        e = self.expr(self.readable(env, sender), shared, depth=1)
        comp, same = self.comprehension(e, over)
        t = self.fresh()
        env[t] = frozenset({over})
        if same:
            self.uniform.add(t)
        return _GSend(t, sender, comp, [over], scatter=True)

    def reduction(self, x: str, values: bool) -> str:
        """An int from a gathered dict ``x``: its size, or (``values``) a fold of its values."""
        forms = [f"len({x})"]
        if values:
            forms += [
                f"sum({x}.values()) % 1000",
                f"min({x}.values(), default=0)",
                f"max({x}.values(), default=0)",
            ]
        return self.choice(forms)

    def gather(
        self, env: dict[str, Loc], mutable: set[str], shared: list[str], shuffle: bool
    ) -> list[Any]:
        """A gather (``x = g.send(e, to=r)``), or a group-to-group send or scatter.

        Each receiver folds the dict at once into an int that does not depend on
        which members a quorum heard: its size, or, when every sender sent the
        same value (or there is no quorum), a fold of the values.
        """
        sender = self.choice(self.multi_places())
        g = self.group_of(sender)
        scatter = False
        if shuffle:
            if self.opts.empty_receivers:
                to = [self.choice(self.multi_places())]
            else:
                to = [self.choice(self.nonempty_groups() or self.active)]
            scatter = self.group_of(to[0]) is not None and self.flag()
            self.features.add("shuffle" if scatter else "group_to_group")
            if self.group_of(to[0]) == g:
                self.features.add("all_to_all")
        else:
            cands = [*self.active, *self.groups, *self.member_places()]
            if not self.opts.empty_receivers:
                cands = [c for c in cands if c not in self.maybe_empty]
            to = [self.choice(cands)]
            if self.integer(0, 4) == 4:
                taken = {_party(to[0], self.var_group)}
                more = [p for p in cands if _party(p, self.var_group) not in taken]
                if more:
                    to.append(self.choice(more))
                    self.features.add("gather_to_several")
            self.features.add("gather" if sender == g else "gather_slice")
            if any(self.group_of(r) is not None for r in to):
                self.features.add("gather_to_group")
        quorum = self.quorum(sender)
        e = self.expr(self.readable(env, sender), shared, depth=1)
        same = self.uniform_expr(e[0], env, None)
        text = e[0]
        if scatter:
            text, equal_parts = self.comprehension(e, to[0])
            same = same and equal_parts
        x = self.fresh()
        out: list[Any] = [_GSend(x, sender, text, to, scatter, quorum, len(to) > 1)]
        for r in to:
            y = self.fresh()
            red = self.reduction(x, quorum is None or same)
            if self.group_of(r) is None:
                out.append(_Local(r, [(y, red)]))
                mutable.add(y)
            else:
                out.append(_GLocal(r, None, [(y, red)]))
                # every receiver got the same dict, or folds it to the same int
                if not scatter or same:
                    self.uniform.add(y)
            env[y] = frozenset({r})
        return out

    def member_use(self, env: dict[str, Loc], var: str, shared: list[str]) -> list[Any]:
        """A first statement of a loop body that uses the loop's member ``var`` as a role."""
        form = self.integer(0, 2)
        if form == 0:
            return [self.glocal(env, shared, place=var)]
        if form == 1:
            return [self.gsend(env, shared, sender=var)]
        senders = [*self.active, *(p for p in self.member_places() if p != var)]
        sender = self.choice(senders)
        return [self.gsend(env, shared, sender=sender, to=[var])]

    def gfor(self, env: dict[str, Loc], mutable: set[str], loops: list[str], depth: int) -> _GFor:
        """``for m in g:`` (or a slice) with ``m`` sending, receiving or running code."""
        over = self.choice(self.multi_places())
        self.features.add("for_member" if over in self.groups else "for_member_slice")
        g = self.group_of(over)
        assert g is not None
        var = self.fresh("m")
        self.var_group[var] = g
        inner = dict(env)
        saved = (self.member_vars, self.str_atoms, self.weight)
        self.member_vars = [*self.member_vars, var]
        self.str_atoms = [*self.str_atoms, var]
        self.weight *= 7
        prefix = self.member_use(inner, var, self.replicated(inner, loops))
        body = self.block(inner, set(mutable), loops, depth + 1, False, prefix=prefix)
        self.member_vars, self.str_atoms, self.weight = saved
        return _GFor(var, over, body)

    def chain(self, env: dict[str, Loc], mutable: set[str], loops: list[str], depth: int) -> _Chain:
        """``for a, b in zip(g, g[1:]):`` with ``a`` sending to ``b``."""
        self.features.add("chain")
        g = self.choice(self.groups)
        a, b = self.fresh("p"), self.fresh("s")
        self.var_group[a] = self.var_group[b] = g
        inner = dict(env)
        saved = (self.member_vars, self.str_atoms, self.weight)
        self.member_vars = [*self.member_vars, a, b]
        self.str_atoms = [*self.str_atoms, a, b]
        self.weight *= 7
        shared = self.replicated(inner, loops)
        prefix: list[Any] = []
        if self.flag():
            prefix.append(self.glocal(inner, shared, place=a))
        prefix.append(self.gsend(inner, shared, sender=a, to=[b]))
        body = self.block(inner, set(mutable), loops, depth + 1, False, prefix=prefix)
        self.member_vars, self.str_atoms, self.weight = saved
        return _Chain(a, b, g, body)

    def relay(self, env: dict[str, Loc], shared: list[str]) -> list[Any]:
        """A value passed along the members: ``t`` to ``g[0]``, then from each to the next.

        ``t`` is rebound at each member on the way; after the loop ``g[-1]`` holds the last.
        """
        self.features.add("relay")
        g = self.choice(self.nonempty_groups())
        senders = [*self.active, *(p for p in self.member_places() if self.group_of(p) != g)]
        sender = self.choice(senders)
        t = self.fresh()
        init = _GSend(t, sender, self.expr(self.readable(env, sender), shared, 1)[0], [f"{g}[0]"])
        a, b = self.fresh("p"), self.fresh("s")
        self.var_group[a] = self.var_group[b] = g
        body: list[Any] = []
        if self.flag():
            saved = self.str_atoms
            self.str_atoms = [*saved, a, b]
            step = self.expr(self.readable(env, a), shared, 1)
            self.str_atoms = saved
            body.append(_GLocal(a, None, [(t, _mod(_bin("+", (t, 100), step))[0])]))
        body.append(_GSend(t, a, t, [b]))
        out: list[Any] = [init, _Chain(a, b, g, body)]
        env[t] = frozenset({f"{g}[-1]"})
        if self.flag():
            to = self.choice([*self.active, *(p for p in self.member_places() if p != f"{g}[-1]")])
            r = self.fresh()
            out.append(_GSend(r, f"{g}[-1]", t, [to]))
            env[r] = frozenset({self.token(to, True)})
            self.uniform.add(r)
        return out

    def gwhile(
        self,
        env: dict[str, Loc],
        mutable: set[str],
        loops: list[str],
        depth: int,
        shared: list[str],
    ) -> list[Any]:
        """A loop decided by a group: a counter multicast to it, counted down by ``g[0]``."""
        self.features.add("while_group")
        g = self.choice(self.nonempty_groups())
        sender = self.choice([*self.active, *self.member_places()])
        k, d = self.fresh("k"), self.fresh("d")
        init = _GSend(k, sender, str(self.integer(0, 3)), [g])
        env[k] = frozenset({g + "="})
        self.uniform.add(k)
        c = f"{k} > 0"
        located = [n for n in self.deciding(env, frozenset({g + "="})) if n != k]
        if located and self.flag():
            self.features.add("while_group_and")
            c = f"{c} and {self.cond(located, shared)}"
        inner = dict(env)
        dec = [_GLocal(f"{g}[0]", None, [(d, f"{k} - 1")]), _GSend(k, f"{g}[0]", d, [g])]
        inner[d] = frozenset({f"{g}[0]"})
        weight, self.weight = self.weight, self.weight * 4
        body = self.block(inner, set(mutable), loops, depth + 1, False, prefix=dec)
        self.weight = weight
        return [init, _While(c, body, frozenset({g + "="}))]

    def call_args(
        self, env: dict[str, Loc], mutable: set[str], sub: _Sub, mapping: dict[str, str]
    ) -> tuple[list[Any], list[str]]:
        """Arguments for ``sub``'s inputs, held where ``mapping`` puts them (made if need be)."""
        pre: list[Any] = []
        args = []
        for _, where in sub.params:
            place = mapping[where]
            held = self.readable(env, place)
            if held:
                args.append(self.choice(held))
                continue
            name = self.fresh()
            value = str(self.integer(0, 9))
            if self.group_of(place) is None:
                pre.append(_Local(place, [(name, value)]))
                mutable.add(name)
            else:
                pre.append(_GLocal(place, None, [(name, value)]))
                self.uniform.add(name)
            env[name] = frozenset({place})
            args.append(name)
        return pre, args

    def gcall(self, env: dict[str, Loc], mutable: set[str]) -> list[Any]:
        """A sub-choreography with a group parameter, passed a group or a slice of one."""
        sub = self.choice(self.group_callees())
        self.features.add("call_group")
        perm = self.draw(st.permutations(self.active))
        roles = list(perm[: len(sub.roles)])
        gargs = []
        for _ in sub.groups:
            cands = self.nonempty_groups() if sub.nonempty else self.multi_places()
            gargs.append(self.choice(cands))
            if gargs[-1] not in self.groups:
                self.features.add("call_group_slice")
        mapping = dict(zip([*sub.roles, *sub.groups], [*roles, *gargs], strict=True))
        pre, args = self.call_args(env, mutable, sub, mapping)
        target = self.fresh()
        at = mapping[sub.ret_role]
        env[target] = frozenset({at})
        involved = frozenset(_party(mapping[r], self.var_group) for r in sub.involved)
        call = _Call(target, sub.name, [*roles, *gargs], args, involved, frozenset({at}))
        return [*pre, call]

    def mcall(self, env: dict[str, Loc], mutable: set[str]) -> list[Any]:
        """A sub-choreography over roles, one of which is played by a group member."""
        sub = self.choice(self.member_callees())
        self.features.add("call_member")
        member = self.choice(self.member_places())
        perm = self.draw(st.permutations(self.active))
        others = list(perm[: len(sub.roles) - 1])
        i = self.integer(0, len(others))
        roles = [*others[:i], member, *others[i:]]
        mapping = dict(zip(sub.roles, roles, strict=True))
        pre, args = self.call_args(env, mutable, sub, mapping)
        target = self.fresh()
        at = mapping[sub.ret_role]
        env[target] = frozenset({at})
        involved = frozenset(_party(mapping[r], self.var_group) for r in sub.involved)
        return [*pre, _Call(target, sub.name, roles, args, involved, frozenset({at}))]

    def group_decider(
        self,
        env: dict[str, Loc],
        mutable: set[str],
        multi: bool,
        setup: bool,
        dry: bool,
    ) -> tuple[list[Any], frozenset[str], list[str]] | None:
        """``decider`` with groups: also a group that holds a multicast value decides."""
        deciding = self.nonempty_groups() if "gif" in self.opts.group_kinds else []
        ok = set(self.active) | {g + "=" for g in deciding}
        singles = [frozenset({r}) for r in self.active]
        gsets = [frozenset({g + "="}) for g in deciding]
        multis = sorted(
            {loc for loc in env.values() if loc is not None and len(loc) > 1 and loc <= ok},
            key=sorted,
        )
        if not setup:
            singles = [w for w in singles if self.deciding(env, w)]
            gsets = [w for w in gsets if self.deciding(env, w)]
            if not singles and not gsets and not (multi and multis):
                return None
            if dry:
                return [], frozenset(), []
        shared = self.replicated(env, [])
        if gsets and self.integer(0, 2) == 2:
            where = self.choice(gsets)
            located = self.deciding(env, where)
            if located and (not setup or self.flag()):
                return [], where, located
            # multicast a value to the group first
            g = next(iter(where))[:-1]
            sender = self.choice([*self.active, *self.member_places()])
            name = self.fresh()
            e = self.expr(self.readable(env, sender), shared, 1)[0]
            env[name] = where
            self.uniform.add(name)
            return [_GSend(name, sender, e, [g])], where, [name]
        if not singles and not (multi and multis):
            where = self.choice(gsets)
            return [], where, self.deciding(env, where)
        if multi and setup and self.opts.multicast and len(self.active) >= 2:
            if self.integer(0, 3) == 3:
                sender = self.choice(self.active)
                perm = self.draw(st.permutations(self.active))
                to = list(perm[: self.integer(2, len(self.active))])
                name = self.fresh()
                e = self.expr(self.names_at(env, frozenset({sender})), shared, 1)[0]
                env[name] = frozenset(to)
                return [_Send(name, sender, e, to, True)], frozenset(to), [name]
        if multi and multis and (not singles or self.integer(0, 2) > 0):
            where = self.choice(multis)
        else:
            where = self.choice(singles)
        located = self.deciding(env, where)
        if located:
            return [], where, located
        role = sorted(where)[0]
        name = self.fresh()
        env[name] = frozenset({role})
        mutable.add(name)
        return [_Local(role, [(name, str(self.integer(0, 20)))])], frozenset({role}), [name]

    def returning_group(self, body: list[Any], env: dict[str, Loc], group: str) -> str:
        """Make sure a name every member of ``group`` holds (and no one else) exists."""
        exact = sorted(
            n for n, loc in env.items() if loc in (frozenset({group}), frozenset({group + "="}))
        )
        if exact and self.flag():
            return self.choice(exact)
        name = self.fresh()
        body.append(self.glocal_named(env, group, name))
        return name

    def glocal_named(self, env: dict[str, Loc], group: str, name: str) -> _GLocal:
        member = self.fresh("m") if self.flag() else None
        saved = self.str_atoms
        if member is not None:
            self.str_atoms = [*saved, member]
        e = self.expr(self.readable(env, group), self.replicated(env, []))[0]
        self.str_atoms = saved
        env[name] = frozenset({group})
        return _GLocal(group, member, [(name, e)])

    def if_stmt(
        self,
        env: dict[str, Loc],
        mutable: set[str],
        loops: list[str],
        depth: int,
        shared: list[str],
        as_elif: bool = False,
    ) -> list[Any]:
        """``[setup..., if]``; an ``elif`` (``as_elif``) must decide on names already there."""
        o = self.opts
        picked = self.decider(env, mutable, multi=o.multi_conditions, setup=not as_elif)
        assert picked is not None
        prefix, where, located = picked
        if len(where) > 1:
            self.features.add("if_multi")
        if depth > 0:
            self.features.add("nested_if")
        self.features.add("elif" if as_elif else "if")
        c = self.cond(located, shared)
        then = self.block(dict(env), set(mutable), loops, depth + 1, False)
        if any(t.endswith("=") for t in where):
            self.features.add("if_group")
            if set(_involved(then, frozenset(), False, self.var_group)) & set(self.active):
                self.features.add("if_group_outsider")
        orelse: list[Any] = []
        tail = self.integer(0, 2)  # 0: no else, 1: else, 2: elif
        can_elif = (
            o.elifs
            and depth + 1 < o.max_depth
            and self.decider(env, set(mutable), multi=o.multi_conditions, setup=False, dry=True)
        )
        if tail == 2 and can_elif:
            orelse = self.if_stmt(dict(env), set(mutable), loops, depth + 1, shared, True)
        elif tail >= 1:
            self.features.add("else")
            orelse = self.block(dict(env), set(mutable), loops, depth + 1, False)
        return [*prefix, _If(c, then, orelse, as_elif, where)]

    def decider(
        self,
        env: dict[str, Loc],
        mutable: set[str],
        multi: bool,
        setup: bool = True,
        dry: bool = False,
    ) -> tuple[list[Any], frozenset[str], list[str]] | None:
        """Pick where a condition is decided: statements to run first, the roles, the names.

        Without ``setup`` only places that already hold a name are candidates
        (None when there is none); ``dry`` only tells whether there is one.
        """
        if self.groups:
            return self.group_decider(env, mutable, multi, setup, dry)
        singles = [frozenset({r}) for r in self.active]
        multis = sorted(
            {loc for loc in env.values() if loc is not None and len(loc) > 1}, key=sorted
        )
        if not setup:
            singles = [w for w in singles if self.names_at(env, w)]
            if not singles and not (multi and multis):
                return None
            if dry:
                return [], frozenset(), []
        if multi and setup and self.opts.multicast and self.integer(0, 3) == 3:
            # decide at several roles: multicast a value to them first
            sender = self.choice(self.active)
            perm = self.draw(st.permutations(self.active))
            to = list(perm[: self.integer(2, len(self.active))])
            name = self.fresh()
            e = self.expr(self.names_at(env, frozenset({sender})), self.replicated(env, []), 1)
            env[name] = frozenset(to)
            return [_Send(name, sender, e[0], to, True)], frozenset(to), [name]
        if multi and multis and (not singles or self.integer(0, 2) > 0):
            where = self.choice(multis)
        else:
            where = self.choice(singles)
        located = self.names_at(env, where)
        if located:
            return [], where, located
        # nothing is held there yet: compute something first
        role = sorted(where)[0]
        name = self.fresh()
        env[name] = frozenset({role})
        mutable.add(name)
        return [_Local(role, [(name, str(self.integer(0, 20)))])], frozenset({role}), [name]

    # -- a whole function -----------------------------------------------------
    def branch_return(
        self, body: list[Any], env: dict[str, Loc], mutable: set[str], role: str | None
    ) -> None:
        """End ``body`` with an ``if`` that returns in both branches.

        Both return a name held by exactly ``role``, or (``role`` None) a literal.
        """
        picked = self.decider(env, mutable, multi=self.opts.multi_conditions)
        assert picked is not None
        prefix, where, located = picked
        c = self.cond(located, self.replicated(env, []))
        branches = []
        for _ in range(2):
            benv, bmut = dict(env), set(mutable)
            stmts = self.block(benv, bmut, [], 1, False) if self.flag() else []
            if role is None:
                ret = str(self.integer(0, 9))
            else:
                ret = self.returning(stmts, benv, bmut, role)
            stmts.append(_Return(ret, None if role is None else frozenset({role})))
            branches.append(stmts)
        body.extend([*prefix, _If(c, branches[0], branches[1], False, where)])

    def returning(self, body: list[Any], env: dict[str, Loc], mutable: set[str], role: str) -> str:
        """Make sure a name held by exactly ``role`` exists; return it."""
        exact = sorted(n for n, loc in env.items() if loc == frozenset({role}))
        if exact and self.flag():
            return self.choice(exact)
        name = self.fresh()
        located = self.names_at(env, frozenset({role}))
        expr = self.expr(located, self.replicated(env, []))[0]
        body.append(_Local(role, [(name, expr)]))
        env[name] = frozenset({role})
        return name


def _signature(
    name: str,
    roles: Sequence[str],
    params: Sequence[tuple[str, str]],
    returns: str,
    groups: Sequence[str] = (),
) -> list[str]:
    """The decorated ``def`` line(s), one parameter per line when it gets long."""
    parts = [f"{r}: Role" for r in roles] + [f"{g}: Roles" for g in groups]
    parts += [f'{p}: At[int, "{r}"]' for p, r in params]
    one = f"def {name}({', '.join(parts)}){returns}:"
    if len(one) <= 100:
        return ["@choreography", one]
    return ["@choreography", f"def {name}(", *(f"    {p}," for p in parts), f"){returns}:"]


@dataclass
class _Chor:
    """A generated choreography as the generator built it (what ``run_model`` runs)."""

    name: str
    roles: list[str]
    groups: list[str]
    params: list[tuple[str, str]]  # (input, the role or group that holds it)
    body: list[Any]


_CORE_IMPORT = "from choreo import At, Role, choreography"
_GROUP_IMPORT = "from choreo import At, Role, Roles, choreography, majority"


def _prelude(
    draw: Callable[[st.SearchStrategy[Any]], Any], opts: Options, import_line: str
) -> tuple[list[str], _Globals, str]:
    """The module's first lines: the import, maybe a constant and a helper function."""
    lines = [import_line, ""]
    module = _Globals({}, None)
    prelude = ""
    if opts.globals and draw(st.booleans()):
        scale = draw(st.integers(1, 3))
        module = _Globals({"SCALE": scale}, "bump")
        more = [
            f"SCALE = {scale}",
            "",
            "",
            "def bump(x):",
            "    return (x * SCALE + 1) % 1000",
            "",
        ]
        lines += more
        prelude = "\n".join(more) + "\n"
    return lines, module, prelude


def _core_sub(
    draw: Callable[[st.SearchStrategy[Any]], Any],
    opts: Options,
    index: int,
    subs: list[_Sub],
    features: set[str],
    module: _Globals,
    lines: list[str],
    chors: dict[str, _Chor],
) -> None:
    """A sub-choreography over 2..3 roles (appended to ``subs``, ``lines`` and ``chors``)."""
    role_pool = ["a", "b", "c", "x", "y", "z"]
    k = draw(st.integers(2, 3))
    roles = list(draw(st.permutations(role_pool))[:k])
    params = []
    for j in range(draw(st.integers(0, 2))):
        params.append((f"arg{j}", draw(st.sampled_from(roles))))
    ret_role = draw(st.sampled_from(roles))
    g = _Gen(
        draw,
        opts,
        roles,
        list(subs),
        draw(st.integers(1, opts.sub_budget)),
        features,
        True,
        module,
    )
    env: dict[str, Loc] = {
        **dict.fromkeys(module.consts),
        **{p: frozenset({r}) for p, r in params},
    }
    mutable: set[str] = set()
    body = g.block(env, mutable, [], 0, True)
    if opts.branch_returns and draw(st.integers(0, 3)) == 3:
        features.add("return_branches_in_sub")
        g.branch_return(body, env, mutable, ret_role)
    else:
        ret = g.returning(body, env, mutable, ret_role)
        body.append(_Return(ret, frozenset({ret_role})))
    involved = _involved(body, frozenset(roles)) | {r for _, r in params}
    sub = _Sub(f"sub_{index}", roles, params, ret_role, involved)
    subs.append(sub)
    chors[sub.name] = _Chor(sub.name, roles, [], params, body)
    lines += ["", *_signature(sub.name, roles, params, f' -> At[int, "{ret_role}"]')]
    _render(body, 1, lines)
    lines.append("")


def _group_sub(
    draw: Callable[[st.SearchStrategy[Any]], Any],
    opts: Options,
    index: int,
    subs: list[_Sub],
    features: set[str],
    module: _Globals,
    lines: list[str],
    chors: dict[str, _Chor],
) -> None:
    """A sub-choreography over 1..2 roles and a group ``w``.

    When it may be passed a slice (``nonempty`` False), ``w`` may have no
    member: no ``w[0]``/``w[-1]``, no condition decided by ``w``.
    """
    role_pool = ["a", "b", "c", "x", "y", "z"]
    k = draw(st.integers(1, 2))
    roles = list(draw(st.permutations(role_pool))[:k])
    group = "w"
    nonempty = draw(st.booleans())
    params = []
    for j in range(draw(st.integers(0, 2))):
        params.append((f"arg{j}", draw(st.sampled_from([*roles, group]))))
    ret_role = draw(st.sampled_from([*roles, group]))
    g = _Gen(
        draw,
        opts,
        roles,
        list(subs),
        draw(st.integers(1, opts.sub_budget)),
        features,
        True,
        module,
        [group],
        frozenset() if nonempty else frozenset({group}),
    )
    env: dict[str, Loc] = {
        **dict.fromkeys(module.consts),
        **{p: frozenset({r}) for p, r in params},
    }
    mutable: set[str] = set()
    body = g.block(env, mutable, [], 0, True)
    if ret_role == group:
        features.add("return_group_in_sub")
        ret = g.returning_group(body, env, group)
        body.append(_Return(ret, frozenset({group})))
    elif opts.branch_returns and draw(st.integers(0, 3)) == 3:
        features.add("return_branches_in_sub")
        g.branch_return(body, env, mutable, ret_role)
    else:
        ret = g.returning(body, env, mutable, ret_role)
        body.append(_Return(ret, frozenset({ret_role})))
    everyone = frozenset([*roles, group])
    involved = _involved(body, everyone, False, g.var_group) | {r for _, r in params}
    sub = _Sub(f"sub_{index}", roles, params, ret_role, involved, [group], nonempty)
    subs.append(sub)
    chors[sub.name] = _Chor(sub.name, roles, [group], params, body)
    lines += ["", *_signature(sub.name, roles, params, f' -> At[int, "{ret_role}"]', [group])]
    _render(body, 1, lines, var_group=g.var_group)
    lines.append("")


@st.composite
def _program(draw: Callable[[st.SearchStrategy[Any]], Any], opts: Options) -> Program:
    if opts.groups:
        return _group_program(draw, opts)
    features: set[str] = set()
    lines, module, prelude = _prelude(draw, opts, _CORE_IMPORT)
    module_env: dict[str, Loc] = dict.fromkeys(module.consts)

    # sub-choreographies first, each may call the earlier ones
    subs: list[_Sub] = []
    chors: dict[str, _Chor] = {}
    n_subs = draw(st.integers(0, 2)) if opts.subs else 0
    for s in range(n_subs):
        _core_sub(draw, opts, s, subs, features, module, lines, chors)

    # main
    n_roles = draw(st.integers(2, opts.max_roles))
    roles = ["a", "b", "c", "d", "e"][:n_roles]
    n_idle = draw(st.integers(0, n_roles - 2)) if opts.idle_roles else 0
    idle = sorted(draw(st.permutations(roles))[:n_idle]) if n_idle else []
    active = [r for r in roles if r not in idle]
    if idle:
        features.add("idle_role")
    params: list[tuple[str, str]] = []
    inputs: dict[str, int] = {}
    for r in roles:
        for j in range(draw(st.integers(0, 1 if r in idle else 2))):
            name = f"in_{r}" if j == 0 else f"in_{r}{j + 1}"
            params.append((name, r))
            inputs[name] = draw(st.integers(0, 20))
    g = _Gen(
        draw, opts, active, subs, draw(st.integers(1, opts.main_budget)), features, False, module
    )
    env = {**module_env, **{p: frozenset({r}) for p, r in params}}
    mutable = set()
    body = g.block(env, mutable, [], 0, True)

    multis = sorted(n for n, loc in env.items() if loc is not None and len(loc) > 1)
    consts = sorted(n for n, loc in env.items() if loc is None)
    available = {
        "multi": bool(multis),
        "const": bool(consts),
        "branches": opts.branch_returns,
        "branches_literal": opts.branch_returns,
    }
    choices = [h for h in opts.returns if available.get(h, True)]
    # a value held by several roles is the rarest: prefer it when there is one
    how = "multi" if "multi" in choices and draw(st.booleans()) else draw(st.sampled_from(choices))
    result: frozenset[str] | None
    annotation = ""
    ret: str | None
    if how == "single":
        role = draw(st.sampled_from(active))
        ret = g.returning(body, env, mutable, role)
        result = frozenset({role})
        annotation = f' -> At[int, "{role}"]'
    elif how == "multi":
        ret = draw(st.sampled_from(multis))
        result = env[ret]
    elif how == "const":
        ret = draw(st.sampled_from(consts))
        result = None
    elif how == "none":
        ret = None
        result = None
    elif how == "branches":
        role = draw(st.sampled_from(active))
        g.branch_return(body, env, mutable, role)
        result = frozenset({role})
        annotation = f' -> At[int, "{role}"]'
    elif how == "branches_literal":
        g.branch_return(body, env, mutable, None)
        result = None
    else:
        ret = str(draw(st.integers(0, 9)))
        result = None
    features.add(f"return_{how}")
    if not how.startswith("branches"):
        body.append(_Return(ret, result))
    chors["main"] = _Chor("main", roles, [], params, body)
    lines += ["", *_signature("main", roles, params, annotation)]
    holders: dict[str, frozenset[str] | None] = {p: frozenset({r}) for p, r in params}
    _holders(body, holders)
    lines_of_choices: dict[int, frozenset[str]] = {}
    lines_of_choices_calls_all: dict[int, frozenset[str]] = {}
    _render(body, 1, lines, lines_of_choices, frozenset(roles), lines_of_choices_calls_all)
    return Program(
        source="\n".join(lines) + "\n",
        inputs=inputs,
        roles=roles,
        main_name="main",
        result_roles=result,
        features=frozenset(features),
        # a role that returns a different literal in each branch takes part in the choice
        idle_roles=frozenset() if how == "branches_literal" else frozenset(idle),
        choices=lines_of_choices,
        choices_calls_all=lines_of_choices_calls_all,
        holders=holders,
        chors=chors,
        prelude=prelude,
    )


def _group_program(draw: Callable[[st.SearchStrategy[Any]], Any], opts: Options) -> Program:
    """A module whose main choreography has 1..4 roles and 1..2 groups (``g``, ``h``)."""
    features: set[str] = set()
    lines, module, prelude = _prelude(draw, opts, _GROUP_IMPORT)
    module_env: dict[str, Loc] = dict.fromkeys(module.consts)
    subs: list[_Sub] = []
    chors: dict[str, _Chor] = {}
    n_subs = draw(st.integers(0, 2)) if opts.subs else 0
    for s in range(n_subs):
        if "gcall" in opts.group_kinds and draw(st.booleans()):
            _group_sub(draw, opts, s, subs, features, module, lines, chors)
        else:
            _core_sub(draw, opts, s, subs, features, module, lines, chors)

    n_roles = draw(st.integers(1, min(4, opts.max_roles)))
    n_groups = draw(st.integers(1, opts.max_groups))
    roles = ["a", "b", "c", "d"][:n_roles]
    groups = ["g", "h"][:n_groups]
    n_idle = draw(st.integers(0, n_roles - 1)) if opts.idle_roles else 0
    idle = sorted(draw(st.permutations(roles))[:n_idle]) if n_idle else []
    active = [r for r in roles if r not in idle]
    if idle:
        features.add("idle_role")
    params: list[tuple[str, str]] = []
    inputs: dict[str, int] = {}
    for r in roles:
        for j in range(draw(st.integers(0, 1 if r in idle else 2))):
            name = f"in_{r}" if j == 0 else f"in_{r}{j + 1}"
            params.append((name, r))
            inputs[name] = draw(st.integers(0, 20))
    group_inputs: dict[str, str] = {}
    for grp in groups:
        if "group_inputs" in opts.group_kinds and draw(st.booleans()):
            features.add("group_input")
            group_inputs[f"in_{grp}"] = grp
            params.append((f"in_{grp}", grp))
    gen = _Gen(
        draw,
        opts,
        active,
        subs,
        draw(st.integers(1, opts.main_budget)),
        features,
        False,
        module,
        groups,
    )
    env: dict[str, Loc] = {**module_env, **{p: frozenset({r}) for p, r in params}}
    mutable: set[str] = set()
    body = gen.block(env, mutable, [], 0, True)

    whole = set(roles) | set(groups) | {g + "=" for g in groups}
    multis = sorted(
        n
        for n, loc in env.items()
        if loc is not None and loc <= whole and (len(loc) > 1 or not loc <= set(roles))
    )
    consts = sorted(n for n, loc in env.items() if loc is None)
    available = {
        "multi": bool(multis),
        "const": bool(consts),
        "branches": opts.branch_returns,
        "branches_literal": opts.branch_returns,
    }
    choices = [h for h in (*opts.returns, "group") if available.get(h, True)]
    how = "multi" if "multi" in choices and draw(st.booleans()) else draw(st.sampled_from(choices))
    at: frozenset[str] | None
    annotation = ""
    ret: str | None = None
    if how == "single":
        role = draw(st.sampled_from(active))
        ret = gen.returning(body, env, mutable, role)
        at = frozenset({role})
        annotation = f' -> At[int, "{role}"]'
    elif how == "group":
        grp = draw(st.sampled_from(groups))
        ret = gen.returning_group(body, env, grp)
        at = frozenset({grp})
        if draw(st.booleans()):
            annotation = f' -> At[int, "{grp}"]'
    elif how == "multi":
        ret = draw(st.sampled_from(multis))
        at = env[ret]
    elif how == "const":
        ret = draw(st.sampled_from(consts))
        at = None
    elif how == "none":
        at = None
    elif how == "branches":
        role = draw(st.sampled_from(active))
        gen.branch_return(body, env, mutable, role)
        at = frozenset({role})
        annotation = f' -> At[int, "{role}"]'
    elif how == "branches_literal":
        gen.branch_return(body, env, mutable, None)
        at = None
    else:
        ret = str(draw(st.integers(0, 9)))
        at = None
    features.add(f"return_{how}")
    if not how.startswith("branches"):
        body.append(_Return(ret, at))
    chors["main"] = _Chor("main", roles, groups, params, body)
    lines += ["", *_signature("main", roles, params, annotation, groups)]
    holders: dict[str, frozenset[str] | None] = {p: frozenset({r}) for p, r in params}
    _holders(body, holders, gen.var_group)
    lines_of_choices: dict[int, frozenset[str]] = {}
    lines_of_choices_calls_all: dict[int, frozenset[str]] = {}
    _render(
        body,
        1,
        lines,
        lines_of_choices,
        frozenset([*roles, *groups]),
        lines_of_choices_calls_all,
        gen.var_group,
    )
    return Program(
        source="\n".join(lines) + "\n",
        inputs=inputs,
        roles=roles,
        main_name="main",
        result_roles=None if at is None else _parties(sorted(at)),
        features=frozenset(features),
        idle_roles=frozenset() if how == "branches_literal" else frozenset(idle),
        choices=lines_of_choices,
        choices_calls_all=lines_of_choices_calls_all,
        holders=holders,
        groups=groups,
        group_inputs=group_inputs,
        chors=chors,
        prelude=prelude,
    )


def choreographies(options: Options | None = None) -> st.SearchStrategy[Program]:
    """Small well-formed choreography modules (see the module docstring)."""
    return _program(options or Options())


def group_choreographies(options: Options | None = None) -> st.SearchStrategy[Program]:
    """Small well-formed modules whose main choreography has groups (``Options.groups``)."""
    return _program(replace(options or Options(), groups=True))


# --------------------------------------------------------------------------
# a reference run without choreo: trivial stand-ins for Role / At / choreography

MAX_LINES_EXECUTED = 200_000


@dataclass
class Reference:
    """What a plain-Python run of a generated module did."""

    result: Any
    # (sender, receiver, line) of every value that had to move (sends to oneself move nothing)
    messages: Counter[tuple[str, str, int]]


class _Role:
    def __init__(self, name: str, log: Counter[tuple[str, str, int]]) -> None:
        self.name = name
        self._log = log

    def send(self, value: Any, *, to: Any) -> Any:
        receivers = to if isinstance(to, list) else [to]
        assert receivers and all(isinstance(r, _Role) for r in receivers)
        line = sys._getframe(1).f_lineno
        for r in receivers:
            if r.name != self.name:
                self._log[(self.name, r.name, line)] += 1
        return value

    def __enter__(self) -> _Role:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class _At:
    def __class_getitem__(cls, item: Any) -> Any:
        return item


def run_reference(source: str, inputs: dict[str, int]) -> Reference:
    """Execute the module with stand-ins and call ``main``; stops runaway programs.

    Raises:
        RuntimeError: more than ``MAX_LINES_EXECUTED`` lines were executed.
    """
    log: Counter[tuple[str, str, int]] = Counter()

    def choreography(fn: Any) -> Any:
        sig = inspect.signature(fn)

        def run(*args: Any, **kwargs: Any) -> Any:
            bound = sig.bind_partial(*args, **kwargs)
            for name, p in sig.parameters.items():
                if name not in bound.arguments:
                    assert p.annotation is _Role, f"missing input {name}"
                    bound.arguments[name] = _Role(name, log)
            return fn(*bound.args, **bound.kwargs)

        return run

    fake = types.ModuleType("choreo")
    fake.At = _At  # type: ignore[attr-defined]
    fake.Role = _Role  # type: ignore[attr-defined]
    fake.choreography = choreography  # type: ignore[attr-defined]

    def importer(name: str, *args: Any, **kwargs: Any) -> Any:
        return fake if name == "choreo" else builtins.__import__(name, *args, **kwargs)

    g: dict[str, Any] = {"__builtins__": {**vars(builtins), "__import__": importer}}
    exec(compile(source, "<generated>", "exec", dont_inherit=True), g)
    steps = 0

    def tracer(frame: types.FrameType, event: str, arg: Any) -> Any:
        nonlocal steps
        if frame.f_code.co_filename == "<generated>" and event == "line":
            steps += 1
            if steps > MAX_LINES_EXECUTED:
                raise RuntimeError("generated program does not terminate")
        return tracer

    old = sys.gettrace()
    sys.settrace(tracer)
    try:
        result = g["main"](**inputs)
    finally:
        sys.settrace(old)
    return Reference(result, log)


# --------------------------------------------------------------------------
# the reference model: the generator's own statements run by a small evaluator
#
# Each role and each group member has its own namespace; local code and the
# expressions of sends are evaluated there, a send copies values between them.
# Shares nothing with choreo (not its IR, not its central interpreter), and
# runs group choreographies, which ``run_reference`` cannot (a Python ``with``
# runs its body once, not once per member).

MAX_MODEL_STEPS = 200_000


class _ModelReturn(Exception):
    pass


@dataclass
class ModelRun:
    """What the model did: every role's and member's result, and the values moved."""

    results: dict[str, Any]
    # (sender, receiver, line) of every value that had to move (sends to oneself move nothing)
    messages: Counter[tuple[str, str, int]]


class _ModelChor:
    def __init__(
        self,
        chors: dict[str, _Chor],
        base: dict[str, Any],
        name: str,
        roles: dict[str, str],
        groups: dict[str, tuple[str, ...]],
        inputs: dict[str, dict[str, Any]],
        log: Counter[tuple[str, str, int]],
        steps: list[int],
        pick: random.Random | None = None,
        self_messages: bool = False,
    ) -> None:
        self.chors = chors
        self.pick = pick
        self.self_messages = self_messages
        self.base = base
        self.chor = chors[name]
        self.roles = roles
        self.groups = groups
        self.log = log
        self.steps = steps
        self.rep: dict[str, Any] = {**base, **groups}
        self.procs = [roles[r] for r in self.chor.roles] + [
            m for g in self.chor.groups for m in groups[g]
        ]
        self.ns = {p: {**self.rep, **inputs.get(p, {})} for p in self.procs}
        self.results: dict[str, Any] = dict.fromkeys(self.procs)
        self.holders: list[str] = []

    def run(self) -> None:
        try:
            self.block(self.chor.body)
        except _ModelReturn:
            pass

    def resolve(self, place: str) -> list[str]:
        """The processes a place (or a location token) names, in census order."""
        place = place.rstrip("=")
        if place in self.roles:
            return [self.roles[place]]
        value = eval(place, self.rep)  # g, g[0], g[1:], a loop's member
        return [value] if isinstance(value, str) else list(value)

    def single(self, place: str) -> bool:
        return place in self.roles or isinstance(eval(place, self.rep), str)

    def set_everywhere(self, name: str, value: Any) -> None:
        self.rep[name] = value
        for ns in self.ns.values():
            ns[name] = value

    def at(self, where: frozenset[str]) -> dict[str, Any]:
        """The namespace of a process that decides a condition held at ``where``."""
        return self.ns[self.resolve(sorted(where)[0])[0]]

    def heard(self, senders: list[str], k: int) -> list[str]:
        """The ``k`` senders a quorum gather hears (keeping census order).

        A majority of no member is 1 of 0: the gather hears nobody.
        """
        k = min(k, len(senders))
        if self.pick is None:
            return senders[:k]
        chosen = set(self.pick.sample(senders, k))
        return [x for x in senders if x in chosen]

    def message(self, sender: str, receiver: str, line: int) -> None:
        if sender != receiver:
            self.log[(sender, receiver, line)] += 1

    def block(self, stmts: Sequence[Any]) -> None:
        for s in stmts:
            self.steps[0] += 1
            if self.steps[0] > MAX_MODEL_STEPS:
                raise RuntimeError("generated program does not terminate")
            self.stmt(s)

    def stmt(self, s: Any) -> None:
        match s:
            case _Local(role=role, assigns=assigns):
                ns = self.ns[self.roles[role]]
                for t, e in assigns:
                    ns[t] = eval(e, ns)
            case _GLocal(place=place, member=member, assigns=assigns):
                for p in self.resolve(place):
                    ns = self.ns[p]
                    if member is not None:
                        ns[member] = p
                    for t, e in assigns:
                        ns[t] = eval(e, ns)
            case _Send(target=t, sender=snd, expr=e, to=to):
                sender = self.roles[snd]
                value = eval(e, self.ns[sender])
                for r in to:
                    receiver = self.roles[r]
                    self.ns[receiver][t] = copy.deepcopy(value)
                    self.message(sender, receiver, s.line)
            case _GSend():
                self.gsend(s)
            case _Const(target=t, value=v):
                self.set_everywhere(t, eval(v, self.rep))
            case _If(cond=c, then=then, orelse=orelse, where=where):
                self.block(then if eval(c, self.at(where)) else orelse)
            case _While(cond=c, body=body, where=where):
                while eval(c, self.at(where)):
                    self.block(body)
            case _For(var=v, n=n, body=body):
                for i in range(eval(n, self.rep)):
                    self.set_everywhere(v, i)
                    self.block(body)
            case _GFor(var=v, over=over, body=body):
                for m in self.resolve(over):
                    self.set_everywhere(v, m)
                    self.block(body)
            case _Chain(first=a, second=b, group=g, body=body):
                members = self.resolve(g)
                for x, y in itertools.pairwise(members):
                    self.set_everywhere(a, x)
                    self.set_everywhere(b, y)
                    self.block(body)
            case _Call():
                self.call(s)
            case _Return(expr=e, at=at):
                holders = (
                    self.procs if at is None else [p for t in sorted(at) for p in self.resolve(t)]
                )
                for p in holders:
                    self.results[p] = None if e is None else eval(e, self.ns[p])
                self.holders = holders
                raise _ModelReturn
            case _:  # pragma: no cover
                raise TypeError(s)

    def gsend(self, s: _GSend) -> None:
        senders = self.resolve(s.sender)
        receivers = [p for r in s.to for p in self.resolve(r)]
        values = {x: eval(s.expr, self.ns[x]) for x in senders}
        for x in senders:
            for r in receivers:
                if x == r and self.self_messages:
                    self.log[(x, r, s.line)] += 1
                self.message(x, r, s.line)
        if self.single(s.sender):
            (x,) = senders
            for r in receivers:
                self.ns[r][s.target] = copy.deepcopy(values[x][r] if s.scatter else values[x])
            return
        # a gather: each receiver gets {sender: value}; with a quorum, the first k
        # senders in census order (or others: which ones must not matter)
        if s.quorum is None:
            k = len(senders)
        elif s.quorum == "majority":
            k = len(senders) // 2 + 1
        else:
            k = eval(s.quorum, self.rep)
        heard = self.heard(senders, k)
        for r in receivers:
            self.ns[r][s.target] = {
                x: copy.deepcopy(values[x][r] if s.scatter else values[x]) for x in heard
            }

    def call(self, s: _Call) -> None:
        callee = self.chors[s.callee]
        roles: dict[str, str] = {}
        groups: dict[str, tuple[str, ...]] = {}
        for param, place in zip([*callee.roles, *callee.groups], s.roles, strict=True):
            players = self.resolve(place)
            if param in callee.roles:
                (roles[param],) = players
            else:
                groups[param] = tuple(players)
        inputs: dict[str, dict[str, Any]] = {}
        for (name, where), arg in zip(callee.params, s.args, strict=True):
            players = [roles[where]] if where in roles else list(groups[where])
            for p in players:
                inputs.setdefault(p, {})[name] = eval(arg, self.ns[p])
        sub = _ModelChor(
            self.chors,
            self.base,
            s.callee,
            roles,
            groups,
            inputs,
            self.log,
            self.steps,
            self.pick,
            self.self_messages,
        )
        sub.run()
        for p in sub.holders:
            self.ns[p][s.target] = sub.results[p]


def model_globals(prelude: str) -> dict[str, Any]:
    """The module globals generated code may read: the prelude's constant and helper."""
    g: dict[str, Any] = {"__builtins__": builtins}
    exec(compile(prelude, "<prelude>", "exec", dont_inherit=True), g)
    return g


def run_model(
    p: Program,
    census: dict[str, Sequence[str]] | None = None,
    inputs: dict[str, Any] | None = None,
    names: dict[str, str] | None = None,
    seed: int | None = None,
    self_messages: bool = False,
) -> ModelRun:
    """Run ``p``'s main choreography in the model.

    Args:
        p: a generated program.
        census: each group's member names, in order.
        inputs: the main choreography's inputs (``p.inputs`` when None); an input
            located at a group is a dict member -> value or one value for all.
        names: role parameter -> the name of the role playing it (default: its own).
        seed: None to hear the first members of a quorum gather (in census order, as
            choreo's central run does); else a seed to pick them at random.
        self_messages: count a message from a sender of a group send (multicast,
            gather, scatter) to itself when it is also a receiver, as choreo does
            today (/tmp/group_bugs/04_group_send_messages_oneself.py); a send to
            oneself should move nothing.

    Returns:
        Every role's and member's result (by name) and the values moved.
    """
    census = census or {}
    inputs = dict(p.inputs) if inputs is None else inputs
    roles = {r: (names or {}).get(r, r) for r in p.roles}
    groups = {g: tuple(census[g]) for g in p.groups}
    main = p.chors[p.main_name]
    per: dict[str, dict[str, Any]] = {}
    for name, where in main.params:
        value = inputs[name]
        if where in groups:
            members = groups[where]
            for m in members:
                mine = value[m] if isinstance(value, dict) else copy.deepcopy(value)
                per.setdefault(m, {})[name] = mine
        else:
            per.setdefault(roles[where], {})[name] = value
    log: Counter[tuple[str, str, int]] = Counter()
    pick = None if seed is None else random.Random(seed)
    base = model_globals(p.prelude)
    run = _ModelChor(p.chors, base, p.main_name, roles, groups, per, log, [0], pick, self_messages)
    run.run()
    return ModelRun(run.results, log)


# --------------------------------------------------------------------------
# a run of a group choreography: census, group inputs, who plays the roles

# member names for a census given as a list (never a role's name)
_MEMBER_NAMES = (
    "ann",
    "bo",
    "cyd",
    "dee",
    "eli",
    "fay",
    "gus",
    "hal",
    "ivy",
    "jo",
    "kit",
    "lou",
    "max",
    "ned",
)


@dataclass(frozen=True)
class GroupRun:
    """How one run of a group program is set up."""

    census: dict[str, int | list[str]]  # what ``choreo.run`` is given per group
    members: dict[str, list[str]]  # each group's member names, in order
    inputs: dict[str, Any]  # every input of main, group inputs included
    names: dict[str, str]  # role parameter -> the role playing it (only those that differ)

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``choreo.run`` / ``central_results`` (timeout aside)."""
        return {**self.names, **self.census, **self.inputs}


@st.composite
def _group_run(
    draw: Callable[[st.SearchStrategy[Any]], Any], p: Program, max_size: int
) -> GroupRun:
    census: dict[str, int | list[str]] = {}
    members: dict[str, list[str]] = {}
    pool = list(draw(st.permutations(_MEMBER_NAMES)))
    for g in p.groups:
        n = draw(st.integers(1, max_size))
        if draw(st.booleans()):
            names = [pool.pop() for _ in range(n)]
            census[g] = names
            members[g] = names
        else:
            census[g] = n
            members[g] = [f"{g}.{i}" for i in range(n)]
    inputs: dict[str, Any] = dict(p.inputs)
    for name, g in p.group_inputs.items():
        if draw(st.booleans()):
            inputs[name] = {m: draw(st.integers(0, 20)) for m in members[g]}
        else:
            inputs[name] = draw(st.integers(0, 20))
    rotate = draw(st.integers(0, len(p.roles) - 1))
    names = {r: p.roles[(i + rotate) % len(p.roles)] for i, r in enumerate(p.roles)}
    return GroupRun(census, members, inputs, {r: n for r, n in names.items() if r != n})


def group_runs(p: Program, max_size: int = 7) -> st.SearchStrategy[GroupRun]:
    """Census (1..``max_size`` members per group, as a size or a list of names), the
    group inputs (one value, or a dict member -> value) and the role names of a run."""
    return _group_run(p, max_size)
