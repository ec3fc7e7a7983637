"""Item 10 (and item 2 on UDP): what the UDP server does before it decodes anything.

Real loopback sockets; the monitor's ManualClock drives the per-source gate, so
nothing here depends on how fast the machine is (except where a bound says so).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import anyio
import pytest
from structlog.testing import capture_logs

from heartbeat_monitor_udp import datagram, peer_key
from tests.transports._util import until
from tests.transports.test_udp import KEY, NOW, udp_server

pytestmark = pytest.mark.anyio


def _signed(payload: bytes, key: bytes = KEY) -> bytes:
    return payload + hmac.new(key, payload, hashlib.sha256).digest()


async def test_a_source_over_its_rate_is_dropped_before_decoding(anyio_backend):
    async with (
        udp_server(max_source_rate=100) as udp,
        await anyio.create_connected_udp_socket(
            *udp.sock.extra(anyio.abc.SocketAttribute.remote_address)
        ) as other,
    ):
        with capture_logs() as logs:
            for _ in range(150):
                await udp.sock.send(b"\xff")  # garbage: each one that is read is refused
            await other.send(b"\xfe")  # another source has its own budget
            await until(lambda: udp.hub.refused["malformed"] + udp.transport.gated == 151)
        assert udp.transport.gated == 50
        assert udp.hub.refused["malformed"] == 101
        gated = [log for log in logs if log["event"] == "heartbeat_monitor.udp.source_gated"]
        assert len(gated) == 1  # at most once a second
        udp.clock.advance(0.5)  # half a second refills half the bucket
        for _ in range(60):
            await udp.sock.send(b"\xff")
        await until(lambda: udp.hub.refused["malformed"] + udp.transport.gated == 211)
        assert udp.transport.gated == 60
        await other.aclose()


async def test_without_the_key_nothing_is_decoded(anyio_backend):
    nested = b'{"type":"beat","peer":"a","x":' + b"[" * 3000 + b"]" * 3000 + b"}"
    async with udp_server(key=KEY) as udp:
        await udp.sock.send(nested[:4000] + b"\x00" * 32)  # unsigned (and cut): spoofed
        await udp.sock.send(_signed(b"[" * 2000 + b"]" * 2000))  # a key holder's: malformed
        await until(lambda: sum(udp.hub.refused.values()) == 2)
        assert udp.hub.refused == {"spoofed": 1, "malformed": 1}


async def test_per_peer_keys_find_the_id_then_check_it_after_decoding(anyio_backend):
    async with udp_server(key=KEY, per_peer_keys=True) as udp:
        twice = json.dumps({"type": "beat", "peer": "a", "ts": NOW, "epoch": udp.epoch})
        twice = twice[:-1] + ', "peer": "b"}'  # JSON keeps the last one: not what was signed
        await udp.sock.send(_signed(twice.encode(), peer_key(KEY, "a")))
        await udp.sock.send(_signed(b'{"type":"beat","ts":1}', KEY))  # no id to find
        escaped = datagram("\u00e9t\u00e9", key=peer_key(KEY, "\u00e9t\u00e9"), ts=NOW)
        await udp.sock.send(escaped)  # an escaped id is found and verifies: challenged
        with anyio.fail_after(5):
            assert json.loads((await udp.sock.receive())[:-32])["type"] == "challenge"
        await until(lambda: sum(udp.hub.refused.values()) == 2)
        assert udp.hub.refused == {"spoofed": 2}


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_refusals_of_a_flood_of_bad_datagrams_are_logged_paced(anyio_backend):
    async with udp_server(key=KEY) as udp:
        with capture_logs() as logs:
            started = time.monotonic()
            for _ in range(500):
                await udp.sock.send(b"[" * 1000)
            await until(lambda: udp.hub.refused["spoofed"] == 500)
            elapsed = time.monotonic() - started
        lines = [log for log in logs if log["event"] == "heartbeat_monitor.udp.peer_refused"]
        assert len(lines) <= 10 * (elapsed + 1)  # Refusals: ten lines a second at most
