"""Endpoint projection: a checked ``ChoreographyIR`` -> one ``EndpointIR`` per role.

Each construct is one case asking "am I the sender, a receiver, the owner,
a decider, or none of these?":

* ``with r:``           -> the block, at ``r`` only.
* ``x = s.send(e, to=R)`` -> at ``s``: send ``e`` to ``R`` minus ``s`` (if ``s`` is
  in ``R`` it keeps ``x = e`` and sends ``x``: a send to oneself moves nothing);
  at each receiver: ``x = recv(s)``; elsewhere nothing.
* a plain statement     -> at every role, then removed where nothing reads what it binds.
* ``f(roles..., args...)`` -> at each role passed: a call of ``f``'s projection at the
  callee role it was passed as (left out where that projection does nothing and
  the result is not kept); elsewhere nothing.
* ``return v``          -> ``return v`` where ``v`` is located, ``return None`` elsewhere.

Knowledge of choice (``if``/``while`` on a condition held by the *deciders* D):

1. Every role projects both branches (for ``while``: the body).
2. A decider evaluates the condition itself.
3. A role outside D whose two branch projections are identical needs no
   message: its projection is that common code (this covers every role that
   takes part in neither branch). For ``while``, a role outside D whose body
   projection is empty skips the loop entirely.
4. Every other role outside D must be told: the *selector* (the first role of
   D in parameter order) sends it a selection at the start of the branch
   (``ep.select``), and it waits for one (``ep.offer``). No other role gets a
   selection message, so the count is exact: one per role whose behaviour
   differs between the branches, per execution of the ``if`` (per iteration of
   the ``while``).
5. Merging: when the two branch projections of a told role start with the same
   silent steps (local code and assignments, no communication), those steps are
   hoisted before the ``offer``; the role waits for the selection only where its
   behaviour diverges. Steps that communicate are never hoisted, because the
   selection travels on the same FIFO channel as the selector's data messages
   and must be read before them.

Groups (``g: Roles``) are projected once, onto an endpoint parameterised by
the running member's identity (``ep.me``). A statement that names one member
or a slice (``with g[0]:``, ``m.send(...)``, ``to=g[1:]``) is guarded at run
time (``if ep.me == m:`` / ``if ep.me in g[1:]:``); a whole-group statement
runs at every member unguarded. A gather (a group sends) receives one value
per member (``ep.gather``, with its quorum); a scatter sends each member its
own part. A condition decided by a group (every member holds the same value)
is evaluated by every member; roles outside the group that need to know are
told by its first member. Sub-choreography calls that take groups run at the
members passed in only.

Identical means equal endpoint IR: same code text, same peers and labels (a
label is the ``file:line`` of the global statement), compared structurally.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TypeAlias

import libcst as cst

from choreo._ir import (
    Call,
    ChoreographyIR,
    Expr,
    For,
    GLocal,
    GSend,
    If,
    Local,
    Replicated,
    Return,
    RoleRef,
    Send,
    Stmt,
    While,
    facet,
)
from choreo._source import Span

__all__ = [
    "EAssign",
    "ECall",
    "EFor",
    "EGRecv",
    "EGSend",
    "EGuard",
    "EIf",
    "ELocal",
    "EMe",
    "EOffer",
    "EOfferWhile",
    "ERecv",
    "EReplicated",
    "EReturn",
    "ESend",
    "EStmt",
    "EWhile",
    "EndpointIR",
    "project",
]


@dataclass(frozen=True, slots=True)
class ELocal:
    """Local code copied verbatim."""

    code: str
    body: tuple[cst.BaseStatement, ...] = field(compare=False, repr=False)
    reads: frozenset[str] = field(compare=False)
    span: Span = field(compare=False)


@dataclass(frozen=True, slots=True)
class EReplicated:
    """A plain statement every role runs (kept only where its result is read)."""

    code: str
    stmt: cst.BaseStatement = field(compare=False, repr=False)
    reads: frozenset[str] = field(compare=False)
    binds: frozenset[str] = field(compare=False)


@dataclass(frozen=True, slots=True)
class EAssign:
    """``target = expr`` (a send to oneself), or ``expr`` alone when target is None."""

    target: str | None
    expr: Expr
    label: str


@dataclass(frozen=True, slots=True)
class ESend:
    """Send ``expr`` to every role of ``to``."""

    to: tuple[str, ...]
    expr: Expr
    label: str


@dataclass(frozen=True, slots=True)
class ERecv:
    """``target = recv(frm)``."""

    target: str | None
    frm: str
    label: str


@dataclass(frozen=True, slots=True)
class EGSend:
    """Send (or scatter) ``expr`` to role expressions (roles, groups, members)."""

    to: tuple[RoleRef, ...]
    expr: Expr
    label: str
    scatter: bool


@dataclass(frozen=True, slots=True)
class EGRecv:
    """``target = recv(frm)`` from one role or member, or a gather from a group."""

    target: str | None
    frm: RoleRef
    label: str
    quorum: Expr | None
    timeout: Expr | None = None


@dataclass(frozen=True, slots=True)
class EGuard:
    """Run ``body`` only at the member(s) ``where`` names."""

    where: RoleRef
    body: tuple[EStmt, ...]


@dataclass(frozen=True, slots=True)
class EMe:
    """``name = <this member's name>`` (``with g as name:``)."""

    name: str


