"""Socket.IO as a transport: what is bad input on the wire, and the ``socketio`` entry point.

Bad input
=========

python-socketio decodes a client's frames in ``AsyncServer._handle_eio_message``
(the handler of engine.io's ``message`` event). What it cannot decode or
dispatch raises there, inside engine.io's handler task, where python-engineio
logs a traceback and keeps the connection. The adapter wraps that handler on
the server instance (as it wraps ``_trigger_event``) and, only when it raises,
asks :func:`diagnose` whether the frame was bad input; if so the sender is
refused (logged, counted, disconnected) instead of a traceback. The frames
that decode are never decoded twice: the hot path only adds the wrapper's call
and, with ``max_message_size``, a length check.

One layer down, a websocket frame that is not even an engine.io packet makes
python-engineio's websocket handler raise out of ``handle_request``, leaving
its socket open until a ping timeout. The adapter wraps ``handle_request`` as
well and refuses that socket: :func:`request_sid` finds it from the request's
``sid`` query or, for a connection opened by that very request, from
:data:`opening` (set by the adapter's engine.io ``connect`` hook in the
request's own context).

:class:`RefusalLog` keeps refusals from flooding the log: at most
``per_second`` lines a second, the next line saying how many were left out.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import Any, ClassVar, Final, final
from urllib.parse import parse_qs

import anyio
import anyio.abc
import socketio
import structlog

from heartbeat_monitor import PeerHub

__all__ = ("RefusalLog", "SocketIOTransport", "diagnose", "json_type", "opening", "request_sid")

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
class RefusalLog:
    """Log refusals, at most ``per_second`` lines a second (a flood of bad input is one line).

    A line left out is counted; the next line carries ``suppressed=<count>``.
    Real monotonic time: this paces the log, never liveness.
    """

    __slots__ = ("_logged", "_suppressed", "_window", "per_second")

    def __init__(self, per_second: int = 10) -> None:
        self.per_second = per_second
        self._window = -1.0
        self._logged = 0
        self._suppressed = 0

    def warning(self, event: str, **fields: Any) -> bool:
        """Log ``event`` unless this second's lines are spent; ``True`` if logged."""
        now = time.monotonic()
        if now - self._window >= 1.0:
            self._window = now
            self._logged = 0
        if self._logged >= self.per_second:
            self._suppressed += 1
            return False
        self._logged += 1
        if self._suppressed:
            fields["suppressed"] = self._suppressed
            self._suppressed = 0
        _logger.warning(event, **fields)
        return True


@final
class SocketIOTransport:
    """The ``socketio`` entry point: a python-socketio server in the seam's ``Transport`` shape.

    ``await SocketIOTransport(host, port).serve(hub)`` serves a new
    ``socketio.AsyncServer`` (or ``sio``) under uvicorn with a
    :class:`SocketIOAdapter` on ``hub.monitor``: one timer for all transports of
    a process. The peers are Socket.IO connections (sids, or identities), not the
    hub's sessions: each departure goes to the adapter's ``on_gone`` callbacks
    (``transport.adapter``, set while serving) and to the other clients as
    ``peer_gone``; refusals are counted in ``transport.adapter.stats.refused``. The heartbeat
    interval is the monitor's timeout / ``misses``. ``adapter_options`` go to
    :class:`SocketIOAdapter` (``room``, ``identify``, ``max_message_size``, ...).
    """

    name: ClassVar[str] = "socketio"

    __slots__ = ("_adapter_options", "_sio", "adapter", "host", "misses", "port")

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8000,
        *,
        misses: float = 2,
        sio: socketio.AsyncServer | None = None,
        **adapter_options: Any,
    ) -> None:
        self.host = host
        self.port = port
        self.misses = misses
        self._sio = sio
        self._adapter_options = adapter_options
        self.adapter: Any = None

    async def serve(
        self,
        hub: PeerHub,
        *,
        task_status: anyio.abc.TaskStatus[tuple[str, int]] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled; ``started`` with the bound (host, port)."""
        from ._adapter import SocketIOAdapter
        from ._server import SocketIOServer

        sio = self._sio if self._sio is not None else socketio.AsyncServer(async_mode="asgi")
        options = {"engineio": "fix", "room": "peers", **self._adapter_options}
        interval = hub.monitor.tracker.timeout / self.misses
        adapter = SocketIOAdapter(
            sio, hub.monitor, interval=interval, misses=self.misses, **options
        )
        self.adapter = adapter
        server = SocketIOServer(adapter, host=self.host, port=self.port)

        async def run(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            # Shielded: cancelling serve() stops uvicorn (below), which then shuts down in
            # full: every peer ends with "server shutdown" and the sockets are closed.
            with anyio.CancelScope(shield=True):
                await server.serve(task_status=task_status)

        try:
            async with anyio.create_task_group() as task_group:
                await task_group.start(run)
                task_status.started((server.host, server.port))
                try:
                    await anyio.sleep_forever()
                finally:
                    server.stop()  # bounded by uvicorn's graceful shutdown timeout
        finally:
            self.adapter = None
