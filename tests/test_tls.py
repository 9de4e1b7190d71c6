"""TLS and mutual TLS on the gRPC transport, the cluster file's TLS tables, `choreo certs`.

Certificates come from ``choreo._tls`` (a development CA made with
``cryptography``), once per module. Everything binds 127.0.0.1 on port 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from choreo._cli import main as cli_main
from choreo._cluster import load_cluster
from choreo._envelope import Envelope
from choreo._errors import TransportError, UsageError
from choreo._grpc import GrpcTransport
from choreo._proto import transport_pb2 as pb
from choreo._proto import transport_pb2_grpc as pb_grpc
from choreo._tls import TlsConfig, dns_name, issue, make_ca
from tests.test_grpc_transport import Inbox, env, labels, run

pytest.importorskip("cryptography")


@dataclass(frozen=True)
class Pki:
    ca: bytes
    certs: dict[str, tuple[bytes, bytes]]  # role -> (cert, key), all signed by ca
    expired_a: tuple[bytes, bytes]
    foreign_a: tuple[bytes, bytes]  # a certificate for "a" from another CA
    foreign_ca: bytes

    def tls(self, role: str, mutual: bool = True) -> TlsConfig:
        cert, key = self.certs[role]
        return TlsConfig(self.ca, cert, key, mutual=mutual)


@pytest.fixture(scope="module")
def pki() -> Pki:
    ca, ca_key = make_ca()
    certs = {r: issue(ca, ca_key, r, ("127.0.0.1",)) for r in ("a", "b", "c")}
    long_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    expired = issue(ca, ca_key, "a", ("127.0.0.1",), days=1, not_before=long_ago)
    other, other_key = make_ca("another CA")
    foreign = issue(other, other_key, "a", ("127.0.0.1",))
    return Pki(ca, certs, expired, foreign, other)


@contextlib.asynccontextmanager
async def transport(
    role: str, tls: TlsConfig | None, peers: dict[str, str] | None = None, listen: bool = True
) -> AsyncIterator[tuple[GrpcTransport, Inbox]]:
    t = GrpcTransport(
        role, "127.0.0.1:0" if listen else None, peers or {}, tls=tls, connect_timeout=2.0
    )
    box = Inbox()
    await t.start(box.deliver)
    try:
        yield t, box
    finally:
        await t.close(linger=1.0)


async def refused(t: GrpcTransport, receiver: str = "b", timeout: float = 1.0) -> str:
    """Send one envelope that must not get through; the error's text."""
    with pytest.raises(TransportError) as info:
        await t.send(env(99, t.role, receiver), timeout)
    return str(info.value)


async def raw_hello(
    address: str, creds: Any, sender: str, extra: list[Any] | None = None
) -> grpc.StatusCode:
    """Open a Connect stream with ``creds``, say Hello as ``sender``; the final status."""
    options = [("grpc.ssl_target_name_override", dns_name("b"))]
    async with grpc.aio.secure_channel(address, creds, options) as channel:
        call = pb_grpc.TransportStub(channel).Connect()
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
            await call.write(pb.Batch(hello=pb.Hello(sender=sender, receiver="b", incarnation="x")))
            for batch in extra or []:
                await call.write(batch)
            await call.done_writing()
        with contextlib.suppress(grpc.aio.AioRpcError):
            async for _ in call:
                pass
        code: grpc.StatusCode = await call.code()
        return code


# -- sessions ----------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_session_over_tls(pki: Pki) -> None:
    """Server authentication only: a client without a certificate is served."""

    async def body() -> list[Envelope]:
        async with transport("b", pki.tls("b", mutual=False)) as (b, box):
            client = TlsConfig(pki.ca, mutual=False)
            async with transport("a", client, {"b": str(b.address)}, listen=False) as (a, _):
                for i in range(3):
                    await a.send(env(i), 5.0)
                return await box.wait_for(3)

    assert labels(run(body())) == ["f.py:0", "f.py:1", "f.py:2"]


