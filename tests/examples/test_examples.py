"""Every example runs: start it, connect real clients (one beating, one silent), observe the
documented effect, stop it. An example that rots fails here."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import sys
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
INTERVAL = 0.3
WAIT = 20.0

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio"])]

# The same clients .ci/run's smoke checks use against the installed wheel.
_spec = importlib.util.spec_from_file_location("smoke", ROOT / "scripts" / "smoke.py")
assert _spec is not None
assert _spec.loader is not None
smoke: Any = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(smoke)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Example:
    def __init__(self, process: Process, port: int) -> None:
        self.process = process
        self.port = port
        assert process.stdout is not None
        self.stdout = BufferedByteReceiveStream(process.stdout)

    async def line(self, containing: str) -> str:
        """The next line of the example's output that contains ``containing``."""
        with anyio.fail_after(WAIT):
            while True:
                line = (await self.stdout.receive_until(b"\n", 1 << 16)).decode()
                if containing in line:
                    return line


@asynccontextmanager
async def run_example(name: str, *args: str, **env: str) -> AsyncIterator[Example]:
    port = free_port()
    env = {**os.environ, "HEARTBEAT_INTERVAL": str(INTERVAL), "PYTHONUNBUFFERED": "1", **env}
    command = [sys.executable, str(EXAMPLES / name), "--port", str(port), *args]
    async with await anyio.open_process(command, env=env, stderr=None) as process:
        example = Example(process, port)
        try:
            await _wait_for_port(port)
            yield example
            process.send_signal(signal.SIGINT)  # Ctrl-C: the example stops by itself
            with anyio.fail_after(WAIT):
                await process.wait()
        finally:
            if process.returncode is None:
                process.kill()


async def _wait_for_port(port: int) -> None:
    with anyio.fail_after(WAIT):
        while True:
            try:
                stream = await anyio.connect_tcp("127.0.0.1", port)
            except OSError:
                await anyio.sleep(0.05)
                continue
            await stream.aclose()
            return


@asynccontextmanager
async def clients(transport: str, port: int) -> AsyncIterator[tuple[list[Any], list[Any]]]:
    serving = {"host": "127.0.0.1", "port": port, "url": f"http://127.0.0.1:{port}/socket.io/"}
    beating: list[Any] = []
    silent: list[Any] = []
    async with anyio.create_task_group() as task_group:
        task_group.start_soon(smoke._client, transport, serving, "beating", True, beating)
        task_group.start_soon(smoke._client, transport, serving, "silent", False, silent)
        with anyio.fail_after(WAIT):
            while not (beating and silent):
                await anyio.sleep(0.02)
        yield beating, silent
        task_group.cancel_scope.cancel()


async def get(url: str) -> tuple[int, str]:
    """An HTTP GET (urllib, in a worker thread): status and text."""

    def fetch() -> tuple[int, str]:
        with urllib.request.urlopen(url, timeout=WAIT) as response:
            return int(response.status), response.read().decode()

    return await anyio.to_thread.run_sync(fetch)


async def told(inbox: list[Any], peer: object) -> dict[str, Any]:
    with anyio.fail_after(WAIT):
        while True:
            for message in inbox:
                if message.get("type") == "gone" and message.get("peer") == peer:
                    return dict(message)
            await anyio.sleep(0.02)


@pytest.mark.parametrize(("example", "transport"), [
    ("tcp_server.py", "tcp"),
    ("websockets_server.py", "websocket"),
    ("socketio_app.py", "socketio"),
])  # fmt: skip
async def test_a_silent_client_is_gone_and_the_others_told(anyio_backend, example, transport):
    async with run_example(example) as running, clients(transport, running.port) as inboxes:
        beating, silent = inboxes
        silent_id = silent[0]["peer"]
        line = await running.line(" is gone: ")
        assert line.strip() == f"{silent_id} is gone: heartbeat timeout"
        notice = await told(beating, silent_id)
        assert notice["reason"] == "heartbeat timeout"


async def test_fastapi_lists_the_peers_alive(anyio_backend):
    async with (
        run_example("fastapi_app.py") as running,
        clients("socketio", running.port) as (beating, silent),
    ):
        url = f"http://127.0.0.1:{running.port}/peers"
        status, alive = await get(url)
        assert status == 200
        assert sorted(json.loads(alive)) == sorted([beating[0]["peer"], silent[0]["peer"]])
        await told(beating, silent[0]["peer"])
        assert json.loads((await get(url))[1]) == [beating[0]["peer"]]


