"""Bad input never raises into python-socketio, never touches another peer, and is logged."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import socketio
from structlog.testing import capture_logs

from heartbeat_monitor import PeerGone
from heartbeat_monitor_socketio import Reason

from .conftest import SLACK, RawClient, StartServer

pytestmark = pytest.mark.anyio

INTERVAL = 0.2
MISSES = 2


def errors(logs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [log for log in logs if log["log_level"] in ("error", "critical", "exception")]


async def test_heartbeat_payloads_of_any_type_and_size_count(start_server: StartServer) -> None:
    live = await start_server(interval=INTERVAL, misses=MISSES, min_beat_gap=0)
    client = await live.client(beat=False)
    payloads: list[Any] = [
        None,
        0,
        -1.5,
        "",
        "x" * 200_000,
        b"\x00\xff" * 1000,
        [1, [2, [3, [4, [5]]]]],
        {"peer": "someone-else", "nested": {"deep": list(range(1000))}},
        True,
    ]
    with capture_logs() as logs:
        for payload in payloads:
            assert await client.sio.call("heartbeat", payload, timeout=5) is None
    assert live.adapter.stats.beats == len(payloads)
    assert errors(logs) == []
    assert live.adapter.peer_of(client.sid) == client.sid


async def test_malformed_packets_do_not_disturb_other_peers(start_server: StartServer) -> None:
    live = await start_server(interval=INTERVAL, misses=MISSES)
    beater = await live.client()
    silent = await live.client(beat=False)
    raw = await RawClient.open(live.url)
    await raw.connect()
    with capture_logs() as logs:
        junks: list[str | bytes] = [
            "42not json",
            '42["heartbeat"',
            "42[]",
            "42[1]",
            "42[null,{}]",
            '42/nowhere,["heartbeat"]',
            '451-["heartbeat",{"_placeholder":true,"num":0}]',
            b"\x00\x01\x02",
            "49",
            '42["heartbeat",' + json.dumps("y" * 50_000) + "]",
        ]
        for junk in junks:
            await raw.send(junk)
        expected = (silent.sid, Reason.HEARTBEAT_TIMEOUT)
        await live.gone.wait_for(expected, within=INTERVAL * MISSES + 2 * SLACK)
        told = {"peer": silent.sid, "reason": "heartbeat timeout"}
        await beater.peer_gone.wait_for(told)
    # The junk sender may be gone too (its frames may not count); the beater is not.
    assert beater.sio.connected
    assert beater.sid not in {peer for peer, _ in live.gone.items}
    assert [log for log in errors(logs) if log["event"].startswith("heartbeat_monitor")] == []
    assert live.adapter.monitor.runner.failures == 0
    await raw.close()


async def test_events_for_unknown_sessions_are_logged_and_ignored(
    start_server: StartServer,
) -> None:
    live = await start_server(interval=INTERVAL, misses=MISSES)
    client = await live.client()
    with capture_logs() as logs:
        # What python-socketio would call for a sid it dispatched but we do not watch
        # (never connected to this namespace, or already gone).
        assert await live.sio._trigger_event("heartbeat", "/", "no-such-sid") is None
        assert await live.sio._trigger_event("heartbeat", "/", 12345) is None
        # A disconnect for a sid never watched goes to the user's handlers (none here).
        result = await live.sio._trigger_event("disconnect", "/", "no-such-sid", "x")
        assert result is live.sio.not_handled
    assert live.adapter.stats.unknown_peer == 2
    unknown = [log for log in logs if log["event"] == "heartbeat_monitor.socketio.unknown_peer"]
    assert len(unknown) == 1  # logged once, then every 1000th
    assert live.gone.items == []
    assert live.adapter.peer_of(client.sid) == client.sid


async def test_a_client_cannot_beat_for_or_expire_another(start_server: StartServer) -> None:
    live = await start_server(interval=INTERVAL, misses=MISSES)
    bystander = await live.client()
    victim = await live.client(beat=False)
    raw = await RawClient.open(live.url)
    raw_sid = await raw.connect()
    with capture_logs() as logs:
        async with anyio.create_task_group() as task_group:

            async def attack() -> None:
                forged = {"peer": victim.sid, "sid": victim.sid, "reason": "forged"}
                while True:
                    await raw.send("42" + json.dumps(["heartbeat", forged]))
                    await raw.send("42" + json.dumps(["peer_gone", forged]))
                    await raw.send("42" + json.dumps(["disconnect", "forged"]))
                    await raw.send("42" + json.dumps(["connect", {"user": victim.sid}]))
                    await anyio.sleep(INTERVAL / 4)

            task_group.start_soon(attack)
            gone = await live.wait_gone(1, within=INTERVAL * MISSES + 2 * SLACK)
            task_group.cancel_scope.cancel()
    # The victim's forged beats did not keep it alive; the attacker did not end itself.
    assert gone == [(victim.sid, Reason.HEARTBEAT_TIMEOUT)]
    assert live.adapter.peer_of(raw_sid) == raw_sid
    assert live.adapter.stats.spoofed >= 2
    spoofed = [
        log
        for log in logs
        if log["event"] == "heartbeat_monitor.socketio.peer_refused"
        and log["reason"].startswith("spoofed: a client event named")
    ]
    assert spoofed
    assert spoofed[0]["peer"] == raw_sid
    assert await bystander.peer_gone.wait(1) == [
        {"peer": victim.sid, "reason": "heartbeat timeout"}
    ]
    await raw.close()


async def test_flood_from_one_peer_does_not_starve_others(start_server: StartServer) -> None:
    live = await start_server(interval=INTERVAL, misses=MISSES)
    beater = await live.client()
    silent = await live.client(beat=False)
    raw = await RawClient.open(live.url)
    raw_sid = await raw.connect()
    started = anyio.current_time()
    async with anyio.create_task_group() as task_group:

        async def flood() -> None:
            frame = '42["heartbeat"]'
            while True:
                for _ in range(200):
                    await raw.send(frame)
                await anyio.lowlevel.checkpoint()

        task_group.start_soon(flood)
        gone = await live.wait_gone(1, within=INTERVAL * MISSES + 2 * SLACK)
        task_group.cancel_scope.cancel()
    elapsed = anyio.current_time() - started
    assert gone == [(silent.sid, Reason.HEARTBEAT_TIMEOUT)]
    assert beater.sio.connected
    assert live.adapter.stats.beats_limited > 0
    # What counted for the flooder is bounded by the rate limit (interval / 10).
    assert live.adapter.stats.beats <= elapsed / (INTERVAL / 10) + 50
    assert live.adapter.peer_of(raw_sid) == raw_sid
    raw.abort()


async def test_client_vanishing_mid_handshake_is_ended_once(start_server: StartServer) -> None:
    entered = anyio.Event()
    release = anyio.Event()
    sids: list[str] = []

    def setup(sio: socketio.AsyncServer) -> None:
        @sio.event
        async def connect(sid, environ, auth):
            sids.append(sid)
            entered.set()
            await release.wait()

    live = await start_server(interval=INTERVAL, misses=MISSES, setup=setup)
    raw = await RawClient.open(live.url)
    await raw.send("40")
    with anyio.fail_after(5):
        await entered.wait()
    raw.abort()
    # On a websocket, engine.io sees the close once the connect handler returns; on long
    # polling it may see it before (python-socketio then skips the disconnect event, and
    # the adapter ends the peer itself: heartbeat_monitor.socketio.vanished_in_handshake).
    release.set()
    gone = await live.wait_gone(1)
    assert gone == [(sids[0], Reason.TRANSPORT_CLOSE)]
    assert len(live.adapter) == 0
    assert live.adapter.peer_of(sids[0]) is None
    with anyio.move_on_after(INTERVAL * MISSES * 2):
        await live.wait_gone(2, within=60)
    assert len(live.gone) == 1


async def test_failing_cleanup_callbacks_are_logged_and_do_not_stop_the_others(
    start_server: StartServer,
) -> None:
    calls: list[str] = []

    def broken(event: PeerGone) -> None:
        calls.append("broken")
        raise RuntimeError("cleanup bug")

    async def hanging(event: PeerGone) -> None:
        calls.append("hanging")
        await anyio.sleep_forever()

    live = await start_server(interval=INTERVAL, misses=MISSES, callback_timeout=0.2)
    live.adapter.on_gone(broken)
    live.adapter.on_gone(hanging)
    watcher = await live.client()
    with capture_logs() as logs:
        silent = await live.client(beat=False)
        assert await watcher.peer_gone.wait(1) == [
            {"peer": silent.sid, "reason": "heartbeat timeout"}
        ]
        with anyio.fail_after(5):  # the hanging one is cut off after callback_timeout
            await live.adapter.monitor.runner.wait_idle()
    assert live.gone.items == [(silent.sid, Reason.HEARTBEAT_TIMEOUT)]
    assert calls == ["broken", "hanging"]
    assert live.adapter.monitor.runner.failures == 2
    events = {log["event"] for log in logs}
    assert "heartbeat_monitor.callback_failed" in events
    assert "heartbeat_monitor.callback_timeout" in events


async def test_polling_client_vanishing_mid_handshake_is_ended_once(
    start_server: StartServer,
) -> None:
    import aiohttp

    entered = anyio.Event()
    release = anyio.Event()
    sids: list[str] = []

    def setup(sio: socketio.AsyncServer) -> None:
        @sio.event
        async def connect(sid, environ, auth):
            sids.append(sid)
            entered.set()
            await release.wait()

    live = await start_server(
        interval=INTERVAL,
        misses=MISSES,
        setup=setup,
        engineio="ignore",  # keep engine.io's 1 s ping timeout (not raised to the monitor's)
        sio_options={"ping_interval": 1, "ping_timeout": 1},
    )
    base = live.url + "/socket.io/?EIO=4&transport=polling"
    async with aiohttp.ClientSession() as http, anyio.create_task_group() as task_group:
        async with http.get(base) as response:
            opening = await response.text()
        eio_sid = json.loads(opening[1:])["sid"]

        async def post_connect() -> None:
            async with http.post(f"{base}&sid={eio_sid}", data="40") as response:
                await response.read()

        task_group.start_soon(post_connect)
        with anyio.fail_after(5):
            await entered.wait()
        # The client never polls again: engine.io closes it (ping timeout) while the
        # connect handler is still running, and python-socketio skips the disconnect.
        with anyio.fail_after(6):
            # engine.io has no event for a socket closing: poll it, bounded by fail_after.
            while (s := live.sio.eio.sockets.get(eio_sid)) is not None and not s.closed:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        with capture_logs() as logs:
            release.set()
            gone = await live.wait_gone(1)
        task_group.cancel_scope.cancel()
    assert gone == [(sids[0], Reason.TRANSPORT_CLOSE)]
    assert any(log["event"] == "heartbeat_monitor.socketio.vanished_in_handshake" for log in logs)
    assert len(live.adapter) == 0
