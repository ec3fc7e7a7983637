"""TCP transport for heartbeat_monitor: anyio streams, newline-delimited JSON.

``TcpTransport(host, port).serve(hub)``; see :mod:`heartbeat_monitor._adapter`
for the messages. Install with the ``tcp`` extra.
"""

from __future__ import annotations

from ._transport import TcpTransport

__all__ = ("TcpTransport",)
