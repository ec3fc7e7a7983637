"""Heartbeats in your own python-socketio server, run by uvicorn.

    pip install 'aio-heartbeat-monitor[socketio]'
    python examples/socketio_app.py --port 8000
    # or: uvicorn examples.socketio_app:app --port 8000 --ws websockets-sansio
    # (the first also takes heartbeat frames as uvicorn reads them: adapter.websocket_protocol())

Clients emit "heartbeat" every INTERVAL seconds. One silent for two intervals is
disconnected with the reason "heartbeat timeout"; forget() runs once for it, and
the other clients (all in the room "peers") get one "peer_gone" event. The page
http://127.0.0.1:8000/ (examples/browser/index.html) is such a client.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path

import socketio
import uvicorn

from heartbeat_monitor import PeerGone
from heartbeat_monitor_socketio import SocketIOAdapter, StaticModules

INTERVAL = float(os.environ.get("HEARTBEAT_INTERVAL", "5"))  # seconds between heartbeats

# --8<-- [start:sio]
sio = socketio.AsyncServer(async_mode="asgi")  # your server, your handlers


@sio.event
async def chat(sid: str, text: str) -> None:  # handlers stay as they are
    await sio.emit("chat", {"from": sid, "text": text})


def forget(gone: PeerGone) -> None:  # runs exactly once per peer, whatever ended it
    print(f"{gone.peer} is gone: {gone.reason}", flush=True)


adapter = SocketIOAdapter(
    sio, interval=INTERVAL, misses=2, room="peers", notify="peer_gone", on_gone=forget
)

# The adapter runs while the app does: uvicorn's startup and shutdown (one task).
lifetime = contextlib.AsyncExitStack()


async def startup() -> None:
    await lifetime.enter_async_context(adapter)


async def shutdown() -> None:  # every peer ends with "server shutdown"
    await lifetime.aclose()


PAGE = Path(__file__).with_name("browser") / "index.html"  # a browser client
app = socketio.ASGIApp(
    sio,
    other_asgi_app=StaticModules(),  # /static/heartbeat.js, the module the page imports
    static_files={"/": str(PAGE)},
    on_startup=startup,
    on_shutdown=shutdown,
)
# --8<-- [end:sio]

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    # Heartbeat frames are taken as uvicorn reads them (less than half the server CPU a beat).
    uvicorn.run(app, host=args.host, port=args.port, ws=adapter.websocket_protocol())
