"""The Socket.IO fixtures (a real server under uvicorn, real clients) of tests/socketio."""

from __future__ import annotations

from tests.socketio.conftest import start_server

__all__ = ("start_server",)
