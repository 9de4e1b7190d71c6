"""Checks of the choreography generator in ``tests/strategies.py`` that do not need the core.

Every generated module must parse, keep the well-formedness rules (re-checked
here by an independent location checker over the stdlib ``ast`` of the
source, not over the generator's own bookkeeping), and terminate when run as
plain Python with trivial stand-ins for ``Role``/``At``/``choreography``
(``run_reference`` in ``tests/strategies.py``, shared with the property tests,
which compare the messages a projected run sends with the ones it records).

Group programs (``group_choreographies()``) are re-checked by a second
independent checker that knows which members hold a value (a whole group, a
slice, one member, a loop's member; uniformly or each its own), which
conditions a group may decide, which quorums are valid for every census and
what may be folded from a quorum gather. They must also run in the model
(``run_model``) for censuses of 1, 2, 3 and 7 members, with the same results
whichever members a quorum gather hears; and the model must agree with the
plain-Python reference run on core programs.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings

try:
    from tests.strategies import (
        ALL_FEATURES,
        GROUP_FEATURES,
        Options,
        Program,
        _Chor,
        _GLocal,
        _GSend,
        _Local,
        _Return,
        choreographies,
        group_choreographies,
        run_model,
        run_reference,
    )
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from strategies import (  # type: ignore[no-redef]
        ALL_FEATURES,
        GROUP_FEATURES,
        Options,
        Program,
        _Chor,
        _GLocal,
        _GSend,
        _Local,
        _Return,
        choreographies,
        group_choreographies,
        run_model,
        run_reference,
    )

Loc = frozenset[str] | None
EVERYWHERE = None


# --------------------------------------------------------------------------
# an independent location checker over the source text


class NotWellFormed(AssertionError):
    pass


@dataclass
class Sig:
    roles: list[str]
    params: list[tuple[str, str]]
    ret: str | None


@dataclass
class FnReport:
    result: Loc
    roles_used: set[str] = field(default_factory=set)
    names_read: set[str] = field(default_factory=set)
    max_depth: int = 0


def _at_role(ann: ast.expr | None) -> str | None:
    """``At[int, "r"]`` -> ``"r"``; anything else -> None."""
    if (
        isinstance(ann, ast.Subscript)
        and isinstance(ann.value, ast.Name)
        and ann.value.id == "At"
        and isinstance(ann.slice, ast.Tuple)
        and len(ann.slice.elts) == 2
        and isinstance(ann.slice.elts[0], ast.Name)
        and ann.slice.elts[0].id == "int"
        and isinstance(ann.slice.elts[1], ast.Constant)
        and isinstance(ann.slice.elts[1].value, str)
    ):
        return ann.slice.elts[1].value
    return None


BUILTINS = frozenset({"abs", "max", "min"})


class _FnChecker:
    def __init__(
        self,
        fn: ast.FunctionDef,
        sigs: dict[str, Sig],
        consts: dict[str, int] | None = None,
        helpers: frozenset[str] = frozenset(),
    ) -> None:
        self.fn = fn
        self.sigs = sigs
        self.callables = BUILTINS | helpers
        self.const_values: dict[str, int] = dict(consts or {})
        self.roles: list[str] = []
        self.env: dict[str, Loc] = dict.fromkeys(self.const_values)
        self.params: list[tuple[str, str]] = []
        for a in fn.args.args:
            if isinstance(a.annotation, ast.Name) and a.annotation.id == "Role":
                self.roles.append(a.arg)
            else:
                r = _at_role(a.annotation)
                self.need(r is not None and r in self.roles, f"bad parameter {a.arg}", a)
                assert r is not None
                self.params.append((a.arg, r))
                self.env[a.arg] = frozenset({r})
        self.need(len(set(self.roles)) == len(self.roles), "duplicate roles", fn)
        self.ret_role = _at_role(fn.returns)
        self.need(fn.returns is None or self.ret_role in self.roles, "bad return annotation", fn)
        self.report = FnReport(result=EVERYWHERE)

    def need(self, ok: bool, what: str, node: ast.AST) -> None:
        if not ok:
            line = getattr(node, "lineno", "?")
            raise NotWellFormed(f"{self.fn.name}, line {line}: {what}")

    # -- expressions ----------------------------------------------------------
    def reads(self, e: ast.expr) -> list[str]:
        out = []
        functions = set()
        for node in ast.walk(e):
            if isinstance(node, ast.Call):
                self.need(
                    isinstance(node.func, ast.Name) and node.func.id in self.callables,
                    "call of something that is not a known global function",
                    node,
                )
                assert isinstance(node.func, ast.Name)
                self.need(not node.keywords, "keyword arguments", node)
                functions.add(id(node.func))
            elif id(node) in functions:
                continue
            elif isinstance(node, ast.Name):
                self.need(node.id in self.env, f"`{node.id}` is not bound here", node)
                out.append(node.id)
                self.report.names_read.add(node.id)
            elif isinstance(node, ast.BinOp):
                self.need(
                    isinstance(node.op, ast.Add | ast.Sub | ast.Mult | ast.Mod), "bad op", node
                )
                if isinstance(node.op, ast.Mod):
                    self.need(
                        isinstance(node.right, ast.Constant) and node.right.value > 0,
                        "modulo by a non-literal",
                        node,
                    )
            elif isinstance(node, ast.Constant):
                self.need(type(node.value) is int, "non-int literal", node)
            else:
                self.need(
                    isinstance(
                        node,
                        ast.expr_context
                        | ast.operator
                        | ast.cmpop
                        | ast.boolop
                        | ast.Compare
                        | ast.BoolOp
                        | ast.IfExp,
                    ),
                    f"unexpected {type(node).__name__}",
                    node,
                )
        return out

    def reads_at(self, e: ast.expr, role: str) -> None:
        for n in self.reads(e):
            loc = self.env[n]
            self.need(loc is EVERYWHERE or role in loc, f"`{n}` is not held by {role}", e)

    def role(self, e: ast.expr) -> str:
        self.need(isinstance(e, ast.Name) and e.id in self.roles, "not a role", e)
        assert isinstance(e, ast.Name)
        self.report.roles_used.add(e.id)
        return e.id

    def condition(self, e: ast.expr) -> frozenset[str]:
        located = [self.env[n] for n in self.reads(e) if self.env[n] is not EVERYWHERE]
        self.need(bool(located), "condition reads no located name", e)
        where = frozenset.intersection(*[loc for loc in located if loc is not None])
        self.need(bool(where), "condition mixes locations", e)
        return where

    # -- statements -----------------------------------------------------------
    def check(self) -> FnReport:
        result = self.final(self.fn.body, depth=0)
        if self.ret_role is not None:
            self.need(result == frozenset({self.ret_role}), "result not where annotated", self.fn)
        self.report.result = result
        return self.report

    def final(self, body: list[ast.stmt], depth: int) -> Loc:
        """A body that ends with ``return``, or with an ``if`` returning in both branches."""
        self.need(bool(body), "no final return", self.fn)
        *init, last = body
        if init:
            self.block(init, depth)
        self.report.max_depth = max(self.report.max_depth, depth)
        if isinstance(last, ast.If) and last.orelse:
            self.need(depth == 0, "returning `if` is nested", last)
            self.condition(last.test)
            locs = []
            for branch in (last.body, last.orelse):
                saved = dict(self.env)
                locs.append(self.final(branch, depth + 1))
                self.env = saved
            self.need(locs[0] == locs[1], "branches return from different places", last)
            return locs[0]
        self.need(isinstance(last, ast.Return), "no final return", last)
        assert isinstance(last, ast.Return)
        if last.value is None:
            return EVERYWHERE
        if isinstance(last.value, ast.Constant):
            self.need(type(last.value.value) is int, "non-int result", last)
            return EVERYWHERE
        self.need(isinstance(last.value, ast.Name), "return of an expression", last)
        assert isinstance(last.value, ast.Name)
        self.reads(last.value)
        return self.env[last.value.id]

    def block(self, stmts: list[ast.stmt], depth: int) -> None:
        self.need(bool(stmts) or depth == 0, "empty block", self.fn)
        self.report.max_depth = max(self.report.max_depth, depth)
        self.need(depth <= 3, "nested deeper than 3", self.fn)
        for s in stmts:
            self.stmt(s, depth)

    def nested(self, stmts: list[ast.stmt], depth: int, extra: dict[str, Loc]) -> None:
        """A compound statement's body: what it binds is not visible after it."""
        saved = dict(self.env)
        self.env.update(extra)
        self.block(stmts, depth + 1)
        self.env = saved

    def bind(self, name: str, loc: Loc, node: ast.AST) -> None:
        self.need(name not in self.roles, "binds a role name", node)
        if name in self.env:
            # only a single-role name may be rebound, and only where it is held
            self.need(
                self.env[name] == loc and loc is not None and len(loc) == 1,
                f"`{name}` rebound elsewhere",
                node,
            )
        self.env[name] = loc

    def stmt(self, s: ast.stmt, depth: int) -> None:
        match s:
            case ast.With(items=[ast.withitem(context_expr=ctx, optional_vars=None)], body=body):
                r = self.role(ctx)
                for a in body:
                    self.need(
                        isinstance(a, ast.Assign)
                        and len(a.targets) == 1
                        and isinstance(a.targets[0], ast.Name),
                        "with-block statement is not `name = expr`",
                        a,
                    )
                    assert isinstance(a, ast.Assign) and isinstance(a.targets[0], ast.Name)
                    self.reads_at(a.value, r)
                    self.bind(a.targets[0].id, frozenset({r}), a)
            case ast.Assign(
                targets=[ast.Name(id=target)],
                value=ast.Call(
                    func=ast.Attribute(value=sender, attr="send"), args=[e], keywords=kw
                ),
            ):
                snd = self.role(sender)
                self.need(len(kw) == 1 and kw[0].arg == "to", "send without to=", s)
                dest = kw[0].value
                to = (
                    [self.role(r) for r in dest.elts]
                    if isinstance(dest, ast.List)
                    else [self.role(dest)]
                )
                self.need(bool(to) and len(set(to)) == len(to), "bad receivers", s)
                self.reads_at(e, snd)
                self.need(target not in self.env, "send rebinds a name", s)
                self.env[target] = frozenset(to)
            case ast.Assign(
                targets=[ast.Name(id=target)],
                value=ast.Call(func=ast.Name(id=callee), args=args, keywords=[]),
            ):
                self.need(callee in self.sigs, f"`{callee}` is not an earlier choreography", s)
                sig = self.sigs[callee]
                self.need(len(args) == len(sig.roles) + len(sig.params), "arity", s)
                mapping = {p: self.role(a) for p, a in zip(sig.roles, args, strict=False)}
                self.need(len(set(mapping.values())) == len(mapping), "roles not distinct", s)
                for (_, prole), a in zip(sig.params, args[len(sig.roles) :], strict=True):
                    self.need(isinstance(a, ast.Name), "argument is not a name", a)
                    self.reads_at(a, mapping[prole])
                self.need(sig.ret is not None, "callee has no located result", s)
                assert sig.ret is not None
                self.need(target not in self.env, "call rebinds a name", s)
                self.env[target] = frozenset({mapping[sig.ret]})
            case ast.Assign(targets=[ast.Name(id=target)], value=value):
                # a replicated statement: only on constants, only outside every block
                self.need(depth == 0, "replicated statement inside a block", s)
                self.need(target not in self.env, "replicated rebinding", s)
                for n in self.reads(value):
                    self.need(self.env[n] is EVERYWHERE, f"replicated statement reads `{n}`", s)
                v = eval(compile(ast.Expression(value), "<const>", "eval"), {}, self.const_values)
                self.need(type(v) is int, "non-int constant", s)
                self.env[target] = EVERYWHERE
                self.const_values[target] = v
            case ast.If(test=test, body=body, orelse=orelse):
                self.condition(test)
                self.nested(body, depth, {})
                if orelse:
                    self.nested(orelse, depth, {})
            case ast.While(test=test, body=body, orelse=[]):
                # the counter pattern: `k > 0 [and c]`, first in the body `with r: k = k - 1`
                first = test.values[0] if isinstance(test, ast.BoolOp) else test
                self.need(
                    isinstance(test, ast.Compare)
                    or (isinstance(test.op, ast.And) and len(test.values) == 2),
                    "while condition is not `k > 0 [and c]`",
                    s,
                )
                self.need(
                    isinstance(first, ast.Compare)
                    and isinstance(first.left, ast.Name)
                    and isinstance(first.ops[0], ast.Gt)
                    and isinstance(first.comparators[0], ast.Constant)
                    and first.comparators[0].value == 0,
                    "while condition does not start with `k > 0`",
                    s,
                )
                assert isinstance(first, ast.Compare) and isinstance(first.left, ast.Name)
                k = first.left.id
                loc = self.env.get(k)
                self.need(loc is not None and len(loc) == 1, "counter not at one role", s)
                assert loc is not None
                (r,) = loc
                self.need(self.condition(test) >= loc, "while condition not at the counter", s)
                dec = body[0]
                self.need(
                    ast.unparse(dec) == f"with {r}:\n    {k} = {k} - 1",
                    "the body does not start by decrementing the counter",
                    dec,
                )
                self.nested(body, depth, {})
            case ast.For(
                target=ast.Name(id=var),
                iter=ast.Call(func=ast.Name(id="range"), args=[ast.Constant() | ast.Name() as arg]),
                body=body,
                orelse=[],
            ):
                if isinstance(arg, ast.Name):
                    self.need(
                        self.env.get(arg.id, 0) is EVERYWHERE, "range over a located value", s
                    )
                    n = self.const_values[arg.id]
                else:
                    assert isinstance(arg, ast.Constant)
                    n = arg.value
                self.need(type(n) is int and 0 <= n <= 3, "range too big", s)
                self.need(var not in self.env, "loop index shadows a name", s)
                self.nested(body, depth, {var: EVERYWHERE})
            case _:
                self.need(False, f"unexpected statement `{ast.unparse(s)}`", s)


