"""Cluster files: where every role of a run listens.

A cluster file is TOML::

    transport = "tcp"           # optional: "grpc" (the default) or "tcp" (choreo._tcp)

    [roles]
    buyer = "127.0.0.1:50051"
    seller = "127.0.0.1:50052"

    [groups.backups]            # optional: a group's members and their addresses
    "backups.0" = "127.0.0.1:50060"
    "backups.1" = "127.0.0.1:50061"

    [defaults]
    timeout = 10.0              # optional run-wide receive deadline, in seconds

    [limits]                    # optional (docs/running.md, "Limits")
    max_sessions = 1000         # sessions one served role runs at once
    max_buffered = 10000        # envelopes per peer received and not taken yet
    max_buffered_bytes = 67108864

    [tls]                       # optional: TLS on every stream (see choreo._tls)
    ca = "certs/ca.pem"         # the CA that signs every role's certificate
    mutual = true               # mutual TLS (the default): roles prove who they are

    [certs.buyer]               # one per role (and group member) that runs with TLS
    cert = "certs/buyer.pem"
    key = "certs/buyer.key"

Rules the loader enforces, each reported as a ``UsageError`` that names the
file and the offending key (never a raw ``tomllib`` traceback):

* the top level holds only the tables ``roles``, ``groups``, ``defaults``,
  ``tls`` and ``certs``, and the key ``transport`` (``"grpc"`` or ``"tcp"``;
  every role of a cluster uses the same); ``roles`` is required (it may be
  empty only if some group has members);
* every address is ``host:port`` with a non-empty host (an IPv6 host in
  brackets, ``[::1]:50051``) and a port in 1..65535;
* a group member's name is any role name (``<group>.<index>`` when the
  census is a size, the given names when it is a list);
* no name appears twice (a member is also a role name in the flat mapping) and
  no two names share an address: two roles on one port would receive each
  other's envelopes;
* ``defaults`` knows only ``timeout``, a positive number;
* ``limits`` knows ``max_sessions``, ``max_buffered`` and
  ``max_buffered_bytes``, each a positive integer;
* ``tls`` knows ``ca`` (a path, required) and ``mutual`` (a boolean, default
  true); ``certs`` holds one ``[certs.NAME]`` table per role of the cluster,
  each with exactly ``cert`` and ``key`` (paths); ``certs`` needs ``tls``.
  Relative paths are relative to the cluster file's directory. With mutual
  TLS every role needs its certificate (checked when a role's TLS
  configuration is built, ``Cluster.tls_for``, not at load: a client that
  only reads the addresses does not need one).

``Cluster.roles`` is the flat mapping ``name -> address`` the transport needs
(group members included); ``Cluster.groups`` keeps which members belong to
which group, so ``write_cluster`` writes back the same layout.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from choreo._errors import UsageError
from choreo._tls import TlsConfig

if TYPE_CHECKING:
    from choreo._grpc import GrpcTransport
    from choreo._tcp import TcpTransport

__all__ = [
    "TRANSPORTS",
    "CertPaths",
    "Cluster",
    "TlsSettings",
    "check_address",
    "load_cluster",
    "make_transport",
    "write_cluster",
]

_SECTIONS = ("roles", "groups", "defaults", "tls", "certs", "transport", "limits")
#: the transports a cluster file may name (``transport = "..."``); the first is the default
TRANSPORTS = ("grpc", "tcp")
_DEFAULT_KEYS = ("timeout",)
#: the keys of ``[limits]``, each a positive integer (see ``choreo._endpoint.Node``)
_LIMIT_KEYS = ("max_sessions", "max_buffered", "max_buffered_bytes")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")


@dataclass(frozen=True, slots=True)
class CertPaths:
    """Where one role's certificate and private key are (PEM files)."""

    cert: Path
    key: Path


@dataclass(slots=True)
class TlsSettings:
    """The ``[tls]`` and ``[certs.*]`` tables of a cluster file.

    Attributes:
        ca: the CA certificate file.
        mutual: mutual TLS (roles present certificates, and may only send as
            the role their certificate names).
        certs: role -> its certificate and key files.
    """

    ca: Path
    mutual: bool = True
    certs: dict[str, CertPaths] = field(default_factory=dict)


