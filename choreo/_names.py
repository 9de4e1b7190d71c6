"""Which names a piece of local code reads from outside and which it binds.

The checker needs, for every ``with r:`` block and every expression at
choreography level, the names it reads that come from *outside* it (those
must be located at ``r``) and the names it binds (which become located at
``r``). Python's own scoping rules decide: names bound by comprehensions,
lambdas and nested ``def`` bodies are local to them; a name read before it is
bound in the same block comes from outside. Branches are treated
optimistically (a name bound in either branch counts as bound afterwards):
a name that might be unbound at run time is Python's ``NameError`` to raise,
not a location error.

This works on the stdlib ``ast`` of the snippet's text (fast, and exact about
load/store contexts); positions are shifted back into the file.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable

from choreo._ir import NameUse
from choreo._source import Span

__all__ = ["MUTATORS", "Names", "SnippetError", "expr_reads", "stmts_names"]

#: methods of the builtin containers that change them in place
MUTATORS = frozenset(
    "append extend insert pop remove clear update add discard setdefault popitem sort reverse "
    "difference_update intersection_update symmetric_difference_update".split()
)


class SnippetError(Exception):
    """A construct that the choreography language does not allow inside local code."""

    def __init__(self, message: str, span: Span) -> None:
        super().__init__(message)
        self.message = message
        self.span = span


class _Walker:
    def __init__(
        self, file: str, line0: int, col0: int, col_shift: int = 0, code: str = ""
    ) -> None:
        self.code_lines = code.splitlines()
        self.file = file
        self.line0 = line0
        self.col0 = col0
        self.col_shift = col_shift
        self.reads: list[NameUse] = []
        self.mutated: dict[str, Span] = {}
        self.walrus: list[Span] = []
        self.loops = 0  # enclosing loops inside the snippet
        self.scopes = 0  # enclosing def/class/lambda inside the snippet
        self.bind_spans: dict[str, Span] = {}

    def _chars(self, lineno: int, byte_col: int) -> int:
        """ast columns are UTF-8 byte offsets; diagnostics count characters."""
        text = self.code_lines[lineno - 1] if 0 < lineno <= len(self.code_lines) else ""
        if text.isascii():
            return byte_col
        return len(text.encode()[:byte_col].decode("utf-8", "ignore"))

    def _span(self, node: ast.expr | ast.stmt) -> Span:
        line = self.line0 + node.lineno - 1
        col = self.col0 + self._chars(node.lineno, node.col_offset) + self.col_shift
        end_line = self.line0 + (node.end_lineno or node.lineno) - 1
        end_lineno = node.end_lineno or node.lineno
        end_col = (
            self.col0
            + self._chars(end_lineno, node.end_col_offset or node.col_offset)
            + self.col_shift
        )
        return Span(self.file, line, max(col, 0), end_line, max(end_col, 0))

    def error(self, message: str, node: ast.expr | ast.stmt) -> SnippetError:
        return SnippetError(message, self._span(node))

    # -- statements ---------------------------------------------------------
    def stmts(self, body: Iterable[ast.stmt], bound: set[str]) -> None:
        for s in body:
            self.stmt(s, bound)

    def stmt(self, s: ast.stmt, bound: set[str]) -> None:
        match s:
            case ast.Assign(targets=targets, value=value):
                self.expr(value, bound)
                for t in targets:
                    self.target(t, bound)
            case ast.AnnAssign(target=target, value=value):
                if value is not None:
                    self.expr(value, bound)
                self.target(target, bound)  # a local annotation `ann` is not evaluated
            case ast.AugAssign(target=target, value=value):
                self.expr(value, bound)
                if isinstance(target, ast.Name):
                    self.name(target, bound)
                    bound.add(target.id)
                    self.bind_spans.setdefault(target.id, self._span(target))
                else:
                    self.target(target, bound)
            case (
                ast.For(target=target, iter=it, body=body, orelse=orelse)
                | ast.AsyncFor(target=target, iter=it, body=body, orelse=orelse)
            ):
                self.expr(it, bound)
                self.target(target, bound)
                self.loops += 1
                self.stmts(body, bound)
                self.loops -= 1
                self.stmts(orelse, bound)
            case ast.While(test=test, body=body, orelse=orelse):
                self.expr(test, bound)
                self.loops += 1
                self.stmts(body, bound)
                self.loops -= 1
                self.stmts(orelse, bound)
            case ast.Return() if self.scopes == 0:
                raise self.error(
                    "`return` inside a `with` block would end only that role's part; "
                    "bind the value and `return` it after the block",
                    s,
                )
            case ast.Break() | ast.Continue() if self.loops == 0 and self.scopes == 0:
                kw = "break" if isinstance(s, ast.Break) else "continue"
                raise self.error(
                    f"`{kw}` inside a `with` block would leave a loop at that role only; "
                    "leave a choreography-level loop through its condition",
                    s,
                )
            case ast.If(test=test, body=body, orelse=orelse):
                self.expr(test, bound)
                self.stmts(body, bound)
                self.stmts(orelse, bound)
            case ast.With(items=items, body=body) | ast.AsyncWith(items=items, body=body):
                for item in items:
                    self.expr(item.context_expr, bound)
                    if item.optional_vars is not None:
                        self.target(item.optional_vars, bound)
                self.stmts(body, bound)
            case ast.FunctionDef() | ast.AsyncFunctionDef():
                for d in s.decorator_list:
                    self.expr(d, bound)
                self.arguments_defaults(s.args, bound)
                self.scope(s.body, _arg_names(s.args), bound)
                bound.add(s.name)
            case ast.ClassDef():
                for e in [*s.decorator_list, *s.bases, *(k.value for k in s.keywords)]:
                    self.expr(e, bound)
                self.scope(s.body, set(), bound)
                bound.add(s.name)
            case ast.Import(names=names) | ast.ImportFrom(names=names):
                for alias in names:
                    if alias.name == "*":
                        raise self.error("`import *` is not allowed in a choreography", s)
                    bound.add(alias.asname or alias.name.split(".")[0])
            case (
                ast.Try(body=body, handlers=handlers, orelse=orelse, finalbody=final)
                | ast.TryStar(body=body, handlers=handlers, orelse=orelse, finalbody=final)
            ):
                self.stmts(body, bound)
                for h in handlers:
                    if h.type is not None:
                        self.expr(h.type, bound)
                    if h.name:
                        bound.add(h.name)
                    self.stmts(h.body, bound)
                self.stmts(orelse, bound)
                self.stmts(final, bound)
            case ast.Global() | ast.Nonlocal():
                kw = "global" if isinstance(s, ast.Global) else "nonlocal"
                raise self.error(f"`{kw}` is not allowed in a choreography", s)
            case ast.Match(subject=subject, cases=cases):
                self.expr(subject, bound)
                for case in cases:
                    for node in ast.walk(case.pattern):
                        if isinstance(node, ast.MatchAs | ast.MatchStar) and node.name:
                            bound.add(node.name)
                        elif isinstance(node, ast.MatchMapping) and node.rest:
                            bound.add(node.rest)
                        elif isinstance(node, ast.MatchValue):
                            self.expr(node.value, bound)
                        elif isinstance(node, ast.MatchClass):
                            self.expr(node.cls, bound)
                    if case.guard is not None:
                        self.expr(case.guard, bound)
                    self.stmts(case.body, bound)
            case ast.Delete(targets=targets):
                for t in targets:
                    self.expr(t, bound)
            case _:
                for child in ast.iter_child_nodes(s):
                    if isinstance(child, ast.expr):
                        self.expr(child, bound)
                    elif isinstance(child, ast.stmt):
                        self.stmt(child, bound)

    def arguments_defaults(self, args: ast.arguments, bound: set[str]) -> None:
        for d in [*args.defaults, *(d for d in args.kw_defaults if d is not None)]:
            self.expr(d, bound)

    def scope(self, body: list[ast.stmt], params: set[str], outer: set[str]) -> None:
        # A nested function: its free names are reads of ours unless bound here.
        inner = set(params)
        for node in ast.walk(ast.Module(body=body, type_ignores=[])):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                inner.add(node.id)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                inner.add(node.name)
            elif isinstance(node, ast.Global | ast.Nonlocal):
                kw = "global" if isinstance(node, ast.Global) else "nonlocal"
                raise self.error(f"`{kw}` is not allowed in a choreography", node)
        self.scopes += 1
        loops, self.loops = self.loops, 0
        self.stmts(body, set(outer) | inner)
        self.scopes -= 1
        self.loops = loops

    def target(self, t: ast.expr, bound: set[str]) -> None:
        match t:
            case ast.Name(id=name):
                bound.add(name)
                self.bind_spans.setdefault(name, self._span(t))
            case ast.Tuple(elts=elts) | ast.List(elts=elts):
                for e in elts:
                    self.target(e, bound)
            case ast.Starred(value=value):
                self.target(value, bound)
            case _:  # attribute or subscript: reads its parts, changes its base in place
                self.expr(t, bound)
                base = t
                while isinstance(base, ast.Attribute | ast.Subscript):
                    base = base.value
                if isinstance(base, ast.Name):
                    self.mutated.setdefault(base.id, self._span(base))

    # -- expressions --------------------------------------------------------
    def name(self, n: ast.Name, bound: set[str], attr: str | None = None) -> None:
        if n.id not in bound:
            self.reads.append(NameUse(n.id, self._span(n), attr))

    def expr(self, e: ast.expr, bound: set[str]) -> None:
        match e:
            case ast.Name(ctx=ast.Load()):
                self.name(e, bound)
            case ast.Name():
                pass
            case ast.Call(func=ast.Attribute(value=ast.Name() as base, attr=attr)) if (
                attr in MUTATORS
            ):
                self.mutated.setdefault(base.id, self._span(e))
                self.expr(e.func, bound)
                for arg in e.args:
                    self.expr(arg, bound)
                for kw in e.keywords:
                    self.expr(kw.value, bound)
            case ast.Attribute(value=ast.Name(ctx=ast.Load()) as base, attr=attr):
                self.name(base, bound, attr)
            case ast.Lambda(args=args, body=body):
                self.arguments_defaults(args, bound)
                self.expr(body, bound | _arg_names(args))
            case (
                ast.ListComp(elt=elt, generators=gens)
                | ast.SetComp(elt=elt, generators=gens)
                | ast.GeneratorExp(elt=elt, generators=gens)
            ):
                self.comprehension(gens, [elt], bound)
            case ast.DictComp(key=key, value=value, generators=gens):
                self.comprehension(gens, [key, value], bound)
            case ast.NamedExpr(target=target, value=value):
                self.expr(value, bound)
                bound.add(target.id)
                self.walrus.append(self._span(e))
            case ast.Yield() | ast.YieldFrom():
                raise self.error("`yield` is not allowed in a choreography", e)
            case ast.Await():
                raise self.error("`await` is not allowed in a choreography", e)
            case _:
                for child in ast.iter_child_nodes(e):
                    if isinstance(child, ast.expr):
                        self.expr(child, bound)
                    elif isinstance(child, ast.comprehension | ast.keyword | ast.arg):
                        for sub in ast.iter_child_nodes(child):
                            if isinstance(sub, ast.expr):
                                self.expr(sub, bound)

    def comprehension(
        self, gens: list[ast.comprehension], elts: list[ast.expr], bound: set[str]
    ) -> None:
        inner = set(bound)
        for i, g in enumerate(gens):
            # the first iterable is evaluated in the enclosing scope
            self.expr(g.iter, bound if i == 0 else inner)
            self.target(g.target, inner)
            for cond in g.ifs:
                self.expr(cond, inner)
        for elt in elts:
            self.expr(elt, inner)


def _arg_names(args: ast.arguments) -> set[str]:
    names = {a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]}
    if args.vararg:
        names.add(args.vararg.arg)
    if args.kwarg:
        names.add(args.kwarg.arg)
    return names


class Names:
    """What a block of local code reads from outside, binds and changes in place."""

    __slots__ = ("binds", "mutated", "reads")

    def __init__(
        self, reads: list[NameUse], binds: dict[str, Span], mutated: dict[str, Span]
    ) -> None:
        self.reads = reads
        self.binds = binds
        self.mutated = mutated


def stmts_names(snippets: Iterable[tuple[str, int, int]], file: str) -> Names:
    """Free reads, binds (with where), and names changed in place, of a block of statements.

    Args:
        snippets: each statement's text with the line and column where it starts.
        file: the file name, for positions.

    Raises:
        SnippetError: the code uses a construct the language forbids.
    """
    reads: list[NameUse] = []
    bound: set[str] = set()
    binds: dict[str, Span] = {}
    mutated: dict[str, Span] = {}
    for code, line, col in snippets:
        walker = _Walker(file, line, col, code=code)
        walker.stmts(ast.parse(code).body, bound)
        reads.extend(walker.reads)
        for name, span in walker.bind_spans.items():
            binds.setdefault(name, span)
        for name, span in walker.mutated.items():
            mutated.setdefault(name, span)
    for name in bound:
        binds.setdefault(name, Span(file, 0, 0, 0, 0))
    return Names(reads, binds, {k: v for k, v in mutated.items() if k not in bound})


def expr_reads(code: str, file: str, line: int, col: int) -> tuple[list[NameUse], list[Span]]:
    """Free reads of an expression whose text starts at ``line:col``, and its ``:=`` spans.

    Raises:
        SnippetError: the expression uses a construct the language forbids.
    """
    tree = ast.parse("(" + code + ")", mode="eval")
    walker = _Walker(file, line, col, col_shift=-1, code="(" + code + ")")
    walker.expr(tree.body, set())
    return walker.reads, walker.walrus
