"""Single-decree Paxos hand-written on grpc.aio, raw bytes: ``bench/protocols.py``'s baseline.

The flow of ``protocols/paxos.py``'s ``propose``, without choreo:

* the proposer (``Proposer.propose``, in the measuring process) writes
  Prepare(n) on its long-lived bidi stream to each of the round's ``k``
  acceptors (all the writes issued at once), and waits for the first majority
  of answers; each acceptor promises ``n`` if it is above its promise and
  answers Promise(n, its promise, its last accepted ``(ballot, value)``);
* if every answer of that majority promised ``n``, the proposer picks the
  value of the highest-numbered accepted proposal among them, else its own,
  writes Accept(n, v) to each of the ``k`` acceptors and waits for the first
  majority of answers; each acceptor accepts unless it promised higher, and
  writes its answer first to the learner (its own long-lived bidi stream to
  the learner process), then to the proposer;
* the learner learns ``v`` when a majority of the round's acceptors accepted
  ``(n, v)``; the proposer knows ``v`` is chosen when a majority accepted
  (``("chosen", v, n)``), or returns ``("retry", None, highest promise)``.

Acceptors hold ``promised``/``accepted`` in memory (long-running processes);
the learner holds ``learned`` and the counts of its last 64 ``(n, v)``.

Messages (``struct``; a ballot ``(round, proposer id)`` is ``<qq``, 16 bytes;
every answer repeats the ballot of the request it answers, bytes 1-16):

* Prepare ``P n``; Promise ``R n promised 0`` or ``R n promised 1 b v``;
* Accept ``A n k v`` (``k``: the round's acceptor count, 1 byte, which the
  acceptor passes on to the learner); Accepted ``K n v``; refused ``F n promised``;
* acceptor -> learner: ``k`` then the acceptor's answer to Accept.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from typing import Any

HOST = "127.0.0.1"
START_TIMEOUT = 60.0
ACCEPTOR_PATH = "/bench.Paxos/Acceptor"
LEARNER_PATH = "/bench.Paxos/Learner"
BALLOT = struct.Struct("<qq")
Ballot = tuple[int, int]


def _serve(service: str, method: str, handler: Any) -> Any:
    import grpc

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                service, {method: grpc.stream_stream_rpc_method_handler(handler)}
            ),
        )
    )
    return server


async def acceptor(learner_port: int) -> None:
    """An acceptor process: serves the proposer's stream, writes to the learner's."""
    import grpc

    promised: Ballot | None = None
    accepted: tuple[Ballot, bytes] | None = None
    channel = grpc.aio.insecure_channel(f"{HOST}:{learner_port}")
    await asyncio.wait_for(channel.channel_ready(), START_TIMEOUT)
    learner = channel.stream_stream(LEARNER_PATH)()  # long-lived

    async def serve(requests: Any, context: Any) -> None:
        nonlocal promised, accepted
        async for msg in requests:
            n: Ballot = BALLOT.unpack_from(msg, 1)
            if msg[:1] == b"P":  # Prepare(n)
                if promised is None or n > promised:
                    promised = n
                reply = b"R" + msg[1:17] + BALLOT.pack(*promised)
                if accepted is None:
                    reply += b"\0"
                else:
                    reply += b"\1" + BALLOT.pack(*accepted[0]) + accepted[1]
                await context.write(reply)
            else:  # Accept(n, v)
                if promised is not None and n < promised:
                    reply = b"F" + msg[1:17] + BALLOT.pack(*promised)
                else:
                    promised = n
                    accepted = (n, msg[18:])
                    reply = b"K" + msg[1:17] + msg[18:]
                await learner.write(msg[17:18] + reply)  # to the learner, then the proposer
                await context.write(reply)

    server = _serve("bench.Paxos", "Acceptor", serve)
    port = server.add_insecure_port(f"{HOST}:0")
    await server.start()
    print(f"READY {port}", flush=True)
    try:
        await server.wait_for_termination()
    finally:
        await channel.close()


async def learner() -> None:
    """The learner process: one stream from each acceptor; learns at a majority."""
    learned: bytes | None = None
    counts: dict[bytes, int] = {}  # ballot + value -> acceptors that accepted them

    async def serve(requests: Any, context: Any) -> None:
        nonlocal learned
        async for msg in requests:
            if msg[1:2] != b"K":
                continue  # a refusal
            key = msg[2:]
            count = counts[key] = counts.get(key, 0) + 1
            if 2 * count > msg[0] >= 2 * (count - 1):  # a majority of the round, once
                if learned is None:
                    learned = key[16:]
            while len(counts) > 64:
                del counts[next(iter(counts))]

    server = _serve("bench.Paxos", "Learner", serve)
    port = server.add_insecure_port(f"{HOST}:0")
    await server.start()
    print(f"READY {port}", flush=True)
    await server.wait_for_termination()


class Proposer:
    """The proposer: a long-lived bidi stream to each acceptor, one reader task per stream."""

    def __init__(self, ports: list[int], timeout: float) -> None:
        self.ports = ports
        self.timeout = timeout
        self.channels: list[Any] = []
        self.calls: list[Any] = []
        self.readers: list[asyncio.Task[None]] = []
        self.want: tuple[bytes, bytes] | None = None  # (answer kinds, ballot) of the phase
        self.replies: list[bytes] = []
        self.quorum = 0
        self.done: asyncio.Future[None] | None = None

    async def open(self) -> None:
        import grpc

        for port in self.ports:
            channel = grpc.aio.insecure_channel(f"{HOST}:{port}")
            self.channels.append(channel)
            await asyncio.wait_for(channel.channel_ready(), START_TIMEOUT)
            self.calls.append(channel.stream_stream(ACCEPTOR_PATH)())
        self.readers = [asyncio.create_task(self._read(call)) for call in self.calls]

    async def close(self) -> None:
        for task in self.readers:
            task.cancel()
        for call in self.calls:
            call.cancel()
        for channel in self.channels:
            with contextlib.suppress(Exception):
                await channel.close()

    async def _read(self, call: Any) -> None:
        try:
            async for msg in call:
                want = self.want
                if want is None or msg[:1] not in want[0] or msg[1:17] != want[1]:
                    continue  # an answer of an earlier phase, after its majority
                self.replies.append(msg)
                if len(self.replies) == self.quorum and self.done is not None:
                    self.done.set_result(None)
        except Exception as exc:  # the stream broke: fail the phase waiting for it
            if self.done is not None and not self.done.done():
                self.done.set_exception(exc)
            raise

    async def _phase(self, msg: bytes, k: int, kinds: bytes, mine: bytes) -> list[bytes]:
        """Write ``msg`` to the first ``k`` acceptors; the first majority of their answers."""
        self.want, self.replies, self.quorum = (kinds, mine), [], k // 2 + 1
        self.done = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(self.timeout):
                await asyncio.gather(*(call.write(msg) for call in self.calls[:k]))
                await self.done
            return self.replies[: self.quorum]
        finally:
            self.want, self.done = None, None

    async def propose(self, value: bytes, ballot: Ballot, k: int) -> tuple[Any, ...]:
        """One attempt with ballot ``ballot`` against the first ``k`` acceptors."""
        mine = BALLOT.pack(*ballot)
        promises = await self._phase(b"P" + mine, k, b"R", mine)
        granted = all(p[17:33] == mine for p in promises)
        best: tuple[Ballot, bytes] | None = None
        for p in promises:
            if p[33]:
                b: Ballot = BALLOT.unpack_from(p, 34)
                if best is None or b > best[0]:
                    best = (b, p[50:])
        v = value if best is None else best[1]
        if not granted:
            return ("retry", None, max(BALLOT.unpack_from(p, 17) for p in promises))
        votes = await self._phase(b"A" + mine + bytes([k]) + v, k, b"KF", mine)
        refusals = [BALLOT.unpack_from(x, 17) for x in votes if x[:1] == b"F"]
        if refusals:
            return ("retry", None, max(refusals))
        return ("chosen", v, ballot)
