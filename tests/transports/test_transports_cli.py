"""Transports by name (entry points), and ``serve`` for a non-Socket.IO transport."""

from __future__ import annotations

import json
import sys
from functools import partial
from typing import Any

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream
from structlog.testing import capture_logs

from heartbeat_monitor import ConfigurationError
from heartbeat_monitor._transports import available, load_transport
from heartbeat_monitor.cli import serve


def test_every_adapter_is_found_by_entry_point():
    assert {"socketio", "websocket", "tcp", "udp"} <= set(available())
    from heartbeat_monitor_tcp import TcpTransport
    from heartbeat_monitor_udp import UdpTransport
    from heartbeat_monitor_websockets import WebSocketTransport

    assert load_transport("tcp") is TcpTransport
    assert load_transport("udp") is UdpTransport
    assert load_transport("websocket") is WebSocketTransport
    with pytest.raises(ConfigurationError, match="no transport 'carrier-pigeon'"):
        load_transport("carrier-pigeon")


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_serve_is_a_one_line_swap(anyio_backend):
    factory: Any = load_transport("tcp")
    transport = factory("127.0.0.1", 0)  # the one line: any installed name works
    with capture_logs() as logs:
        async with anyio.create_task_group() as task_group:
            host, port = await task_group.start(partial(serve, transport, timeout=5.0))
            async with await anyio.connect_tcp(host, port) as stream:
                await stream.send(b'{"type":"hello","peer":"cli"}\n')
                reader = BufferedByteReceiveStream(stream)
                welcome = json.loads(await reader.receive_until(b"\n", 1000))
            task_group.cancel_scope.cancel()
    assert welcome["peer"] == "cli"
    assert welcome["timeout"] == 5.0
    assert any(log["event"] == "heartbeat_monitor.tcp.serving" for log in logs)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("name", ["tcp", "udp", "websocket"])
async def test_the_serve_command_runs_each_transport(anyio_backend, name, tmp_path):
    """``heartbeat-monitor serve --transport NAME`` in a real process; a real client is welcomed."""
    key_file = tmp_path / "key"
    key_file.write_bytes(b"cli key\n")
    command = [sys.executable, "-m", "heartbeat_monitor._cli", "serve", "--transport", name]
    command += ["--port", "0", "--interval", "0.5", "--log-format", "json"]
    command += ["--udp-key-file", str(key_file)]
    async with await anyio.open_process(command, stderr=None) as process:
        assert process.stdout is not None
        lines = BufferedByteReceiveStream(process.stdout)
        with anyio.fail_after(20):
            while True:
                log = json.loads(await lines.receive_until(b"\n", 100_000))
                if log["event"] == f"heartbeat_monitor.{name}.serving":
                    break
        assert log["timeout"] == 1.0  # interval x misses (2)
        host, port = log["host"], log["port"]
        with anyio.fail_after(10):
            welcome = await _hello(name, host, port)
        process.terminate()
    assert welcome["type"] == "welcome"
    assert welcome["peer"] == "cli"


async def _hello(name: str, host: str, port: int) -> dict[str, Any]:
    if name == "tcp":
        async with await anyio.connect_tcp(host, port) as stream:
            await stream.send(b'{"type":"hello","peer":"cli"}\n')
            return dict(
                json.loads(await BufferedByteReceiveStream(stream).receive_until(b"\n", 999))
            )
    if name == "udp":
        from heartbeat_monitor_udp import TAG_SIZE, datagram

        async with await anyio.create_connected_udp_socket(host, port) as sock:
            await sock.send(datagram("cli", key=b"cli key"))
            challenge = json.loads((await sock.receive())[:-TAG_SIZE])  # the boot epoch
            await sock.send(datagram("cli", key=b"cli key", epoch=challenge["epoch"]))
            return dict(json.loads((await sock.receive())[:-TAG_SIZE]))
    from websockets.asyncio.client import connect

    async with connect(f"ws://{host}:{port}") as ws:
        await ws.send('{"type":"hello","peer":"cli"}')
        return dict(json.loads(await ws.recv()))
