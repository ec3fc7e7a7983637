"""heartbeat_monitor_socketio: heartbeat liveness for python-socketio servers.

:class:`SocketIOAdapter` attaches a :class:`~heartbeat_monitor.HeartbeatMonitor`
to an existing ``socketio.AsyncServer`` (clients emit ``heartbeat``; silent ones
are disconnected; whichever way a peer leaves, cleanup runs once and the others
get one ``peer_gone``), translating python-socketio into the core's
:class:`~heartbeat_monitor.PeerHub`. :class:`HeartbeatClient` beats from a python-socketio
``AsyncClient``; :class:`SocketIOServer` serves it all under uvicorn;
:class:`SocketIOTransport` is the same in the seam's ``Transport`` shape (the
``socketio`` entry point of ``heartbeat_monitor.adapters``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from heartbeat_monitor import GoneCallback, Reason

from ._adapter import Identify, SocketIOAdapter, SocketIOStats
from ._client import HeartbeatClient
from ._engineio import check_engineio
from ._options import AdapterOptions
from ._server import SocketIOServer
from ._static import StaticModules
from ._transport import SocketIOTransport
from ._visibility import Visibility

if TYPE_CHECKING:
    from heartbeat_monitor_redis import ClusterRedisManager, ClusterStats, RedisCluster

__all__ = (
    "AdapterOptions",
    "ClusterRedisManager",
    "ClusterStats",
    "GoneCallback",
    "HeartbeatClient",
    "Identify",
    "Reason",
    "RedisCluster",
    "SocketIOAdapter",
    "SocketIOServer",
    "SocketIOStats",
    "SocketIOTransport",
    "StaticModules",
    "Visibility",
    "check_engineio",
)

#: The multi-node names live in ``heartbeat_monitor_redis`` (the ``redis`` extra); kept
#: importable from here, loaded on first use only.
_CLUSTER = frozenset({"ClusterRedisManager", "ClusterStats", "RedisCluster"})


def __getattr__(name: str) -> Any:
    if name not in _CLUSTER:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module("heartbeat_monitor_redis"), name)
