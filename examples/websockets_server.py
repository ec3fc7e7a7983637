"""Heartbeats over plain websockets (no Socket.IO).

    pip install 'aio-heartbeat-monitor[websockets]'
    python examples/websockets_server.py --port 8765

A client sends {"type": "hello", "peer": "<id>"} first, then any message beats
(e.g. {"type": "beat"}) every INTERVAL seconds. One silent for two intervals is
closed (code 4000, reason "heartbeat timeout"); the others get
{"type": "gone", "peer": ..., "reason": ...}.
"""

from __future__ import annotations

import argparse
import contextlib
import os

import anyio

from heartbeat_monitor import HeartbeatMonitor, PeerGone, PeerHub
from heartbeat_monitor_websockets import WebSocketTransport

INTERVAL = float(os.environ.get("HEARTBEAT_INTERVAL", "5"))  # seconds between heartbeats


# --8<-- [start:main]
def forget(gone: PeerGone) -> None:
    print(f"{gone.peer} is gone: {gone.reason}", flush=True)


async def main(host: str, port: int) -> None:
    transport = WebSocketTransport(host, port)
    async with HeartbeatMonitor(timeout=INTERVAL * 2) as monitor:
        hub = PeerHub(monitor, on_gone=forget, notify="peer_gone")  # one "gone" per departure
        async with anyio.create_task_group() as task_group:
            host, port = await task_group.start(transport.serve, hub)
            print(f"listening on ws://{host}:{port}", flush=True)


# --8<-- [end:main]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: every peer ends with "server shutdown"
        anyio.run(main, args.host, args.port)
