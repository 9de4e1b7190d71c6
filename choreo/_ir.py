"""The choreography IR: what the front end produces and the checker annotates.

Nodes are frozen, slotted dataclasses carrying a ``Span``; later stages change
them with ``dataclasses.replace``. Code that is copied verbatim into endpoints
(local blocks, expressions) is kept as libcst nodes together with its source
text (``code``), which is what equality compares: two statements with the same
text behave the same wherever they stand in the file.

A location (``Loc``) is ``None`` for a value every role knows (replicated:
literals, module globals, loop indices, plain statements on such values) or
the frozenset of roles that hold the value (several after a multicast; empty
when no single role holds it any more).

Groups of roles (``g: Roles``) add two kinds of element to a location: ``"g"``
(every member of ``g`` holds the *same* value, e.g. after a multicast to the
group) and ``"g*"`` (each member holds its own value, a *facet*: bound inside
``with g as m:``, received by a scatter, or held by some members only). The
faceted element is the weaker: the meet of ``"g"`` and ``"g*"`` is ``"g*"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeAlias

import libcst as cst

from choreo._source import Span

__all__ = [
    "Call",
    "ChoreographyIR",
    "Expr",
    "For",
    "GLocal",
    "GSend",
    "If",
    "Loc",
    "Local",
    "NameUse",
    "Param",
    "Poison",
    "Replicated",
    "Return",
    "RoleRef",
    "Send",
    "Signature",
    "Stmt",
    "While",
    "facet",
    "meet",
]

Loc: TypeAlias = frozenset[str] | None


def facet(group: str) -> str:
    """The location element "each member of ``group`` holds its own value"."""
    return group + "*"


def meet(a: Loc, b: Loc) -> Loc:
    """Where a value is known after two paths: everywhere meets anything.

    A group held uniformly on one path and faceted (or uniformly) on the
    other is faceted after both.
    """
    if a is None:
        return b
    if b is None:
        return a
    out = set(a & b)
    for t in a | b:
        if t.endswith("*"):
            base = t[:-1]
            if (base in a or t in a) and (base in b or t in b):
                out.add(t)
                out.discard(base)
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class NameUse:
    """A name read at a position (for diagnostics)."""

    name: str
    span: Span = field(compare=False)
    attr: str | None = field(default=None, compare=False)  # `name.attr` (e.g. a role's `.send`)


@dataclass(frozen=True, slots=True)
class Expr:
    """An expression copied verbatim: its libcst node, its text, the names it reads."""

    code: str
    node: cst.BaseExpression = field(compare=False, repr=False)
    reads: tuple[NameUse, ...] = field(compare=False)
    span: Span = field(compare=False)


@dataclass(frozen=True, slots=True)
class RoleRef:
    """A role expression: where a statement runs or whom a message is for.

    The subset of Python the checker decides (``kind``): a role parameter
    (``alice``), a group parameter (``g``), a slice of a group with literal
    bounds (``g[1:]``, ``g[:-1]``), one member by literal index (``g[0]``,
    ``g[-1]``), or a ``for`` variable ranging over a group (``for m in g:``,
    ``for a, b in zip(g, g[1:]):``). ``base`` is the role or group parameter.
    """

    code: str
    node: cst.BaseExpression = field(compare=False, repr=False)
    base: str
    kind: str  # "role" | "group" | "slice" | "member"
    span: Span = field(compare=False)

    @property
    def single(self) -> bool:
        """Whether it names exactly one role (a role parameter or one member)."""
        return self.kind in ("role", "member")


@dataclass(frozen=True, slots=True)
class Param:
    """A parameter: a role, a group (``kind='group'``) or an input located at ``location``."""

    name: str
    kind: str  # "role" | "group" | "input"
    location: str | None
    span: Span = field(compare=False)


@dataclass(frozen=True, slots=True)
class Local:
    """``with role:`` block: statements run at ``role`` only."""

    role: str
    body: tuple[cst.BaseStatement, ...] = field(compare=False, repr=False)
    code: str
    codes: tuple[str, ...]  # the text of each statement of ``body``
    reads: tuple[NameUse, ...] = field(compare=False)
    binds: frozenset[str]
    span: Span = field(compare=False)
    #: where each bound name is bound, and names changed in place (``x.append``, ``x[k] = v``)
    bind_uses: tuple[NameUse, ...] = field(default=(), compare=False)
    mutates: tuple[NameUse, ...] = field(default=(), compare=False)


@dataclass(frozen=True, slots=True)
class Send:
    """``target = sender.send(expr, to=receivers)``."""

    target: str | None
    sender: str
    expr: Expr
    receivers: tuple[str, ...]
    span: Span = field(compare=False)


@dataclass(frozen=True, slots=True)
class GLocal:
    """``with g as m:`` (every member of a group or slice) or ``with g[0]:``/``with m:``.

    Names bound are faceted: each member that runs the block has its own.
    """

    where: RoleRef
    member: str | None  # the name bound to the running member's identity (``as m``)
    body: tuple[cst.BaseStatement, ...] = field(compare=False, repr=False)
    code: str
    codes: tuple[str, ...]
    reads: tuple[NameUse, ...] = field(compare=False)
    binds: frozenset[str]
    span: Span = field(compare=False)
    bind_uses: tuple[NameUse, ...] = field(default=(), compare=False)


@dataclass(frozen=True, slots=True)
class GSend:
    """A communication involving a group: multicast, gather, scatter, shuffle.

    ``target = sender.send(expr, to=receivers, quorum=q)`` or ``.scatter(...)``.
    A group sender gathers: each receiver gets ``{member: value}``.
    ``quorum`` is None (everyone), or an expression (``majority``, an int);
    ``timeout``: seconds after which a gather returns what has arrived (at
    least the quorum), instead of waiting for every member.
    """

    target: str | None
    sender: RoleRef
    expr: Expr
    receivers: tuple[RoleRef, ...]
    scatter: bool
    quorum: Expr | None
    span: Span = field(compare=False)
    timeout: Expr | None = None


@dataclass(frozen=True, slots=True)
class Replicated:
    """A plain statement on values every role knows; every role that needs it runs it."""

    stmt: cst.BaseStatement = field(compare=False, repr=False)
    code: str
    reads: tuple[NameUse, ...] = field(compare=False)
    binds: frozenset[str]
    span: Span = field(compare=False)


@dataclass(frozen=True, slots=True)
class If:
    """``if cond: then else: orelse``; the checker fills ``deciders``."""

    cond: Expr
    then: tuple[Stmt, ...]
    orelse: tuple[Stmt, ...]
    span: Span = field(compare=False)
    deciders: Loc = None


@dataclass(frozen=True, slots=True)
class While:
    """``while cond: body``; the checker fills ``deciders``."""

    cond: Expr
    body: tuple[Stmt, ...]
    span: Span = field(compare=False)
    deciders: Loc = None


@dataclass(frozen=True, slots=True)
class For:
    """``for target in iter: body`` over a value every role knows."""

    target: Expr
    targets: frozenset[str]
    iter: Expr
    body: tuple[Stmt, ...]
    span: Span = field(compare=False)


@dataclass(frozen=True, slots=True)
class Call:
    """``target = callee(role..., value...)``: a sub-choreography call.

    ``roles`` maps each callee role parameter to the caller's role;
    ``args`` are the arguments as written (keyword or ``""``, expression);
    the checker fills ``inputs`` with one ``(callee role, expression)`` per
    callee input parameter, in the callee's parameter order, and ``result``,
    where the callee's result is located, in the caller's roles.
    """

    target: str | None
    callee: Expr
    callee_name: str
    roles: tuple[tuple[str, str], ...]
    args: tuple[tuple[str, Expr], ...]
    span: Span = field(compare=False)
    inputs: tuple[tuple[str, Expr], ...] = ()
    result: Loc = frozenset()
    #: the role expression of each argument written as one (aligned with ``args``)
    arg_refs: tuple[RoleRef | None, ...] = ()
    #: filled by the checker: callee role or group parameter -> the caller's role expression
    refs: tuple[tuple[str, RoleRef], ...] = ()
    #: filled by the checker: the callee's parameters that hold its result (None: every one)
    callee_result: frozenset[str] | None = frozenset()


@dataclass(frozen=True, slots=True)
class Return:
    """``return value``; the checker fills ``location``."""

    value: Expr | None
    span: Span = field(compare=False)
    location: Loc = None


@dataclass(frozen=True, slots=True)
class Poison:
    """Names bound by a statement that was rejected: later uses are not reported again."""

    names: frozenset[str]
    span: Span = field(compare=False)


Stmt: TypeAlias = (
    Local | GLocal | Send | GSend | Replicated | If | While | For | Call | Return | Poison
)


@dataclass(frozen=True, slots=True)
class ChoreographyIR:
    """One ``@choreography`` function.

    ``result`` is the location of the returned value (filled by the checker, or
    from the ``-> At[T, "role"]`` annotation).
    """

    name: str
    file: str
    params: tuple[Param, ...]
    body: tuple[Stmt, ...]
    span: Span = field(compare=False)
    returns: str | None = None  # role named by the return annotation, if any
    result: Loc = None
    declared: bool = False  # whether the result location is annotated (`-> At[...]`/`-> None`)

    @property
    def roles(self) -> tuple[str, ...]:
        """Role parameter names, in order."""
        return tuple(p.name for p in self.params if p.kind == "role")

    @property
    def groups(self) -> tuple[str, ...]:
        """Group parameter names, in order."""
        return tuple(p.name for p in self.params if p.kind == "group")

    @property
    def parties(self) -> tuple[str, ...]:
        """Roles then groups: every endpoint the choreography is projected onto."""
        return self.roles + self.groups

    def inputs_at(self, role: str) -> tuple[str, ...]:
        """Input parameter names located at ``role``, in order."""
        return tuple(p.name for p in self.params if p.kind == "input" and p.location == role)


@dataclass(frozen=True, slots=True)
class Signature:
    """What a caller needs to know of a choreography: its parameters and result location."""

    name: str
    params: tuple[Param, ...]
    result: Loc
