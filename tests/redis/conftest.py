"""Fixtures for the multi-node tests: a real redis-server and real ``serve`` processes.

``redis_server`` starts its own ``redis-server`` on a free loopback port (no
persistence), which a test may ``stop()`` and ``start()`` again (same port,
empty, as after a crash). ``start_node(name)`` runs ``heartbeat-monitor serve
--redis-url ...`` as a subprocess on a free port and returns a :class:`Node`:
its JSON log lines (``node.logged(event)``), ``await node.client()`` (a real
python-socketio client from ``tests/socketio``), ``await node.presence()``
(asked over Socket.IO), ``node.kill()`` (SIGKILL). Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
import pytest
import socketio
from anyio.streams.buffered import BufferedByteReceiveStream
from redis import asyncio as aioredis

from heartbeat_monitor_redis import ClusterRedisManager, RedisCluster
from heartbeat_monitor_socketio import SocketIOAdapter, SocketIOServer
from tests.conftest import require_tool
from tests.presence._view import View
from tests.socketio.conftest import Changes, Client

#: Client heartbeat interval and misses (a client is gone after 0.5 s of silence).
INTERVAL = 0.25
MISSES = 2
#: A node is dead after this long without beating into Redis; nodes sync this often.
NODE_TIMEOUT = 1.5
SYNC_INTERVAL = 0.25


@pytest.fixture
def anyio_backend() -> str:
    """python-socketio runs on asyncio only."""
    return "asyncio"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: anyio.abc.Process | None = None

    async def start(self) -> None:
        self.process = await anyio.open_process(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = aioredis.Redis.from_url(self.url)
        try:
            with anyio.fail_after(10):
                while True:
                    try:
                        await client.ping()
                        break
                    except Exception:
                        await anyio.sleep(0.05)
        finally:
            await client.aclose()

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        with anyio.fail_after(10):
            await process.wait()

    async def client(self) -> aioredis.Redis:
        return aioredis.Redis.from_url(self.url)


@pytest.fixture
async def redis_server() -> AsyncIterator[RedisServer]:
    require_tool("redis-server", shutil.which("redis-server") is not None)
    server = RedisServer(free_port())
    await server.start()
    try:
        yield server
    finally:
        with anyio.CancelScope(shield=True):
            await server.stop()


class Node:
    """A ``heartbeat-monitor serve --redis-url`` subprocess and its JSON log."""

    def __init__(self, name: str, process: anyio.abc.Process) -> None:
        self.name = name
        self.process = process
        self.lines = Changes()
        self.url = ""
        self.clients: list[Client] = []

    async def read(self, stream: Any) -> None:
        lines = BufferedByteReceiveStream(stream)
        while True:
            try:
                raw = await lines.receive_until(b"\n", 1 << 20)
            except (anyio.EndOfStream, anyio.IncompleteRead, anyio.ClosedResourceError):
                return
            try:
                line = json.loads(raw)
            except ValueError:
                line = {"event": "stray_output", "text": raw.decode(errors="replace")}
            self.lines.append(line)

    def logged(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.lines.items if line.get("event") == event]

    async def wait_logged(self, event: str, n: int = 1, within: float = 10.0) -> list[Any]:
        with anyio.fail_after(within):
            while len(self.logged(event)) < n:
                await self.lines.wait(len(self.lines) + 1, within=within)
        return self.logged(event)

    async def client(self, *, beat: bool = True) -> Client:
        client = Client(self.url, "/", INTERVAL)
        self.clients.append(client)
        await client.connect()
        if beat:
            client.heartbeat.start()
        return client

    async def watcher(self) -> Presence:
        """A client whose presence messages are recorded (handlers set before it connects)."""
        client = Client(self.url, "/", INTERVAL)
        presence = Presence(client)
        self.clients.append(client)
        await client.connect()
        client.heartbeat.start()
        return presence

    async def presence(self, client: Client) -> dict[str, Any]:
        """Ask this node (through one of its clients) which peers are present where."""
        reply: dict[str, Any] = await client.sio.call("presence", namespace="/", timeout=5)
        return reply

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)


class Seen(View):
    """A :class:`View` that has had its first state (:meth:`Presence.until` waits for it)."""

    peers: dict[str, list[dict[str, Any]]]  # None only before its first state


class Presence:
    """What one client is told of one room's presence: every message, and its :class:`View`."""

    def __init__(self, client: Client, room: str = "peers") -> None:
        self.client = client
        self.view = Seen(room)
        #: ``(event, message)`` in arrival order.
        self.messages = Changes()
        for event in ("presence_state", "presence_diff"):
            client.sio.on(event, self._handler(event), namespace=client.namespace)

    def _handler(self, event: str) -> Callable[[dict[str, Any]], None]:
        def handle(message: dict[str, Any]) -> None:
            self.view.feed(event, message)
            self.messages.append((event, message))

        return handle

    def of(self, event: str) -> list[dict[str, Any]]:
        return [message for name, message in self.messages.items if name == event]

    async def until(self, condition: Callable[[Seen], bool], within: float = 5.0) -> Seen:
        """Wait (bounded) until ``condition(view)`` holds after some message."""
        with anyio.fail_after(within):
            while not (self.view.peers is not None and condition(self.view)):
                await self.messages.wait(len(self.messages) + 1, within=within)
        return self.view

    async def state(self, within: float = 5.0) -> dict[str, Any]:
        """Ask ``presence_sync`` and wait for the fresh state."""
        seen = len(self.of("presence_state"))
        await self.client.sio.emit("presence_sync", namespace=self.client.namespace)
        with anyio.fail_after(within):
            while len(self.of("presence_state")) <= seen:
                await self.messages.wait(len(self.messages) + 1, within=within)
        return self.of("presence_state")[-1]


