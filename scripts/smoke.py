"""Run the documented commands of an install as a user would, and check what they print.

    python scripts/smoke.py serve tcp|udp|websocket|socketio
    python scripts/smoke.py demo | simulate
    python scripts/smoke.py cluster (two serve --redis-url nodes on a redis-server it starts)
    python scripts/smoke.py missing COMMAND... (what a missing extra must say)

Each check starts ``heartbeat-monitor`` (the console script beside this
interpreter) in a real process. ``serve``: two real clients connect, one beats
and one goes silent; the silent one must be ended for its silence, the beating
one told about it and not ended; Ctrl-C must end the server with status 130.
``.ci/run`` runs these in fresh virtualenvs, outside the source tree, against
the installed wheel; tests/cli runs them against the development install.
Exit status 0 when every check passed; a failure says what was expected.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

INTERVAL = 0.3
#: Bounds on waiting (never on how fast anything is): generous for a loaded 2-core machine.
STARTUP = 30.0
WAIT = 15.0
UDP_KEY = b"smoke test key"


class CheckFailed(Exception):
    pass


def command() -> list[str]:
    script = Path(sys.executable).with_name("heartbeat-monitor")
    if not script.exists():
        raise CheckFailed(f"no heartbeat-monitor script beside {sys.executable}")
    return [str(script)]


class Server:
    """``heartbeat-monitor serve`` in a process; its JSON log lines, one at a time."""

    def __init__(self, process: Process) -> None:
        self.process = process
        assert process.stdout is not None
        self.stdout = BufferedByteReceiveStream(process.stdout)
        self.seen: list[dict[str, Any]] = []

    async def next_event(self, name: str, **fields: Any) -> dict[str, Any]:
        with anyio.fail_after(WAIT):
            while True:
                line = await self.stdout.receive_until(b"\n", 1 << 20)
                event: dict[str, Any] = json.loads(line)
                self.seen.append(event)
                if event["event"] == name and all(event.get(k) == v for k, v in fields.items()):
                    return event


# -- clients, one pair per transport: (beating, silent); each returns the notices it got ------


async def _line_client(
    name: str, host: str, port: int, peer: str, beat: bool, out: list[Any]
) -> None:
    if name == "tcp":
        async with await anyio.connect_tcp(host, port) as stream:
            await stream.send(json.dumps({"type": "hello", "peer": peer}).encode() + b"\n")
            reader = BufferedByteReceiveStream(stream)

            async def receive() -> None:
                while True:
                    out.append(json.loads(await reader.receive_until(b"\n", 1 << 16)))

            async with anyio.create_task_group() as task_group:
                task_group.start_soon(receive)
                while True:
                    if beat:
                        await stream.send(b'{"type":"beat"}\n')
                    await anyio.sleep(INTERVAL / 2)
    from websockets.asyncio.client import connect

    async with connect(f"ws://{host}:{port}") as websocket:
        await websocket.send(json.dumps({"type": "hello", "peer": peer}))

        async def receive_ws() -> None:
            async for message in websocket:
                out.append(json.loads(message))

        async with anyio.create_task_group() as task_group:
            task_group.start_soon(receive_ws)
            while True:
                if beat:
                    await websocket.send('{"type":"beat"}')
                await anyio.sleep(INTERVAL / 2)


async def _udp_client(host: str, port: int, peer: str, beat: bool, out: list[Any]) -> None:
    from heartbeat_monitor_udp import TAG_SIZE, datagram

    epoch: list[str | None] = [None]  # the server's boot epoch, from its challenge
    async with await anyio.create_connected_udp_socket(host, port) as sock:

        async def receive() -> None:
            async for packet in sock:
                loaded = json.loads(packet[:-TAG_SIZE])
                for message in loaded if isinstance(loaded, list) else [loaded]:
                    if message.get("type") == "challenge":
                        epoch[0] = message["epoch"]
                        await sock.send(datagram(peer, key=UDP_KEY, epoch=epoch[0]))
                    else:
                        out.append(message)

        async with anyio.create_task_group() as task_group:
            task_group.start_soon(receive)
            await sock.send(datagram(peer, key=UDP_KEY))
            while True:
                await anyio.sleep(INTERVAL / 2)
                if beat:
                    await sock.send(datagram(peer, key=UDP_KEY, epoch=epoch[0]))


async def _socketio_client(url: str, peer: str, beat: bool, out: list[Any]) -> None:
    import socketio

    client = socketio.AsyncClient(reconnection=False, handle_sigint=False)
    client.on("peer_gone", lambda data: out.append({"type": "gone", **data}))
    client.on("presence_diff", lambda data: out.append({"type": "presence_diff", **data}))
    await client.connect(url, wait_timeout=10)
    out.append({"type": "welcome", "peer": client.get_sid()})
    try:
        while client.connected:
            if beat:
                await client.emit("heartbeat")
            await anyio.sleep(INTERVAL / 2)
        out.append({"type": "closed"})
    finally:
        with anyio.CancelScope(shield=True):
            await client.disconnect()


async def _client(
    transport: str, serving: dict[str, Any], peer: str, beat: bool, out: list[Any]
) -> None:
    """One client until cancelled; once the server ends it, it notes ``closed`` and waits."""
    host, port = serving["host"], serving["port"]
    try:
        if transport == "socketio":
            await _socketio_client(serving["url"].removesuffix("/socket.io/"), peer, beat, out)
        elif transport == "udp":
            await _udp_client(host, port, peer, beat, out)
        else:
            await _line_client(transport, host, port, peer, beat, out)
    except Exception as exc:  # the server closed it: the end of the stream, in any form
        out.append({"type": "closed", "error": repr(exc)})
    await anyio.sleep_forever()


def _told(message: dict[str, Any], peer: str) -> bool:
    """Whether ``message`` tells of ``peer``'s departure (a presence diff, or ``peer_gone``)."""
    if message.get("type") == "presence_diff":
        return peer in message["leaves"]
    return message.get("type") == "gone" and message.get("peer") == peer


