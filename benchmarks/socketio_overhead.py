"""Server CPU per heartbeat inside python-socketio: plain handler vs the SocketIOAdapter.

In-process and transport-free, so the figure is steady on a busy machine: 1,000
sessions are connected to a real ``socketio.AsyncServer`` (its packet sends
stubbed out), then each inbound ``42["heartbeat"]`` packet is fed to engine.io's
``message`` handler exactly as engine.io would, with ``async_handlers=False``
so the handler runs inline and is timed. Modes:

* ``plain``: the source article's scheme, a ``heartbeat`` handler that writes
  ``last_seen[sid] = time.monotonic()``;
* ``adapter``: no handler, the :class:`SocketIOAdapter` counts the beat;
* ``adapter+handler``: the adapter and the same plain handler (the adapter's
  pure cost on top of an application's handler).

The denominator leaves out websocket framing, engine.io decoding and uvicorn,
so the overhead ratio printed here is an upper bound of the end-to-end one
(``benchmarks/_socketio_e2e.py`` measures that with real clients).

``--memory``: bytes per connection the adapter adds to a plain python-socketio server
(tracemalloc). N sessions are connected through engine.io's own ``connect`` and
``message`` handlers (the adapter's wrappers included), on a real
``socketio.AsyncServer`` with and without a :class:`SocketIOAdapter` (default options),
and each sends one heartbeat a second later; the engine.io socket stand-ins and sid
strings are made before the measured window, and presence flushes settle before the end.
The difference of the two, per connection, is the adapter's cost. Issue 15 budgets the
core tracker apart (<= 64 B): its part is what ``_tracker.py``, ``_sweep.py`` and
``_wheel.py`` allocate plus the float of the last beat it holds (24 B; the hub reads the
clock once per beat and its rate window keeps the same float, so that allocation is
attributed to the hub's line). Dict tables grow by doubling, so a per-entry cost depends
on N: several N are measured.

``--e2e`` and ``--capacity``: two real servers, plain python-socketio and the
adapter, under socket.io-client load (see ``benchmarks/_socketio_e2e.py``).
``--switch``: one real server whose adapter is switched on and off every window
(ABBA), for ``--profile`` (cProfile of each mode, thread CPU time). Its plain
windows still run the adapter's ASGI receive wrapper (``_limits.py``, bound to
each websocket when it opens), so its ratio flatters the adapter: ``--e2e`` is
the figure.

    python -m benchmarks.socketio_overhead [--clients 1000] [--rounds 30] [--repeat 7]
    python -m benchmarks.socketio_overhead --memory [--sizes 10000,14000,20000]
    python -m benchmarks.socketio_overhead --e2e | --capacity | --switch [--profile PREFIX]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import time
import tracemalloc
from pathlib import Path
from types import SimpleNamespace
from typing import Any

__all__ = ("measure", "memory")

_MODES = ("plain", "adapter", "adapter+handler")


def _muted_server() -> Any:
    """An in-process python-socketio server that logs errors only and sends nothing."""
    import socketio
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    sio = socketio.AsyncServer(async_mode="asgi", async_handlers=False)

    async def no_send(*args: Any, **kwargs: Any) -> None:
        return None

    sio._send_packet = no_send
    return sio


async def _server(mode: str, clients: int) -> tuple[Any, list[str], Any]:

    from heartbeat_monitor_socketio import SocketIOAdapter

    sio = _muted_server()
    adapter = None
    if mode != "adapter":
        last_seen: dict[str, float] = {}
        monotonic = time.monotonic

        @sio.on("heartbeat")  # type: ignore[untyped-decorator]
        async def heartbeat(sid: str, *args: Any) -> None:
            last_seen[sid] = monotonic()

    if mode != "plain":
        adapter = SocketIOAdapter(sio, interval=60, misses=2, min_beat_gap=0.0)
        await adapter.__aenter__()
    eio_sids = [f"eio{index:06d}" for index in range(clients)]
    for eio_sid in eio_sids:
        # An engine.io socket that looks open (the adapter checks that on connect).
        sio.eio.sockets[eio_sid] = SimpleNamespace(closed=False, closing=False)
        await sio._handle_eio_connect(eio_sid, {})
        await sio._handle_eio_message(eio_sid, "0")
    if adapter is not None:
        assert len(adapter) == clients
    return sio, eio_sids, adapter


async def _time(mode: str, clients: int, rounds: int) -> float:
    sio, eio_sids, adapter = await _server(mode, clients)
    handle = sio.eio.handlers["message"]  # as engine.io calls it: the adapter's guard first
    packet = '2["heartbeat"]'
    try:
        for eio_sid in eio_sids:  # warm up
            await handle(eio_sid, packet)
        start = time.process_time()
        for _ in range(rounds):
            for eio_sid in eio_sids:
                await handle(eio_sid, packet)
        elapsed = time.process_time() - start
    finally:
        if adapter is not None:
            await adapter.__aexit__(None, None, None)
    if adapter is not None:
        assert adapter.stats.beats >= clients * rounds
    return elapsed / (clients * rounds) * 1e6


def measure(*, clients: int = 1000, rounds: int = 30, repeat: int = 7) -> dict[str, Any]:
    """Microseconds of server CPU per heartbeat for each mode (best of ``repeat``, interleaved)."""
    results: dict[str, list[float]] = {mode: [] for mode in _MODES}
    for _ in range(repeat):
        for mode in _MODES:
            results[mode].append(asyncio.run(_time(mode, clients, rounds)))
    best = {mode: min(values) for mode, values in results.items()}
    return {
        "clients": clients,
        "beats_per_run": clients * rounds,
        "us_per_beat": best,
        "adapter_vs_plain": best["adapter"] / best["plain"] - 1,
        "adapter_plus_handler_vs_plain": best["adapter+handler"] / best["plain"] - 1,
    }


#: A float object (the last beat the tracker holds for each peer).
_FLOAT = 24
_TRACKER_FILES = (
    "*/heartbeat_monitor/_tracker.py",
    "*/heartbeat_monitor/_sweep.py",
    "*/heartbeat_monitor/_wheel.py",
)


async def _memory(mode: str, clients: int) -> tuple[int, int]:
    """Bytes traced while ``clients`` sessions connect (all, and the tracker's part)."""

    from heartbeat_monitor_socketio import SocketIOAdapter

    sio = _muted_server()

    adapter = None
    if mode == "plain":  # plain python-socketio: a no-op handler; else the adapter reads beats

        @sio.on("heartbeat")  # type: ignore[untyped-decorator]
        async def heartbeat(sid: str, *args: Any) -> None:
            return None

    else:
        adapter = SocketIOAdapter(sio, interval=60, misses=2)
        await adapter.__aenter__()
    eio = sio.eio

    async def connect(eio_sid: str) -> None:
        # As engine.io does: its handlers, so that the adapter's wrappers run.
        eio.sockets[eio_sid] = SimpleNamespace(closed=False, closing=False)
        await eio.handlers["connect"](eio_sid, {})
        await eio.handlers["message"](eio_sid, "0")

    for index in range(100):  # warm-up: first-use allocations are not per connection
        await connect(f"warm{index:05d}")
    eio_sids = [f"eio{index:07d}" for index in range(clients)]
    await asyncio.sleep(0.2)
    gc.collect()
    tracemalloc.start(1)  # the allocating line: enough to tell the tracker's
    try:
        before = tracemalloc.take_snapshot()
        for eio_sid in eio_sids:
            await connect(eio_sid)
        await asyncio.sleep(1.0)  # a beat a second later starts a new rate window, as usual
        for eio_sid in eio_sids:  # and one heartbeat each: the state a beating peer keeps
            await eio.handlers["message"](eio_sid, '2["heartbeat"]')
        await asyncio.sleep(0.2)  # presence flushes (if any) settle
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    total = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    only = [tracemalloc.Filter(True, pattern) for pattern in _TRACKER_FILES]
    tracker = sum(
        stat.size_diff
        for stat in after.filter_traces(only).compare_to(before.filter_traces(only), "filename")
    )
    if adapter is not None:
        assert len(adapter) == clients + 100
        await adapter.__aexit__(None, None, None)
    return total, tracker


def memory(sizes: tuple[int, ...] = (10_000, 14_000, 20_000)) -> dict[str, Any]:
    """Bytes per connection the adapter adds to plain python-socketio, at each size."""
    rows: dict[str, Any] = {}
    for clients in sizes:
        plain, _ = asyncio.run(_memory("plain", clients))
        adapter, tracker = asyncio.run(_memory("adapter", clients))
        tracker_b = tracker / clients + _FLOAT
        rows[str(clients)] = {
            "plain_B": plain / clients,
            "adapter_B": adapter / clients,
            "added_B": (adapter - plain) / clients,
            "tracker_B": tracker_b,
            "added_without_tracker_B": (adapter - plain) / clients - tracker_b,
        }
    return rows


async def _e2e(
    clients: int, windows: int, window: float, profile: str | None = None
) -> dict[str, list[float]]:
    """One real server (uvicorn, websockets), the adapter switched on and off every window.

    ``profile``: also run cProfile over each mode's windows (its figures are then
    inflated by the profiler; read where the time goes, not how much) and write
    ``<profile>.<mode>.pstats`` with the number of beats in ``<profile>.<mode>.beats``.
    """
    import cProfile
    import statistics
    import sys

    import socketio
    import structlog

    from heartbeat_monitor_socketio import SocketIOAdapter, SocketIOServer

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    sio = socketio.AsyncServer(async_mode="asgi")
    beats = 0
    monotonic = time.monotonic
    last_seen: dict[str, float] = {}

    @sio.on("heartbeat")  # type: ignore[untyped-decorator]
    async def heartbeat(sid: str, *args: Any) -> None:
        nonlocal beats
        beats += 1
        last_seen[sid] = monotonic()

    adapter = SocketIOAdapter(sio, interval=100, misses=2, min_beat_gap=0.0)
    profiles = {mode: cProfile.Profile(time.thread_time) for mode in ("plain", "adapter")}
    counted = {"plain": 0, "adapter": 0}
    wrapped = (sio._trigger_event, sio.eio.handlers["message"])
    results: dict[str, list[float]] = {"plain": [], "adapter": []}
    async with SocketIOServer(adapter) as server:
        crowd = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks._socketio_e2e",
            "clients",
            server.url,
            str(clients),
            "1.0",
            "2",
            str(windows * window + 5),
            stdout=asyncio.subprocess.PIPE,
        )
        assert crowd.stdout is not None
        await crowd.stdout.readline()  # "connected"
        await asyncio.sleep(2)
        for index in range(windows):
            # ABBA order (plain, adapter, adapter, plain, ...) cancels a linear drift.
            mode = "plain" if index % 4 in (0, 3) else "adapter"
            if mode == "plain":
                # python-socketio alone, as the source article: its own dispatch, a handler.
                sio.__dict__.pop("_trigger_event", None)
                sio.eio.handlers["message"] = sio._handle_eio_message
                sio.handlers["/"]["heartbeat"] = heartbeat
            else:
                # the adapter alone: no application handler for heartbeats.
                sio._trigger_event, sio.eio.handlers["message"] = wrapped
                sio.handlers["/"].pop("heartbeat", None)
            if profile:
                profiles[mode].enable()
            start_cpu = time.process_time()
            start_beats = beats + adapter.stats.beats
            await asyncio.sleep(window)
            cpu = time.process_time() - start_cpu
            count = beats + adapter.stats.beats - start_beats
            if profile:
                profiles[mode].disable()
            counted[mode] += count
            results[mode].append(cpu / max(1, count) * 1e6)
        sio._trigger_event, sio.eio.handlers["message"] = wrapped
        crowd.kill()
        await crowd.wait()
    if profile:
        for mode, profiler in profiles.items():
            profiler.dump_stats(f"{profile}.{mode}.pstats")
            Path(f"{profile}.{mode}.beats").write_text(str(counted[mode]))  # noqa: ASYNC240
    return {mode: [statistics.median(values), *values] for mode, values in results.items()}