@dataclass(frozen=True, slots=True)
class EIf:
    """A decider's ``if``; when ``select_to`` is non-empty it also tells those roles.

    ``by``: the group whose first member sends the selections (None: this role).
    """

    cond: Expr
    then: tuple[EStmt, ...]
    orelse: tuple[EStmt, ...]
    select_to: tuple[str | RoleRef, ...]  # roles, groups, or one member of a group
    label: str
    by: str | None = None


@dataclass(frozen=True, slots=True)
class EOffer:
    """Wait for ``frm``'s selection (the first member of group ``frm`` if ``frm_group``)."""

    frm: str
    label: str
    then: tuple[EStmt, ...]
    orelse: tuple[EStmt, ...]
    frm_group: bool = False


@dataclass(frozen=True, slots=True)
class EWhile:
    """A decider's ``while``; tells ``select_to`` before every iteration and at the end."""

    cond: Expr
    body: tuple[EStmt, ...]
    select_to: tuple[str, ...]
    label: str
    by: str | None = None


@dataclass(frozen=True, slots=True)
class EOfferWhile:
    """Iterate while ``frm`` selects "continue"."""

    frm: str
    label: str
    body: tuple[EStmt, ...]
    frm_group: bool = False


@dataclass(frozen=True, slots=True)
class EFor:
    """``for target in iter`` over a replicated value."""

    target: Expr
    iter: Expr
    body: tuple[EStmt, ...]


@dataclass(frozen=True, slots=True)
class ECall:
    """Run ``callee``'s projection at ``role``, mapping its roles onto ours."""

    target: str | None
    callee: Expr
    role: str
    mapping: tuple[tuple[str, str], ...]
    args: tuple[Expr, ...]
    label: str
    #: calls that take groups or members: callee role/group -> our role expression
    refs: tuple[tuple[str, RoleRef], ...] = ()


@dataclass(frozen=True, slots=True)
class EReturn:
    """``return value`` (``None`` when the value is located elsewhere)."""

    value: Expr | None


EStmt: TypeAlias = (
    ELocal
    | EReplicated
    | EAssign
    | ESend
    | ERecv
    | EIf
    | EOffer
    | EWhile
    | EOfferWhile
    | EFor
    | ECall
    | EReturn
    | EGSend
    | EGRecv
    | EGuard
    | EMe
)

_SILENT = (ELocal, EReplicated, EAssign, EMe)


@dataclass(frozen=True, slots=True)
class EndpointIR:
    """One role's program: its inputs (parameter names, in order) and its body."""

    choreography: str
    role: str
    file: str
    params: tuple[str, ...]
    body: tuple[EStmt, ...]
    active: bool  # whether the role communicates or runs local code at all
    groups: tuple[str, ...] = ()  # the choreography's group parameters
    is_group: bool = False  # whether ``role`` is a group (the endpoint runs at each member)


CalleeActive = Callable[[str, str], bool]