StartNode = Callable[..., Awaitable[Node]]


@pytest.fixture
async def start_node(redis_server: RedisServer) -> AsyncIterator[StartNode]:
    nodes: list[Node] = []
    async with anyio.create_task_group() as task_group:

        async def start(name: str, *extra: str) -> Node:
            process = await anyio.open_process(
                [
                    sys.executable,
                    "-m",
                    "heartbeat_monitor._cli",
                    "serve",
                    "--port",
                    "0",
                    "--redis-url",
                    redis_server.url,
                    "--node-id",
                    name,
                    "--interval",
                    str(INTERVAL),
                    "--misses",
                    str(MISSES),
                    "--node-timeout",
                    str(NODE_TIMEOUT),
                    "--sync-interval",
                    str(SYNC_INTERVAL),
                    "--ping-interval",
                    "1",
                    "--ping-timeout",
                    "2",
                    "--log-format",
                    "json",
                    *extra,
                ],
            )
            node = Node(name, process)
            nodes.append(node)
            task_group.start_soon(node.read, process.stdout)
            task_group.start_soon(node.read, process.stderr)
            [serving] = await node.wait_logged("heartbeat_monitor.socketio.serving", within=30)
            node.url = serving["url"].removesuffix("/socket.io/")
            await node.wait_logged("heartbeat_monitor.cluster.started", within=10)
            return node

        try:
            yield start
        finally:
            with anyio.CancelScope(shield=True):
                for node in nodes:
                    for client in node.clients:
                        await client.close()
                for node in nodes:
                    with contextlib.suppress(ProcessLookupError):
                        node.process.terminate()
                with anyio.move_on_after(10):
                    for node in nodes:
                        await node.process.wait()
                for node in nodes:
                    with contextlib.suppress(ProcessLookupError):
                        node.process.kill()
                    await node.process.aclose()
            task_group.cancel_scope.cancel()


