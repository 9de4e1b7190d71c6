"""Example 1: the bookseller written by hand, without choreo.

Two programs, one per role, talking over TCP on 127.0.0.1. Everything that
choreo derives from one global program must be written and kept in sync by
hand here: who sends what to whom and in which order, how each message is
framed and decoded, and that the seller must be *told* whether the buyer
decided to buy (knowledge of choice) -- forget that message, or send it in
the wrong order, and the two programs deadlock or read the wrong value.

Compare with ``02_bookseller.py``: the same protocol as one choreography.

Run: ``python examples/01_bookseller_by_hand.py TAPL 100``
"""

from __future__ import annotations

import asyncio
import datetime
import json
import sys

CATALOGUE = {"TAPL": 80, "PFPL": 60, "SICP": 45}


def ship_date(title: str) -> str:
    return (datetime.date(2023, 8, 1) + datetime.timedelta(days=len(title) // 2)).isoformat()


async def send(writer: asyncio.StreamWriter, value: object) -> None:
    writer.write(json.dumps(value).encode() + b"\n")  # framing: one JSON value per line
    await writer.drain()


async def recv(reader: asyncio.StreamReader) -> object:
    return json.loads(await reader.readline())


async def seller(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    title = await recv(reader)  # 1. buyer -> seller: the title
    price = CATALOGUE.get(str(title))
    await send(writer, price)  # 2. seller -> buyer: the price
    decision = await recv(reader)  # 3. buyer -> seller: the decision (knowledge of choice!)
    if decision == "buy":
        await send(writer, ship_date(str(title)))  # 4. seller -> buyer: the date
    writer.close()


async def buyer(port: int, title: str, budget: int) -> str | None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await send(writer, title)  # 1.
    price = await recv(reader)  # 2.
    ok = isinstance(price, int) and price <= budget
    await send(writer, "buy" if ok else "no")  # 3. must match the seller's step 3
    date = await recv(reader) if ok else None  # 4.
    writer.close()
    await writer.wait_closed()
    return None if date is None else str(date)


async def main(title: str, budget: int) -> str | None:
    server = await asyncio.start_server(seller, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        return await buyer(port, title, budget)


if __name__ == "__main__":
    title, budget = (sys.argv[1], int(sys.argv[2])) if len(sys.argv) == 3 else ("TAPL", 100)
    print(f"buyer: {asyncio.run(main(title, budget))!r}")
