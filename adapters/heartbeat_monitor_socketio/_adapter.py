"""Heartbeat liveness for the clients of a python-socketio ``AsyncServer``: a translation.

Theory of operation
===================

The adapter decides nothing about a peer's life: the core's
:class:`~heartbeat_monitor.PeerHub` does, as for every transport. The adapter
translates python-socketio into hub calls and back:

==================================  ===============================================
python-socketio                     hub
==================================  ===============================================
``connect`` (accepted by the app)   ``hub.open(connection, peer, shared=identity)``
the heartbeat event                 ``hub.beat(link)`` (one dict lookup, no payload read)
``disconnect`` (any reason)         ``hub.close(link, reason)``
a frame it cannot take              ``hub.refuse(link, reason)``
``enter_room`` / ``leave_room``     ``hub.join`` / ``hub.leave``
the ``presence_sync`` event         ``hub.sync(link, room)``
==================================  ===============================================

and the hub's answers into python-socketio: a connection's ``close`` is
``sio.disconnect(sid)`` (or, for bad input, an immediate engine.io close);
"tell the others" is one ``sio.emit`` to the rooms concerned. The user's
``disconnect`` handler sees the hub's reason (``"heartbeat timeout"``,
``"refused: malformed"``) instead of ``"server disconnect"``.

The peer id is the sid, or what ``identify(sid, environ, auth)`` returns: an
authenticated identity, whose connections share one episode (several tabs of
one user). The few python-socketio internals this needs are in
:mod:`._internals`; bad-frame diagnosis is in :mod:`._frames`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from types import TracebackType
from typing import Any, Final, Self, final

import anyio
import socketio
import structlog
from socketio.async_pubsub_manager import AsyncPubSubManager

from heartbeat_monitor import (
    OVERLOADED,
    Clock,
    ConfigurationError,
    GoneCallback,
    HeartbeatMonitor,
    PeerHub,
    Reason,
)

from . import _internals, _presence
from ._connection import Outbox, SidConnection, SocketIOAudience, SocketIOStats
from ._engineio import align_ping_timeout, check_engineio
from ._frames import FrameGuard, HeartbeatProtocol, heartbeat_packets, json_type
from ._options import AdapterOptions
from ._visibility import Visibility

__all__ = ("Identify", "SocketIOAdapter", "SocketIOStats")

_logger = structlog.get_logger("heartbeat_monitor")

#: ``identify(sid, environ, auth)``: the peer id of a new connection, or ``None`` for its sid.
Identify = Callable[[str, Mapping[str, Any], Any], Hashable | None]

_RESERVED: Final = frozenset({"connect", "disconnect"})
_LOG_EVERY: Final = 1000


@final
class SocketIOAdapter:
    """Heartbeat liveness for the clients of a python-socketio ``AsyncServer``.

    ``SocketIOAdapter(sio, interval=5, misses=2)`` attaches at once, without
    replacing any handler; ``async with adapter:`` runs its monitor (unless you
    pass a ``monitor`` or ``hub`` you run yourself) and, on exit, ends every peer
    with ``"server shutdown"``.

    A client emits ``event`` (default ``"heartbeat"``) every ``interval``
    seconds; silent for more than ``misses`` intervals it is disconnected
    (``"heartbeat timeout"``). Whichever way a peer leaves, the ``on_gone``
    callbacks run exactly once with a :class:`~heartbeat_monitor.PeerGone`, and
    its rooms are told (``notify``: presence diffs, ``peer_gone``, both, none; see
    docs/presence.md and ``hub.presence(room)``). ``room`` makes every connection
    join that room. See :class:`AdapterOptions` for the rest.
    """

    __slots__ = (
        "__weakref__",
        "_guard",
        "_links",
        "_original",
        "_outbox",
        "_owns_hub",
        "_owns_monitor",
        "_rooms_of",
        "_sio",
        "_stack",
        "hub",
        "options",
        "stats",
        "visibility",
    )

    def __init__(
        self,
        sio: socketio.AsyncServer,
        monitor: HeartbeatMonitor | None = None,
        *,
        hub: PeerHub | None = None,
        on_gone: GoneCallback | Iterable[GoneCallback] | None = None,
        resolution: float | None = None,
        clock: Clock | None = None,
        identify: Identify | None = None,
        **options: Any,
    ) -> None:
        if not isinstance(sio, socketio.AsyncServer):
            raise ConfigurationError(f"SocketIOAdapter needs a socketio.AsyncServer, not {sio!r}")
        self.options = opts = AdapterOptions.build(identify=identify, **options)
        if opts.engineio != "ignore":
            check_engineio(sio, fix=opts.engineio == "fix")
        if hub is not None and monitor is not None and hub.monitor is not monitor:
            raise ConfigurationError("pass a hub or a monitor, not both")
        if (hub is not None or monitor is not None) and (resolution or clock) is not None:
            raise ConfigurationError("resolution and clock belong to the monitor you passed")
        self._owns_monitor = hub is None and monitor is None
        if monitor is None:
            monitor = (
                hub.monitor
                if hub is not None
                else HeartbeatMonitor(
                    opts.timeout,
                    resolution=resolution,
                    clock=clock,
                    callback_timeout=opts.callback_timeout,
                )
            )
        self._owns_hub = hub is None
        if hub is None:
            hub = PeerHub(monitor, **opts.hub_options())
        #: The hub that decides every peer's life (shared with other transports if given).
        self.hub = hub
        if opts.engineio != "ignore":  # engine.io's ping must not drop a client we keep
            align_ping_timeout(sio, opts.timeout, monitor)
        self._outbox = outbox = Outbox(sio, opts.namespace, monitor.runner)
        self._links = outbox.links
        hub.audience = SocketIOAudience(outbox)
        if callable(on_gone):
            hub.on_gone(on_gone)
        elif on_gone is not None:
            for callback in on_gone:
                hub.on_gone(callback)
        self._sio = sio
        self._stack: HeartbeatMonitor | None = None
        self.stats = SocketIOStats()
        self._original = _internals.wrap_trigger_event(sio, self._trigger_event)
        self._guard = FrameGuard(
            sio,
            hub,
            outbox,
            namespace=opts.namespace,
            max_message_size=opts.max_message_size,
            fast_packets=heartbeat_packets(opts.event, opts.namespace),
            fast_beat=self._fast_beat,
        )
        #: sid -> the rooms it is in (kept by the room hooks; a disconnect leaves only those).
        self._rooms_of = _internals.wrap_rooms(sio, opts.namespace, self._entered, self._left)
        #: Page visibility reports (``visibility`` events) and the hidden timeout they earn.
        self.visibility = Visibility.attach(self)

    # -- public ----------------------------------------------------------------------------

    @property
    def monitor(self) -> HeartbeatMonitor:
        return self.hub.monitor

    @property
    def sio(self) -> socketio.AsyncServer:
        return self._sio

    @property
    def namespace(self) -> str:
        return self.options.namespace

    @property
    def interval(self) -> float:
        return self.options.interval

    @property
    def timeout(self) -> float:
        """``interval * misses``: how long a peer may stay silent."""
        return self.options.timeout

    def websocket_protocol(self) -> type[HeartbeatProtocol]:
        """uvicorn's ``ws=`` protocol beating this adapter's heartbeat frames as it reads them."""
        return self._guard.websocket_protocol()

    def on_gone(self, callback: GoneCallback) -> GoneCallback:
        """Run ``callback(PeerGone)`` once per departure (plain or async); a decorator too."""
        return self.hub.on_gone(callback)

    def peers(self) -> list[Hashable]:
        """A snapshot of the peer ids being watched."""
        return self.hub.peers()

    def peer_of(self, sid: str) -> Hashable | None:
        """The peer id a connection beats for, or ``None`` if it is not watched."""
        link = self._links.get(sid)
        return None if link is None or link.ended else link.peer

    def __len__(self) -> int:
        return len(self.hub)

    async def __aenter__(self) -> Self:
        if self._owns_monitor:
            await self.monitor.__aenter__()
            self._stack = self.monitor
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            with anyio.CancelScope(shield=True):
                await self.aclose()
        finally:
            monitor, self._stack = self._stack, None
            if monitor is not None:
                await monitor.__aexit__(exc_type, exc, tb)

    async def aclose(
        self, reason: str = Reason.SERVER_SHUTDOWN, *, notify: bool | None = None
    ) -> None:
        """End every peer of this adapter with ``reason``, disconnect them, refuse new ones.

        Tell the others (``notify``) by default only if other processes' clients remain.
        """
        notify = isinstance(self._sio.manager, AsyncPubSubManager) if notify is None else notify
        self._outbox.closing = True
        sids = [sid for sid, link in self._links.items() if not link.ended]
        self.hub.close_all(reason, transport="socketio", notify=notify)
        if notify and sids:
            with anyio.move_on_after(5):  # the notices go out before anyone is disconnected
                await self.monitor.runner.wait_idle()
        for sid in sids:  # now, not in the runner: the server is about to close them anyway
            await self._outbox.disconnect_now(sid, reason)
        if self._owns_hub:
            self.hub.detach()  # a monitor shared with other code goes on without us

    # -- the wrapped _trigger_event --------------------------------------------------------

    def _trigger_event(self, event: str, namespace: str, *args: Any) -> Awaitable[Any]:
        # Not a coroutine function: it returns the awaitable python-socketio awaits (the
        # original's coroutine, mostly), so a passed-through event costs no extra frame.
        opts = self.options
        if namespace == opts.namespace:
            if event == opts.event:
                self._on_beat(args[0])
                if self._has_handler(namespace, event):
                    return self._original(event, namespace, *args)
                return _acked()  # nobody else handles heartbeats: an ack, if asked, is empty
            if type(event) is not str:
                # python-socketio passes on whatever the client put first in the event array.
                reason = f"wrong type: an event name must be a string, got {json_type(event)}"
                return self._guard.refuse(reason, sid=args[0])
            if event in _RESERVED:
                return self._lifecycle(event, args)
            if event == "presence_sync":  # then python-socketio's handler, if any
                _presence.sync(self.hub, self._links.get(args[0]), args)
            if opts.any_event:
                link = self._links.get(args[0])
                if link is not None and self.monitor.beat(link.episode):
                    self.stats.beats += 1  # an application's own events: no rate limit
        return self._original(event, namespace, *args)

    def _lifecycle(self, event: str, args: tuple[Any, ...]) -> Awaitable[Any]:
        # python-socketio also passes a client's own event named "connect" or "disconnect"
        # here. A real connect comes for a sid not yet watched; a real disconnect for one
        # python-socketio no longer counts as connected.
        sid = args[0]
        connected = self._sio.manager.is_connected(sid, self.options.namespace)
        if event == "connect":
            if sid not in self._links and (not connected or self._sio.always_connect):
                return self._on_connect(args)
        elif not connected:
            return self._on_disconnect(args)
        self.stats.spoofed += 1
        self.hub.refuse_input(
            "socketio",
            f"spoofed: a client event named {event!r} (only the server says so); dropped",
            sid=repr(sid)[:80],
            peer=self.peer_of(sid) if isinstance(sid, str) else None,
        )
        return _acked()

    def _has_handler(self, namespace: str, event: str) -> bool:
        """Whether python-socketio would find a handler for ``event`` (any kind)."""
        sio = self._sio
        handlers = sio.handlers
        own = handlers.get(namespace)
        return bool(
            (own and (event in own or "*" in own)) or "*" in handlers or sio.namespace_handlers
        )

    def _on_beat(self, sid: str) -> None:
        """The hot path: sid -> link, the hub's beat. The payload is never looked at."""
        link = self._links.get(sid)
        if link is None:
            self._unknown(sid)
        elif self.hub.beat(link):
            self.stats.beats += 1
            if self.visibility.held and link.episode in self.visibility.held:
                self.visibility.beat(link)  # a regular beat from a hidden page: visible again
        elif link.ended:
            self._unknown(sid)
        else:
            stats = self.stats
            stats.beats_limited += 1
            if stats.beats_limited % _LOG_EVERY == 1:
                _logger.warning(
                    "heartbeat_monitor.socketio.beats_limited",
                    peer=link.peer,
                    sid=sid,
                    dropped=stats.beats_limited,
                    min_beat_gap=self.hub.min_beat_gap,
                    max_rate=self.hub.max_rate,
                )

    def _fast_beat(self, eio_sid: str) -> bool:
        """A frame that is exactly a heartbeat: ``True`` once beaten here, when no handler of
        the application wants heartbeats (python-socketio need not decode and dispatch it)."""
        sio = self._sio
        namespace = self.options.namespace
        if self._has_handler(namespace, self.options.event) or _internals.awaiting_attachment(
            sio, eio_sid
        ):
            return False
        sid = sio.manager.sid_from_eio_sid(eio_sid, namespace)
        if sid is None:
            return False  # not connected to the namespace: python-socketio says so
        self._on_beat(sid)
        return True

    def _unknown(self, sid: object) -> None:
        self.stats.unknown_peer += 1
        if self.stats.unknown_peer % _LOG_EVERY == 1:
            _logger.warning(
                "heartbeat_monitor.socketio.unknown_peer",
                sid=repr(sid)[:80],
                namespace=self.options.namespace,
                count=self.stats.unknown_peer,
            )

    # -- connect and disconnect ------------------------------------------------------------

    async def _on_connect(self, args: tuple[Any, ...]) -> Any:
        sid = args[0]
        environ = args[1] if len(args) > 1 else {}
        auth = args[2] if len(args) > 2 else None
        if self._outbox.closing:
            raise socketio.exceptions.ConnectionRefusedError("server shutting down")
        overloaded = self.monitor.overload.refusal()  # before the application's handler runs
        if overloaded is not None:
            self.hub.refuse_input("socketio", overloaded, sid=sid)
            raise socketio.exceptions.ConnectionRefusedError(OVERLOADED)
        identity: Hashable | None = None
        identify = self.options.identify
        if identify is not None:
            try:
                identity = identify(sid, environ, auth)
                hash(identity)
            except socketio.exceptions.ConnectionRefusedError as exc:
                why = exc.args[0] if exc.args else "no reason given"
                reason = f"spoofed: identify refused the connection: {why!s:.100}"
                self.hub.refuse_input("socketio", reason, sid=sid)
                raise
            except Exception:
                _logger.exception("heartbeat_monitor.socketio.identify_failed", sid=sid)
                raise socketio.exceptions.ConnectionRefusedError("unidentified") from None
        result = await self._original("connect", self.options.namespace, *args)
        if result is False or sid in self._links:
            return result
        peer = sid if identity is None else identity
        meta = _presence.meta_of(self.options.presence_meta, self.hub, sid, environ, auth)
        link = self.hub.open(
            self._outbox.connection(sid), peer, shared=identity is not None, meta=meta
        )
        if link is None:  # overloaded since the check above, or the id is in use
            told = OVERLOADED if self.monitor.overload.shedding else "peer id in use"
            raise socketio.exceptions.ConnectionRefusedError(told)
        self._links[sid] = link
        self.stats.connections += 1
        _logger.info(
            "heartbeat_monitor.socketio.peer_connected",
            peer=link.peer,
            sid=sid,
            namespace=self.options.namespace,
            connections=len(link.episode.links),
        )
        opts = self.options
        rooms = tuple(self._rooms_of.get(sid, ()))  # those the connect handler entered
        await _presence.enter_rooms(self._sio, self.hub, link, sid, opts, rooms)
        if not _internals.transport_open(self._sio, sid=sid, namespace=self.options.namespace):
            # The client vanished while the connect handler ran: python-socketio skips the
            # disconnect event for a connection still pending, so end it here.
            _logger.info("heartbeat_monitor.socketio.vanished_in_handshake", peer=link.peer)
            self._links.pop(sid, None)
            self.hub.close(link, Reason.TRANSPORT_CLOSE)
        return result

    async def _on_disconnect(self, args: tuple[Any, ...]) -> Any:
        sid = args[0]
        reason = str(args[1]) if len(args) > 1 else Reason.CLIENT_DISCONNECT
        link = self._links.pop(sid, None)
        if link is not None:
            connection = link.connection
            assert isinstance(connection, SidConnection)
            told = self._outbox.told.pop(sid, None)
            if told is not None:
                args = (sid, told, *args[2:])  # the hub's reason, not "server ..."
            else:
                self.hub.close(link, reason)
        return await self._original("disconnect", self.options.namespace, *args)

    def _entered(self, sid: str, room: Hashable) -> None:
        link = self._links.get(sid)
        if link is not None:
            self.hub.join(link, room)

    def _left(self, sid: str, room: Hashable) -> None:
        link = self._links.get(sid)
        if link is not None:
            self.hub.leave(link, room)

    # -- what the hub asks of python-socketio ----------------------------------------------

    def __repr__(self) -> str:
        return (
            f"<SocketIOAdapter namespace={self.options.namespace!r} "
            f"event={self.options.event!r} peers={len(self.hub)} timeout={self.timeout!r}>"
        )


async def _acked() -> None:
    """What the wrapper returns for an event it handled alone (an ack, if asked, is empty)."""
