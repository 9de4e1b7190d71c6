"""The transport interface, and the in-process transport.

A transport only moves envelopes: ``send(envelope)``, a callback for every
envelope received, ``close()``. It never interprets labels, payloads or
sessions. Foreign exceptions are translated at this boundary into
``TransportError``.

Contract every transport keeps (checked by ``tests/test_transport_conformance.py``):

* envelopes from one sender to one receiver arrive in the order sent (FIFO
  per ordered pair); nothing is duplicated;
* ``send`` returns once the envelope is handed over (queued for the peer), and
  does not wait for the receiver's program to take it;
* ``send`` to a peer that cannot be reached raises ``TransportError`` (after
  retrying until ``timeout`` seconds have passed, for network transports; an
  envelope accepted just before a peer vanished is reported by the next send);
* a payload over the transport's maximum (4 MiB by default) is rejected with
  ``TransportError`` at the sender;
* ``deliver`` is called on the event loop thread, one envelope at a time.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

from choreo._envelope import Envelope
from choreo._errors import TransportError

__all__ = ["DEFAULT_MAX_MESSAGE_SIZE", "Deliver", "LocalNetwork", "LocalTransport", "Transport"]

Deliver = Callable[[Envelope], None]

#: the largest payload of one envelope every transport accepts by default (4 MiB)
DEFAULT_MAX_MESSAGE_SIZE = 4 * 1024 * 1024


class Transport(abc.ABC):
    """Moves envelopes between role processes (or role tasks)."""

    @abc.abstractmethod
    async def start(self, deliver: Deliver) -> None:
        """Begin receiving; ``deliver`` is called for every inbound envelope."""

    @abc.abstractmethod
    async def send(self, env: Envelope, timeout: float) -> None:
        """Hand ``env`` over for delivery to ``env.receiver``.

        Raises:
            TransportError: the receiver cannot be reached within ``timeout`` seconds.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop receiving and release every resource; idempotent."""


class LocalNetwork:
    """An in-process network: every role registered here is one ``LocalTransport``.

    Delivery is a direct call into the receiver's callback, so FIFO per pair holds
    trivially. (Tracing happens at the ``Node``, the same on every transport.)
    """

    def __init__(self, *, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self._inboxes: dict[str, Deliver] = {}
        self.max_message_size = max_message_size

    def transport(self, role: str) -> LocalTransport:
        """A transport that receives the envelopes addressed to ``role``."""
        return LocalTransport(self, role)

    def _send(self, env: Envelope) -> None:
        if len(env.payload) > self.max_message_size:
            raise TransportError(
                f"message {env.label} from {env.sender} to {env.receiver} has a payload of "
                f"{len(env.payload)} bytes, over the limit of {self.max_message_size} bytes"
            )
        deliver = self._inboxes.get(env.receiver)
        if deliver is None:
            raise TransportError(
                f"no role {env.receiver!r} on this in-process network "
                f"(message {env.label} from {env.sender})"
            )
        deliver(env)


class LocalTransport(Transport):
    """One role's end of a ``LocalNetwork``."""

    def __init__(self, network: LocalNetwork, role: str) -> None:
        self._network = network
        self.role = role

    async def start(self, deliver: Deliver) -> None:
        self._network._inboxes[self.role] = deliver

    async def send(self, env: Envelope, timeout: float) -> None:
        self._network._send(env)

    async def close(self) -> None:
        self._network._inboxes.pop(self.role, None)
