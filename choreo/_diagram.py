"""Mermaid sequence diagrams of a choreography, or of a recorded trace.

``choreography_diagram`` draws the checked IR, one case per statement:

* a send is an arrow ``sender->>receiver: <expression>`` (a multicast is one
  arrow per receiver; a send to oneself is a self-arrow);
* ``with r:`` is ``Note over r: <its first line>``; a replicated statement is a
  note over every role;
* ``if`` is ``alt <condition> @ <deciders>`` / ``else`` / ``end``, ``while`` is
  ``loop <condition> @ <deciders>`` / ``end``, ``for`` is ``loop for ...`` / ``end``;
* a sub-choreography call is a note over the roles it involves, in a ``rect``
  (it is not inlined); ``return`` is a note over the roles that hold the result.

``trace_diagram`` draws recorded envelopes in timestamp order: DATA as ``->>``
(label and payload summary), SELECT as ``-->>`` (label and branch), ABORT as
``-x``, START and RESULT as ``--)``; each session in its own ``rect`` when the
trace holds several.

Rules kept so that Mermaid's sequence-diagram parser accepts every diagram
(its lexer is case-insensitive, matches keywords before actor names and
without word boundaries, treats ``;`` as a line break and ``#`` as a comment
or an entity code):

* participant ids match ``[A-Za-z_][A-Za-z0-9_]*`` and never start with a
  keyword (``end``, ``note``, ``and``, ``par``, ``opt``, ...); a role whose name
  breaks either rule gets an id ``r_<name>`` and is shown by its name (``as``);
* every text is one line, shortened, with ``#``, ``;``, ``%``, ``<`` and ``>``
  written as Mermaid entity codes (``#35;``, ``#59;``, ``#37;``, ``#lt;``, ``#gt;``),
  control characters as spaces, and a message or note text is never empty.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

from choreo._dsl import Choreography
from choreo._ir import (
    Call,
    For,
    GLocal,
    GSend,
    If,
    Loc,
    Local,
    Replicated,
    Return,
    Send,
    Stmt,
    While,
)
from choreo._trace import TraceRecord, sort_records

__all__ = [
    "KEYWORDS",
    "TEXT_LIMIT",
    "choreography_diagram",
    "mermaid_text",
    "participant_ids",
    "trace_diagram",
]

#: the longest text of an arrow, note or block header (before escaping)
TEXT_LIMIT = 60

#: words Mermaid's sequence-diagram lexer reads as keywords, even as the start of a name
KEYWORDS = (
    "accdescr",
    "acctitle",
    "activate",
    "actor",
    "alt",
    "and",
    "autonumber",
    "box",
    "break",
    "create",
    "critical",
    "deactivate",
    "destroy",
    "details",
    "else",
    "end",
    "left of",
    "link",
    "loop",
    "note",
    "off",
    "opt",
    "option",
    "over",
    "par",
    "participant",
    "properties",
    "rect",
    "right of",
    "sequencediagram",
    "title",
)

_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESCAPES = {"#": "#35;", ";": "#59;", "%": "#37;", "<": "#lt;", ">": "#gt;"}
_INDENT = "    "
_CALL_COLOUR = "rect rgb(240, 240, 255)"
_SESSION_COLOUR = "rect rgb(245, 245, 245)"


def mermaid_text(text: str, limit: int = TEXT_LIMIT) -> str:
    """``text`` made safe for a Mermaid message, note or block header.

    Args:
        text: any text (code, a payload summary, a label).
        limit: the longest result, in characters before escaping.

    Returns:
        One line, at most ``limit`` characters of the original (``...`` marks a cut),
        with the characters Mermaid reads as syntax written as entity codes.
    """
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    if len(flat) > limit:
        flat = flat[: limit - 3].rstrip() + "..."
    return "".join(_ESCAPES.get(c, c) for c in flat)


def participant_ids(names: Iterable[str]) -> dict[str, str]:
    """A Mermaid participant id for every name (see the module docstring).

    Args:
        names: role names, in the order they are declared.

    Returns:
        ``{name: id}``; ids are distinct, and equal to the name when it is safe.
    """
    ids: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        if name in ids:
            continue
        ident = name
        if not _ID.fullmatch(ident) or ident.lower().startswith(KEYWORDS):
            ident = "r_" + re.sub(r"[^A-Za-z0-9_]", "_", name)
        base, n = ident, 1
        while ident in used:
            n += 1
            ident = f"{base}_{n}"
        ids[name] = ident
        used.add(ident)
    return ids


def _declare(ids: dict[str, str]) -> list[str]:
    out = []
    for name, ident in ids.items():
        alias = "" if ident == name else f" as {mermaid_text(name)}"
        out.append(f"{_INDENT}participant {ident}{alias}")
    return out


class _Drawer:
    """Draws the statements of one choreography; ``lines`` is the diagram body."""

    def __init__(self, roles: Sequence[str]) -> None:
        self.roles = tuple(roles)
        self.ids = participant_ids(roles)
        self.lines: list[str] = []

    def emit(self, depth: int, line: str) -> None:
        self.lines.append(_INDENT * depth + line)

    def over(self, roles: Iterable[str]) -> str:
        """``Note over`` target spanning ``roles`` (every role when empty)."""
        wanted = {r.rstrip("*") for r in roles}
        chosen = [r for r in self.roles if r in wanted] or list(self.roles)
        first, last = self.ids[chosen[0]], self.ids[chosen[-1]]
        return first if first == last else f"{first},{last}"

    def note(self, depth: int, roles: Iterable[str], text: str) -> None:
        self.emit(depth, f"Note over {self.over(roles)}: {mermaid_text(text) or '...'}")

    def deciders(self, loc: Loc) -> str:
        if not loc:
            return ""
        return " @ " + ", ".join(r for r in self.roles if r in loc or r + "*" in loc)

    def block(self, depth: int, body: Sequence[Stmt]) -> None:
        for stmt in body:
            self.stmt(depth, stmt)

    def stmt(self, depth: int, s: Stmt) -> None:
        if isinstance(s, Send):
            text = mermaid_text(s.expr.code) or "..."
            for receiver in s.receivers:
                self.emit(depth, f"{self.ids[s.sender]}->>{self.ids[receiver]}: {text}")
        elif isinstance(s, GSend):
            verb = "scatter " if s.scatter else ""
            quorum = f" (quorum={s.quorum.code})" if s.quorum is not None else ""
            for r in s.receivers:
                who = ""
                if s.sender.kind not in ("role", "group") or r.kind not in ("role", "group"):
                    who = f"{s.sender.code} to {r.code}: "
                text = mermaid_text(f"{who}{verb}{s.expr.code}{quorum}") or "..."
                self.emit(depth, f"{self.ids[s.sender.base]}->>{self.ids[r.base]}: {text}")
        elif isinstance(s, Local | GLocal):
            lines = [ln for c in s.codes for ln in c.strip().splitlines()] or ["pass"]
            more = " ..." if len(lines) > 1 else ""
            where = s.role if isinstance(s, Local) else s.where.base
            prefix = ""
            if isinstance(s, GLocal):
                prefix = f"[{s.where.code}{' as ' + s.member if s.member else ''}] "
            self.note(depth, [where], prefix + lines[0].strip() + more)
        elif isinstance(s, Replicated):
            self.note(depth, self.roles, s.code.strip())
        elif isinstance(s, If):
            self.emit(depth, f"alt {mermaid_text(s.cond.code)}{self.deciders(s.deciders)}")
            self.block(depth + 1, s.then)
            if s.orelse:
                self.emit(depth, "else")
                self.block(depth + 1, s.orelse)
            self.emit(depth, "end")
        elif isinstance(s, While):
            self.emit(depth, f"loop {mermaid_text(s.cond.code)}{self.deciders(s.deciders)}")
            self.block(depth + 1, s.body)
            self.emit(depth, "end")
        elif isinstance(s, For):
            self.emit(depth, f"loop {mermaid_text(f'for {s.target.code} in {s.iter.code}')}")
            self.block(depth + 1, s.body)
            self.emit(depth, "end")
        elif isinstance(s, Call):
            args = ", ".join(f"{k}={e.code}" if k else e.code for k, e in s.args)
            call = f"{s.callee_name}({args})"
            text = f"call {s.target} = {call}" if s.target else f"call {call}"
            self.emit(depth, _CALL_COLOUR)
            self.note(depth + 1, [ref.base for _, ref in s.refs] or [o for _, o in s.roles], text)
            self.emit(depth, "end")
        elif isinstance(s, Return):
            text = f"return {s.value.code}" if s.value is not None else "return"
            self.note(depth, s.location or self.roles, text)
        # Poison (names of a rejected statement) never reaches a checked IR


def choreography_diagram(chor: Choreography) -> str:
    """A Mermaid ``sequenceDiagram`` of ``chor`` (see the module docstring).

    Args:
        chor: a ``@choreography``.

    Returns:
        The diagram, ending with a newline.

    Raises:
        CheckError: the choreography has static errors.
    """
    ir = chor._check()
    drawer = _Drawer(ir.parties)
    drawer.block(1, ir.body)
    return "\n".join(["sequenceDiagram", *_declare(drawer.ids), *drawer.lines]) + "\n"


_TRACE_ARROWS = {"DATA": "->>", "SELECT": "-->>", "ABORT": "-x", "START": "--)", "RESULT": "--)"}


def _drawn(records: Sequence[TraceRecord]) -> list[TraceRecord]:
    """The records to draw: every send, and every receive whose send is not in the trace."""

    def key(r: TraceRecord) -> tuple[str, str, str, str, str]:
        return (r.session, r.sender, r.receiver, r.label, r.kind)

    sent = Counter(key(r) for r in records if r.event == "send")
    out = []
    for r in records:
        if r.event == "send":
            out.append(r)
        elif sent[key(r)] > 0:
            sent[key(r)] -= 1
        else:
            out.append(r)
    return out


def trace_diagram(records: Sequence[TraceRecord]) -> str:
    """A Mermaid ``sequenceDiagram`` of recorded envelopes, in timestamp order.

    Args:
        records: trace records (e.g. from ``load_trace``), in any order.

    Returns:
        The diagram, ending with a newline; participants are the roles seen, in
        order of first appearance.
    """
    ordered = _drawn(sort_records(records))
    names: list[str] = []
    sessions: dict[str, list[TraceRecord]] = {}
    for r in ordered:
        names.extend(n for n in (r.sender, r.receiver) if n not in names)
        sessions.setdefault(r.session, []).append(r)
    ids = participant_ids(names)
    lines = ["sequenceDiagram", *_declare(ids)]
    several = len(sessions) > 1
    for session, recs in sessions.items():
        depth = 1
        if several:
            lines.append(_INDENT + _SESSION_COLOUR)
            depth = 2
            seen = [n for n in names if any(n in (r.sender, r.receiver) for r in recs)]
            span = ids[seen[0]] if len(seen) == 1 else f"{ids[seen[0]]},{ids[seen[-1]]}"
            lines.append(_INDENT * depth + f"Note over {span}: session {mermaid_text(session)}")
        for r in recs:
            arrow = _TRACE_ARROWS.get(r.kind, "->>")
            what = r.summary if r.kind != "ABORT" else f"abort: {r.summary}"
            text = mermaid_text(f"{r.label} {what}".strip()) or "..."
            lines.append(_INDENT * depth + f"{ids[r.sender]}{arrow}{ids[r.receiver]}: {text}")
        if several:
            lines.append(_INDENT + "end")
    return "\n".join(lines) + "\n"
