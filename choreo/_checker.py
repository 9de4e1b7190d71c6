"""Checker: where every value lives, and whether each statement may use it.

Rules enforced (each violation is a positioned diagnostic; checking goes on
after an error so that every problem is reported at once):

1. A name bound inside ``with r:`` is located at ``r``. ``x = s.send(e, to=R)``
   locates ``x`` at every role of ``R``. Inputs ``At[T, "r"]`` are at ``r``.
   A sub-choreography's result is where its signature says, mapped onto the
   caller's roles. Plain statements outside ``with``, ``for`` indices, module
   globals and builtins are known to every role (replicated, ``Loc`` None).
   A name held by several roles may not be changed in place (``x.append(...)``,
   ``x[k] = v``) inside ``with r:``: every holder has its own copy, which must
   stay equal (a central run shares one object). Rebinding is fine.
2. Code at role ``r`` (a ``with r:`` block, the expression of a send from
   ``r``, an argument passed for a callee role bound to ``r``) may only read
   names located at ``r`` or replicated. The hint names the send that fixes it.
3. An ``if``/``while`` condition must be evaluable at one role, or at a set of
   roles that all hold the same values (after a multicast): the *deciders*.
   A condition that mixes locations is an error.
4. A plain statement outside ``with`` must only read replicated values, must
   bind something, and may only appear where every enclosing condition is
   replicated (otherwise not every role knows whether it ran).
5. ``for`` iterates over a replicated value; its indices are replicated inside
   the body and gone after it.
6. Roles are not values: a role name may only appear where the language
   expects a role (``with``, ``send``, ``to=``, call arguments).
7. After an ``if``, a name is located where both branches agree; a ``while``
   or ``for`` body is checked at the fixpoint of its entry locations.
8. The choreography's result is located where every ``return`` agrees (the
   meet); a ``-> At[T, "r"]`` annotation fixes it to ``r`` and is checked.

9. Groups (``g: Roles``): a group's name is a value every role knows (the
   tuple of its members' names: ``len(g)``, ``for m in g:``). A ``with g as m:``
   block (or ``with g[0]:``, ``with m:``) reads values held by ``g`` (uniform
   or faceted) or replicated; what it binds is faceted (``g*``). A multicast to
   the whole group is uniform (``g``); a scatter, a send to one member or a
   slice, a gather with a quorum, and group inputs are faceted. A condition
   may be decided by a group whose members all hold the same value (``g``),
   never on a faceted value (the members could disagree).

Theory: locations form a lattice (``None`` = everywhere, above every set of
roles; meet is intersection), statements are monotone transfer functions, so
loop fixpoints are reached in at most (number of roles + 1) rounds per name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from choreo._ir import (
    Call,
    ChoreographyIR,
    Expr,
    For,
    GLocal,
    GSend,
    If,
    Loc,
    Local,
    NameUse,
    Poison,
    Replicated,
    Return,
    RoleRef,
    Send,
    Signature,
    Stmt,
    While,
    facet,
    meet,
)
from choreo._source import Diagnostic, Span

__all__ = ["CalleeHasErrors", "NeedsAnnotation", "Resolver", "check", "describe"]


class NeedsAnnotation(Exception):
    """Raised by a resolver when a recursive callee's result location is unknown."""


class CalleeHasErrors(Exception):
    """Raised by a resolver when the callee itself failed its checks (reported already)."""


Resolver = Callable[[str], Signature | None]
Env = dict[str, Loc]


def describe(loc: Loc) -> str:
    """``alice``, ``alice and bob``, ``every role``, or ``no single role``."""
    if loc is None:
        return "every role"
    if not loc:
        return "no single role"
    names = sorted(
        f"the members of {t[:-1]} (each its own value)" if t.endswith("*") else t for t in loc
    )
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _meet_env(a: Env, b: Env) -> Env:
    return {k: meet(v, b[k]) for k, v in a.items() if k in b}


