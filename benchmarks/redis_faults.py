"""Figures for the Redis cluster's faults (issue 12, items 7 and 8), at the issue's scale.

Starts its own ``redis-server`` on a free loopback port (no persistence); clients are
raw engine.io/Socket.IO websockets (``websockets``), so that hundreds fit in one process.

1. **A node dies just before Redis restarts empty** (item 7). Node B, a ``serve``
   process with ``clients`` clients, is SIGKILLed; Redis is stopped and started
   again, empty, at once. Node A (in this process) counts the ``"node gone"``
   departures its ``on_gone`` sees, and when the last one came. Before the fix: 0.
2. **A node cut off from Redis** (item 8). Node A (in this process) reaches Redis
   through a TCP proxy that is cut; its ``clients`` clients stay connected to it.
   Node B (in this process, direct) announces them ``"node gone"``. Figures: when
   A's clients were disconnected and when B announced them, from the cut; and how
   many were still connected to A when B announced them (before the fix: all).

    python -m benchmarks.redis_faults [--quick] [--clients 800] [--output DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from .redis_figures import _free_port, _wait_listening

__all__ = ("main", "measure")

NODE_TIMEOUT = 3.0
SYNC_INTERVAL = 0.5


class _Redis:
    """A ``redis-server`` that can be restarted empty on the same port."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        from redis import asyncio as aioredis

        self.process = await asyncio.create_subprocess_exec(
            *["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
              "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = aioredis.Redis.from_url(self.url)
        try:
            for _ in range(400):
                try:
                    await client.ping()
                    return
                except Exception:
                    await asyncio.sleep(0.025)
            raise TimeoutError("redis-server did not start")
        finally:
            await client.aclose()

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            process.terminate()
            await process.wait()


class _Proxy:
    """A TCP proxy to Redis that ``cut()`` closes and keeps closed."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.open = True
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        self._writers += [writer, up_writer]

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        self.open = False
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    async def aclose(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()


async def _clients(port: int, count: int, closed: list[float]) -> list[Any]:
    """``count`` Socket.IO connections, spoken by hand; each close is timed into ``closed``."""
    from websockets.asyncio.client import connect

    url = f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"
    sockets = []
    for _ in range(count):
        ws = await connect(url, max_queue=None)
        assert str(await ws.recv()).startswith("0{")
        await ws.send("40")
        assert str(await ws.recv()).startswith("40")
        sockets.append(ws)

    async def watch(ws: Any) -> None:
        with contextlib.suppress(Exception):
            async for message in ws:
                if message == "2":
                    await ws.send("3")  # engine.io's ping
        closed.append(time.monotonic())

    for ws in sockets:
        asyncio.get_running_loop().create_task(watch(ws))
    return sockets


@contextlib.asynccontextmanager
async def _member(url: str, name: str, gone: list[tuple[Any, str, float]]) -> AsyncIterator[Any]:
    """An in-process node: uvicorn + python-socketio + adapter + RedisCluster."""
    import socketio

    from heartbeat_monitor_redis import ClusterRedisManager, RedisCluster
    from heartbeat_monitor_socketio import SocketIOAdapter, SocketIOServer

    sio = socketio.AsyncServer(async_mode="asgi", client_manager=ClusterRedisManager(url))
    adapter = SocketIOAdapter(
        sio,
        interval=30,
        misses=2,
        room="peers",
        on_gone=lambda event: gone.append((event.peer, event.reason, time.monotonic())),
    )
    cluster = RedisCluster(
        adapter, url, node_id=name, node_timeout=NODE_TIMEOUT, sync_interval=SYNC_INTERVAL
    )
    server = SocketIOServer(adapter)
    async with cluster, server:
        yield server, cluster


async def _until(condition: Any, within: float) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.05)


async def _restart_empty(clients: int) -> dict[str, Any]:
    redis = _Redis()
    await redis.start()
    gone: list[tuple[Any, str, float]] = []
    port = _free_port()
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "heartbeat_monitor._cli", "serve", "--port", str(port),
          "--redis-url", redis.url, "--node-id", "b", "--node-timeout", str(NODE_TIMEOUT),
          "--sync-interval", str(SYNC_INTERVAL), "--interval", "30", "--log-level", "error"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    sockets: list[Any] = []
    try:
        async with _member(redis.url, "a", gone) as (_, cluster):
            await _wait_listening(port)
            sockets = await _clients(port, clients, [])

            async def a_knows_them() -> bool:
                return len(cluster.last_known("b")) == clients

            await _until(a_knows_them, within=30)
            killed = time.monotonic()
            process.send_signal(signal.SIGKILL)
            await process.wait()
            await redis.stop()
            await redis.start()  # empty

            async def all_announced() -> bool:
                return len(gone) >= clients

            with contextlib.suppress(TimeoutError):
                await _until(all_announced, within=NODE_TIMEOUT * 3 + 10)
            announced = [at for _, reason, at in gone if reason == "node gone"]
            return {
                "clients": clients,
                "announced": len(announced),
                "distinct": len({peer for peer, _, _ in gone}),
                "last_after_kill_s": max(announced) - killed if announced else None,
            }
    finally:
        for ws in sockets:
            with contextlib.suppress(Exception):
                await ws.close()
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        await redis.stop()


async def _cut_off(clients: int) -> dict[str, Any]:
    redis = _Redis()
    await redis.start()
    proxy = _Proxy(redis.port)
    await proxy.start()
    closed: list[float] = []
    gone_a: list[tuple[Any, str, float]] = []
    gone_b: list[tuple[Any, str, float]] = []
    sockets: list[Any] = []
    try:
        async with (
            _member(proxy.url, "a", gone_a) as (server_a, _),
            _member(redis.url, "b", gone_b) as (_, cluster_b),
        ):
            sockets = await _clients(server_a.port, clients, closed)

            async def b_sees_them() -> bool:
                where = await cluster_b.presence()
                return sum(1 for nodes in where.values() if nodes == {"a"}) == clients

            await _until(b_sees_them, within=30)
            cut = time.monotonic()
            proxy.cut()

            async def announced() -> bool:
                return len(gone_b) >= clients

            with contextlib.suppress(TimeoutError):
                await _until(announced, within=NODE_TIMEOUT * 3 + 10)
            first_notice = min((at for _, _, at in gone_b), default=None)
            served = sum(1 for at in closed if first_notice is None or at > first_notice)
            served += clients - len(closed)
            return {
                "clients": clients,
                "node_timeout": NODE_TIMEOUT,
                "fence_after": NODE_TIMEOUT - SYNC_INTERVAL,
                "disconnected": len(closed),
                "last_disconnect_after_cut_s": max(closed) - cut if closed else None,
                "announced_by_b": len(gone_b),
                "first_notice_after_cut_s": None if first_notice is None else first_notice - cut,
                "still_served_when_announced": served,
                "announced_on_a": len(gone_a),
            }
    finally:
        for ws in sockets:
            with contextlib.suppress(Exception):
                await ws.close()
        await proxy.aclose()
        await redis.stop()


def measure(*, clients: int = 800) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        return {
            "restart_empty": await _restart_empty(clients),
            "cut_off": await _cut_off(clients),
        }

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(50))
    return asyncio.run(run())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="50 clients (smoke)")
    parser.add_argument("--clients", type=int, default=800, help="clients on the failing node")
    parser.add_argument("--output", type=Path, default=None, help="also write redis_faults.json")
    args = parser.parse_args(argv)
    if shutil.which("redis-server") is None:
        print("redis-server is not installed (apt-get install redis-server)", file=sys.stderr)
        return 1
    result = measure(clients=50 if args.quick else args.clients)
    one, two = result["restart_empty"], result["cut_off"]
    print(
        f"node killed just before Redis restarted empty: {one['announced']} of "
        f"{one['clients']} clients announced 'node gone' ({one['distinct']} distinct), the "
        f"last {one['last_after_kill_s']:.2f} s after the kill (node timeout {NODE_TIMEOUT:g} s)"
    )
    print(
        f"node cut off from Redis: {two['disconnected']} of {two['clients']} clients "
        f"disconnected by it, the last {two['last_disconnect_after_cut_s']:.2f} s after the cut "
        f"(fence_after {two['fence_after']:g} s); {two['announced_by_b']} announced by the other "
        f"node, the first {two['first_notice_after_cut_s']:.2f} s after the cut; still served "
        f"when announced: {two['still_served_when_announced']}"
    )
    if args.output is not None:
        args.output.mkdir(parents=True, exist_ok=True)
        (args.output / "redis_faults.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