def check_module(source: str) -> tuple[dict[str, Sig], dict[str, FnReport]]:
    """Check every choreography of ``source``; returns signatures and reports by name."""
    tree = ast.parse(source)
    imp, *defs = tree.body
    assert ast.unparse(imp) == "from choreo import At, Role, choreography"
    sigs: dict[str, Sig] = {}
    reports: dict[str, FnReport] = {}
    consts: dict[str, int] = {}
    helpers: set[str] = set()
    for fn in defs:
        # module constants and plain helper functions come first
        if isinstance(fn, ast.Assign) and not sigs and not helpers:
            assert isinstance(fn.targets[0], ast.Name) and isinstance(fn.value, ast.Constant)
            consts[fn.targets[0].id] = fn.value.value
            continue
        assert isinstance(fn, ast.FunctionDef), ast.unparse(fn)
        if not fn.decorator_list:
            assert not sigs, "helpers come before the choreographies"
            helpers.add(fn.name)
            continue
        assert [ast.unparse(d) for d in fn.decorator_list] == ["choreography"]
        assert fn.name not in sigs
        c = _FnChecker(fn, sigs, consts, frozenset(helpers))
        reports[fn.name] = c.check()
        sigs[fn.name] = Sig(c.roles, c.params, c.ret_role)
    return sigs, reports