class _Projector:
    def __init__(self, ir: ChoreographyIR, callee_active: CalleeActive | None = None) -> None:
        self.ir = ir
        self.callee_active = callee_active
        self.roles = ir.parties
        self.groups = frozenset(ir.groups)
        self.rank = {r: i for i, r in enumerate(ir.parties)}
        self.memo: dict[tuple[int, str], tuple[EStmt, ...]] = {}

    def selector(self, deciders: frozenset[str]) -> str:
        return min(deciders, key=self.rank.__getitem__)

    def by(self, deciders: frozenset[str], r: str) -> str | None:
        """The group whose first member selects, when ``r`` is that group."""
        return r if r in self.groups and r == self.selector(deciders) else None

    @staticmethod
    def guard(ref: RoleRef, items: list[EStmt]) -> list[EStmt]:
        if ref.kind in ("role", "group") or not items:
            return items
        return [EGuard(ref, tuple(items))]

    def block(self, stmts: tuple[Stmt, ...], r: str) -> tuple[EStmt, ...]:
        key = (id(stmts), r)
        got = self.memo.get(key)
        if got is None:
            out: list[EStmt] = []
            for s in stmts:
                out.extend(self.stmt(s, r))
            got = self.memo[key] = tuple(out)
        return got

    def stmt(self, s: Stmt, r: str) -> list[EStmt]:
        match s:
            case Local():
                if s.role != r:
                    return []
                # one item per statement, so that branches can be merged statement by statement
                reads = frozenset(u.name for u in s.reads)
                return [
                    ELocal(code, (node,), reads, s.span)
                    for code, node in zip(s.codes, s.body, strict=True)
                ]
            case GLocal(where=ref):
                if ref.base != r:
                    return []
                reads = frozenset(u.name for u in s.reads)
                items: list[EStmt] = [EMe(s.member)] if s.member else []
                items += [
                    ELocal(code, (node,), reads, s.span)
                    for code, node in zip(s.codes, s.body, strict=True)
                ]
                return self.guard(ref, items)
            case GSend():
                return self.gsend(s, r)
            case Replicated():
                return [EReplicated(s.code, s.stmt, frozenset(u.name for u in s.reads), s.binds)]
            case Send():
                return self.send(s, r)
            case If():
                return self.if_(s, r)
            case While():
                return self.while_(s, r)
            case For():
                body = self.block(s.body, r)
                return [EFor(s.target, s.iter, body)] if body else []
            case Call() if any(ref.kind != "role" for _, ref in s.refs):
                out: list[EStmt] = []
                for callee_role, ref in s.refs:
                    if ref.base != r:
                        continue
                    holds = s.callee_result is None or callee_role in s.callee_result
                    target = s.target if holds else None
                    if (
                        target is None
                        and self.callee_active is not None
                        and not self.callee_active(s.callee_name, callee_role)
                    ):
                        continue
                    args = tuple(e for at, e in s.inputs if at == callee_role)
                    call = ECall(target, s.callee, callee_role, (), args, s.span.ref(), refs=s.refs)
                    out += self.guard(ref, [call])
                return out
            case Call():
                ours = dict((caller, callee) for callee, caller in s.roles)
                if r not in ours:
                    return []
                role = ours[r]
                target = s.target if (s.result is None or r in s.result) else None
                if (
                    target is None
                    and self.callee_active is not None
                    and not self.callee_active(s.callee_name, role)
                ):
                    return []  # the callee does nothing at that role and we keep no result
                args = tuple(e for at, e in s.inputs if at == role)
                return [ECall(target, s.callee, role, s.roles, args, s.span.ref())]
            case Return():
                keep = s.value is not None and (
                    s.location is None or r in s.location or facet(r) in s.location
                )
                if keep and s.value is not None and s.value.code.strip() == "None":
                    keep = False  # `return None` and a result located elsewhere behave alike
                return [EReturn(s.value if keep else None)]
        raise AssertionError(f"unknown statement {s!r}")  # pragma: no cover

    def send(self, s: Send, r: str) -> list[EStmt]:
        label = s.span.ref()
        if r == s.sender:
            others = tuple(q for q in s.receivers if q != r)
            if r in s.receivers:
                out: list[EStmt] = [EAssign(s.target, s.expr, label)]
                if others:
                    value = s.expr
                    if s.target is not None:
                        value = Expr(s.target, cst.Name(s.target), (), s.expr.span)
                    out.append(ESend(others, value, label))
                return out
            return [ESend(others, s.expr, label)]
        if r in s.receivers:
            return [ERecv(s.target, s.sender, label)]
        return []

    def gsend(self, s: GSend, r: str) -> list[EStmt]:
        label = s.span.ref()
        out: list[EStmt] = []
        if s.sender.base == r:
            out += self.guard(s.sender, [EGSend(s.receivers, s.expr, label, s.scatter)])
        for rcv in s.receivers:
            if rcv.base == r:  # the front end allows one expression per role or group
                recv = EGRecv(s.target, s.sender, label, s.quorum, s.timeout)
                out += self.guard(rcv, [recv])
        return out

    def if_(self, s: If, r: str) -> list[EStmt]:
        then = self.block(s.then, r)
        orelse = self.block(s.orelse, r)
        label = s.span.ref()
        deciders = s.deciders
        if deciders is None or r in deciders:
            to: tuple[str | RoleRef, ...] = ()
            if deciders is not None and r == self.selector(deciders):
                told: list[str | RoleRef] = []
                for q in self.roles:
                    a, b = self.block(s.then, q), self.block(s.orelse, q)
                    if q in deciders or a == b:
                        continue
                    one = _one_member(a, b) if q in self.groups else None
                    told.append(one if one is not None else q)
                to = tuple(told)
            if not to and then == orelse:
                return list(then)
            by = self.by(deciders, r) if to and deciders is not None else None
            return [EIf(s.cond, then, orelse, to, label, by)]
        if then == orelse:
            return list(then)
        sel = self.selector(deciders)
        one = _one_member(then, orelse) if r in self.groups else None
        if one is not None:  # only that member behaves differently: only it is told
            offer = EOffer(sel, label, _unguarded(then), _unguarded(orelse), sel in self.groups)
            return [EGuard(one, (offer,))]
        k = 0
        while (
            k < min(len(then), len(orelse))
            and then[k] == orelse[k]
            and isinstance(then[k], _SILENT)
        ):
            k += 1
        return [*then[:k], EOffer(sel, label, then[k:], orelse[k:], sel in self.groups)]

    def while_(self, s: While, r: str) -> list[EStmt]:
        body = self.block(s.body, r)
        label = s.span.ref()
        deciders = s.deciders
        if deciders is None:
            return [EWhile(s.cond, body, (), label)] if body else []
        if r in deciders:
            to: tuple[str, ...] = ()
            if r == self.selector(deciders):
                to = tuple(q for q in self.roles if q not in deciders and self.block(s.body, q))
            if not body and not to:
                return []
            return [EWhile(s.cond, body, to, label, self.by(deciders, r) if to else None)]
        if not body:
            return []
        sel = self.selector(deciders)
        return [EOfferWhile(sel, label, body, sel in self.groups)]


