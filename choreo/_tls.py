"""TLS and mutual TLS for the gRPC transport, and a development CA.

Design
------
Every role has a certificate signed by the cluster's CA. Its subject common
name is the role's name, exactly (``backups.0`` for a group member); its
subject alternative names are the DNS name ``dns_name(role)`` (the role name,
lower-cased, ``_`` written ``-``, under ``.choreo``), plus the host of the
role's address (an IP address or a DNS name).

* **TLS** (``mutual = false``): servers present their role's certificate;
  clients check it against the CA *and* check that it names the role they
  meant to reach (the channel's target name is ``dns_name(peer)``), so a
  process at a wrong address cannot pose as the peer.
* **Mutual TLS** (the default when a ``[tls]`` table is present): clients
  present their own role's certificate too, servers require one signed by the
  CA, and a stream is served only if the ``Hello``'s sender equals the
  common name of the client's certificate (``GrpcTransport`` reads it from
  ``context.auth_context()``); every envelope's sender must equal the
  ``Hello``'s. Anything else ends that one stream with ``PERMISSION_DENIED``
  and a warning in the log; other streams are not disturbed.

Certificates are PEM files named in the cluster file (see ``choreo._cluster``).
``make_dev_certs`` (``choreo certs cluster.toml -o DIR``) creates a
development CA and one certificate per role with the ``cryptography`` library
(the optional extra ``choreo[tls]``); running with TLS needs only grpc.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc

from choreo._errors import UsageError

__all__ = ["TlsConfig", "dns_name", "make_dev_certs", "peer_identity"]


def dns_name(role: str) -> str:
    """The DNS name a role's certificate carries and its peers check.

    Args:
        role: a role or group member name.

    Returns:
        ``<role>.choreo``, lower-cased, with ``_`` written ``-``.
    """
    return f"{role.lower().replace('_', '-')}.choreo"


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """The TLS material of one role.

    Attributes:
        ca: PEM of the CA certificate(s) that sign every role's certificate.
        cert: PEM of this role's certificate chain (``None``: a TLS client
            that presents none; only allowed without ``mutual``).
        key: PEM of this role's private key.
        mutual: clients present certificates and servers require them; a
            sender may only send as the role its certificate names.
    """

    ca: bytes
    cert: bytes | None = None
    key: bytes | None = None
    mutual: bool = True

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise UsageError("TLS: a certificate needs its key, and a key its certificate")
        if self.mutual and self.cert is None:
            raise UsageError("mutual TLS: this role needs a certificate and a key")

    @classmethod
    def from_files(
        cls,
        ca: str | os.PathLike[str],
        cert: str | os.PathLike[str] | None = None,
        key: str | os.PathLike[str] | None = None,
        *,
        mutual: bool = True,
    ) -> TlsConfig:
        """Read the PEM files.

        Args:
            ca: the CA certificate file.
            cert: this role's certificate file, if any.
            key: this role's private key file, if any.
            mutual: see the class docstring.

        Returns:
            The configuration.

        Raises:
            UsageError: a file cannot be read, or is not PEM.
        """
        return cls(
            _read_pem(ca),
            None if cert is None else _read_pem(cert),
            None if key is None else _read_pem(key),
            mutual=mutual,
        )

    def server_credentials(self) -> Any:
        """``grpc.ServerCredentials`` for this role's server.

        Raises:
            UsageError: this role has no certificate.
        """
        if self.cert is None or self.key is None:
            raise UsageError("TLS: a role that listens needs a certificate and a key")
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)],
            root_certificates=self.ca if self.mutual else None,
            require_client_auth=self.mutual,
        )

    def channel_credentials(self) -> Any:
        """``grpc.ChannelCredentials`` for streams this role opens."""
        if self.mutual:
            return grpc.ssl_channel_credentials(self.ca, self.key, self.cert)
        return grpc.ssl_channel_credentials(self.ca)

    def without_client_certificate(self) -> TlsConfig:
        """The same trust, as a TLS client that presents no certificate."""
        return replace(self, cert=None, key=None, mutual=False)


def _read_pem(path: str | os.PathLike[str]) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read TLS file {os.fspath(path)}: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in data:
        raise UsageError(f"TLS file {os.fspath(path)} is not in PEM format")
    return data


def peer_identity(context: Any) -> str | None:
    """The role named by the client certificate of an inbound call, if any.

    Args:
        context: a ``grpc.aio.ServicerContext``.

    Returns:
        The certificate's subject common name, or ``None`` when the call
        carries no verified client certificate.
    """
    try:
        auth = context.auth_context()
    except Exception:  # grpc raises odd types on a plaintext call
        return None
    names = auth.get("x509_common_name") or []
    if len(names) != 1:
        return None
    name = names[0]
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)


# -- development certificates ---------------------------------------------------------


def _crypto() -> Any:
    try:
        import cryptography  # noqa: F401
    except ImportError:
        raise UsageError(
            "creating certificates needs the `cryptography` library: pip install 'choreo[tls]'"
        ) from None
    from cryptography import x509

    return x509


def _new_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    data: bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return data


def _cert_pem(cert: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    data: bytes = cert.public_bytes(serialization.Encoding.PEM)
    return data


def make_ca(name: str = "choreo development CA", days: int = 365) -> tuple[bytes, bytes]:
    """A self-signed CA for development.

    Args:
        name: the CA's common name.
        days: validity, from now.

    Returns:
        ``(certificate PEM, private key PEM)``.

    Raises:
        UsageError: ``cryptography`` is not installed.
    """
    x509 = _crypto()
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = _new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return _cert_pem(cert), _key_pem(key)


def issue(
    ca_cert: bytes,
    ca_key: bytes,
    role: str,
    hosts: tuple[str, ...] = (),
    *,
    days: int = 365,
    not_before: datetime.datetime | None = None,
) -> tuple[bytes, bytes]:
    """A certificate for ``role`` signed by the CA (client and server use).

    Args:
        ca_cert: the CA certificate, PEM.
        ca_key: the CA private key, PEM.
        role: the role name: the subject common name.
        hosts: more subject alternative names (IP addresses or DNS names).
        days: validity from ``not_before``.
        not_before: start of validity (default: five minutes ago); a date in
            the past with a short ``days`` makes an expired certificate.

    Returns:
        ``(certificate PEM, private key PEM)``.

    Raises:
        UsageError: ``cryptography`` is not installed.
    """
    x509 = _crypto()
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca = x509.load_pem_x509_certificate(ca_cert)
    signer = serialization.load_pem_private_key(ca_key, password=None)
    key = _new_key()
    start = not_before or datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    sans: list[Any] = [x509.DNSName(dns_name(role))]
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, role)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(signer, hashes.SHA256())
    )
    return _cert_pem(cert), _key_pem(key)


def make_dev_certs(
    cluster_path: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, days: int = 365
) -> Path:
    """Create a development CA, a certificate per role, and a cluster file that uses them.

    Writes into ``out_dir``: ``ca.pem`` and ``ca.key`` (keep the key: it signs
    more certificates), ``<role>.pem`` and ``<role>.key`` for every role and
    group member of the cluster, and ``cluster.toml``: a copy of the cluster
    file with a ``[tls]`` table and a ``[certs.<role>]`` table per role (paths
    relative to it). Private keys are written readable by their owner only.

    Args:
        cluster_path: the cluster file.
        out_dir: the directory to write into (created if needed).
        days: validity of every certificate.

    Returns:
        The path of the new cluster file.

    Raises:
        UsageError: the cluster file is invalid, a file cannot be written, or
            ``cryptography`` is not installed.
    """
    from choreo._cluster import CertPaths, TlsSettings, check_address, load_cluster, write_cluster

    cluster = load_cluster(cluster_path)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        ca_cert, ca_key = make_ca(days=days)
        _write(out / "ca.pem", ca_cert)
        _write(out / "ca.key", ca_key, private=True)
        certs: dict[str, CertPaths] = {}
        for role, address in cluster.roles.items():
            host, _ = check_address(address)
            cert, key = issue(ca_cert, ca_key, role, (host,), days=days)
            _write(out / f"{role}.pem", cert)
            _write(out / f"{role}.key", key, private=True)
            certs[role] = CertPaths(out / f"{role}.pem", out / f"{role}.key")
    except OSError as exc:
        raise UsageError(f"cannot write certificates into {out}: {exc.strerror or exc}") from None
    cluster = replace(cluster, tls=TlsSettings(ca=out / "ca.pem", mutual=True, certs=certs))
    target = out / "cluster.toml"
    write_cluster(target, cluster)
    return target


def _write(path: Path, data: bytes, private: bool = False) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _cmd_certs(args: argparse.Namespace) -> int:
    target = make_dev_certs(args.cluster, args.output, days=args.days)
    print(f"wrote a development CA, one certificate per role, and {target}")
    return 0


def add_certs_command(sub: Any) -> None:
    """Add ``choreo certs CLUSTER -o DIR`` to the command line's subparsers.

    Args:
        sub: the ``argparse`` subparsers object of ``choreo``.
    """
    p = sub.add_parser(
        "certs", help="create a development CA and a certificate per role of a cluster file"
    )
    p.add_argument("cluster", help="the cluster file (TOML)")
    p.add_argument("-o", "--output", required=True, help="directory to write into")
    p.add_argument("--days", type=int, default=365, help="validity of the certificates")
    p.set_defaults(func=_cmd_certs)
