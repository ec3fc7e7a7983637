"""Several Socket.IO nodes sharing one Redis: run this once per node.

    pip install 'aio-heartbeat-monitor[redis]'
    redis-server &
    python examples/redis_nodes.py --port 8001 --node-id a
    python examples/redis_nodes.py --port 8002 --node-id b

Behind a load balancer with sticky sessions, each client connects to one node.
A client silent on node a is announced to the clients of every node
("peer_gone"); if node a itself dies, one surviving node announces each of its
clients once, with the reason "node gone".
"""

from __future__ import annotations

import argparse
import contextlib
import os

import anyio
import socketio

from heartbeat_monitor import PeerGone
from heartbeat_monitor_redis import ClusterRedisManager, RedisCluster
from heartbeat_monitor_socketio import SocketIOAdapter, SocketIOServer

INTERVAL = float(os.environ.get("HEARTBEAT_INTERVAL", "5"))  # seconds between heartbeats
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def forget(gone: PeerGone) -> None:
    print(f"{gone.peer} is gone: {gone.reason}", flush=True)


# --8<-- [start:node]
async def node(port: int, node_id: str) -> None:
    manager = ClusterRedisManager(REDIS_URL)  # peer_gone reaches every node's clients
    sio = socketio.AsyncServer(async_mode="asgi", client_manager=manager)
    adapter = SocketIOAdapter(
        sio, interval=INTERVAL, misses=2, room="peers", notify="both", on_gone=forget
    )  # notify: peer_gone to every node's clients, presence diffs to this node's
    cluster = RedisCluster(adapter, REDIS_URL, node_id=node_id, node_timeout=INTERVAL * 4)
    async with cluster, SocketIOServer(adapter, port=port) as server:  # the cluster outermost
        print(f"node {node_id} listening on {server.url}", flush=True)
        await anyio.sleep_forever()


# --8<-- [end:node]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--node-id", default=None, help="this node's name (host-pid-random)")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(node, args.port, args.node_id)
