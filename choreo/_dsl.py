"""The user-facing language objects: ``Role``, ``At``, ``@choreography``.

``@choreography`` returns a ``Choreography``. Nothing is analysed when the
module is imported: the first call, ``project`` or ``run`` parses the file
with libcst, checks and projects the function, and keeps the result in a
process-wide cache keyed by the source hash, so importing or loading the same
source again costs nothing.

Calling a ``Choreography`` directly runs it *centrally*: the original Python
function executes with ``Role`` objects whose ``send`` just hands the value
over (as a copy, like the network would). That is the reference semantics
every projected run is tested against.
"""

from __future__ import annotations

import builtins
import copy
import functools
import hashlib
import inspect
import linecache
import re
import types
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import libcst as cst

from choreo._checker import CalleeHasErrors, NeedsAnnotation, check
from choreo._codegen import function_name, generate
from choreo._epp import EndpointIR, project
from choreo._errors import CheckError, ChoreoError, ChoreoInternalError, UsageError
from choreo._frontend import ParsedModule, find_choreographies, parse_function, parse_module
from choreo._ir import Call, ChoreographyIR, For, If, Signature, Stmt, While
from choreo._source import Diagnostic

__all__ = ["At", "Choreography", "Role", "Roles", "choreography", "stats"]

T = TypeVar("T")
EndpointFunction = Callable[..., Coroutine[Any, Any, Any]]


