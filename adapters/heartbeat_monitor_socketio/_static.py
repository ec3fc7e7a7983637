"""The browser ES modules (``static/*.js``) over HTTP: ``serve`` has them at ``/static/<name>.js``.

A tiny ASGI app, mounted as python-socketio's ``other_asgi_app``: ``GET`` or
``HEAD /static/heartbeat.js`` answers the module (``text/javascript``, CORS open:
it is public code a page on another origin may import); any other path goes to
``app`` if one is given, else 404. The files are read once, when it is built.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any, Final, final

import structlog

__all__ = ("STATIC_PREFIX", "StaticModules", "static_dir")

_logger = structlog.get_logger("heartbeat_monitor")

#: Where the modules are served.
STATIC_PREFIX: Final = "/static/"

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def static_dir() -> Path:
    """The modules' folder: inside the installed package (a wheel), else the checkout's."""
    installed = Path(__file__).with_name("static")
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parents[2] / "static"


@final
class StaticModules:
    """ASGI: ``/static/<name>.js`` from ``directory`` (default :func:`static_dir`); else ``app``."""

    __slots__ = ("_app", "_files")

    def __init__(self, app: ASGIApp | None = None, *, directory: Path | None = None) -> None:
        folder = static_dir() if directory is None else directory
        self._app = app
        #: name -> bytes, for every ``*.js`` in the folder.
        self._files: dict[str, bytes] = {
            path.name: path.read_bytes() for path in sorted(folder.glob("*.js")) if path.is_file()
        }
        if not self._files:  # a broken install: say so once, serve the rest
            _logger.warning("heartbeat_monitor.socketio.no_static_modules", folder=str(folder))

    @property
    def names(self) -> list[str]:
        """The modules served, by file name."""
        return list(self._files)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith(STATIC_PREFIX):
            if self._app is not None:
                await self._app(scope, receive, send)
            elif scope["type"] == "http":
                await _respond(send, 404, b"not found\n", "text/plain; charset=utf-8")
            return
        body = self._files.get(path[len(STATIC_PREFIX) :])
        method = scope.get("method", "GET")
        if body is None:
            await _respond(send, 404, b"not found\n", "text/plain; charset=utf-8")
        elif method not in ("GET", "HEAD"):
            await _respond(send, 405, b"method not allowed\n", "text/plain; charset=utf-8")
        else:
            await _respond(send, 200, body, "text/javascript; charset=utf-8", head=method == "HEAD")


async def _respond(
    send: Send, status: int, body: bytes, content_type: str, *, head: bool = False
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"access-control-allow-origin", b"*"),
                (b"cache-control", b"no-cache"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"" if head else body})
