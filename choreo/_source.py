"""Source positions and diagnostics.

A ``Span`` is a 1-based line and 0-based column range in a file, as libcst's
``PositionProvider`` reports it (columns are shown 1-based to users, like
compilers do). A ``Diagnostic`` renders as::

    protocols/bad.py:12:5: error: `price` is located at seller, not at buyer
        ok = price < budget
             ^~~~~
    hint: send it first: `price = seller.send(price, to=buyer)`
"""

from __future__ import annotations

import linecache
from dataclasses import dataclass, field

__all__ = ["Diagnostic", "Span"]


@dataclass(frozen=True, slots=True)
class Span:
    """A range of source text: ``line``/``col`` start, ``end_line``/``end_col`` end."""

    file: str
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col + 1}"

    def ref(self) -> str:
        """Short ``basename:line`` reference, used in labels and breadcrumbs."""
        return f"{self.file.rsplit('/', 1)[-1]}:{self.line}"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One static error, with where it is and how to fix it."""

    span: Span
    message: str
    hint: str | None = None
    notes: tuple[tuple[Span, str], ...] = field(default=())

    def render(self) -> str:
        """``file:line:col: error: message``, the source line, a caret, notes and hint."""
        out = [f"{self.span}: error: {self.message}"]
        out.extend(_snippet(self.span))
        for span, note in self.notes:
            out.append(f"{span}: note: {note}")
            out.extend(_snippet(span))
        if self.hint:
            out.append(f"hint: {self.hint}")
        return "\n".join(out)


def _snippet(span: Span) -> list[str]:
    text = linecache.getline(span.file, span.line).rstrip("\n")
    if not text:
        return []
    width = (span.end_col - span.col) if span.end_line == span.line else len(text) - span.col
    width = max(1, width)
    return ["    " + text, "    " + " " * span.col + "^" + "~" * (width - 1)]
