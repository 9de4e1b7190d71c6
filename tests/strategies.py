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
"""

from __future__ import annotations

import builtins
import inspect
import re
import sys
import types
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hypothesis import strategies as st

__all__ = ["ALL_FEATURES", "Options", "Program", "Reference", "choreographies", "run_reference"]

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


@dataclass
class _Return:
    expr: str | None
    at: frozenset[str] | None = None  # roles that return a value (None: every role)


@dataclass
class _Sub:
    """A generated sub-choreography's signature."""

    name: str
    roles: list[str]
    params: list[tuple[str, str]]  # (name, role)
    ret_role: str
    # roles that do anything in it (run code, send, receive, decide, return, get an argument)
    involved: frozenset[str] = frozenset()


def _involved(
    stmts: Sequence[Any], everyone: frozenset[str], calls_all: bool = False
) -> frozenset[str]:
    """Roles that do anything in ``stmts``.

    For a sub-choreography call, the roles that do anything in the callee (or,
    with ``calls_all``, every role passed to it).
    """
    out: set[str] = set()
    for s in stmts:
        match s:
            case _Local(role=role):
                out.add(role)
            case _Send(sender=snd, to=to):
                out |= {snd, *to}
            case _If(then=then, orelse=orelse, where=where):
                out |= where
                out |= _involved(then, everyone, calls_all) | _involved(orelse, everyone, calls_all)
            case _While(body=body, where=where):
                out |= where | _involved(body, everyone, calls_all)
            case _For(body=body):
                out |= _involved(body, everyone, calls_all)
            case _Call(roles=roles, involved=involved):
                out |= set(roles) if calls_all else involved
            case _Return(at=at):
                out |= everyone if at is None else at
    return frozenset(out)


def _holders(stmts: Sequence[Any], out: dict[str, frozenset[str] | None]) -> None:
    """Every name bound in ``stmts`` -> the roles that ever hold it (None: every role)."""

    def add(name: str, where: frozenset[str] | None) -> None:
        old = out.get(name, frozenset())
        out[name] = None if where is None or old is None else old | where

    for s in stmts:
        match s:
            case _Local(role=role, assigns=assigns):
                for t, _ in assigns:
                    add(t, frozenset({role}))
            case _Send(target=t, to=to):
                add(t, frozenset(to))
            case _Const(target=t):
                add(t, None)
            case _Call(target=t, at=at):
                add(t, at)
            case _If(then=then, orelse=orelse):
                _holders(then, out)
                _holders(orelse, out)
            case _While(body=body):
                _holders(body, out)
            case _For(var=v, body=body):
                add(v, None)
                _holders(body, out)


