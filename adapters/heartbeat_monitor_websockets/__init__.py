"""WebSocket transport for heartbeat_monitor, on python-websockets (asyncio).

``WebSocketTransport(host, port).serve(hub)``: JSON text messages; an expired
peer is closed with code 4000 and the reason, a refused one with 4001. Install
with the ``websockets`` extra.
"""

from __future__ import annotations

from ._transport import CLOSE_EXPIRED, CLOSE_REFUSED, WebSocketTransport

__all__ = ("CLOSE_EXPIRED", "CLOSE_REFUSED", "WebSocketTransport")
