"""A message's wait, where the server can see it, counts for the stretch.

``OverloadGuard.observe_wait`` on a manual timeline; and Socket.IO's server
(uvicorn's websocket protocol, subclassed in ``_server.py``) reporting the age of
each message engine.io takes, with a real server and a real client.
"""

from __future__ import annotations

import inspect

import anyio
import pytest
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from heartbeat_monitor import OverloadGuard
from tests.socketio.conftest import StartServer


def test_a_wait_stretches_by_itself_plus_the_lag_then_leaves_the_window():
    guard = OverloadGuard(2.0, shed_lag=0.25)
    guard.observe(0.1, 0.0)
    guard.observe_wait(0.5, 1.0)  # waited 0.5 s, and has the lag's path still to go
    assert guard.stretch_at(1.0) == pytest.approx(0.6)
    assert (guard.wait, guard.max_wait, guard.waits) == (0.5, 0.5, 1)
    assert guard.max_lag == pytest.approx(0.6)
    assert guard.lag == 0.1  # the lag (which sheds) is the probe's alone
    assert not guard.shedding
    guard.observe_wait(0.0, 1.5)  # a shorter one later does not hide it within the window
    assert guard.stretch_at(2.9) == pytest.approx(0.6)
    assert guard.stretch_at(3.1) == pytest.approx(0.1)  # the later one: 0 + the lag then
    assert guard.snapshot()["max_wait"] == 0.5


def test_uvicorns_receive_is_the_one_the_server_copies():
    """``_server._timed`` replaces uvicorn's ``receive`` with a copy plus the timing."""
    source = inspect.getsource(WebSocketsSansIOProtocol.receive)
    assert "message = await self.queue.get()" in source
    assert "if self.read_paused and self.queue.empty():" in source
    assert "self.transport.resume_reading()" in source
    assert "self.transport.pause_reading()" in inspect.getsource(
        WebSocketsSansIOProtocol.send_receive_event_to_app
    )


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_socketio_server_reports_each_messages_wait(start_server: StartServer) -> None:
    live = await start_server(interval=0.2, misses=5)
    guard = live.adapter.monitor.overload
    before = guard.waits
    client = await live.client()  # beats every 0.2 s over a websocket
    with anyio.fail_after(10):
        while guard.waits < before + 5:  # noqa: ASYNC110 -- a counter, bounded by fail_after
            await anyio.sleep(0.05)
    assert client.sio.connected
    assert 0 <= guard.max_wait <= guard.max_lag


def test_waits_past_shed_lag_shed_before_the_lag_shows_it():
    guard = OverloadGuard(2.0, shed_lag=0.25)
    now = 0.0
    while now < 0.45:  # messages wait 0.5 s while the loop itself is quick
        guard.observe_wait(0.5, now)
        guard.observe(0.01, now)
        now = round(now + 0.1, 3)
    assert guard.snapshot()["shedding"] is False  # not yet: most measures for shed_after
    while now < 1.25:
        guard.observe_wait(0.5, now)
        guard.observe(0.01, now)
        now = round(now + 0.1, 3)
    assert guard.snapshot()["shedding"] is True
    assert guard.lag == 0.01
    while guard.shedding and now < 5:  # the waits stop: most measures quiet for 1 s
        guard.observe(0.01, now)
        now = round(now + 0.1, 3)
    assert not guard.shedding
    assert now >= 1.25 + guard.recover_after
