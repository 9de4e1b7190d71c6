"""Every error choreo raises.

    ChoreoError
    ├── CheckError              static errors in a choreography (carries every Diagnostic)
    ├── ChoreoRuntimeError      something went wrong while roles were running
    │   ├── ProtocolError       a message arrived that the endpoint did not expect
    │   │   └── VersionMismatchError   peers run different choreography sources
    │   ├── DeadlineError       a receive (or a send) did not complete in time
    │   ├── PeerFailedError     another role of the session failed; this one gives up
    │   ├── CrashedError        (simulation) this role's process crashed during the session
    │   ├── CodecError          a value could not be encoded, or bytes could not be decoded
    │   ├── TransportError      the network layer failed (connection, limits, TLS)
    │   └── RoleFailedError     a role's own code raised; wraps the original exception
    ├── UsageError              a public API or the command line was called wrongly
    └── ChoreoInternalError     a bug in choreo itself: please report it

Foreign exceptions (grpc, OS, libcst) are translated into these at the
boundary where they occur, so callers only ever need ``except ChoreoError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from choreo._source import Diagnostic

__all__ = [
    "CheckError",
    "ChoreoError",
    "ChoreoInternalError",
    "ChoreoRuntimeError",
    "CodecError",
    "CrashedError",
    "DeadlineError",
    "PeerFailedError",
    "ProtocolError",
    "RoleFailedError",
    "TransportError",
    "UsageError",
    "VersionMismatchError",
]


class ChoreoError(Exception):
    """Base class of every error raised by choreo."""


class CheckError(ChoreoError):
    """A choreography failed the static checks.

    ``diagnostics`` holds every problem found (not just the first); ``str()``
    renders them as ``file:line:col: error: message`` with source and caret.

    Args:
        diagnostics: every problem found, in the order they are reported.
    """

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        self.diagnostics = list(diagnostics)
        super().__init__("\n".join(d.render() for d in self.diagnostics))


class ChoreoRuntimeError(ChoreoError):
    """An error while the roles of a choreography were running."""


class ProtocolError(ChoreoRuntimeError):
    """A message arrived that does not match what the endpoint expects."""


class VersionMismatchError(ProtocolError):
    """Two roles of one session run different choreography sources."""


class DeadlineError(ChoreoRuntimeError):
    """A receive or send did not complete before its deadline."""


class PeerFailedError(ChoreoRuntimeError):
    """Another role of the session failed, so this role stopped too."""


class CrashedError(ChoreoRuntimeError):
    """In a simulation: this role's process crashed while it was running the session."""


class CodecError(ChoreoRuntimeError):
    """A payload could not be encoded or decoded."""


class TransportError(ChoreoRuntimeError):
    """The transport failed (connection refused, message too large, TLS...)."""


class RoleFailedError(ChoreoRuntimeError):
    """A role's own local code raised an exception (kept as ``__cause__``).

    Args:
        role: the role whose code raised.
        message: what ``str()`` of the error says.
    """

    def __init__(self, role: str, message: str) -> None:
        self.role = role
        super().__init__(message)


class UsageError(ChoreoError):
    """The API or the command line was used wrongly (bad input, unknown role...)."""


class ChoreoInternalError(ChoreoError):
    """A bug in choreo itself. Please report it with the choreography that triggered it.

    Args:
        message: what went wrong; the error's text adds that this is a bug in choreo.
    """

    def __init__(self, message: str) -> None:
        super().__init__(f"internal error in choreo (this is a bug, please report it): {message}")
