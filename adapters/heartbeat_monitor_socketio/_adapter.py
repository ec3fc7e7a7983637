"""Attach a :class:`~heartbeat_monitor.HeartbeatMonitor` to a python-socketio ``AsyncServer``.

Theory of operation
===================

python-socketio calls one method of the server, ``_trigger_event(event,
namespace, *args)``, for every connect, every inbound event and every
disconnect, whatever kind of handler the user registered (``@sio.on``,
``@sio.event``, catch-all ``"*"`` handlers, namespace classes). It has no
public hook that sees *every* inbound event, so the adapter wraps that method
on the server *instance* (never the class) and passes every call through to the
original, unchanged: the user's handlers keep their arguments, return values
and exceptions. The tests pin this against the installed python-socketio.

* ``connect`` (in the watched namespace): after the user's handler accepts the
  connection, the peer is tracked (a new connection of a known identity is a
  beat for it).
* the heartbeat event (or, with ``any_event=True``, any event): one dictionary
  lookup from sid to peer, a rate limit, and ``monitor.beat``. The payload is
  never looked at: a client cannot beat for, or expire, another peer.
* ``disconnect`` (any reason python-socketio gives): the peer's last
  connection leaving ends the peer.
* expiry: the monitor's callback marks the peer gone, then disconnects its
  sockets with ``sio.disconnect``; the user's ``disconnect`` handler then sees
  the reason ``"heartbeat timeout"`` instead of ``"server disconnect"``.
* bad input (``_transport.py``): engine.io's ``message`` handler and
  ``handle_request`` are wrapped on the same instance. A frame python-socketio
  or python-engineio cannot take, or an event that is no array with a string
  name, closes its engine.io connection: the peer is gone with ``"refused:
  <reason>"`` (its last connection). Forged ``connect``/``disconnect`` events
  and floods of heartbeats are dropped. Each is logged (paced) as
  ``heartbeat_monitor.socketio.peer_refused`` and counted in ``stats.refused``.

Exactly once: a peer is marked gone synchronously (no ``await`` in between) by
whichever path sees it first; every other path finds the mark and stops. Then
the ``on_gone`` callbacks run once, and the other clients get one
``peer_gone`` event.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from types import TracebackType
from typing import Any, Final, Literal, Self, final

import anyio
import socketio
import structlog

from heartbeat_monitor import Clock as _Clock
from heartbeat_monitor import ConfigurationError, Expired, HeartbeatMonitor, MonotonicClock
from heartbeat_monitor._monitor import _is_async

from ._engineio import check_engineio
from ._transport import RefusalLog, diagnose, json_type, opening, request_sid

__all__ = (
    "GoneCallback",
    "Identify",
    "Reason",
    "SocketIOAdapter",
    "SocketIOStats",
)

_logger = structlog.get_logger("heartbeat_monitor")

#: ``on_gone`` callbacks: ``(peer id, reason)``, plain or ``async def``.
GoneCallback = Callable[[Hashable, str], object] | Callable[[Hashable, str], Awaitable[object]]
#: ``identify(sid, environ, auth)``: the peer id of a new connection, or ``None`` for its sid.
Identify = Callable[[str, Mapping[str, Any], Any], Hashable | None]

_RESERVED: Final = frozenset({"connect", "disconnect"})
_LOG_EVERY: Final = 1000


@final
class Reason:
    """The reasons a peer is gone (python-socketio's, plus the adapter's own)."""

    #: Silent for more than ``misses`` heartbeat intervals (the adapter disconnected it).
    HEARTBEAT_TIMEOUT: Final = "heartbeat timeout"
    #: The adapter was closed (server shutdown); no ``peer_gone`` is sent.
    SERVER_SHUTDOWN: Final = "server shutdown"
    #: The following come from python-socketio / python-engineio.
    CLIENT_DISCONNECT: Final = "client disconnect"
    SERVER_DISCONNECT: Final = "server disconnect"
    PING_TIMEOUT: Final = "ping timeout"
    TRANSPORT_CLOSE: Final = "transport close"
    TRANSPORT_ERROR: Final = "transport error"
    #: Its node stopped beating into Redis; another node ended it (``RedisCluster``).
    NODE_GONE: Final = "node gone"


@final
class SocketIOStats:
    """Counters of what the adapter saw (plain ints: read them, never rely on resets)."""

    __slots__ = (
        "beats",
        "beats_limited",
        "callback_failures",
        "connections",
        "gone",
        "refused",
        "spoofed",
        "unknown_peer",
    )

    def __init__(self) -> None:
        #: Beats counted (the monitor was told).
        self.beats = 0
        #: Beats dropped by the per-peer rate limit.
        self.beats_limited = 0
        #: Events from a sid the adapter does not track (never connected, or already gone).
        self.unknown_peer = 0
        #: Client events named ``connect`` / ``disconnect`` (dropped: only the server says so).
        self.spoofed = 0
        #: Connections accepted in the watched namespace.
        self.connections = 0
        #: ``on_gone`` callbacks, notifications or disconnects that raised or timed out.
        self.callback_failures = 0
        #: How many peers are gone, by reason.
        self.gone: dict[str, int] = {}
        #: Bad input refused, by kind: ``malformed``, ``oversized``, ``wrong type``,
        #: ``spoofed``, ``flood`` (logged as ``heartbeat_monitor.socketio.peer_refused``).
        self.refused: dict[str, int] = {}

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"SocketIOStats({fields})"


@final
class _Peer:
    """One peer: a sid, or an identity with one or more connections."""

    __slots__ = (
        "burst",
        "burst_after",
        "floods",
        "gone",
        "id",
        "key",
        "last_counted",
        "limited",
        "members",
        "rooms",
        "sids",
    )

    def __init__(self, peer_id: Hashable, key: Hashable) -> None:
        self.id = peer_id
        self.key = key
        #: Connections currently open.
        self.sids: set[str] = set()
        #: Every connection it ever had (they are never sent its ``peer_gone``).
        self.members: set[str] = set()
        #: Rooms its connections were in (collected as they leave).
        self.rooms: set[Hashable] = set()
        self.last_counted = -math.inf
        self.limited = 0
        #: Heartbeats dropped since the beat counted at ``burst_after`` (flood detection).
        self.burst = 0
        self.burst_after = -math.inf
        self.floods = 0
        #: The reason, once gone.
        self.gone: str | None = None


async def _acked() -> None:
    """What the wrapper returns for an event it handled alone (an ack, if asked, is empty)."""


@final
class SocketIOAdapter:
    """Heartbeat liveness for the clients of a python-socketio ``AsyncServer``.

    ``SocketIOAdapter(sio, interval=5, misses=2)`` attaches at once, without
    replacing any handler; ``async with adapter:`` runs its monitor (unless
    you pass a ``monitor`` you run yourself) and, on exit, ends every peer with
    the reason ``"server shutdown"``.

    A client emits ``event`` (default ``"heartbeat"``) every ``interval``
    seconds; silent for more than ``misses`` intervals, it is disconnected.
    Whichever way a peer leaves, ``on_gone`` callbacks run exactly once with
    ``(peer, reason)`` and the other clients receive one ``peer_gone`` event,
    ``{"peer": peer, "reason": reason}``: in the rooms it was in
    (``notify="rooms"``), in the whole namespace (``"namespace"``) or nowhere
    (``"none"``). The peer id is the sid, or what ``identify(sid, environ,
    auth)`` returns (it must authenticate: whatever it returns, the connection
    beats for). ``room`` makes every connection join that room on connect.
    """

    __slots__ = (
        "__weakref__",
        "_any_event",
        "_beat",
        "_callback_timeout",
        "_closing",
        "_cluster",
        "_eio_connect",
        "_eio_message",
        "_eio_request",
        "_event",
        "_flood_limit",
        "_gone_callbacks",
        "_identify",
        "_max_size",
        "_min_gap",
        "_monitor",
        "_namespace",
        "_not_handled",
        "_notify",
        "_now",
        "_original",
        "_owns_monitor",
        "_peer_of_sid",
        "_peers",
        "_refusal_log",
        "_refusals",
        "_room",
        "_sio",
        "_stack",
        "_timeout",
        "_track_timeout",
        "interval",
        "misses",
        "stats",
    )

    def __init__(
        self,
        sio: socketio.AsyncServer,
        monitor: HeartbeatMonitor | None = None,
        *,
        interval: float = 5.0,
        misses: float = 2,
        event: str = "heartbeat",
        namespace: str = "/",
        any_event: bool = False,
        identify: Identify | None = None,
        room: str | None = None,
        notify: Literal["rooms", "namespace", "none"] = "rooms",
        on_gone: GoneCallback | Iterable[GoneCallback] | None = None,
        resolution: float | None = None,
        clock: _Clock | None = None,
        min_beat_gap: float | None = None,
        flood_limit: int | None = 20,
        max_message_size: int | None = None,
        callback_timeout: float | None = 30.0,
        engineio: Literal["check", "fix", "ignore"] = "check",
    ) -> None:
        if not isinstance(sio, socketio.AsyncServer):
            raise ConfigurationError(f"SocketIOAdapter needs a socketio.AsyncServer, not {sio!r}")
        original = getattr(sio, "_trigger_event", None)
        if not callable(original):
            raise ConfigurationError(
                "this python-socketio has no AsyncServer._trigger_event; "
                "the adapter supports python-socketio 5.x"
            )
        if (
            isinstance(misses, bool)
            or not isinstance(misses, int | float)
            or not (math.isfinite(misses) and misses > 0)
        ):
            raise ConfigurationError(f"misses must be a number > 0, not {misses!r}")
        if isinstance(interval, bool) or not isinstance(interval, int | float):
            raise ConfigurationError(f"interval must be a number of seconds, not {interval!r}")
        if not (math.isfinite(interval) and interval > 0):
            raise ConfigurationError(f"interval must be a finite number > 0, not {interval!r}")
        if not isinstance(event, str) or not event or event in _RESERVED:
            raise ConfigurationError(f"event must be a non-reserved event name, not {event!r}")
        if not isinstance(namespace, str) or not namespace.startswith("/"):
            raise ConfigurationError(f"namespace must start with '/', not {namespace!r}")
        if notify not in ("rooms", "namespace", "none"):
            raise ConfigurationError(
                f"notify must be 'rooms', 'namespace' or 'none', not {notify!r}"
            )
        if engineio not in ("check", "fix", "ignore"):
            raise ConfigurationError(
                f"engineio must be 'check', 'fix' or 'ignore', not {engineio!r}"
            )
        if engineio != "ignore":
            check_engineio(sio, fix=engineio == "fix")
        self.interval = float(interval)
        self.misses = misses
        self._timeout = self.interval * misses
        if min_beat_gap is None:
            min_beat_gap = self.interval / 10
        if not (math.isfinite(min_beat_gap) and 0 <= min_beat_gap < self.interval):
            raise ConfigurationError(
                f"min_beat_gap must be >= 0 and below the interval, not {min_beat_gap!r}"
            )
        self._min_gap = float(min_beat_gap)
        for name, value in (("flood_limit", flood_limit), ("max_message_size", max_message_size)):
            if value is not None and (type(value) is not int or value < 1):
                raise ConfigurationError(f"{name} must be an int >= 1 or None, not {value!r}")
        self._flood_limit = flood_limit
        self._max_size = max_message_size
        if callback_timeout is not None and not (
            math.isfinite(callback_timeout) and callback_timeout > 0
        ):
            raise ConfigurationError(
                f"callback_timeout must be > 0 or None, not {callback_timeout!r}"
            )
        self._callback_timeout = callback_timeout
        self._owns_monitor = monitor is None
        if monitor is None:
            monitor = HeartbeatMonitor(self._timeout, resolution=resolution, clock=clock)
        elif resolution is not None or clock is not None:
            raise ConfigurationError("resolution and clock belong to the monitor you passed")
        self._monitor = monitor
        self._track_timeout = None if monitor.tracker.timeout == self._timeout else self._timeout
        self._beat = monitor.beat
        clock_now = monitor.clock.now
        self._now: Callable[[], float] = (
            time.monotonic if isinstance(monitor.clock, MonotonicClock) else clock_now
        )
        self._sio = sio
        self._namespace = namespace
        self._event = event
        self._any_event = any_event
        self._identify = identify
        self._room = room
        self._notify = notify
        self._not_handled = sio.not_handled
        self._gone_callbacks: list[tuple[GoneCallback, bool]] = []
        if callable(on_gone):
            self.on_gone(on_gone)
        elif on_gone is not None:
            for callback in on_gone:
                self.on_gone(callback)
        self._peers: dict[Hashable, _Peer] = {}
        self._peer_of_sid: dict[str, _Peer] = {}
        self._closing = False
        #: Connections being disconnected for bad input: sid -> ``"refused: <reason>"``.
        self._refusals: dict[str, str] = {}
        self._refusal_log = RefusalLog()
        #: The ``RedisCluster`` this adapter is a node of, if any (it sets itself here).
        self._cluster: Any = None
        self.stats = SocketIOStats()
        monitor.on_expire(self._on_expired)
        self._original: Callable[..., Awaitable[Any]] = original
        sio._trigger_event = self._trigger_event
        # Frames python-socketio cannot decode raise in its engine.io message handler.
        self._eio_message: Callable[[str, str | bytes], Awaitable[None]] = sio.eio.handlers[
            "message"
        ]
        sio.eio.on("message", self._on_eio_message)
        # A frame that is not even an engine.io packet makes python-engineio's websocket
        # handler raise out of the request, leaving its socket open: caught around it.
        self._eio_connect: Callable[..., Awaitable[Any]] = sio.eio.handlers["connect"]
        sio.eio.on("connect", self._on_eio_connect)
        self._eio_request: Callable[..., Awaitable[Any]] = sio.eio.handle_request
        sio.eio.handle_request = self._on_eio_request

    # -- public ----------------------------------------------------------------------------

    @property
    def monitor(self) -> HeartbeatMonitor:
        return self._monitor

    @property
    def sio(self) -> socketio.AsyncServer:
        return self._sio

    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def timeout(self) -> float:
        """``interval * misses``: how long a peer may stay silent."""
        return self._timeout

    def on_gone(self, callback: GoneCallback) -> GoneCallback:
        """Register a cleanup callback ``(peer, reason)``, plain or async; usable as a decorator."""
        if not callable(callback):
            raise ConfigurationError(f"on_gone needs a callable, not {callback!r}")
        self._gone_callbacks.append((callback, _is_async(callback)))
        return callback

    def peers(self) -> list[Hashable]:
        """A snapshot of the peer ids being watched."""
        return [peer.id for peer in self._peers.values()]

    def peer_of(self, sid: str) -> Hashable | None:
        """The peer id a connection beats for, or ``None`` if it is not watched."""
        peer = self._peer_of_sid.get(sid)
        return None if peer is None else peer.id

    def __len__(self) -> int:
        return len(self._peers)

    async def __aenter__(self) -> Self:
        self._stack = None
        if self._owns_monitor:
            await self._monitor.__aenter__()
            self._stack = self._monitor
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
            monitor = self._stack
            self._stack = None
            if monitor is not None:
                await monitor.__aexit__(exc_type, exc, tb)

    async def aclose(self, reason: str = Reason.SERVER_SHUTDOWN, *, notify: bool = False) -> None:
        """End every peer with ``reason`` and refuse new ones.

        Everyone is leaving, so by default no ``peer_gone`` is sent (that would be
        N - 1 messages to each of N clients); with ``notify=True`` each client is
        told about the others once, before anyone is disconnected.
        """
        self._closing = True
        ending = [peer for peer in list(self._peers.values()) if self._mark_gone(peer, reason)]
        if notify and self._notify != "none":
            for peer in ending:
                for sid in list(peer.sids):
                    self._collect_rooms(peer, sid)
            for peer in ending:
                await self._send_gone(peer, reason)
        for peer in ending:
            await self._disconnect(peer)
        for peer in ending:
            await self._finish(peer, reason, notify=False)
        # A monitor shared with other code keeps running: it no longer calls us.
        self._monitor.remove_callback(self._on_expired)

    # -- the wrapped _trigger_event ------------------------------------------------------

    def _trigger_event(self, event: str, namespace: str, *args: Any) -> Awaitable[Any]:
        # Not a coroutine function: it returns the awaitable python-socketio awaits (the
        # original's coroutine, mostly), so a passed-through event costs no extra frame.
        if namespace == self._namespace:
            if event == self._event:
                self._on_beat(args[0])
                if self._has_handler(namespace, event):
                    return self._original(event, namespace, *args)
                # Nobody else handles heartbeats: a client that asks for an ack gets one.
                return _acked()
            if type(event) is not str:
                # python-socketio passes on whatever the client put first in the event array.
                return self._refuse(
                    f"wrong type: an event name must be a string, got {json_type(event)}",
                    sid=args[0],
                )
            if event in _RESERVED:
                sid = args[0]
                # python-socketio also passes a client's own event named "connect" or
                # "disconnect" here. A real connect comes for a sid not yet watched; a
                # real disconnect for one python-socketio no longer counts as connected.
                connected = self._sio.manager.is_connected(sid, namespace)
                if event == "connect":
                    if sid not in self._peer_of_sid and (not connected or self._sio.always_connect):
                        return self._on_connect(args)
                elif not connected:
                    return self._on_disconnect(args)
                self._spoofed(event, sid)
                return _acked()
            if self._any_event:
                self._on_beat(args[0], heartbeat=False)
        return self._original(event, namespace, *args)

    def _has_handler(self, namespace: str, event: str) -> bool:
        """Whether python-socketio would find a handler for ``event`` (any kind)."""
        sio = self._sio
        handlers = sio.handlers
        own = handlers.get(namespace)
        return bool(
            (own and (event in own or "*" in own)) or "*" in handlers or sio.namespace_handlers
        )

    def _on_beat(self, sid: str, *, heartbeat: bool = True) -> None:
        """The hot path: sid -> peer, rate limit, beat. The payload is never looked at."""
        peer = self._peer_of_sid.get(sid)
        if peer is None:
            self._unknown(sid)
            return
        now = self._now()
        if now - peer.last_counted < self._min_gap:
            self._limited(peer, sid, heartbeat)
        elif self._beat(peer.key):
            peer.last_counted = now
            self.stats.beats += 1
        else:
            self._unknown(sid)

    def _limited(self, peer: _Peer, sid: str, heartbeat: bool) -> None:
        peer.limited += 1
        self.stats.beats_limited += 1
        if peer.limited % _LOG_EVERY == 1:
            _logger.warning(
                "heartbeat_monitor.socketio.beats_limited",
                peer=peer.id,
                sid=sid,
                dropped=peer.limited,
                min_beat_gap=self._min_gap,
            )
        limit = self._flood_limit
        if not heartbeat or limit is None:
            return  # with any_event=True, a chatty application is no flood
        if peer.burst_after != peer.last_counted:
            peer.burst_after = peer.last_counted
            peer.burst = 0
        peer.burst += 1
        if peer.burst == limit:  # the counted beat and `limit` more within min_beat_gap
            peer.floods += 1
            self._refused(
                f"flood: more than {limit} heartbeats within min_beat_gap ({self._min_gap:g} s); "
                "the excess is dropped",
                log=peer.floods % _LOG_EVERY == 1,
                peer=peer.id,
                sid=sid,
                floods=peer.floods,
            )

    def _unknown(self, sid: object) -> None:
        self.stats.unknown_peer += 1
        if self.stats.unknown_peer % _LOG_EVERY == 1:
            _logger.warning(
                "heartbeat_monitor.socketio.unknown_peer",
                sid=repr(sid)[:80],
                namespace=self._namespace,
                count=self.stats.unknown_peer,
            )

    def _spoofed(self, event: str, sid: object) -> None:
        self.stats.spoofed += 1
        self._refused(
            f"spoofed: a client event named {event!r} (only the server says so); dropped",
            log=self.stats.spoofed % _LOG_EVERY == 1,
            event_name=event,
            sid=repr(sid)[:80],
            peer=self.peer_of(sid) if isinstance(sid, str) else None,
            count=self.stats.spoofed,
        )

    def _refused(self, reason: str, *, log: bool = True, **fields: Any) -> None:
        """Count bad input by kind (the reason's prefix) and log it (paced)."""
        refused = self.stats.refused
        kind = reason.partition(":")[0]
        refused[kind] = refused.get(kind, 0) + 1
        if log:
            self._refusal_log.warning(
                "heartbeat_monitor.socketio.peer_refused",
                reason=reason,
                namespace=self._namespace,
                **fields,
            )

    async def _on_eio_message(self, eio_sid: str, data: str | bytes) -> None:
        """engine.io's ``message`` handler, around python-socketio's: refuse bad frames."""
        limit = self._max_size
        if limit is not None and len(data) > limit:
            unit = "bytes" if isinstance(data, bytes) else "characters"
            await self._refuse(f"oversized: {len(data)} {unit} > {limit}", eio_sid=eio_sid)
            return
        try:
            await self._eio_message(eio_sid, data)
        except Exception:
            reason = diagnose(self._sio, data)
            if reason is None:
                raise  # not the client's input: engine.io logs it, as before
            await self._refuse(reason, eio_sid=eio_sid)

    async def _on_eio_connect(self, eio_sid: str, environ: Any) -> Any:
        """engine.io's ``connect`` handler, around python-socketio's: note the request's sid."""
        opening.set(eio_sid)  # the request's own context: read by _on_eio_request
        return await self._eio_connect(eio_sid, environ)

    async def _on_eio_request(self, *args: Any, **kwargs: Any) -> Any:
        """engine.io's ``handle_request``: refuse a websocket whose frame engine.io choked on."""
        try:
            return await self._eio_request(*args, **kwargs)
        except ValueError as exc:  # python-engineio's packet decoding (int(), base64, empty)
            eio_sid = request_sid(args)
            socket = None if eio_sid is None else self._sio.eio.sockets.get(eio_sid)
            if socket is None or socket.closed or socket.closing:
                raise
            reason = f"malformed: not an engine.io packet ({exc})"
            await self._refuse(reason[:200], eio_sid=eio_sid)
            return None  # refused and logged: no traceback per bad client

    async def _refuse(
        self, reason: str, *, sid: str | None = None, eio_sid: str | None = None
    ) -> Any:
        """Log and count bad input, then disconnect its connection with ``refused: <reason>``.

        The whole engine.io connection is closed (its stream is not to be trusted);
        the peer is gone with that reason if this was its last connection.
        """
        manager = self._sio.manager
        namespace = self._namespace
        if sid is None and eio_sid is not None:
            sid = manager.sid_from_eio_sid(eio_sid, namespace)
        elif eio_sid is None and sid is not None:
            eio_sid = manager.eio_sid_from_sid(sid, namespace)
        peer = None if sid is None else self._peer_of_sid.get(sid)
        self._refused(reason, peer=None if peer is None else peer.id, sid=sid)
        eio = self._sio.eio
        socket = None if eio_sid is None else eio.sockets.get(eio_sid)
        if socket is not None and not (socket.closed or socket.closing):
            if peer is not None and sid is not None:
                self._refusals[sid] = f"refused: {reason}"  # _on_disconnect takes it
            try:
                # As engine.io's own disconnect, without waiting for a polling client to
                # collect the close packet; then end engine.io's writer (as its reader does
                # when a client leaves), so the transport closes now, not when the client
                # obliges or its ping_interval + ping_timeout have passed.
                await socket.close(wait=False, reason=eio.reason.SERVER_DISCONNECT)
                socket.queue.put_nowait(None)
            except Exception:
                _logger.exception("heartbeat_monitor.socketio.disconnect_failed", sid=sid)
            eio.sockets.pop(eio_sid, None)
            if sid is not None:
                self._refusals.pop(sid, None)  # taken already, unless the close failed
        return self._not_handled

    async def _on_connect(self, args: tuple[Any, ...]) -> Any:
        sid = args[0]
        environ = args[1] if len(args) > 1 else {}
        auth = args[2] if len(args) > 2 else None
        if self._closing:
            raise socketio.exceptions.ConnectionRefusedError("server shutting down")
        identity: Hashable | None = None
        if self._identify is not None:
            try:
                identity = self._identify(sid, environ, auth)
                hash(identity)
            except socketio.exceptions.ConnectionRefusedError as exc:
                why = exc.args[0] if exc.args else "no reason given"
                self._refused(f"spoofed: identify refused the connection: {why!s:.100}", sid=sid)
                raise
            except Exception:
                _logger.exception("heartbeat_monitor.socketio.identify_failed", sid=sid)
                raise socketio.exceptions.ConnectionRefusedError("unidentified") from None
        result = await self._original("connect", self._namespace, *args)
        if result is False:
            return result
        try:
            await self._connected(sid, identity)
        except Exception:
            _logger.exception("heartbeat_monitor.socketio.connect_failed", sid=sid)
        return result

    async def _connected(self, sid: str, identity: Hashable | None) -> None:
        if sid in self._peer_of_sid:
            return
        key: Hashable = sid if identity is None else ("identity", identity)
        peer = self._peers.get(key)
        if peer is None:
            peer = _Peer(sid if identity is None else identity, key)
            self._peers[key] = peer
            self._monitor.track(key, timeout=self._track_timeout)
            fresh = True
            if self._cluster is not None:
                self._cluster.joined(peer)
        else:
            self._beat(key)
            fresh = False
        peer.sids.add(sid)
        peer.members.add(sid)
        self._peer_of_sid[sid] = peer
        self.stats.connections += 1
        _logger.info(
            "heartbeat_monitor.socketio.peer_connected",
            peer=peer.id,
            sid=sid,
            namespace=self._namespace,
            connections=len(peer.sids),
            new_peer=fresh,
        )
        if self._room is not None:
            await self._sio.enter_room(sid, self._room, namespace=self._namespace)
        if not self._transport_open(sid):
            # The client vanished while the connect handler ran: python-socketio skips the
            # disconnect event for a connection still pending, so end it here.
            _logger.info("heartbeat_monitor.socketio.vanished_in_handshake", peer=peer.id, sid=sid)
            await self._on_disconnect((sid, Reason.TRANSPORT_CLOSE), call_user=False)

    def _transport_open(self, sid: str) -> bool:
        eio_sid = self._sio.manager.eio_sid_from_sid(sid, self._namespace)
        socket = self._sio.eio.sockets.get(eio_sid)
        return socket is not None and not socket.closed and not socket.closing

    async def _on_disconnect(self, args: tuple[Any, ...], *, call_user: bool = True) -> Any:
        sid = args[0]
        reason = args[1] if len(args) > 1 else Reason.CLIENT_DISCONNECT
        if self._refusals and (refused := self._refusals.pop(sid, None)) is not None:
            reason = refused  # our own disconnect of bad input: the handler sees why
            args = (sid, refused, *args[2:])
        peer = self._peer_of_sid.pop(sid, None)
        ending = False
        if peer is not None:
            self._collect_rooms(peer, sid)
            peer.sids.discard(sid)
            if peer.gone is not None:
                if reason == Reason.SERVER_DISCONNECT:
                    # Our own sio.disconnect(): tell the user's handler why.
                    args = (sid, peer.gone, *args[2:])
            elif not peer.sids:
                ending = self._mark_gone(peer, str(reason))
        try:
            if call_user:
                return await self._original("disconnect", self._namespace, *args)
            return None
        finally:
            if ending:
                assert peer is not None
                with anyio.CancelScope(shield=True):
                    await self._finish(peer, str(reason))

    # -- ending a peer -----------------------------------------------------------------------

    def _mark_gone(self, peer: _Peer, reason: str) -> bool:
        """The one place a peer becomes gone: ``True`` the first time only."""
        if peer.gone is not None:
            return False
        peer.gone = reason
        self._monitor.untrack(peer.key)
        if self._peers.get(peer.key) is peer:
            del self._peers[peer.key]
        gone = self.stats.gone
        gone[reason] = gone.get(reason, 0) + 1
        return True

    async def _on_expired(self, event: Expired) -> None:
        peer = self._peers.get(event.key)
        if peer is None or not self._mark_gone(peer, Reason.HEARTBEAT_TIMEOUT):
            return
        await self._disconnect(peer)
        await self._finish(
            peer, Reason.HEARTBEAT_TIMEOUT, silent_for=event.expired_at - event.last_beat
        )

    async def _disconnect(self, peer: _Peer) -> None:
        for sid in list(peer.sids):
            self._collect_rooms(peer, sid)
        for sid in list(peer.sids):
            try:
                await self._sio.disconnect(sid, namespace=self._namespace)
            except Exception:
                self.stats.callback_failures += 1
                _logger.exception(
                    "heartbeat_monitor.socketio.disconnect_failed", peer=peer.id, sid=sid
                )
            # A sid python-socketio no longer knows never reaches _on_disconnect: drop it here.
            if self._peer_of_sid.get(sid) is peer:
                del self._peer_of_sid[sid]
            peer.sids.discard(sid)

    def _collect_rooms(self, peer: _Peer, sid: str) -> None:
        if self._notify != "rooms":
            return
        try:
            rooms = self._sio.rooms(sid, namespace=self._namespace)
        except Exception:
            return
        peer.rooms.update(room for room in rooms if room != sid)

    async def _finish(
        self, peer: _Peer, reason: str, *, notify: bool = True, silent_for: float | None = None
    ) -> None:
        if self._cluster is not None and not await self._cluster.left(peer, reason):
            return  # an identity still connected to another node: not gone cluster-wide
        _logger.info(
            "heartbeat_monitor.socketio.peer_gone",
            peer=peer.id,
            reason=reason,
            namespace=self._namespace,
            **({} if silent_for is None else {"silent_for": round(silent_for, 6)}),
        )
        for callback, is_async in self._gone_callbacks:
            try:
                if not is_async:
                    callback(peer.id, reason)
                elif self._callback_timeout is None:
                    await callback(peer.id, reason)  # type: ignore[misc]
                else:
                    with anyio.move_on_after(self._callback_timeout) as scope:
                        await callback(peer.id, reason)  # type: ignore[misc]
                    if scope.cancelled_caught:
                        self.stats.callback_failures += 1
                        _logger.error(
                            "heartbeat_monitor.socketio.callback_timeout",
                            callback=repr(callback),
                            peer=peer.id,
                        )
            except Exception:
                self.stats.callback_failures += 1
                _logger.exception(
                    "heartbeat_monitor.socketio.callback_failed",
                    callback=repr(callback),
                    peer=peer.id,
                )
        if notify and self._notify != "none":
            await self._send_gone(peer, reason)

    async def _send_gone(self, peer: _Peer, reason: str) -> None:
        if self._notify == "rooms":
            rooms = [room for room in peer.rooms if room not in peer.members]
            if not rooms:
                return  # an empty list would broadcast to the whole namespace
            to: list[Hashable] | None = rooms
        else:
            to = None
        try:
            await self._sio.emit(
                "peer_gone",
                {"peer": peer.id, "reason": reason},
                to=to,
                skip_sid=list(peer.members),
                namespace=self._namespace,
            )
        except Exception:
            self.stats.callback_failures += 1
            _logger.exception("heartbeat_monitor.socketio.notify_failed", peer=peer.id)

    def __repr__(self) -> str:
        return (
            f"<SocketIOAdapter namespace={self._namespace!r} event={self._event!r} "
            f"peers={len(self._peers)} timeout={self._timeout!r}>"
        )
