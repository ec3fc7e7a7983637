"""A small HTTP/1.1 client on anyio sockets (both backends): GET, Server-Sent Events, and a
reader of the Prometheus text format."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import anyio
from anyio.streams.buffered import BufferedByteReceiveStream
from prometheus_client.parser import text_string_to_metric_families

#: Samples of a scrape: name -> {sorted (label, value) pairs: value}.
Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def samples(text: str) -> Samples:
    """Every sample of a Prometheus exposition."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return json.loads(self.body)


async def _open(
    url: str, method: str = "GET"
) -> tuple[Any, BufferedByteReceiveStream, int, dict[str, str]]:
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    stream = await anyio.connect_tcp(parts.hostname, parts.port)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    await stream.send(f"{method} {target} HTTP/1.1\r\nhost: {parts.netloc}\r\n\r\n".encode())
    reader = BufferedByteReceiveStream(stream)
    head = (await reader.receive_until(b"\r\n\r\n", 65536)).decode("latin-1")
    status_line, *lines = head.split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return stream, reader, int(status_line.split(" ")[1]), headers


class _Body:
    """A response body read piece by piece (chunked, sized, or until the end of the stream)."""

    def __init__(self, reader: BufferedByteReceiveStream, headers: dict[str, str]) -> None:
        self._reader = reader
        self._chunked = headers.get("transfer-encoding") == "chunked"
        self._left = int(headers["content-length"]) if "content-length" in headers else None
        self.done = False

    async def read(self) -> bytes:
        """The next piece; ``b""`` at the end."""
        if self.done:
            return b""
        reader = self._reader
        if self._chunked:
            size = int(await reader.receive_until(b"\r\n", 32), 16)
            if size == 0:
                self.done = True
                return b""
            data = await reader.receive_exactly(size)
            await reader.receive_exactly(2)
            return data
        if self._left is not None:
            self.done = True
            return await reader.receive_exactly(self._left) if self._left else b""
        try:
            return await reader.receive()
        except (anyio.EndOfStream, anyio.IncompleteRead):
            self.done = True
            return b""

    async def all(self) -> bytes:
        pieces = []
        while piece := await self.read():
            pieces.append(piece)
        return b"".join(pieces)


async def get(url: str, *, method: str = "GET", within: float = 10.0) -> Response:
    """One request; the whole response (bounded by ``within`` seconds)."""
    with anyio.fail_after(within):
        stream, reader, status, headers = await _open(url, method)
        async with stream:
            body = b"" if method == "HEAD" else await _Body(reader, headers).all()
    return Response(status, headers, body)


class Events:
    """Server-Sent Events: ``await next()``: the next ``data:`` payload (``None``: the end)."""

    def __init__(self, body: _Body) -> None:
        self._body = body
        self._buffer = b""
        self._ready: list[dict[str, Any]] = []

    async def next(self) -> dict[str, Any] | None:
        while not self._ready:
            piece = await self._body.read()
            if not piece:
                return None
            self._buffer += piece
            while b"\n\n" in self._buffer:
                message, self._buffer = self._buffer.split(b"\n\n", 1)
                for line in message.split(b"\n"):
                    if line.startswith(b"data: "):
                        self._ready.append(json.loads(line[6:]))
        return self._ready.pop(0)

    async def rest(self) -> list[dict[str, Any]]:
        out = []
        while (payload := await self.next()) is not None:
            out.append(payload)
        return out


@asynccontextmanager
async def events(url: str) -> AsyncIterator[Events]:
    """Server-Sent Events from ``url``."""
    stream, reader, status, headers = await _open(url)
    assert status == 200, status
    assert headers["content-type"].startswith("text/event-stream"), headers
    async with stream:
        yield Events(_Body(reader, headers))
