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
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Final
from urllib.parse import parse_qs

import socketio

__all__ = ("diagnose", "json_type", "opening", "request_sid")

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