# --------------------------------------------------------------------------
# an independent location checker for group programs (``Roles`` parameters)
#
# Locations are sets of tokens: a role (``a``); a group place whose every member
# holds the value (``g``: each its own; ``g[1:]``, ``g[:-1]``: the members of the
# slice; ``g[0]``, ``g[-1]``: one member; a loop's member variable); ``g=`` (every
# member of ``g`` holds the same value, received from one sender: only such a
# value may decide a condition at the group). ``uniform`` names have the same
# value at every member that holds them (what a quorum gather may fold).

GROUP_CALLS = frozenset({"abs", "max", "min", "len", "ord", "sum", "enumerate", "zip", "range"})


@dataclass
class GSig:
    roles: list[str]
    groups: list[str]
    params: list[tuple[str, str]]
    ret: str | None
    # a group parameter that may be passed an empty slice
    maybe_empty: set[str] = field(default_factory=set)


@dataclass
class GDict:
    """A gathered dict: who holds it and what may be folded from it."""

    holders: frozenset[str]
    values_ok: bool  # its values may be folded (no quorum, or every sender sent the same)
    same_everywhere: bool  # every receiver holds the same dict (or folds it to the same int)


def _place_text(e: ast.expr) -> str:
    return ast.unparse(e)


class _GroupFnChecker:
    def __init__(
        self,
        fn: ast.FunctionDef,
        sigs: dict[str, GSig],
        consts: dict[str, int],
        helpers: frozenset[str],
        maybe_empty: set[str],
    ) -> None:
        self.fn = fn
        self.sigs = sigs
        self.const_values = dict(consts)
        self.helpers = helpers
        self.maybe_empty = maybe_empty
        self.roles: list[str] = []
        self.groups: list[str] = []
        self.params: list[tuple[str, str]] = []
        self.env: dict[str, Loc] = dict.fromkeys(consts)
        self.dicts: dict[str, GDict] = {}
        self.uniform: set[str] = set()
        self.members: dict[str, str] = {}  # loop member variables in scope -> group
        self.strs: set[str] = set()  # member names in scope (loop members, `as m`)
        self.roles_used: set[str] = set()
        self.names_read: set[str] = set()
        self.calls: list[tuple[str, list[str]]] = []  # (callee, argument places)
        for a in fn.args.args:
            ann = a.annotation
            if isinstance(ann, ast.Name) and ann.id == "Role":
                self.roles.append(a.arg)
            elif isinstance(ann, ast.Name) and ann.id == "Roles":
                self.groups.append(a.arg)
            else:
                r = _at_place(ann)
                self.need(r in self.roles or r in self.groups, f"bad parameter {a.arg}", a)
                assert r is not None
                self.params.append((a.arg, r))
                self.env[a.arg] = frozenset({r})
        everyone = self.roles + self.groups
        self.need(len(set(everyone)) == len(everyone), "duplicate roles", fn)
        self.ret = _at_place(fn.returns)
        self.need(fn.returns is None or self.ret in everyone, "bad return annotation", fn)

    def need(self, ok: bool, what: str, node: ast.AST) -> None:
        if not ok:
            raise NotWellFormed(f"{self.fn.name}, line {getattr(node, 'lineno', '?')}: {what}")

    # -- places ------------------------------------------------------------------
    def place(self, e: ast.expr) -> tuple[str, str | None, bool]:
        """``(token, group or None, names one role/member)`` of a role expression."""
        if isinstance(e, ast.Name):
            if e.id in self.roles:
                self.roles_used.add(e.id)
                return e.id, None, True
            if e.id in self.groups:
                return e.id, e.id, False
            if e.id in self.members:
                return e.id, self.members[e.id], True
        if isinstance(e, ast.Subscript) and isinstance(e.value, ast.Name):
            g = e.value.id
            text = _place_text(e)
            if g in self.groups and text in (f"{g}[0]", f"{g}[-1]"):
                self.need(g not in self.maybe_empty, f"`{text}` of a group that may be empty", e)
                return text, g, True
            if g in self.groups and text in (f"{g}[1:]", f"{g}[:-1]"):
                return text, g, False
        self.need(False, f"`{ast.unparse(e)}` is not a place", e)
        raise AssertionError  # pragma: no cover

    def readable(self, name: str, token: str, group: str | None) -> bool:
        loc = self.env[name]
        if loc is EVERYWHERE:
            return True
        if group is None:
            return token in loc
        return bool(loc & {group, group + "=", token})

    # -- expressions ---------------------------------------------------------------
    def reads(
        self, e: ast.expr, token: str, group: str | None, local: frozenset[str] = frozenset()
    ) -> list[str]:
        """Check ``e`` evaluated at ``token``; the located ints it reads (dicts aside)."""
        out: list[str] = []
        for node in ast.walk(e):
            if isinstance(node, ast.Call):
                self.need(isinstance(node.func, ast.Name | ast.Attribute), "bad call", node)
                if isinstance(node.func, ast.Name):
                    f = node.func.id
                    self.need(f in GROUP_CALLS or f in self.helpers, f"call of `{f}`", node)
                    for kw in node.keywords:
                        self.need(
                            kw.arg == "default" and f in ("min", "max"), "keyword argument", node
                        )
                    if f == "ord":
                        a = node.args[0]
                        self.need(
                            isinstance(a, ast.Subscript)
                            and isinstance(a.value, ast.Name)
                            and a.value.id in self.strs | local,
                            "ord() of something else than a member's name",
                            node,
                        )
                else:
                    self.need(node.func.attr == "values" and not node.args, "bad method", node)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                n = node.id
                if n in local or n in self.strs or n in self.groups or n in GROUP_CALLS:
                    continue
                if n in self.helpers:
                    continue
                if n in self.dicts:
                    d = self.dicts[n]
                    self.need(
                        token in d.holders or (group is not None and group in d.holders),
                        f"dict `{n}` read where it is not held",
                        node,
                    )
                    self.names_read.add(n)
                    continue
                self.need(n in self.env, f"`{n}` is not bound here", node)
                self.need(self.readable(n, token, group), f"`{n}` is not held by {token}", node)
                self.names_read.add(n)
                if self.env[n] is not EVERYWHERE:
                    out.append(n)
            elif isinstance(node, ast.Constant):
                self.need(type(node.value) is int, "non-int literal", node)
            elif isinstance(node, ast.BinOp):
                self.need(
                    isinstance(node.op, ast.Add | ast.Sub | ast.Mult | ast.Mod), "bad op", node
                )
                if isinstance(node.op, ast.Mod):
                    self.need(
                        isinstance(node.right, ast.Constant) and node.right.value > 0,
                        "modulo by a non-literal",
                        node,
                    )
            elif isinstance(node, ast.UnaryOp):
                self.need(isinstance(node.op, ast.USub), "bad unary op", node)
            else:
                self.need(
                    isinstance(
                        node,
                        ast.expr_context
                        | ast.operator
                        | ast.unaryop
                        | ast.cmpop
                        | ast.boolop
                        | ast.Compare
                        | ast.BoolOp
                        | ast.IfExp
                        | ast.Attribute
                        | ast.Subscript
                        | ast.Slice
                        | ast.keyword,
                    ),
                    f"unexpected {type(node).__name__}",
                    node,
                )
        return out

    def fold(self, e: ast.expr, token: str, group: str | None) -> tuple[str, bool] | None:
        """``len(x)``/``sum(x.values()) % 1000``/``min|max(x.values(), default=0)`` of a dict.

        Returns the dict and whether the fold reads its values; None when ``e`` is no fold.
        """
        text = ast.unparse(e)
        m = re.fullmatch(
            r"len\((\w+)\)|sum\((\w+)\.values\(\)\) % 1000|(?:min|max)\((\w+)\.values\(\), default=0\)",
            text,
        )
        if not m:
            return None
        name = next(x for x in m.groups() if x)
        if name not in self.dicts:
            return None
        self.reads(e, token, group)
        return name, not text.startswith("len(")

    def is_uniform(self, e: ast.expr, member: str | None) -> bool:
        for node in ast.walk(e):
            if isinstance(node, ast.Name):
                if node.id == member:
                    return False
                if self.env.get(node.id) is not EVERYWHERE and node.id not in self.uniform:
                    if node.id in self.env:
                        return False
        return True

    # -- statements ---------------------------------------------------------------
    def check(self) -> FnReport:
        report = FnReport(result=self.final(self.fn.body, 0))
        if self.ret is not None:
            allowed = {frozenset({self.ret})}
            if self.ret in self.groups:
                allowed.add(frozenset({self.ret + "="}))
            self.need(report.result in allowed, "result not where annotated", self.fn)
        report.roles_used = self.roles_used
        report.names_read = self.names_read
        return report

    def final(self, body: list[ast.stmt], depth: int) -> Loc:
        self.need(bool(body), "no final return", self.fn)
        *init, last = body
        if init:
            self.block(init, depth)
        if isinstance(last, ast.If) and last.orelse:
            self.need(depth == 0, "returning `if` is nested", last)
            self.condition(last.test)
            locs = []
            for branch in (last.body, last.orelse):
                saved = self.save()
                locs.append(self.final(branch, depth + 1))
                self.restore(saved)
            self.need(locs[0] == locs[1], "branches return from different places", last)
            return locs[0]
        self.need(isinstance(last, ast.Return), "no final return", last)
        assert isinstance(last, ast.Return)
        if last.value is None:
            return EVERYWHERE
        if isinstance(last.value, ast.Constant):
            self.need(type(last.value.value) is int, "non-int result", last)
            return EVERYWHERE
        self.need(isinstance(last.value, ast.Name), "return of an expression", last)
        assert isinstance(last.value, ast.Name)
        name = last.value.id
        self.need(name in self.env, f"`{name}` is not bound here", last)
        loc = self.env[name]
        if loc is not EVERYWHERE:
            # every holder must be a role or a whole group (no slice, no single member)
            whole = set(self.roles) | set(self.groups) | {g + "=" for g in self.groups}
            self.need(loc <= whole, f"returns `{name}`, held by part of a group only", last)
        self.names_read.add(name)
        return loc

    def save(self) -> tuple[dict[str, Loc], dict[str, GDict], dict[str, str], set[str]]:
        return dict(self.env), dict(self.dicts), dict(self.members), set(self.strs)

    def restore(
        self, saved: tuple[dict[str, Loc], dict[str, GDict], dict[str, str], set[str]]
    ) -> None:
        self.env, self.dicts, self.members, self.strs = (
            dict(saved[0]),
            dict(saved[1]),
            dict(saved[2]),
            set(saved[3]),
        )

    def block(self, stmts: list[ast.stmt], depth: int) -> None:
        self.need(bool(stmts) or depth == 0, "empty block", self.fn)
        self.need(depth <= 3, "nested deeper than 3", self.fn)
        for s in stmts:
            self.stmt(s, depth)

    def nested(self, stmts: list[ast.stmt], depth: int) -> None:
        saved = self.save()
        self.block(stmts, depth + 1)
        self.restore(saved)

    def fresh(self, name: str, node: ast.AST) -> None:
        self.need(name not in self.roles + self.groups, "binds a role name", node)
        self.need(name not in self.env and name not in self.dicts, f"`{name}` rebound", node)

    def condition(self, e: ast.expr) -> frozenset[str]:
        located = []
        for node in ast.walk(e):
            if isinstance(node, ast.Name) and node.id in self.env:
                self.names_read.add(node.id)
                if self.env[node.id] is not EVERYWHERE:
                    located.append(self.env[node.id])
            elif isinstance(node, ast.Name):
                self.need(
                    node.id in self.strs | set(self.groups) | GROUP_CALLS | self.helpers,
                    f"`{node.id}` is not bound here",
                    node,
                )
        self.need(bool(located), "condition reads no located name", e)
        # not a value only members hold, each for itself (a role holding it too decides)
        for loc in located:
            assert loc is not None
            self.need(
                all(t in self.roles or t.endswith("=") for t in loc)
                or any(t in self.roles for t in loc),
                "condition on a value members hold for themselves",
                e,
            )
        where = frozenset.intersection(*[loc for loc in located if loc is not None])
        deciders = {t for t in where if t in self.roles}
        deciders |= {t for t in where if t.endswith("=") and t[:-1] not in self.maybe_empty}
        self.need(bool(deciders), "condition not held by one role or one group as a whole", e)
        return where

    def stmt(self, s: ast.stmt, depth: int) -> None:
        match s:
            case ast.With(items=[ast.withitem(context_expr=ctx, optional_vars=var)], body=body):
                token, group, single = self.place(ctx)
                member = None
                if var is not None:
                    self.need(group is not None and isinstance(var, ast.Name), "bad `as`", s)
                    assert isinstance(var, ast.Name)
                    member = var.id
                    self.fresh(member, s)
                    self.strs.add(member)
                for a in body:
                    self.need(
                        isinstance(a, ast.Assign)
                        and len(a.targets) == 1
                        and isinstance(a.targets[0], ast.Name),
                        "with-block statement is not `name = expr`",
                        a,
                    )
                    assert isinstance(a, ast.Assign) and isinstance(a.targets[0], ast.Name)
                    t = a.targets[0].id
                    folded = self.fold(a.value, token, group)
                    if folded is None:
                        self.reads(a.value, token, group)
                    else:
                        d = self.dicts[folded[0]]
                        self.need(not folded[1] or d.values_ok, "folds a quorum's values", a)
                    if group is None:
                        # a role's name; a name held by exactly that role may be rebound
                        if t in self.env:
                            self.need(self.env[t] == frozenset({token}), f"`{t}` rebound", a)
                        self.env[t] = frozenset({token})
                        continue
                    self.fresh(t, a)
                    self.env[t] = frozenset({token})
                    if folded is not None:
                        if self.dicts[folded[0]].same_everywhere:
                            self.uniform.add(t)
                    elif not single and self.is_uniform(a.value, member):
                        self.uniform.add(t)
                if member is not None:
                    self.strs.discard(member)
            case ast.Assign(
                targets=[ast.Name(id=target)],
                value=ast.Call(
                    func=ast.Attribute(value=sender, attr=method), args=[e], keywords=kw
                ),
            ) if method in ("send", "scatter"):
                self.send(s, target, sender, method == "scatter", e, kw)
            case ast.Assign(
                targets=[ast.Name(id=target)],
                value=ast.Call(func=ast.Name(id=callee), args=args, keywords=[]),
            ) if callee in self.sigs:
                self.call(s, target, callee, args)
            case ast.Assign(targets=[ast.Name(id=target)], value=value):
                self.need(depth == 0, "replicated statement inside a block", s)
                self.fresh(target, s)
                for node in ast.walk(value):
                    if isinstance(node, ast.Name):
                        self.need(self.env.get(node.id, 0) is EVERYWHERE, "reads a located name", s)
                v = eval(compile(ast.Expression(value), "<const>", "eval"), {}, self.const_values)
                self.need(type(v) is int, "non-int constant", s)
                self.env[target] = EVERYWHERE
                self.const_values[target] = v
            case ast.If(test=test, body=body, orelse=orelse):
                self.condition(test)
                self.nested(body, depth)
                if orelse:
                    self.nested(orelse, depth)
            case ast.While(test=test, body=body, orelse=[]):
                self.while_(s, test, body, depth)
            case ast.For(target=target, iter=it, body=body, orelse=[]):
                self.for_(s, target, it, body, depth)
            case _:
                self.need(False, f"unexpected statement `{ast.unparse(s)}`", s)

    def send(
        self,
        s: ast.stmt,
        target: str,
        sender: ast.expr,
        scatter: bool,
        e: ast.expr,
        kw: list[ast.keyword],
    ) -> None:
        token, group, single = self.place(sender)
        kws = {k.arg: k.value for k in kw}
        self.need(set(kws) <= {"to", "quorum"} and "to" in kws, "bad keywords", s)
        dest = kws["to"]
        items = dest.elts if isinstance(dest, ast.List) else [dest]
        places = [self.place(x) for x in items]
        parties = [g or t for t, g, _ in places]
        self.need(len(set(parties)) == len(parties), "a role or group named twice in to=", s)
        first, _fgroup, fsingle = places[0]
        parts_equal = True
        value = e
        if scatter:
            self.need(len(places) == 1 and not fsingle, "scatter to a role", s)
            self.need(isinstance(e, ast.DictComp) and len(e.generators) == 1, "scatter of what", s)
            assert isinstance(e, ast.DictComp)
            gen = e.generators[0]
            over = ast.unparse(gen.iter)
            self.need(over in (first, f"enumerate({first})"), "scatter over other members", s)
            local = frozenset(n.id for n in ast.walk(gen.target) if isinstance(n, ast.Name))
            self.need(isinstance(e.key, ast.Name) and e.key.id in local, "bad scatter key", s)
            self.reads(e.value, token, group, local)
            parts_equal = not ({n.id for n in ast.walk(e.value) if isinstance(n, ast.Name)} & local)
            value = e.value
        else:
            self.reads(e, token, group)
        self.fresh(target, s)
        if single:
            self.need("quorum" not in kws, "quorum of one sender", s)
            self.env[target] = frozenset(t + "=" if t == g else t for t, g, _ in places)
            if parts_equal:
                self.uniform.add(target)
            return
        # a gather: a dict at every receiver
        q = kws.get("quorum")
        if q is not None:
            text = ast.unparse(q)
            g = group
            assert g is not None
            if token == g and g not in self.maybe_empty:
                ok = ("majority", "0", "1", f"len({g})", f"len({g}) - 1")
            elif token == g:
                ok = ("majority", "0", f"len({g})")  # a majority of nobody is 0
            else:
                ok = ("majority", "0", f"len({token})")
            self.need(text in ok, f"quorum {text} may be invalid for some census", s)
        same = self.is_uniform(value, None) and parts_equal
        self.dicts[target] = GDict(
            frozenset(t for t, _, _ in places),
            q is None or same,
            not scatter or same,
        )

    def call(self, s: ast.stmt, target: str, callee: str, args: list[ast.expr]) -> None:
        sig = self.sigs[callee]
        n = len(sig.roles) + len(sig.groups)
        self.need(len(args) == n + len(sig.params), "arity", s)
        mapping: dict[str, tuple[str, str | None]] = {}
        used: set[str] = set()
        passed = []
        for param, a in zip([*sig.roles, *sig.groups], args, strict=False):
            token, group, single = self.place(a)
            passed.append(token)
            party = group or token
            self.need(party not in used, "a role or group passed twice", s)
            used.add(party)
            if param in sig.roles:
                self.need(single, "a group passed for a role", s)
            else:
                self.need(not single, "a role passed for a group", s)
                if token != group or group in self.maybe_empty:
                    sig.maybe_empty.add(param)
            mapping[param] = (token, group)
        self.calls.append((callee, passed))
        for (_, where), a in zip(sig.params, args[n:], strict=True):
            self.need(isinstance(a, ast.Name), "argument is not a name", a)
            self.reads(a, *mapping[where])
        self.need(sig.ret is not None, "callee has no located result", s)
        assert sig.ret is not None
        self.fresh(target, s)
        self.env[target] = frozenset({mapping[sig.ret][0]})

    def while_(self, s: ast.stmt, test: ast.expr, body: list[ast.stmt], depth: int) -> None:
        first = test.values[0] if isinstance(test, ast.BoolOp) else test
        self.need(
            isinstance(first, ast.Compare)
            and isinstance(first.left, ast.Name)
            and ast.unparse(first) == f"{first.left.id} > 0",
            "while condition does not start with `k > 0`",
            s,
        )
        assert isinstance(first, ast.Compare) and isinstance(first.left, ast.Name)
        k = first.left.id
        loc = self.env.get(k)
        self.need(loc is not None and len(loc) == 1, "counter not at one role or group", s)
        assert loc is not None
        (where,) = loc
        self.need(where in self.condition(test), "while condition not at the counter", s)
        if where in self.roles:
            self.need(
                ast.unparse(body[0]) == f"with {where}:\n    {k} = {k} - 1",
                "the body does not start by decrementing the counter",
                body[0],
            )
            self.nested(body, depth)
            return
        g = where[:-1]
        self.need(where.endswith("=") and len(body) >= 2, "counter not held by a group", s)
        dec = ast.unparse(body[0]).split("\n")
        self.need(
            len(dec) == 2
            and dec[0] == f"with {g}[0]:"
            and re.fullmatch(rf"    (\w+) = {k} - 1", dec[1]) is not None,
            "the body does not start by decrementing the counter at g[0]",
            body[0],
        )
        d = dec[1].split()[0]
        self.need(
            ast.unparse(body[1]) == f"{k} = {g}[0].send({d}, to={g})",
            "the decremented counter is not sent back to the group",
            body[1],
        )
        saved = self.save()
        self.env[d] = frozenset({f"{g}[0]"})
        self.block(body[2:], depth + 1) if body[2:] else None
        self.restore(saved)

    def for_(
        self, s: ast.stmt, target: ast.expr, it: ast.expr, body: list[ast.stmt], depth: int
    ) -> None:
        text = ast.unparse(it)
        saved = self.save()
        if isinstance(target, ast.Name) and text.startswith("range("):
            arg = text[len("range(") : -1]
            if re.fullmatch(r"len\((\w+)\)", arg):
                self.need(arg[4:-1] in self.groups, "range over the size of what", s)
            elif arg.isdigit():
                self.need(int(arg) <= 3, "range too big", s)
            else:
                self.need(self.env.get(arg, 0) is EVERYWHERE, "range over a located value", s)
                self.need(0 <= self.const_values[arg] <= 3, "range too big", s)
            self.fresh(target.id, s)
            self.env[target.id] = EVERYWHERE
            self.block(body, depth + 1)
        elif isinstance(target, ast.Name):
            _, group, single = self.place(it)
            self.need(group is not None and not single, "loop over a role", s)
            self.fresh(target.id, s)
            self.members[target.id] = group
            self.strs.add(target.id)
            self.block(body, depth + 1)
        else:
            self.need(
                isinstance(target, ast.Tuple)
                and len(target.elts) == 2
                and all(isinstance(x, ast.Name) for x in target.elts),
                "bad loop target",
                s,
            )
            a, b = (x.id for x in target.elts)  # type: ignore[attr-defined]
            m = re.fullmatch(r"zip\((\w+), (\w+)\[1:\]\)", text)
            self.need(m is not None and m.group(1) == m.group(2), "not a chain", s)
            assert m is not None
            g = m.group(1)
            self.need(g in self.groups, "chain over what", s)
            for v in (a, b):
                self.fresh(v, s)
                self.members[v] = g
                self.strs.add(v)
            relay = self.relay(body, a, b, g)
            if relay is None:
                self.block(body, depth + 1)
            else:
                self.restore(saved)
                self.env[relay] = frozenset({f"{g}[-1]"})
                return
        self.restore(saved)

    def relay(self, body: list[ast.stmt], a: str, b: str, g: str) -> str | None:
        """A relay: ``[with a: t = (t + e) % 1000]`` then ``t = a.send(t, to=b)``, ``t`` at
        ``g[0]`` before the loop. Returns ``t``, or None for another loop body."""
        last = ast.unparse(body[-1])
        m = re.fullmatch(rf"(\w+) = {a}\.send\((\w+), to={b}\)", last)
        if m is None or m.group(1) != m.group(2):
            return None
        t = m.group(1)
        if t not in self.env:
            return None
        self.need(self.env[t] == frozenset({f"{g}[0]"}), "a relay of a value not at g[0]", body[-1])
        self.need(len(body) <= 2, "a relay does more", body[0])
        if len(body) == 2:
            step = ast.unparse(body[0]).split("\n")
            self.need(
                len(step) == 2
                and step[0] == f"with {a}:"
                and step[1].startswith(f"    {t} = ({t} + "),
                "a relay's step is not `t = (t + e) % 1000`",
                body[0],
            )
            inner = body[0]
            assert isinstance(inner, ast.With) and isinstance(inner.body[0], ast.Assign)
            saved = self.env[t]
            self.env[t] = frozenset({a})
            self.reads(inner.body[0].value, a, g)
            self.env[t] = saved
        return t


