"""heartbeat_monitor_redis: several Socket.IO nodes sharing one Redis.

:class:`RedisCluster` makes a :class:`~heartbeat_monitor_socketio.SocketIOAdapter`
a node of a cluster: presence shared in Redis, the other nodes watched, the
peers of a dead node announced once cluster-wide, a node cut off from Redis
fenced. :class:`ClusterRedisManager` is python-socketio's Redis manager hardened
for Redis faults, so that ``peer_gone`` reaches the clients of every node. Built
on the hub's public hooks only (see ``docs/redis.md``). Needs the ``redis`` extra;
:mod:`heartbeat_monitor_redis.cli` (the ``serve --redis-url`` options) imports
without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._cluster import RedisCluster
    from ._keys import ClusterStats
    from ._manager import ClusterRedisManager

__all__ = ("ClusterRedisManager", "ClusterStats", "RedisCluster")

#: Imported on first use, so that ``heartbeat_monitor_redis.cli`` needs no Redis client.
_LAZY = {
    "ClusterRedisManager": "._manager",
    "ClusterStats": "._keys",
    "RedisCluster": "._cluster",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
