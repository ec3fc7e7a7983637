"""A real ``heartbeat-monitor serve`` process for the hardening tests, its logs read live.

``server_process("udp", port=..., nofile=...)`` starts the CLI in a subprocess
(optionally under ``RLIMIT_NOFILE``, set with :func:`resource.setrlimit` in the
child before anything else runs), waits for its ``serving`` line and yields a
:class:`Server` whose ``logs`` grow as the process prints them (JSON lines).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

#: Runs the CLI after lowering the open-file limit to argv[1] (0: unchanged).
LAUNCHER = """
import resource, sys
limit = int(sys.argv[1])
if limit:
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
from heartbeat_monitor._cli import main
sys.exit(main(sys.argv[2:]))
"""


def free_port(kind: socket.SocketKind = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def connecting(port: int, count: int) -> list[socket.socket]:
    """``count`` non-blocking connects to ``port`` on loopback (completed by the kernel)."""
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        try:
            sock.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        sockets.append(sock)
    return sockets


class Server:
    def __init__(self, process: anyio.abc.Process, transport: str) -> None:
        self.process = process
        self.transport = transport
        self.logs: list[dict[str, Any]] = []
        self.host = ""
        self.port = 0
        self._changed = anyio.Event()

    async def read_logs(self) -> None:
        assert self.process.stdout is not None
        lines = BufferedByteReceiveStream(self.process.stdout)
        try:
            while True:
                line = await lines.receive_until(b"\n", 1 << 20)
                try:
                    self.logs.append(json.loads(line))
                except ValueError:
                    self.logs.append({"event": "<not json>", "line": line.decode(errors="replace")})
                self._changed.set()
                self._changed = anyio.Event()
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.ClosedResourceError):
            self._changed.set()

    def events(self, name: str) -> list[dict[str, Any]]:
        return [log for log in self.logs if log.get("event") == name]

    def unstructured(self) -> list[str]:
        """Lines that were not structlog's JSON (tracebacks printed by a library)."""
        return [log["line"] for log in self.logs if log.get("event") == "<not json>"]

    async def wait_log(
        self, predicate: Callable[[dict[str, Any]], bool], within: float = 20.0
    ) -> dict[str, Any]:
        """The first log line matching ``predicate`` (waits, bounded, for the process)."""
        with anyio.fail_after(within):
            seen = 0
            while True:
                for log in self.logs[seen:]:
                    if predicate(log):
                        return log
                seen = len(self.logs)
                if self.process.returncode is not None:
                    raise AssertionError(f"the server exited ({self.process.returncode})")
                await self._changed.wait()


@asynccontextmanager
async def server_process(
    transport: str,
    *,
    port: int = 0,
    interval: float = 0.5,
    nofile: int = 0,
    key_file: Path | None = None,
    options: tuple[str, ...] = (),
) -> AsyncIterator[Server]:
    command = [sys.executable, "-c", LAUNCHER, str(nofile), "serve", "--transport", transport]
    command += ["--port", str(port), "--interval", str(interval), "--log-format", "json"]
    if key_file is not None:
        command += ["--udp-key-file", str(key_file)]
    command += options
    # stderr joins stdout: what the server prints outside structlog (tracebacks) is seen too
    async with await anyio.open_process(command, stderr=subprocess.STDOUT) as process:
        server = Server(process, transport)
        try:
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(server.read_logs)
                serving = await server.wait_log(
                    lambda log: log.get("event") == f"heartbeat_monitor.{transport}.serving"
                )
                if "url" in serving:  # socketio: http://host:port/socket.io/
                    host, port_text = serving["url"].split("//")[1].split("/")[0].split(":")
                    server.host, server.port = host, int(port_text)
                else:
                    server.host, server.port = serving["host"], int(serving["port"])
                yield server
                task_group.cancel_scope.cancel()
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGKILL)
            with anyio.CancelScope(shield=True):
                await process.wait()
