"""heartbeat_monitor_socketio: heartbeat liveness for python-socketio servers.

:class:`SocketIOAdapter` attaches a :class:`~heartbeat_monitor.HeartbeatMonitor`
to an existing ``socketio.AsyncServer`` (clients emit ``heartbeat``; silent ones
are disconnected; whichever way a peer leaves, cleanup runs once and the others
get one ``peer_gone``). :class:`HeartbeatClient` beats from a python-socketio
``AsyncClient``; :class:`SocketIOServer` serves it all under uvicorn.
"""

from __future__ import annotations

from ._adapter import GoneCallback, Identify, Reason, SocketIOAdapter, SocketIOStats, check_engineio
from ._client import HeartbeatClient
from ._server import SocketIOServer

__all__ = (
    "GoneCallback",
    "HeartbeatClient",
    "Identify",
    "Reason",
    "SocketIOAdapter",
    "SocketIOServer",
    "SocketIOStats",
    "check_engineio",
)
