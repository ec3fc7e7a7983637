"""Heartbeats over TCP: one JSON object per line (the core alone, no extra).

    pip install aio-heartbeat-monitor
    python examples/tcp_server.py --port 9000

A client writes {"type": "hello", "peer": "<id>"} and a newline first, then any
line beats (e.g. {"type": "beat"}) every INTERVAL seconds. One silent for two
intervals gets {"type": "closed", "reason": "heartbeat timeout"} and is
disconnected; the others get {"type": "gone", "peer": ..., "reason": ...}.
"""

from __future__ import annotations

import argparse
import contextlib
import os

import anyio

from heartbeat_monitor import HeartbeatMonitor, PeerGone, PeerHub
from heartbeat_monitor_tcp import TcpTransport

INTERVAL = float(os.environ.get("HEARTBEAT_INTERVAL", "5"))  # seconds between heartbeats


def forget(gone: PeerGone) -> None:
    print(f"{gone.peer} is gone: {gone.reason}", flush=True)


# --8<-- [start:main]
async def main(host: str, port: int) -> None:
    transport = TcpTransport(host, port)  # the one line that differs from the websockets one
    async with HeartbeatMonitor(timeout=INTERVAL * 2) as monitor:
        hub = PeerHub(monitor, on_gone=forget, notify="peer_gone")  # one "gone" per departure
        async with anyio.create_task_group() as task_group:
            host, port = await task_group.start(transport.serve, hub)
            print(f"listening on tcp://{host}:{port}", flush=True)


# --8<-- [end:main]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: every peer ends with "server shutdown"
        anyio.run(main, args.host, args.port)