@pytest.mark.timeout(60)
def test_session_over_mutual_tls_both_ways(pki: Pki) -> None:
    async def body() -> tuple[list[Envelope], list[Envelope]]:
        async with transport("b", pki.tls("b")) as (b, box_b):
            async with transport("a", pki.tls("a"), {"b": str(b.address)}) as (a, box_a):
                b.add_peer("a", str(a.address))
                for i in range(3):
                    await a.send(env(i, "a", "b"), 5.0)
                    await b.send(env(10 + i, "b", "a"), 5.0)
                return await box_b.wait_for(3), await box_a.wait_for(3)

    to_b, to_a = run(body())
    assert labels(to_b) == ["f.py:0", "f.py:1", "f.py:2"]
    assert labels(to_a) == ["f.py:10", "f.py:11", "f.py:12"]
    assert {e.sender for e in to_b} == {"a"}


# -- identity ----------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_impersonation_is_refused_every_time_and_disturbs_nobody(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """A holder of a's certificate sending as c: PERMISSION_DENIED, while a and b carry on."""

    async def body() -> tuple[list[grpc.StatusCode], list[str], list[Envelope], Any]:
        async with transport("b", pki.tls("b")) as (b, box):
            addr = str(b.address)
            cert, key = pki.certs["a"]
            creds = grpc.ssl_channel_credentials(pki.ca, key, cert)
            async with transport("a", pki.tls("a"), {"b": addr}, listen=False) as (a, _):
                codes, errors = [], []
                for i in range(5):
                    await a.send(env(i), 5.0)  # the legitimate session, interleaved
                    codes.append(await raw_hello(addr, creds, "c"))
                    codes.append(await raw_hello(addr, creds, "b"))
                    # The same through the transport: a process with a's certificate as role c.
                    async with transport("c", pki.tls("a"), {"b": addr}, listen=False) as (c, _):
                        errors.append(await refused(c, timeout=5.0))
                await a.send(env(5), 5.0)
                got = await box.wait_for(6)
                return codes, errors, list(got), b.stats

    with caplog.at_level(logging.WARNING, logger="choreo.grpc"):
        codes, errors, got, stats = run(body())
    assert codes == [grpc.StatusCode.PERMISSION_DENIED] * 10
    assert len(errors) == 5 and all("PERMISSION_DENIED" in e for e in errors), errors
    assert all("'a' may not send as 'c'" in e for e in errors), errors
    assert labels(got) == [f"f.py:{i}" for i in range(6)]  # in order, none lost or repeated
    assert {e.sender for e in got} == {"a"}
    assert stats.gaps == 0 and stats.duplicates == 0
    denied = [r for r in caplog.records if "may not send as" in r.getMessage()]
    assert len(denied) == 15, "every refusal is logged"


@pytest.mark.timeout(60)
def test_envelopes_must_name_the_certified_sender(pki: Pki) -> None:
    """Past a valid Hello as a, an envelope claiming to come from c ends the stream."""

    async def body() -> tuple[grpc.StatusCode, list[Envelope]]:
        async with transport("b", pki.tls("b")) as (b, box):
            cert, key = pki.certs["a"]
            creds = grpc.ssl_channel_credentials(pki.ca, key, cert)
            forged = pb.Envelope(session="s", sender="c", receiver="b", label="l", seq=1)
            code = await raw_hello(str(b.address), creds, "a", [pb.Batch(envelopes=[forged])])
            return code, list(box.got)

    code, got = run(body())
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert got == []


