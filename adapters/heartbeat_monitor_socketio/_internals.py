"""Every python-socketio / python-engineio internal the adapter touches, in one place.

python-socketio has no public hook that sees every inbound event, every
engine.io frame or every room change, so the adapter wraps a few methods on
the server *instance* (never the class) and reads engine.io's socket table.
Each touch is one function here; ``tests/socketio/test_internals.py`` pins them
against the installed versions, so an upgrade that moves one fails loudly in
one place. Nothing else in the package reaches into python-socketio.

=========================================  ==========================================
internal                                   why
=========================================  ==========================================
``AsyncServer._trigger_event``             every connect, event and disconnect
``sio.eio.handlers["message"]``            frames python-socketio cannot decode raise here
``sio.eio.handlers["connect"]``            the engine.io sid a failing request opened
``sio.eio.handle_request``                 frames engine.io itself cannot decode
``sio.eio.sockets`` / ``Socket.close``     is a connection still open; close one at once
``manager.basic_enter_room`` / ``_leave``  room changes (the hub keeps rooms for notices)
``manager.basic_disconnect``               leave a sid's own rooms, not scan every room
``sio.packet_class`` / ``socket.queue``    presence: encode once, queue without a task each
``AsyncServer._binary_packet``             a frame that is a pending packet's attachment
=========================================  ==========================================
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

import socketio
from engineio import packet as eio_packet
from socketio import packet as sio_packet

from heartbeat_monitor import ConfigurationError

__all__ = (
    "awaiting_attachment",
    "close_now",
    "encode_event",
    "queue_packet",
    "transport_open",
    "wrap_eio",
    "wrap_rooms",
    "wrap_trigger_event",
)

AsyncHandler = Callable[..., Awaitable[Any]]


def wrap_trigger_event(sio: socketio.AsyncServer, wrapper: Callable[..., Any]) -> AsyncHandler:
    """Route every ``_trigger_event(event, namespace, *args)`` through ``wrapper``.

    Returns the original bound method, which the wrapper calls to pass through.
    """
    original: AsyncHandler | None = getattr(sio, "_trigger_event", None)
    if not callable(original):
        raise ConfigurationError(
            "this python-socketio has no AsyncServer._trigger_event; "
            "the adapter supports python-socketio 5.x"
        )
    sio._trigger_event = wrapper
    return original


def unwrap_trigger_event(sio: socketio.AsyncServer, original: AsyncHandler) -> None:
    sio._trigger_event = original


def wrap_eio(
    sio: socketio.AsyncServer,
    *,
    on_message: Callable[[AsyncHandler], AsyncHandler],
    on_connect: Callable[[AsyncHandler], AsyncHandler],
    on_request: Callable[[AsyncHandler], AsyncHandler],
) -> None:
    """Wrap engine.io's ``message`` and ``connect`` handlers and ``handle_request``.

    Each ``on_*`` receives the original and returns its replacement.
    """
    eio = sio.eio
    eio.on("message", on_message(eio.handlers["message"]))
    eio.on("connect", on_connect(eio.handlers["connect"]))
    eio.handle_request = on_request(eio.handle_request)


def wrap_rooms(
    sio: socketio.AsyncServer,
    namespace: str,
    entered: Callable[[str, Hashable], None],
    left: Callable[[str, Hashable], None],
) -> dict[str, set[Hashable]]:
    """Call ``entered(sid, room)`` / ``left(sid, room)`` on every room change in ``namespace``.

    Every way into or out of a room (``sio.enter_room``, ``leave_room``,
    ``close_room``, a disconnect, the Redis manager) goes through the manager's
    ``basic_enter_room`` / ``basic_leave_room``. A connection's own room (its
    sid) and the namespace-wide room (``None``) are not reported.

    Returns the index this keeps, sid -> the other rooms of ``namespace`` it is in (not
    its own nor ``None``, which every connected sid is in: no entry at all for a sid in
    no other room, issue 15's memory), with which ``basic_disconnect`` leaves a sid's
    rooms only: python-socketio's copies and scans every room of the namespace (one per
    sid), so a thousand disconnects among two thousand connections cost two million
    lookups. Sids connected before this wrapping are left to python-socketio's scan.
    """
    manager = sio.manager
    enter = manager.basic_enter_room
    leave = manager.basic_leave_room
    disconnect = manager.basic_disconnect
    index: dict[str, set[Hashable]] = {}
    earlier = set(manager.rooms.get(namespace, {}).get(None, {}))

    def basic_enter_room(
        sid: str, namespace_: str, room: Hashable, eio_sid: str | None = None
    ) -> Any:
        result = enter(sid, namespace_, room, eio_sid=eio_sid)
        if namespace_ == namespace and room is not None and room != sid:
            index.setdefault(sid, set()).add(room)
            entered(sid, room)
        return result

    def basic_leave_room(sid: str, namespace_: str, room: Hashable) -> Any:
        result = leave(sid, namespace_, room)
        if namespace_ == namespace and room is not None and room != sid:
            rooms = index.get(sid)
            if rooms is not None:
                rooms.discard(room)
                if not rooms:
                    del index[sid]
            left(sid, room)
        return result

    def basic_disconnect(sid: str, namespace_: str, **kwargs: Any) -> Any:
        if namespace_ != namespace or namespace_ not in manager.rooms or sid in earlier:
            earlier.discard(sid)
            return disconnect(sid, namespace_, **kwargs)
        # python-socketio's basic_disconnect, the room scan replaced by the index (pinned,
        # line for line, by tests/socketio/test_internals.py); leaving a room the sid is
        # not in changes nothing (python-socketio's basic_leave_room)
        for room in (None, sid, *index.get(sid, ())):
            manager.basic_leave_room(sid, namespace_, room)
        index.pop(sid, None)
        manager.callbacks.pop(sid, None)
        for pending in (manager.pending_connect, manager.pending_disconnect):
            sids = pending.get(namespace_)
            if sids is not None and sid in sids:
                sids.remove(sid)
                if not sids:
                    del pending[namespace_]
        return None

    manager.basic_enter_room = basic_enter_room
    manager.basic_leave_room = basic_leave_room
    manager.basic_disconnect = basic_disconnect
    return index


def awaiting_attachment(sio: socketio.AsyncServer, eio_sid: str) -> bool:
    """Whether python-socketio takes this connection's next frame as a binary attachment."""
    return eio_sid in sio._binary_packet


