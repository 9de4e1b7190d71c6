"""Front end: a ``@choreography`` function's libcst tree -> ``ChoreographyIR``.

This stage knows the *syntax* of the language: which statements are
communications, local blocks, conditionals, loops, calls and returns, and
which Python constructs are not allowed at choreography level. It does not
know where values live (that is the checker's job). Every problem is reported
as a positioned ``Diagnostic``; parsing continues after an error so that all
problems of a file are reported at once.

Normalisation done here: ``elif`` becomes a nested ``if``; an ``if`` one of
whose branches ends in ``return`` gets the statements that follow it copied
into its other branches (so every ``return`` is the last statement of its
path, and each role's projection can compare the two branches in full).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import libcst as cst
import libcst.matchers as m

from choreo._ir import (
    Call,
    ChoreographyIR,
    Expr,
    For,
    GLocal,
    GSend,
    If,
    Local,
    NameUse,
    Param,
    Poison,
    Replicated,
    Return,
    RoleRef,
    Send,
    Stmt,
    While,
)
from choreo._names import SnippetError, expr_reads, stmts_names
from choreo._positions import Positions
from choreo._source import Diagnostic, Span

__all__ = ["ParsedModule", "find_choreographies", "parse_function", "parse_module"]


class ParsedModule:
    """A source file parsed once, with the position of every node it is asked about."""

    def __init__(self, file: str, source: str, module: cst.Module) -> None:
        self.file = file
        self.source = source
        self.module = module
        self.positions = Positions(source, module)
        self.lines = self.positions.lines

    def span(self, node: cst.CSTNode) -> Span:
        line, col, end_line, end_col = self.positions.range(node)
        return Span(self.file, line, col, end_line, end_col)

    def code(self, node: cst.CSTNode) -> str:
        """The node's source text, continuation lines dedented to its first column.

        Sliced from the file by position: generating the text again with
        ``code_for_node`` costs a code generation pass per snippet.
        """
        line, col, end_line, end_col = self.positions.range(node)
        lines = self.lines
        first, last = line - 1, end_line - 1
        if first == last:
            return lines[first][col:end_col]
        out = [lines[first][col:]]
        for text in lines[first + 1 : last]:
            out.append(_dedent(text, col))
        out.append(_dedent(lines[last][:end_col], col) if end_col else "")
        return "".join(out)


def _dedent(text: str, col: int) -> str:
    """Remove up to ``col`` leading blanks (continuation lines may be indented less)."""
    stripped = text.lstrip(" \t")
    return text[min(col, len(text) - len(stripped)) :]


def parse_module(source: str, file: str) -> ParsedModule:
    """Parse a file's text.

    Raises:
        libcst.ParserSyntaxError: the text is not valid Python.
    """
    return ParsedModule(file, source, cst.parse_module(source))


def _is_choreography_decorator(dec: cst.Decorator) -> bool:
    node = dec.decorator
    if isinstance(node, cst.Call):
        node = node.func
    if isinstance(node, cst.Name):
        return node.value == "choreography"
    if isinstance(node, cst.Attribute):
        return node.attr.value == "choreography"
    return False


def find_choreographies(pm: ParsedModule) -> list[cst.FunctionDef]:
    """Every function decorated with ``@choreography`` (any nesting), in file order.

    Walks statements only (a full libcst visit of every expression is slow).
    """
    found: list[cst.FunctionDef] = []

    def walk(stmts: Sequence[cst.CSTNode]) -> None:
        for node in stmts:
            if isinstance(node, cst.FunctionDef) and any(
                _is_choreography_decorator(d) for d in node.decorators
            ):
                found.append(node)
            for attr in ("body", "orelse", "handlers", "finalbody", "cases"):
                child = getattr(node, attr, None)
                if isinstance(child, cst.BaseSuite):
                    walk(child.body if isinstance(child, cst.IndentedBlock) else [])
                elif isinstance(child, cst.CSTNode):
                    walk([child])
                elif isinstance(child, Sequence):
                    walk([c for c in child if isinstance(c, cst.CSTNode)])

    walk(pm.module.body)
    return found


@dataclass
class _State:
    pm: ParsedModule
    roles: frozenset[str]
    diags: list[Diagnostic] = field(default_factory=list)
    loop_depth: int = 0
    is_choreography: Callable[[str], bool] | None = None
    groups: frozenset[str] = frozenset()
    #: ``for`` variables ranging over a group, in scope: name -> group
    members: dict[str, str] = field(default_factory=dict)

    def error(self, node: cst.CSTNode, message: str, hint: str | None = None) -> None:
        self.diags.append(Diagnostic(self.pm.span(node), message, hint))

    def is_party(self, name: str) -> bool:
        """A name that denotes a role, a group, or a member of a group."""
        return name in self.roles or name in self.groups or name in self.members


_ROLE_EXPR_HINT = (
    "a role expression is a role, a group `g`, a member `g[0]`/`g[-1]`, a slice `g[1:]`, or a "
    "`for` variable over a group"
)


def _literal_int(node: cst.BaseExpression | None) -> bool:
    if node is None:
        return True
    if isinstance(node, cst.Integer):
        return True
    return (
        isinstance(node, cst.UnaryOperation)
        and isinstance(node.operator, cst.Minus)
        and isinstance(node.expression, cst.Integer)
    )


def _role_ref(st: _State, node: cst.BaseExpression, report: bool = True) -> RoleRef | None:
    """The role expression ``node``, or None (reported when ``report``)."""
    pm = st.pm
    if isinstance(node, cst.Name):
        name = node.value
        kind = (
            "role"
            if name in st.roles
            else "group"
            if name in st.groups
            else "member"
            if name in st.members
            else None
        )
        if kind is not None:
            base = st.members.get(name, name)
            return RoleRef(name, node, base, kind, pm.span(node))
        if report:
            st.error(
                node,
                f"`{name}` is not a role parameter of this choreography",
                f"add `{name}: Role` to the parameters",
            )
        return None
    if (
        isinstance(node, cst.Subscript)
        and isinstance(node.value, cst.Name)
        and node.value.value in st.groups
        and len(node.slice) == 1
    ):
        sl = node.slice[0].slice
        base = node.value.value
        if isinstance(sl, cst.Index) and _literal_int(sl.value):
            return RoleRef(pm.code(node), node, base, "member", pm.span(node))
        if (
            isinstance(sl, cst.Slice)
            and _literal_int(sl.lower)
            and _literal_int(sl.upper)
            and sl.step is None
        ):
            return RoleRef(pm.code(node), node, base, "slice", pm.span(node))
    if report:
        st.error(node, "this is not a role expression the checker can decide", _ROLE_EXPR_HINT)
    return None


def _group_loop(st: _State, target: cst.BaseExpression, it: cst.BaseExpression) -> dict[str, str]:
    """``for m in g`` / ``for a, b in zip(g, g[1:])``: loop variables that are members."""

    def group_of(node: cst.BaseExpression) -> str | None:
        ref = _role_ref(st, node, report=False)
        return ref.base if ref is not None and ref.kind in ("group", "slice") else None

    if isinstance(target, cst.Name):
        g = group_of(it)
        return {target.value: g} if g is not None else {}
    if (
        isinstance(target, cst.Tuple)
        and isinstance(it, cst.Call)
        and m.matches(it.func, m.Name("zip"))
        and len(it.args) == len(target.elements)
    ):
        out: dict[str, str] = {}
        for el, arg in zip(target.elements, it.args, strict=True):
            g = group_of(arg.value)
            if g is None or not isinstance(el.value, cst.Name):
                return {}
            out[el.value.value] = g
        return out
    return {}


def _annotation_kind(ann: cst.BaseExpression) -> tuple[str, str | None] | None:
    """``('role', None)`` for ``Role``; ``('input', 'r')`` for ``At[T, "r"]``; else None."""

    def tail(node: cst.BaseExpression) -> str | None:
        if isinstance(node, cst.Name):
            return node.value
        if isinstance(node, cst.Attribute):
            return node.attr.value
        return None

    if tail(ann) == "Role":
        return ("role", None)
    if tail(ann) == "Roles":
        return ("group", None)
    if isinstance(ann, cst.Subscript) and tail(ann.value) == "At":
        elems = ann.slice
        if len(elems) == 2:
            where = elems[1].slice
            if isinstance(where, cst.Index) and isinstance(where.value, cst.SimpleString):
                value = where.value.evaluated_value
                return ("input", value if isinstance(value, str) else None)
        return ("input", None)
    return None


def parse_function(
    pm: ParsedModule,
    fn: cst.FunctionDef,
    is_choreography: Callable[[str], bool] | None = None,
) -> tuple[ChoreographyIR, list[Diagnostic]]:
    """Turn one decorated function into IR, with every syntax-level diagnostic.

    Args:
        pm: the parsed file.
        fn: the decorated function.
        is_choreography: whether a name (as written in a call) is a ``@choreography``.
    """
    name = fn.name.value
    params: list[Param] = []
    rejected: list[str] = []
    st = _State(pm, frozenset(), is_choreography=is_choreography)
    if fn.asynchronous is not None:
        st.error(fn, "a choreography cannot be `async def`", "remove `async`")
    p = fn.params
    for star in (p.star_arg, p.star_kwarg):
        if isinstance(star, cst.Param):
            st.error(star, "a choreography cannot take *args or **kwargs")
    all_params = [*p.posonly_params, *p.params, *p.kwonly_params]
    role_names = {
        q.name.value
        for q in all_params
        if q.annotation is not None
        and (_annotation_kind(q.annotation.annotation) or ("",))[0] in ("role", "group")
    }
    for q in all_params:
        pspan = pm.span(q)
        if q.annotation is None:
            st.error(
                q,
                f"parameter `{q.name.value}` needs an annotation",
                'annotate it as a role (`: Role`) or an input located at a role (`: At[int, "alice"]`)',
            )
            rejected.append(q.name.value)
            continue
        kind = _annotation_kind(q.annotation.annotation)
        if kind is None:
            st.error(
                q.annotation,
                f"parameter `{q.name.value}` is neither a role nor a located input",
                'use `Role`, or `At[T, "role"]` for an input held by one role',
            )
            rejected.append(q.name.value)
            continue
        if kind[0] == "input":
            where = kind[1]
            if where is None:
                st.error(
                    q.annotation,
                    f"input `{q.name.value}` must name the role that holds it",
                    'write `At[T, "role"]` with the role parameter\'s name as a string',
                )
                rejected.append(q.name.value)
                continue
            if where not in role_names:
                st.error(
                    q.annotation,
                    f"input `{q.name.value}` is located at `{where}`, which is not a role parameter",
                    f"add `{where}: Role` to the parameters, or name one of: "
                    + (", ".join(sorted(role_names)) or "(no roles declared)"),
                )
                rejected.append(q.name.value)
                continue
        if q.default is not None:
            st.error(
                q.default,
                f"parameter `{q.name.value}` cannot have a default value",
                "roles default to a role of the same name; pass inputs when running",
            )
        params.append(Param(q.name.value, kind[0], kind[1], pspan))
    st.roles = frozenset(x.name for x in params if x.kind == "role")
    st.groups = frozenset(x.name for x in params if x.kind == "group")
    returns: str | None = None
    declared = False
    if fn.returns is not None:
        declared = m.matches(fn.returns.annotation, m.Name("None"))
        kind = _annotation_kind(fn.returns.annotation)
        if kind is not None and kind[0] == "input":
            if kind[1] not in st.roles and kind[1] not in st.groups:
                st.error(
                    fn.returns,
                    f"the result is declared at `{kind[1]}`, which is not a role parameter",
                )
            else:
                returns = kind[1]
                declared = True
    fbody = fn.body
    if (
        isinstance(fbody, cst.IndentedBlock)
        and fbody.body
        and m.matches(
            fbody.body[0],
            m.SimpleStatementLine([m.Expr(m.SimpleString() | m.ConcatenatedString())]),
        )
    ):
        fbody = fbody.with_changes(body=fbody.body[1:])  # the docstring
    body = _normalise_returns(_block(st, fbody))
    if rejected:  # uses of a rejected parameter are not reported again
        body = [Poison(frozenset(rejected), pm.span(fn)), *body]
    ir = ChoreographyIR(
        name, pm.file, tuple(params), tuple(body), pm.span(fn), returns, declared=declared
    )
    return ir, st.diags


# -- statements -------------------------------------------------------------


def _block(st: _State, block: cst.BaseSuite) -> list[Stmt]:
    if isinstance(block, cst.SimpleStatementSuite):
        # `if c: x = 1` on one line: treat its small statements like a block
        out: list[Stmt] = []
        for small in block.body:
            out.extend(_small(st, small))
        return out
    assert isinstance(block, cst.IndentedBlock)
    out = []
    returned = False
    for stmt in block.body:
        if returned:
            st.error(
                stmt, "unreachable code after `return`", "remove it, or move the `return` down"
            )
            break
        before = len(st.diags)
        produced = _statement(st, stmt)
        if len(st.diags) > before:
            out.extend(_poison(st, stmt))  # first: what the statement binds validly un-poisons
        out.extend(produced)
        returned = bool(out) and isinstance(out[-1], Return)
    return out


def _poison(st: _State, stmt: cst.BaseStatement) -> list[Stmt]:
    """After a statement was rejected, the names it binds: later uses are not errors again.

    Compound statements are not poisoned as a whole: their inner statements were.
    """
    if isinstance(stmt, cst.If | cst.While | cst.For | cst.Try | cst.TryStar):
        return []
    try:
        span = st.pm.span(stmt)
        names = stmts_names([(st.pm.code(stmt), span.line, span.col)], st.pm.file)
    except (SnippetError, SyntaxError, KeyError, IndexError):
        return []
    bound = frozenset(names.binds) - st.roles
    return [Poison(bound, span)] if bound else []


def _statement(st: _State, stmt: cst.BaseStatement) -> list[Stmt]:
    pm = st.pm
    if isinstance(stmt, cst.SimpleStatementLine):
        out: list[Stmt] = []
        for small in stmt.body:
            out.extend(_small(st, small))
        return out
    if isinstance(stmt, cst.With):
        return _with(st, stmt)
    if isinstance(stmt, cst.If):
        return [_if(st, stmt)]
    if isinstance(stmt, cst.While):
        if stmt.orelse is not None:
            st.error(stmt.orelse, "`while ... else` is not supported at choreography level")
        cond = _expr(st, stmt.test)
        st.loop_depth += 1
        body = _block(st, stmt.body)
        st.loop_depth -= 1
        return [While(cond, tuple(body), pm.span(stmt))]
    if isinstance(stmt, cst.For):
        if stmt.asynchronous is not None:
            st.error(stmt, "`async for` is not allowed in a choreography")
        if stmt.orelse is not None:
            st.error(stmt.orelse, "`for ... else` is not supported at choreography level")
        target = _expr(st, stmt.target)
        targets = frozenset(
            n.value for n in m.findall(stmt.target, m.Name()) if isinstance(n, cst.Name)
        )
        if not m.matches(stmt.target, m.Name() | m.Tuple()):
            st.error(stmt.target, "a choreography-level `for` must bind plain names")
        it = _expr(st, stmt.iter)
        members = _group_loop(st, stmt.target, stmt.iter)
        saved = dict(st.members)
        st.members.update(members)
        for name in targets - set(members):
            st.members.pop(name, None)  # shadowed by a plain loop variable
        st.loop_depth += 1
        body = _block(st, stmt.body)
        st.loop_depth -= 1
        st.members = saved
        return [For(target, targets, it, tuple(body), pm.span(stmt))]
    if isinstance(stmt, cst.Try | cst.TryStar):
        st.error(
            stmt,
            "`try` is not supported at choreography level (it would span several roles)",
            "put the `try` inside a `with role:` block, around that role's local code",
        )
        return []
    if isinstance(stmt, cst.FunctionDef | cst.ClassDef):
        kind = "function" if isinstance(stmt, cst.FunctionDef) else "class"
        st.error(
            stmt,
            f"a {kind} cannot be defined at choreography level",
            "define it at module level, or inside a `with role:` block",
        )
        return []
    st.error(stmt, f"`{type(stmt).__name__.lower()}` is not supported at choreography level")
    return []


def _with(st: _State, stmt: cst.With) -> list[Stmt]:
    pm = st.pm
    if stmt.asynchronous is not None:
        st.error(stmt, "`async with` is not allowed in a choreography")
        return []
    if len(stmt.items) != 1:
        st.error(stmt, "a `with` block runs at exactly one role", "nest one `with role:` per role")
        return []
    item = stmt.items[0]
    role = item.item
    ref: RoleRef | None = None
    if not isinstance(role, cst.Name) or role.value not in st.roles:
        if not isinstance(role, cst.Name | cst.Subscript):
            st.error(
                role,
                "only `with role:` blocks are allowed at choreography level",
                "put other `with` statements inside a `with role:` block",
            )
            return []
        ref = _role_ref(st, role)
        if ref is None:
            return []
    assert isinstance(role, cst.Name | cst.Subscript)
    member: str | None = None
    if item.asname is not None:
        if ref is None:
            st.error(
                item.asname,
                "`with role as name:` is only for groups of roles",
                "write `with g as m:` for a group `g: Roles`",
            )
        elif not isinstance(item.asname.name, cst.Name):
            st.error(item.asname, "`with g as m:` binds one plain name")
            return []
        else:
            member = item.asname.name.value
            if st.is_party(member):
                st.error(item.asname, f"`{member}` is already a role or a group")
                return []
    where = pm.code(role)
    if isinstance(stmt.body, cst.SimpleStatementSuite):
        body_nodes: tuple[cst.BaseStatement, ...] = (cst.SimpleStatementLine(stmt.body.body),)
        snippets = [(pm.code(stmt.body).strip(), pm.span(stmt.body).line, pm.span(stmt.body).col)]
    else:
        assert isinstance(stmt.body, cst.IndentedBlock)
        body_nodes = tuple(stmt.body.body)
        snippets = [(pm.code(s), pm.span(s).line, pm.span(s).col) for s in body_nodes]
    for s in body_nodes:
        if isinstance(s, cst.With) and len(s.items) == 1:
            inner = s.items[0].item
            if _role_ref(st, inner, report=False) is not None:
                st.error(
                    s,
                    f"`with {pm.code(inner)}:` inside `with {where}:`: a block runs at one role "
                    "(or at each member of one group)",
                    f"close the `with {where}:` block first",
                )
                return []
    try:
        names = stmts_names(snippets, pm.file)
    except SnippetError as exc:
        st.diags.append(Diagnostic(exc.span, exc.message))
        return []
    except SyntaxError as exc:  # pragma: no cover - libcst already parsed it
        st.error(stmt, f"cannot analyse this block: {exc.msg}")
        return []
    for use in names.reads:
        if st.is_party(use.name) and use.attr in ("send", "scatter"):
            st.diags.append(
                Diagnostic(
                    use.span,
                    f"`{use.name}.{use.attr}` inside `with {where}:`: communication happens "
                    "at choreography level",
                    f"move it out of the `with` block: `x = {use.name}.send(e, to=...)`",
                )
            )
            return []
    codes = tuple(s for s, _, _ in snippets)
    if ref is not None:
        reads = tuple(u for u in names.reads if u.name != member)
        return [
            GLocal(
                ref,
                member,
                body_nodes,
                "".join(codes),
                codes,
                reads,
                frozenset(names.binds) - ({member} if member else set()),
                pm.span(stmt),
                tuple(NameUse(n, sp) for n, sp in names.binds.items() if n != member),
            )
        ]
    assert isinstance(role, cst.Name)
    return [
        Local(
            role.value,
            body_nodes,
            "".join(codes),
            codes,
            tuple(names.reads),
            frozenset(names.binds),
            pm.span(stmt),
            tuple(NameUse(n, sp) for n, sp in names.binds.items()),
            tuple(NameUse(n, sp) for n, sp in names.mutated.items()),
        )
    ]


def _if(st: _State, stmt: cst.If) -> If:
    cond = _expr(st, stmt.test)
    then = _block(st, stmt.body)
    orelse: list[Stmt] = []
    if isinstance(stmt.orelse, cst.If):
        orelse = [_if(st, stmt.orelse)]
    elif isinstance(stmt.orelse, cst.Else):
        orelse = _block(st, stmt.orelse.body)
    return If(cond, tuple(then), tuple(orelse), st.pm.span(stmt))


def _send_call(st: _State, call: cst.BaseExpression) -> tuple[RoleRef, str] | None:
    """``(sender, method)`` if ``call`` is ``sender.send(...)``/``sender.scatter(...)``."""
    if isinstance(call, cst.Call) and isinstance(call.func, cst.Attribute):
        ref = _role_ref(st, call.func.value, report=False)
        if ref is not None:
            return ref, call.func.attr.value
    return None


def _small(st: _State, small: cst.BaseSmallStatement) -> list[Stmt]:
    pm = st.pm
    if isinstance(small, cst.Pass):
        return []
    if isinstance(small, cst.Return):
        if st.loop_depth:
            st.error(
                small,
                "`return` inside a loop is not supported in a choreography",
                "set a flag and leave the loop through its condition, then return after it",
            )
            return []
        returned = _expr(st, small.value) if small.value is not None else None
        return [Return(returned, pm.span(small))]
    target: str | None = None
    value: cst.BaseExpression | None = None
    if isinstance(small, cst.Assign):
        value = small.value
        if len(small.targets) == 1 and isinstance(small.targets[0].target, cst.Name):
            target = small.targets[0].target.value
    elif isinstance(small, cst.AnnAssign) and small.value is not None:
        value = small.value
        if isinstance(small.target, cst.Name):
            target = small.target.value
    elif isinstance(small, cst.Expr):
        value = small.value
    if value is not None:
        sent = _send_call(st, value)
        if sent is not None:
            if isinstance(small, cst.Assign | cst.AnnAssign) and target is None:
                st.error(
                    small,
                    "the result of a send must be bound to one plain name",
                    "write `x = sender.send(e, to=receiver)`",
                )
                return []
            return _send(st, small, value, sent, target)
        if (
            isinstance(value, cst.Call)
            and (target is not None or isinstance(small, cst.Expr))
            and _is_choreo_call(st, value)
        ):
            return _call(st, small, value, target)
    rejected = _REJECTED.get(type(small))
    if rejected is not None or not isinstance(
        small, cst.Assign | cst.AugAssign | cst.AnnAssign | cst.Expr
    ):
        message, hint = rejected or (
            f"`{type(small).__name__.lower()}` is not supported at choreography level",
            None,
        )
        st.error(small, message, hint)
        return []
    # A plain statement: replicated at every role that needs it (the checker
    # makes sure it only reads values every role knows).
    node = cst.SimpleStatementLine([small.with_changes(semicolon=cst.MaybeSentinel.DEFAULT)])
    span = pm.span(small)
    code = pm.code(small)
    try:
        names = stmts_names([(code, span.line, span.col)], pm.file)
    except SnippetError as exc:
        st.diags.append(Diagnostic(exc.span, exc.message))
        return []
    for use in names.reads:
        if st.is_party(use.name) and use.attr in ("send", "scatter"):
            st.diags.append(
                Diagnostic(
                    use.span,
                    f"`{use.name}.{use.attr}(...)` must be a whole statement",
                    f"write `x = {use.name}.{use.attr}(e, to=...)` on its own line, then use `x`",
                )
            )
            return []
    return [Replicated(node, code, tuple(names.reads), frozenset(names.binds), span)]


_IN_WITH = "put it inside a `with role:` block"
_LOOP_EXIT = "leave a `while` loop through its condition (decided at one role)"
_NO_GLOBALS = "pass the value in as an input, or return it"

#: small statements that are never allowed at choreography level: message, hint
_REJECTED: dict[type[cst.CSTNode], tuple[str, str | None]] = {
    cst.Global: ("`global` is not allowed in a choreography", _NO_GLOBALS),
    cst.Nonlocal: ("`nonlocal` is not allowed in a choreography", _NO_GLOBALS),
    cst.Break: ("`break` is not supported at choreography level", _LOOP_EXIT),
    cst.Continue: ("`continue` is not supported at choreography level", _LOOP_EXIT),
    cst.Import: ("imports are not allowed at choreography level", "import at module level"),
    cst.ImportFrom: ("imports are not allowed at choreography level", "import at module level"),
    cst.Raise: ("`raise` is not supported at choreography level", _IN_WITH),
    cst.Del: ("`del` is not supported at choreography level", _IN_WITH),
    cst.Assert: ("`assert` is not supported at choreography level", _IN_WITH),
}


def _is_choreo_call(st: _State, call: cst.Call) -> bool:
    """A sub-choreography call: the callee is a ``@choreography``, or a role is passed."""
    if any(_role_ref(st, a.value, report=False) is not None for a in call.args):
        return True
    if st.is_choreography is not None and m.matches(call.func, m.Name() | m.Attribute()):
        return st.is_choreography(st.pm.code(call.func))
    return False


def _send(
    st: _State,
    small: cst.BaseSmallStatement,
    call: cst.BaseExpression,
    sent: tuple[RoleRef, str],
    target: str | None,
) -> list[Stmt]:
    pm = st.pm
    assert isinstance(call, cst.Call)
    ref, method = sent
    sender = ref.code
    if method not in ("send", "scatter"):
        st.error(call.func, f"roles have no method `{method}`", "use `role.send(value, to=other)`")
        return []
    positional = [a for a in call.args if a.keyword is None]
    to_args = [a for a in call.args if a.keyword is not None and a.keyword.value == "to"]
    quorum_args = [a for a in call.args if a.keyword is not None and a.keyword.value == "quorum"]
    timeout_args = [a for a in call.args if a.keyword is not None and a.keyword.value == "timeout"]
    others = [
        a
        for a in call.args
        if a.keyword is not None and a.keyword.value not in ("to", "quorum", "timeout")
    ]
    ok = True
    if len(positional) != 1 or positional[0].star:
        st.error(
            call,
            "`send` takes exactly one value to send",
            f"write `{sender}.{method}(value, to=receiver)`",
        )
        ok = False
    if len(to_args) != 1:
        st.error(
            call,
            f"`{method}` needs its receiver as `to=`",
            f"write `{sender}.{method}(value, to=receiver)`",
        )
        ok = False
    for a in others:
        assert a.keyword is not None
        st.error(a, f"`{method}` has no parameter `{a.keyword.value}`")
        ok = False
    quorum: Expr | None = None
    if quorum_args:
        if ref.single:
            st.error(
                quorum_args[0],
                "`quorum=` only applies when a group sends (a gather)",
                f"`{sender}` is one role; remove `quorum=`",
            )
            ok = False
        else:
            quorum = _expr(st, quorum_args[0].value)
    timeout: Expr | None = None
    if timeout_args:
        if ref.single:
            st.error(
                timeout_args[0],
                "`timeout=` only applies when a group sends (a gather)",
                "deadlines of ordinary receives are set per run: `choreo.run(..., timeout=...)`",
            )
            ok = False
        else:
            timeout = _expr(st, timeout_args[0].value)
    if not ok:
        return []
    receivers = _role_list(st, to_args[0].value)
    if receivers is None:
        return []
    expr = _expr(st, positional[0].value)
    if method == "scatter":
        bad = [r for r in receivers if r.single]
        if bad or len(receivers) != 1:
            st.error(
                to_args[0].value,
                "`scatter` gives each member of a group its own part: `to=` must be one group",
                f"write `{sender}.scatter({{member: part, ...}}, to=group)`, or use `send`",
            )
            return []
    if ref.kind == "role" and method == "send" and all(r.kind == "role" for r in receivers):
        return [Send(target, sender, expr, tuple(r.code for r in receivers), pm.span(small))]
    return [
        GSend(target, ref, expr, receivers, method == "scatter", quorum, pm.span(small), timeout)
    ]


def _role_list(st: _State, node: cst.BaseExpression) -> tuple[RoleRef, ...] | None:
    items: list[cst.BaseExpression]
    if isinstance(node, cst.List | cst.Tuple):
        items = [e.value for e in node.elements]
    else:
        items = [node]
    out: list[RoleRef] = []
    for item in items:
        if not isinstance(item, cst.Name | cst.Subscript):
            st.error(
                item,
                "`to=` must name a role or a list of roles",
                "write `to=bob` or `to=[bob, carol]` (" + _ROLE_EXPR_HINT + ")",
            )
            return None
        ref = _role_ref(st, item)
        if ref is None:
            return None
        if any(r.code == ref.code for r in out):
            st.error(item, f"`{ref.code}` is listed twice in `to=`")
            return None
        if ref.kind != "role" and any(r.base == ref.base for r in out):
            st.error(
                item,
                f"`to=` names members of group `{ref.base}` twice",
                "name the group (or one slice of it) once",
            )
            return None
        out.append(ref)
    if not out:
        st.error(node, "`to=` names no role")
        return None
    return tuple(out)


def _call(
    st: _State, small: cst.BaseSmallStatement, call: cst.Call, target: str | None
) -> list[Stmt]:
    pm = st.pm
    if not m.matches(call.func, m.Name() | m.Attribute()):
        st.error(call.func, "roles can only be passed to a `@choreography` function called by name")
        return []
    args: list[tuple[str, Expr]] = []
    refs: list[RoleRef | None] = []
    for a in call.args:
        if a.star:
            st.error(a, "`*`/`**` arguments are not supported in a sub-choreography call")
            return []
        key = a.keyword.value if a.keyword is not None else ""
        ref = _role_ref(st, a.value, report=False)
        refs.append(ref)
        if ref is not None:  # a role expression: not a value read
            args.append((key, Expr(ref.code, a.value, (), ref.span)))
        else:
            args.append((key, _expr(st, a.value)))
    callee = _expr(st, call.func)
    return [
        Call(target, callee, callee.code, (), tuple(args), pm.span(small), arg_refs=tuple(refs))
    ]


def _expr(st: _State, node: cst.BaseExpression) -> Expr:
    pm = st.pm
    span = pm.span(node)
    code = pm.code(node)
    walrus: list[Span] = []
    try:
        reads, walrus = expr_reads(code, pm.file, span.line, span.col)
    except SnippetError as exc:
        st.diags.append(Diagnostic(exc.span, exc.message))
        reads = []
    except SyntaxError:  # pragma: no cover - libcst already parsed it
        reads = []
    for where in walrus:
        st.diags.append(
            Diagnostic(
                where,
                "an assignment expression (`:=`) is not supported at choreography level",
                "bind the value inside a `with role:` block first",
            )
        )
    flagged = False
    for use in reads:
        if st.is_party(use.name) and use.attr in ("send", "scatter"):
            flagged = True
            st.diags.append(
                Diagnostic(
                    use.span,
                    f"`{use.name}.{use.attr}(...)` must be a whole statement",
                    f"write `x = {use.name}.{use.attr}(e, to=...)` on its own line, then use `x`",
                )
            )
    if flagged:  # the roles in that misplaced send are not "roles used as values" too
        reads = [u for u in reads if not st.is_party(u.name)]
    return Expr(code, node, tuple(reads), span)


# -- return normalisation -----------------------------------------------------


def _terminates(block: tuple[Stmt, ...] | list[Stmt]) -> bool:
    if not block:
        return False
    last = block[-1]
    if isinstance(last, Return):
        return True
    if isinstance(last, If):
        return _terminates(last.then) and _terminates(last.orelse)
    return False


def _normalise_returns(block: list[Stmt] | tuple[Stmt, ...]) -> list[Stmt]:
    """Move what follows an `if` into its non-returning branches, when some branch returns."""
    out: list[Stmt] = []
    items = list(block)
    for i, s in enumerate(items):
        if isinstance(s, If):
            rest = items[i + 1 :]
            then = _normalise_returns(s.then)
            orelse = _normalise_returns(s.orelse)
            if rest and (_terminates(then) or _terminates(orelse)):
                if not _terminates(then):
                    then = _normalise_returns([*then, *rest])
                if not _terminates(orelse):
                    orelse = _normalise_returns([*orelse, *rest])
                out.append(_replace_if(s, then, orelse))
                return out
            out.append(_replace_if(s, then, orelse))
        elif isinstance(s, While | For):
            out.append(_replace_body(s, _normalise_returns(s.body)))
        else:
            out.append(s)
            if isinstance(s, Return):
                return out  # anything after a return is unreachable (reported by the checker)
    return out


def _replace_if(s: If, then: list[Stmt], orelse: list[Stmt]) -> If:
    from dataclasses import replace

    return replace(s, then=tuple(then), orelse=tuple(orelse))


def _replace_body(s: While | For, body: list[Stmt]) -> While | For:
    from dataclasses import replace

    return replace(s, body=tuple(body))


def name_uses(uses: tuple[NameUse, ...]) -> frozenset[str]:
    """The set of names in ``uses``."""
    return frozenset(u.name for u in uses)