def _at_place(ann: ast.expr | None) -> str | None:
    """``At[int, "r"]`` -> ``"r"`` (a role or a group); anything else -> None."""
    if (
        isinstance(ann, ast.Subscript)
        and isinstance(ann.value, ast.Name)
        and ann.value.id == "At"
        and isinstance(ann.slice, ast.Tuple)
        and len(ann.slice.elts) == 2
        and ast.unparse(ann.slice.elts[0]) == "int"
        and isinstance(ann.slice.elts[1], ast.Constant)
        and isinstance(ann.slice.elts[1].value, str)
    ):
        return ann.slice.elts[1].value
    return None


def check_group_module(source: str) -> tuple[dict[str, GSig], dict[str, FnReport]]:
    """Check every choreography of a group module; signatures and reports by name.

    The choreographies are checked twice: first to learn which sub-choreography
    group parameters are passed a slice (and may have no member), then with that.
    """
    tree = ast.parse(source)
    imp, *defs = tree.body
    assert ast.unparse(imp) == "from choreo import At, Role, Roles, choreography, majority"
    consts: dict[str, int] = {}
    helpers: set[str] = set()
    fns: list[ast.FunctionDef] = []
    for fn in defs:
        if isinstance(fn, ast.Assign) and not fns and not helpers:
            assert isinstance(fn.targets[0], ast.Name) and isinstance(fn.value, ast.Constant)
            consts[fn.targets[0].id] = fn.value.value
            continue
        assert isinstance(fn, ast.FunctionDef), ast.unparse(fn)
        if not fn.decorator_list:
            assert not fns, "helpers come before the choreographies"
            helpers.add(fn.name)
            continue
        assert [ast.unparse(d) for d in fn.decorator_list] == ["choreography"]
        fns.append(fn)
    maybe_empty: dict[str, set[str]] = {}
    for _ in range(2):
        sigs: dict[str, GSig] = {}
        reports: dict[str, FnReport] = {}
        for fn in fns:
            assert fn.name not in sigs
            c = _GroupFnChecker(
                fn, sigs, consts, frozenset(helpers), maybe_empty.get(fn.name, set())
            )
            reports[fn.name] = c.check()
            sigs[fn.name] = GSig(c.roles, c.groups, c.params, c.ret)
        found = {name: sig.maybe_empty for name, sig in sigs.items()}
        if found == maybe_empty:
            break
        maybe_empty = found
    return sigs, reports


