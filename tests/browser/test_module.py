"""static/heartbeat.js: its own tests under Node's test runner, and how ``serve`` serves it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import aiohttp
import pytest
import socketio

from heartbeat_monitor_socketio import SocketIOAdapter, SocketIOServer, StaticModules
from heartbeat_monitor_socketio._static import static_dir
from tests.conftest import require_tool

HERE = Path(__file__).parent


def test_module_under_node_test_runner():
    node = shutil.which("node")
    require_tool("node", node is not None)
    assert node is not None
    result = subprocess.run(
        [node, "--test", str(HERE / "heartbeat.test.mjs")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# fail 0" in result.stdout
    assert "# pass 0" not in result.stdout


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_static_modules_serve_the_module_and_nothing_else():
    app = StaticModules()
    assert "heartbeat.js" in app.names
    adapter = SocketIOAdapter(socketio.AsyncServer(async_mode="asgi"))
    async with (
        SocketIOServer(adapter, other_asgi_app=app) as server,
        aiohttp.ClientSession(server.url) as client,
    ):
        async with client.get("/static/heartbeat.js") as response:
            assert response.status == 200
            assert response.headers["content-type"] == "text/javascript; charset=utf-8"
            assert response.headers["access-control-allow-origin"] == "*"
            body = await response.read()
        assert body == (static_dir() / "heartbeat.js").read_bytes()
        assert b"export function startHeartbeat" in body
        async with client.head("/static/heartbeat.js") as response:
            assert response.status == 200
            assert int(response.headers["content-length"]) == len(body)
        for path in ("/static/..%2Fpyproject.toml", "/static/nope.js", "/static/", "/x"):
            async with client.get(path) as response:
                assert response.status == 404, path
        async with client.post("/static/heartbeat.js") as response:
            assert response.status == 405
        async with client.get("/socket.io/?EIO=4&transport=polling") as response:
            assert response.status == 200  # Socket.IO is still served beside it


def test_a_folder_without_modules_is_said_once(tmp_path: Path):
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        app = StaticModules(directory=tmp_path)
    assert app.names == []
    assert [entry["event"] for entry in logs] == ["heartbeat_monitor.socketio.no_static_modules"]
