"""The unit every transport moves: an ``Envelope``.

Every message of every session is one envelope. Transports never look inside
``payload`` (bytes produced by the codec); they only route on ``receiver``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Envelope", "Kind"]


class Kind(enum.IntEnum):
    """What an envelope is for."""

    DATA = 0  # a value sent by `r.send(e, to=s)`
    SELECT = 1  # knowledge of choice: payload is b"\x01" (then / continue) or b"\x00"
    ABORT = 2  # the sender's role failed in this session; payload is a UTF-8 reason
    START = 3  # service mode: ask a role process to join a new session (see _service)
    RESULT = 4  # service mode: a role's result, sent back to the session's client


@dataclass(slots=True)
class Envelope:
    """One message between two roles of one session.

    Attributes:
        session: session id; sessions never see each other's envelopes.
        sender: role name of the sender (for a group member, ``group.i``).
        receiver: role name of the receiver.
        label: where in the choreography it was sent, ``file.py:line``.
        kind: a ``Kind``.
        payload: codec-encoded bytes.
        chash: short hash of the top-level choreography's source; a receiver
            running a different source rejects the envelope.
    """

    session: str
    sender: str
    receiver: str
    label: str
    kind: Kind
    payload: bytes
    chash: str = ""
