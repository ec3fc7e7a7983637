"""Real clients for the conformance suite, one class per transport, same interface.

Run as a script, it is a separate OS process holding many peers (so a test can
SIGKILL it): ``python -m tests.conformance._clients TRANSPORT HOST PORT PREFIX
COUNT INTERVAL`` opens COUNT peers named PREFIX0.., beats each every INTERVAL
seconds, prints ``ready`` once every peer is welcomed, and runs until killed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import sys
from collections.abc import Callable
from typing import Any, ClassVar

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

#: The key the UDP server of the suite is given, and its clients sign with.
UDP_KEY = b"conformance-suite-key"
#: The Socket.IO server of the suite checks that a peer's token was made with this key.
SOCKETIO_KEY = b"conformance-suite-identity-key"
BEAT = b'{"type":"beat"}'


def socketio_token(peer: str) -> str:
    """The credential a Socket.IO peer presents for its id (``auth["token"]``)."""
    return hmac.new(SOCKETIO_KEY, peer.encode(), hashlib.sha256).hexdigest()


class Client:
    """One peer on one connection. Subclasses implement ``_open``, ``_receive``, ``_send``."""

    transport: ClassVar[str]
    #: The credential key, for transports whose peers prove their id (``None``: none, or
    #: a thief without it).
    key: bytes | None = None
    #: Resend the opening beat after this long without a welcome (lossy transports).
    retry: ClassVar[float | None] = None

    def __init__(self, host: str, port: int, peer: str) -> None:
        self.host, self.port, self.peer = host, port, peer
        self.messages: list[dict[str, Any]] = []
        #: Why the server closed this connection (close frame / ``closed`` message).
        self.closed: str | None = None
        self.ended = False
        self._changed = anyio.Event()
        self._beating: anyio.CancelScope | None = None

    # -- what tests use --------------------------------------------------------------------

    def gone_notices(self, peer: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == "gone" and m.get("peer") == peer]

    @property
    def welcomed(self) -> bool:
        return any(m.get("type") == "welcome" for m in self.messages)

    async def wait_for(self, predicate: Callable[[], bool], within: float = 5.0) -> None:
        with anyio.fail_after(within):
            while not predicate():
                await self._changed.wait()

    async def start(
        self, task_group: anyio.abc.TaskGroup, *, wait: bool = True, within: float = 10.0
    ) -> None:
        await self._open()
        task_group.start_soon(self._read)
        if not wait:
            return
        with anyio.fail_after(within):
            while not (self.welcomed or self.ended):
                with anyio.move_on_after(self.retry):
                    await self._changed.wait()
                if self.retry is not None and not self.welcomed:
                    await self.beat()  # a lossy transport: say it again

    async def beat(self) -> None:
        await self._send(self._beat_message())

    def beat_every(
        self, interval: float, task_group: anyio.abc.TaskGroup, *, jitter: bool = False
    ) -> None:
        """Beat every ``interval`` s; with ``jitter``, start at a random phase (as real peers)."""
        self._beating = scope = anyio.CancelScope()

        async def beating() -> None:
            with scope:
                if jitter:
                    await anyio.sleep(random.uniform(0, interval))
                while True:
                    try:
                        await self.beat()
                    except Exception:
                        return
                    await anyio.sleep(interval)

        task_group.start_soon(beating)

    def go_silent(self) -> None:
        if self._beating is not None:
            self._beating.cancel()

    async def send_raw(self, data: bytes | str) -> None:
        await self._send(data)

    def bad_input(self, kind: str, data: bytes) -> bytes | str:
        """This transport's equivalent of one of the suite's bad inputs (``BAD_INPUT``)."""
        return data

    async def close(self) -> None:
        raise NotImplementedError

    async def abort(self) -> None:
        """Release the socket without a goodbye (test teardown)."""
        raise NotImplementedError

    # -- internals -------------------------------------------------------------------------

    def _beat_message(self) -> bytes:
        return BEAT

    def _hello(self) -> bytes:
        return json.dumps({"type": "hello", "peer": self.peer}).encode()

    def _got(self, data: bytes | str) -> None:
        decoded = json.loads(data)
        for message in decoded if isinstance(decoded, list) else [decoded]:
            self._got_message(message)

    def _got_message(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        if message.get("type") == "closed":
            self.closed = message.get("reason")
        self._poke()

    def _poke(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def _read(self) -> None:
        try:
            await self._receive()
        except Exception:
            pass
        finally:
            self.ended = True
            self._poke()

    async def _open(self) -> None:
        raise NotImplementedError

    async def _receive(self) -> None:
        raise NotImplementedError

    async def _send(self, data: bytes | str) -> None:
        raise NotImplementedError


class WebSocketClient(Client):
    transport = "websocket"

    async def _open(self) -> None:
        from websockets.asyncio.client import connect

        self._ws = await connect(
            f"ws://{self.host}:{self.port}", compression=None, max_size=None, ping_interval=None
        )
        await self._ws.send(self._hello().decode())

    async def _receive(self) -> None:
        ws = self._ws
        try:
            async for data in ws:
                self._got(data)
        finally:
            if ws.close_code is not None and ws.close_code >= 4000:
                self.closed = ws.close_reason
            self.close_code = ws.close_code

    async def _send(self, data: bytes | str) -> None:
        await _send_ws(self._ws, data)

    async def close(self) -> None:
        await self._ws.close()

    async def abort(self) -> None:
        if hasattr(self, "_ws"):
            self._ws.transport.abort()


class TcpClient(Client):
    transport = "tcp"

    async def _open(self) -> None:
        self._stream = await anyio.connect_tcp(self.host, self.port)
        await self._stream.send(self._hello() + b"\n")

    async def _receive(self) -> None:
        reader = BufferedByteReceiveStream(self._stream)
        while True:
            self._got(await reader.receive_until(b"\n", 1 << 20))

    async def _send(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode()
        await self._stream.send(data if data.endswith(b"\n") or len(data) > 4096 else data + b"\n")

    async def close(self) -> None:
        await self._stream.aclose()

    async def abort(self) -> None:
        if hasattr(self, "_stream"):
            await self._stream.aclose()


class UdpClient(Client):
    transport = "udp"
    retry = 0.2
    key: bytes | None = UDP_KEY

    async def _open(self) -> None:
        self._socket = await anyio.create_connected_udp_socket(self.host, self.port)
        await self.beat()

    epoch: str | None = None

    async def _receive(self) -> None:
        async for data in self._socket:
            payload = data[:-32] if self.key is not None else data
            if payload.startswith(b'{"type":"challenge"'):  # the server's boot epoch
                self.epoch = json.loads(payload)["epoch"]
                await self.beat()  # at once, as a real peer does
                continue
            self._got(payload)

    def _beat_message(self) -> bytes:
        from heartbeat_monitor_udp import datagram

        return datagram(self.peer, key=self.key, epoch=self.epoch)

    def bad_input(self, kind: str, data: bytes) -> bytes | str:
        """UDP carries the peer id in every datagram: the spoof is a beat signed without the key."""
        from heartbeat_monitor_udp import datagram

        if kind == "spoofed-id":
            return datagram("victim", key=b"not the key")
        # The rest is signed: the server checks the HMAC before it reads any JSON, so
        # unsigned garbage is refused as spoofed; a key holder's garbage gets its own kind.
        assert self.key is not None
        return data + hmac.new(self.key, data, hashlib.sha256).digest()

    async def _send(self, data: bytes | str) -> None:
        await self._socket.send(data.encode() if isinstance(data, str) else data)

    async def close(self) -> None:
        from heartbeat_monitor_udp import datagram

        await self._send(datagram(self.peer, key=self.key, type="bye", epoch=self.epoch))
        await self._socket.aclose()

    async def abort(self) -> None:
        if hasattr(self, "_socket"):
            await self._socket.aclose()


class SocketIOClient(Client):
    """Socket.IO v4 (engine.io 4 over a websocket) spoken by hand: light enough for 1,000
    in one process. The official clients (python-socketio, socket.io-client for node)
    are exercised by tests/socketio."""

    transport = "socketio"
    key = SOCKETIO_KEY

    #: The Socket.IO equivalents of the suite's bad inputs (see ``SocketIOHarness``).
    BAD_INPUT: ClassVar[dict[str, bytes | str]] = {
        "oversized": '42["heartbeat",{"pad":"' + "x" * 10_000 + '"}]',
        "not-an-object": '42{"type":"beat"}',
        "type-not-a-string": "42[5]",
        "spoofed-id": '42["disconnect",{"peer":"victim"}]',
    }

    def bad_input(self, kind: str, data: bytes) -> bytes | str:
        return self.BAD_INPUT.get(kind, data)  # garbage: a binary frame as it is

    def _beat_message(self) -> bytes:
        return b'42["heartbeat"]'

    async def _open(self) -> None:
        from websockets.asyncio.client import connect

        url = f"ws://{self.host}:{self.port}/socket.io/?EIO=4&transport=websocket"
        self._ws = await connect(url, compression=None, ping_interval=None)
        opening = await self._ws.recv()
        assert str(opening).startswith("0{"), opening
        auth: dict[str, str] = {"peer": self.peer}
        if self.key is not None:
            auth["token"] = socketio_token(self.peer)
        await self._ws.send("40" + json.dumps(auth))

    async def _receive(self) -> None:
        async for text in self._ws:
            assert isinstance(text, str)
            if text == "2":  # engine.io ping
                await self._ws.send("3")
            elif text.startswith("40"):
                self._got_message({"type": "welcome", "peer": self.peer})
            elif text.startswith("41"):  # the server disconnected us (no reason on the wire)
                await self._ws.close()
                return
            elif text.startswith("42"):
                event, *args = json.loads(text[2:])
                if event == "peer_gone":
                    self._got_message({"type": "gone", **args[0]})

    async def _send(self, data: bytes | str) -> None:
        await _send_ws(self._ws, data)

    async def close(self) -> None:
        await self._ws.close()

    async def abort(self) -> None:
        if hasattr(self, "_ws"):
            self._ws.transport.abort()


async def _send_ws(ws: Any, data: bytes | str) -> None:
    """Text as a text message; bytes too when they are UTF-8, a binary message otherwise."""
    if isinstance(data, bytes):
        try:
            data = data.decode()
        except UnicodeDecodeError:
            pass  # garbage goes out as a binary message
    await ws.send(data)


CLIENTS: dict[str, type[Client]] = {
    c.transport: c for c in (WebSocketClient, TcpClient, UdpClient, SocketIOClient)
}


async def _main(
    transport: str, host: str, port: int, prefix: str, count: int, interval: float
) -> None:
    client_class = CLIENTS[transport]
    async with anyio.create_task_group() as task_group:
        clients = [client_class(host, port, f"{prefix}{i}") for i in range(count)]
        limiter = anyio.CapacityLimiter(100)

        async def start(client: Client) -> None:
            async with limiter:
                try:
                    await client.start(task_group)
                except TimeoutError:
                    return  # reported through the count of welcomed peers
            client.beat_every(interval, task_group, jitter=True)

        async with anyio.create_task_group() as starting:
            for client in clients:
                starting.start_soon(start, client)
        welcomed = sum(client.welcomed for client in clients)
        print(f"ready {welcomed}", flush=True)


if __name__ == "__main__":
    name, host, port, prefix, count, interval = sys.argv[1:7]
    anyio.run(_main, name, host, int(port), prefix, int(count), float(interval))
