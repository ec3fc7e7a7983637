"""The official JavaScript client (socket.io-client 4.x, pinned in tests/js) against the server."""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from heartbeat_monitor_socketio import Reason
from tests.conftest import require_tool

from .conftest import SLACK, StartServer

pytestmark = pytest.mark.anyio

JS = Path(__file__).resolve().parent.parent / "js"
INTERVAL = 0.3
MISSES = 2


def node_available() -> None:
    require_tool("node", shutil.which("node") is not None)
    require_tool(
        "socket.io-client (npm ci in tests/js)", (JS / "node_modules/socket.io-client").is_dir()
    )


class NodeClient:
    def __init__(self, process: anyio.abc.Process, mode: str) -> None:
        self.process = process
        self.mode = mode
        assert process.stdout is not None
        self._stdout = BufferedByteReceiveStream(process.stdout)
        self.lines: list[dict[str, Any]] = []

    @classmethod
    async def start(cls, url: str, transport: str, mode: str) -> NodeClient:
        process = await anyio.open_process(
            ["node", str(JS / "client.mjs"), url, transport, mode, str(INTERVAL)], cwd=JS
        )
        return cls(process, mode)

    async def next(self, kind: str, within: float = 10.0) -> dict[str, Any]:
        """The next line of type ``kind`` (earlier lines of other types are kept)."""
        with anyio.fail_after(within):
            while True:
                line: dict[str, Any] = json.loads(await self._stdout.receive_until(b"\n", 1 << 16))
                self.lines.append(line)
                if line["type"] == kind:
                    return line

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line["type"] == kind]

    async def close(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        with anyio.CancelScope(shield=True):
            await self.process.wait()
            await self.process.aclose()


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_node_clients_beat_go_silent_and_get_killed(
    start_server: StartServer, transport: str
) -> None:
    node_available()
    live = await start_server(interval=INTERVAL, misses=MISSES)
    watcher = await live.client()
    clients: list[NodeClient] = []
    try:
        async with anyio.create_task_group() as task_group:
            for mode in ("beat", "silent", "victim", "leaver"):

                async def start(mode: str = mode) -> None:
                    node_mode = "silent" if mode == "silent" else "beat"
                    client = await NodeClient.start(live.url, transport, node_mode)
                    client.mode = mode
                    clients.append(client)

                task_group.start_soon(start)
        hello = {}
        for client in clients:
            line = await client.next("connected")
            assert line["transport"] == transport
            hello[client] = line["id"]
        beater, silent, victim, leaver = (
            next(c for c in clients if c.mode == mode)
            for mode in ("beat", "silent", "victim", "leaver")
        )
        # The silent one is disconnected by the server, within its timeout + resolution + slack.
        started = time.monotonic()
        gone = await live.wait_gone(1, within=INTERVAL * MISSES + 2 * SLACK)
        resolution = live.adapter.monitor.tracker.resolution
        assert time.monotonic() - started <= INTERVAL * MISSES + resolution + SLACK
        assert gone == [(hello[silent], Reason.HEARTBEAT_TIMEOUT)]
        assert (await silent.next("disconnect"))["reason"] == "io server disconnect"
        # The victim is killed mid-session, without a goodbye.
        victim.process.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        gone = await live.wait_gone(2, within=INTERVAL * MISSES + 2 * SLACK)
        assert time.monotonic() - killed_at <= INTERVAL * MISSES + resolution + SLACK
        assert gone[1][0] == hello[victim]
        assert gone[1][1] in (
            Reason.TRANSPORT_CLOSE,
            Reason.TRANSPORT_ERROR,
            Reason.HEARTBEAT_TIMEOUT,
        )
        # The leaver says goodbye: socket.disconnect() reaches the server as "client disconnect".
        assert leaver.process.stdin is not None
        await leaver.process.stdin.send(b"leave\n")
        gone = await live.wait_gone(3)
        assert gone[2] == (hello[leaver], Reason.CLIENT_DISCONNECT)
        # The survivors (node and python) are told once about each.
        expected = [
            {"peer": hello[silent], "reason": "heartbeat timeout"},
            {"peer": hello[victim], "reason": gone[1][1]},
            {"peer": hello[leaver], "reason": "client disconnect"},
        ]
        told = [await beater.next("peer_gone") for _ in expected]
        assert [{"peer": line["peer"], "reason": line["reason"]} for line in told] == expected
        assert await watcher.peer_gone.wait(3) == expected
        # The beater stays alive for a few more timeouts.
        with anyio.move_on_after(INTERVAL * MISSES * 3):
            await live.wait_gone(4, within=60)
        assert len(live.gone) == 3
        assert beater.process.returncode is None
    finally:
        for client in clients:
            await client.close()