@pytest.mark.timeout(60)
def test_plaintext_client_against_mutual_tls_is_refused(pki: Pki) -> None:
    async def body() -> tuple[str, str, grpc.StatusCode, list[Envelope]]:
        async with transport("b", pki.tls("b")) as (b, box):
            addr = str(b.address)
            async with transport("a", None, {"b": addr}, listen=False) as (a, _):
                plain = await refused(a)
            no_cert = TlsConfig(pki.ca, mutual=False)  # TLS, but no client certificate
            async with transport("a", no_cert, {"b": addr}, listen=False) as (a, _):
                anonymous = await refused(a)
            async with grpc.aio.insecure_channel(addr) as channel:
                call = pb_grpc.TransportStub(channel).Connect()
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await call.write(pb.Batch(hello=pb.Hello(sender="a", receiver="b")))
                code = await call.code()
            return plain, anonymous, code, list(box.got)

    plain, anonymous, code, got = run(body())
    assert "peer b at" in plain and "could not be reached" in plain
    assert "could not be reached" in anonymous
    assert code == grpc.StatusCode.UNAVAILABLE
    assert got == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("which", ["expired", "unknown_ca"])
def test_bad_client_certificate_is_refused(pki: Pki, which: str) -> None:
    cert, key = pki.expired_a if which == "expired" else pki.foreign_a

    async def body() -> tuple[str, list[Envelope]]:
        async with transport("b", pki.tls("b")) as (b, box):
            bad = TlsConfig(pki.ca, cert, key)
            async with transport("a", bad, {"b": str(b.address)}, listen=False) as (a, _):
                return await refused(a), list(box.got)

    error, got = run(body())
    assert "could not be reached" in error
    assert got == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("which", ["unknown_ca", "wrong_role"])
def test_client_refuses_a_server_it_cannot_trust(pki: Pki, which: str) -> None:
    """A server with a foreign CA's certificate, or with another role's, is not the peer."""
    server = (
        TlsConfig(pki.ca, *pki.foreign_a, mutual=False)
        if which == "unknown_ca"
        else pki.tls("c", mutual=False)
    )

    async def body() -> tuple[str, list[Envelope]]:
        async with transport("b", server) as (b, box):
            client = TlsConfig(pki.ca, mutual=False)
            async with transport("a", client, {"b": str(b.address)}, listen=False) as (a, _):
                return await refused(a), list(box.got)

    error, got = run(body())
    assert "could not be reached" in error
    assert got == []


def test_tls_config_rules(pki: Pki, tmp_path: Path) -> None:
    cert, _ = pki.certs["a"]
    with pytest.raises(UsageError, match="needs a certificate"):
        TlsConfig(pki.ca)  # mutual without a certificate
    with pytest.raises(UsageError, match="needs its key"):
        TlsConfig(pki.ca, cert, None, mutual=False)
    with pytest.raises(UsageError, match="a role that listens needs a certificate"):
        TlsConfig(pki.ca, mutual=False).server_credentials()
    (tmp_path / "x.pem").write_text("not a certificate")
    with pytest.raises(UsageError, match="not in PEM format"):
        TlsConfig.from_files(tmp_path / "x.pem", mutual=False)
    with pytest.raises(UsageError, match="cannot read TLS file"):
        TlsConfig.from_files(tmp_path / "missing.pem", mutual=False)


# -- cluster files and `choreo certs` -------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.timeout(60)
def test_choreo_certs_writes_a_cluster_that_runs_over_mutual_tls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write(
        tmp_path / "cluster.toml",
        '[roles]\na = "127.0.0.1:50001"\nb = "127.0.0.1:50002"\n\n'
        '[groups.g]\n"g.0" = "127.0.0.1:50003"\n\n[defaults]\ntimeout = 3.0\n',
    )
    out = tmp_path / "certs"
    assert cli_main(["certs", str(src), "-o", str(out)]) == 0
    assert "cluster.toml" in capsys.readouterr().out
    assert (out / "ca.key").stat().st_mode & 0o077 == 0, "private keys are private"
    cluster = load_cluster(out / "cluster.toml")
    assert cluster.roles == load_cluster(src).roles and cluster.timeout == 3.0
    assert cluster.groups == {"g": ["g.0"]}
    assert cluster.tls is not None and cluster.tls.mutual
    assert set(cluster.tls.certs) == {"a", "b", "g.0"}
    assert cluster.tls.ca == out / "ca.pem"

    async def body() -> list[Envelope]:
        # port 0 instead of the file's ports; the certificates name roles, not ports
        async with transport("b", cluster.tls_for("b")) as (b, box):
            addr = str(b.address)
            async with transport("g.0", cluster.tls_for("g.0"), {"b": addr}, listen=False) as (
                g,
                _,
            ):
                await g.send(env(1, "g.0", "b"), 5.0)
                async with transport("a", cluster.tls_for("b"), {"b": addr}, listen=False) as (
                    a,
                    _,
                ):
                    impostor = await refused(a)  # b's certificate, sending as a
            assert "PERMISSION_DENIED" in impostor
            return await box.wait_for(1)

    assert [(e.sender, e.label) for e in run(body())] == [("g.0", "f.py:1")]