@dataclass
class _Checker:
    ir: ChoreographyIR
    resolve: Resolver | None
    is_global: Callable[[str], bool | str] | None
    diags: list[Diagnostic] = field(default_factory=list)
    results: list[tuple[Loc, Span]] = field(default_factory=list)
    roles: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    bound_anywhere: frozenset[str] = frozenset()
    order: dict[str, int] = field(default_factory=dict)
    #: names bound by rejected statements: their uses are not reported again
    poisoned: set[str] = field(default_factory=set)

    def error(self, span: Span, message: str, hint: str | None = None) -> None:
        d = Diagnostic(span, message, hint)
        if d not in self.diags:
            self.diags.append(d)

    # -- names --------------------------------------------------------------
    def _lookup(self, use: NameUse, env: Env) -> Loc | bool:
        """The location of ``use``; ``False`` after reporting it as an error."""
        if use.name in self.poisoned:
            return False
        if use.name in self.roles:
            self.error(
                use.span,
                f"role `{use.name}` is used as a value",
                "roles only appear in `with`, `.send(...)`, `to=` and sub-choreography calls; "
                "send a string if the name is needed",
            )
            return False
        if use.name in env:
            return env[use.name]
        if use.name in self.groups:
            return None  # a group's value is the tuple of its members' names, known everywhere
        if use.name in self.bound_anywhere:
            self.error(
                use.span,
                f"`{use.name}` is not available here: it is not bound on every path that "
                "reaches this point",
                "bind it before the `if`/loop, or in every branch at the same role",
            )
            return False
        if self.is_global is not None:
            known = self.is_global(use.name)
            if known is not True:
                self.error(use.span, known or f"name `{use.name}` is not defined")
                return False
        return None  # a module global or builtin: every role has it

    def need_at(
        self, uses: tuple[NameUse, ...], role: str, env: Env, what: str, group: bool = False
    ) -> None:
        """Every use must be readable at ``role`` (at each member of group ``role``)."""
        for use in uses:
            loc = self._lookup(use, env)
            if loc is None or loc is False:
                continue
            assert isinstance(loc, frozenset)
            if role in loc or (group and facet(role) in loc):
                continue
            if loc:
                holder = sorted(loc, key=self._rank)[0].rstrip("*")
                where = f"the members of {role}" if group else role
                self.error(
                    use.span,
                    f"`{use.name}` is located at {describe(loc)}, but {what} runs at {where}",
                    f"send it first: `{use.name} = {holder}.send({use.name}, to={role})`",
                )
            else:
                self.error(
                    use.span,
                    f"`{use.name}` is not held by any single role here (its branches or "
                    "iterations bind it at different roles)",
                    "bind it at the same role on every path",
                )

    def need_replicated(self, uses: tuple[NameUse, ...], env: Env, what: str) -> None:
        for use in uses:
            loc = self._lookup(use, env)
            if loc is None or loc is False:
                continue
            assert isinstance(loc, frozenset)
            where = sorted(loc, key=self._rank)
            self.error(
                use.span,
                f"`{use.name}` is located at {describe(loc)}; {what} may only use values "
                "every role knows",
                f"wrap it in `with {where[0].rstrip('*')}:`" if where else None,
            )

    def expr_loc(self, expr: Expr, env: Env, what: str) -> Loc:
        loc: Loc = None
        first: dict[str, str] = {}
        for use in expr.reads:
            here = self._lookup(use, env)
            if here is None or here is False:
                continue
            assert isinstance(here, frozenset)
            if not here:
                self.error(use.span, f"`{use.name}` is not held by any single role here")
                return frozenset()
            new = meet(loc, here)
            if new is not None and not new:
                assert loc is not None
                other = first[sorted(loc, key=self._rank)[0]]
                self.error(
                    expr.span,
                    f"{what} mixes values located at different roles: `{other}` at "
                    f"{describe(loc)}, `{use.name}` at {describe(here)}",
                    f"send one of them first, e.g. `{use.name} = "
                    f"{sorted(here, key=self._rank)[0]}.send({use.name}, "
                    f"to={sorted(loc, key=self._rank)[0]})`",
                )
                return frozenset()
            for r in here:
                first.setdefault(r, use.name)
            loc = new
        return loc

    def _rank(self, role: str) -> int:
        return self.order.get(role.rstrip("*"), len(self.order))

    def decided(self, cond: Expr, env: Env, what: str) -> Loc:
        """The deciders of a condition; a faceted value cannot decide (members may differ)."""
        loc = self.expr_loc(cond, env, what)
        if loc:
            faceted = sorted(t[:-1] for t in loc if t.endswith("*"))
            whole = frozenset(t for t in loc if not t.endswith("*"))
            if faceted and whole:  # a role (or a whole group) holding it decides for all
                return whole
            if faceted:
                names = [u.name for u in cond.reads if (env.get(u.name) or set()) & loc]
                self.error(
                    cond.span,
                    f"{what} reads "
                    + (f"`{names[0]}`, " if names else "")
                    + f"a value each member of {faceted[0]} holds for itself: the members "
                    "could disagree on the branch",
                    f"gather it to one role first (`x = {faceted[0]}.send(x, to=some_role)`), "
                    f"or decide inside `with {faceted[0]} as m:`",
                )
                return frozenset()
        return loc

    # -- statements ---------------------------------------------------------
    def block(self, stmts: tuple[Stmt, ...], env: Env, replicated: bool) -> tuple[Stmt, ...]:
        return tuple(self.stmt(s, env, replicated) for s in stmts)

    def bind(self, name: str, loc: Loc, env: Env, span: Span) -> None:
        if name in self.roles:
            self.error(span, f"`{name}` is a role and cannot be assigned to")
            return
        env[name] = loc
        self.poisoned.discard(name)

    def stmt(self, s: Stmt, env: Env, replicated: bool) -> Stmt:
        match s:
            case Local(role=role):
                self.need_at(s.reads, role, env, f"this `with {role}:` block")
                bound_at = {u.name: u.span for u in s.bind_uses}
                for b in sorted(s.binds):
                    self.bind(b, frozenset({role}), env, bound_at.get(b, s.span))
                for use in s.mutates:
                    # every holder has its own copy; changing one in place would make them
                    # differ, which a central run (one shared object) cannot reproduce
                    name = use.name
                    loc = env.get(name)
                    if loc is not None and role in loc and len(loc) > 1:
                        self.error(
                            use.span,
                            f"`{name}` is held by {describe(loc)}; changing it in place at "
                            f"{role} would make their copies differ",
                            f"change a copy instead: `{name}2 = copy.copy({name})` (or rebind "
                            f"`{name} = ...`, which makes it {role}'s alone)",
                        )
                return s
            case GLocal(where=ref):
                block = f"with {ref.code} as {s.member}" if s.member else f"with {ref.code}"
                self.need_at(s.reads, ref.base, env, f"this `{block}:` block", True)
                bound_at = {u.name: u.span for u in s.bind_uses}
                for b in sorted(s.binds):
                    self.bind(b, frozenset({facet(ref.base)}), env, bound_at.get(b, s.span))
                return s
            case GSend():
                self.gsend(s, env)
                return s
            case Send(sender=sender):
                self.need_at(s.expr.reads, sender, env, f"the value sent by {sender}")
                if s.target is not None:
                    self.bind(s.target, frozenset(s.receivers), env, s.span)
                return s
            case Replicated():
                if not replicated:
                    self.error(
                        s.span,
                        "a plain statement inside a branch or loop decided at one role: not "
                        "every role knows whether it ran",
                        "put it inside a `with role:` block",
                    )
                self.need_replicated(s.reads, env, "a plain statement outside `with`")
                if not s.binds:
                    self.error(
                        s.span,
                        "a plain statement outside `with` that binds nothing would run at "
                        "every role",
                        "put it inside a `with role:` block",
                    )
                for b in s.binds:
                    self.bind(b, None, env, s.span)
                return s
            case If():
                deciders = self.decided(s.cond, env, "this condition")
                inner_rep = replicated and deciders is None
                env_t = dict(env)
                then = self.block(s.then, env_t, inner_rep)
                env_e = dict(env)
                orelse = self.block(s.orelse, env_e, inner_rep)
                env.clear()
                env.update(_meet_env(env_t, env_e))
                return replace(s, then=then, orelse=orelse, deciders=deciders)
            case While():
                entry = self._fixpoint(s.body, env, replicated, s.cond, ())
                deciders = self.decided(s.cond, entry, "this loop condition")
                body_env = dict(entry)
                body = self.block(s.body, body_env, replicated and deciders is None)
                env.clear()
                env.update(entry)
                return replace(s, body=body, deciders=deciders)
            case For():
                self.need_replicated(s.iter.reads, env, "the iterable of a `for` loop")
                entry = self._fixpoint(s.body, env, replicated, None, tuple(s.targets))
                body_env = dict(entry)
                for t in s.targets:
                    body_env[t] = None
                body = self.block(s.body, body_env, replicated)
                env.clear()
                env.update({k: v for k, v in entry.items() if k not in s.targets})
                return replace(s, body=body)
            case Call():
                return self.call(s, env)
            case Poison():
                # only names the rejected statement would have bound anew
                self.poisoned |= {n for n in s.names if n not in env}
                return s
            case Return():
                where: Loc = None
                if s.value is not None:
                    where = self.expr_loc(s.value, env, "the returned value")
                self.results.append((where, s.span))
                return replace(s, location=where)
        raise AssertionError(f"unknown statement {s!r}")  # pragma: no cover

    def _fixpoint(
        self,
        body: tuple[Stmt, ...],
        env: Env,
        replicated: bool,
        cond: Expr | None,
        targets: tuple[str, ...],
    ) -> Env:
        """Entry locations of a loop: the meet of before and after every iteration."""
        saved_diags, saved_results = self.diags, self.results
        entry = dict(env)
        try:
            for _ in range(len(self.roles) + 2 * len(self.groups) + len(env) + 2):
                self.diags, self.results = [], []
                inner = dict(entry)
                for t in targets:
                    inner[t] = None
                if cond is not None:
                    self.expr_loc(cond, inner, "this loop condition")
                self.block(body, inner, replicated)
                for t in targets:
                    inner.pop(t, None)
                new = _meet_env(env, inner)
                if new == entry:
                    break
                entry = new
        finally:
            self.diags, self.results = saved_diags, saved_results
        return entry

    def gsend(self, s: GSend, env: Env) -> None:
        snd = s.sender
        verb = "scattered" if s.scatter else "sent"
        self.need_at(
            s.expr.reads, snd.base, env, f"the value {verb} by {snd.code}", snd.kind != "role"
        )
        if s.quorum is not None:
            self.need_replicated(s.quorum.reads, env, "a quorum")
        if s.timeout is not None:
            self.need_replicated(s.timeout.reads, env, "a gather's timeout")
        if s.target is None:
            return
        loc: set[str] = set()
        for r in s.receivers:
            uniform = (
                r.kind == "group"
                and not s.scatter
                and (snd.single or (s.quorum is None and s.timeout is None))
            )
            loc.add(r.base if r.kind == "role" or uniform else facet(r.base))
        self.bind(s.target, frozenset(loc), env, s.span)

    def call(self, s: Call, env: Env) -> Stmt:
        checked = self._call(s, env)
        if checked is s and s.target is not None:  # rejected: do not report its uses again
            self.poisoned.add(s.target)
            env.pop(s.target, None)
        return checked

    def _call(self, s: Call, env: Env) -> Stmt:
        sig: Signature | None = None
        if self.resolve is not None:
            try:
                sig = self.resolve(s.callee_name)
            except CalleeHasErrors:
                return s  # its own diagnostics say why; the result's uses are not errors
            except NeedsAnnotation:
                self.error(
                    s.callee.span,
                    f"`{s.callee_name}` calls itself (directly or not), so its result location "
                    "must be declared",
                    f'annotate `{s.callee_name}` with `-> At[T, "role"]` (or `-> None`)',
                )
                return s
        if sig is None:
            self.error(
                s.callee.span,
                f"`{s.callee_name}` is not a `@choreography`: roles can only be passed to "
                "choreographies",
                "decorate it with `@choreography`, or pass values instead of roles",
            )
            return s
        params = sig.params
        bound: dict[str, Expr] = {}
        positional = [e for k, e in s.args if not k]
        if len(positional) > len(params):
            self.error(
                s.span, f"`{sig.name}` takes {len(params)} arguments, {len(positional)} given"
            )
            return s
        for p, e in zip(params, positional, strict=False):
            bound[p.name] = e
        names = {p.name for p in params}
        for key, e in s.args:
            if not key:
                continue
            if key not in names:
                self.error(e.span, f"`{sig.name}` has no parameter `{key}`")
                return s
            if key in bound:
                self.error(e.span, f"parameter `{key}` of `{sig.name}` is given twice")
                return s
            bound[key] = e
        missing = [p.name for p in params if p.name not in bound]
        if missing:
            self.error(
                s.span,
                f"call of `{sig.name}` is missing " + ", ".join(f"`{n}`" for n in missing),
            )
            return s
        role_map: dict[str, str] = {}
        #: callee role/group -> (caller token for a value held there uniformly, faceted token)
        tokens: dict[str, tuple[str, str]] = {}
        refs: list[tuple[str, RoleRef]] = []
        ref_of = {id(e): r for (_, e), r in zip(s.args, s.arg_refs, strict=False)}
        used: dict[str, str] = {}
        ok = True
        for p in params:
            if p.kind not in ("role", "group"):
                continue
            e = bound[p.name]
            ref = ref_of.get(id(e))
            if p.kind == "group":
                if ref is None or ref.single:
                    self.error(
                        e.span,
                        f"group parameter `{p.name}` of `{sig.name}` needs a group or a slice "
                        f"of one, got `{e.code}`",
                    )
                    ok = False
                    continue
                refs.append((p.name, ref))
                uniform = ref.base if ref.kind == "group" else facet(ref.base)
                tokens[p.name] = (uniform, facet(ref.base))
                role_map[p.name] = ref.base
                continue
            if ref is not None and ref.kind == "member":
                refs.append((p.name, ref))
                tokens[p.name] = (facet(ref.base), facet(ref.base))
                role_map[p.name] = ref.base
                continue
            if e.code not in self.roles:
                self.error(
                    e.span,
                    f"role parameter `{p.name}` of `{sig.name}` needs a role, got `{e.code}`",
                )
                ok = False
                continue
            if e.code in used:
                self.error(
                    e.span,
                    f"role `{e.code}` is passed twice to `{sig.name}` (as `{used[e.code]}` and "
                    f"`{p.name}`)",
                    "a sub-choreography needs distinct roles",
                )
                ok = False
                continue
            used[e.code] = p.name
            role_map[p.name] = e.code
            tokens[p.name] = (e.code, e.code)
            refs.append((p.name, ref or RoleRef(e.code, e.node, e.code, "role", e.span)))
        if not ok:
            return s
        inputs: list[tuple[str, Expr]] = []
        for p in params:
            if p.kind != "input":
                continue
            e = bound[p.name]
            assert p.location is not None
            at = role_map[p.location]
            self.need_at(
                e.reads,
                at,
                env,
                f"argument `{p.name}` of `{sig.name}` (held by {at})",
                at in self.groups,
            )
            inputs.append((p.location, e))
        result: Loc = None
        if sig.result is not None:
            mapped: set[str] = set()
            for t in sig.result:
                key = t.rstrip("*")
                if key in tokens:
                    mapped.add(tokens[key][1] if t.endswith("*") else tokens[key][0])
            result = frozenset(mapped)
        if s.target is not None:
            self.bind(s.target, result, env, s.span)
        plain = tuple((k, r.code) for k, r in refs if r.kind == "role")
        callee_result = None if sig.result is None else frozenset(t.rstrip("*") for t in sig.result)
        return replace(
            s,
            roles=plain,
            inputs=tuple(inputs),
            result=result,
            refs=tuple(refs),
            callee_result=callee_result,
        )


