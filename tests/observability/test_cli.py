"""``heartbeat-monitor serve --metrics``, run as a user runs it: a real process, real clients."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import pytest
from anyio.streams.text import TextReceiveStream

from ._http import get, samples

pytestmark = pytest.mark.anyio

CLI = [sys.executable, "-m", "heartbeat_monitor._cli", "serve"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Server:
    """A ``serve`` process; ``await next_event(name)`` reads its JSON log lines up to ``name``."""

    def __init__(self, process: anyio.abc.Process) -> None:
        self.process = process
        assert process.stdout is not None
        self._lines = TextReceiveStream(process.stdout)
        self._buffer = ""
        self.events: list[dict[str, Any]] = []

    async def next_event(self, name: str, within: float = 20.0) -> dict[str, Any]:
        for seen in self.events:  # logged before an event asked for earlier
            if seen["event"] == name and seen.get("_read") is None:
                seen["_read"] = True
                return seen
        with anyio.fail_after(within):
            while True:
                while "\n" not in self._buffer:
                    self._buffer += await self._lines.receive()
                line, self._buffer = self._buffer.split("\n", 1)
                event: dict[str, Any] = json.loads(line)
                self.events.append(event)
                if event["event"] == name:
                    event["_read"] = True
                    return event


@asynccontextmanager
async def serving(*args: str) -> AsyncIterator[Server]:
    command = [*CLI, "--log-format", "json", *args]
    async with await anyio.open_process(command, stderr=subprocess.PIPE) as process:
        try:
            yield Server(process)
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGINT)
                with anyio.fail_after(20):
                    assert await process.wait() == 130


async def test_serve_tcp_with_metrics_on_a_port_of_their_own() -> None:
    arguments = ["--transport", "tcp", "--port", "0", "--interval", "0.3", "--metrics-port", "0"]
    async with serving(*arguments) as server:
        urls = await server.next_event("heartbeat_monitor.metrics.serving")
        tcp = await server.next_event("heartbeat_monitor.tcp.serving")
        async with (
            await anyio.connect_tcp(tcp["host"], tcp["port"]) as beating,
            await anyio.connect_tcp(tcp["host"], tcp["port"]) as silent,
        ):
            await beating.send(b'{"type":"hello","peer":"beating"}\n')
            await silent.send(b'{"type":"hello","peer":"silent"}\n')
            async with anyio.create_task_group() as task_group:

                async def beat() -> None:
                    while True:
                        await beating.send(b'{"type":"beat"}\n')
                        await anyio.sleep(0.1)

                task_group.start_soon(beat)
                gone = await server.next_event("heartbeat_monitor.peer_gone")
                assert (gone["peer"], gone["reason"]) == ("silent", "heartbeat timeout")
                scraped = samples((await get(urls["metrics"])).text)
                task_group.cancel_scope.cancel()
        assert scraped["heartbeat_monitor_peers"][(("state", "alive"),)] == 1
        assert scraped["heartbeat_monitor_gone_total"] == {(("reason", "heartbeat timeout"),): 1}
        assert scraped["heartbeat_monitor_detection_latency_seconds_count"] == {(): 1}
        page = await get(urls["status"])
        assert page.status == 200
        assert "EventSource" in page.text


async def test_serve_socketio_with_metrics_on_the_same_server() -> None:
    async with serving("--port", "0", "--metrics") as server:
        serving_event = await server.next_event("heartbeat_monitor.socketio.serving")
        urls = await server.next_event("heartbeat_monitor.metrics.serving")
        base = f"http://{serving_event['host']}:{serving_event['port']}"
        assert (urls["status"], urls["metrics"]) == (base + "/status", base + "/metrics")
        scraped = samples((await get(base + "/metrics")).text)
        assert scraped["heartbeat_monitor_peers"][(("state", "alive"),)] == 0
        assert (await get(base + "/status.json")).json()["peers"]["alive"] == 0
        assert (await get(base + "/socket.io/?EIO=4&transport=polling")).status == 200


def test_metrics_port_and_port_must_differ() -> None:
    result = subprocess.run(
        [*CLI, "--transport", "tcp", "--port", "9999", "--metrics-port", "9999"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "heartbeat-monitor serve: error: --metrics-port 9999 is --port: give another one"
    ), result.stderr


def test_metrics_without_prometheus_client_is_one_line() -> None:
    block = "import sys; sys.modules['prometheus_client'] = None; "
    main = "from heartbeat_monitor._cli import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run(
        [sys.executable, "-c", block + main, "serve", "--transport", "tcp", "--metrics"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "--metrics" in line
    assert "pip install 'aio-heartbeat-monitor[metrics]'" in line
