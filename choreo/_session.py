"""Sans-IO core of the runtime: matching the envelopes of one session at one role.

Theory of operation
-------------------
A projected endpoint is a sequential program: at any moment it waits for at
most one thing, "the next envelope from peer P, labelled L, of kind K". The
choreography fixes, for every ordered pair of roles, the order in which
envelopes are sent; transports deliver every ordered pair in FIFO order. So
the k-th envelope from P to us *must* be the k-th receive from P in our
projection: we keep one FIFO queue per sender and check, on receipt, that the
envelope at the head of P's queue carries the label and kind we expect. A
mismatch cannot happen between correctly projected endpoints of the same
source; it means version skew or a bug, and is reported as a
``ProtocolError`` naming both labels rather than delivered as a wrong value.

Envelopes of other sessions never reach this object (the ``Node`` routes by
session id). Every envelope carries the hash of the session's choreography
source; a different hash is a ``VersionMismatchError`` at the receiver, which
also answers with an ABORT so that the sender fails with the same error.

An ABORT from a peer marks the session failed; envelopes that arrived before
it are still delivered (the peer may have sent everything we need before it
failed), and only a receive that would otherwise wait raises. An ABORT from a
group *member* (its reason starts with ``MEMBER_PREFIX``) fails only what
waits for that member: groups are where protocols keep redundancy (quorum and
timeout gathers go on without a failed member), so one member's failure must
not end the session for everyone.

No sockets, no event loop, no clock in here: ``SessionCore`` consumes
envelopes (``deliver``) and answers questions (``take``). The asyncio side
lives in ``_endpoint``.
"""

from __future__ import annotations

from collections import deque

from choreo._envelope import Envelope, Kind
from choreo._errors import (
    ChoreoRuntimeError,
    PeerFailedError,
    ProtocolError,
    VersionMismatchError,
)

__all__ = ["MEMBER_PREFIX", "MISMATCH_PREFIX", "SessionCore"]

#: ABORT payloads that start with this mean "you and I run different sources".
MISMATCH_PREFIX = "version-mismatch: "
#: ABORT payloads that start with this come from a failed group member.
MEMBER_PREFIX = "member-failed: "


class SessionCore:
    """Inbound state of one session at one role.

    Args:
        session: the session id.
        role: the role (or group member) this core belongs to.
        chash: hash of the choreography source this role runs.
    """

    __slots__ = (
        "_queues",
        "_skip",
        "chash",
        "failed",
        "failure",
        "late",
        "reject",
        "role",
        "session",
    )

    def __init__(self, session: str, role: str, chash: str) -> None:
        self.session = session
        self.role = role
        self.chash = chash
        self._queues: dict[str, deque[Envelope]] = {}
        #: set when the session can no longer complete here (peer abort, skew)
        self.failure: ChoreoRuntimeError | None = None
        #: envelopes whose sender must be told about a version mismatch
        self.reject: list[Envelope] = []
        #: per sender, labels of replies a quorum gather completed without: dropped on arrival
        self._skip: dict[str, deque[str]] = {}
        #: late quorum replies dropped
        self.late = 0
        #: group members that failed (their ABORT), and why
        self.failed: dict[str, ChoreoRuntimeError] = {}

    def deliver(self, env: Envelope) -> None:
        """Accept one envelope addressed to this session and role."""
        if env.kind == Kind.ABORT:
            reason = env.payload.decode("utf-8", "replace")
            if reason.startswith(MEMBER_PREFIX):
                self.failed.setdefault(
                    env.sender,
                    PeerFailedError(
                        f"{self.role}: group member {env.sender} failed in session "
                        f"{self.session}: {reason[len(MEMBER_PREFIX) :]}"
                    ),
                )
                return
            if self.failure is None:
                if reason.startswith(MISMATCH_PREFIX):
                    self.failure = VersionMismatchError(
                        f"{self.role}: peer {env.sender} rejected our messages in session "
                        f"{self.session}: {reason[len(MISMATCH_PREFIX) :]}"
                    )
                else:
                    self.failure = PeerFailedError(
                        f"{self.role}: peer {env.sender} failed in session {self.session}: {reason}"
                    )
            return
        if env.chash != self.chash:
            if self.failure is None:
                self.failure = VersionMismatchError(
                    f"{self.role} runs choreography source {self.chash} but {env.sender} "
                    f"sent a message from source {env.chash} (label {env.label}) in session "
                    f"{self.session}: every role must run the same version"
                )
            self.reject.append(env)
            return
        queue = self._queues.get(env.sender)
        if queue is None:
            queue = self._queues[env.sender] = deque()
        skip = self._skip.get(env.sender)
        if skip and not queue and env.kind == Kind.DATA and env.label == skip[0]:
            # the reply a completed quorum gather did not wait for: it is the next
            # envelope from this sender (FIFO), and is never delivered to a later receive
            skip.popleft()
            self.late += 1
            return
        queue.append(env)

    def skip(self, sender: str, label: str) -> None:
        """Drop (and count) the next envelope from ``sender`` labelled ``label`` when it comes.

        Called when a quorum gather completes without ``sender``'s reply. If the
        reply is already queued it is dropped now.
        """
        queue = self._queues.get(sender)
        if queue and queue[0].kind == Kind.DATA and queue[0].label == label:
            queue.popleft()
            self.late += 1
            return
        self._skip.setdefault(sender, deque()).append(label)

    def take(self, sender: str, label: str, kind: Kind) -> Envelope | None:
        """The next envelope from ``sender`` if one is there, else ``None``.

        Raises:
            ProtocolError: the next envelope from ``sender`` is not the expected one.
            ChoreoRuntimeError: nothing is queued and the session has failed.
        """
        queue = self._queues.get(sender)
        if queue:
            env = queue.popleft()
            if env.label != label or env.kind != kind:
                raise ProtocolError(
                    f"{self.role} expected {Kind(kind).name} {label} from {sender} but received "
                    f"{Kind(env.kind).name} {env.label} in session {self.session}"
                )
            return env
        if self.failure is not None:
            raise self.failure
        if sender in self.failed:
            raise self.failed[sender]
        return None

    def has_from(self, sender: str) -> bool:
        """Whether an envelope from ``sender`` is queued (or the session, or it, failed)."""
        return bool(self._queues.get(sender)) or self.failure is not None or sender in self.failed

    def unread(self) -> int:
        """How many delivered envelopes were never taken."""
        return sum(len(q) for q in self._queues.values())
