"""What metrics cost a Socket.IO server: server CPU per heartbeat with metrics off and on.

The Socket.IO end-to-end setup (``_socketio_e2e``: python-socketio under uvicorn
with the ``SocketIOAdapter`` in one process, many real python-socketio clients
beating once a second in another), measured side by side *in one server
process*: the parent switches metrics on and off every ``phase`` seconds in
ABBA order, and the server reports its own CPU time (``time.process_time``, ns
resolution) and the beats its hub counted at each switch. Interleaving short
phases in one process cancels the drift that separate runs suffer on a shared
machine.

"On" is everything an operator turns on: the :class:`~heartbeat_monitor.Metrics`
sampler running, and ``/metrics`` (a Prometheus scrape) and ``/status.json``
(what a status page viewer gets) fetched over HTTP every ``scrape_every``
seconds by the parent. "Off" is the same process with the sampler stopped and
nothing fetched (the ``Metrics`` object stays attached: in steady state it does
nothing, as it counts nothing per beat).

    python -m benchmarks._metrics_cost [CLIENTS [PHASES [PHASE_S [SCRAPE_EVERY]]]]
    python -m benchmarks._metrics_cost requests     # server CPU per fetch, idle server
"""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from ._socketio_e2e import available

__all__ = ("available", "measure", "measure_requests")

_INTERVAL = 1.0


