"""Item 4: out of file descriptors, a server pauses accepting; it neither crashes nor floods.

A real server process under ``RLIMIT_NOFILE`` 256 (set with ``resource.setrlimit``
in the child), three good peers beating over the transport, then 400 idle TCP
connections that never say anything. The server must stay up, keep every good
peer, log the condition a few times (not a traceback per failed accept), close
the idle connections in bounded time (the hello timeout) and so, once they are
gone, accept a newcomer.
"""

from __future__ import annotations

import socket

import anyio
import anyio.lowlevel
import pytest

from tests.conformance._clients import CLIENTS, Client

from ._servers import connecting, server_process

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

LIMIT = 256
#: More than the limit, and no more beyond it than a listen backlog holds (100 for
#: websockets): beyond, the kernel drops SYNs and clients retry for seconds.
IDLE = 300


async def _idle_connections(port: int, count: int, batch: int = 50) -> list[socket.socket]:
    """``count`` connected sockets that say nothing, opened ``batch`` at a time (a burst
    beyond the listen backlog would have its SYNs dropped and retried for seconds)."""
    sockets: list[socket.socket] = []
    while len(sockets) < count:
        opening = connecting(port, min(batch, count - len(sockets)))
        for sock in opening:
            await anyio.wait_writable(sock)  # in the server's accept queue, or accepted
        sockets += opening
    return sockets


async def _closed_by_server(sock: socket.socket) -> None:
    while True:
        await anyio.wait_readable(sock)
        try:
            if sock.recv(4096) == b"":
                return
        except ConnectionResetError:
            return
        except BlockingIOError:
            continue


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("transport", ["tcp", "websocket", "socketio"])
async def test_out_of_descriptors_the_server_waits_and_recovers(anyio_backend, transport):
    client_class = CLIENTS[transport]
    async with (
        server_process(transport, nofile=LIMIT, interval=0.5) as server,
        anyio.create_task_group() as task_group,
    ):
        good: list[Client] = [client_class(server.host, server.port, f"good{i}") for i in range(3)]
        for client in good:
            await client.start(task_group)
            client.beat_every(0.1, task_group)  # timeout 1 s: ten beats per timeout
        idle: list[socket.socket] = []
        try:
            idle += await _idle_connections(server.port, IDLE)
            await server.wait_log(  # out of descriptors: said in our log, or in a traceback
                lambda log: (
                    log["event"].endswith("accept_failed")
                    or "Too many open files" in log.get("line", "")
                )
            )
            # the idle connections are closed after the hello timeout (5 s), which frees
            # descriptors: a newcomer then gets in
            late = client_class(server.host, server.port, "late")
            await late.start(task_group, within=30)
            with anyio.fail_after(30):  # every idle connection is closed by the server
                for sock in idle:
                    await _closed_by_server(sock)
        finally:
            for sock in idle:
                sock.close()
        assert server.process.returncode is None, "the server died"
        for client in good:
            assert client.closed is None, (client.peer, client.closed)
            assert not client.ended, client.peer
        gone = server.events(f"heartbeat_monitor.{transport}.peer_gone")
        assert [log["peer"] for log in gone if log["peer"].startswith("good")] == []
        assert server.unstructured() == [], server.unstructured()[:20]  # no tracebacks
        assert 1 <= len(server.events(f"heartbeat_monitor.{transport}.accept_failed")) <= 3
        task_group.cancel_scope.cancel()
    for client in [*good, late]:
        await client.abort()
    await anyio.lowlevel.checkpoint()  # asyncio closes an aborted socket on the next tick
