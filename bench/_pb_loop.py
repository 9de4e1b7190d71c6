"""A bench-only choreography: many primary-backup PUTs in one session (``bench/protocols.py``).

``put_loop`` runs ``protocols.primary_backup.put`` (as a sub-choreography) ``LOOP``
times in one session, the client noting the time before each PUT and when the
last answer arrives: the per-PUT cost of choreo's runtime and transport without
a session's START and RESULT envelopes.
"""

# ruff: noqa: F821, UP037
# (pyflakes reads the role name in `At[T, "role"]` as a forward reference, as in protocols/)

from __future__ import annotations

import time

from choreo import At, Role, Roles, choreography
from protocols.primary_backup import put

#: PUTs per session
LOOP = 50

#: the client's ``time.perf_counter()`` before each PUT and after the last
STAMPS: list[float] = []


def stamp(_: object = None) -> None:
    """Client: note the time."""
    STAMPS.append(time.perf_counter())


@choreography
def put_loop(
    client: Role,
    primary: Role,
    backups: Roles,
    key: At[str, "client"],
    value: At[object, "client"],
    pstore: At[dict, "primary"],
    bstore: At[dict, "backups"],
) -> At[tuple, "client"]:
    with client:
        stamp()
        answer = ()
    for _i in range(LOOP):
        answer = put(client, primary, backups, key, value, pstore, bstore)
        with client:
            stamp(answer)
    return answer
