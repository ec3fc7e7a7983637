"""``heartbeat-monitor serve --redis-url ...``: the cluster's command-line plugin.

Published as the ``redis`` entry point of ``heartbeat_monitor.cli`` (see
``docs/plugins.md``): it adds the cluster's options to ``serve``, and with them
``args.cluster``, the :class:`ClusterHooks` the Socket.IO transport asks for its
client manager and for the :class:`RedisCluster` to run around its server. So
the Socket.IO package never imports this one. Imports nothing from Redis until a
Redis URL is given: ``serve`` alone stays one process, in memory; without the
``redis`` extra, ``--redis-url`` is one line naming the ``pip install`` to run.
"""

from __future__ import annotations

import argparse
import contextlib
from typing import TYPE_CHECKING, Any, final

from heartbeat_monitor.cli import CliPlugin, UsageError, positive

if TYPE_CHECKING:
    from heartbeat_monitor_socketio import SocketIOAdapter

__all__ = ("PLUGIN", "ClusterHooks", "add_cluster_options")

_INSTALL = "pip install 'aio-heartbeat-monitor[redis]'"


@final
class ClusterHooks:
    """What ``serve --transport socketio`` asks of the cluster (``args.cluster``)."""

    def manager(self, args: argparse.Namespace) -> Any:
        """The client manager: a ``ClusterRedisManager`` with ``--redis-url``, else ``None``."""
        url = args.redis_url
        if not url:
            return None
        try:
            from ._manager import ClusterRedisManager
        except ModuleNotFoundError as exc:
            raise UsageError(f"--redis-url needs the redis extra ({exc}): {_INSTALL}") from None
        try:
            return ClusterRedisManager(url, channel=args.redis_channel)
        except ValueError as exc:
            raise UsageError(f"--redis-url {url!r}: {exc}") from None

    def around(
        self, args: argparse.Namespace, adapter: SocketIOAdapter
    ) -> contextlib.AbstractAsyncContextManager[Any]:
        """A ``RedisCluster`` to run around the server, or a no-op without ``--redis-url``."""
        if not args.redis_url:
            return contextlib.nullcontext()
        try:
            from ._cluster import RedisCluster
        except ModuleNotFoundError as exc:
            raise UsageError(f"--redis-url needs the redis extra ({exc}): {_INSTALL}") from None
        try:
            return RedisCluster(
                adapter,
                args.redis_url,
                node_id=args.node_id,
                node_timeout=args.node_timeout,
                sync_interval=args.sync_interval,
                presence_event=args.presence_event or None,
                fence=args.fence,
            )
        except ValueError as exc:  # ConfigurationError included
            raise UsageError(str(exc)) from None


def add_cluster_options(parser: argparse.ArgumentParser) -> None:
    """``--redis-url`` and the options that only matter with it (and ``args.cluster``)."""
    group = parser.add_argument_group(
        "cluster (several Socket.IO serve processes sharing one Redis)",
        "With --redis-url, peer_gone reaches the clients of every node, presence is\n"
        "shared, and the clients of a node that stops beating into Redis are announced\n"
        "gone once, by one surviving node. Needs the redis extra.",
    )
    group.add_argument(
        "--redis-url", default=None, help="redis://host:port/db (default: one process, in memory)"
    )
    group.add_argument(
        "--node-id", default=None, help="this node's name in the cluster (host-pid-random)"
    )
    group.add_argument(
        "--node-timeout",
        type=positive("seconds"),
        default=10.0,
        help="seconds a node may be silent in Redis before its clients are announced gone (10)",
    )
    group.add_argument(
        "--sync-interval",
        type=positive("seconds"),
        default=None,
        help="seconds between a node's Redis round trips (node-timeout/5, max 1)",
    )
    group.add_argument(
        "--no-fence",
        dest="fence",
        action="store_false",
        help="keep serving clients while cut off from Redis (default: after node-timeout "
        "minus sync-interval without Redis, disconnect them with 'node isolated')",
    )
    group.add_argument(
        "--redis-channel", default="socketio", help="python-socketio pub/sub channel (socketio)"
    )
    group.add_argument(
        "--presence-event",
        default="presence",
        help="event a client emits, with an ack, to get the cluster's presence; '' for none",
    )
    parser.set_defaults(cluster=ClusterHooks())


#: The ``redis`` entry point of ``heartbeat_monitor.cli``.
PLUGIN = CliPlugin(serve_arguments=add_cluster_options)
