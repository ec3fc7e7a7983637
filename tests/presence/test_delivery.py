"""Presence's delivery on Socket.IO: ``emit_now`` queues what python-socketio's emit would.

A diff goes to a room of a thousand without python-socketio's task per recipient;
these tests hold it to the same frames, the same recipients, and engine.io's own
path for a connection engine.io must look at first.
"""

from __future__ import annotations

import time
from typing import Any, cast

import pytest
import socketio
from engineio.async_socket import AsyncSocket

from heartbeat_monitor import CallbackRunner
from heartbeat_monitor_socketio._presence import emit_now

pytestmark = pytest.mark.anyio

PAYLOAD = {
    "room": "peers",
    "seq": 7,
    "joins": {},
    "leaves": {
        "b": {"metas": [{"conn": "x.1", "name": "Zoë \u2603"}], "reason": "heartbeat timeout"}
    },
    "updates": {},
    "count": {"peers": 2, "connections": 2},
}


class Jobs:
    """Records the jobs ``emit_now`` hands to the runner, to run them when asked."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Any, tuple[Any, ...]]] = []

    def spawn(self, job: Any, *args: Any) -> None:
        self.jobs.append((job, args))

    async def run(self) -> None:
        for job, args in self.jobs:
            await job(*args)


def _server() -> socketio.AsyncServer:
    """Three connections: s0 and s1 in "peers", s2 not; s3 in "peers" in another namespace."""
    sio = socketio.AsyncServer(async_mode="asgi")
    manager = sio.manager
    for number, namespace in enumerate(("/", "/", "/", "/other")):
        sid, eio_sid = f"s{number}", f"e{number}"
        sio.eio.sockets[eio_sid] = AsyncSocket(sio.eio, eio_sid)
        manager.basic_enter_room(sid, namespace, None, eio_sid=eio_sid)
        manager.basic_enter_room(sid, namespace, sid, eio_sid=eio_sid)
        if number != 2:
            manager.basic_enter_room(sid, namespace, "peers")
    return sio


def _drain(sio: socketio.AsyncServer) -> dict[str, list[object]]:
    frames: dict[str, list[object]] = {}
    for eio_sid, socket in sio.eio.sockets.items():
        while not socket.queue.empty():
            frames.setdefault(eio_sid, []).append(socket.queue.get_nowait().encode())
    return frames


async def test_emit_now_queues_the_frames_python_socketios_emit_does() -> None:
    sio = _server()
    for to in (["peers"], ["s2"], ["s0", "s2"], ["nowhere"]):
        await sio.emit("presence_diff", PAYLOAD, to=to, namespace="/")
        expected = _drain(sio)
        jobs = Jobs()
        assert emit_now(sio, "/", "presence_diff", PAYLOAD, to, cast(CallbackRunner, jobs))
        assert _drain(sio) == expected, to
        assert jobs.jobs == []
    await sio.emit("presence_diff", PAYLOAD, to=["peers"], namespace="/")
    assert sorted(_drain(sio)) == ["e0", "e1"]  # the room, in this namespace only


async def test_a_connection_engineio_must_look_at_goes_through_engineio() -> None:
    """A closed connection is skipped as engine.io skips it; one whose ping is overdue is
    sent through engine.io's ``send_packet``, which closes it (as python-socketio's emit
    would): neither is queued behind engine.io's back."""
    sio = _server()
    sockets = sio.eio.sockets
    sockets["e0"].last_ping = time.time() - sio.eio.ping_timeout - 5
    sockets["e1"].closed = True
    jobs = Jobs()
    assert emit_now(sio, "/", "presence_diff", PAYLOAD, ["peers"], cast(CallbackRunner, jobs))
    assert _drain(sio) == {}
    assert [args[0] for _, args in jobs.jobs] == ["e0", "e1"]
    await jobs.run()
    assert sockets["e0"].closed  # engine.io's ping check closed it
    assert "e1" not in sockets  # engine.io dropped the closed one


async def test_a_payload_with_attachments_is_left_to_python_socketio() -> None:
    sio = _server()
    jobs = Jobs()
    payload = {"room": "peers", "blob": b"\x00\x01"}
    assert not emit_now(sio, "/", "presence_diff", payload, ["peers"], cast(CallbackRunner, jobs))
    assert _drain(sio) == {}
