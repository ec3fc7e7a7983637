"""Peers expiring at once on the real clock: how long is the event loop blocked, GC on?

Run in a process of its own (``python -m benchmarks._mass --peers 1000000``), so
that the garbage collector sees what a server embedding the monitor has, not the
other contenders' millions of objects. The garbage collector stays on. A
:class:`~heartbeat_monitor.HeartbeatMonitor` (asyncio, real clock) tracks
``--peers`` keys at once; none of them ever beats, so they all reach their
deadline together. Meanwhile:

* a probe task sleeps 1 ms in a loop and records how late it wakes (the longest
  time anything held the event loop, plus the loop's own timer slack);
* ``gc.callbacks`` time every collection, by generation.

The window starts once every peer is tracked (tracking a million keys in one
loop is the caller's block, not ours) and ends when the last one has expired.
Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
from typing import Any

from heartbeat_monitor import Expired, HeartbeatMonitor

from ._contenders import quiet_structlog
from ._workloads import peer_keys

__all__ = ("measure",)

PROBE_PERIOD = 0.001


class _GcTimer:
    """Times every collection through ``gc.callbacks``."""

    def __init__(self) -> None:
        self.started = 0.0
        self.by_generation: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self.recording = False

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        elif self.recording:
            self.by_generation[info["generation"]].append(time.perf_counter() - self.started)


async def measure(peers: int, peer_timeout: float, resolution: float) -> dict[str, Any]:
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
    worst = 0.0
    first_expiry_at: float | None = None
    worst_during_expiry = 0.0
    try:
        async with HeartbeatMonitor(peer_timeout, resolution=resolution, on_expire=on_expire) as m:
            for key in peer_keys("p", peers):
                m.track(key)
            timer.recording = True
            started = time.perf_counter()
            loop = asyncio.get_running_loop()
            bound = started + peer_timeout * 3 + 60
            while not done.is_set() and time.perf_counter() < bound:
                before = loop.time()
                await asyncio.sleep(PROBE_PERIOD)
                late = loop.time() - before - PROBE_PERIOD
                worst = max(worst, late)
                if expired and first_expiry_at is None:
                    first_expiry_at = time.perf_counter()
                if first_expiry_at is not None:
                    worst_during_expiry = max(worst_during_expiry, late)
            ended = time.perf_counter()
            timer.recording = False
    finally:
        gc.callbacks.remove(timer)
    full = timer.by_generation[2]
    return {
        "peers": peers,
        "timeout_s": peer_timeout,
        "resolution_s": resolution,
        "expired": expired,
        "all_expired": expired == peers,
        "window_s": round(ended - started, 3),
        "expiry_span_s": round(ended - first_expiry_at, 3) if first_expiry_at else None,
        "probe_max_late_ms": worst * 1e3,
        "probe_max_late_during_expiry_ms": worst_during_expiry * 1e3,
        "max_late_by_ms": latest * 1e3,
        "gc_collections": {str(g): len(times) for g, times in timer.by_generation.items()},
        "gc_full_max_ms": max(full) * 1e3 if full else 0.0,
        "gc_any_max_ms": max((max(t) for t in timer.by_generation.values() if t), default=0.0)
        * 1e3,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=1_000_000)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--resolution", type=float, default=0.1)
    args = parser.parse_args(argv)
    quiet_structlog()
    result = asyncio.run(measure(args.peers, args.timeout, args.resolution))
    print(json.dumps(result))
    return 0 if result["all_expired"] else 1


if __name__ == "__main__":
    sys.exit(main())