async def check_serve(transport: str) -> str:
    options = ["serve", "--transport", transport, "--port", "0", "--interval", str(INTERVAL)]
    options += ["--log-format", "json"]
    with tempfile.TemporaryDirectory() as folder:
        if transport == "udp":
            key_file = anyio.Path(folder, "key")
            await key_file.write_bytes(UDP_KEY + b"\n")
            options += ["--udp-key-file", str(key_file)]
        async with await anyio.open_process([*command(), *options], stderr=None) as process:
            server = Server(process)
            try:
                return await _serve_session(server, transport)
            finally:
                if process.returncode is None:
                    process.kill()


async def _check_module(base: str) -> None:
    """``serve`` (Socket.IO) hands browsers the client module at /static/heartbeat.js."""
    import urllib.error
    import urllib.request

    def get() -> bytes:
        with urllib.request.urlopen(f"{base}/static/heartbeat.js", timeout=WAIT) as response:
            return bytes(response.read())

    try:
        body = await anyio.to_thread.run_sync(get)
    except urllib.error.URLError as exc:
        raise CheckFailed(f"socketio: GET /static/heartbeat.js failed: {exc}") from None
    if b"export function startHeartbeat" not in body:
        raise CheckFailed("socketio: /static/heartbeat.js is not the browser client module")


async def _serve_session(server: Server, transport: str) -> str:
    with anyio.fail_after(STARTUP):
        serving = await server.next_event(f"heartbeat_monitor.{transport}.serving")
    if transport == "socketio":
        await _check_module(serving["url"].removesuffix("/socket.io/"))
    beating: list[Any] = []
    silent: list[Any] = []
    async with anyio.create_task_group() as clients:
        for peer, beat, out in (("beating", True, beating), ("silent", False, silent)):
            clients.start_soon(_client, transport, serving, peer, beat, out)
        with anyio.fail_after(WAIT):
            while not (beating and silent):
                await anyio.sleep(0.05)
        silent_id = silent[0]["peer"]
        gone = await server.next_event("heartbeat_monitor.peer_gone", peer=silent_id)
        if gone["reason"] != "heartbeat timeout":
            raise CheckFailed(f"{transport}: the silent client ended as {gone['reason']!r}")
        with anyio.fail_after(WAIT):
            while not any(_told(m, silent_id) for m in beating):
                await anyio.sleep(0.05)
        await anyio.sleep(INTERVAL * 4)  # the beating client stays through several timeouts
        ended = [e for e in server.seen if e["event"] == "heartbeat_monitor.peer_gone"]
        if [e["peer"] for e in ended] != [silent_id]:
            raise CheckFailed(f"{transport}: expected only the silent client gone, saw {ended}")
        server.process.send_signal(signal.SIGINT)
        with anyio.fail_after(WAIT):
            status = await server.process.wait()
        clients.cancel_scope.cancel()
    if status != 130:
        raise CheckFailed(f"{transport}: Ctrl-C should exit with 130, not {status}")
    return f"serve --transport {transport}: silent client expired, the other told; Ctrl-C -> 130"


