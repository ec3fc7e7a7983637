"""UDP specifics on real loopback sockets: HMAC, per-peer keys, replay, staleness, epochs.

The monitor runs on a ManualClock and the server's wall clock is injected, so
nothing here waits for real time; each refusal is awaited through the hub's count.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

import anyio
import pytest
from structlog.testing import capture_logs

from heartbeat_monitor import HeartbeatMonitor, ManualClock, PeerHub
from heartbeat_monitor_udp import TAG_SIZE, UdpTransport, datagram, peer_key

from ._util import until

pytestmark = pytest.mark.anyio

KEY = b"shared secret"
NOW = 1_700_000_000 * 10**9


class Udp(NamedTuple):
    hub: PeerHub
    sock: Any
    #: The server's boot epoch (what a challenge tells).
    epoch: str
    transport: UdpTransport
    clock: ManualClock


@asynccontextmanager
async def udp_server(**options: Any) -> AsyncIterator[Udp]:
    """A server on a ManualClock and a client socket."""
    clock = ManualClock()
    transport = UdpTransport("127.0.0.1", 0, wall_clock=lambda: NOW, **options)
    async with HeartbeatMonitor(10, clock=clock) as monitor, anyio.create_task_group() as tg:
        hub = PeerHub(monitor, notify="peer_gone")
        host, port = await tg.start(transport.serve, hub)
        async with await anyio.create_connected_udp_socket(host, port) as sock:
            yield Udp(hub, sock, transport.epoch, transport, clock)
        tg.cancel_scope.cancel()


async def test_the_first_contact_is_challenged_with_the_boot_epoch(anyio_backend):
    async with udp_server(key=KEY) as (hub, sock, epoch, *_):
        await sock.send(datagram("a", key=KEY, ts=NOW))  # no epoch: a first contact
        challenge = await sock.receive()
        assert json.loads(challenge[:-TAG_SIZE]) == {"type": "challenge", "epoch": epoch}
        assert challenge[-TAG_SIZE:] == hmac.new(KEY, challenge[:-TAG_SIZE], "sha256").digest()
        await sock.send(datagram("a", key=KEY, ts=NOW + 1, epoch="0" * 16))  # another run's
        assert json.loads((await sock.receive())[:-TAG_SIZE])["type"] == "challenge"
        await sock.send(datagram("a", key=KEY, ts=NOW + 1, epoch=epoch))  # ts already seen
        await until(lambda: hub.refused["replayed"] == 1)
        assert "a" not in hub
        await sock.send(datagram("a", key=KEY, ts=NOW + 2, epoch=epoch))
        assert json.loads((await sock.receive())[:-TAG_SIZE])["type"] == "welcome"
        # a bye signed in another run closes nothing (and is not answered)
        await sock.send(datagram("a", key=KEY, ts=NOW + 3, type="bye", epoch="0" * 16))
        await sock.send(datagram("a", key=KEY, ts=NOW + 4, type="bye", epoch=epoch))
        await until(lambda: "a" not in hub)
        assert hub.refused == {"replayed": 1}


async def test_signed_beats_open_and_beat_and_others_are_refused(anyio_backend):
    async with udp_server(key=KEY) as (hub, sock, epoch, *_):
        await sock.send(datagram("a", key=KEY, ts=NOW, epoch=epoch))
        reply = await sock.receive()
        assert json.loads(reply[:-TAG_SIZE])["type"] == "welcome"
        assert "a" in hub
        with capture_logs() as logs:
            await sock.send(datagram("a", key=b"wrong", ts=NOW + 1, epoch=epoch))  # spoofed
            await sock.send(datagram("a", key=KEY, ts=NOW, epoch=epoch))  # replayed (same ts)
            await sock.send(datagram("a", key=KEY, ts=NOW - 31 * 10**9, epoch=epoch))  # stale
            await sock.send(datagram("a", ts=NOW + 2, epoch=epoch))  # unsigned
            await until(lambda: sum(hub.refused.values()) == 4)
        reasons = [
            log["reason"] for log in logs if log["event"] == "heartbeat_monitor.udp.peer_refused"
        ]
        assert [r.split(":")[0] for r in reasons] == ["spoofed", "replayed", "stale", "spoofed"]
        episode = hub.episode("a")
        assert episode is not None
        assert episode.reason is None
        await sock.send(datagram("a", key=KEY, type="bye", ts=NOW + 3, epoch=epoch))
        await until(lambda: "a" not in hub)


async def test_per_peer_keys_stop_one_peer_beating_for_another(anyio_backend):
    async with udp_server(key=KEY, per_peer_keys=True) as (hub, sock, epoch, *_):
        await sock.send(datagram("a", key=peer_key(KEY, "a"), ts=NOW, epoch=epoch))
        await until(lambda: "a" in hub)
        await sock.send(datagram("a", key=peer_key(KEY, "b"), ts=NOW + 1, epoch=epoch))  # b's key
        await sock.send(datagram("a", key=KEY, ts=NOW + 2, epoch=epoch))  # the master key
        await until(lambda: hub.refused["spoofed"] == 2)


async def test_malformed_datagrams_are_refused(anyio_backend):
    async with udp_server() as (hub, sock, _, *_):
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
