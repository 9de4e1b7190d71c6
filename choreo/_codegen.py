"""Code generation: ``EndpointIR`` -> a readable Python module, through libcst.

Every role becomes one ``async def <choreography>_<role>(ep, <inputs>)``.
Local code is copied verbatim (comments included); every communication is a
call on ``ep`` (an ``Endpoint``) and carries a ``# file:line`` breadcrumb to
the global statement it comes from. Free names resolve in the module that
defines the choreography: the decorator binds the function to that module's
globals, and ``choreo project`` writes a module meant to be loaded the same
way (``choreo.load_endpoint``).
"""

from __future__ import annotations

import json

import libcst as cst

from choreo._epp import (
    EAssign,
    ECall,
    EFor,
    EGRecv,
    EGSend,
    EGuard,
    EIf,
    ELocal,
    EMe,
    EndpointIR,
    EOffer,
    EOfferWhile,
    ERecv,
    EReplicated,
    EReturn,
    ESend,
    EStmt,
    EWhile,
)
from choreo._ir import RoleRef

__all__ = ["function_name", "generate"]


def function_name(choreography: str, role: str) -> str:
    """The name of a role's endpoint function."""
    return f"{choreography}_{role}"


def _str(value: str) -> cst.SimpleString:
    return cst.SimpleString(json.dumps(value))


def _roles(names: tuple[str, ...]) -> cst.BaseExpression:
    if len(names) == 1:
        return _str(names[0])
    return cst.Tuple([cst.Element(_str(n)) for n in names])


def _crumb(label: str) -> cst.TrailingWhitespace:
    return cst.TrailingWhitespace(
        whitespace=cst.SimpleWhitespace("  "), comment=cst.Comment(f"# {label}")
    )


def _await_call(ep: str, method: str, *args: cst.BaseExpression) -> cst.Await:
    """``await ep.method(args...)``, built directly (templates cost a parse each)."""
    return cst.Await(
        cst.Call(
            func=cst.Attribute(value=cst.Name(ep), attr=cst.Name(method)),
            args=[cst.Arg(a) for a in args],
        )
    )


def _kwarg(name: str, value: cst.BaseExpression) -> cst.Arg:
    """``name=value`` (PEP 8 spacing)."""
    eq = cst.AssignEqual(
        whitespace_before=cst.SimpleWhitespace(""), whitespace_after=cst.SimpleWhitespace("")
    )
    return cst.Arg(value, keyword=cst.Name(name), equal=eq)


def _line(small: cst.BaseSmallStatement, crumb: str | None) -> cst.SimpleStatementLine:
    if crumb is None:
        return cst.SimpleStatementLine([small])
    return cst.SimpleStatementLine([small], trailing_whitespace=_crumb(crumb))


def _assign(
    target: str | None, value: cst.BaseExpression, crumb: str | None
) -> cst.SimpleStatementLine:
    if target is None:
        return _line(cst.Expr(value), crumb)
    return _line(cst.Assign([cst.AssignTarget(cst.Name(target))], value), crumb)


def _ref(ref: RoleRef) -> cst.BaseExpression:
    """A role expression in endpoint code: a role's name, or the group expression itself."""
    return _str(ref.code) if ref.kind == "role" else ref.node


def _refs(refs: tuple[RoleRef, ...]) -> cst.BaseExpression:
    if len(refs) == 1:
        return _ref(refs[0])
    return cst.Tuple([cst.Element(_ref(r)) for r in refs])


