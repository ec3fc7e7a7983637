"""What is bad input on a Socket.IO connection: frames python-socketio or engine.io choke on.

python-socketio decodes a client's frames in ``AsyncServer._handle_eio_message``
(the handler of engine.io's ``message`` event). What it cannot decode or
dispatch raises there, inside engine.io's handler task, where python-engineio
logs a traceback and keeps the connection. The adapter wraps that handler on
the server instance (as it wraps ``_trigger_event``) and, only when it raises,
asks :func:`diagnose` whether the frame was bad input; if so the sender is
refused (logged, counted, disconnected) instead of a traceback. The frames
that decode are never decoded twice: the hot path only adds the wrapper's call
and, with ``max_message_size``, a length check. The wrappers themselves are
installed by :mod:`._internals`.

One layer down, a websocket frame that is not even an engine.io packet makes
python-engineio's websocket handler raise out of ``handle_request``, leaving
its socket open until a ping timeout. The adapter wraps ``handle_request`` as
well and refuses that socket: :func:`request_sid` finds it from the request's
``sid`` query or, for a connection opened by that very request, from
:data:`opening` (set by the adapter's engine.io ``connect`` hook in the
request's own context).

Below python-engineio, :class:`HeartbeatProtocol` (uvicorn's websocket protocol,
``adapter.websocket_protocol()``) takes a websocket text frame that is exactly a
heartbeat (``4`` + one of :func:`heartbeat_packets`) as uvicorn parses it, before
it is queued for the ASGI application: when nothing of that connection is
queued (never ahead of an earlier frame), its engine.io sid is known, a frame
went to engine.io within half a ``ping_interval`` (its read loop's own timeout
must not fire for a client that beats) and ``fast_beat(eio_sid)`` takes it.
engine.io's read loop, packet decoding and ``message`` handler then never run
for it; everything else is queued as usual.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, Final, final
from urllib.parse import parse_qs

import socketio
import structlog
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame

from heartbeat_monitor import PeerHub

from . import _internals
from ._connection import Outbox
from ._limits import install_limits

__all__ = (
    "FrameGuard",
    "HeartbeatProtocol",
    "diagnose",
    "heartbeat_packets",
    "json_type",
    "opening",
    "request_sid",
)

_logger = structlog.get_logger("heartbeat_monitor")

#: python-socketio's packet types (``socketio.packet``): CONNECT .. BINARY_ACK.
_PACKET_TYPES: Final = range(7)
_EVENT_TYPES: Final = (2, 5)  # EVENT, BINARY_EVENT


def diagnose(sio: socketio.AsyncServer, data: str | bytes) -> str | None:
    """Why python-socketio could not take ``data`` (a frame that raised), or ``None``.

    ``"malformed: ..."`` for a frame that is not a Socket.IO packet, ``"wrong type:
    ..."`` for an event packet whose payload is not an array starting with a string
    name (which python-socketio indexes blindly), ``None`` when the packet is fine:
    then the error came from elsewhere (a connect handler, say) and is not the
    client's input.
    """
    try:
        packet = sio.packet_class(encoded_packet=data)
    except Exception as exc:  # python-socketio raises ValueError, TypeError, ...
        return f"malformed: not a Socket.IO packet ({type(exc).__name__}: {exc})"[:200]
    kind = packet.packet_type
    if kind not in _PACKET_TYPES:
        return f"malformed: unknown packet type {kind!r:.20}"
    if kind in _EVENT_TYPES:
        payload = packet.data
        if not isinstance(payload, list):
            return f"wrong type: an event must be an array, got {json_type(payload)}"
        if not payload:
            return "wrong type: an event must be an array, got an empty one"
    if kind == 4:  # CONNECT_ERROR goes from server to client only
        return "malformed: a client sent CONNECT_ERROR"
    return None


#: The engine.io sid a request opened (set in the request's own context by the adapter's
#: engine.io ``connect`` hook, read if the request then fails).
opening: ContextVar[str | None] = ContextVar("heartbeat_monitor_socketio_opening", default=None)


def request_sid(args: tuple[Any, ...]) -> str | None:
    """The engine.io sid of a failed ASGI request: its ``sid`` query, else the one it opened."""
    scope = args[0] if args else None
    if isinstance(scope, dict):
        query = scope.get("query_string", b"")
        if isinstance(query, bytes) and b"sid=" in query:
            sids = parse_qs(query.decode("latin-1")).get("sid")
            if sids:
                return sids[0]
    return opening.get()


def json_type(value: object) -> str:
    names = {dict: "object", str: "string", int: "number", float: "number", bool: "boolean"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


@final
class FrameGuard:
    """Refuses bad frames: wraps engine.io's handlers (via :mod:`._internals`) around
    python-socketio's, and ends the sender's connection through the hub."""

    __slots__ = (
        "fast_beat",
        "fast_packets",
        "hub",
        "max_message_size",
        "namespace",
        "outbox",
        "protocol",
        "sio",
    )

    def __init__(
        self,
        sio: socketio.AsyncServer,
        hub: PeerHub,
        outbox: Outbox,
        *,
        namespace: str,
        max_message_size: int | None,
        fast_packets: frozenset[str] = frozenset(),
        fast_beat: Callable[[str], bool] | None = None,
    ) -> None:
        #: Frames that are exactly a heartbeat, handed to ``fast_beat(eio_sid)`` first; it
        #: returns ``False`` to let python-socketio dispatch the frame as usual.
        self.fast_packets = fast_packets
        self.fast_beat = fast_beat
        self.sio = sio
        self.hub = hub
        self.outbox = outbox
        self.namespace = namespace
        self.max_message_size = max_message_size
        #: The uvicorn websocket protocol taking heartbeat frames (built on first use).
        self.protocol: type[HeartbeatProtocol] | None = None
        _internals.wrap_eio(
            sio,
            on_message=self.wrap_message,
            on_connect=self.wrap_connect,
            on_request=self.wrap_request,
        )
        install_limits(sio, self.refuse, request_sid)  # outermost: _limits.py

    async def refuse(
        self, reason: str, *, sid: str | None = None, eio_sid: str | None = None
    ) -> Any:
        """Refuse bad input: the hub ends that connection (``refused: <kind>``)."""
        manager = self.sio.manager
        namespace = self.namespace
        if sid is None and eio_sid is not None:
            sid = manager.sid_from_eio_sid(eio_sid, namespace)
        link = None if sid is None else self.outbox.links.get(sid)
        if link is not None and not link.ended:
            self.hub.refuse(link, reason)  # its connection's close is the engine.io close
            return self.sio.not_handled
        self.hub.refuse_input("socketio", reason, sid=sid, eio_sid=eio_sid)
        if eio_sid is None and sid is not None:
            eio_sid = manager.eio_sid_from_sid(sid, namespace)
        if eio_sid is not None:
            try:
                await _internals.close_now(self.sio, eio_sid)
            except Exception:
                _logger.exception("heartbeat_monitor.socketio.disconnect_failed", sid=sid)
        return self.sio.not_handled

    def websocket_protocol(self) -> type[HeartbeatProtocol]:
        """uvicorn's websocket protocol bound to this guard's heartbeat frames and ``fast_beat``."""
        if self.protocol is None:
            frames = frozenset(b"4" + packet.encode() for packet in self.fast_packets)
            beat = self.fast_beat or (lambda eio_sid: False)
            eio = self.sio.eio

            class BoundHeartbeatProtocol(HeartbeatProtocol):
                def handle_text(self, event: Frame) -> None:
                    data, eio_sid, now = event.data, self.eio_sid, self.loop.time()
                    if (
                        eio_sid is not None
                        and type(data) is bytes
                        and data in frames
                        and event.fin
                        and self.queue.empty()  # nothing of this connection's waits before it
                        and now - self.fed_at < eio.ping_interval / 2
                        and not self.close_sent
                        and beat(eio_sid)
                    ):
                        self.beat_taken()
                        return
                    self.fed_at = now
                    super().handle_text(event)

            self.protocol = BoundHeartbeatProtocol
        return self.protocol

    def wrap_message(self, original: _internals.AsyncHandler) -> _internals.AsyncHandler:
        async def on_message(eio_sid: str, data: str | bytes) -> None:
            """engine.io's ``message`` handler, around python-socketio's: refuse bad frames."""
            if data in self.fast_packets and self.fast_beat is not None and self.fast_beat(eio_sid):
                return  # a heartbeat, taken without python-socketio's decoding and dispatch
            limit = self.max_message_size
            if limit is not None and len(data) > limit:
                unit = "bytes" if isinstance(data, bytes) else "characters"
                await self.refuse(f"oversized: {len(data)} {unit} > {limit}", eio_sid=eio_sid)
                return
            try:
                await original(eio_sid, data)
            except Exception:
                reason = diagnose(self.sio, data)
                if reason is None:
                    raise  # not the client's input: engine.io logs it, as before
                await self.refuse(reason, eio_sid=eio_sid)

        return on_message

    def wrap_connect(self, original: _internals.AsyncHandler) -> _internals.AsyncHandler:
        async def on_connect(eio_sid: str, environ: Any) -> Any:
            opening.set(eio_sid)  # the request's own context: read by on_request
            return await original(eio_sid, environ)

        return on_connect

    def wrap_request(self, original: _internals.AsyncHandler) -> _internals.AsyncHandler:
        async def on_request(*args: Any, **kwargs: Any) -> Any:
            """Refuse a websocket whose frame engine.io itself choked on."""
            try:
                return await original(*args, **kwargs)
            except ValueError as exc:  # python-engineio's packet decoding (int(), base64, empty)
                eio_sid = request_sid(args)
                if eio_sid is None:
                    raise
                if not _internals.transport_open(self.sio, eio_sid=eio_sid):
                    return None  # refused or closed already: a late bad frame changes nothing
                reason = f"malformed: not an engine.io packet ({exc})"
                await self.refuse(reason[:200], eio_sid=eio_sid)
                return None  # refused and logged: no traceback per bad client

        return on_request


class HeartbeatProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websocket protocol, learning the engine.io sid of its connection.

    The sid is the ``sid`` query of an upgrade, once engine.io answered its probe
    (``3probe``: engine.io knows that session), or the one in engine.io's OPEN packet
    (``0{"sid": ...}``) for a websocket-only session; only on engine.io requests
    (``EIO=`` and ``transport=websocket`` in the query), so another application's
    websockets under the same server are left alone. :meth:`FrameGuard.websocket_protocol`
    binds a subclass to an adapter's heartbeat frames; ``tests/socketio/test_fastws.py``
    pins the uvicorn internals used here.
    """

    #: The engine.io sid of this connection, once known.
    eio_sid: str | None = None
    #: When a text frame was last queued for engine.io (``loop.time()``). python-engineio's
    #: websocket loop closes a connection that sent it nothing for ``ping_interval +
    #: ping_timeout`` (as "transport close", racing its ping timeout): a heartbeat is
    #: queued as usual when none was for half a ``ping_interval``, which keeps that loop
    #: seeing what it saw before for a client that beats.
    fed_at = float("-inf")

    def beat_taken(self) -> None:
        """A heartbeat frame was taken before queueing (the overload timing hooks in here)."""

    async def send(self, message: Any) -> None:
        if self.eio_sid is None and message["type"] == "websocket.send":
            text = message.get("text")
            if text is not None:
                self.eio_sid = self.learn_sid(text)
        await super().send(message)

    def learn_sid(self, text: str) -> str | None:
        """The engine.io sid an outgoing text frame shows, if any (``None``: not yet)."""
        query = self.scope.get("query_string", b"")
        if b"EIO=" not in query or b"transport=websocket" not in query:
            return None
        if text == "3probe":  # engine.io took the upgrade probe of the session in the query
            sids = parse_qs(query.decode("latin-1")).get("sid")
            return sids[0] if sids else None
        if text.startswith("0{"):
            try:
                sid = json.loads(text[1:]).get("sid")
            except (ValueError, AttributeError):
                return None
            return sid if isinstance(sid, str) else None
        return None


def heartbeat_packets(event: str, namespace: str) -> frozenset[str]:
    """The Socket.IO EVENT packets that are exactly ``emit(event)`` in ``namespace``."""
    body = json.dumps([event], separators=(",", ":"))
    prefix = "2" if namespace == "/" else f"2{namespace},"
    return frozenset({prefix + body, prefix + json.dumps([event])})
