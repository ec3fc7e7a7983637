"""The hub's side of python-socketio: a connection per sid, the audience, the outbox.

The hub asks a connection to ``send`` or ``close`` and its audience to
``tell`` the others; all three return at once. Here they become jobs in the
monitor's callback runner (:class:`Outbox`): one ``sio.emit`` to the rooms
concerned, a ``sio.disconnect``, or for bad input an immediate engine.io close.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Mapping
from typing import Any, ClassVar, Final, final

import socketio
import structlog

from heartbeat_monitor import CallbackRunner, Connection, Link, Reason

from . import _internals, _presence

__all__ = ("Outbox", "SidConnection", "SocketIOAudience", "SocketIOStats")

_logger = structlog.get_logger("heartbeat_monitor")
#: Presence goes to this node's clients only (another node tells its own): no message queue.
_LOCAL: Final = frozenset({"presence_diff", "presence_state"})


@final
class SocketIOStats:
    """What the adapter saw (plain ints); refusals and ends are the hub's (``hub.refused``)."""

    __slots__ = ("beats", "beats_limited", "connections", "spoofed", "unknown_peer")

    def __init__(self) -> None:
        #: Heartbeats the monitor was told of.
        self.beats = 0
        #: Heartbeats dropped (closer than ``min_beat_gap``).
        self.beats_limited = 0
        #: Events from a sid the adapter does not track (never connected, or already gone).
        self.unknown_peer = 0
        #: Client events named ``connect`` / ``disconnect`` (dropped: only the server says so).
        self.spoofed = 0
        #: Connections accepted in the watched namespace.
        self.connections = 0

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"SocketIOStats({fields})"


@final
class Outbox:
    """python-socketio work the hub asks for, run as jobs of the monitor's runner."""

    __slots__ = ("closing", "connection", "links", "namespace", "runner", "sio", "told")

    def __init__(self, sio: socketio.AsyncServer, namespace: str, runner: CallbackRunner) -> None:
        self.sio = sio
        self.namespace = namespace
        self.runner = runner
        #: sid -> its link, for every connection the hub knows.
        self.links: dict[str, Link] = {}
        #: sid -> the reason the hub closed it with (until python-socketio's disconnect).
        self.told: dict[str, str] = {}
        #: The adapter is closing: it disconnects everyone itself.
        self.closing = False
        #: ``connection(sid)``: a new :class:`SidConnection` of this outbox (a subclass that
        #: holds the outbox, so that each connection holds only its sid: issue 15's memory).
        self.connection: type[SidConnection] = type(
            "SidConnection", (SidConnection,), {"__slots__": (), "outbox": self}
        )

    def emit(self, event: str, payload: dict[str, object], to: Any, skip: tuple[str, ...]) -> None:
        local = event in _LOCAL and to and not skip  # presence: at once, no task per recipient
        if local and _presence.emit_now(self.sio, self.namespace, event, payload, to, self.runner):
            return
        self.runner.spawn(self._emit, event, payload, to, skip)

    def disconnect(self, sid: str, reason: str) -> None:
        if not self.closing:
            self.runner.spawn(self.disconnect_now, sid, reason)

    async def _emit(
        self, event: str, payload: dict[str, object], to: Any, skip: tuple[str, ...]
    ) -> None:
        try:
            await self.sio.emit(
                event,
                payload,
                to=to,
                skip_sid=list(skip),
                namespace=self.namespace,
                ignore_queue=event in _LOCAL,
            )
        except Exception:
            _logger.exception("heartbeat_monitor.socketio.notify_failed", event_name=event)

    async def disconnect_now(self, sid: str, reason: str) -> None:
        """Bad input: an engine.io close at once; anything else as python-socketio does it.

        A fenced cluster node (``"node isolated"``) closes the transport too, so that
        the client reconnects (a Socket.IO client does not after a disconnect packet).
        """
        namespace = self.namespace
        try:
            if reason.startswith(Reason.REFUSED) or reason == Reason.NODE_ISOLATED:
                eio_sid = self.sio.manager.eio_sid_from_sid(sid, namespace)
                if eio_sid is not None:
                    await _internals.close_now(self.sio, eio_sid)
            else:
                await self.sio.disconnect(sid, namespace=namespace)
        except Exception:
            _logger.exception("heartbeat_monitor.socketio.disconnect_failed", sid=sid)
        # A sid python-socketio no longer knows never reaches the disconnect event: drop it.
        if not self.sio.manager.is_connected(sid, namespace):
            self.links.pop(sid, None)
            self.told.pop(sid, None)


class SidConnection:
    """One Socket.IO connection, as the hub sees it: made by ``outbox.connection(sid)``."""

    transport: Final = "socketio"
    #: Set on the subclass each :class:`Outbox` makes (one per adapter).
    outbox: ClassVar[Outbox]
    __slots__ = ("sid",)

    def __init__(self, sid: str) -> None:
        self.sid = sid

    @property
    def told(self) -> str | None:
        """The reason the hub closed it with, once it has (its disconnect handler sees it)."""
        return self.outbox.told.get(self.sid)

    def send(self, message: Mapping[str, object]) -> None:
        payload = {key: value for key, value in message.items() if key != "type"}
        self.outbox.emit(str(message["type"]), payload, self.sid, ())

    def close(self, reason: str) -> None:
        told = self.outbox.told
        if self.sid not in told:
            told[self.sid] = reason
            self.outbox.disconnect(self.sid, reason)

    def __repr__(self) -> str:
        return f"<socketio connection {self.sid}>"


@final
class SocketIOAudience:
    """The hub's "tell the others": one ``sio.emit`` to the rooms, skipping the peer itself."""

    __slots__ = ("_outbox",)

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox

    def tell(
        self,
        event: str,
        payload: Mapping[str, object],
        *,
        rooms: Collection[Hashable] | None,
        exclude: Collection[Connection],
    ) -> None:
        skip = tuple(c.sid for c in exclude if isinstance(c, SidConnection))
        to = None if rooms is None else list(rooms)
        self._outbox.emit(event, dict(payload), to, skip)

    def send(
        self, event: str, payload: Mapping[str, object], connections: Collection[Connection]
    ) -> None:
        """One ``sio.emit`` to these sids: python-socketio encodes the payload once."""
        sids = [c.sid for c in connections if isinstance(c, SidConnection)]
        if sids:
            self._outbox.emit(event, dict(payload), sids, ())
