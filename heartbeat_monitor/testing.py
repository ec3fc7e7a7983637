"""An in-memory transport for tests: a hub's peers without sockets.

``MemoryTransport().connect(peer)`` returns a :class:`MemoryClient` that sends
what a real client would (``beat()``, ``deliver(raw)``, ``disconnect()``) and
records what the server sent it (``inbox``) and why it was closed (``closed``).
Like httpx's ``MockTransport``: the same hub code runs as with a real transport.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import ClassVar, final

import anyio
import anyio.abc

from ._episode import Link, Reason
from ._hub import PeerHub

__all__ = ("MemoryClient", "MemoryTransport")


@final
class MemoryClient:
    """A peer of :class:`MemoryTransport`: ``send`` what a real client would, read ``inbox``."""

    transport = "memory"

    def __init__(
        self,
        hub: PeerHub,
        peer: Hashable,
        *,
        shared: bool = False,
        meta: Mapping[str, object] | None = None,
    ) -> None:
        self.peer = peer
        self._hub = hub
        #: Every message the server sent to this peer, in order.
        self.inbox: list[Mapping[str, object]] = []
        #: The reason the server closed this connection, once it has.
        self.closed: str | None = None
        #: The hub's link for this connection (``None``: the hub refused it).
        self.link: Link | None = None  # the hub may close this connection inside open()
        self.link = hub.open(self, peer, shared=shared, meta=meta)

    def send(self, message: Mapping[str, object]) -> None:  # server -> peer
        if self.closed is None:
            self.inbox.append(message)

    def close(self, reason: str) -> None:  # server -> peer: the connection ends
        if self.closed is None:
            self.closed = reason
            if self.link is not None:
                self._hub.close(self.link, Reason.TRANSPORT_CLOSE)

    def deliver(self, data: bytes | str) -> bool:
        """Peer -> server: one raw wire message; ``True`` while the link stays open."""
        return self.link is not None and self._hub.receive(self.link, data)

    def beat(self) -> bool:
        """Peer -> server: a heartbeat; ``True`` if it counted."""
        return self.link is not None and self._hub.beat(self.link)

    def disconnect(self, reason: str = Reason.CLIENT_DISCONNECT) -> None:
        """The peer closes its end."""
        if self.closed is None:
            self.closed = reason
            if self.link is not None:
                self._hub.close(self.link, reason)


@final
class MemoryTransport:
    """A transport with no I/O: ``connect(peer)`` returns a :class:`MemoryClient`."""

    name: ClassVar[str] = "memory"

    def __init__(self) -> None:
        self.hub: PeerHub | None = None

    async def serve(
        self,
        hub: PeerHub,
        *,
        task_status: anyio.abc.TaskStatus[tuple[str, int]] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        self.hub = hub
        task_status.started(("memory", 0))
        await anyio.sleep_forever()

    def connect(
        self, peer: Hashable, *, shared: bool = False, meta: Mapping[str, object] | None = None
    ) -> MemoryClient:
        if self.hub is None:
            raise RuntimeError("MemoryTransport.serve() has not started")
        return MemoryClient(self.hub, peer, shared=shared, meta=meta)
