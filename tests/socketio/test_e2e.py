"""Real python-socketio clients against the real server under uvicorn, on loopback."""

from __future__ import annotations

import time

import anyio
import pytest

from heartbeat_monitor_socketio import Reason

from .conftest import SLACK, StartServer

pytestmark = pytest.mark.anyio

INTERVAL = 0.2
MISSES = 2


async def test_silent_client_is_disconnected_and_others_told_once(
    start_server: StartServer,
) -> None:
    live = await start_server(interval=INTERVAL, misses=MISSES)
    a = await live.client(beat=True)
    b = await live.client(beat=True)
    silent = await live.client(beat=False)
    silent_sid = silent.sid
    started = time.monotonic()
    gone = await live.wait_gone(1, within=INTERVAL * MISSES + 2 * SLACK)
    elapsed = time.monotonic() - started
    assert gone == [(silent_sid, Reason.HEARTBEAT_TIMEOUT)]
    resolution = live.adapter.monitor.tracker.resolution
    assert elapsed <= INTERVAL * MISSES + resolution + SLACK
    await silent.disconnects.wait(1)
    for client in (a, b):
        events = await client.peer_gone.wait(1)
        assert events == [{"peer": silent_sid, "reason": "heartbeat timeout"}]
    # The beating clients stay: three more timeouts pass and nobody else is gone.
    with anyio.move_on_after(INTERVAL * MISSES * 3):
        await live.wait_gone(2, within=60)
    assert len(live.gone) == 1
    assert a.sio.connected
    assert b.sio.connected
    assert silent.peer_gone.items == []