@dataclass(slots=True)
class Cluster:
    """Every role's address, and the run-wide defaults.

    Attributes:
        roles: role (or group member) name -> ``"host:port"``; group members
            are included.
        timeout: run-wide receive deadline in seconds, or ``None`` if the file
            does not set one.
        groups: group name -> names of its members (each also in ``roles``).
        tls: the TLS settings, or ``None`` for plaintext.
        transport: ``"grpc"`` or ``"tcp"``: how every role of the cluster talks.
    """

    roles: dict[str, str]
    timeout: float | None = None
    groups: dict[str, list[str]] = field(default_factory=dict)
    tls: TlsSettings | None = None
    transport: str = "grpc"
    #: the ``[limits]`` table: ``max_sessions`` (per served role), ``max_buffered``
    #: and ``max_buffered_bytes`` (per peer); absent keys keep ``Node``'s defaults
    limits: dict[str, int] = field(default_factory=dict)

    def tls_for(self, role: str | None) -> TlsConfig | None:
        """The TLS configuration a role runs with (``None``: plaintext).

        Args:
            role: the role, or ``None`` for a client that presents no certificate.

        Returns:
            The configuration, with the PEM files read.

        Raises:
            UsageError: mutual TLS and ``role`` has no ``[certs.ROLE]`` table,
                or a file cannot be read.
        """
        if self.tls is None:
            return None
        paths = self.tls.certs.get(role) if role is not None else None
        if paths is None:
            if self.tls.mutual:
                raise UsageError(
                    f"the cluster uses mutual TLS, but there is no [certs.{role}] table "
                    "with this role's certificate and key"
                )
            return TlsConfig.from_files(self.tls.ca, mutual=False)
        return TlsConfig.from_files(self.tls.ca, paths.cert, paths.key, mutual=self.tls.mutual)


def make_transport(
    kind: str,
    role: str,
    listen: str | None,
    peers: Mapping[str, str] | None = None,
    **options: Any,
) -> GrpcTransport | TcpTransport:
    """A transport of the kind a cluster file names, built the same way for either kind.

    Args:
        kind: ``"grpc"`` or ``"tcp"``.
        role: the role the transport receives for and sends as.
        listen: ``"host:port"`` to serve on, or ``None``.
        peers: peer role -> ``"host:port"``.
        options: keyword arguments both constructors take (``tls``,
            ``learn_peers``, ``max_message_size``, ``connect_timeout``, ...).

    Raises:
        UsageError: ``kind`` is not a known transport, or an address is malformed.
    """
    if kind == "tcp":
        from choreo._tcp import TcpTransport

        return TcpTransport(role, listen, peers, **options)
    if kind == "grpc":
        from choreo._grpc import GrpcTransport

        return GrpcTransport(role, listen, peers, **options)
    raise UsageError(f"unknown transport {kind!r} (known: {', '.join(TRANSPORTS)})")


def check_address(
    address: object, where: str = "address", *, allow_port_zero: bool = False
) -> tuple[str, int]:
    """Split ``"host:port"`` into host and port, checking both.

    Args:
        address: the text to check.
        where: what to call it in the error message (e.g. ``"cluster.toml: roles.buyer"``).
        allow_port_zero: accept port 0 ("any free port", for an address to listen on).

    Returns:
        ``(host, port)``; an IPv6 host is returned without its brackets.

    Raises:
        UsageError: ``address`` is not a string of the form ``host:port``.
    """
    if not isinstance(address, str):
        raise UsageError(
            f"{where}: expected an address string 'host:port', got {type(address).__name__} "
            f"{address!r}"
        )
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text:
        raise UsageError(f"{where}: {address!r} is not an address of the form 'host:port'")
    if host.startswith("["):
        if not host.endswith("]") or len(host) < 3:
            raise UsageError(f"{where}: {address!r} has a malformed IPv6 host")
        host = host[1:-1]
    elif ":" in host:
        raise UsageError(
            f"{where}: {address!r}: write an IPv6 host in brackets, e.g. '[::1]:{port_text}'"
        )
    if any(c.isspace() for c in host):
        raise UsageError(f"{where}: {address!r} has white space in its host")
    if not port_text.isdigit():
        raise UsageError(f"{where}: {address!r} has port {port_text!r}, which is not a number")
    port = int(port_text)
    if not (0 if allow_port_zero else 1) <= port <= 65535:
        raise UsageError(f"{where}: {address!r} has port {port}, outside 1..65535")
    return host, port


