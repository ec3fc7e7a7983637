"""Item 1: a Socket.IO binary-attachment pile is refused, and what it buffered is freed.

Real server (python-socketio under uvicorn, the adapter on a hub) and a raw
engine.io client on loopback. The first test pins the python-socketio internals
``heartbeat_monitor_socketio._limits`` touches against the installed version.
"""

from __future__ import annotations

import gc
import json
import logging
import weakref
from typing import Any

import pytest
import socketio
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from heartbeat_monitor_socketio._limits import (
    MAX_ATTACHMENTS,
    IdleClosingHTTP,
    announced_attachments,
)
from tests.socketio.conftest import RawClient, polling_session, start_server
from tests.transports._util import until

__all__ = ("start_server",)  # the fixture, used by name

pytestmark = pytest.mark.anyio
PLACEHOLDER = {"_placeholder": True, "num": 0}


def _header(count: int) -> str:
    return f"5{count}-" + json.dumps(["heartbeat", PLACEHOLDER])


def test_the_internals_limit_attachments_touches_are_as_pinned():
    sio = socketio.AsyncServer(async_mode="asgi")
    assert sio._binary_packet == {}  # eio_sid -> the packet waiting for its attachments
    assert callable(sio.eio.handlers["message"])  # python-socketio's _handle_eio_message
    assert sio.eio.max_http_buffer_size == 1_000_000
    packet = sio.packet_class(encoded_packet=_header(2))
    assert packet.attachment_count == 2
    assert packet.attachments == []
    assert packet.add_attachment(b"first") is False
    assert packet.attachments == [b"first"]
    assert packet.add_attachment("a text frame is taken too") is True


@given(
    st.one_of(
        st.integers(0, 10**12).map(_header),
        st.text(max_size=30).map(lambda text: "5" + text),
        st.text(max_size=30),
    )
)
def test_the_announced_count_is_the_one_python_socketio_reads(frame):
    try:
        expected = socketio.packet.Packet(encoded_packet=frame).attachment_count
    except Exception:  # python-socketio refuses the frame itself: nothing to compare
        return
    if frame[:1] in ("5", "6"):
        assert announced_attachments(frame) == expected
    else:
        assert announced_attachments(frame) is None


def _attachments(live, eio_sid: str) -> int:
    """How many attachments python-socketio holds for the packet ``eio_sid`` is sending."""
    return len(getattr(live.sio._binary_packet.get(eio_sid), "attachments", ()))


async def _refusal(live, sid: str, logs: list[Any]) -> str:
    """The logged reason of the one refusal that ended ``sid``; nothing else was touched."""
    (gone,) = await live.wait_gone(1)
    (refusal,) = [log for log in logs if log["event"].endswith("peer_refused")]
    kind = refusal["reason"].partition(":")[0]
    assert gone == (sid, f"refused: {kind}")
    assert live.adapter.hub.refused == {kind: 1}
    assert all(client.sio.connected for client in live.clients)
    return str(refusal["reason"])


async def _connected(live) -> tuple[RawClient, str, str]:
    raw = await RawClient.open(live.url)
    eio_sid = json.loads(raw.received[0][1:])["sid"]
    sid = await raw.connect()
    return raw, sid, eio_sid


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_header_announcing_a_huge_count_is_refused(anyio_backend, start_server):
    live = await start_server(interval=0.5, misses=4)
    await live.client()  # a bystander
    raw, sid, eio_sid = await _connected(live)
    with capture_logs() as logs:
        await raw.send("4" + _header(1_000_000))  # engine.io message "4", the frame
        reason = await _refusal(live, sid, logs)
    assert reason == "oversized: a packet announcing 1000000 binary attachments > 10"
    assert eio_sid not in live.sio._binary_packet
    await raw.close()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_attachments_over_the_byte_limit_are_refused_and_freed(anyio_backend, start_server):
    live = await start_server(interval=0.5, misses=4)
    await live.client()  # a bystander
    raw, sid, eio_sid = await _connected(live)
    await raw.send("4" + _header(MAX_ATTACHMENTS))  # allowed: ten 200 KB frames are not
    frame = b"\x00" * 200_001
    await raw.send(frame)
    await raw.send(frame)
    # (no round trip is possible now: python-socketio takes any frame as an attachment)
    await until(lambda: _attachments(live, eio_sid) == 2)
    pending = weakref.ref(live.sio._binary_packet[eio_sid])
    with capture_logs() as logs:
        for _ in range(3):  # 5 x 200,001 bytes: the fifth goes over 1,000,000
            await raw.send(frame)
        reason = await _refusal(live, sid, logs)
    assert reason == "oversized: binary attachments of one packet over 1000000 bytes"
    assert eio_sid not in live.sio._binary_packet
    gc.collect()
    assert pending() is None, "the buffered attachments are still held"
    await raw.close()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_client_leaving_mid_packet_leaves_nothing_buffered(anyio_backend, start_server):
    live = await start_server(interval=0.5, misses=4)
    raw, sid, eio_sid = await _connected(live)
    await raw.send("4" + _header(3))
    await raw.send(b"\x00" * 100_000)
    await until(lambda: _attachments(live, eio_sid) == 1)
    raw.abort()
    gone = await live.wait_gone(1)
    assert gone[0][0] == sid
    assert eio_sid not in live.sio._binary_packet


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_uvicorn_closes_a_connection_that_never_sends_a_request(anyio_backend):
    """Pins uvicorn's keep-alive timer (``timeout_keep_alive_task`` / ``_handler``), which
    IdleClosingHTTP arms at connection time, against the installed uvicorn."""
    import socket

    import anyio
    import uvicorn

    async def app(scope, receive, send):  # never reached: no request comes
        raise AssertionError(scope)

    config = uvicorn.Config(
        app, http=IdleClosingHTTP, timeout_keep_alive=1, log_config=None, lifespan="off"
    )
    server = uvicorn.Server(config)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(server.serve, [listener])
            with anyio.fail_after(5):  # (the listener is open: the connection waits for uvicorn)
                async with await anyio.connect_tcp(*listener.getsockname()[:2]) as stream:
                    with pytest.raises(anyio.EndOfStream):
                        await stream.receive()  # closed by the server, not by us
            server.should_exit = True


