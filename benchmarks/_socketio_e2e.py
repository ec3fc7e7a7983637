"""Socket.IO end to end: plain python-socketio and the adapter, two real servers side by side.

Each server is its own process, as a user would run it: ``socketio.AsyncServer``
under the same ``uvicorn.Server`` configuration, same engine.io settings
(defaults); ``plain`` has an ``async def heartbeat(sid, *args)`` handler that
only counts (an int increment), ``adapter`` has no handler of its own and a
:class:`~heartbeat_monitor_socketio.SocketIOAdapter` (default options) reads the
beats, its uvicorn running ``ws=adapter.websocket_protocol()`` (heartbeat frames
taken as uvicorn reads them) where ``plain`` runs uvicorn's default websocket
protocol. Clients are the official socket.io-client (``tests/js/load.mjs``, one
Node process per server, the same count), each beating once a second.

:func:`measure` runs both servers **at the same time**, under the same load, and
samples both over the same windows (sampling order alternating, ABBA): server
CPU time (user + system, the whole process) per heartbeat received, and their
ratio per window. Both share the machine's two cores with the clients, so a
window in which the machine is busy is busy for both.

:func:`capacity` finds, for each server alone, the most clients at 1 beat/s it
holds with a median beat lateness under 50 ms, clients opening 300 a second, every
one of them connected. A beat waits in the server for
the event loop as long as a timer does: the lateness is measured by a probe
task in the server (``asyncio.sleep(0.01)`` in a loop, how late it wakes),
sampled while every client beats.

Run one server alone with ``python -m benchmarks._socketio_e2e server plain|adapter``
(it prints its port, then answers each ``sample`` line on stdin with a JSON line);
``... clients URL COUNT INTERVAL WARMUP WINDOW`` runs python-socketio clients
(``benchmarks._metrics_cost`` uses them). A third server, ``serve``, is the
adapter under :class:`~heartbeat_monitor_socketio.SocketIOServer` (its uvicorn
protocol times every message for the overload guard, and its limits), as
``heartbeat-monitor serve`` runs it: :func:`capacity` measures it too.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .overload import most

__all__ = ("available", "capacity", "measure")

JS = Path(__file__).resolve().parents[1] / "tests" / "js"
MODES = ("plain", "adapter")
#: ``capacity`` also measures ``serve``: the adapter under SocketIOServer, as the CLI runs it.
CAPACITY_MODES = (*MODES, "serve")
_PROBE = 0.01
#: Connections opened a second in a capacity run: a gentle ramp, so that what is measured
#: is holding the clients, not a connection storm (the adapter's overload guard refuses
#: new connections while the loop lags: a storm of 1,000 a second on 2 cores trips it).
_RAMP = 300


def available() -> bool:
    """Whether Node, the JS client and the adapter are here."""
    try:
        import heartbeat_monitor_socketio  # noqa: F401
    except ImportError:
        return False
    return shutil.which("node") is not None and (JS / "node_modules" / "socket.io-client").is_dir()


async def _serve(mode: str) -> None:
    import socketio
    import uvicorn

    sio = socketio.AsyncServer(async_mode="asgi")
    app = socketio.ASGIApp(sio)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    beats = 0
    lags: list[float] = []

    async def probe() -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(_PROBE)
            lags.append(loop.time() - start - _PROBE)

    def count() -> int:
        return beats if adapter is None else adapter.stats.beats

    def sample() -> None:
        nonlocal lags
        taken, lags = lags, []
        print(
            json.dumps(
                {
                    "beats": count(),
                    "cpu": time.process_time(),  # user + system, ns resolution (not ticks)
                    "peers": len(sio.manager.rooms.get("/", {}).get(None, {})),
                    "lag_median": statistics.median(taken) if taken else None,
                    "lag_max": max(taken, default=None),
                }
            ),
            flush=True,
        )

    adapter = None
    if mode == "plain":

        @sio.on("heartbeat")  # type: ignore[untyped-decorator]
        async def heartbeat(sid: str, *args: Any) -> None:
            nonlocal beats
            beats += 1

    else:
        import structlog

        from heartbeat_monitor_socketio import SocketIOAdapter

        structlog.configure(  # stdout is for the samples
            wrapper_class=structlog.make_filtering_bound_logger(30),
            logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        )
        adapter = SocketIOAdapter(sio, interval=1.0, misses=5)
    # The same uvicorn configuration for both; the adapter's server runs its websocket
    # protocol (``ws=adapter.websocket_protocol()``, as its docs tell users to), the plain
    # one uvicorn's default: what a user of plain python-socketio would write.
    ws: Any = "auto" if adapter is None else adapter.websocket_protocol()
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False, ws=ws)
    server = uvicorn.Server(config)
    loop = asyncio.get_running_loop()

    def command() -> None:
        if sys.stdin.readline():
            sample()

    loop.add_reader(sys.stdin.fileno(), command)
    tasks = [asyncio.ensure_future(probe())]
    try:
        if adapter is None:
            print(sock.getsockname()[1], flush=True)
            await server.serve(sockets=[sock])
        elif mode == "adapter":
            print(sock.getsockname()[1], flush=True)
            async with adapter:
                await server.serve(sockets=[sock])
        else:  # what `heartbeat-monitor serve` runs: SocketIOServer (its own uvicorn setup)
            from heartbeat_monitor_socketio import SocketIOServer

            sock.close()
            serving = SocketIOServer(adapter)
            print(serving.port, flush=True)
            async with adapter:
                await serving.serve()
    finally:
        tasks[0].cancel()


class _Server:
    """One server process (``plain`` or ``adapter``); :meth:`sample` asks it for its figures."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks._socketio_e2e", "server", mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        assert self.process.stdout is not None
        self.url = f"http://127.0.0.1:{int(self.process.stdout.readline())}"

    def ask(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("sample\n")
        self.process.stdin.flush()

    def answer(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        result: dict[str, Any] = json.loads(self.process.stdout.readline())
        return result

    def sample(self) -> dict[str, Any]:
        self.ask()
        return self.answer()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _load(url: str, clients: int, duration: float, rate: int = 0) -> subprocess.Popen[str]:
    node = shutil.which("node")
    assert node is not None
    rate = rate or max(200, clients // 4)
    args = [node, str(JS / "load.mjs"), f"--url={url}", f"--clients={clients}", "--interval=1"]
    args += [f"--rate={rate}", f"--duration={duration}"]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)


def _settle(servers: list[_Server], clients: int, limit: float = 60.0) -> None:
    """Wait until every server has ``clients`` connections (or ``limit`` seconds)."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if all(server.sample()["peers"] >= clients for server in servers):
            return
        time.sleep(0.5)


def measure(*, clients: int = 500, windows: int = 8, window: float = 4.0) -> dict[str, Any]:
    """Both servers at once under ``clients`` each: CPU per beat and the ratio, per window."""
    servers = [_Server(mode) for mode in MODES]
    loads: list[subprocess.Popen[str]] = []
    try:
        duration = 90 + windows * window
        loads = [_load(server.url, clients, duration) for server in servers]
        _settle(servers, clients)
        time.sleep(3.0)  # every client beating at its own phase
        per: dict[str, list[float]] = {mode: [] for mode in MODES}
        ratios: list[float] = []
        lags: dict[str, list[float]] = {mode: [] for mode in MODES}
        order = list(servers)
        before = {server.mode: server.sample() for server in order}
        for index in range(windows):
            time.sleep(window)
            order = order if index % 2 == 0 else order[::-1]  # ABBA sampling order
            after = {server.mode: server.sample() for server in order}
            for mode in MODES:
                beats = after[mode]["beats"] - before[mode]["beats"]
                cpu = after[mode]["cpu"] - before[mode]["cpu"]
                per[mode].append(cpu / max(1, beats) * 1e6)
                if after[mode]["lag_median"] is not None:
                    lags[mode].append(after[mode]["lag_median"] * 1000)
            ratios.append(per["adapter"][-1] / per["plain"][-1])
            before = after
    finally:
        for load in loads:
            load.kill()
            load.wait()
        for server in servers:
            server.stop()
    return {
        "clients_per_server": clients,
        "windows": windows,
        "window_s": window,
        "us_per_beat": {mode: statistics.median(values) for mode, values in per.items()},
        "us_per_beat_windows": per,
        "ratio_median": statistics.median(ratios),
        "ratio_range": [min(ratios), max(ratios)],
        "loop_lag_median_ms": {
            mode: statistics.median(values) if values else None for mode, values in lags.items()
        },
    }


def _holds(mode: str, clients: int, limit: float, seconds: float) -> dict[str, Any]:
    """One server alone offered ``clients``: connected, and its probe's lateness while beating."""
    server = _Server(mode)
    ramp = clients / _RAMP
    load = _load(server.url, clients, ramp + 40 + seconds, rate=_RAMP)
    try:
        _settle([server], clients, limit=ramp + 20)
        time.sleep(3.0)
        server.sample()
        first = server.sample()
        time.sleep(seconds)
        last = server.sample()
    finally:
        load.kill()
        load.wait()
        server.stop()
    lag = last["lag_median"]
    beats = last["beats"] - first["beats"]
    return {
        "clients": clients,
        "connected": last["peers"],
        "beats_per_s": round(beats / seconds),
        "lag_median_ms": None if lag is None else round(lag * 1000, 1),
        "lag_max_ms": None if last["lag_max"] is None else round(last["lag_max"] * 1000, 1),
        "held": last["peers"] >= clients and lag is not None and lag < limit,
    }


def capacity(
    *, start: int = 3000, step: int = 250, limit: float = 0.05, seconds: float = 8.0
) -> dict[str, Any]:
    """Per mode: the most clients at 1 beat/s held with median lateness < ``limit``."""
    found: dict[str, Any] = {}
    for mode in CAPACITY_MODES:
        runs: list[dict[str, Any]] = []

        def holds(clients: int, mode: str = mode, runs: list[dict[str, Any]] = runs) -> bool:
            outcome = _holds(mode, clients, limit, seconds)
            runs.append(outcome)
            print(f"  {mode} {json.dumps(outcome)}", file=sys.stderr, flush=True)
            return bool(outcome["held"])

        found[mode] = {"capacity": most(holds, start, step), "runs": runs}
    return found


async def _clients(url: str, count: int, interval: float, warmup: float, window: float) -> None:
    """python-socketio clients beating (``benchmarks._metrics_cost`` uses them)."""
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


def _main(argv: list[str]) -> None:
    if argv[:1] == ["server"]:
        asyncio.run(_serve(argv[1]))
    elif argv[:1] == ["clients"]:
        url, count, interval, warmup, window = argv[1:6]
        asyncio.run(_clients(url, int(count), float(interval), float(warmup), float(window)))
    else:
        raise SystemExit(f"usage: python -m benchmarks._socketio_e2e server|clients ...: {argv}")


if __name__ == "__main__":
    threading.current_thread().name = "socketio-e2e"
    _main(sys.argv[1:])
