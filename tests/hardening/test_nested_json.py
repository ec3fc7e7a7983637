"""Item 2: deeply nested JSON is a counted, paced refusal of its sender, on every transport.

A 4 KB message nested 2,000 levels makes json's decoder raise ``RecursionError``.
It must end as ``refused: malformed`` for that connection only (or, for UDP, a
dropped datagram), counted once, logged once, with no traceback, and no other
peer told anything. Real servers and clients on loopback.
"""

from __future__ import annotations

import json
from collections.abc import MutableMapping, Sequence
from functools import partial
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from heartbeat_monitor import Transport
from heartbeat_monitor_tcp import TcpTransport
from heartbeat_monitor_udp import datagram
from tests.conformance._clients import CLIENTS, Client
from tests.socketio.conftest import RawClient, StartServer, start_server
from tests.transports._util import until
from tests.transports.test_streams import running
from tests.transports.test_udp import KEY, NOW, udp_server

__all__ = ("start_server",)  # the fixture, used by name

pytestmark = pytest.mark.anyio

DEPTH = 2000
NESTED = "[" * DEPTH + "]" * DEPTH
MESSAGE = ('{"type":"beat","x":' + NESTED + "}").encode()
assert len(MESSAGE) < 4096


def _errors(logs: Sequence[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [log for log in logs if log["log_level"] in ("error", "critical", "exception")]


def _refusals(logs: Sequence[MutableMapping[str, Any]]) -> list[str]:
    return [log["reason"] for log in logs if log["event"].endswith("peer_refused")]


def _told(client: Client, peer: str) -> bool:
    return bool(client.gone_notices(peer))


def _transport(name: str) -> Transport:
    from heartbeat_monitor_websockets import WebSocketTransport

    return TcpTransport() if name == "tcp" else WebSocketTransport()


@pytest.mark.parametrize(
    ("anyio_backend", "name"), [("asyncio", "tcp"), ("trio", "tcp"), ("asyncio", "websocket")]
)
async def test_a_stream_peer_sending_nested_json_is_refused_alone(anyio_backend, name):
    async with (
        running(_transport(name)) as (_, _, hub, gone, host, port),
        anyio.create_task_group() as task_group,
    ):
        clients: list[Client] = [CLIENTS[name](host, port, peer) for peer in ("a", "b", "bad")]
        for client in clients:
            await client.start(task_group)
        *good, offender = clients
        with capture_logs() as logs:
            await offender.send_raw(MESSAGE)
            await until(lambda: bool(gone))
            # and as a first message, on a connection of its own
            stranger = CLIENTS[name](host, port, "stranger")
            stranger._hello = lambda: MESSAGE  # type: ignore[method-assign]
            await stranger.start(task_group, wait=False)
            await until(lambda: hub.refused["malformed"] == 2)
        assert [(g.key, g.reason) for g in gone] == [("bad", "refused: malformed")]
        assert _refusals(logs) == ["malformed: JSON nested too deeply"] * 2
        assert _errors(logs) == []
        await offender.wait_for(lambda: offender.ended)
        assert "a" in hub
        assert "b" in hub
        for client in good:  # told once, with the true reason
            await client.wait_for(partial(_told, client, "bad"))
            assert [n["reason"] for n in client.gone_notices("bad")] == ["refused: malformed"]
        task_group.cancel_scope.cancel()
    for client in [*clients, stranger]:
        await client.abort()


async def test_a_signed_nested_datagram_is_dropped_alone(anyio_backend):
    async with udp_server(key=KEY) as udp:
        await udp.sock.send(datagram("a", key=KEY, ts=NOW, epoch=udp.epoch))
        await until(lambda: "a" in udp.hub)
        with capture_logs() as logs:
            payload = b'{"type":"beat","peer":"a","ts":1,"x":' + NESTED.encode() + b"}"
            await udp.sock.send(_sign(payload))
            await until(lambda: udp.hub.refused["malformed"] == 1)
        assert _refusals(logs) == ["malformed: JSON nested too deeply"]
        assert _errors(logs) == []
        assert "a" in udp.hub  # a key holder's garbage is dropped: its episode stays


def _sign(payload: bytes) -> bytes:
    import hashlib
    import hmac

    return payload + hmac.new(KEY, payload, hashlib.sha256).digest()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_socketio_event_of_nested_json_is_refused_alone(
    anyio_backend, start_server: StartServer
):
    live = await start_server(interval=0.5, misses=4)
    bystander = await live.client()
    raw = await RawClient.open(live.url)
    sid = await raw.connect()
    with capture_logs() as logs:
        await raw.send("42" + json.dumps(["heartbeat"])[:-1] + "," + NESTED + "]")
        gone = await live.wait_gone(1)
    assert gone == [(sid, "refused: malformed")]
    assert [reason.split(":")[0] for reason in _refusals(logs)] == ["malformed"]
    assert _errors(logs) == []
    assert bystander.sio.connected
    assert bystander.peer_gone.items == []
    await raw.close()