def test_cluster_tls_tables_are_checked(tmp_path: Path) -> None:
    roles = '[roles]\na = "127.0.0.1:50001"\n'
    cases = {
        "[tls]\nmutual = true\n": "missing `ca`",
        '[tls]\nca = "ca.pem"\nfoo = 1\n': "tls.foo: unknown setting",
        '[tls]\nca = "ca.pem"\nmutual = "yes"\n': "tls.mutual: expected true or false",
        "[tls]\nca = 3\n": "tls.ca: expected a file path",
        '[certs.a]\ncert = "a.pem"\nkey = "a.key"\n': "needs a [tls] table",
        '[tls]\nca = "ca.pem"\n[certs.z]\ncert = "z.pem"\nkey = "z.key"\n': "not a role",
        '[tls]\nca = "ca.pem"\n[certs.a]\ncert = "a.pem"\n': "exactly `cert` and `key`",
    }
    for text, message in cases.items():
        path = write(tmp_path / "c.toml", roles + text)
        with pytest.raises(UsageError, match=message.replace("[", r"\[")):
            load_cluster(path)
    ok = load_cluster(write(tmp_path / "c.toml", roles + '[tls]\nca = "sub/ca.pem"\n'))
    assert ok.tls is not None and ok.tls.ca == tmp_path / "sub" / "ca.pem"
    with pytest.raises(UsageError, match=r"no \[certs.a\] table"):
        ok.tls_for("a")  # mutual by default, and a has no certificate
    assert load_cluster(write(tmp_path / "c.toml", roles)).tls_for("a") is None


@pytest.mark.timeout(60)
def test_service_sessions_over_mutual_tls(tmp_path: Path) -> None:
    """`Server` and `Client` take their TLS from the cluster file; a client needs a certificate."""
    import choreo
    from choreo._loader import load_file
    from choreo._process import free_ports
    from tests.test_service import KV

    port = free_ports(1)[0]
    src = write(
        tmp_path / "kv.toml",
        f'[roles]\nprimary = "127.0.0.1:{port}"\nclient_1 = "127.0.0.1:1"\n',
    )
    assert cli_main(["certs", str(src), "-o", str(tmp_path / "pki")]) == 0
    cluster = load_cluster(tmp_path / "pki" / "cluster.toml")
    served = load_cluster(tmp_path / "pki" / "cluster.toml")
    served.roles.pop("client_1")  # the client is not a served role; its certificate stays
    kv = load_file(KV)

    async def scenario() -> tuple[Any, str]:
        server = choreo.Server(kv, "primary", served, {"pstore": {"x": 1}}, timeout=3)
        await server.start()
        try:
            async with choreo.Client(served, name="client_1", timeout=3) as client:
                result = await client.run(kv.get, key="x")
            with pytest.raises(UsageError) as info:
                choreo.Client(served, name="stranger")  # no certificate for it
            return result, str(info.value)
        finally:
            await server.close()

    assert cluster.tls is not None
    result, error = asyncio.run(scenario())
    assert result["client"] == 1
    assert "no [certs.stranger] table" in error
