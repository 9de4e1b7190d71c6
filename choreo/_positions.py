"""Source positions of libcst nodes, cheaply.

libcst's ``PositionProvider`` computes the position of every node by
generating the whole file's code again while counting characters: for a
1,000-line choreography that alone costs more than checking and projecting it.
Python's ``ast`` knows the position of every statement and expression for the
price of parsing. So we parse the file with both and walk the two trees in
lockstep over the constructs a choreography uses (statements; the tests,
targets, iterables, call arguments, ``with`` items and annotations in them),
linking each libcst node to its ``ast`` twin. A node that is not linked (only
ever asked for when rendering a diagnostic about some odd construct) falls
back to the full ``PositionProvider``, computed once, on first need.

``ast`` columns are UTF-8 byte offsets; they are converted to characters.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from typing import cast

import libcst as cst
from libcst.metadata import CodeRange, PositionProvider

__all__ = ["Positions"]

Range = tuple[int, int, int, int]  # line, col, end line, end col (1-based lines, 0-based cols)


class Positions:
    """Positions of the nodes of one parsed file."""

    def __init__(self, source: str, module: cst.Module) -> None:
        self.lines = source.splitlines(keepends=True)
        self.module = module
        self._links: dict[int, ast.AST] = {}
        self._spans: dict[int, tuple[ast.AST, ast.AST]] = {}  # a line of `a; b`: first, last
        self._full: dict[cst.CSTNode, CodeRange] | None = None
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError):  # pragma: no cover - libcst accepted it
            return
        self._block(module.body, tree.body)

    # -- public ------------------------------------------------------------------
    def range(self, node: cst.CSTNode) -> Range:
        """``(line, col, end_line, end_col)`` of ``node``."""
        pair = self._spans.get(id(node))
        if pair is not None:
            first, last = pair
            line, end_line = first.lineno, last.end_lineno or last.lineno  # type: ignore[attr-defined]
            col = self._chars(line, first.col_offset)  # type: ignore[attr-defined]
            end_col = self._chars(end_line, last.end_col_offset or 0)  # type: ignore[attr-defined]
            return line, col, end_line, end_col
        twin = self._links.get(id(node))
        if twin is not None:
            line, end_line = twin.lineno, twin.end_lineno or twin.lineno  # type: ignore[attr-defined]
            col = self._chars(line, twin.col_offset)  # type: ignore[attr-defined]
            end_col = self._chars(end_line, twin.end_col_offset or 0)  # type: ignore[attr-defined]
            return line, col, end_line, end_col
        r = self._full_positions()[node]
        return r.start.line, r.start.column, r.end.line, r.end.column

    # -- internals -----------------------------------------------------------------
    def _chars(self, line: int, byte_col: int) -> int:
        text = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        if text.isascii():
            return byte_col
        return len(text.encode()[:byte_col].decode("utf-8", "ignore"))

    def _full_positions(self) -> dict[cst.CSTNode, CodeRange]:
        if self._full is None:
            # ``MetadataWrapper.resolve`` would also run an empty batched visit of
            # the whole tree; the provider alone is one code generation pass.
            provider = PositionProvider()
            provider._gen_impl(self.module)
            self._full = cast("dict[cst.CSTNode, CodeRange]", provider._computed)
        return self._full

    def _link(self, node: cst.CSTNode | None, twin: ast.AST | None) -> None:
        if node is not None and twin is not None and hasattr(twin, "lineno"):
            self._links[id(node)] = twin

    def _block(self, stmts: Sequence[cst.BaseStatement], twins: list[ast.stmt]) -> None:
        i = 0
        for stmt in stmts:
            if isinstance(stmt, cst.SimpleStatementLine):
                n = len(stmt.body)
                smalls = twins[i : i + n]
                if len(smalls) != n:
                    return
                self._spans[id(stmt)] = (smalls[0], smalls[-1])
                for small, twin in zip(stmt.body, smalls, strict=True):
                    self._small(small, twin)
                i += n
            else:
                if i >= len(twins):
                    return
                self._compound(stmt, twins[i])
                i += 1

    def _suite(self, suite: cst.BaseSuite, twins: list[ast.stmt]) -> None:
        if isinstance(suite, cst.IndentedBlock):
            self._block(suite.body, twins)
        elif isinstance(suite, cst.SimpleStatementSuite):
            if len(suite.body) == len(twins):
                for small, twin in zip(suite.body, twins, strict=True):
                    self._small(small, twin)

    def _compound(self, stmt: cst.BaseStatement, twin: ast.stmt) -> None:
        self._link(stmt, twin)
        match stmt, twin:
            case cst.FunctionDef(), ast.FunctionDef() | ast.AsyncFunctionDef():
                self._function(stmt, twin)
            case cst.ClassDef(), ast.ClassDef():
                self._suite(stmt.body, twin.body)
            case cst.If(), ast.If():
                self._expr(stmt.test, twin.test)
                self._suite(stmt.body, twin.body)
                if isinstance(stmt.orelse, cst.If) and len(twin.orelse) == 1:
                    self._compound(stmt.orelse, twin.orelse[0])
                elif isinstance(stmt.orelse, cst.Else):
                    self._suite(stmt.orelse.body, twin.orelse)
            case cst.While(), ast.While():
                self._expr(stmt.test, twin.test)
                self._suite(stmt.body, twin.body)
            case cst.For(), ast.For() | ast.AsyncFor():
                self._expr(stmt.target, twin.target)
                self._expr(stmt.iter, twin.iter)
                self._suite(stmt.body, twin.body)
            case cst.With(), ast.With() | ast.AsyncWith():
                for item, titem in zip(stmt.items, twin.items, strict=False):
                    self._expr(item.item, titem.context_expr)
                    if item.asname is not None:
                        self._expr(item.asname.name, titem.optional_vars)
                self._suite(stmt.body, twin.body)
            case cst.Try(), ast.Try():
                self._suite(stmt.body, twin.body)
            case _:
                pass

    def _function(self, fn: cst.FunctionDef, twin: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for dec, tdec in zip(fn.decorators, twin.decorator_list, strict=False):
            self._link(dec, tdec)
        groups = (
            (fn.params.posonly_params, twin.args.posonlyargs),
            (fn.params.params, twin.args.args),
            (fn.params.kwonly_params, twin.args.kwonlyargs),
        )
        for params, targs in groups:
            for p, a in zip(params, targs, strict=False):
                self._link(p, a)
                if p.annotation is not None and a.annotation is not None:
                    self._expr(p.annotation.annotation, a.annotation)
        if fn.returns is not None:
            self._expr(fn.returns.annotation, twin.returns)
        self._suite(fn.body, twin.body)

    def _small(self, small: cst.BaseSmallStatement, twin: ast.stmt) -> None:
        self._link(small, twin)
        match small, twin:
            case cst.Assign(), ast.Assign():
                for t, tt in zip(small.targets, twin.targets, strict=False):
                    self._expr(t.target, tt)
                self._expr(small.value, twin.value)
            case cst.Expr(), ast.Expr():
                self._expr(small.value, twin.value)
            case cst.Return(), ast.Return():
                if small.value is not None:
                    self._expr(small.value, twin.value)
            case _:
                pass

    def _expr(self, node: cst.BaseExpression, twin: ast.expr | None) -> None:
        if twin is None:
            return
        self._link(node, twin)
        match node, twin:
            case cst.Call(), ast.Call():
                self._expr(node.func, twin.func)
                positional = iter(twin.args)
                keywords = iter(twin.keywords)
                for arg in node.args:
                    if arg.keyword is None and arg.star != "**":
                        t = next(positional, None)
                        self._link(arg, t)
                        if isinstance(t, ast.Starred):
                            t = t.value
                        self._expr(arg.value, t)
                    else:
                        kw = next(keywords, None)
                        if kw is not None:
                            self._link(arg, kw)
                            self._expr(arg.value, kw.value)
            case cst.List() | cst.Tuple(), ast.List() | ast.Tuple():
                for el, tel in zip(node.elements, twin.elts, strict=False):
                    self._link(el, tel)
                    self._expr(el.value, tel.value if isinstance(tel, ast.Starred) else tel)
            case cst.Subscript(), ast.Subscript():
                self._expr(node.value, twin.value)
                sl = twin.slice
                parts = sl.elts if isinstance(sl, ast.Tuple) and len(node.slice) > 1 else [sl]
                for sub, tsub in zip(node.slice, parts, strict=False):
                    if isinstance(sub.slice, cst.Index):
                        self._expr(sub.slice.value, tsub)
            case cst.Attribute(), ast.Attribute():
                self._expr(node.value, twin.value)
            case _:
                pass
