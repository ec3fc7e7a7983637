"""Heartbeats beside a FastAPI app: Socket.IO on /socket.io/, your routes on the rest.

    pip install 'aio-heartbeat-monitor[socketio]' fastapi
    python examples/fastapi_app.py --port 8000
    # or: uvicorn examples.fastapi_app:app --port 8000 --ws websockets-sansio

GET /peers lists the clients alive now; a client silent for two intervals leaves
the list, and the others get "peer_gone".
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import socketio
import uvicorn
from fastapi import FastAPI

from heartbeat_monitor_socketio import SocketIOAdapter

INTERVAL = float(os.environ.get("HEARTBEAT_INTERVAL", "5"))  # seconds between heartbeats

# --8<-- [start:fastapi]
sio = socketio.AsyncServer(async_mode="asgi")
adapter = SocketIOAdapter(sio, interval=INTERVAL, misses=2, room="peers", notify="peer_gone")


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    async with adapter:  # the monitor runs while the app does
        yield


api = FastAPI(lifespan=lifespan)


@api.get("/peers")
async def peers() -> list[str]:
    return sorted(str(peer) for peer in adapter.peers())


# Socket.IO answers /socket.io/; everything else (and the lifespan) goes to FastAPI.
app = socketio.ASGIApp(sio, other_asgi_app=api)
# --8<-- [end:fastapi]

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, ws="websockets-sansio")