def _one_member(a: tuple[EStmt, ...], b: tuple[EStmt, ...]) -> RoleRef | None:
    """The member, if a group's two branch projections only differ at one member.

    Each branch is then empty or one block guarded by the same member test
    (``if ep.me == m:``): only that member needs to be told the branch.
    """
    refs: set[RoleRef] = set()
    for items in (a, b):
        for s in items:
            if not isinstance(s, EGuard) or s.where.kind != "member":
                return None
            refs.add(s.where)
    return refs.pop() if len(refs) == 1 else None


def _unguarded(items: tuple[EStmt, ...]) -> tuple[EStmt, ...]:
    """The bodies of consecutive guarded blocks, in order (see ``_one_member``)."""
    out: list[EStmt] = []
    for s in items:
        assert isinstance(s, EGuard)
        out.extend(s.body)
    return tuple(out)


# -- pruning of replicated statements -----------------------------------------


def _reads(items: tuple[EStmt, ...], out: set[str]) -> None:
    for s in items:
        match s:
            case ELocal() | EReplicated():
                out |= s.reads
            case EAssign() | ESend():
                out.update(u.name for u in s.expr.reads)
            case EIf():
                out.update(u.name for u in s.cond.reads)
                _reads(s.then, out)
                _reads(s.orelse, out)
            case EOffer():
                _reads(s.then, out)
                _reads(s.orelse, out)
            case EWhile():
                out.update(u.name for u in s.cond.reads)
                _reads(s.body, out)
            case EOfferWhile():
                _reads(s.body, out)
            case EFor():
                out.update(u.name for u in s.iter.reads)
                _reads(s.body, out)
            case ECall():
                out.update(u.name for u in s.callee.reads)
                for a in s.args:
                    out.update(u.name for u in a.reads)
            case EReturn():
                if s.value is not None:
                    out.update(u.name for u in s.value.reads)
            case EGSend():
                out.update(u.name for u in s.expr.reads)
            case EGRecv():
                for e in (s.quorum, s.timeout):
                    if e is not None:
                        out.update(u.name for u in e.reads)
            case EGuard():
                _reads(s.body, out)
            case ERecv() | EMe():
                pass