class Role:
    """A role of a choreography.

    In a choreography's signature, ``alice: Role`` declares a role. In a
    central run, role parameters are ``Role`` objects: ``with alice:`` does
    nothing and ``alice.send(v, to=bob)`` returns a copy of ``v``.

    Args:
        name: the role's name.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Role({self.name!r})"

    def __enter__(self) -> Role:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def send(self, value: T, *, to: Role | list[Role] | tuple[Role, ...]) -> T:
        """Central semantics of a send: the receiver gets a copy of ``value``.

        Args:
            value: what is sent.
            to: the receiving role, or several.

        Returns:
            A deep copy of ``value``.
        """
        del to
        return copy.deepcopy(value)


class Roles(tuple[str, ...]):
    """A group of roles whose members are chosen when a run starts (its census).

    In a choreography's signature, ``backups: Roles`` declares a group. At run
    time the group is the tuple of its members' names (``backups.0``, ...), so
    ``len(g)``, ``g[0]``, ``g[1:]`` and ``for m in g:`` work as on a tuple.
    """


#: ``At[T, "role"]``: a value of type ``T`` held by ``role`` only. It *is*
#: ``typing.Annotated``, so type checkers read ``At[int, "alice"]`` as ``int``;
#: choreo reads the role from the source text.
At = Annotated


@dataclass
class _Stats:
    """Counters of the expensive work done (tests use them to check the cache)."""

    parses: int = 0
    checks: int = 0
    projections: int = 0


stats = _Stats()

# (file, source hash) -> parsed module; (file, function source hash, name) -> artefacts
_MODULES: dict[tuple[str, str], ParsedModule] = {}
_CHECKED: dict[tuple[str, str, str], tuple[ChoreographyIR, list[Diagnostic]]] = {}
_PROJECTED: dict[tuple[str, str, str], dict[str, EndpointIR]] = {}


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Choreography:
    """A ``@choreography`` function: call it to run centrally, or project and run it.

    Args:
        fn: the decorated function.

    Attributes:
        name: the function's name.
        file: the file it is defined in.

    Raises:
        UsageError: ``fn`` is not a function.
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        if not inspect.isfunction(fn):
            raise UsageError("@choreography decorates a function")
        self._fn = fn
        functools.update_wrapper(self, fn)
        self.name: str = fn.__name__
        self.file: str = fn.__code__.co_filename
        self._line = fn.__code__.co_firstlineno
        self._parsed: tuple[ChoreographyIR, list[Diagnostic], str] | None = None
        self._checked: ChoreographyIR | None = None
        self._checking = False
        self._projecting = False
        self._callee_diags: list[Diagnostic] = []
        self._sources: dict[str, str] = {}
        self._functions: dict[str, EndpointFunction] = {}
        self._hash: str | None = None

    def __repr__(self) -> str:
        return f"<choreography {self.name} from {self.file}:{self._line}>"

    # -- analysis -----------------------------------------------------------
    def _parse(self) -> tuple[ChoreographyIR, list[Diagnostic], str]:
        """Front end only: IR, syntax diagnostics, and the function's own source hash."""
        if self._parsed is not None:
            return self._parsed
        lines = linecache.getlines(self.file, self._fn.__globals__)
        if not lines:
            raise UsageError(
                f"cannot read the source of choreography {self.name!r} ({self.file}); "
                "choreographies must be defined in a file (or loaded with choreo.module_from_source)"
            )
        source = "".join(lines)
        key = (self.file, _sha(source))
        pm = _MODULES.get(key)
        if pm is None:
            stats.parses += 1
            try:
                pm = parse_module(source, self.file)
            except cst.ParserSyntaxError as exc:
                raise UsageError(f"{self.file}: cannot parse: {exc}") from None
            _MODULES[key] = pm
        fn = self._find(pm)
        own = _sha(pm.code(fn))  # the text only: the same source hashes alike anywhere
        try:
            ir, diags = parse_function(pm, fn, self._is_choreography)
        except ChoreoError:
            raise
        except Exception as exc:  # anything else is a bug in the front end
            raise ChoreoInternalError(f"parsing {self.name} failed: {exc!r}") from exc
        self._parsed = (ir, diags, own)
        return self._parsed

    def _find(self, pm: ParsedModule) -> cst.FunctionDef:
        candidates = [f for f in find_choreographies(pm) if f.name.value == self.name]
        for f in candidates:
            first = pm.span(f.decorators[0]).line if f.decorators else pm.span(f).line
            if first <= self._line <= pm.span(f).end_line:
                return f
        if len(candidates) == 1:
            return candidates[0]
        raise UsageError(
            f"cannot find `def {self.name}` decorated with @choreography in {self.file} "
            "(was the file changed after it was imported?)"
        )

    def _signature(self) -> Signature:
        ir, _, _ = self._parse()
        if ir.declared:
            result: frozenset[str] | None = None
            if ir.returns is not None:
                result = frozenset({ir.returns + "*" if ir.returns in ir.groups else ir.returns})
            return Signature(ir.name, ir.params, result)
        if self._checking:
            raise NeedsAnnotation(self.name)
        return Signature(ir.name, ir.params, self._check().result)

    def _lookup(self, dotted: str) -> object:
        parts = dotted.split(".")
        scope = self._fn.__globals__
        if parts[0] in scope:
            obj: object = scope[parts[0]]
        elif hasattr(builtins, parts[0]):
            obj = getattr(builtins, parts[0])
        else:
            return None
        for attr in parts[1:]:
            obj = getattr(obj, attr, None)
        return obj

    def _resolve(self, name: str) -> Signature | None:
        obj = self._lookup(name)
        if not isinstance(obj, Choreography):
            return None
        try:
            return obj._signature()
        except CheckError as exc:
            # the callee's own errors are reported with the caller's
            self._callee_diags.extend(exc.diagnostics)
            raise CalleeHasErrors(name) from None

    def _is_global(self, name: str) -> bool | str:
        if name in self._fn.__globals__ or hasattr(builtins, name):
            return True
        if name in self._fn.__code__.co_freevars:
            return (
                f"`{name}` is a variable of the function that encloses this choreography; "
                "projected code only sees module-level names (define it at module level, or "
                "pass it in as an input)"
            )
        return False

    def _is_choreography(self, name: str) -> bool:
        return isinstance(self._lookup(name), Choreography)

    def _check(self) -> ChoreographyIR:
        if self._checked is not None:
            return self._checked
        ir, diags, own = self._parse()
        key = (self.file, own, self.name)
        cached = _CHECKED.get(key)
        if cached is None:
            if self._checking:
                raise ChoreoInternalError(f"re-entrant check of {self.name}")
            self._checking = True
            try:
                stats.checks += 1
                checked, more = check(ir, self._resolve, self._is_global)
            except ChoreoError:
                raise
            except Exception as exc:  # anything else is a bug in the checker
                raise ChoreoInternalError(f"checking {self.name} failed: {exc!r}") from exc
            finally:
                self._checking = False
            unique = list(dict.fromkeys([*diags, *more, *self._callee_diags]))
            cached = (checked, unique)
            _CHECKED[key] = cached
        checked, all_diags = cached
        if all_diags:
            raise CheckError(sorted(all_diags, key=lambda d: (d.span.line, d.span.col)))
        self._checked = checked
        return checked

    def check(self) -> None:
        """Check the choreography.

        Raises:
            CheckError: with every diagnostic found.
        """
        self._check()

    @property
    def roles(self) -> tuple[str, ...]:
        """The role parameter names, in order."""
        return self._parse()[0].roles

    @property
    def groups(self) -> tuple[str, ...]:
        """The group parameter names, in order."""
        return self._parse()[0].groups

    @property
    def parties(self) -> tuple[str, ...]:
        """Roles then groups: what the choreography is projected onto."""
        return self._parse()[0].parties

    @property
    def params(self) -> tuple[tuple[str, str, str | None], ...]:
        """``(name, kind, location)`` for every parameter (kind ``role``, ``group`` or ``input``)."""
        return tuple((p.name, p.kind, p.location) for p in self._parse()[0].params)

    @property
    def hash(self) -> str:
        """Hash of this choreography's source and of every choreography it calls."""
        if self._hash is None:
            seen: dict[int, str] = {}
            self._collect_hashes(seen)
            self._hash = _sha("".join(sorted(seen.values())))
        return self._hash

    def _collect_hashes(self, seen: dict[int, str]) -> None:
        if id(self) in seen:
            return
        seen[id(self)] = self._parse()[2]
        for call in _calls(self._check().body):
            obj = self._lookup(call.callee_name)
            if isinstance(obj, Choreography):
                obj._collect_hashes(seen)

    def endpoints(self) -> dict[str, EndpointIR]:
        """The projection of every role (endpoint IR).

        Returns:
            Every role's (and group's) endpoint IR, by role name.

        Raises:
            CheckError: the choreography has static errors.
            ChoreoInternalError: the projection failed (a bug in choreo).
        """
        checked = self._check()
        key = (self.file, self.hash, self.name)  # the callees take part in the projection
        eirs = _PROJECTED.get(key)
        if eirs is None:
            stats.projections += 1
            self._projecting = True
            try:
                eirs = project(checked, self._callee_active)
            except ChoreoError:
                raise
            except Exception as exc:
                raise ChoreoInternalError(f"projection of {self.name} failed: {exc!r}") from exc
            finally:
                self._projecting = False
            _PROJECTED[key] = eirs
        return eirs

    def result_roles(self) -> tuple[str, ...] | None:
        """Roles (and groups) that return the choreography's result.

        Returns:
            Their names, or ``None`` when every role does.
        """
        loc = self._check().result
        if loc is None:
            return None
        return tuple(r for r in self.parties if r in loc or r + "*" in loc)

    def _callee_active(self, name: str, role: str) -> bool:
        obj = self._lookup(name)
        if not isinstance(obj, Choreography) or obj._projecting:
            return True  # being projected (recursion): assume it does something
        return role in obj.active_roles()

    def active_roles(self) -> tuple[str, ...]:
        """Roles that communicate or run local code (the others are never started).

        Returns:
            Their names, in parameter order.
        """
        return tuple(r for r, e in self.endpoints().items() if e.active)

    def project(self, role: str) -> str:
        """The source of ``role``'s endpoint module.

        Args:
            role: a role (or group) of this choreography.

        Returns:
            The generated Python source of the endpoint module.

        Raises:
            CheckError: the choreography has static errors.
            UsageError: ``role`` is not a role of this choreography.
            ChoreoInternalError: the code generator failed (a bug in choreo).
        """
        src = self._sources.get(role)
        if src is not None:
            return src
        eirs = self.endpoints()
        if role not in eirs:
            raise UsageError(
                f"choreography {self.name} has no role {role!r}; its roles are: " + ", ".join(eirs)
            )
        try:
            src = generate(
                eirs[role],
                source_file=self.file.rsplit("/", 1)[-1],
                chash=self.hash,
                ep_name=self._ep_name(),
            )
        except Exception as exc:  # any failure here is a bug in the code generator
            raise ChoreoInternalError(f"generating {self.name}_{role} failed: {exc!r}") from exc
        self._sources[role] = src
        return src

    def _ep_name(self) -> str:
        text = self._parse_source_text()
        name = "ep"
        while re.search(rf"\b{name}\b", text):
            name += "_"
        return name

    def _parse_source_text(self) -> str:
        return "".join(linecache.getlines(self.file, self._fn.__globals__))

    def _endpoint_function(self, role: str) -> EndpointFunction:
        fn = self._functions.get(role)
        if fn is not None:
            return fn
        src = self.project(role)
        fn = load_endpoint(src, self, role)
        self._functions[role] = fn
        return fn

    # -- central run ----------------------------------------------------------
    def bind_inputs(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Map call arguments onto parameters; role parameters default to their own name.

        Args:
            args: the positional arguments of the call.
            kwargs: the keyword arguments of the call.

        Returns:
            Every parameter's value, by parameter name.

        Raises:
            UsageError: an input is missing, unknown or given twice.
        """
        ir = self._parse()[0]
        names = [p.name for p in ir.params]
        if len(args) > len(names):
            raise UsageError(f"{self.name} takes {len(names)} arguments, {len(args)} given")
        bound: dict[str, Any] = dict(zip(names, args, strict=False))
        for k, v in kwargs.items():
            if k not in names:
                raise UsageError(
                    f"{self.name} has no parameter {k!r}; its parameters are: " + ", ".join(names)
                )
            if k in bound:
                raise UsageError(f"{self.name}: parameter {k!r} given twice")
            bound[k] = v
        for p in ir.params:
            if p.name in bound:
                continue
            if p.kind == "role":
                bound[p.name] = Role(p.name)
            elif p.kind == "group":
                raise UsageError(
                    f"{self.name} needs the census of group {p.name!r}: a size "
                    f"({p.name}=3) or a list of member names"
                )
            else:
                raise UsageError(
                    f"{self.name} needs the input {p.name!r} (located at {p.location})"
                )
        return bound

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the choreography centrally (all roles in this process, no messages).

        A choreography with groups takes each group's census (a size or a list of
        member names) as the group's argument, and runs in the IR interpreter of
        ``choreo._central`` (a Python ``with`` block cannot run once per member).
        """
        ir = self._check()
        if ir.groups:
            from choreo._central import central_call

            return central_call(self, **self.bind_inputs(args, kwargs))
        return self._fn(**self.bind_inputs(args, kwargs))


def _calls(stmts: tuple[Stmt, ...]) -> Iterator[Call]:
    for s in stmts:
        if isinstance(s, Call):
            yield s
        elif isinstance(s, If):
            yield from _calls(s.then)
            yield from _calls(s.orelse)
        elif isinstance(s, While | For):
            yield from _calls(s.body)


def load_endpoint(source: str, chor: Choreography, role: str) -> EndpointFunction:
    """Compile an endpoint module's source and bind it to ``chor``'s module globals.

    The source is registered with ``linecache`` so tracebacks show it.
    """
    fname = function_name(chor.name, role)
    filename = f"<choreo {fname} {chor.hash}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict[str, Any] = {}
    exec(compile(source, filename, "exec"), namespace)  # our own generated code
    raw = namespace[fname]
    fn = types.FunctionType(raw.__code__, chor._fn.__globals__, fname, raw.__defaults__)
    return fn


def choreography(fn: Callable[..., Any]) -> Choreography:
    """Declare a choreography: a global program over roles, projected per role.

    Args:
        fn: a function whose parameters are roles (``Role``) and inputs located at
            roles (``At[T, "role"]``).

    Returns:
        A ``Choreography``: call it to run centrally; pass it to ``choreo.run`` to
        run every projected role; ``.project(role)`` shows a role's code.
    """
    return Choreography(fn)
