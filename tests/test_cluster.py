"""Cluster files: good files load, every malformed one is a UsageError naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from choreo._cluster import Cluster, check_address, load_cluster, write_cluster
from choreo._errors import UsageError

GOOD = """\
[roles]
buyer = "127.0.0.1:50051"
seller = "127.0.0.1:50052"

[groups.backups]
"backups.0" = "127.0.0.1:50060"
"backups.1" = "127.0.0.1:50061"

[defaults]
timeout = 10.0
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cluster.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_good_file_loads(tmp_path: Path) -> None:
    c = load_cluster(write(tmp_path, GOOD))
    assert c.roles == {
        "buyer": "127.0.0.1:50051",
        "seller": "127.0.0.1:50052",
        "backups.0": "127.0.0.1:50060",
        "backups.1": "127.0.0.1:50061",
    }
    assert c.groups == {"backups": ["backups.0", "backups.1"]}
    assert c.timeout == 10.0


def test_minimal_file_has_no_timeout(tmp_path: Path) -> None:
    c = load_cluster(write(tmp_path, '[roles]\na = "localhost:1"\nb = "[::1]:65535"\n'))
    assert c == Cluster(roles={"a": "localhost:1", "b": "[::1]:65535"}, timeout=None)


def test_integer_timeout_becomes_float(tmp_path: Path) -> None:
    c = load_cluster(write(tmp_path, '[roles]\na = "h:1"\n[defaults]\ntimeout = 3\n'))
    assert c.timeout == 3.0 and isinstance(c.timeout, float)


def test_round_trip_through_write_cluster(tmp_path: Path) -> None:
    c = load_cluster(write(tmp_path, GOOD))
    out = tmp_path / "again.toml"
    write_cluster(out, c)
    assert load_cluster(out) == c
    plain = Cluster(roles={"x": "10.0.0.1:7000"}, timeout=None)
    write_cluster(out, plain)
    assert load_cluster(out) == plain
    assert "[defaults]" not in out.read_text()


def test_write_cluster_refuses_what_would_not_load(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="already used"):
        write_cluster(tmp_path / "c.toml", Cluster(roles={"a": "h:1", "b": "h:1"}))
    assert not (tmp_path / "c.toml").exists()


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ('roles = "x"\n', ["roles", "table"]),
        ('[roles]\nbuyer = "127.0.0.1"\n', ["roles.buyer", "host:port"]),
        ('[roles]\nbuyer = "127.0.0.1:http"\n', ["roles.buyer", "not a number"]),
        ('[roles]\nbuyer = "127.0.0.1:0"\n', ["roles.buyer", "outside 1..65535"]),
        ('[roles]\nbuyer = "127.0.0.1:70000"\n', ["roles.buyer", "outside 1..65535"]),
        ('[roles]\nbuyer = ":50051"\n', ["roles.buyer", "host:port"]),
        ('[roles]\nbuyer = "::1:50051"\n', ["roles.buyer", "brackets"]),
        ("[roles]\nbuyer = 50051\n", ["roles.buyer", "int"]),
        ('[roles]\nbuyer = "h:1"\nseller = "h:1"\n', ["roles.seller", "already used by 'buyer'"]),
        ('[roles.buyer]\nx = "h:1"\n', ["roles.buyer", "table"]),
        ('[roles]\na = "h:1"\n[rolez]\nb = "h:2"\n', ["unknown section", "rolez"]),
        ('[roles]\na = "h:1"\n[defaults]\ntimeout = "soon"\n', ["defaults.timeout", "number"]),
        ('[roles]\na = "h:1"\n[defaults]\ntimeout = -1\n', ["defaults.timeout", "positive"]),
        ('[roles]\na = "h:1"\n[defaults]\ntimeout = true\n', ["defaults.timeout", "number"]),
        ('[roles]\na = "h:1"\n[defaults]\nretries = 3\n', ["defaults.retries", "unknown setting"]),
        ('[roles]\na = "h:1"\n[groups]\nbackups = "h:2"\n', ["groups.backups", "table"]),
        ('[roles]\na = "h:1"\n[groups.a]\n"a.0" = "h:2"\n', ["groups.a", "also a role"]),
        ('[roles]\na = "h:1"\n[groups.g]\n', ["groups.g", "no members"]),
        ('[roles]\n"bad name" = "h:1"\n', ["roles.bad name", "not a valid role name"]),
        ("[roles]\n", ["no roles"]),
        ("", ["missing the [roles] table"]),
        ('[roles\na = "h:1"\n', ["not a valid TOML file"]),
    ],
)
def test_malformed_files_name_file_and_key(tmp_path: Path, text: str, fragments: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(UsageError) as info:
        load_cluster(path)
    msg = str(info.value)
    assert str(path) in msg
    for fragment in fragments:
        assert fragment in msg, msg
    # No raw tomllib (or KeyError...) traceback chained behind the message.
    err = info.value
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"cannot read cluster file .*nope\.toml"):
        load_cluster(tmp_path / "nope.toml")


def test_check_address() -> None:
    assert check_address("example.org:443") == ("example.org", 443)
    assert check_address("[::1]:8080") == ("::1", 8080)
    assert check_address("127.0.0.1:0", allow_port_zero=True) == ("127.0.0.1", 0)
    for bad in ("127.0.0.1:0", "nohost", "h:", "[::1:80", "h h:1", "h:-1"):
        with pytest.raises(UsageError):
            check_address(bad)