def _prune(items: tuple[EStmt, ...], live: set[str]) -> tuple[EStmt, ...]:
    out: list[EStmt] = []
    for s in items:
        match s:
            case EReplicated():
                if s.binds & live:
                    out.append(s)
            case EIf():
                t, e = _prune(s.then, live), _prune(s.orelse, live)
                if t or e or s.select_to:
                    out.append(replace(s, then=t, orelse=e))
            case EOffer():
                out.append(replace(s, then=_prune(s.then, live), orelse=_prune(s.orelse, live)))
            case EWhile():
                b = _prune(s.body, live)
                if b or s.select_to:
                    out.append(replace(s, body=b))
            case EOfferWhile():
                out.append(replace(s, body=_prune(s.body, live)))
            case EFor():
                b = _prune(s.body, live)
                if b:
                    out.append(replace(s, body=b))
            case EGuard():
                b = _prune(s.body, live)
                if b:
                    out.append(replace(s, body=b))
            case _:
                out.append(s)
    return tuple(out)


def _merge_guards(items: tuple[EStmt, ...]) -> tuple[EStmt, ...]:
    """Adjacent statements guarded by the same member test become one guarded block."""
    out: list[EStmt] = []
    for s in items:
        match s:
            case EGuard():
                s = replace(s, body=_merge_guards(s.body))
                prev = out[-1] if out else None
                if isinstance(prev, EGuard) and prev.where == s.where:
                    out[-1] = replace(prev, body=prev.body + s.body)
                    continue
            case EIf() | EOffer():
                s = replace(s, then=_merge_guards(s.then), orelse=_merge_guards(s.orelse))
            case EWhile() | EOfferWhile() | EFor():
                s = replace(s, body=_merge_guards(s.body))
        out.append(s)
    return tuple(out)


def _active(items: tuple[EStmt, ...]) -> bool:
    for s in items:
        match s:
            case EReplicated() | EReturn() | EAssign():
                continue
            case EFor() | EGuard():
                if _active(s.body):
                    return True
            case EMe():
                continue
            case EIf() if not s.select_to:
                if _active(s.then) or _active(s.orelse):
                    return True
            case EWhile() if not s.select_to:
                if _active(s.body):
                    return True
            case _:
                return True
    return False


def project(ir: ChoreographyIR, callee_active: CalleeActive | None = None) -> dict[str, EndpointIR]:
    """Project a *checked* choreography onto every one of its roles.

    Args:
        ir: the checker's output.
        callee_active: whether a callee (by the name used in the call) does
            anything at one of its roles; a call that does nothing and returns
            nothing the caller keeps is left out of that role's projection.
            ``None``: keep every call.
    """
    p = _Projector(ir, callee_active)
    out: dict[str, EndpointIR] = {}
    groups = ir.groups
    for r in ir.parties:
        body = p.block(ir.body, r)
        while True:
            live: set[str] = set()
            _reads(body, live)
            pruned = _prune(body, live)
            if pruned == body:
                break
            body = pruned
        if r in groups:
            body = _merge_guards(body)
        out[r] = EndpointIR(
            ir.name, r, ir.file, ir.inputs_at(r), body, _active(body), groups, r in groups
        )
    return out
