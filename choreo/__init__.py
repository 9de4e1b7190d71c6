"""choreo: choreographic programming for Python.

Write a distributed protocol once, as a global program over roles; choreo
checks it, projects one endpoint program per role, and runs the endpoints
in-process or as separate processes over gRPC.
"""

from choreo._codec import register
from choreo._dsl import At, Choreography, Role, Roles, choreography
from choreo._endpoint import majority
from choreo._errors import (
    CheckError,
    ChoreoError,
    ChoreoInternalError,
    ChoreoRuntimeError,
    CodecError,
    CrashedError,
    DeadlineError,
    PeerFailedError,
    ProtocolError,
    RoleFailedError,
    TransportError,
    UsageError,
    VersionMismatchError,
)
from choreo._loader import module_from_source
from choreo._run import run, run_async
from choreo._service import Client, Server
from choreo._trace import TraceRecord, TraceRecorder, load_trace

__all__ = [
    "At",
    "CheckError",
    "ChoreoError",
    "ChoreoInternalError",
    "ChoreoRuntimeError",
    "Choreography",
    "Client",
    "CodecError",
    "CrashedError",
    "DeadlineError",
    "PeerFailedError",
    "ProtocolError",
    "Role",
    "RoleFailedError",
    "Roles",
    "Server",
    "TraceRecord",
    "TraceRecorder",
    "TransportError",
    "UsageError",
    "VersionMismatchError",
    "choreography",
    "load_trace",
    "majority",
    "module_from_source",
    "register",
    "run",
    "run_async",
]

__version__ = "0.1.0"