class Member:
    """A node in this process: uvicorn + python-socketio + adapter + RedisCluster.

    It runs in a task of its own (``run``), so that a test may stop one node
    (:meth:`stop`: a clean shutdown) while the others go on.
    """

    def __init__(self, server: SocketIOServer, cluster: RedisCluster, gone: Changes) -> None:
        self.server = server
        self.cluster = cluster
        self.adapter = server.adapter
        self.name = cluster.node_id
        #: Every ``(peer, reason)`` this node's ``on_gone`` saw.
        self.gone = gone
        self.clients: list[Client] = []
        self._stop = anyio.Event()
        self._stopped = anyio.Event()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        try:
            async with self.cluster, self.server:  # the cluster outermost, as documented
                task_status.started()
                await self._stop.wait()
        finally:
            self._stopped.set()

    async def stop(self) -> None:
        """A clean shutdown: the server stops (its peers end), then the node leaves Redis."""
        self._stop.set()
        with anyio.fail_after(15):
            await self._stopped.wait()

    async def client(self, *, beat: bool = True, auth: Any = None) -> Client:
        client = Client(self.server.url, "/", INTERVAL)
        self.clients.append(client)
        await client.connect(auth=auth)
        if beat:
            client.heartbeat.start()
        return client

    async def watcher(self, *, auth: Any = None) -> Presence:
        """A client whose presence messages are recorded (handlers set before it connects)."""
        client = Client(self.server.url, "/", INTERVAL)
        presence = Presence(client)
        self.clients.append(client)
        await client.connect(auth=auth)
        client.heartbeat.start()
        return presence


StartMember = Callable[..., Awaitable[Member]]


def identify(sid: str, environ: Any, auth: Any) -> Any:
    """Clients that send ``{"user": name}`` are that identity; the others are their sid."""
    return auth.get("user") if isinstance(auth, dict) else None


@pytest.fixture
async def start_member(redis_server: RedisServer) -> AsyncIterator[StartMember]:
    """Start a cluster node in this process (``start_member(name, **cluster_options)``)."""
    members: list[Member] = []
    async with anyio.create_task_group() as task_group:

        async def start(
            name: str, *, url: str | None = None, notify: str = "peer_gone", **cluster_options: Any
        ) -> Member:
            url = url or redis_server.url
            sio = socketio.AsyncServer(async_mode="asgi", client_manager=ClusterRedisManager(url))
            gone = Changes()
            adapter = SocketIOAdapter(
                sio,
                interval=INTERVAL,
                misses=MISSES,
                room="peers",
                notify=notify,  # peer_gone: what most of these tests listen for
                identify=identify,
                on_gone=lambda event: gone.append((event.peer, event.reason)),
            )
            cluster_options.setdefault("node_timeout", NODE_TIMEOUT)
            cluster_options.setdefault("sync_interval", SYNC_INTERVAL)
            cluster = RedisCluster(adapter, url, node_id=name, **cluster_options)
            member = Member(SocketIOServer(adapter), cluster, gone)
            await task_group.start(member.run)
            members.append(member)
            return member

        try:
            yield start
        finally:
            with anyio.CancelScope(shield=True):
                for member in members:
                    for client in member.clients:
                        await client.close()
                for member in reversed(members):
                    await member.stop()


class Cut:
    """A TCP proxy to Redis for one node: ``cut()`` drops and refuses its connections."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.open = True
        self._streams: list[anyio.abc.SocketStream] = []

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=self.port)
        async with listener:
            task_status.started()
            await listener.serve(self._handle)

    async def _handle(self, client: anyio.abc.SocketStream) -> None:
        if not self.open:
            await client.aclose()
            return
        try:
            upstream = await anyio.connect_tcp("127.0.0.1", self.upstream_port)
        except OSError:
            await client.aclose()
            return
        self._streams += [client, upstream]

        async def pipe(source: anyio.abc.SocketStream, sink: anyio.abc.SocketStream) -> None:
            try:
                async for chunk in source:
                    await sink.send(chunk)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                pass
            finally:
                with anyio.CancelScope(shield=True):
                    await sink.aclose()

        try:
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(pipe, client, upstream)
                task_group.start_soon(pipe, upstream, client)
        finally:
            with anyio.CancelScope(shield=True):
                await client.aclose()
                await upstream.aclose()

    async def cut(self) -> None:
        self.open = False
        streams, self._streams = self._streams, []
        for stream in streams:
            await stream.aclose()


@pytest.fixture
async def cut_link(redis_server: RedisServer) -> AsyncIterator[Cut]:
    """A :class:`Cut` proxy to ``redis_server`` (request it before ``start_member``)."""
    link = Cut(redis_server.port)
    async with anyio.create_task_group() as task_group:
        await task_group.start(link.serve)
        yield link
        task_group.cancel_scope.cancel()