async def test_the_browser_page_beats_and_hears_who_is_gone(anyio_backend, tmp_path):
    """The page and the module it imports are served; that module, run by a real client
    (Node, the official socket.io-client), keeps one socket alive and hears of a silent one."""
    node = shutil.which("node")
    require_tool("node", node is not None)
    client_dir = ROOT / "tests" / "js" / "node_modules" / "socket.io-client"
    require_tool("socket.io-client", client_dir.is_dir())
    async with run_example("socketio_app.py") as running:
        url = f"http://127.0.0.1:{running.port}"
        page = await get(f"{url}/")
        module = await get(f"{url}/static/heartbeat.js")
        assert page[0] == module[0] == 200
        assert 'import { startHeartbeat } from "/static/heartbeat.js";' in page[1]
        assert module[1] == (ROOT / "static" / "heartbeat.js").read_text()
        served = tmp_path / "heartbeat.mjs"
        served.write_text(module[1])
        script = Path(__file__).with_name("browser_client.mjs")
        command = [str(node), str(script), str(client_dir), str(served), url, str(INTERVAL)]
        async with await anyio.open_process(command) as client:
            assert client.stdout is not None
            lines = BufferedByteReceiveStream(client.stdout)
            events: list[dict[str, Any]] = []
            try:
                with anyio.fail_after(WAIT):
                    while not any(e["event"] == "peer_gone" for e in events):
                        events.append(json.loads(await lines.receive_until(b"\n", 1 << 16)))
                    while not any(e["event"] == "disconnect" for e in events):
                        events.append(json.loads(await lines.receive_until(b"\n", 1 << 16)))
            finally:
                client.kill()
        [silent] = [e["id"] for e in events if e["event"] == "connect" and e["client"] == "silent"]
        [gone] = [e for e in events if e["event"] == "peer_gone"]
        assert (gone["peer"], gone["reason"]) == (silent, "heartbeat timeout")
        [ended] = [e for e in events if e["event"] == "disconnect"]
        assert ended["reason"] == "io server disconnect"
        line = await running.line(" is gone: ")
        assert line.strip() == f"{silent} is gone: heartbeat timeout"


async def test_the_monitor_alone(anyio_backend):
    result = await anyio.run_process([sys.executable, str(EXAMPLES / "monitor.py")], check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    [expired] = [line for line in lines if line.startswith("bob expired ")]
    late_by = float(expired.split()[2])
    assert late_by >= 0  # never early
    assert "alice alive: True | bob alive: False" in lines


@asynccontextmanager
async def redis_server() -> AsyncIterator[str]:
    """A throwaway redis-server on a free loopback port; its URL."""
    executable = shutil.which("redis-server")
    require_tool("redis-server", executable is not None)
    port = free_port()
    command = [str(executable), "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    async with await anyio.open_process([*command, "--appendonly", "no"]) as process:
        try:
            await _wait_for_port(port)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.kill()


async def test_two_nodes_on_redis(anyio_backend):
    """A client silent on node a is announced to a client of node b, through Redis."""
    async with (
        redis_server() as url,
        run_example("redis_nodes.py", "--node-id", "a", REDIS_URL=url) as a,
        run_example("redis_nodes.py", "--node-id", "b", REDIS_URL=url) as b,
    ):
        await a.line("listening on")
        await b.line("listening on")
        serving_a, serving_b = (
            {"host": "127.0.0.1", "port": n.port, "url": f"http://127.0.0.1:{n.port}/socket.io/"}
            for n in (a, b)
        )
        beating: list[Any] = []
        silent: list[Any] = []
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(smoke._client, "socketio", serving_b, "beating", True, beating)
            task_group.start_soon(smoke._client, "socketio", serving_a, "silent", False, silent)
            with anyio.fail_after(WAIT):
                while not (beating and silent):
                    await anyio.sleep(0.02)
            silent_id = silent[0]["peer"]
            notice = await told(beating, silent_id)  # a client of the other node hears it
            assert notice["reason"] == "heartbeat timeout"
            line = await a.line(" is gone: ")
            assert line.strip() == f"{silent_id} is gone: heartbeat timeout"
            task_group.cancel_scope.cancel()