def _all_binds(stmts: tuple[Stmt, ...]) -> set[str]:
    out: set[str] = set()
    for s in stmts:
        match s:
            case Local() | Replicated() | GLocal():
                out |= s.binds
            case Send() | Call() | GSend():
                if s.target:
                    out.add(s.target)
            case If():
                out |= _all_binds(s.then) | _all_binds(s.orelse)
            case While():
                out |= _all_binds(s.body)
            case For():
                out |= _all_binds(s.body) | s.targets
            case Poison():
                out |= s.names
    return out


def check(
    ir: ChoreographyIR,
    resolve: Resolver | None = None,
    is_global: Callable[[str], bool | str] | None = None,
) -> tuple[ChoreographyIR, list[Diagnostic]]:
    """Locate every value of ``ir`` and check every rule above.

    Args:
        ir: the front end's output.
        resolve: finds a callee's ``Signature`` by the name used in the call.
        is_global: ``True`` if a free name exists in the module (or builtins),
            else ``False`` or a message saying why it cannot be used; None to
            accept every free name.

    Returns:
        The IR with deciders, call bindings and result locations filled in, and
        every diagnostic found.
    """
    roles = frozenset(ir.roles)
    groups = frozenset(ir.groups)
    c = _Checker(
        ir,
        resolve,
        is_global,
        roles=roles,
        groups=groups,
        bound_anywhere=frozenset(_all_binds(ir.body)),
        order={r: i for i, r in enumerate(ir.parties)},
    )
    env: Env = {}
    for p in ir.params:
        if p.kind == "input":
            assert p.location is not None
            env[p.name] = frozenset({facet(p.location) if p.location in groups else p.location})
    body = c.block(ir.body, env, True)
    result: Loc = None
    for loc, _ in c.results:
        result = meet(result, loc)
    if ir.returns is not None:
        for loc, span in c.results:
            if loc is not None and ir.returns not in loc and facet(ir.returns) not in loc:
                c.error(
                    span,
                    f"this returns a value located at {describe(loc)}, but the choreography "
                    f"declares its result at {ir.returns}",
                    f"send it to {ir.returns} before returning it",
                )
        result = frozenset({facet(ir.returns) if ir.returns in groups else ir.returns})
    return replace(ir, body=body, result=result), c.diags
