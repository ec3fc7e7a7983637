"""The adapter's contract on a real server: identity mode, user handlers untouched, exact time."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import socketio
from structlog.testing import capture_logs

from heartbeat_monitor import ManualClock
from heartbeat_monitor_socketio import Reason

from .conftest import StartServer

pytestmark = pytest.mark.anyio

INTERVAL = 0.2
MISSES = 2


def by_user(sid: str, environ: Any, auth: Any) -> str | None:
    return auth.get("user") if isinstance(auth, dict) else None


async def test_identity_stays_while_any_connection_beats(start_server: StartServer) -> None:
    live = await start_server(interval=INTERVAL, misses=MISSES, identify=by_user)
    watcher = await live.client(auth={"user": "watcher"})
    beating = await live.client(auth={"user": "alice"})
    quiet = await live.client(beat=False, auth={"user": "alice"})
    assert live.adapter.peer_of(beating.sid) == live.adapter.peer_of(quiet.sid) == "alice"
    assert sorted(map(str, live.adapter.peers())) == ["alice", "watcher"]
    # Several timeouts pass: alice's quiet tab is covered by the beating one.
    with anyio.move_on_after(INTERVAL * MISSES * 3):
        await live.wait_gone(1, within=60)
    assert live.gone.items == []
    assert quiet.sio.connected
    # The beating tab stops too: alice is gone once, both tabs are disconnected.
    await beating.heartbeat.stop()
    gone = await live.wait_gone(1)
    assert gone == [("alice", Reason.HEARTBEAT_TIMEOUT)]
    await beating.disconnects.wait(1)
    await quiet.disconnects.wait(1)
    assert await watcher.peer_gone.wait(1) == [{"peer": "alice", "reason": "heartbeat timeout"}]
    with anyio.move_on_after(0.3):
        await watcher.peer_gone.wait(2, within=1)
    assert len(watcher.peer_gone) == 1


async def test_identity_gone_only_when_its_last_connection_leaves(
    start_server: StartServer,
) -> None:
    live = await start_server(interval=INTERVAL, misses=MISSES, identify=by_user)
    watcher = await live.client(auth={"user": "watcher"})
    first = await live.client(auth={"user": "bob"})
    second = await live.client(auth={"user": "bob"})
    await first.close()
    with anyio.move_on_after(INTERVAL * MISSES * 2):
        await live.wait_gone(1, within=60)
    assert live.gone.items == []
    assert watcher.peer_gone.items == []
    await second.close()
    gone = await live.wait_gone(1)
    assert gone[0][0] == "bob"
    assert await watcher.peer_gone.wait(1) == [{"peer": "bob", "reason": gone[0][1]}]


async def test_user_handlers_see_what_they_always_saw(start_server: StartServer) -> None:
    seen: list[tuple[Any, ...]] = []

    def setup(sio: socketio.AsyncServer) -> None:
        @sio.event
        async def connect(sid, environ, auth):
            seen.append(("connect", sid, auth))
            if isinstance(auth, dict) and auth.get("deny"):
                return False
            return None

        @sio.on("heartbeat")
        async def heartbeat(sid, *args):
            seen.append(("heartbeat", sid, args))
            return "pong"

        @sio.on("chat")
        def chat(sid, data):
            seen.append(("chat", sid, data))
            return {"echo": data}

        @sio.on("*")
        async def anything(event, sid, *args):
            seen.append(("*", event, sid, args))
            return "caught"

        @sio.event
        def disconnect(sid, reason):
            seen.append(("disconnect", sid, reason))

    live = await start_server(
        interval=INTERVAL, misses=MISSES, any_event=True, min_beat_gap=0, setup=setup
    )
    talker = await live.client(beat=False, auth={"token": 1})
    # Acks and arguments pass through unchanged, and any event counts as a beat.
    assert await talker.sio.call("heartbeat", {"n": 1}, timeout=5) == "pong"
    assert await talker.sio.call("chat", "hi", timeout=5) == {"echo": "hi"}
    assert await talker.sio.call("other", [1, 2], timeout=5) == "caught"
    assert ("heartbeat", talker.sid, ({"n": 1},)) in seen
    assert ("chat", talker.sid, "hi") in seen
    assert ("*", "other", talker.sid, ([1, 2],)) in seen
    assert ("connect", talker.sid, {"token": 1}) in seen
    assert live.adapter.stats.beats == 3
    # Chatting alone keeps a client alive when any event counts.
    async with anyio.create_task_group() as task_group:

        async def chatter() -> None:
            while True:
                await talker.sio.emit("chat", "still here")
                await anyio.sleep(INTERVAL / 2)

        task_group.start_soon(chatter)
        with anyio.move_on_after(INTERVAL * MISSES * 3):
            await live.wait_gone(1, within=60)
        task_group.cancel_scope.cancel()
    assert live.gone.items == []
    # A refused connection is never tracked; a silent one is, and the user's disconnect
    # handler learns why it went.
    with pytest.raises(socketio.exceptions.ConnectionError):
        await live.client(beat=False, auth={"deny": True})
    assert len(live.adapter) == 1
    await live.wait_gone(1)
    assert ("disconnect", talker.sid, Reason.HEARTBEAT_TIMEOUT) in seen


async def test_heartbeat_without_user_handler_is_acked(start_server: StartServer) -> None:
    live = await start_server(interval=INTERVAL, misses=MISSES)
    client = await live.client(beat=False)
    assert await client.sio.call("heartbeat", timeout=5) is None
    assert live.adapter.stats.beats == 1


@pytest.mark.parametrize("namespace", ["/", "/live"])
async def test_plain_heartbeats_take_the_short_path_unless_the_app_listens(
    start_server: StartServer, namespace: str
) -> None:
    """``emit("heartbeat")`` with no handler of the application's is beaten before
    python-socketio decodes it; once the application handles heartbeats, they reach it."""
    seen: list[str] = []
    live = await start_server(
        interval=1.0, misses=2, min_beat_gap=0, namespace=namespace, sio_options={"namespaces": "*"}
    )
    dispatched: list[str] = []
    original = live.sio._handle_event

    async def spy(eio_sid: str, namespace_: str, id: Any, data: Any) -> None:
        dispatched.append(data[0])
        await original(eio_sid, namespace_, id, data)

    live.sio._handle_event = spy  # python-socketio's dispatch of a decoded event
    client = await live.client(beat=False)
    for _ in range(3):
        await client.sio.emit("heartbeat", namespace=namespace)
    with anyio.fail_after(5):
        while live.adapter.stats.beats < 3:  # noqa: ASYNC110 -- a counter, bounded
            await anyio.sleep(0.01)
    assert dispatched == []

    @live.sio.on("heartbeat", namespace=namespace)  # type: ignore[untyped-decorator]
    def heartbeat(sid: str, *args: Any) -> None:
        seen.append(sid)

    await client.sio.emit("heartbeat", namespace=namespace)
    with anyio.fail_after(5):
        while not seen:  # noqa: ASYNC110 -- a list filled by the handler, bounded
            await anyio.sleep(0.01)
    assert seen == [client.sio.get_sid(namespace)]
    assert dispatched == ["heartbeat"]
    assert live.adapter.stats.beats == 4


async def test_never_early_at_most_one_resolution_late(start_server: StartServer) -> None:
    clock = ManualClock()
    live = await start_server(interval=1.0, misses=2, clock=clock, resolution=0.1)
    client = await live.client(beat=False)
    monitor = live.adapter.monitor
    clock.advance(1.5)
    assert await client.sio.call("heartbeat", timeout=5) is None  # beat at t=1.5
    clock.advance(2.0)  # exactly at the deadline (3.5): still alive
    await monitor.wait_idle()
    assert live.gone.items == []
    assert client.sio.connected
    clock.advance(0.1 + 1e-6)  # one resolution past the deadline: gone
    await monitor.wait_idle()
    assert live.gone.items == [(client.sid, Reason.HEARTBEAT_TIMEOUT)]
    await client.disconnects.wait(1)


async def test_flood_is_rate_limited_and_logged(start_server: StartServer) -> None:
    clock = ManualClock()
    live = await start_server(interval=1.0, misses=2, clock=clock)
    flooder = await live.client(beat=False)
    with capture_logs() as logs:
        for _ in range(50):
            await flooder.sio.call("heartbeat", timeout=5)
    # The clock did not move: only the first beat counts (min_beat_gap = interval / 10).
    assert live.adapter.stats.beats == 1
    assert live.adapter.stats.beats_limited == 49
    limited = [log for log in logs if log["event"] == "heartbeat_monitor.socketio.beats_limited"]
    assert len(limited) == 1
    assert limited[0]["peer"] == flooder.sid
    clock.advance(0.1)
    await flooder.sio.call("heartbeat", timeout=5)
    assert live.adapter.stats.beats == 2


@pytest.mark.parametrize("order", ["expire_first", "leave_first", "together"])
async def test_expiry_racing_a_disconnect_ends_the_peer_once(
    start_server: StartServer, order: str
) -> None:
    clock = ManualClock()
    live = await start_server(interval=1.0, misses=2, clock=clock)
    client = await live.client(beat=False)
    monitor = live.adapter.monitor
    if order == "expire_first":
        clock.advance(3)
        await client.sio.disconnect()
    elif order == "leave_first":
        await client.sio.disconnect()
        clock.advance(3)
    else:
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(client.sio.disconnect)
            clock.advance(3)
    await monitor.wait_idle()
    gone = await live.wait_gone(1)
    with anyio.move_on_after(0.3):
        await live.wait_gone(2, within=1)
    assert len(gone) == 1
    assert gone[0][0] == client.sid
    assert gone[0][1] in (
        Reason.HEARTBEAT_TIMEOUT,
        Reason.TRANSPORT_CLOSE,
        Reason.CLIENT_DISCONNECT,
    )
    assert sum(live.adapter.hub.gone.values()) == 1
    assert len(live.adapter) == 0
