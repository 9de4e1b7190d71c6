"""Checks of the choreography generator in ``tests/strategies.py`` that do not need the core.

Every generated module must parse, keep the well-formedness rules (re-checked
here by an independent location checker over the stdlib ``ast`` of the
source, not over the generator's own bookkeeping), and terminate when run as
plain Python with trivial stand-ins for ``Role``/``At``/``choreography``
(``run_reference`` in ``tests/strategies.py``, shared with the property tests,
which compare the messages a projected run sends with the ones it records).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings

try:
    from tests.strategies import ALL_FEATURES, Options, Program, choreographies, run_reference
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from strategies import (  # type: ignore[no-redef]
        ALL_FEATURES,
        Options,
        Program,
        choreographies,
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