def load_cluster(path: str | os.PathLike[str]) -> Cluster:
    """Read and check a cluster file.

    Args:
        path: the TOML file.

    Returns:
        The cluster it describes.

    Raises:
        UsageError: the file cannot be read, is not valid TOML, or breaks one
            of the rules in this module's docstring; the message names the
            file and the key.
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise UsageError(f"cannot read cluster file {name}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{name}: not a valid TOML file: {exc}") from None
    return _parse(name, data)


def _parse(name: str, data: Mapping[str, Any]) -> Cluster:
    for key in data:
        if key not in _SECTIONS:
            raise UsageError(
                f"{name}: unknown section or key {key!r} (expected {', '.join(_SECTIONS)})"
            )
    transport = data.get("transport", TRANSPORTS[0])
    if transport not in TRANSPORTS:
        raise UsageError(
            f"{name}: transport: expected one of {', '.join(map(repr, TRANSPORTS))}, "
            f"got {transport!r}"
        )
    roles: dict[str, str] = {}
    owner: dict[str, str] = {}  # address -> the name that claimed it first

    def add(member: str, address: object, key: str) -> None:
        if not _NAME.match(member):
            raise UsageError(f"{name}: {key}: {member!r} is not a valid role name")
        host, port = check_address(address, f"{name}: {key}")
        if member in roles:
            raise UsageError(f"{name}: {key}: role {member!r} is listed twice")
        canonical = f"{host.lower()}:{port}"
        if canonical in owner:
            raise UsageError(
                f"{name}: {key}: address {address!r} is already used by {owner[canonical]!r}; "
                "every role needs its own address"
            )
        owner[canonical] = member
        roles[member] = str(address)

    section = data.get("roles")
    if section is None:
        if "groups" not in data:
            raise UsageError(f"{name}: missing the [roles] table (role = 'host:port' lines)")
        section = {}
    if not isinstance(section, dict):
        raise UsageError(f"{name}: roles: expected a table of role = 'host:port', got a value")
    for role, address in section.items():
        if isinstance(address, dict):
            raise UsageError(
                f"{name}: roles.{role}: expected an address string 'host:port', got a table "
                "(groups go under [groups.NAME])"
            )
        add(role, address, f"roles.{role}")

    groups: dict[str, list[str]] = {}
    section = data.get("groups", {})
    if not isinstance(section, dict):
        raise UsageError(f"{name}: groups: expected a table of [groups.NAME] tables")
    for group, members in section.items():
        if not isinstance(members, dict):
            raise UsageError(
                f"{name}: groups.{group}: expected a table of member = 'host:port', got "
                f"{type(members).__name__} {members!r}"
            )
        if not _NAME.match(group) or "." in group:
            raise UsageError(f"{name}: groups.{group}: {group!r} is not a valid group name")
        if group in roles:
            raise UsageError(f"{name}: groups.{group}: {group!r} is also a role in [roles]")
        groups[group] = []
        for member, address in members.items():
            key = f'groups.{group}."{member}"'
            add(member, address, key)
            groups[group].append(member)
        if not groups[group]:
            raise UsageError(f"{name}: groups.{group}: the group has no members")

    timeout: float | None = None
    section = data.get("defaults", {})
    if not isinstance(section, dict):
        raise UsageError(f"{name}: defaults: expected a table")
    for key, value in section.items():
        if key not in _DEFAULT_KEYS:
            raise UsageError(
                f"{name}: defaults.{key}: unknown setting (known: {', '.join(_DEFAULT_KEYS)})"
            )
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UsageError(
                f"{name}: defaults.timeout: expected a number of seconds, got {value!r}"
            )
        if not math.isfinite(value) or value <= 0:
            raise UsageError(f"{name}: defaults.timeout: must be a positive number, got {value!r}")
        timeout = float(value)

    if not roles:
        raise UsageError(f"{name}: the cluster has no roles")
    tls = _parse_tls(name, data, roles)
    cluster = Cluster(roles=roles, timeout=timeout, groups=groups, tls=tls, transport=transport)
    cluster.limits = _parse_limits(name, data)
    return cluster


def _parse_limits(name: str, data: Mapping[str, Any]) -> dict[str, int]:
    section = data.get("limits", {})
    if not isinstance(section, dict):
        raise UsageError(f"{name}: limits: expected a table")
    limits: dict[str, int] = {}
    for key, value in section.items():
        if key not in _LIMIT_KEYS:
            raise UsageError(
                f"{name}: limits.{key}: unknown setting (known: {', '.join(_LIMIT_KEYS)})"
            )
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise UsageError(f"{name}: limits.{key}: expected a positive integer, got {value!r}")
        limits[key] = value
    return limits


def _path(name: str, key: str, value: object) -> Path:
    if not isinstance(value, str) or not value:
        raise UsageError(f"{name}: {key}: expected a file path string, got {value!r}")
    p = Path(value)
    return p if p.is_absolute() else Path(os.path.dirname(os.path.abspath(name))) / p


def _parse_tls(name: str, data: Mapping[str, Any], roles: Mapping[str, str]) -> TlsSettings | None:
    section = data.get("tls")
    certs_section = data.get("certs")
    if section is None:
        if certs_section is not None:
            raise UsageError(f"{name}: certs: a [certs.ROLE] table needs a [tls] table with `ca`")
        return None
    if not isinstance(section, dict):
        raise UsageError(f"{name}: tls: expected a table")
    for key in section:
        if key not in ("ca", "mutual"):
            raise UsageError(f"{name}: tls.{key}: unknown setting (known: ca, mutual)")
    if "ca" not in section:
        raise UsageError(f"{name}: tls: missing `ca`, the CA certificate file")
    mutual = section.get("mutual", True)
    if not isinstance(mutual, bool):
        raise UsageError(f"{name}: tls.mutual: expected true or false, got {mutual!r}")
    tls = TlsSettings(ca=_path(name, "tls.ca", section["ca"]), mutual=mutual)
    if certs_section is None:
        return tls
    if not isinstance(certs_section, dict):
        raise UsageError(f"{name}: certs: expected [certs.ROLE] tables")
    for role, table in certs_section.items():
        key = f"certs.{_quote(role) if '.' in role else role}"
        if role not in roles:
            raise UsageError(f"{name}: {key}: {role!r} is not a role of this cluster")
        if not isinstance(table, dict) or set(table) != {"cert", "key"}:
            raise UsageError(f"{name}: {key}: expected a table with exactly `cert` and `key`")
        tls.certs[role] = CertPaths(
            _path(name, f"{key}.cert", table["cert"]), _path(name, f"{key}.key", table["key"])
        )
    return tls


def _quote(text: str) -> str:
    """A TOML basic string (used for keys too, so any name round-trips)."""
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def write_cluster(path: str | os.PathLike[str], cluster: Cluster) -> None:
    """Write ``cluster`` as a cluster file that ``load_cluster`` reads back equal.

    Group members (names listed in ``cluster.groups``) go under their
    ``[groups.NAME]`` table, every other role under ``[roles]``.

    Args:
        path: the file to write (replaced if it exists).
        cluster: what to write.

    Raises:
        UsageError: ``cluster`` breaks the rules ``load_cluster`` enforces (so
            that a file written here always loads), or the file cannot be written.
    """
    name = os.fspath(path)
    members = {m for ms in cluster.groups.values() for m in ms}
    lines = []
    if cluster.transport != TRANSPORTS[0]:
        lines += [f"transport = {_quote(cluster.transport)}", ""]
    lines.append("[roles]")
    lines += [
        f"{_quote(role)} = {_quote(addr)}"
        for role, addr in cluster.roles.items()
        if role not in members
    ]
    for group, ms in cluster.groups.items():
        lines += ["", f"[groups.{_quote(group)}]"]
        for m in ms:
            if m not in cluster.roles:
                raise UsageError(f"{name}: group {group!r} member {m!r} has no address in roles")
            lines.append(f"{_quote(m)} = {_quote(cluster.roles[m])}")
    if cluster.timeout is not None:
        lines += ["", "[defaults]", f"timeout = {float(cluster.timeout)!r}"]
    if cluster.limits:
        lines += ["", "[limits]", *(f"{k} = {int(v)}" for k, v in cluster.limits.items())]
    if cluster.tls is not None:
        here = os.path.dirname(os.path.abspath(name))

        def rel(p: Path) -> str:
            return _quote(os.path.relpath(os.path.abspath(p), here))

        lines += ["", "[tls]", f"ca = {rel(cluster.tls.ca)}"]
        lines.append(f"mutual = {'true' if cluster.tls.mutual else 'false'}")
        for role, paths in cluster.tls.certs.items():
            lines += ["", f"[certs.{_quote(role)}]", f"cert = {rel(paths.cert)}"]
            lines.append(f"key = {rel(paths.key)}")
    text = "\n".join(lines) + "\n"
    _parse(name, tomllib.loads(text))  # refuse to write what would not load
    try:
        with open(name, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        raise UsageError(f"cannot write cluster file {name}: {exc.strerror or exc}") from None