async def _serve() -> None:
    import socketio
    import uvicorn

    from heartbeat_monitor import Metrics
    from heartbeat_monitor_socketio import SocketIOAdapter

    from ._contenders import quiet_structlog

    quiet_structlog()
    sio = socketio.AsyncServer(async_mode="asgi")
    adapter = SocketIOAdapter(sio, interval=_INTERVAL, misses=2, min_beat_gap=0.0)
    metrics = Metrics(adapter.hub)
    app = socketio.ASGIApp(sio, other_asgi_app=metrics.app())
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    print(sock.getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()

    async def commands() -> None:
        sampler: asyncio.Task[None] | None = None
        while command := (await loop.run_in_executor(None, sys.stdin.readline)).strip():
            if sampler is not None:
                sampler.cancel()
                sampler = None
            if command == "on":
                sampler = asyncio.create_task(metrics.run())
            elif command == "fill":  # a full history, as after 5 minutes of sampling
                for _ in range(metrics.history.maxlen or 0):
                    metrics.sample()
            print(time.process_time(), adapter.hub.beats, flush=True)
        server.should_exit = True

    async with adapter:
        control = asyncio.create_task(commands())
        await server.serve(sockets=[sock])
        await control


def _watch(port: int, every: float, on: threading.Event, stop: threading.Event) -> None:
    while not stop.wait(every):
        if on.is_set():
            for path in ("/metrics", "/status.json"):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
                    reply.read()


def measure_requests(count: int = 1000) -> dict[str, float]:
    """Server CPU per request (ms), on an idle server with a full history: what one fetch of
    ``/metrics`` or ``/status.json`` costs, beside uvicorn's own cost of any request (a 404)."""
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks._metrics_cost", "server"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdin is not None
    assert server.stdout is not None

    def cpu(command: str) -> float:
        server.stdin.write(command + "\n")  # type: ignore[union-attr]
        server.stdin.flush()  # type: ignore[union-attr]
        return float(server.stdout.readline().split()[0])  # type: ignore[union-attr]

    out: dict[str, float] = {}
    try:
        port = int(server.stdout.readline())
        cpu("fill")
        for path in ("/nothing", "/metrics", "/status.json"):
            url = f"http://127.0.0.1:{port}{path}"
            for round_ in range(2):  # the first round warms up
                start = cpu("off")
                for _ in range(count):
                    try:
                        with urllib.request.urlopen(url, timeout=5) as reply:
                            reply.read()
                    except urllib.error.HTTPError:
                        pass  # the 404
                if round_:
                    out[path] = (cpu("off") - start) / count * 1e3
        server.stdin.write("\n")
        server.stdin.flush()
        server.wait(timeout=10)
    finally:
        if server.poll() is None:
            server.kill()
    return out


def measure(
    *, clients: int, phases: int = 40, phase: float = 2.0, scrape_every: float = 1.0
) -> dict[str, Any]:
    """Server CPU per heartbeat, metrics off vs on, over ``phases`` interleaved phases."""
    python = sys.executable
    server = subprocess.Popen(
        [python, "-m", "benchmarks._metrics_cost", "server"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdin is not None
    assert server.stdout is not None
    on, stop = threading.Event(), threading.Event()
    totals = {"off": [0.0, 0], "on": [0.0, 0]}
    blocks: list[dict[str, float]] = []
    try:
        port = int(server.stdout.readline())
        url = f"http://127.0.0.1:{port}"
        window = str(phases * phase + 10)
        crowd = subprocess.Popen(
            [
                python,
                "-m",
                "benchmarks._socketio_e2e",
                "clients",
                url,
                str(clients),
                "1",
                "3",
                window,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert crowd.stdout is not None
        if crowd.stdout.readline().strip() != "connected":
            raise RuntimeError("the Socket.IO clients failed to connect")
        crowd.stdout.readline()  # "start": warmed up
        watcher = threading.Thread(target=_watch, args=(port, scrape_every, on, stop))
        watcher.start()

        def switch(mode: str) -> tuple[float, int]:
            (on.set if mode == "on" else on.clear)()
            server.stdin.write(mode + "\n")  # type: ignore[union-attr]
            server.stdin.flush()  # type: ignore[union-attr]
            cpu, beats = server.stdout.readline().split()  # type: ignore[union-attr]
            return float(cpu), int(beats)

        order = ["off", "on", "on", "off"]
        modes = [order[index % 4] for index in range(phases)]
        block: dict[str, list[float]] = {"off": [0.0, 0.0], "on": [0.0, 0.0]}
        last = switch(modes[0])
        for index, mode in enumerate(modes):
            time.sleep(phase)
            now = switch(modes[index + 1] if index + 1 < phases else "off")
            cpu, beats = now[0] - last[0], now[1] - last[1]
            last = now
            totals[mode][0] += cpu
            totals[mode][1] += beats
            block[mode][0] += cpu
            block[mode][1] += beats
            if index % 4 == 3:  # one ABBA block: its own ratio, for the spread
                per_beat = {m: c / max(1.0, b) for m, (c, b) in block.items()}
                blocks.append(per_beat)
                block = {"off": [0.0, 0.0], "on": [0.0, 0.0]}
        stop.set()
        watcher.join()
        server.stdin.write("\n")
        server.stdin.flush()
        crowd.wait(timeout=120)
    finally:
        stop.set()
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
    us = {mode: cpu / max(1, beats) * 1e6 for mode, (cpu, beats) in totals.items()}
    ratios = sorted(b["on"] / b["off"] for b in blocks if b["off"])
    return {
        "clients": clients,
        "interval_s": _INTERVAL,
        "phases": phases,
        "phase_s": phase,
        "scrape_every_s": scrape_every,
        "beats": {mode: int(beats) for mode, (_, beats) in totals.items()},
        "off_us_per_beat": us["off"],
        "on_us_per_beat": us["on"],
        "ratio": us["on"] / us["off"],
        "block_ratios": {
            "median": statistics.median(ratios),
            "quartiles": statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios,
            "min": ratios[0],
            "max": ratios[-1],
        },
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["server"]:
        asyncio.run(_serve())
    elif sys.argv[1:2] == ["requests"]:
        print(json.dumps(measure_requests(), indent=1))
    else:
        arguments = [float(x) for x in sys.argv[1:]]
        names = ("clients", "phases", "phase", "scrape_every")
        options: dict[str, Any] = dict(zip(names, arguments, strict=False))
        for name in ("clients", "phases"):
            if name in options:
                options[name] = int(options[name])
        print(json.dumps(measure(**{"clients": 1000, **options}), indent=1))
