"""Presence with the official Socket.IO JavaScript client and ``static/presence.js``.

``tests/js/presence.mjs`` (Node) opens real socket.io-client sockets against a
real server on loopback; each keeps its list with ``trackPresence`` and beats
with ``static/heartbeat.js``. The test drives it over stdin/stdout and compares
every list with the server's ``presence(room)``. Also runs the module's own
unit tests under Node's test runner.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process

from heartbeat_monitor import PeerLeft
from tests.conftest import require_tool
from tests.transports._util import until

from .conftest import Live, Serve
from .test_socketio import WINDOW, assert_windows, identify

HERE = Path(__file__).parent
JS = HERE.parent / "js"


def node_or_skip() -> str:
    node = shutil.which("node")
    require_tool("node", node is not None)
    assert node is not None
    if not (JS / "node_modules" / "socket.io-client").is_dir():
        require_tool("socket.io-client (npm ci in tests/js)", False)
    return node


def test_presence_module_under_node_test_runner() -> None:
    node = node_or_skip()
    result = subprocess.run(
        [node, "--test", str(HERE / "presence.test.mjs")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# fail 0" in result.stdout
    assert "# pass 0" not in result.stdout


class Clients:
    """The Node process: send a command, read its answer (bounded)."""

    def __init__(self, process: Process) -> None:
        self.process = process
        self._buffer = ""

    async def ask(self, **command: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        await self.process.stdin.send((json.dumps(command) + "\n").encode())
        with anyio.fail_after(20):
            while "\n" not in self._buffer:
                self._buffer += (await self.process.stdout.receive()).decode()
        line, self._buffer = self._buffer.split("\n", 1)
        answer: dict[str, Any] = json.loads(line)
        assert answer["type"] != "error", answer
        return answer

    async def open(self, n: int = 1, auth: Any = None) -> list[str]:
        return list((await self.ask(cmd="open", n=n, auth=auth))["ids"])

    async def report(self) -> dict[str, dict[str, Any]]:
        return dict((await self.ask(cmd="report"))["clients"])

    async def settled(self, live: Live, within: float = 15.0) -> dict[str, dict[str, Any]]:
        """Wait until every connected client's list equals the server's presence."""
        with anyio.fail_after(within):
            while True:
                report = await self.report()
                expected = live.presence()
                if not live.hub.roster.pending and all(
                    c["ready"] and c["peers"] == expected for c in report.values() if c["connected"]
                ):
                    return report
                await anyio.sleep(0.02)


@asynccontextmanager
async def node_clients(live: Live) -> AsyncIterator[Clients]:
    node = node_or_skip()
    command = [node, str(JS / "presence.mjs"), live.url, str(live.adapter.interval)]
    async with await anyio.open_process(command, cwd=JS) as process:
        try:
            yield Clients(process)
        finally:
            with anyio.CancelScope(shield=True):
                assert process.stdin is not None
                await process.stdin.aclose()
                with anyio.move_on_after(5):
                    await process.wait()
                if process.returncode is None:
                    process.kill()


@pytest.mark.anyio
async def test_js_clients_state_storms_and_counts(serve: Serve) -> None:
    live = await serve()
    async with node_clients(live) as clients:
        (observer,) = await clients.open()
        report = await clients.settled(live)
        assert report[observer]["states"] == 1
        crowd = await clients.open(20)  # a join storm: 20 sockets at once
        report = await clients.settled(live)
        assert len(report[observer]["peers"]) == 21
        leavers = crowd[:10]
        await clients.ask(cmd="close", ids=leavers)  # a leave storm
        await until(lambda: set(live.presence()).isdisjoint(leavers), within=15)
        report = await clients.settled(live)
        for sid, client in report.items():
            if not client["connected"]:
                continue
            assert set(client["peers"]).isdisjoint(leavers)
            assert client["count"] == {"peers": 11, "connections": 11}
            assert client["gaps"] == 0, sid
            assert client["diffs"] == sorted(set(client["diffs"]))  # in order, none twice
        seqs = report[observer]["diffs"]
        assert seqs == list(range(1, len(seqs) + 1))  # the observer missed no diff
        assert_windows(live.flushes())
        leaves = [str(e.key) for _, e in live.told if isinstance(e, PeerLeft)]
        assert sorted(leaves) == sorted(leavers)


@pytest.mark.anyio
async def test_js_grace_reconnect_shows_nothing(serve: Serve) -> None:
    grace = 1.0
    live = await serve(identify=identify, leave_grace=grace)
    async with node_clients(live) as clients:
        (observer,) = await clients.open()
        (first,) = await clients.open(auth={"user": "u"})
        report = await clients.settled(live)
        seen = len(report[observer]["diffs"])
        await clients.ask(cmd="drop", ids=[first])  # the transport is cut
        await clients.open(auth={"user": "u"})  # back within the grace
        await anyio.sleep(grace + 2 * WINDOW)  # let the grace deadline pass ...
        (marker,) = await clients.open()  # ... then a marker bounds what was told
        report = await clients.settled(live)
        assert marker in report[observer]["peers"]
        assert "u" in report[observer]["peers"]
        assert len(report[observer]["diffs"]) == seen + 1  # the marker's join, nothing on u
        assert [e for _, e in live.told if isinstance(e, PeerLeft)] == []
