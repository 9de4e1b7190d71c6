"""The public surface is exactly what ``choreo.__all__`` says."""

import choreo


def test_all_is_pinned() -> None:
    assert choreo.__all__ == [
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


def test_every_exported_name_exists_and_is_public() -> None:
    for name in choreo.__all__:
        member = getattr(choreo, name)
        assert not name.startswith("_")
        if name != "At":  # At is typing.Annotated, so that type checkers understand it
            assert getattr(member, "__module__", "choreo").startswith("choreo")


def test_every_error_derives_from_choreo_error() -> None:
    errors = [getattr(choreo, n) for n in choreo.__all__ if n.endswith("Error")]
    assert errors and all(issubclass(e, choreo.ChoreoError) for e in errors)