# --------------------------------------------------------------------------
# the tests


def check_program(p: Program) -> None:
    sigs, reports = check_module(p.source)
    main = sigs[p.main_name]
    assert main.roles == p.roles
    assert 2 <= len(p.roles) <= 5
    assert {n for n, _ in main.params} == set(p.inputs)
    for name, sig in sigs.items():
        if name != p.main_name:
            assert 2 <= len(sig.roles) <= 3
            assert sig.ret is not None
    assert reports[p.main_name].result == p.result_roles
    main_fn = next(
        f for f in ast.parse(p.source).body if isinstance(f, ast.FunctionDef) and f.name == "main"
    )
    bound = {
        n.id for n in ast.walk(main_fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
    }
    assert bound | {n for n, _ in main.params} == set(p.holders)
    # idle roles take part in nothing: no statement names them, nobody reads their inputs
    used = reports[p.main_name].roles_used
    assert not (used & p.idle_roles)
    idle_inputs = {n for n, r in main.params if r in p.idle_roles}
    assert not (idle_inputs & reports[p.main_name].names_read)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(choreographies())
def test_generated_programs_are_well_formed_and_terminate(p: Program) -> None:
    compile(p.source, "<generated>", "exec", dont_inherit=True)
    check_program(p)
    ref = run_reference(p.source, p.inputs)
    assert ref.result is None or type(ref.result) is int
    # nothing moves to or from a role that takes no part
    assert not {r for m in ref.messages for r in m[:2]} & p.idle_roles
    result = ref.result
    expected = p.expected(result)
    assert set(expected) == set(p.roles)


@settings(max_examples=50, deadline=None)
@given(
    choreographies(
        Options(
            subs=False,
            multicast=False,
            whiles=False,
            fors=False,
            consts=False,
            globals=False,
            ternaries=False,
            max_roles=2,
        )
    )
)
def test_narrowed_options_are_respected(p: Program) -> None:
    check_program(p)
    excluded = {"call", "multicast", "while", "for", "const", "return_multi", "return_const"}
    excluded |= {"module_global", "builtin_call", "helper_call", "ternary"}
    assert not (p.features & excluded)
    assert "SCALE" not in p.source
    assert len(p.roles) == 2


def _sample(n: int, opts: Options | None = None) -> list[Program]:
    out: list[Program] = []

    @settings(
        max_examples=n,
        database=None,
        derandomize=True,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(choreographies(opts))
    def collect(p: Program) -> None:
        out.append(p)

    collect()
    return out


def test_generation_is_deterministic() -> None:
    first = [p.source for p in _sample(40)]
    second = [p.source for p in _sample(40)]
    assert first == second


def test_every_feature_is_generated() -> None:
    seen: set[str] = set()
    for p in _sample(600):
        seen |= p.features
    assert seen == ALL_FEATURES, ALL_FEATURES - seen


@pytest.mark.parametrize(
    "source",
    [
        # reads a name at a role that does not hold it
        "from choreo import At, Role, choreography\n\n"
        "@choreography\n"
        'def main(a: Role, b: Role, in_a: At[int, "a"]):\n'
        "    with b:\n"
        "        v1 = in_a\n"
        "    return 0\n",
        # a name bound inside a branch used after it
        "from choreo import At, Role, choreography\n\n"
        "@choreography\n"
        'def main(a: Role, b: Role, in_a: At[int, "a"]):\n'
        "    if in_a > 2:\n"
        "        with a:\n"
        "            v1 = 1\n"
        "    with a:\n"
        "        v2 = v1\n"
        "    return 0\n",
        # a while that does not count down
        "from choreo import At, Role, choreography\n\n"
        "@choreography\n"
        'def main(a: Role, b: Role, in_a: At[int, "a"]):\n'
        "    while in_a > 0:\n"
        "        with a:\n"
        "            v1 = 1\n"
        "    return 0\n",
        # a condition that mixes locations
        "from choreo import At, Role, choreography\n\n"
        "@choreography\n"
        'def main(a: Role, b: Role, in_a: At[int, "a"], in_b: At[int, "b"]):\n'
        "    if in_a > in_b:\n"
        "        with a:\n"
        "            v1 = 1\n"
        "    return 0\n",
    ],
)
def test_the_selfcheck_rejects_ill_formed_programs(source: str) -> None:
    with pytest.raises(NotWellFormed):
        check_module(source)


def test_plain_run_stops_a_runaway_program() -> None:
    source = (
        "from choreo import At, Role, choreography\n\n"
        "@choreography\n"
        "def main(a: Role):\n"
        "    with a:\n"
        "        v1 = 1\n"
        "    while v1 > 0:\n"
        "        with a:\n"
        "            v1 = v1 + 1\n"
        "    return 0\n"
    )
    with pytest.raises(RuntimeError, match="does not terminate"):
        run_reference(source, {})


def test_choice_lines_point_at_the_main_choreographys_ifs_and_whiles() -> None:
    for p in _sample(100):
        lines = p.source.splitlines()
        main_start = next(i for i, line in enumerate(lines) if line.startswith("def main("))
        compound = {
            i + 1
            for i, line in enumerate(lines)
            if i > main_start and line.strip().startswith(("if ", "elif ", "while "))
        }
        assert set(p.choices) == compound, p.source
        for roles in p.choices.values():
            assert roles <= set(p.roles) - p.idle_roles


def test_reference_run_records_the_messages() -> None:
    source = (
        "from choreo import At, Role, choreography\n"
        "\n"
        "@choreography\n"
        'def sub_0(x: Role, y: Role, v: At[int, "x"]) -> At[int, "y"]:\n'
        "    w = x.send(v, to=y)\n"
        "    return w\n"
        "\n"
        "@choreography\n"
        'def main(a: Role, b: Role, c: Role, in_a: At[int, "a"]) -> At[int, "c"]:\n'
        "    v1 = a.send(in_a, to=[a, b, c])\n"
        "    v2 = b.send(v1, to=b)\n"
        "    for i in range(2):\n"
        "        v3 = sub_0(a, c, in_a)\n"
        "    v4 = sub_0(b, c, v1)\n"
        "    return v4\n"
    )
    ref = run_reference(source, {"in_a": 4})
    assert ref.result == 4
    assert ref.messages == {
        ("a", "b", 10): 1,
        ("a", "c", 10): 1,
        ("a", "c", 5): 2,
        ("b", "c", 5): 1,
    }


def test_expected_results() -> None:
    p = Program("", {}, ["a", "b", "c"], "main", frozenset({"a", "c"}))
    assert p.expected(7) == {"a": 7, "b": None, "c": 7}
    q = Program("", {}, ["a", "b"], "main", None)
    assert q.expected(3) == {"a": 3, "b": 3}


def test_examples_are_readable() -> None:
    for p in _sample(30):
        lines = p.source.splitlines()
        assert all(len(line) <= 100 for line in lines), p.source


# --------------------------------------------------------------------------
# group programs


def check_group_program(p: Program) -> None:
    sigs, reports = check_group_module(p.source)
    main = sigs[p.main_name]
    assert main.roles == p.roles
    assert main.groups == p.groups
    assert 1 <= len(p.roles) <= 4
    assert 1 <= len(p.groups) <= 2
    assert {n for n, _ in main.params} == set(p.inputs) | set(p.group_inputs)
    assert {n: r for n, r in main.params if r in p.groups} == p.group_inputs
    result = reports[p.main_name].result
    parties = None if result is None else frozenset(t.split("[")[0].rstrip("=") for t in result)
    assert parties == p.result_roles
    main_fn = next(
        f for f in ast.parse(p.source).body if isinstance(f, ast.FunctionDef) and f.name == "main"
    )
    bound = {
        n.id for n in ast.walk(main_fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
    }
    in_comprehensions = {
        n.id
        for c in ast.walk(main_fn)
        if isinstance(c, ast.DictComp)
        for g in c.generators
        for n in ast.walk(g.target)
        if isinstance(n, ast.Name)
    }
    assert (bound - in_comprehensions) | {n for n, _ in main.params} == set(p.holders)
    used = reports[p.main_name].roles_used
    assert not (used & p.idle_roles)
    idle_inputs = {n for n, r in main.params if r in p.idle_roles}
    assert not (idle_inputs & reports[p.main_name].names_read)


def _census(p: Program, size: int, named: bool) -> dict[str, list[str]]:
    if named:
        pool = iter(["ann", "bo", "cyd", "dee", "eli", "fay", "gus", "hal", "ivy", "jo"] * 2)
        return {g: [f"{next(pool)}{i}" for i in range(size)] for g in p.groups}
    return {g: [f"{g}.{i}" for i in range(size)] for g in p.groups}


def check_group_model_runs(p: Program) -> None:
    """The model runs ``p`` for several censuses, and what a quorum hears does not matter."""
    for size, named in ((1, False), (2, True), (3, False), (7, True)):
        census = _census(p, size, named)
        inputs: dict[str, object] = dict(p.inputs)
        for name, g in p.group_inputs.items():
            inputs[name] = {m: i + 3 for i, m in enumerate(census[g])} if named else 5
        first = run_model(p, census, inputs)
        everyone = set(p.roles) | {m for ms in census.values() for m in ms}
        assert set(first.results) == everyone
        assert all(v is None or type(v) is int for v in first.results.values())
        assert not {r for m in first.messages for r in m[:2]} & p.idle_roles
        for seed in (1, 2):
            other = run_model(p, census, inputs, seed=seed)
            assert other.results == first.results, (
                f"the result depends on which members a quorum gather hears:\n{p.source}"
            )
            assert other.messages == first.messages


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(group_choreographies())
def test_generated_group_programs_are_well_formed_and_terminate(p: Program) -> None:
    compile(p.source, "<generated>", "exec", dont_inherit=True)
    check_group_program(p)
    check_group_model_runs(p)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    group_choreographies(
        Options(subs=False, group_kinds=frozenset({"glocal", "gsend", "scatter"}), max_roles=2)
    )
)
def test_narrowed_group_options_are_respected(p: Program) -> None:
    check_group_program(p)
    excluded = {"gather", "gather_quorum", "shuffle", "group_to_group", "chain", "relay"}
    excluded |= {"for_member", "for_member_slice", "while_group", "call_group", "call_member"}
    excluded |= {"if_group", "for_group_size", "group_input"}
    assert not (p.features & excluded)
    assert len(p.roles) <= 2


def _group_sample(n: int, opts: Options | None = None) -> list[Program]:
    out: list[Program] = []

    @settings(
        max_examples=n,
        database=None,
        derandomize=True,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(group_choreographies(opts))
    def collect(p: Program) -> None:
        out.append(p)

    collect()
    return out


def test_group_generation_is_deterministic() -> None:
    assert [p.source for p in _group_sample(30)] == [p.source for p in _group_sample(30)]


def test_every_group_feature_is_generated() -> None:
    seen: set[str] = set()
    for p in _group_sample(600):
        seen |= p.features
    assert GROUP_FEATURES <= seen, GROUP_FEATURES - seen


def test_group_choice_lines_point_at_the_main_choreographys_ifs_and_whiles() -> None:
    for p in _group_sample(100):
        lines = p.source.splitlines()
        main_start = next(i for i, line in enumerate(lines) if line.startswith("def main("))
        compound = {
            i + 1
            for i, line in enumerate(lines)
            if i > main_start and line.strip().startswith(("if ", "elif ", "while "))
        }
        assert set(p.choices) == compound, p.source
        for parties in p.choices.values():
            assert parties <= set(p.parties) - p.idle_roles


def test_group_examples_are_readable() -> None:
    for p in _group_sample(60):
        assert all(len(line) <= 100 for line in p.source.splitlines()), p.source


def test_the_model_agrees_with_the_plain_run_on_core_programs() -> None:
    for p in _sample(100):
        ref = run_reference(p.source, p.inputs)
        model = run_model(p)
        assert model.results == p.expected(ref.result), p.source
        assert model.messages == ref.messages, p.source


@pytest.mark.parametrize(
    "source",
    [
        # a whole-group block reads a name only g[0] holds
        "from choreo import At, Role, Roles, choreography, majority\n\n"
        "@choreography\n"
        'def main(a: Role, g: Roles, in_a: At[int, "a"]):\n'
        "    v1 = a.send(in_a, to=g[0])\n"
        "    with g as m2:\n"
        "        v3 = v1 + 1\n"
        "    return 0\n",
        # a condition on a value each member computed for itself
        "from choreo import At, Role, Roles, choreography, majority\n\n"
        "@choreography\n"
        "def main(a: Role, g: Roles):\n"
        "    with g as m1:\n"
        "        v2 = len(m1)\n"
        "    if v2 > 2:\n"
        "        with a:\n"
        "            v3 = 1\n"
        "    return 0\n",
        # a quorum gather's values folded although the members sent different values
        "from choreo import At, Role, Roles, choreography, majority\n\n"
        "@choreography\n"
        "def main(a: Role, g: Roles):\n"
        "    with g as m1:\n"
        "        v2 = len(m1)\n"
        "    v3 = g.send(v2, to=a, quorum=majority)\n"
        "    with a:\n"
        "        v4 = sum(v3.values()) % 1000\n"
        "    return 0\n",
        # a quorum that is too big when the group has one member
        "from choreo import At, Role, Roles, choreography, majority\n\n"
        "@choreography\n"
        "def main(a: Role, g: Roles):\n"
        "    v3 = g.send(1, to=a, quorum=2)\n"
        "    with a:\n"
        "        v4 = len(v3)\n"
        "    return 0\n",
        # a sub-choreography passed a slice uses its group's first member
        "from choreo import At, Role, Roles, choreography, majority\n\n"
        "@choreography\n"
        'def sub_0(x: Role, w: Roles) -> At[int, "x"]:\n'
        "    v1 = w[0].send(1, to=x)\n"
        "    return v1\n\n"
        "@choreography\n"
        "def main(a: Role, g: Roles):\n"
        "    v1 = sub_0(a, g[1:])\n"
        "    return 0\n",
    ],
)
def test_the_group_selfcheck_rejects_ill_formed_programs(source: str) -> None:
    with pytest.raises(NotWellFormed):
        check_group_module(source)


def test_the_model_runs_groups() -> None:
    """A hand-written program in the generator's statements, and what the model makes of it."""
    body = [
        _GSend("v1", "a", "in_a", ["g"], line=7),
        _GLocal("g", "m2", [("v3", "v1 + len(m2)")]),
        _GSend("v4", "g", "v3", ["a"], quorum="majority", line=10),
        _Local("a", [("v5", "len(v4)")]),
        _Return("v5", frozenset({"a"})),
    ]
    p = Program(
        "",
        {"in_a": 10},
        ["a"],
        "main",
        frozenset({"a"}),
        groups=["g"],
        chors={"main": _Chor("main", ["a"], ["g"], [("in_a", "a")], body)},
    )
    run = run_model(p, {"g": ["g.0", "g.1", "g.2"]})
    assert run.results == {"a": 2, "g.0": None, "g.1": None, "g.2": None}
    assert run.messages == Counter(
        {("a", f"g.{i}", 7): 1 for i in range(3)} | {(f"g.{i}", "a", 10): 1 for i in range(3)}
    )
    # `v4` itself is the first two members' dict
    body[3] = _Local("a", [("v5", "sorted(v4.values())")])
    assert run_model(p, {"g": ["g.0", "g.1", "g.2"]}).results["a"] == [13, 13]
