"""A real Socket.IO server (python-socketio under uvicorn, as ``serve`` runs it) and real Chromium.

``async with browser_world() as world:`` starts the server on a free loopback
port with the adapter (``interval`` 0.3 s, ``misses`` 2, ``hidden_timeout``
2 s), the static modules mounted as ``serve`` mounts them (``/static/``), a
test page, a python-socketio observer that beats and records the ``peer_gone``
events it is told of, and a headless Chromium (``world.open()`` -> a
:class:`Page` showing the test page, connected). Every wait is bounded.

The test page (``/page?mode=module``) imports the official socket.io-client
ES build (from ``tests/js/node_modules``) and ``/static/heartbeat.js``, and
records in ``window.record`` what it sent (with ``performance.now()``) and
how its socket was disconnected. ``mode=plain`` beats with a bare
``setInterval`` instead, as the source article's client does.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import socketio

from heartbeat_monitor import Episode, PeerGone
from heartbeat_monitor_socketio import SocketIOAdapter, SocketIOServer, StaticModules
from tests.conftest import require_tool
from tests.socketio.conftest import Changes, Client

from ._cdp import Chromium, Page, chromium_path

INTERVAL = 0.3
MISSES = 2
TIMEOUT = INTERVAL * MISSES
HIDDEN_TIMEOUT = 2.0

VENDOR = (
    Path(__file__).resolve().parents[1]
    / "js/node_modules/socket.io-client/dist/socket.io.esm.min.js"
)

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>heartbeat_monitor browser test</title>
<script type="module">
import { io } from "/vendor/socket.io.esm.min.js";

const record = (window.record = { id: null, disconnect: null, sent: [], peerGone: [] });
const params = new URLSearchParams(location.search);
const interval = Number(params.get("interval"));
// The server: this page's own origin, or another one (a `serve` process) given as ?server=.
const server = params.get("server") ?? location.origin;
const { startHeartbeat } = await import(`${server}/static/heartbeat.js`);
const socket = io(server, { transports: ["websocket"], reconnection: false });
const emit = socket.emit.bind(socket);
socket.emit = (name, data) => {
  record.sent.push([name, data?.state ?? null, performance.now()]);
  return emit(name, data);
};
socket.on("connect", () => { record.id = socket.id; });
socket.on("disconnect", (reason) => { record.disconnect = reason; });
socket.on("peer_gone", (gone) => record.peerGone.push(gone));
if (params.get("mode") === "plain") {
  // The source article's client: a bare timer, no idea of visibility.
  socket.on("connect", () => setInterval(() => socket.emit("heartbeat"), interval * 1000));
} else {
  window.heartbeat = startHeartbeat(socket, { interval });
}
</script>
"""

Scope = MutableMapping[str, Any]


