"""Peers expiring at once on the real clock: how long is the event loop blocked, GC on?

Run in a process of its own (``python -m benchmarks._mass --peers 1000000``), so
that the garbage collector sees what a server embedding the monitor has, not the
other contenders' millions of objects. The garbage collector stays on. A
:class:`~heartbeat_monitor.HeartbeatMonitor` (asyncio, real clock) tracks
``--peers`` keys at once; none of them ever beats, so they all reach their
deadline together. Meanwhile:

* a probe task sleeps 1 ms in a loop and records how late it wakes (the longest
  time anything held the event loop, plus the loop's own timer slack), and how
  much CPU time the process's thread spent between two of its turns (the same
  block, without the time other processes on a shared machine took the core);
* ``gc.callbacks`` time every collection, by generation (wall and thread CPU).

Peers are tracked in batches of 2,000 with a turn of the event loop between
them, as connections arrive (one loop tracking a million keys would block the
loop for a second, and the driver's overload guard would rightly stretch every
deadline by that). The window starts once every peer is tracked and ends when
the last one has expired.
Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import time
from typing import Any

from heartbeat_monitor import Expired, HeartbeatMonitor

from ._contenders import quiet_structlog
from ._workloads import peer_keys

__all__ = ("measure",)

PROBE_PERIOD = 0.001
#: Peers tracked between two turns of the event loop while the crowd connects.
_TRACK_BATCH = 2_000


class _GcTimer:
    """Times every collection through ``gc.callbacks``: (wall, thread CPU) seconds."""

    def __init__(self) -> None:
        self.started = (0.0, 0.0)
        self.by_generation: dict[int, list[tuple[float, float]]] = {0: [], 1: [], 2: []}
        self.recording = False

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = (time.perf_counter(), time.thread_time())
        elif self.recording:
            wall, cpu = self.started
            took = (time.perf_counter() - wall, time.thread_time() - cpu)
            self.by_generation[info["generation"]].append(took)


async def measure(
    peers: int, peer_timeout: float, resolution: float, max_block: float | None = None
) -> dict[str, Any]:
    """Expire ``peers`` at once; ``max_block`` is the driver's (``None``: its default)."""
    expired = 0
    latest = 0.0
    done = asyncio.Event()

    def on_expire(event: Expired) -> None:
        nonlocal expired, latest
        expired += 1
        latest = max(latest, event.late_by)
        if expired == peers:
            done.set()

    timer = _GcTimer()
    gc.callbacks.append(timer)
    worst = worst_cpu = 0.0
    first_expiry_at: float | None = None
    worst_during_expiry = worst_cpu_during_expiry = 0.0
    try:
        options: dict[str, Any] = {} if max_block is None else {"max_block": max_block}
        monitor = HeartbeatMonitor(
            peer_timeout, resolution=resolution, on_expire=on_expire, **options
        )
        async with monitor as m:
            keys = peer_keys("p", peers)
            for start in range(0, peers, _TRACK_BATCH):  # as connections arrive: in batches
                for key in keys[start : start + _TRACK_BATCH]:
                    m.track(key)
                await asyncio.sleep(0)
            del keys
            timer.recording = True
            started = time.perf_counter()
            loop = asyncio.get_running_loop()
            bound = started + peer_timeout * 3 + 60
            while not done.is_set() and time.perf_counter() < bound:
                before, cpu = loop.time(), time.thread_time()
                await asyncio.sleep(PROBE_PERIOD)
                late = loop.time() - before - PROBE_PERIOD
                busy = time.thread_time() - cpu  # what ran on the loop meanwhile, in CPU time
                worst, worst_cpu = max(worst, late), max(worst_cpu, busy)
                if expired and first_expiry_at is None:
                    first_expiry_at = time.perf_counter()
                if first_expiry_at is not None:
                    worst_during_expiry = max(worst_during_expiry, late)
                    worst_cpu_during_expiry = max(worst_cpu_during_expiry, busy)
            ended = time.perf_counter()
            timer.recording = False
    finally:
        gc.callbacks.remove(timer)
    full = timer.by_generation[2]
    every = [took for times in timer.by_generation.values() for took in times]
    return {
        "peers": peers,
        "timeout_s": peer_timeout,
        "resolution_s": resolution,
        "max_block_s": max_block,
        "gc_frozen": gc.get_freeze_count(),
        "expired": expired,
        "all_expired": expired == peers,
        "window_s": round(ended - started, 3),
        "expiry_span_s": round(ended - first_expiry_at, 3) if first_expiry_at else None,
        "probe_max_late_ms": worst * 1e3,
        "probe_max_late_during_expiry_ms": worst_during_expiry * 1e3,
        "probe_max_cpu_block_ms": worst_cpu * 1e3,
        "probe_max_cpu_block_during_expiry_ms": worst_cpu_during_expiry * 1e3,
        "max_late_by_ms": latest * 1e3,
        "gc_collections": {str(g): len(times) for g, times in timer.by_generation.items()},
        "gc_full_max_ms": max((wall for wall, _ in full), default=0.0) * 1e3,
        "gc_full_max_cpu_ms": max((cpu for _, cpu in full), default=0.0) * 1e3,
        "gc_any_max_cpu_ms": max((cpu for _, cpu in every), default=0.0) * 1e3,
        "load_average": [round(x, 2) for x in os.getloadavg()]
        if hasattr(os, "getloadavg")
        else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=1_000_000)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--resolution", type=float, default=0.1)
    parser.add_argument("--max-block", type=float, help="the driver's max_block (its default)")
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="gc.freeze() after start-up, as servers do to keep import-time objects out of "
        "every full collection",
    )
    args = parser.parse_args(argv)
    quiet_structlog()
    if args.gc_freeze:
        gc.collect()
        gc.freeze()
    result = asyncio.run(measure(args.peers, args.timeout, args.resolution, args.max_block))
    print(json.dumps(result))
    return 0 if result["all_expired"] else 1


if __name__ == "__main__":
    sys.exit(main())