_PLACES = (
    ("heartbeat_monitor", "heartbeat_monitor (adapter, hub, tracker; SocketIOServer)"),
    ("/socketio/", "python-socketio"),
    ("/engineio/", "python-engineio"),
    ("/uvicorn/", "uvicorn + websockets"),
    ("/websockets/", "uvicorn + websockets"),
    ("/asyncio/", "asyncio (tasks, futures, callbacks, selector)"),
    ("selectors.py", "asyncio (tasks, futures, callbacks, selector)"),
    ("json", "json"),
)


def breakdown(prefix: str) -> dict[str, dict[str, float]]:
    """Where each mode's profiled CPU went, by package, in microseconds per beat."""
    import pstats

    found: dict[str, dict[str, float]] = {}
    for mode in ("plain", "adapter"):
        beats = int(Path(f"{prefix}.{mode}.beats").read_text())
        stats: Any = pstats.Stats(f"{prefix}.{mode}.pstats")
        places: dict[str, float] = {}
        for (filename, _, _), (_, _, own, _, _) in stats.stats.items():
            place = next((name for key, name in _PLACES if key in filename), "other (C calls)")
            places[place] = places.get(place, 0.0) + own / beats * 1e6
        found[mode] = dict(sorted(places.items(), key=lambda item: -item[1]))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--e2e",
        action="store_true",
        help="only: two real servers (plain, adapter) at once, socket.io-client load, CPU/beat",
    )
    parser.add_argument(
        "--capacity",
        action="store_true",
        help="only: clients at 1 beat/s each server holds with median lateness < 50 ms",
    )
    parser.add_argument(
        "--switch",
        action="store_true",
        help="only: one server, the adapter switched on and off (ABBA); see --profile",
    )
    parser.add_argument(
        "--memory", action="store_true", help="only: bytes per connection (tracemalloc)"
    )
    parser.add_argument(
        "--sizes",
        type=lambda text: tuple(int(x) for x in text.split(",")),
        default=(10_000, 14_000, 20_000),
        help="connection counts for --memory",
    )
    parser.add_argument(
        "--profile",
        metavar="PREFIX",
        help="with --switch: cProfile each mode's windows into PREFIX.<mode>.pstats",
    )
    args = parser.parse_args(argv)
    if args.memory:
        print(
            "connections | plain python-socketio B | with adapter B | added B | "
            "of which tracker B | added without tracker B"
        )
        for clients, row in memory(args.sizes).items():
            print(
                f"{int(clients):>11,} | {row['plain_B']:23.0f} | {row['adapter_B']:14.0f} | "
                f"{row['added_B']:7.0f} | {row['tracker_B']:18.0f} | "
                f"{row['added_without_tracker_B']:23.0f}"
            )
        return 0
    if args.e2e or args.capacity:
        from . import _socketio_e2e

        if not _socketio_e2e.available():
            print("needs node and tests/js/node_modules (cd tests/js && npm ci)")
            return 1
    if args.e2e:
        found = _socketio_e2e.measure(clients=min(args.clients, 500))
        print(json.dumps(found))
        for mode, value in found["us_per_beat"].items():
            windows = " ".join(f"{v:.0f}" for v in found["us_per_beat_windows"][mode])
            print(f"e2e {mode:>8}: median {value:6.1f} us server CPU per beat ({windows})")
        low, high = found["ratio_range"]
        print(
            f"e2e adapter / plain python-socketio (no-op handler): {found['ratio_median']:.2f}x "
            f"(windows {low:.2f}-{high:.2f}x); load average {os.getloadavg()}"
        )
        return 0
    if args.capacity:
        found = _socketio_e2e.capacity()
        print(json.dumps(found))
        for mode, row in found.items():
            print(f"capacity {mode:>8}: {row['capacity']} clients at 1 beat/s")
        print(f"load average {os.getloadavg()}")
        return 0
    if args.switch:
        e2e = asyncio.run(
            _e2e(min(args.clients, 300), windows=12, window=3.0, profile=args.profile)
        )
        for mode, (median, *values) in e2e.items():
            runs = " ".join(f"{value:.0f}" for value in values)
            print(f"switch {mode:>16}: median {median:6.1f} us server CPU per beat ({runs})")
        ratio = e2e["adapter"][0] / e2e["plain"][0]
        print(f"switch: adapter vs plain python-socketio with a handler: {ratio:.2f}x server CPU")
        if args.profile:
            print("where the profiled CPU went, us per beat (the profiler inflates each call):")
            for mode, places in breakdown(args.profile).items():
                total = sum(places.values())
                print(f"  {mode}: {total:.0f}")
                for place, value in places.items():
                    print(f"    {value:6.1f}  {place}")
        return 0
    result = measure(clients=args.clients, rounds=args.rounds, repeat=args.repeat)
    for mode, value in result["us_per_beat"].items():
        print(f"{mode:>16}: {value:7.2f} us server CPU per heartbeat")
    print(f"adapter vs plain handler:           {result['adapter_vs_plain']:+.1%}")
    print(f"adapter + handler vs plain handler: {result['adapter_plus_handler_vs_plain']:+.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