async def pages_app(scope: Scope, receive: Any, send: Any) -> None:
    """The test page and the vendored socket.io-client; everything else is a 404."""
    path = scope.get("path", "") if scope["type"] == "http" else None
    if path is None:
        return
    status = 200
    if path == "/page":
        body, kind = PAGE.encode(), "text/html; charset=utf-8"
    elif path == "/vendor/socket.io.esm.min.js":
        body, kind = VENDOR.read_bytes(), "text/javascript; charset=utf-8"
    else:
        body, kind, status = b"not found\n", "text/plain", 404
    headers = [(b"content-type", kind.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@dataclass
class World:
    server: SocketIOServer
    browser: Chromium
    observer: Client
    #: Every PeerGone the hub published, in order.
    gone: Changes
    #: Every episode that opened: PeerOpened events.
    opened: Changes
    #: (sid, event, server monotonic time) of each heartbeat the server received.
    heartbeats: Changes
    #: Every ``presence_diff`` the observer got (the room is ``peers``).
    diffs: Changes
    pages: list[Page] = field(default_factory=list)

    @property
    def adapter(self) -> SocketIOAdapter:
        return self.server.adapter

    async def open(self, mode: str = "module") -> tuple[Page, str]:
        """A tab showing the test page, once its socket is connected: (page, its sid)."""
        opened = len(self.opened)
        page = await self.browser.new_page(
            f"{self.server.url}/page?mode={mode}&interval={INTERVAL}"
        )
        self.pages.append(page)
        await self.opened.wait(opened + 1, within=10)
        sid = await until(lambda: page.evaluate("record.id"))
        assert sid in self.adapter.peers()
        return page, sid

    def episode(self, sid: str) -> Episode:
        episode = self.adapter.hub.episode(sid)
        assert episode is not None, f"{sid} has no open episode"
        return episode

    def silence(self, sid: str) -> float:
        """How long the server has heard nothing from ``sid`` (its own monotonic clock)."""
        monitor = self.adapter.monitor
        return monitor.clock.now() - monitor.tracker.last_beat(self.episode(sid))

    def beats_from(self, sid: str) -> int:
        return sum(1 for beat in self.heartbeats.items if beat[0] == sid)

    def gone_of(self, sid: str) -> list[PeerGone]:
        return [event for event in self.gone.items if event.peer == sid]

    def told_of(self, sid: str) -> list[dict[str, Any]]:
        """The ``peer_gone`` notices the observer got about ``sid``."""
        return [notice for notice in self.observer.peer_gone.items if notice["peer"] == sid]

    def leaves_of(self, sid: str) -> list[str]:
        """The reasons of every presence leave of ``sid`` the observer was told."""
        return [diff["leaves"][sid]["reason"] for diff in self.diffs.items if sid in diff["leaves"]]

    def visibility_told(self, sid: str) -> list[str]:
        """``sid``'s ``visibility`` in each presence join or update the observer got, in order."""
        told = []
        for diff in self.diffs.items:
            for kind in ("joins", "updates"):
                if sid in diff[kind]:
                    told += [meta.get("visibility", "-") for meta in diff[kind][sid]["metas"]]
        return told

    def visibility_now(self, sid: str) -> list[object]:
        """``sid``'s ``visibility`` in the server's presence of the room now."""
        return [meta.get("visibility") for meta in self.adapter.hub.presence("peers")[sid]]


async def until(check: Callable[[], Any], within: float = 10.0, every: float = 0.02) -> Any:
    """The first truthy value of ``await check()`` (or ``check()``), polled; bounded."""
    with anyio.fail_after(within):
        while True:
            value = check()
            if hasattr(value, "__await__"):
                value = await value
            if value:
                return value
            await anyio.sleep(every)


def require_browser() -> None:
    """Chromium and the vendored socket.io-client, or a skip (a failure under scripts/test)."""
    require_tool("chromium", chromium_path() is not None)
    require_tool("socket.io-client (npm ci in tests/js)", VENDOR.exists())


@contextlib.asynccontextmanager
async def browser_world(**adapter_options: Any) -> AsyncIterator[World]:
    require_browser()
    sio = socketio.AsyncServer(async_mode="asgi")
    heartbeats = Changes()

    def anything(event: str, sid: str, *data: Any) -> None:
        if event == "heartbeat":
            heartbeats.append((sid, event, time.monotonic()))

    sio.on("*", anything)

    gone, opened = Changes(), Changes()
    options: dict[str, Any] = {
        "interval": INTERVAL,
        "misses": MISSES,
        "hidden_timeout": HIDDEN_TIMEOUT,
        "room": "peers",
        "notify": "both",  # peer_gone for told_of(), presence diffs for leaves_of()
        **adapter_options,
    }
    adapter = SocketIOAdapter(sio, on_gone=gone.append, **options)
    adapter.hub.on_open(opened.append)
    server = SocketIOServer(adapter, other_asgi_app=StaticModules(app=pages_app))
    async with server, Chromium() as browser:
        observer = Client(server.url, "/", INTERVAL)
        diffs = Changes()
        observer.sio.on("presence_diff", diffs.append)
        await observer.connect()
        observer.heartbeat.start()
        try:
            yield World(server, browser, observer, gone, opened, heartbeats, diffs)
        finally:
            with anyio.CancelScope(shield=True):
                await observer.close()