async def check_cluster() -> str:
    """Two ``serve --redis-url`` nodes: a client silent on one is announced on the other."""
    import shutil
    import socket

    executable = shutil.which("redis-server")
    if executable is None:
        raise CheckFailed("redis-server is not installed (apt-get install redis-server)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        redis_port = probe.getsockname()[1]
    redis = [executable, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""]
    async with await anyio.open_process([*redis, "--appendonly", "no"]) as redis_process:
        try:
            return await _cluster_session(f"redis://127.0.0.1:{redis_port}/0")
        finally:
            redis_process.kill()


async def _cluster_session(url: str) -> str:
    options = ["serve", "--port", "0", "--interval", str(INTERVAL), "--log-format", "json"]
    options += ["--redis-url", url, "--node-timeout", "3", "--ping-interval", "1"]
    servers: list[Server] = []
    async with anyio.create_task_group() as task_group:
        for name in ("a", "b"):
            process = await anyio.open_process([*command(), *options, "--node-id", name])
            servers.append(Server(process))
        try:
            serving = []
            for server in servers:
                with anyio.fail_after(STARTUP):
                    serving.append(await server.next_event("heartbeat_monitor.socketio.serving"))
            beating: list[Any] = []
            silent: list[Any] = []
            task_group.start_soon(_client, "socketio", serving[1], "beating", True, beating)
            task_group.start_soon(_client, "socketio", serving[0], "silent", False, silent)
            with anyio.fail_after(WAIT):
                while not (beating and silent):
                    await anyio.sleep(0.05)
            silent_id = silent[0]["peer"]
            with anyio.fail_after(WAIT):  # presence is cluster-wide (serve's default notify)
                while not any(_told(m, silent_id) for m in beating[1:]):
                    await anyio.sleep(0.05)
            [notice] = [m for m in beating[1:] if _told(m, silent_id)]
            if notice["leaves"][silent_id].get("reason") != "heartbeat timeout":
                raise CheckFailed(f"cluster: node b's client was told {notice}")
        finally:
            for server in servers:
                server.process.kill()
            task_group.cancel_scope.cancel()
    return "serve --redis-url: a client silent on node a left node b's client's presence"


def _run(*arguments: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command(), *arguments], capture_output=True, text=True, timeout=timeout, check=False
    )


def _events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def check_demo() -> str:
    result = _run("demo", "--duration", "5", "--interval", "0.3", "--clients", "3", "--silent",
                  "2", "--log-format", "json")  # fmt: skip
    if result.returncode != 0:
        raise CheckFailed(f"demo exited {result.returncode}: {result.stderr[-2000:]}")
    events = _events(result.stdout)
    summaries = [e for e in events if e["event"] == "heartbeat_monitor.demo.summary"]
    if len(summaries) != 1:
        raise CheckFailed(f"demo printed {len(summaries)} summaries, not one")
    summary = summaries[0]
    if summary["clients"] != 5 or summary["expiries"] != 2 or summary["notices_delivered"] < 2:
        raise CheckFailed(f"demo summary: {summary}")
    latency = summary["detection_latency_s"]
    if latency["min"] < 0.3 * 2:  # never early: not before interval x misses of silence
        raise CheckFailed(f"demo: an expiry before the timeout: {latency}")
    return f"demo: {summary}"


def check_simulate() -> str:
    result = _run("simulate", "--peers", "30", "--silent", "5", "--interval", "0.2",
                  "--duration", "3", "--log-format", "json")  # fmt: skip
    if result.returncode != 0:
        raise CheckFailed(f"simulate exited {result.returncode}: {result.stderr[-2000:]}")
    [summary] = [e for e in _events(result.stdout) if e["event"].endswith("simulate.summary")]
    if summary["expired"] != 5 or summary["unexpected"] != 0:
        raise CheckFailed(f"simulate summary: {summary}")
    return f"simulate: {summary}"


def check_missing(arguments: list[str]) -> str:
    result = _run(*arguments, timeout=30)
    lines = result.stderr.strip().splitlines()
    hint = "pip install 'aio-heartbeat-monitor["
    if result.returncode != 2 or len(lines) != 1 or hint not in lines[0]:
        raise CheckFailed(
            f"{' '.join(arguments)}: want one line naming the pip install and status 2, got "
            f"{result.returncode}: {result.stderr[-1000:]!r}"
        )
    return f"{' '.join(arguments)}: {lines[0]}"


def main(argv: list[str]) -> int:
    what, rest = argv[0], argv[1:]
    try:
        if what == "serve":
            message = anyio.run(check_serve, rest[0])
        elif what == "demo":
            message = check_demo()
        elif what == "simulate":
            message = check_simulate()
        elif what == "cluster":
            message = anyio.run(check_cluster)
        elif what == "missing":
            message = check_missing(rest)
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except CheckFailed as exc:
        print(f"FAILED {' '.join(argv)}: {exc}", file=sys.stderr)
        return 1
    print(f"ok  {message}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main(sys.argv[1:]))
