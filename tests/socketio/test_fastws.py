"""Heartbeat frames taken in uvicorn's websocket protocol (``adapter.websocket_protocol()``).

Real server (``SocketIOServer``, whose uvicorn runs the adapter's protocol), real
websockets on loopback. What reaches engine.io is seen by counting the calls of
engine.io's ``message`` handler (the adapter's FrameGuard around python-socketio's).
"""

from __future__ import annotations

import inspect
from typing import Any

import anyio
import pytest
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from heartbeat_monitor import ManualClock
from tests.socketio.conftest import Live, RawClient, StartServer

BEAT = '42["heartbeat"]'


def count_messages(live: Live) -> list[str]:
    """Every packet engine.io hands its ``message`` handler from now on, in order."""
    seen: list[str] = []
    eio = live.sio.eio
    original = eio.handlers["message"]

    async def counting(eio_sid: str, data: Any) -> Any:
        seen.append(data)
        return await original(eio_sid, data)

    eio.on("message", counting)
    return seen


async def until(condition: Any, within: float = 5.0) -> None:
    with anyio.fail_after(within):
        while not condition():  # noqa: ASYNC110 -- counters, bounded by fail_after
            await anyio.sleep(0.01)


async def send_together(raw: RawClient, *texts: str) -> None:
    """Several websocket frames in one write: uvicorn reads them in one chunk."""
    ws = raw.ws
    for text in texts:
        ws.protocol.send_text(text.encode())
    ws.transport.write(b"".join(ws.protocol.data_to_send()))


def test_the_uvicorn_internals_the_protocol_relies_on() -> None:
    """``HeartbeatProtocol`` overrides ``handle_text`` and ``send``; it reads ``queue``,
    ``close_sent`` and ``scope``: uvicorn must still route text frames and sends there."""
    assert "self.handle_text(event)" in inspect.getsource(WebSocketsSansIOProtocol.handle_events)
    handle_text = inspect.getsource(WebSocketsSansIOProtocol.handle_text)
    assert "self.send_receive_event_to_app()" in handle_text
    assert "self.queue.put_nowait" in inspect.getsource(
        WebSocketsSansIOProtocol.send_receive_event_to_app
    )
    assert "self.app(self.scope, self.receive, self.send)" in inspect.getsource(
        WebSocketsSansIOProtocol.run_asgi
    )
    assert "close_sent" in inspect.getsource(WebSocketsSansIOProtocol.__init__)


@pytest.mark.anyio
async def test_a_heartbeat_frame_beats_without_reaching_engineio(start_server: StartServer) -> None:
    live = await start_server(interval=0.5, misses=4)
    seen = count_messages(live)
    raw = await RawClient.open(live.url)
    try:
        await raw.connect()
        before = list(seen)
        for _ in range(3):
            await raw.send(BEAT)
            await anyio.sleep(0.06)  # past min_beat_gap (interval / 10): each one counts
        await until(lambda: live.adapter.stats.beats >= 3)
        assert live.adapter.stats.beats == 3
        assert seen == before  # none of them reached engine.io's message handler
        assert live.adapter.stats.beats_limited == 0
    finally:
        await raw.close()


@pytest.mark.anyio
async def test_a_heartbeat_behind_a_queued_frame_is_not_taken_ahead(
    start_server: StartServer,
) -> None:
    notes: list[str] = []

    def setup(sio: Any) -> None:
        @sio.on("note")  # type: ignore[untyped-decorator]
        async def note(sid: str, *args: Any) -> None:
            notes.append(sid)

    live = await start_server(interval=0.5, misses=4, setup=setup)
    seen = count_messages(live)
    raw = await RawClient.open(live.url)
    try:
        await raw.connect()
        assert seen == ["0"]  # the namespace connect
        await send_together(raw, '42["note"]', BEAT)
        await until(lambda: len(seen) >= 3 and live.adapter.stats.beats >= 1)
        # The beat came behind a frame still queued: it went the usual way, in order.
        assert seen == ["0", '2["note"]', '2["heartbeat"]']
        assert live.adapter.stats.beats == 1
        await until(lambda: len(notes) == 1)  # the other frame is delivered as before
        assert notes == [raw.sid]
    finally:
        await raw.close()


@pytest.mark.anyio
async def test_a_flood_of_heartbeat_frames_is_still_rate_limited(
    start_server: StartServer,
) -> None:
    live = await start_server(interval=1.0, misses=2, clock=ManualClock())
    seen = count_messages(live)
    raw = await RawClient.open(live.url)
    try:
        await raw.connect()
        before = list(seen)
        await send_together(raw, *[BEAT] * 50)
        stats = live.adapter.stats
        await until(lambda: stats.beats + stats.beats_limited >= 50)
        # The clock did not move: only the first beat counts (min_beat_gap = interval / 10).
        assert (stats.beats, stats.beats_limited) == (1, 49)
        assert seen == before
    finally:
        await raw.close()


@pytest.mark.anyio
async def test_a_heartbeat_before_the_namespace_connect_goes_the_usual_way(
    start_server: StartServer,
) -> None:
    live = await start_server(interval=0.5, misses=4)
    seen = count_messages(live)
    raw = await RawClient.open(live.url)
    try:
        await raw.send(BEAT)  # engine.io session open, Socket.IO namespace not connected
        await until(lambda: len(seen) >= 1)
        assert seen == ['2["heartbeat"]']  # python-socketio got it, as without the protocol
        assert live.adapter.stats.beats == 0
        await raw.connect()
        await raw.send(BEAT)
        await until(lambda: live.adapter.stats.beats >= 1)
        assert seen == ['2["heartbeat"]', "0"]  # the connect only: the beat was taken
        assert raw.ws.state.name == "OPEN"
    finally:
        await raw.close()


@pytest.mark.anyio
async def test_after_an_upgrade_from_polling_heartbeats_are_taken(
    start_server: StartServer,
) -> None:
    live = await start_server(interval=0.2, misses=5)
    seen = count_messages(live)
    client = await live.client(transports=["polling", "websocket"])
    await until(lambda: client.sio.transport() == "websocket")
    beats, before = live.adapter.stats.beats, len(seen)
    await until(lambda: live.adapter.stats.beats >= beats + 3)
    assert len(seen) == before  # beats over the upgraded websocket never reach engine.io
    assert live.gone.items == []
