"""Example 4: a replicated key-value store in service mode.

``primary`` and ``backup`` are long-running processes (``choreo serve``); every
client request is one *session* of the ``put`` or ``get`` choreography, played
by the client process (the ``client`` role) against them. The stores are role
state: given once when the server starts, the same dict in every session.

Guarantee: a ``put`` is acknowledged to the client only after the backup and
then the primary applied it, so a ``get`` that starts after a ``put`` was
acknowledged sees its value (or a newer one), at the primary, even if the
backup's process is later lost. Failure model: a crashed primary or backup
makes the running sessions fail within their deadline; no failover here (see
the primary-backup protocol for that).

Run it in three terminals, with a cluster file ``kv.toml`` naming the servers:

    [roles]
    primary = "127.0.0.1:50061"
    backup = "127.0.0.1:50062"

then

    choreo serve examples/04_kv_service.py --role primary --cluster kv.toml --input "pstore={}"
    choreo serve examples/04_kv_service.py --role backup --cluster kv.toml --input "bstore={}"
    python examples/04_kv_service.py kv.toml

The last one prints each session's results, ``{'client': True, 'primary': None,
'backup': None}`` and ``{'client': 1, 'primary': None}``.
"""

from __future__ import annotations

import asyncio
import sys

from choreo import At, Client, Role, choreography


@choreography
def put(
    client: Role,
    primary: Role,
    backup: Role,
    key: At[str, "client"],
    value: At[object, "client"],
    pstore: At[dict, "primary"],
    bstore: At[dict, "backup"],
) -> At[bool, "client"]:
    request = client.send((key, value), to=primary)
    forwarded = primary.send(request, to=backup)
    with backup:
        bstore[forwarded[0]] = forwarded[1]
    ack = backup.send(True, to=primary)
    with primary:
        pstore[request[0]] = request[1]  # the commit point: after the backup has it
    ok = primary.send(ack, to=client)
    return ok


@choreography
def get(
    client: Role, primary: Role, key: At[str, "client"], pstore: At[dict, "primary"]
) -> At[object, "client"]:
    k = client.send(key, to=primary)
    with primary:
        value = pstore.get(k)
    answer = primary.send(value, to=client)
    return answer


async def main(cluster: str) -> None:
    async with Client(cluster) as client:
        print(await client.run(put, key="x", value=1))
        print(await client.run(get, key="x"))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "kv.toml"))
