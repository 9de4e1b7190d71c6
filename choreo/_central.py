"""Central semantics of choreographies with groups: an interpreter of the checked IR.

A choreography without groups runs centrally as the original Python function
(``Role.send`` hands a copy over). A ``with g as m:`` block cannot run that
way (Python runs a ``with`` body once; here it runs once per member, and each
member keeps its own values), so choreographies with groups run centrally in
this interpreter instead: every role and every member has its own namespace
(a copy of the module's globals plus what it binds), local code is executed
in the namespace of the role or member running it, and a send copies a value
from one namespace into others. It shares nothing with the projector or the
runtime, which is what makes it a reference to test projected runs against.

Quorum gathers are deterministic here: the first ``k`` members in census
order are the ones heard; a gather with a ``timeout`` hears every member.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from types import CodeType
from typing import TYPE_CHECKING, Any

from choreo._endpoint import _quorum
from choreo._errors import ChoreoRuntimeError
from choreo._ir import (
    Call,
    ChoreographyIR,
    For,
    GLocal,
    GSend,
    If,
    Local,
    Poison,
    Replicated,
    Return,
    RoleRef,
    Send,
    Stmt,
    While,
)

if TYPE_CHECKING:
    from choreo._dsl import Choreography

__all__ = ["central_results", "interpret"]

#: Compiled expressions of the choreography's own source (conditions, sent values, role
#: expressions such as ``g[1:]``), sliced from the user's file by the front end. This
#: interpreter runs the choreography in one process, as calling the Python function would;
#: nothing here comes from the network (endpoints decode payloads with ``choreo._codec``,
#: which never evaluates or unpickles bytes).
_CODE: dict[tuple[str, str], CodeType] = {}


def _compiled(code: str, mode: str) -> CodeType:
    key = (code, mode)
    got = _CODE.get(key)
    if got is None:
        got = _CODE[key] = compile(code, "<choreography>", mode)
    return got


class _Returned(Exception):
    pass


class _Interpreter:
    def __init__(
        self,
        chor: Choreography,
        ir: ChoreographyIR,
        roles: Mapping[str, str],
        groups: Mapping[str, tuple[str, ...]],
        inputs: Mapping[str, Mapping[str, Any]],
    ) -> None:
        self.chor = chor
        self.ir = ir
        self.roles = dict(roles)
        self.groups = {g: tuple(ms) for g, ms in groups.items()}
        base = dict(chor._fn.__globals__)
        base.update(self.groups)
        self.rep: dict[str, Any] = dict(base)  # what every role knows
        self.ns: dict[str, dict[str, Any]] = {}
        for name in [*self.roles.values(), *(m for ms in self.groups.values() for m in ms)]:
            ns = dict(base)
            ns.update(inputs.get(name, {}))
            self.ns[name] = ns
        self.results: dict[str, Any] = dict.fromkeys(self.ns)
        self.holders: set[str] = set()

    # -- role expressions -----------------------------------------------------
    def names(self, ref: RoleRef) -> list[str]:
        if ref.kind == "role":
            return [self.roles[ref.base]]
        if ref.kind == "group":
            return list(self.groups[ref.base])
        value = eval(_compiled(ref.code, "eval"), self.rep)  # g[0], g[1:], a loop variable
        return [value] if isinstance(value, str) else list(value)

    def party(self, token: str) -> list[str]:
        t = token.rstrip("*")
        if t in self.roles:
            return [self.roles[t]]
        return list(self.groups.get(t, ()))

    def at(self, loc: frozenset[str] | None) -> dict[str, Any]:
        """The namespace a condition held at ``loc`` is evaluated in."""
        if loc is None:
            return self.rep
        order = {p: i for i, p in enumerate(self.ir.parties)}
        first = min(loc, key=lambda t: order.get(t.rstrip("*"), len(order)))
        return self.ns[self.party(first)[0]]

    # -- statements -------------------------------------------------------------
    def block(self, stmts: tuple[Stmt, ...]) -> None:
        for s in stmts:
            self.stmt(s)

    def stmt(self, s: Stmt) -> None:
        match s:
            case Local():
                exec(_compiled("\n".join(s.codes), "exec"), self.ns[self.roles[s.role]])
            case GLocal():
                code = _compiled("\n".join(s.codes), "exec")
                for m in self.names(s.where):
                    ns = self.ns[m]
                    if s.member:
                        ns[s.member] = m
                    exec(code, ns)
            case Send():
                sender = self.roles[s.sender]
                value = eval(_compiled(s.expr.code, "eval"), self.ns[sender])
                if s.target is not None:
                    for r in s.receivers:
                        name = self.roles[r]
                        self.ns[name][s.target] = value if name == sender else copy.deepcopy(value)
            case GSend():
                self.gsend(s)
            case Replicated():
                code = _compiled(s.code, "exec")
                exec(code, self.rep)
                for ns in self.ns.values():
                    exec(code, ns)
            case If():
                cond = eval(_compiled(s.cond.code, "eval"), self.at(s.deciders))
                self.block(s.then if cond else s.orelse)
            case While():
                code = _compiled(s.cond.code, "eval")
                while eval(code, self.at(s.deciders)):
                    self.block(s.body)
            case For():
                assign = _compiled(f"{s.target.code} = __choreo_item__", "exec")
                for item in eval(_compiled(s.iter.code, "eval"), self.rep):
                    for ns in (self.rep, *self.ns.values()):
                        ns["__choreo_item__"] = item
                        exec(assign, ns)
                        del ns["__choreo_item__"]
                    self.block(s.body)
            case Call():
                self.call(s)
            case Return():
                self.ret(s)
            case Poison():  # pragma: no cover - a checked choreography has none
                pass

    def gsend(self, s: GSend) -> None:
        code = _compiled(s.expr.code, "eval")
        senders = self.names(s.sender)
        values = {x: eval(code, self.ns[x]) for x in senders}
        receivers = [n for r in s.receivers for n in self.names(r)]
        label = s.span.ref()
        if s.scatter:
            for x, v in values.items():
                if not isinstance(v, Mapping):
                    raise ChoreoRuntimeError(
                        f"{x} scatters a {type(v).__name__} at {label}: a scatter needs a "
                        "dict member -> value"
                    )
                missing = [n for n in receivers if n not in v]
                if missing:
                    raise ChoreoRuntimeError(
                        f"{x} scatters at {label} a dict with no entry for " + ", ".join(missing)
                    )
        if s.target is None:
            return

        def part(x: str, rcv: str) -> Any:
            v = values[x]
            return copy.deepcopy(v[rcv] if s.scatter else v)

        if s.sender.single:
            (x,) = senders
            for rcv in receivers:
                self.ns[rcv][s.target] = values[x] if rcv == x and not s.scatter else part(x, rcv)
            return
        quorum = None
        if s.quorum is not None:
            quorum = eval(_compiled(s.quorum.code, "eval"), self.rep)
        who = receivers[0] if receivers else self.ir.name
        heard = senders[: _quorum(quorum, len(senders), who, label)]
        if s.timeout is not None:  # nobody is slow in a central run: every member is heard
            heard = senders
        for rcv in receivers:
            self.ns[rcv][s.target] = {x: part(x, rcv) for x in heard}

    def call(self, s: Call) -> None:
        callee = self.chor._lookup(s.callee_name)
        from choreo._dsl import Choreography

        assert isinstance(callee, Choreography)
        cir = callee._check()
        roles: dict[str, str] = {}
        groups: dict[str, tuple[str, ...]] = {}
        party_of: dict[str, str] = {}  # callee parameter -> our role/group token
        for param, ref in s.refs:
            names = self.names(ref)
            party_of[param] = ref.base
            if ref.single:
                roles[param] = names[0]
            else:
                groups[param] = tuple(names)
        inputs: dict[str, dict[str, Any]] = {}
        params = [p for p in cir.params if p.kind == "input"]
        for p, (where, expr) in zip(params, s.inputs, strict=True):
            code = _compiled(expr.code, "eval")
            players = [roles[where]] if where in roles else list(groups.get(where, ()))
            for n in players:
                inputs.setdefault(n, {})[p.name] = eval(code, self.ns[n])
        sub = _Interpreter(callee, cir, roles, groups, inputs)
        sub.run()
        if s.target is not None:
            for n in sub.holders:
                self.ns[n][s.target] = sub.results[n]

    def ret(self, s: Return) -> None:
        if s.value is not None:
            code = _compiled(s.value.code, "eval")
            if s.location is None:
                holders = list(self.ns)
            else:
                holders = [n for t in sorted(s.location) for n in self.party(t)]
            for n in holders:
                self.results[n] = eval(code, self.ns[n])
            self.holders = set(holders)
        raise _Returned

    def run(self) -> None:
        try:
            self.block(self.ir.body)
        except _Returned:
            pass


def interpret(
    chor: Choreography,
    roles: Mapping[str, str],
    groups: Mapping[str, tuple[str, ...]],
    inputs: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """Run ``chor`` centrally; ``{role or member: result}`` (None where not located)."""
    it = _Interpreter(chor, chor._check(), roles, groups, inputs)
    it.run()
    return it.results


def central_results(chor: Choreography, **inputs: Any) -> dict[str, Any]:
    """The central run's result at every role and member, shaped like ``choreo.run``'s."""
    from choreo._run import cast

    c = cast(chor, inputs)
    eirs = chor.endpoints()
    per: dict[str, dict[str, Any]] = {}
    for party, name in c.players:
        per[name] = dict(zip(eirs[party].params, c.args[name], strict=True))
    return interpret(chor, c.roles, c.groups, per)


def central_call(chor: Choreography, **inputs: Any) -> Any:
    """``chor(...)`` for a choreography with groups: its result, where it is located.

    A result located at a role is that role's value; one located at a group is
    ``{member: value}``; a replicated result is the value every role has.
    """
    from choreo._run import cast

    c = cast(chor, inputs)
    results = central_results(chor, **inputs)
    loc = chor._check().result
    if not loc:
        return next(iter(results.values()), None)
    order = list(chor._check().parties)
    first = min(loc, key=lambda t: order.index(t.rstrip("*")))
    token = first.rstrip("*")
    if token in c.roles:
        return results[c.roles[token]]
    return {m: results[m] for m in c.groups[token]}
