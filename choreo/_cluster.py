"""Cluster files: where every role of a run listens.

A cluster file is TOML::

    [roles]
    buyer = "127.0.0.1:50051"
    seller = "127.0.0.1:50052"

    [groups.backups]            # optional: a group's members and their addresses
    "backups.0" = "127.0.0.1:50060"
    "backups.1" = "127.0.0.1:50061"

    [defaults]
    timeout = 10.0              # optional run-wide receive deadline, in seconds

Rules the loader enforces, each reported as a ``UsageError`` that names the
file and the offending key (never a raw ``tomllib`` traceback):

* the top level holds only the tables ``roles``, ``groups`` and ``defaults``;
  ``roles`` is required (it may be empty only if some group has members);
* every address is ``host:port`` with a non-empty host (an IPv6 host in
  brackets, ``[::1]:50051``) and a port in 1..65535;
* a group member's name is ``<group>.<index>`` or at least starts with
  ``<group>.``, so that it cannot be confused with a plain role;
* no name appears twice (a member is also a role name in the flat mapping) and
  no two names share an address: two roles on one port would receive each
  other's envelopes;
* ``defaults`` knows only ``timeout``, a positive number.

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
from typing import Any

from choreo._errors import UsageError

__all__ = ["Cluster", "check_address", "load_cluster", "write_cluster"]

_SECTIONS = ("roles", "groups", "defaults")
_DEFAULT_KEYS = ("timeout",)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")


@dataclass(slots=True)
class Cluster:
    """Every role's address, and the run-wide defaults.

    Attributes:
        roles: role (or group member) name -> ``"host:port"``; group members
            are included.
        timeout: run-wide receive deadline in seconds, or ``None`` if the file
            does not set one.
        groups: group name -> names of its members (each also in ``roles``).
    """

    roles: dict[str, str]
    timeout: float | None = None
    groups: dict[str, list[str]] = field(default_factory=dict)


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
            if not member.startswith(group + "."):
                raise UsageError(
                    f"{name}: {key}: a member of group {group!r} must be named "
                    f"'{group}.<index>', e.g. '{group}.0'"
                )
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
    return Cluster(roles=roles, timeout=timeout, groups=groups)


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
    lines = ["[roles]"]
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
    text = "\n".join(lines) + "\n"
    _parse(name, tomllib.loads(text))  # refuse to write what would not load
    try:
        with open(name, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        raise UsageError(f"cannot write cluster file {name}: {exc.strerror or exc}") from None
