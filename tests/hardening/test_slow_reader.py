"""Item 5: a peer that never reads is closed promptly once it expires.

The server (in this process, on a ManualClock) fills the peer's socket with
``gone`` notices until its writer blocks and its queue overflows; the peer
then goes silent and expires. Its socket must be closed within a bound (the
blocked write is abandoned after ``close_timeout``), not held for as long as
the peer keeps its end open. Seen from the peer's side without reading (reading
would unblock the writer): the kernel's TCP state of its socket (Linux).
"""

from __future__ import annotations

import socket
import struct
import sys

import anyio
import anyio.lowlevel
import pytest

from heartbeat_monitor import PeerHub, Transport
from heartbeat_monitor.testing import MemoryClient
from heartbeat_monitor_tcp import TcpTransport
from tests.transports._util import until
from tests.transports.test_streams import running

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads TCP_INFO"),
]

_ESTABLISHED = 1


def _tcp_state(sock: socket.socket) -> int:
    """The kernel's state of a TCP socket (``tcpi_state``, the first byte of TCP_INFO)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
    return int(struct.unpack("B", info[:1])[0])


async def _fill(hub: PeerHub, peer: str) -> None:
    """Departures of other peers until ``peer``'s writer is blocked and its queue overflows."""
    episode = hub.episode(peer)
    assert episode is not None
    (link,) = episode.links
    name = "x" * 120  # long ids: ~200 bytes a notice
    for number in range(100_000):
        MemoryClient(hub, f"{name}{number}").disconnect()  # one gone notice to every other
        if number % 64 == 0:
            await anyio.lowlevel.checkpoint()  # let the writer run (until it blocks)
            if link.connection.dropped:  # type: ignore[attr-defined]
                return
    raise AssertionError("the writer never blocked")


async def _raw_websocket(host: str, port: int) -> bytes:
    """A websocket opening handshake and a hello frame, to send by hand."""
    import base64
    import os

    from websockets.frames import Frame, Opcode

    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    hello = Frame(Opcode.TEXT, b'{"type":"hello","peer":"slow"}')
    return request.encode() + hello.serialize(mask=True)


async def _handshake_reply(sock: socket.socket) -> None:
    """Read exactly the server's 101 response (and nothing after it)."""
    reply = b""
    with anyio.fail_after(5):
        while not reply.endswith(b"\r\n\r\n"):
            await anyio.wait_readable(sock)
            reply += sock.recv(1)
    assert b" 101 " in reply, reply


@pytest.mark.slow
@pytest.mark.parametrize(
    ("anyio_backend", "name"), [("asyncio", "tcp"), ("trio", "tcp"), ("asyncio", "websocket")]
)
async def test_a_peer_that_never_reads_is_closed_promptly_after_expiry(anyio_backend, name):
    from heartbeat_monitor_websockets import WebSocketTransport

    transport: Transport = (
        TcpTransport(close_timeout=0.5) if name == "tcp" else WebSocketTransport(close_timeout=0.5)
    )
    async with running(transport) as (clock, monitor, hub, gone, host, port):
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills sooner
            sock.setblocking(False)
            sock.connect_ex((host, port))
            await anyio.wait_writable(sock)
            if name == "tcp":
                sock.send(b'{"type":"hello","peer":"slow"}\n')
            else:
                sock.send(await _raw_websocket(host, port))
                await _handshake_reply(sock)
            await until(lambda: "slow" in hub)
            await _fill(hub, "slow")
            clock.advance(1.5)  # "slow" has been silent past its timeout
            await monitor.wait_idle()
            assert [(g.key, g.reason) for g in gone if g.key == "slow"] == [
                ("slow", "heartbeat timeout")
            ]
            assert _tcp_state(sock) == _ESTABLISHED
            # the blocked write gets close_timeout (0.5 s), then the connection is reset
            await until(lambda: _tcp_state(sock) != _ESTABLISHED, within=10)
