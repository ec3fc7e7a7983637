"""Socket.IO end to end: server CPU per heartbeat, with and without the adapter.

Three processes on loopback: the parent (this module's :func:`measure`), a
server (python-socketio under uvicorn) and a client process running many
python-socketio clients that each emit ``heartbeat`` every ``interval``. The
server is either *plain* (a handler that writes ``last_seen[sid] =
time.monotonic()``, the article's receiving side) or runs the
``SocketIOAdapter``. The parent reads the server process's CPU time (psutil)
over a window in which the clients count the beats they send; the figure is
server CPU seconds per beat, and the ratio of the two modes. Modes alternate
(plain, adapter, plain, adapter, ...) so machine noise hits both alike.

Run a side alone with ``python -m benchmarks._socketio_e2e server plain|adapter``
or ``... clients URL COUNT INTERVAL WARMUP WINDOW``.
"""

from __future__ import annotations

import asyncio
import importlib
import socket
import subprocess
import sys
import time
from typing import Any

__all__ = ("available", "measure")

_INTERVAL = 1.0


def available() -> bool:
    try:
        importlib.import_module("heartbeat_monitor_socketio")
        importlib.import_module("psutil")
    except ImportError:
        return False
    return True


async def _serve(mode: str) -> None:
    import socketio
    import uvicorn

    sio = socketio.AsyncServer(async_mode="asgi")
    app = socketio.ASGIApp(sio)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    print(sock.getsockname()[1], flush=True)
    if mode == "plain":
        last_seen: dict[str, float] = {}
        monotonic = time.monotonic

        @sio.on("heartbeat")  # type: ignore[untyped-decorator]
        async def heartbeat(sid: str, *args: Any) -> None:
            last_seen[sid] = monotonic()

        await server.serve(sockets=[sock])
        return
    from heartbeat_monitor_socketio import SocketIOAdapter

    from ._contenders import quiet_structlog

    quiet_structlog()
    adapter = SocketIOAdapter(sio, interval=_INTERVAL, misses=2, min_beat_gap=0.0)
    async with adapter:
        await server.serve(sockets=[sock])


async def _clients(url: str, count: int, interval: float, warmup: float, window: float) -> None:
    import socketio

    from heartbeat_monitor_socketio import HeartbeatClient

    clients = [socketio.AsyncClient(reconnection=False) for _ in range(count)]
    gate = asyncio.Semaphore(32)

    async def connect(client: socketio.AsyncClient) -> None:
        async with gate:
            await client.connect(url, transports=["websocket"])

    await asyncio.gather(*(connect(client) for client in clients))
    beaters = [HeartbeatClient(client, interval) for client in clients]
    for beater in beaters:
        beater.start()
    print("connected", flush=True)
    await asyncio.sleep(warmup)
    print("start", sum(b.beats_sent for b in beaters), flush=True)
    await asyncio.sleep(window)
    print("end", sum(b.beats_sent for b in beaters), flush=True)
    for beater in beaters:
        await beater.stop()
    await asyncio.gather(*(client.disconnect() for client in clients), return_exceptions=True)


def _one(mode: str, clients: int, warmup: float, window: float) -> dict[str, float]:
    psutil = importlib.import_module("psutil")
    python = sys.executable
    server = subprocess.Popen(
        [python, "-m", "benchmarks._socketio_e2e", "server", mode],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        time.sleep(0.5)
        crowd = subprocess.Popen(
            [
                python,
                "-m",
                "benchmarks._socketio_e2e",
                "clients",
                f"http://127.0.0.1:{port}",
                str(clients),
                str(_INTERVAL),
                str(warmup),
                str(window),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert crowd.stdout is not None
        process = psutil.Process(server.pid)
        if crowd.stdout.readline().strip() != "connected":
            raise RuntimeError("the Socket.IO clients failed to connect")
        _, sent_start = crowd.stdout.readline().split()
        cpu_start, wall_start = sum(process.cpu_times()[:2]), time.perf_counter()
        _, sent_end = crowd.stdout.readline().split()
        cpu_end, wall_end = sum(process.cpu_times()[:2]), time.perf_counter()
        crowd.wait(timeout=60)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
    beats = int(sent_end) - int(sent_start)
    return {
        "beats": beats,
        "server_cpu_s": cpu_end - cpu_start,
        "window_s": wall_end - wall_start,
        "server_cpu_us_per_beat": (cpu_end - cpu_start) / max(1, beats) * 1e6,
    }


def measure(*, clients: int, rounds: int, warmup: float = 3.0, window: float = 10.0) -> Any:
    """Alternate plain and adapter servers ``rounds`` times; the best (lowest) CPU per beat."""
    runs: dict[str, list[dict[str, float]]] = {"plain": [], "adapter": []}
    for _ in range(rounds):
        for mode in runs:
            runs[mode].append(_one(mode, clients, warmup, window))
    best = {
        mode: min(r["server_cpu_us_per_beat"] for r in results) for mode, results in runs.items()
    }
    return {
        "clients": clients,
        "interval_s": _INTERVAL,
        "window_s": window,
        "rounds": rounds,
        "runs": runs,
        "plain_us_per_beat": best["plain"],
        "adapter_us_per_beat": best["adapter"],
        "ratio": best["adapter"] / best["plain"],
    }


def _main(argv: list[str]) -> None:
    if argv[0] == "server":
        asyncio.run(_serve(argv[1]))
    elif argv[0] == "clients":
        url, count, interval, warmup, window = argv[1:6]
        asyncio.run(_clients(url, int(count), float(interval), float(warmup), float(window)))
    else:
        raise SystemExit(f"usage: python -m benchmarks._socketio_e2e server|clients ...: {argv}")


if __name__ == "__main__":
    _main(sys.argv[1:])