class _Gen:
    def __init__(self, ep: str, groups: tuple[str, ...] = ()) -> None:
        self.ep = ep
        self.groups = frozenset(groups)

    def _party(self, name: str) -> cst.BaseExpression:
        """A role's name (a string), or a group (the variable holding its members)."""
        return cst.Name(name) if name in self.groups else _str(name)

    def _me(self) -> cst.Attribute:
        return cst.Attribute(value=cst.Name(self.ep), attr=cst.Name("me"))

    def _from(self, frm: str, group: bool) -> cst.BaseExpression:
        if not group:
            return _str(frm)
        return cst.Subscript(
            value=cst.Name(frm), slice=[cst.SubscriptElement(cst.Index(cst.Integer("0")))]
        )

    def block(self, items: tuple[EStmt, ...]) -> cst.IndentedBlock:
        body: list[cst.BaseStatement] = []
        for s in items:
            body.extend(self.stmt(s))
        if not body:
            body = [cst.SimpleStatementLine([cst.Pass()])]
        return cst.IndentedBlock(body=body)

    def _if(
        self,
        test: cst.BaseExpression,
        then: tuple[EStmt, ...],
        orelse: tuple[EStmt, ...],
        crumb: str | None,
    ) -> cst.If:
        body = self.block(then)
        if crumb is not None:
            body = body.with_changes(header=_crumb(crumb))
        other = cst.Else(body=self.block(orelse)) if orelse else None
        return cst.If(test=test, body=body, orelse=other)

    def _while(
        self, test: cst.BaseExpression, body: tuple[EStmt, ...], crumb: str | None
    ) -> cst.While:
        block = self.block(body)
        if crumb is not None:
            block = block.with_changes(header=_crumb(crumb))
        return cst.While(test=test, body=block)

    def _select(
        self, cond: cst.BaseExpression, to: tuple[str | RoleRef, ...], label: str, by: str | None
    ) -> cst.Await:
        roles = cst.Tuple(
            [cst.Element(n.node if isinstance(n, RoleRef) else self._party(n)) for n in to]
        )
        call = _await_call(self.ep, "select", cond, roles, _str(label))
        if by is not None:
            inner = call.expression
            assert isinstance(inner, cst.Call)
            by_arg = _kwarg("by", cst.Name(by))
            call = call.with_changes(expression=inner.with_changes(args=[*inner.args, by_arg]))
        return call

    def stmt(self, s: EStmt) -> list[cst.BaseStatement]:
        ep = self.ep
        match s:
            case ELocal():
                return list(s.body)
            case EReplicated():
                return [s.stmt]
            case EAssign():
                return [_assign(s.target, s.expr.node, s.label)]
            case ESend():
                call = _await_call(ep, "send", _roles(s.to), s.expr.node, _str(s.label))
                return [_line(cst.Expr(call), s.label)]
            case ERecv():
                call = _await_call(ep, "recv", _str(s.frm), _str(s.label))
                return [_assign(s.target, call, s.label)]
            case EIf(select_to=()):
                return [self._if(s.cond.node, s.then, s.orelse, None)]
            case EIf():
                test = self._select(s.cond.node, s.select_to, s.label, s.by)
                return [self._if(test, s.then, s.orelse, s.label)]
            case EOffer():
                frm = self._from(s.frm, s.frm_group)
                test = _await_call(ep, "offer", frm, _str(s.label))
                return [self._if(test, s.then, s.orelse, s.label)]
            case EWhile(select_to=()):
                return [self._while(s.cond.node, s.body, None)]
            case EWhile():
                test = self._select(s.cond.node, s.select_to, s.label, s.by)
                return [self._while(test, s.body, s.label)]
            case EOfferWhile():
                frm = self._from(s.frm, s.frm_group)
                test = _await_call(ep, "offer", frm, _str(s.label))
                return [self._while(test, s.body, s.label)]
            case EGSend():
                method = "scatter" if s.scatter else "send_to"
                call = _await_call(ep, method, _refs(s.to), s.expr.node, _str(s.label))
                return [_line(cst.Expr(call), s.label)]
            case EGRecv():
                if s.frm.single:
                    call = _await_call(ep, "recv_from", _ref(s.frm), _str(s.label))
                else:
                    call = _await_call(ep, "gather", _ref(s.frm), _str(s.label))
                    extra = [
                        _kwarg(k, e.node)
                        for k, e in (("quorum", s.quorum), ("timeout", s.timeout))
                        if e is not None
                    ]
                    if extra:
                        inner = call.expression
                        assert isinstance(inner, cst.Call)
                        call = call.with_changes(
                            expression=inner.with_changes(args=[*inner.args, *extra])
                        )
                return [_assign(s.target, call, s.label)]
            case EGuard():
                where = s.where
                op: cst.BaseCompOp = cst.Equal() if where.single else cst.In()
                member = cst.Comparison(self._me(), [cst.ComparisonTarget(op, where.node)])
                return [cst.If(test=member, body=self.block(s.body))]
            case EMe():
                return [_assign(s.name, self._me(), None)]
            case EFor():
                loop_target = s.target.node
                assert isinstance(loop_target, cst.BaseAssignTargetExpression)
                return [cst.For(target=loop_target, iter=s.iter.node, body=self.block(s.body))]
            case ECall(refs=()):
                mapping = cst.Dict(
                    [cst.DictElement(_str(callee), _str(ours)) for callee, ours in s.mapping]
                )
                args = [a.node for a in s.args]
                call = _await_call(ep, "call", s.callee.node, _str(s.role), mapping, *args)
                return [_assign(s.target, call, s.label)]
            case ECall():
                mapping = cst.Dict(
                    [cst.DictElement(_str(k), _ref(r)) for k, r in s.refs if r.single]
                )
                groups = cst.Dict(
                    [cst.DictElement(_str(k), _ref(r)) for k, r in s.refs if not r.single]
                )
                args = [a.node for a in s.args]
                call = _await_call(ep, "call", s.callee.node, _str(s.role), mapping, *args)
                if groups.elements:
                    inner = call.expression
                    assert isinstance(inner, cst.Call)
                    g_arg = _kwarg("groups", groups)
                    call = call.with_changes(
                        expression=inner.with_changes(args=[*inner.args, g_arg])
                    )
                return [_assign(s.target, call, s.label)]
            case EReturn():
                value = s.value.node if s.value is not None else cst.Name("None")
                return [cst.SimpleStatementLine([cst.Return(value)])]
        raise AssertionError(f"unknown endpoint statement {s!r}")  # pragma: no cover


def generate(eir: EndpointIR, *, source_file: str, chash: str, ep_name: str = "ep") -> str:
    """The source of ``eir``'s endpoint module.

    Args:
        eir: the projected role.
        source_file: the choreography's file, as shown in the header.
        chash: the choreography's source hash, as shown in the header.
        ep_name: the name of the endpoint parameter (chosen not to clash with user names).
    """
    gen = _Gen(ep_name, eir.groups)
    fname = function_name(eir.choreography, eir.role)
    params = cst.Parameters([cst.Param(cst.Name(n)) for n in (ep_name, *eir.params)])
    body = gen.block(eir.body)
    if eir.groups:  # every group's members, as a tuple of names, known to every role
        members = [
            _assign(g, _await_call(ep_name, "group", _str(g)).expression, None) for g in eir.groups
        ]
        body = body.with_changes(body=[*members, *body.body])
    fn = cst.FunctionDef(
        name=cst.Name(fname),
        params=params,
        body=body,
        asynchronous=cst.Asynchronous(),
    )
    header = [
        f"# Generated by choreo from {source_file}; do not edit.",
        f"# choreography: {eir.choreography}   role: {eir.role}   source: {chash}",
        "# Free names resolve in the choreography's own module, whose globals choreo binds on load.",
    ]
    module = cst.Module(
        header=[cst.EmptyLine(comment=cst.Comment(h)) for h in header],
        body=[fn.with_changes(leading_lines=[cst.EmptyLine(), cst.EmptyLine()])],
    )
    return module.code
