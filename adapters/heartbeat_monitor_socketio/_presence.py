"""Presence on Socket.IO: a new connection's rooms and fields, ``presence_sync``, delivery.

The rest of presence is the hub's (:class:`~heartbeat_monitor.Roster`): the
adapter's audience sends its ``presence_diff`` to a room and its
``presence_state`` to a list of sids with :func:`emit_now`: python-socketio's
``emit`` to this node's clients, without its task per recipient.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Mapping
from typing import Any

import socketio
import structlog

from heartbeat_monitor import CallbackRunner, Link, PeerHub

from . import _internals
from ._options import AdapterOptions

__all__ = ("MetaHook", "emit_now", "enter_rooms", "meta_of", "sync")

_logger = structlog.get_logger("heartbeat_monitor")

#: ``presence_meta(sid, environ, auth)``: a connection's presence fields (a small dict).
MetaHook = Callable[[str, Mapping[str, Any], Any], Mapping[str, object] | None]


def meta_of(
    hook: MetaHook | None, hub: PeerHub, sid: str, environ: Any, auth: Any
) -> Mapping[str, object] | None:
    """The fields ``hook`` gives a new connection, checked; a failing hook gives none (logged)."""
    try:
        return None if hook is None else hub.roster.check(hook(sid, environ, auth))
    except Exception:
        _logger.exception("heartbeat_monitor.socketio.presence_meta_failed", sid=sid)
        return None


def sync(hub: PeerHub, link: Link | None, args: tuple[Any, ...]) -> None:
    """The ``presence_sync`` event (``{"room": r}`` optional): a fresh state at the next flush."""
    data = args[1] if len(args) > 1 else None
    room = data.get("room") if isinstance(data, dict) else None
    if room is not None and not isinstance(room, str):
        hub.refuse_input("socketio", "wrong type: presence_sync 'room' must be a string")
    elif link is not None:
        hub.sync(link, room)


async def enter_rooms(
    sio: socketio.AsyncServer,
    hub: PeerHub,
    link: Link,
    sid: str,
    options: AdapterOptions,
    rooms: Collection[Hashable],
) -> None:
    """A new connection's rooms: the ``rooms`` the application's connect handler entered
    (the hub learns them; not the sid's own room nor ``None``), then the hub's ``room`` and
    the adapter's ``room`` (python-socketio learns them, and tells the hub through its room
    hooks)."""
    for name in rooms:
        if name is not None and name != sid:
            hub.join(link, name)
    room = options.room
    for name in {*(link.rooms or ()), *((room,) if room else ())}:
        await sio.enter_room(sid, name, namespace=options.namespace)


def emit_now(
    sio: socketio.AsyncServer,
    namespace: str,
    event: str,
    payload: object,
    to: Collection[Hashable],
    runner: CallbackRunner,
) -> bool:
    """``sio.emit(event, payload, to=to, ignore_queue=True)``, done now: encoded once, put
    on each recipient's engine.io queue (``to``: rooms or sids of this node).

    python-socketio's emit makes one task per recipient; a diff to a room of a thousand
    was a thousand tasks (their creation, and the garbage collections they set off, were
    a fifth of the server's time while 500 peers expired). A recipient whose connection
    engine.io must look at first (closed, ping overdue) gets the packet through engine.io's
    ``send_packet``, as a job. ``False`` (nothing sent) for a payload with attachments.
    """
    pkt = _internals.encode_event(sio, namespace, event, payload)
    if pkt is None:
        return False
    for _sid, eio_sid in sio.manager.get_participants(namespace, list(to)):
        if not _internals.queue_packet(sio, eio_sid, pkt):
            runner.spawn(sio.eio.send_packet, eio_sid, pkt)
    return True
