"""Configuration: engine.io's truncated pingInterval, argument checks, client helper, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
import socketio

from heartbeat_monitor import ConfigurationError, HeartbeatMonitor
from heartbeat_monitor_socketio import HeartbeatClient, SocketIOAdapter, check_engineio


def advertised_ms(sio: socketio.AsyncServer) -> int:
    """What python-engineio's handshake tells clients (engineio/async_server.py)."""
    eio = sio.eio
    return int(eio.ping_interval + eio.ping_interval_grace_period) * 1000


@pytest.mark.parametrize(
    ("ping_interval", "shown"),
    [(0.3, "pingInterval=0 ms"), (1.5, "pingInterval=1000 ms"), ((1, 0.5), "1000 ms")],
)
def test_fractional_engineio_ping_interval_is_refused(ping_interval: Any, shown: str) -> None:
    sio = socketio.AsyncServer(async_mode="asgi", ping_interval=ping_interval)
    with pytest.raises(ConfigurationError, match=shown):
        SocketIOAdapter(sio, interval=0.3)


@pytest.mark.parametrize(("ping_interval", "expected_ms"), [(0.3, 1000), (1.5, 2000), (25, 25000)])
def test_fractional_engineio_ping_interval_is_corrected(
    ping_interval: float, expected_ms: int
) -> None:
    sio = socketio.AsyncServer(async_mode="asgi", ping_interval=ping_interval)
    SocketIOAdapter(sio, interval=0.3, engineio="fix")
    assert advertised_ms(sio) == expected_ms
    assert sio.eio.ping_interval == ping_interval  # the server still pings as often as asked
    check_engineio(sio)  # and the result passes the check


def test_whole_second_intervals_pass() -> None:
    check_engineio(socketio.AsyncServer(async_mode="asgi"))
    check_engineio(socketio.AsyncServer(async_mode="asgi", ping_interval=(0.5, 0.5)))


@pytest.mark.parametrize(
    "options",
    [
        {"interval": 0},
        {"interval": float("nan")},
        {"interval": True},
        {"misses": 0},
        {"misses": "2"},
        {"event": "connect"},
        {"event": ""},
        {"namespace": "chat"},
        {"notify": "everyone"},
        {"engineio": "maybe"},
        {"min_beat_gap": 10.0},
        {"callback_timeout": 0},
        {"on_gone": [42]},
    ],
)
def test_bad_arguments_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        SocketIOAdapter(socketio.AsyncServer(async_mode="asgi"), **options)


def test_only_an_async_server_and_its_own_monitor_options() -> None:
    with pytest.raises(ConfigurationError, match="AsyncServer"):
        SocketIOAdapter(socketio.Server())
    monitor = HeartbeatMonitor(10)
    with pytest.raises(ConfigurationError, match="monitor you passed"):
        SocketIOAdapter(socketio.AsyncServer(async_mode="asgi"), monitor, resolution=1)


def test_a_shared_monitor_gets_per_peer_timeouts() -> None:
    monitor = HeartbeatMonitor(60)
    adapter = SocketIOAdapter(socketio.AsyncServer(async_mode="asgi"), monitor, interval=1)
    assert adapter.timeout == 2.0
    assert adapter.monitor is monitor


def test_heartbeat_client_arguments() -> None:
    client = socketio.AsyncClient()
    with pytest.raises(ConfigurationError):
        HeartbeatClient(client, 0)
    with pytest.raises(ConfigurationError):
        HeartbeatClient(client, 1, jitter=1.0)


@pytest.mark.anyio
async def test_heartbeat_client_stops_cleanly_when_never_connected() -> None:
    beating = HeartbeatClient(socketio.AsyncClient(), 0.01)
    async with beating:
        states = [beating.running]
        assert await beating.beat() is False
    states.append(beating.running)
    assert states == [True, False]
    assert beating.beats_sent == 0
    await beating.stop()  # idempotent


