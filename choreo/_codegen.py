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
from libcst.helpers import parse_template_expression, parse_template_statement

from choreo._epp import (
    EAssign,
    ECall,
    EFor,
    EIf,
    ELocal,
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


class _Gen:
    def __init__(self, ep: str) -> None:
        self.ep = ep

    def stmt_line(
        self, template: str, crumb: str | None = None, **kw: cst.CSTNode
    ) -> cst.SimpleStatementLine:
        node = parse_template_statement(template, **kw)  # type: ignore[arg-type]
        assert isinstance(node, cst.SimpleStatementLine)
        if crumb is not None:
            node = node.with_changes(trailing_whitespace=_crumb(crumb))
        return node

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
        label: str | None,
    ) -> cst.If:
        body = self.block(then)
        if label is not None:
            body = body.with_changes(header=_crumb(label))
        other = cst.Else(body=self.block(orelse)) if orelse else None
        return cst.If(test=test, body=body, orelse=other)

    def _while(
        self, test: cst.BaseExpression, body: tuple[EStmt, ...], label: str | None
    ) -> cst.While:
        block = self.block(body)
        if label is not None:
            block = block.with_changes(header=_crumb(label))
        return cst.While(test=test, body=block)

    def stmt(self, s: EStmt) -> list[cst.BaseStatement]:
        ep = cst.Name(self.ep)
        match s:
            case ELocal():
                return list(s.body)
            case EReplicated():
                return [s.stmt]
            case EAssign(target=None):
                return [self.stmt_line("{e}", s.label, e=s.expr.node)]
            case EAssign(target=str() as target):
                return [self.stmt_line("{t} = {e}", s.label, t=cst.Name(target), e=s.expr.node)]
            case ESend():
                return [
                    self.stmt_line(
                        "await {ep}.send({to}, {e}, {label})",
                        s.label,
                        ep=ep,
                        to=_roles(s.to),
                        e=s.expr.node,
                        label=_str(s.label),
                    )
                ]
            case ERecv():
                call = parse_template_expression(
                    "await {ep}.recv({frm}, {label})", ep=ep, frm=_str(s.frm), label=_str(s.label)
                )
                if s.target is None:
                    return [self.stmt_line("{c}", s.label, c=call)]
                return [self.stmt_line("{t} = {c}", s.label, t=cst.Name(s.target), c=call)]
            case EIf(select_to=()):
                return [self._if(s.cond.node, s.then, s.orelse, None)]
            case EIf():
                test = parse_template_expression(
                    "await {ep}.select({c}, {to}, {label})",
                    ep=ep,
                    c=s.cond.node,
                    to=cst.Tuple([cst.Element(_str(n)) for n in s.select_to]),
                    label=_str(s.label),
                )
                return [self._if(test, s.then, s.orelse, s.label)]
            case EOffer():
                test = parse_template_expression(
                    "await {ep}.offer({frm}, {label})", ep=ep, frm=_str(s.frm), label=_str(s.label)
                )
                return [self._if(test, s.then, s.orelse, s.label)]
            case EWhile(select_to=()):
                return [self._while(s.cond.node, s.body, None)]
            case EWhile():
                test = parse_template_expression(
                    "await {ep}.select({c}, {to}, {label})",
                    ep=ep,
                    c=s.cond.node,
                    to=cst.Tuple([cst.Element(_str(n)) for n in s.select_to]),
                    label=_str(s.label),
                )
                return [self._while(test, s.body, s.label)]
            case EOfferWhile():
                test = parse_template_expression(
                    "await {ep}.offer({frm}, {label})", ep=ep, frm=_str(s.frm), label=_str(s.label)
                )
                return [self._while(test, s.body, s.label)]
            case EFor():
                loop_target = s.target.node
                assert isinstance(loop_target, cst.BaseAssignTargetExpression)
                return [cst.For(target=loop_target, iter=s.iter.node, body=self.block(s.body))]
            case ECall():
                mapping = cst.Dict(
                    [cst.DictElement(_str(callee), _str(ours)) for callee, ours in s.mapping]
                )
                args = [cst.Arg(s.callee.node), cst.Arg(_str(s.role)), cst.Arg(mapping)]
                args += [cst.Arg(a.node) for a in s.args]
                call = cst.Await(cst.Call(cst.Attribute(ep, cst.Name("call")), args))
                if s.target is None:
                    return [self.stmt_line("{c}", s.label, c=call)]
                return [self.stmt_line("{t} = {c}", s.label, t=cst.Name(s.target), c=call)]
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
    gen = _Gen(ep_name)
    fname = function_name(eir.choreography, eir.role)
    params = cst.Parameters([cst.Param(cst.Name(n)) for n in (ep_name, *eir.params)])
    fn = cst.FunctionDef(
        name=cst.Name(fname),
        params=params,
        body=gen.block(eir.body),
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