def _socket(sio: socketio.AsyncServer, eio_sid: str | None) -> Any:
    return None if eio_sid is None else sio.eio.sockets.get(eio_sid)


def transport_open(
    sio: socketio.AsyncServer,
    *,
    sid: str | None = None,
    eio_sid: str | None = None,
    namespace: str = "/",
) -> bool:
    """Whether the engine.io connection of ``sid`` (or ``eio_sid``) is still open."""
    if eio_sid is None and sid is not None:
        eio_sid = sio.manager.eio_sid_from_sid(sid, namespace)
    socket = _socket(sio, eio_sid)
    return socket is not None and not socket.closed and not socket.closing


async def close_now(sio: socketio.AsyncServer, eio_sid: str) -> bool:
    """Close an engine.io connection at once; ``False`` if it was not open.

    As engine.io's own disconnect, without waiting for a polling client to
    collect the close packet; then end engine.io's writer (as its reader does
    when a client leaves), so the transport closes now, not when the client
    obliges or ``ping_interval + ping_timeout`` have passed. python-socketio
    then runs the ``disconnect`` event as for any disconnect.
    """
    eio = sio.eio
    socket = _socket(sio, eio_sid)
    if socket is None or socket.closed or socket.closing:
        return False
    try:
        await socket.close(wait=False, reason=eio.reason.SERVER_DISCONNECT)
        socket.queue.put_nowait(None)
    finally:
        eio.sockets.pop(eio_sid, None)
    return True


def encode_event(
    sio: socketio.AsyncServer, namespace: str, event: str, payload: object
) -> Any | None:
    """The engine.io packet ``sio.emit(event, payload)`` sends each recipient, encoded once
    (as python-socketio's emit does without a callback); ``None`` if it has attachments."""
    encoded = sio.packet_class(sio_packet.EVENT, namespace=namespace, data=[event, payload])
    text = encoded.encode()
    return None if isinstance(text, list) else eio_packet.Packet(eio_packet.MESSAGE, text)


def queue_packet(sio: socketio.AsyncServer, eio_sid: str, pkt: Any) -> bool:
    """engine.io's ``AsyncSocket.send`` without a task: put ``pkt`` on the connection's
    queue (unbounded: ``put`` never waits); ``False`` where ``send`` would do more (no such
    socket, closed, or its ping overdue: ``send`` closes it), for the caller to send it so."""
    socket = _socket(sio, eio_sid)
    if socket is None or socket.closed:
        return False
    last_ping = socket.last_ping  # engine.io stamps it with time.time(): compared on its clock
    if last_ping and time.time() - last_ping > sio.eio.ping_timeout:
        return False
    socket.queue.put_nowait(pkt)
    return True
