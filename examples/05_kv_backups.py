"""Example 5: a key-value store with N backups (a group whose size is chosen at run time).

``backups: Roles`` is a group: its census (how many members, or their names)
is given when a run starts, e.g. ``backups=3`` makes ``backups.0``,
``backups.1`` and ``backups.2``. The ``put`` choreography multicasts the
update to every backup, waits for every backup's acknowledgement (a gather:
``{member: ack}``), and only then applies it at the primary and answers the
client. So every PUT the client sees acknowledged is at every backup.

Failure model: none handled here (a silent backup makes the PUT fail at its
deadline); ``protocols/primary_backup.py`` is the fault-tolerant version.

Run it (three backups by default; all roles in this process):

    python examples/05_kv_backups.py 3

or every role and member as its own process over gRPC:

    choreo up examples/05_kv_backups.py:put --census backups=3 \
        --input key=x --input value=1 --input "pstore={}" --input "bstore={}"
"""

from __future__ import annotations

import sys

import choreo
from choreo import At, Role, Roles, choreography


@choreography
def put(
    client: Role,
    primary: Role,
    backups: Roles,
    key: At[str, "client"],
    value: At[object, "client"],
    pstore: At[dict, "primary"],
    bstore: At[dict, "backups"],
) -> At[str, "client"]:
    request = client.send((key, value), to=primary)
    update = primary.send(request, to=backups)  # multicast: every backup gets the same update
    with backups as b:
        bstore[update[0]] = update[1]  # each backup changes its own store
        ack = b  # this member's name
    acks = backups.send(ack, to=primary)  # gather {member: ack}: waits for every backup
    with primary:
        complete = sorted(acks) == sorted(backups)
        if complete:
            pstore[request[0]] = request[1]  # the commit point: every backup has it
        status = "OK" if complete else "FAILED"
    answer = primary.send(status, to=client)
    return answer


@choreography
def get(
    client: Role, primary: Role, key: At[str, "client"], pstore: At[dict, "primary"]
) -> At[object, "client"]:
    k = client.send(key, to=primary)
    with primary:
        value = pstore.get(k)
    answer = primary.send(value, to=client)
    return answer


def main(n: int) -> None:
    backups = [f"backups.{i}" for i in range(n)]
    pstore: dict[str, object] = {}
    bstores: dict[str, dict[str, object]] = {m: {} for m in backups}  # one store per member
    for key, value in [("x", 1), ("y", 2), ("x", 3)]:
        out = choreo.run(put, key=key, value=value, pstore=pstore, bstore=bstores, backups=backups)
        print(f"put {key}={value}: {out['client']}")
    print("get x:", choreo.run(get, key="x", pstore=pstore)["client"])
    print("primary:", pstore)
    for m in backups:
        print(f"{m}:", bstores[m])


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
