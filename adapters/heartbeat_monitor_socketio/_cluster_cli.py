"""``heartbeat-monitor serve --redis-url ...``: the command-line side of :mod:`._cluster`.

Imports nothing from Redis until a Redis URL is given: ``serve`` alone stays one
process, in memory.
"""

from __future__ import annotations

import argparse
import contextlib
from typing import TYPE_CHECKING, Any

from ._cli import _seconds

if TYPE_CHECKING:
    from ._adapter import SocketIOAdapter

__all__ = ("add_cluster_options", "cluster_for", "manager_for")


def add_cluster_options(parser: argparse.ArgumentParser) -> None:
    """``--redis-url`` and the options that only matter with it."""
    group = parser.add_argument_group(
        "cluster (several serve processes sharing one Redis)",
        "With --redis-url, peer_gone reaches the clients of every node (python-socketio's "
        "Redis manager), presence is shared, and the peers of a node that stops beating "
        "into Redis are announced gone once, by one surviving node.",
    )
    group.add_argument(
        "--redis-url", default=None, help="redis://host:port/db; none: one process, in memory"
    )
    group.add_argument(
        "--node-id", default=None, help="this node's name in the cluster (host-pid-random)"
    )
    group.add_argument(
        "--node-timeout",
        type=_seconds,
        default=10.0,
        help="a node silent in Redis this long is dead; its peers are announced gone (10)",
    )
    group.add_argument(
        "--sync-interval",
        type=_seconds,
        default=None,
        help="one Redis round trip per node this often (min(node-timeout/5, 1 s))",
    )
    group.add_argument(
        "--redis-channel", default="socketio", help="python-socketio pub/sub channel (socketio)"
    )
    group.add_argument(
        "--presence-event",
        default="presence",
        help="event a client emits, with an ack, to get the cluster's presence; '' for none",
    )


def manager_for(args: argparse.Namespace) -> Any:
    """The Socket.IO client manager: a :class:`ClusterRedisManager` with ``--redis-url``."""
    url = getattr(args, "redis_url", None)
    if not url:
        return None
    from ._redis_manager import ClusterRedisManager

    try:
        return ClusterRedisManager(url, channel=args.redis_channel)
    except ValueError as exc:
        raise SystemExit(f"heartbeat-monitor serve: --redis-url {url!r}: {exc}") from None


def cluster_for(
    args: argparse.Namespace, adapter: SocketIOAdapter
) -> contextlib.AbstractAsyncContextManager[Any]:
    """A :class:`RedisCluster` to run around the server, or a no-op without ``--redis-url``."""
    url = getattr(args, "redis_url", None)
    if not url:
        return contextlib.nullcontext()
    from ._cluster import RedisCluster

    try:
        return RedisCluster(
            adapter,
            url,
            node_id=args.node_id,
            node_timeout=args.node_timeout,
            sync_interval=args.sync_interval,
            presence_event=args.presence_event or None,
        )
    except ValueError as exc:  # ConfigurationError included
        raise SystemExit(f"heartbeat-monitor serve: {exc}") from None
