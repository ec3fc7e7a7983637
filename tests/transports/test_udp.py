"""UDP specifics on real loopback sockets: HMAC, per-peer keys, replay and staleness.

The monitor runs on a ManualClock and the server's wall clock is injected, so
nothing here waits for real time; each refusal is awaited through the hub's count.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from heartbeat_monitor import HeartbeatMonitor, ManualClock, PeerHub
from heartbeat_monitor_udp import TAG_SIZE, UdpTransport, datagram, peer_key

from ._util import until

pytestmark = pytest.mark.anyio

KEY = b"shared secret"
NOW = 1_700_000_000 * 10**9


@asynccontextmanager
async def udp_server(**options: Any) -> AsyncIterator[tuple[PeerHub, Any]]:
    clock = ManualClock()
    transport = UdpTransport("127.0.0.1", 0, wall_clock=lambda: NOW, **options)
    async with HeartbeatMonitor(10, clock=clock) as monitor, anyio.create_task_group() as tg:
        hub = PeerHub(monitor)
        host, port = await tg.start(transport.serve, hub)
        async with await anyio.create_connected_udp_socket(host, port) as sock:
            yield hub, sock
        tg.cancel_scope.cancel()


async def test_signed_beats_open_and_beat_and_others_are_refused(anyio_backend):
    async with udp_server(key=KEY) as (hub, sock):
        await sock.send(datagram("a", key=KEY, ts=NOW))
        reply = await sock.receive()
        assert json.loads(reply[:-TAG_SIZE])["type"] == "welcome"
        assert "a" in hub
        with capture_logs() as logs:
            await sock.send(datagram("a", key=b"wrong", ts=NOW + 1))  # spoofed
            await sock.send(datagram("a", key=KEY, ts=NOW))  # replayed (same ts)
            await sock.send(datagram("a", key=KEY, ts=NOW - 31 * 10**9))  # stale
            await sock.send(datagram("a", ts=NOW + 2))  # unsigned
            await until(lambda: sum(hub.refused.values()) == 4)
        reasons = [
            log["reason"] for log in logs if log["event"] == "heartbeat_monitor.udp.peer_refused"
        ]
        assert [r.split(":")[0] for r in reasons] == ["spoofed", "replayed", "stale", "spoofed"]
        session = hub.session("a")
        assert session is not None
        assert session.gone is None
        await sock.send(datagram("a", key=KEY, type="bye", ts=NOW + 3))
        await until(lambda: "a" not in hub)


async def test_per_peer_keys_stop_one_peer_beating_for_another(anyio_backend):
    async with udp_server(key=KEY, per_peer_keys=True) as (hub, sock):
        await sock.send(datagram("a", key=peer_key(KEY, "a"), ts=NOW))
        await until(lambda: "a" in hub)
        await sock.send(datagram("a", key=peer_key(KEY, "b"), ts=NOW + 1))  # b's key, a's id
        await sock.send(datagram("a", key=KEY, ts=NOW + 2))  # the master key is not a's key
        await until(lambda: hub.refused["spoofed"] == 2)


async def test_malformed_datagrams_are_refused(anyio_backend):
    async with udp_server() as (hub, sock):
        for data in (
            b"\xff",
            b"[]",
            b'{"type":"beat","peer":1,"ts":1}',
            b'{"type":"beat","peer":"a","ts":"x"}',
        ):
            await sock.send(data)
        await sock.send(datagram("a", type="dance", ts=NOW))
        await until(lambda: sum(hub.refused.values()) == 5)
        assert sorted(hub.refused) == ["malformed", "protocol", "wrong type"]
        assert len(hub) == 0
