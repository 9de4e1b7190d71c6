"""Traces: one JSON record per envelope sent or delivered, from any transport.

A ``Node`` calls its ``tracer`` (if one is set) as ``tracer("send", env)`` for
every envelope it sends (including a send to itself and the ABORTs it sends
when its role fails) and as ``tracer("recv", env)`` for every envelope it is
delivered. The hook sits in the runtime, not in a transport, so the in-process,
gRPC and simulated transports are traced alike. ``TraceRecorder`` is such a
tracer: it turns each event into a ``TraceRecord`` and writes it as one line of
JSON (flushed at once, so a crashed role leaves a readable trace) and/or keeps
it in memory.

Record format (one JSON object per line; every field is always present)::

    {"session": "9f1c...", "from": "buyer", "to": "seller",
     "label": "bookseller.py:33", "kind": "DATA", "event": "send",
     "t": 1718000000.123456, "size": 6, "summary": "'TAPL'"}

* ``session``, ``from``, ``to``, ``label``: the envelope's session id, sender,
  receiver and the choreography ``file:line`` it was sent at (``abort`` and
  ``result`` for runtime-generated envelopes).
* ``kind``: ``DATA``, ``SELECT``, ``ABORT``, ``START`` or ``RESULT``.
* ``event``: ``send`` (recorded by the sender, just before the transport takes
  it) or ``recv`` (recorded by the receiver when the envelope reaches it).
* ``t``: seconds, from the recorder's clock: ``time.time`` by default (so the
  traces of several processes merge by timestamp), or any injected clock (a
  simulation passes its virtual clock).
* ``size``: payload bytes.
* ``summary``: a short, printable description of the payload, at most
  ``SUMMARY_LIMIT`` characters: the ``repr`` of the decoded value for DATA,
  START and RESULT, ``then``/``else`` for SELECT, the reason for ABORT. It is
  decoded with the safe codec only, and never raises: undecodable bytes show
  as ``<N bytes>``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from choreo import _codec
from choreo._envelope import Envelope, Kind
from choreo._errors import UsageError

__all__ = [
    "EVENTS",
    "KINDS",
    "SUMMARY_LIMIT",
    "TraceRecord",
    "TraceRecorder",
    "Tracer",
    "load_trace",
    "merge_traces",
    "sort_records",
    "summarize",
    "write_trace",
]

#: what a ``Node`` calls: ``tracer(event, envelope)`` with event ``"send"`` or ``"recv"``
Tracer = Callable[[str, Envelope], None]

#: the ``event`` values of a record
EVENTS = ("send", "recv")
#: the ``kind`` values of a record
KINDS = tuple(k.name for k in Kind)
#: the longest ``summary``, in characters
SUMMARY_LIMIT = 60

_FIELDS: dict[str, tuple[type, ...]] = {
    "session": (str,),
    "from": (str,),
    "to": (str,),
    "label": (str,),
    "kind": (str,),
    "event": (str,),
    "t": (int, float),
    "size": (int,),
    "summary": (str,),
}


@dataclass(frozen=True, slots=True)
class TraceRecord:
    """One envelope event (see the module docstring for the meaning of each field)."""

    session: str
    sender: str
    receiver: str
    label: str
    kind: str
    event: str
    t: float
    size: int
    summary: str

    def to_json(self) -> dict[str, Any]:
        """The record as the JSON object written to a trace file.

        Returns:
            A dict with the keys ``session, from, to, label, kind, event, t, size, summary``.
        """
        return {
            "session": self.session,
            "from": self.sender,
            "to": self.receiver,
            "label": self.label,
            "kind": self.kind,
            "event": self.event,
            "t": self.t,
            "size": self.size,
            "summary": self.summary,
        }

    @classmethod
    def from_json(cls, obj: object, where: str = "trace record") -> TraceRecord:
        """Validate a decoded JSON value and build the record.

        Args:
            obj: the value read from one line.
            where: named in errors (e.g. ``trace.jsonl:3``).

        Returns:
            The record.

        Raises:
            UsageError: a field is missing, unknown or of the wrong type or value.
        """
        if not isinstance(obj, dict):
            raise UsageError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        missing = [k for k in _FIELDS if k not in obj]
        if missing:
            raise UsageError(f"{where}: missing field {missing[0]!r}")
        unknown = sorted(set(obj) - set(_FIELDS))
        if unknown:
            raise UsageError(f"{where}: unknown field {unknown[0]!r}")
        for key, types in _FIELDS.items():
            value = obj[key]
            if isinstance(value, bool) or not isinstance(value, types):
                want = " or ".join(t.__name__ for t in types)
                raise UsageError(f"{where}: field {key!r} must be {want}, got {value!r}")
        if obj["kind"] not in KINDS:
            raise UsageError(
                f"{where}: kind must be one of {', '.join(KINDS)}, got {obj['kind']!r}"
            )
        if obj["event"] not in EVENTS:
            raise UsageError(f"{where}: event must be send or recv, got {obj['event']!r}")
        if obj["size"] < 0 or not math.isfinite(obj["t"]):
            raise UsageError(f"{where}: size must be >= 0 and t finite")
        return cls(
            obj["session"],
            obj["from"],
            obj["to"],
            obj["label"],
            obj["kind"],
            obj["event"],
            float(obj["t"]),
            obj["size"],
            obj["summary"],
        )


def _shorten(text: str, limit: int = SUMMARY_LIMIT) -> str:
    text = "".join(c if c.isprintable() else " " for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def summarize(env: Envelope) -> str:
    """A short, printable summary of ``env``'s payload; never raises.

    Args:
        env: the envelope.

    Returns:
        At most ``SUMMARY_LIMIT`` printable characters.
    """
    try:
        if env.kind == Kind.SELECT:
            return "then" if env.payload == b"\x01" else "else"
        if env.kind == Kind.ABORT:
            return _shorten(env.payload.decode("utf-8", errors="replace"))
        return _shorten(repr(_codec.decode(env.payload)))
    except Exception:  # a summary must never break the run it describes
        return f"<{len(env.payload)} bytes>"


def _kind_name(kind: int) -> str:
    try:
        return Kind(kind).name
    except ValueError:  # a kind this version does not know
        return str(kind)


class TraceRecorder:
    """A tracer that records every envelope event, to a file and/or in memory.

    Give it to ``choreo.run(..., tracer=recorder)``, or set it as a ``Node``'s
    ``tracer``. Use it as a context manager (or call ``close``) to close the file.

    Args:
        path: a file to write one JSON record per line to (truncated first), or
            None to only keep records in memory.
        clock: where ``t`` comes from (``time.time`` by default; a simulation
            passes its virtual clock).
        keep: keep the records in ``records``; by default only when ``path`` is None.

    Raises:
        UsageError: ``path`` cannot be opened for writing.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        clock: Callable[[], float] = time.time,
        keep: bool | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.clock = clock
        self.keep = path is None if keep is None else keep
        #: the records so far (when ``keep``)
        self.records: list[TraceRecord] = []
        self._file: IO[str] | None = None
        if self.path is not None:
            try:
                self._file = self.path.open("w", encoding="utf-8")
            except OSError as exc:
                raise UsageError(f"cannot write the trace {self.path}: {exc}") from None

    def __call__(self, event: str, env: Envelope) -> None:
        """Record one event (the ``Tracer`` signature).

        Args:
            event: ``"send"`` or ``"recv"``.
            env: the envelope.
        """
        record = TraceRecord(
            env.session,
            env.sender,
            env.receiver,
            env.label,
            _kind_name(env.kind),
            event,
            float(self.clock()),
            len(env.payload),
            summarize(env),
        )
        if self.keep:
            self.records.append(record)
        if self._file is not None:
            self._file.write(json.dumps(record.to_json(), ensure_ascii=False) + "\n")
            self._file.flush()

    def close(self) -> None:
        """Close the file (if any); idempotent."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> TraceRecorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def load_trace(path: str | Path) -> list[TraceRecord]:
    """Read and validate a trace file (blank lines are skipped).

    Args:
        path: a JSON-lines trace, as written by ``TraceRecorder``.

    Returns:
        The records, in file order.

    Raises:
        UsageError: the file cannot be read, or a line is not a valid record
            (the error names the file and line).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the trace {path}: {exc}") from None
    records = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise UsageError(f"{path}:{n}: not a JSON trace record: {exc}") from None
        records.append(TraceRecord.from_json(obj, f"{path}:{n}"))
    return records


def sort_records(records: Iterable[TraceRecord]) -> list[TraceRecord]:
    """Records by timestamp; for equal times a send comes before its receive.

    Args:
        records: any records.

    Returns:
        A new sorted list (stable otherwise).
    """
    return sorted(records, key=lambda r: (r.t, r.event != "send"))


def merge_traces(paths: Sequence[str | Path], out: str | Path) -> list[TraceRecord]:
    """Merge several trace files into one, sorted by timestamp.

    Args:
        paths: the trace files to merge (every one must be valid).
        out: the file to write (replaced).

    Returns:
        The merged records.

    Raises:
        UsageError: a trace cannot be read or is malformed, or ``out`` cannot be written.
    """
    merged = sort_records(r for p in paths for r in load_trace(p))
    write_trace(merged, out)
    return merged


def write_trace(records: Iterable[TraceRecord], out: str | Path) -> None:
    """Write ``records`` as a JSON-lines trace.

    Args:
        records: the records, in the order to write.
        out: the file to write (replaced).

    Raises:
        UsageError: ``out`` cannot be written.
    """
    try:
        with Path(out).open("w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r.to_json(), ensure_ascii=False) + "\n")
    except OSError as exc:
        raise UsageError(f"cannot write the trace {out}: {exc}") from None