NO_ATTACHMENTS = "a binary packet announcing no attachments"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (
            "450-" + json.dumps(["heartbeat", PLACEHOLDER]),
            "a binary packet announcing no attachments",
        ),
        ("45" + json.dumps(["heartbeat"]), "a binary packet announcing no attachments"),
        (
            "451-/elsewhere," + json.dumps(["heartbeat", PLACEHOLDER]),
            "a binary packet for a namespace it has not joined",
        ),
        ("7", "not an engine.io packet (type '7')"),
    ],
)
async def test_frames_python_socketio_or_engineio_would_choke_on_are_refused(
    anyio_backend, start_server, caplog, frame, reason
):
    """Found by the fuzzer: each made python-socketio or python-engineio log a traceback (for
    every later frame too, for the first two) and keep the connection."""
    live = await start_server(interval=0.5, misses=4)
    await live.client()  # a bystander
    raw, sid, eio_sid = await _connected(live)
    with capture_logs() as logs, caplog.at_level(logging.ERROR):
        await raw.send(frame)
        assert await _refusal(live, sid, logs) == f"malformed: {reason}"
    assert [record.getMessage() for record in caplog.records] == []
    assert eio_sid not in live.sio._binary_packet
    await raw.close()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("7", "not an engine.io packet (type '7')"),
        ('42["heartbeat"]\x1e9', "not an engine.io packet (type '9')"),
        ("", "an empty engine.io packet"),
        ("zzz", "not an engine.io packet (type 'z')"),
        ("b!!not base64", "not an engine.io packet (bad base64)"),
        ('6\x1e42["heartbeat"]', "an engine.io packet a client does not post (type '6')"),
        ("2", "an engine.io packet a client does not post (type '2')"),
    ],
)
async def test_long_polling_posts_python_engineio_would_choke_on_are_refused(
    anyio_backend, start_server, caplog, body, reason
):
    """Each made python-engineio log "post request handler error" with a traceback, answer
    200 and keep the session, or (types 2 and 6) hold the POST until engine.io's ping
    timeout; now the sender is refused and told 400 at once, nobody else notices."""
    import aiohttp

    live = await start_server(interval=0.5, misses=4)
    await live.client()  # a bystander
    async with aiohttp.ClientSession() as http:
        polling, eio_sid, sid = await polling_session(http, live.url)
        with capture_logs() as logs, caplog.at_level(logging.ERROR):
            async with http.post(polling, data=body.encode()) as response:
                assert response.status == 400
            assert await _refusal(live, sid, logs) == f"malformed: {reason}"
    assert [record.getMessage() for record in caplog.records] == []
    assert eio_sid not in live.sio.eio.sockets


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_polling_post_with_good_packets_is_left_to_engine_io(anyio_backend, start_server):
    """The check does not get in the way: a batch of good packets is handled as usual."""
    import aiohttp

    live = await start_server(interval=0.5, misses=4)
    async with aiohttp.ClientSession() as http:
        polling, _, sid = await polling_session(http, live.url)
        beats = live.adapter.hub.beats
        async with http.post(polling, data='42["heartbeat"]') as response:
            assert response.status == 200
        await until(lambda: live.adapter.hub.beats == beats + 1)  # handled: the beat counted
    assert live.adapter.hub.refused == {}
    assert live.adapter.peer_of(sid) is not None


class _QuickHeads(IdleClosingHTTP):
    head_timeout = 0.5


async def _dribble(stream) -> None:
    """A header byte every 0.1 s, for 4 s at most, then read: the server should close first."""
    import anyio

    for _ in range(40):
        await stream.send(b"x")
        await anyio.sleep(0.1)
    await stream.receive()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_request_head_sent_a_byte_at_a_time_is_cut_off(anyio_backend):
    """Slowloris: the first byte cancels uvicorn's idle timer and uvicorn has no deadline for
    the rest of the head; IdleClosingHTTP closes it after ``head_timeout``, while a request
    that completes its head in time (and is still being answered) is left alone."""
    import socket

    import anyio
    import uvicorn

    answer = anyio.Event()

    async def app(scope, receive, send):  # a slow answer: longer than the head timeout
        await answer.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    config = uvicorn.Config(
        app, http=_QuickHeads, timeout_keep_alive=5, log_config=None, lifespan="off"
    )
    server = uvicorn.Server(config)
    before = IdleClosingHTTP.closed_slow
    with socket.create_server(("127.0.0.1", 0)) as listener:
        address = listener.getsockname()[:2]
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(server.serve, [listener])
            with anyio.fail_after(10):
                async with (
                    await anyio.connect_tcp(*address) as slow,
                    await anyio.connect_tcp(*address) as fair,
                ):
                    await fair.send(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
                    await slow.send(b"GET / HTTP/1.1\r\n")
                    with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                        await _dribble(slow)
                    assert IdleClosingHTTP.closed_slow == before + 1
                    answer.set()
                    assert (await fair.receive()).startswith(b"HTTP/1.1 200")
            server.should_exit = True
