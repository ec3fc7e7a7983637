"""Bad input is refused: logged as ``peer_refused`` with its kind, counted, and answered.

A frame python-socketio cannot take (undecodable, oversized, an event that is no
array with a string name) closes that engine.io connection, and the peer is gone
with ``"refused: <reason>"``; a forged lifecycle event, a refused identity and a
burst of heartbeats is dropped, and a connection over ``max_rate`` for two
windows in a row is refused as a flood. No other peer is touched; nothing raises into
python-socketio or python-engineio.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import anyio
import pytest
import socketio
from structlog.testing import capture_logs

from heartbeat_monitor import ConfigurationError
from heartbeat_monitor_socketio import SocketIOAdapter

from .conftest import Live, RawClient, StartServer, polling_session

pytestmark = pytest.mark.anyio

INTERVAL = 0.2
MISSES = 2
REFUSED = "heartbeat_monitor.socketio.peer_refused"


async def wait_until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Poll ``predicate`` every 10 ms, bounded (the adapter's counters have no event)."""
    with anyio.fail_after(within):
        while not predicate():  # noqa: ASYNC110 -- polling a counter, bounded by fail_after
            await anyio.sleep(0.01)


def seen(live: Live, count: int) -> bool:
    """Whether ``count`` beats reached the adapter (counted or rate-limited)."""
    return live.adapter.stats.beats + live.adapter.stats.beats_limited >= count


