"""Item 3: a signed datagram captured before a server restart opens nothing after it.

Real processes: ``heartbeat-monitor serve --transport udp`` is SIGKILLed and
started again on the same port; the datagram that last opened the peer is
replayed to the new process. Whatever the protocol asks of an honest peer (a
challenge, then the beat again), the peer does; the attacker only replays.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import time
from typing import Any

import anyio
import anyio.abc
import pytest

from heartbeat_monitor_udp import TAG_SIZE

from ._servers import free_port, server_process

pytestmark = pytest.mark.anyio
KEY = b"replay test key"


def _signed(peer: str, epoch: str | None) -> bytes:
    """A beat as the wire format says (built here, so the test also runs against old code)."""
    message: dict[str, object] = {"type": "beat", "peer": peer, "ts": time.time_ns()}
    if epoch is not None:
        message["epoch"] = epoch
    payload = json.dumps(message).encode()
    return payload + hmac.new(KEY, payload, hashlib.sha256).digest()


async def _reply(sock: anyio.abc.ConnectedUDPSocket) -> dict[str, Any]:
    with anyio.fail_after(10):
        message = json.loads((await sock.receive())[:-TAG_SIZE])
    assert isinstance(message, dict), message
    return message


async def _open(sock: anyio.abc.ConnectedUDPSocket, peer: str) -> tuple[bytes, str | None]:
    """Open ``peer`` as an honest client does; the datagram that opened it, and the epoch."""
    epoch: str | None = None
    for _ in range(3):
        sent = _signed(peer, epoch)
        await sock.send(sent)
        reply = await _reply(sock)
        if reply["type"] == "welcome":
            return sent, epoch
        assert reply["type"] == "challenge", reply
        epoch = reply["epoch"]
    raise AssertionError("never welcomed")


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_capture_replayed_after_a_restart_opens_nothing(anyio_backend, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY)
    port = free_port()
    async with await anyio.create_connected_udp_socket("127.0.0.1", port) as sock:
        async with server_process("udp", port=port, key_file=key_file) as first:
            captured, first_epoch = await _open(sock, "victim")
            first.process.send_signal(signal.SIGKILL)  # a crash: nothing is saved
        async with server_process("udp", port=port, key_file=key_file) as second:
            await sock.send(captured)  # the attacker's replay, a moment after the restart
            reply = await _reply(sock)
            assert reply["type"] != "welcome", "a replayed datagram opened an episode"
            assert reply == {"type": "challenge", "epoch": reply["epoch"]}
            assert reply["epoch"] != first_epoch
            await sock.send(captured)  # once challenged, the same capture is not answered again
            # the honest peer carries on: challenged once, then welcomed by the new run
            _, epoch = await _open(sock, "victim")
            assert epoch == reply["epoch"]
            refusals = await second.wait_log(lambda log: log["event"].endswith("peer_refused"))
            assert refusals["reason"].startswith("replayed")