def _render(
    stmts: Sequence[Any],
    indent: int,
    out: list[str],
    choices: dict[int, frozenset[str]] | None = None,
    everyone: frozenset[str] = frozenset(),
    choices_calls_all: dict[int, frozenset[str]] | None = None,
) -> None:
    """Append the source of ``stmts`` to ``out``.

    With ``choices``, record for the line of every ``if``/``elif``/``while``
    the roles that take part in it (the only ones a selection may be sent to);
    ``choices_calls_all`` counts every role passed to a call as taking part.
    """
    pad = "    " * indent
    for s in stmts:
        match s:
            case _Local(role=role, assigns=assigns):
                out.append(f"{pad}with {role}:")
                out.extend(f"{pad}    {t} = {e}" for t, e in assigns)
            case _Send(target=t, sender=snd, expr=e, to=to, as_list=as_list):
                dest = f"[{', '.join(to)}]" if as_list else to[0]
                out.append(f"{pad}{t} = {snd}.send({e}, to={dest})")
            case _Const(target=t, value=v):
                out.append(f"{pad}{t} = {v}")
            case _If(cond=c, then=then, orelse=orelse, as_elif=as_elif):
                out.append(f"{pad}{'elif' if as_elif else 'if'} {c}:")
                if choices is not None and choices_calls_all is not None:
                    choices[len(out)] = _involved([s], everyone)
                    choices_calls_all[len(out)] = _involved([s], everyone, True)
                _render(then, indent + 1, out, choices, everyone, choices_calls_all)
                if len(orelse) == 1 and isinstance(orelse[0], _If) and orelse[0].as_elif:
                    _render(orelse, indent, out, choices, everyone, choices_calls_all)
                elif orelse:
                    out.append(f"{pad}else:")
                    _render(orelse, indent + 1, out, choices, everyone, choices_calls_all)
            case _While(cond=c, body=body):
                out.append(f"{pad}while {c}:")
                if choices is not None and choices_calls_all is not None:
                    choices[len(out)] = _involved([s], everyone)
                    choices_calls_all[len(out)] = _involved([s], everyone, True)
                _render(body, indent + 1, out, choices, everyone, choices_calls_all)
            case _For(var=v, n=n, body=body):
                out.append(f"{pad}for {v} in range({n}):")
                _render(body, indent + 1, out, choices, everyone, choices_calls_all)
            case _Call(target=t, callee=callee, roles=roles, args=args):
                out.append(f"{pad}{t} = {callee}({', '.join([*roles, *args])})")
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

    def replicated(self, env: dict[str, Loc], loops: list[str]) -> list[str]:
        consts = sorted(n for n, loc in env.items() if loc is None and n not in loops)
        return consts + (loops if self.opts.loop_index_reads else [])

    def atom(self, located: list[str], shared: list[str], nest: int = 0) -> tuple[str, int]:
        kinds = (["name", "name"] if located else []) + ["literal"] + (["shared"] if shared else [])
        if self.opts.globals and nest == 0 and self.integer(0, 5) == 5:
            kinds.append("call")
        kind = self.choice(kinds)
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
        kinds = ["local", "send"]
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
        callable_subs = [s for s in self.subs if len(s.roles) <= len(self.active)]
        if callable_subs:
            kinds.append("call")
        kind = self.choice(kinds)
        shared = self.replicated(env, loops)

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
            body = self.block(inner, set(mutable), [*loops, var], depth + 1, False)
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
            located = [n for n in self.names_at(env, frozenset({role})) if n != counter]
            if located and self.integer(0, 2) == 2:
                self.features.add("while_and")
                c = f"{c} and {self.cond(located, shared)}"
            dec = _Local(role, [(counter, f"{counter} - 1")])
            body = self.block(dict(env), set(mutable), loops, depth + 1, False, prefix=[dec])
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
    name: str, roles: Sequence[str], params: Sequence[tuple[str, str]], returns: str
) -> list[str]:
    """The decorated ``def`` line(s), one parameter per line when it gets long."""
    parts = [f"{r}: Role" for r in roles] + [f'{p}: At[int, "{r}"]' for p, r in params]
    one = f"def {name}({', '.join(parts)}){returns}:"
    if len(one) <= 100:
        return ["@choreography", one]
    return ["@choreography", f"def {name}(", *(f"    {p}," for p in parts), f"){returns}:"]


@st.composite
def _program(draw: Callable[[st.SearchStrategy[Any]], Any], opts: Options) -> Program:
    features: set[str] = set()
    lines = ["from choreo import At, Role, choreography", ""]
    module = _Globals({}, None)
    if opts.globals and draw(st.booleans()):
        scale = draw(st.integers(1, 3))
        module = _Globals({"SCALE": scale}, "bump")
        lines += [
            f"SCALE = {scale}",
            "",
            "",
            "def bump(x):",
            "    return (x * SCALE + 1) % 1000",
            "",
        ]
    module_env: dict[str, Loc] = dict.fromkeys(module.consts)

    # sub-choreographies first, each may call the earlier ones
    subs: list[_Sub] = []
    n_subs = draw(st.integers(0, 2)) if opts.subs else 0
    role_pool = ["a", "b", "c", "x", "y", "z"]
    for s in range(n_subs):
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
        env: dict[str, Loc] = {**module_env, **{p: frozenset({r}) for p, r in params}}
        mutable: set[str] = set()
        body = g.block(env, mutable, [], 0, True)
        if opts.branch_returns and draw(st.integers(0, 3)) == 3:
            features.add("return_branches_in_sub")
            g.branch_return(body, env, mutable, ret_role)
        else:
            ret = g.returning(body, env, mutable, ret_role)
            body.append(_Return(ret, frozenset({ret_role})))
        involved = _involved(body, frozenset(roles)) | {r for _, r in params}
        sub = _Sub(f"sub_{s}", roles, params, ret_role, involved)
        subs.append(sub)
        lines += ["", *_signature(sub.name, roles, params, f' -> At[int, "{ret_role}"]')]
        _render(body, 1, lines)
        lines.append("")

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
        body.append(_Return(ret))
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
    )


def choreographies(options: Options | None = None) -> st.SearchStrategy[Program]:
    """Small well-formed choreography modules (see the module docstring)."""
    return _program(options or Options())


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