def refusals(logs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [log for log in logs if log["event"] == REFUSED]


def record_disconnects(reasons: list[tuple[str, str]]) -> Callable[[socketio.AsyncServer], None]:
    def setup(sio: socketio.AsyncServer) -> None:
        @sio.event
        async def disconnect(sid, reason):
            reasons.append((sid, reason))

    return setup


CLOSING = [
    pytest.param(b"\xff\xfe\x00garbage\x80", "malformed: not a Socket.IO packet", id="binary"),
    pytest.param("42not json", "malformed: not a Socket.IO packet", id="not-json"),
    pytest.param('42["heartbeat"', "malformed: not a Socket.IO packet", id="truncated"),
    pytest.param("49", "malformed: unknown packet type 9", id="unknown-type"),
    # Not even engine.io packets: python-engineio's websocket handler raises on these.
    pytest.param("zzz", "malformed: not an engine.io packet", id="engineio-garbage"),
    pytest.param("b!!not base64", "malformed: not an engine.io packet", id="engineio-base64"),
    pytest.param("44", "malformed: a client sent CONNECT_ERROR", id="connect-error"),
    pytest.param('42{"type":1}', "wrong type: an event must be an array, got object", id="obj"),
    pytest.param("425", "wrong type: an event must be an array, got null", id="ack-id-only"),
    pytest.param("42[]", "wrong type: an event must be an array, got an empty one", id="empty"),
    pytest.param("42[5]", "wrong type: an event name must be a string, got number", id="name-5"),
    pytest.param("42[null,{}]", "wrong type: an event name must be a string, got null", id="null"),
    pytest.param('42[["heartbeat"]]', "wrong type: an event name must be a string", id="name-list"),
]


@pytest.mark.parametrize(("frame", "reason"), CLOSING)
async def test_a_bad_frame_closes_its_connection_with_the_reason(
    start_server: StartServer, caplog: pytest.LogCaptureFixture, frame: str | bytes, reason: str
) -> None:
    disconnects: list[tuple[str, str]] = []
    live = await start_server(
        interval=INTERVAL, misses=MISSES, setup=record_disconnects(disconnects)
    )
    bystander = await live.client()
    raw = await RawClient.open(live.url)
    raw_sid = await raw.connect()
    with capture_logs() as logs, caplog.at_level(logging.ERROR):
        await raw.send(frame)
        (gone,) = await live.wait_gone(1)
        with anyio.fail_after(5):
            await raw.ws.wait_closed()  # the server closed the transport, not just the namespace
        told = await bystander.peer_gone.wait(1)
    (refusal,) = refusals(logs)
    assert refusal["reason"].startswith(reason), refusal
    assert refusal["peer"] == raw_sid
    kind = reason.partition(":")[0]
    assert gone == (raw_sid, f"refused: {kind}")
    assert told == [{"peer": raw_sid, "reason": gone[1]}]
    # the user's handler is told why, too, in full
    assert disconnects == [(raw_sid, f"refused: {refusal['reason']}")]
    assert live.adapter.hub.refused == {kind: 1}
    assert live.adapter.hub.gone == {gone[1]: 1}
    # Refused, not raised: neither python-engineio nor asyncio logged a traceback.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert [log for log in logs if log["log_level"] in ("error", "critical")] == []
    assert bystander.sio.connected
    assert live.adapter.peer_of(bystander.sid) == bystander.sid
    assert len(live.adapter) == 1
    assert live.sio.eio.sockets.keys() == {bystander.sio.eio.sid}


async def test_garbage_before_any_namespace_closes_the_connection(
    start_server: StartServer,
) -> None:
    live = await start_server(interval=INTERVAL, misses=MISSES)
    raw = await RawClient.open(live.url)
    with capture_logs() as logs:
        await raw.send("4garbage")
        with anyio.fail_after(5):
            await raw.ws.wait_closed()
    (refusal,) = refusals(logs)
    assert refusal["reason"].startswith("malformed")
    assert refusal["sid"] is None
    assert live.gone.items == []  # it never was a peer
    assert live.sio.eio.sockets == {}


async def test_oversized_frames_are_refused_below_engineio_limit(start_server: StartServer) -> None:
    live = await start_server(interval=INTERVAL, misses=MISSES, max_message_size=1000)
    raw = await RawClient.open(live.url)
    raw_sid = await raw.connect()
    await raw.send('42["heartbeat","' + "x" * 900 + '"]')  # within the limit: a beat
    with capture_logs() as logs:
        await raw.send('42["heartbeat","' + "x" * 1000 + '"]')
        gone = await live.wait_gone(1)
    (refusal,) = refusals(logs)
    assert refusal["reason"] == "oversized: 1017 characters > 1000"
    assert gone == [(raw_sid, "refused: oversized")]
    assert live.adapter.stats.beats == 1


async def test_a_bad_frame_in_one_tab_leaves_the_identity_alive(start_server: StartServer) -> None:
    def identify(sid: str, environ: object, auth: Any) -> object:
        return auth["user"]

    live = await start_server(interval=INTERVAL, misses=MISSES, identify=identify)
    tab = await live.client(auth={"user": "ann"})
    raw = await RawClient.open(live.url)
    await raw.connect(auth={"user": "ann"})
    with capture_logs() as logs:
        await raw.send(b"\x00garbage")
        with anyio.fail_after(5):
            await raw.ws.wait_closed()
    (refusal,) = refusals(logs)
    assert refusal["peer"] == "ann"
    assert live.adapter.peers() == ["ann"]  # still connected in the other tab
    await anyio.sleep(INTERVAL * MISSES * 1.5)  # the point is that time passes: ann beats
    assert live.gone.items == []
    assert tab.sio.connected


async def test_a_refused_identity_is_logged_as_spoofed(start_server: StartServer) -> None:
    def identify(sid: str, environ: object, auth: Any) -> object:
        if not isinstance(auth, dict) or auth.get("token") != "secret":
            raise socketio.exceptions.ConnectionRefusedError("bad token")
        return auth["user"]

    live = await start_server(interval=INTERVAL, misses=MISSES, identify=identify)
    owner = await live.client(auth={"user": "ann", "token": "secret"})
    raw = await RawClient.open(live.url)
    with capture_logs() as logs:
        await raw.send("40" + json.dumps({"user": "ann", "token": "guess"}))
        reply = await raw.recv()
    assert reply.startswith("44"), reply  # CONNECT_ERROR: never connected
    (refusal,) = refusals(logs)
    assert refusal["reason"] == "spoofed: identify refused the connection: bad token"
    assert live.adapter.hub.refused == {"spoofed": 1}
    assert live.adapter.peers() == ["ann"]
    assert live.adapter.stats.connections == 1
    assert owner.sio.connected


async def flood(raw: RawClient, frame: str, count: int) -> None:
    for _ in range(count):
        await raw.send(frame)


async def test_a_burst_is_dropped_and_a_sustained_flood_refused(
    start_server: StartServer,
) -> None:
    live = await start_server(interval=INTERVAL, misses=MISSES, max_rate=5)
    bystander = await live.client()
    raw = await RawClient.open(live.url)
    raw_sid = await raw.connect()
    with capture_logs() as logs:
        await flood(raw, '42["heartbeat"]', 300)
        await wait_until(partial(seen, live, 300))
        # One burst (as after a stall of the server, when beats waited in socket buffers)
        # is no flood: the sender stays, beating at its normal rate for a second.
        assert refusals(logs) == []
        assert live.adapter.peer_of(raw_sid) == raw_sid
        for _ in range(5):  # the rate window is one second of real time
            await anyio.sleep(0.22)
            await raw.send('42["heartbeat"]')
        assert refusals(logs) == []
        assert live.adapter.peer_of(raw_sid) == raw_sid
        await flood(raw, '42["heartbeat"]', 300)  # a second window over max_rate: a flood
        await live.wait_gone(1)
    (refusal,) = refusals(logs)
    assert refusal["reason"] == "flood: more than 5 messages per second"
    assert refusal["peer"] == raw_sid
    assert live.adapter.hub.refused == {"flood": 1}
    assert live.gone.items == [(raw_sid, "refused: flood")]
    assert bystander.sio.connected


async def test_flood_detection_can_be_off_and_ignores_other_events(
    start_server: StartServer,
) -> None:
    live = await start_server(interval=INTERVAL, misses=MISSES, max_rate=None)
    chatty = await start_server(interval=INTERVAL, misses=MISSES, any_event=True, max_rate=5)
    raws = [await RawClient.open(server.url) for server in (live, chatty)]
    for raw in raws:
        await raw.connect()
    with capture_logs() as logs:
        await flood(raws[0], '42["heartbeat"]', 100)
        await flood(raws[1], '42["cursor",{"x":1}]', 100)  # an application's own events
        for server in (live, chatty):
            await wait_until(partial(seen, server, 100))
    assert refusals(logs) == []
    assert live.adapter.hub.refused == chatty.adapter.hub.refused == {}


@pytest.mark.parametrize(
    "options",
    [
        {"max_rate": 0},
        {"max_rate": True},
        {"max_rate": 2.5},
        {"max_message_size": 0},
        {"max_message_size": "4k"},
    ],
)
def test_refusal_options_are_checked(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match=next(iter(options))):
        SocketIOAdapter(socketio.AsyncServer(async_mode="asgi"), **options)


async def test_polling_client_sending_garbage_is_refused(start_server: StartServer) -> None:
    import aiohttp

    live: Live = await start_server(interval=INTERVAL, misses=MISSES)
    async with aiohttp.ClientSession() as http:
        url, eio_sid, sid = await polling_session(http, live.url)
        with capture_logs() as logs:
            async with http.post(url, data="4zzz") as response:
                await response.read()
            gone = await live.wait_gone(1)
        async with http.get(url) as response:
            closing = response.status, await response.text()
    (refusal,) = refusals(logs)
    assert gone == [(sid, "refused: malformed")]
    assert refusal["reason"].startswith("malformed")
    assert eio_sid not in live.sio.eio.sockets
    assert closing[0] == 400 or closing[1].startswith("1"), closing  # closed, or told so


def test_request_sid_comes_from_the_query_or_the_opened_socket() -> None:
    from heartbeat_monitor_socketio._frames import opening, request_sid

    assert request_sid(({"query_string": b"EIO=4&transport=websocket&sid=abc"},)) == "abc"
    assert request_sid(({"query_string": b"EIO=4&transport=websocket"},)) is None
    token = opening.set("opened")
    try:
        assert request_sid(({"query_string": b"EIO=4"},)) == "opened"
    finally:
        opening.reset(token)