def test_cli_registers_serve_and_demo() -> None:
    from heartbeat_monitor._cli import build_parser

    parser = build_parser()
    args = parser.parse_args(
        ["serve", "--host", "127.0.0.1", "--port", "8000", "--interval", "0.3", "--misses", "2"]
    )
    assert (args.host, args.port, args.interval, args.misses) == ("127.0.0.1", 8000, 0.3, 2.0)
    assert callable(args.run)
    args = parser.parse_args(["demo", "--duration", "2"])
    assert args.duration == 2.0
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--interval", "-1"])


@pytest.mark.slow
def test_demo_shows_expiry_and_terminates() -> None:
    command = [sys.executable, "-m", "heartbeat_monitor._cli", "demo", "--duration", "3"]
    command += ["--interval", "0.3", "--clients", "3", "--silent", "1", "--log-format", "json"]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    events = [line["event"] for line in lines]
    assert "heartbeat_monitor.socketio.serving" in events
    gone = [line for line in lines if line["event"] == "heartbeat_monitor.peer_gone"]
    assert any(line["reason"] == "heartbeat timeout" for line in gone)
    told = [line for line in lines if line["event"] == "heartbeat_monitor.demo.told"]
    assert any(line["reason"] == "heartbeat timeout" for line in told)


@pytest.mark.anyio
async def test_serve_logs_departures_live_and_stops_on_ctrl_c() -> None:
    import signal

    import anyio
    from anyio.streams.buffered import BufferedByteReceiveStream

    command = [sys.executable, "-m", "heartbeat_monitor._cli", "serve", "--port", "0"]
    command += ["--interval", "0.2", "--misses", "2", "--log-format", "json"]
    async with await anyio.open_process(command) as process:
        assert process.stdout is not None
        stdout = BufferedByteReceiveStream(process.stdout)

        async def next_event(name: str) -> dict[str, Any]:
            with anyio.fail_after(15):
                while True:
                    line: dict[str, Any] = json.loads(await stdout.receive_until(b"\n", 1 << 16))
                    if line["event"] == name:
                        return line

        try:
            serving = await next_event("heartbeat_monitor.socketio.serving")
            url = serving["url"].removesuffix("/socket.io/")
            client = socketio.AsyncClient(reconnection=False)
            await client.connect(url, transports=["websocket"], wait_timeout=5)
            sid = client.get_sid()
            gone = await next_event("heartbeat_monitor.peer_gone")
            assert (gone["peer"], gone["reason"]) == (sid, "heartbeat timeout")
            await client.wait()
            process.send_signal(signal.SIGINT)
            with anyio.fail_after(15):
                code = await process.wait()
            assert code == 130
        finally:
            if process.returncode is None:
                process.kill()


@pytest.mark.anyio
async def test_demo_stops_on_ctrl_c() -> None:
    import signal

    import anyio
    from anyio.streams.buffered import BufferedByteReceiveStream

    command = [sys.executable, "-m", "heartbeat_monitor._cli", "demo", "--log-format", "json"]
    command += ["--interval", "0.2", "--clients", "2", "--silent", "1"]
    async with await anyio.open_process(command) as process:
        assert process.stdout is not None
        stdout = BufferedByteReceiveStream(process.stdout)
        events: list[dict[str, Any]] = []
        try:
            with anyio.fail_after(15):
                while (
                    sum(e["event"] == "heartbeat_monitor.demo.client_started" for e in events) < 3
                ):
                    events.append(json.loads(await stdout.receive_until(b"\n", 1 << 16)))
            process.send_signal(signal.SIGINT)
            with anyio.fail_after(15):
                rest = b""
                async for chunk in process.stdout:
                    rest += chunk
                code = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
    assert code == 130
    lines = [json.loads(line) for line in rest.decode().splitlines() if line.startswith("{")]
    assert any(line.get("reason") == "server shutdown" for line in lines)
