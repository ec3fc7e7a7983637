"""Real python-socketio clients against the real server under uvicorn, on loopback."""

from __future__ import annotations

import time

import anyio
import pytest
import socketio

from heartbeat_monitor_socketio import Reason

from .conftest import SLACK, Client, RawClient, StartServer

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


async def assert_no_more(changes, count: int, within: float = 0.3) -> None:
    """Bounded check that nothing beyond ``count`` arrives (a duplicate would come right away)."""
    with anyio.move_on_after(within):
        await changes.wait(count + 1, within=within * 2)
    assert len(changes) == count, changes.items


async def test_clean_disconnect_gives_one_cleanup_and_one_notification(
    start_server: StartServer,
) -> None:
    live = await start_server(interval=INTERVAL, misses=MISSES)
    a = await live.client()
    b = await live.client()
    leaving = await live.client()
    sid = leaving.sid
    await leaving.close()
    gone = await live.wait_gone(1)
    # python-socketio's client closes its websocket right after queueing its goodbye.
    assert gone[0][0] == sid
    assert gone[0][1] in (Reason.CLIENT_DISCONNECT, Reason.TRANSPORT_CLOSE)
    for client in (a, b):
        assert await client.peer_gone.wait(1) == [{"peer": sid, "reason": gone[0][1]}]
    await assert_no_more(live.gone, 1)
    await assert_no_more(a.peer_gone, 1)
    assert sum(live.adapter.hub.gone.values()) == 1


async def test_abrupt_transport_loss_gives_one_cleanup_and_one_notification(
    start_server: StartServer,
) -> None:
    live = await start_server(interval=INTERVAL, misses=MISSES)
    a = await live.client()
    raw = await RawClient.open(live.url)
    sid = await raw.connect()
    await raw.send('42["heartbeat"]')
    raw.abort()
    gone = await live.wait_gone(1)
    assert gone == [(sid, Reason.TRANSPORT_CLOSE)]
    assert await a.peer_gone.wait(1) == [{"peer": sid, "reason": "transport close"}]
    await assert_no_more(live.gone, 1)
    await assert_no_more(a.peer_gone, 1)


async def test_engineio_ping_timeout_gives_one_cleanup(start_server: StartServer) -> None:
    # The app heartbeat is slow (3 s); engine.io pings every 1 s and waits 1 s for the pong
    # (engineio="ignore": the adapter would otherwise raise ping_timeout to 3 s + stretch).
    live = await start_server(
        interval=0.5,
        misses=6,
        engineio="ignore",
        sio_options={"ping_interval": 1, "ping_timeout": 1},
    )
    a = await live.client()
    raw = await RawClient.open(live.url)
    sid = await raw.connect()
    # It keeps beating at the Socket.IO level but never reads, so never answers a ping.
    async with anyio.create_task_group() as task_group:

        async def beat_blindly() -> None:
            while True:
                await raw.send('42["heartbeat"]')
                await anyio.sleep(0.2)

        task_group.start_soon(beat_blindly)
        gone = await live.wait_gone(1, within=6)
        task_group.cancel_scope.cancel()
    assert gone == [(sid, Reason.PING_TIMEOUT)]
    assert await a.peer_gone.wait(1) == [{"peer": sid, "reason": "ping timeout"}]
    await raw.close()


async def test_server_shutdown_ends_every_peer_once_without_notifications(
    start_server: StartServer,
) -> None:
    live = await start_server(interval=INTERVAL, misses=MISSES)
    a = await live.client()
    b = await live.client()
    sids = {a.sid, b.sid}
    await live.adapter.aclose()
    gone = await live.wait_gone(2)
    assert {peer for peer, _ in gone} == sids
    assert {reason for _, reason in gone} == {Reason.SERVER_SHUTDOWN}
    await a.disconnects.wait(1)
    await b.disconnects.wait(1)
    assert a.peer_gone.items == []
    assert b.peer_gone.items == []
    # New connections are refused once the adapter is closed.
    late = Client(live.url, "/", INTERVAL)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await late.connect()
    await late.close()
    await assert_no_more(live.gone, 2)


async def test_namespace_other_than_root(start_server: StartServer) -> None:
    live = await start_server(
        interval=INTERVAL, misses=MISSES, namespace="/chat", sio_options={"namespaces": "*"}
    )
    a = await live.client()
    silent = await live.client(beat=False)
    other_ns = await live.client(beat=False, namespace="/")
    gone = await live.wait_gone(1)
    assert gone == [(silent.sid, Reason.HEARTBEAT_TIMEOUT)]
    assert await a.peer_gone.wait(1) == [{"peer": silent.sid, "reason": "heartbeat timeout"}]
    assert other_ns.sio.connected  # the root namespace is not watched
    assert live.adapter.peer_of(other_ns.sid) is None


async def test_peer_gone_goes_to_the_rooms_the_peer_was_in_only(start_server: StartServer) -> None:
    def setup(sio: socketio.AsyncServer) -> None:
        @sio.event
        async def connect(sid, environ, auth):
            if auth and auth.get("room"):
                await sio.enter_room(sid, auth["room"])

    live = await start_server(interval=INTERVAL, misses=MISSES, room=None, setup=setup)
    friend = await live.client(auth={"room": "r1"})
    stranger = await live.client(auth={"room": "r2"})
    loner = await live.client()
    silent = await live.client(beat=False, auth={"room": "r1"})
    await live.wait_gone(1)
    assert await friend.peer_gone.wait(1) == [{"peer": silent.sid, "reason": "heartbeat timeout"}]
    await assert_no_more(friend.peer_gone, 1)
    assert stranger.peer_gone.items == []
    assert loner.peer_gone.items == []


async def test_notify_namespace_tells_everyone_else(start_server: StartServer) -> None:
    live = await start_server(interval=INTERVAL, misses=MISSES, room=None, scope="namespace")
    a = await live.client()
    b = await live.client()
    silent = await live.client(beat=False)
    await live.wait_gone(1)
    for client in (a, b):
        assert await client.peer_gone.wait(1) == [
            {"peer": silent.sid, "reason": "heartbeat timeout"}
        ]
    assert silent.peer_gone.items == []


async def test_server_shutdown_can_tell_everyone_once(start_server: StartServer) -> None:
    live = await start_server(interval=INTERVAL, misses=MISSES)
    a = await live.client()
    b = await live.client()
    await live.adapter.aclose(notify=True)
    await live.wait_gone(2)
    assert await a.peer_gone.wait(1) == [{"peer": b.sid, "reason": "server shutdown"}]
    assert await b.peer_gone.wait(1) == [{"peer": a.sid, "reason": "server shutdown"}]
    await assert_no_more(a.peer_gone, 1)
