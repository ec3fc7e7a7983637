"""The core tracker's targets, measured as paired ratios with their spread.

* **Upkeep**: ``LivenessTracker`` and the source article's full scan at equal
  precision (every ``resolution``) run the ``steady`` workload in lockstep on one
  :class:`~benchmarks._workloads.FairClock` (a float per beat, beats in random
  order, GC on), round after round with a new seed each; each round gives one
  ratio of maintenance CPU (thread time), and we report their median and range.
* **Beat**: the tracker's ``beat`` (and the monitor's) against the bare dict
  write, interleaved rounds in a shuffled order, GC on; one ratio per round.
* **Mass expiry**: :mod:`benchmarks._mass` in a process of its own (GC on, real
  clock, a probe task sleeping 1 ms): the longest loop block and the longest
  full collection while every peer expires at once.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from ._contenders import FullScan, TrackerContender
from ._micro import beat_rounds
from ._workloads import RESOLUTION, TIMEOUT, FairClock, simulate, steady

__all__ = ("core_figures", "mass_expiry_probe", "paired_beat", "paired_upkeep", "spread")

SCAN = f"full scan @ resolution ({RESOLUTION:g} s)"
FLOOR = "floor: dict write"


def spread(values: Sequence[float], digits: int = 2) -> dict[str, Any]:
    """Median, min and max of ``values`` (and the values, rounded)."""
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "rounds": [round(v, digits) for v in values],
    }


def _tracker(clock: FairClock) -> TrackerContender:
    return TrackerContender(TIMEOUT, resolution=RESOLUTION, clock=clock)


def _scan(clock: FairClock) -> FullScan:
    return FullScan(TIMEOUT, clock.now, interval=RESOLUTION, name=SCAN)


def paired_upkeep(peers: int, *, rounds: int, seconds: float) -> dict[str, Any]:
    """Maintenance CPU of the tracker and the full scan at equal precision, round by round."""
    ours: list[float] = []
    scan: list[float] = []
    correct = True
    for round_ in range(rounds):
        schedule = steady(peers, seconds=seconds, seed=100 + round_)
        outcomes = {o.contender: o for o in simulate(schedule, (_tracker, _scan))}
        tracker, full = outcomes["LivenessTracker"], outcomes[SCAN]
        correct = correct and tracker.correct and full.correct
        ours.append(tracker.maintenance_ns / 1e6 / tracker.window_seconds)
        scan.append(full.maintenance_ns / 1e6 / full.window_seconds)
    return {
        "peers": peers,
        "simulated_s": seconds,
        "tracker_cpu_ms_per_s": spread(ours, 3),
        "scan_cpu_ms_per_s": spread(scan, 1),
        "ratio": spread([s / o for s, o in zip(scan, ours, strict=True)], 1),
        "correct": correct,
    }


def paired_beat(peers: int, *, beats: int, rounds: int) -> dict[str, Any]:
    """ns per beat of the floor, the tracker and the monitor; each one's ratio to the floor."""
    names = [FLOOR, "LivenessTracker", "HeartbeatMonitor"]
    spent = beat_rounds(peers, beats=beats, rounds=rounds, names=names)
    floor = spent[FLOOR]
    return {
        "peers": peers,
        "ns": {name: spread(values, 1) for name, values in spent.items()},
        "ratio": {
            name: spread([v / f for v, f in zip(spent[name], floor, strict=True)])
            for name in names[1:]
        },
    }


def mass_expiry_probe(peers: int, *, timeout: float, resolution: float) -> dict[str, Any]:
    """:mod:`benchmarks._mass` in a fresh process; its JSON result."""
    command = [sys.executable, "-m", "benchmarks._mass", "--peers", str(peers)]
    command += ["--timeout", str(timeout), "--resolution", str(resolution)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode not in (0, 1) or not done.stdout.strip():
        raise RuntimeError(f"benchmarks._mass failed ({done.returncode}): {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def core_figures(largest: int, *, quick: bool) -> dict[str, Any]:
    """Everything above, at ``largest`` peers (small and fast with ``quick``)."""
    print(f"core: paired upkeep rounds, {largest:,} peers...", file=sys.stderr)
    upkeep = paired_upkeep(largest, rounds=2 if quick else 3, seconds=25.0 if quick else 60.0)
    print("core: paired beat rounds...", file=sys.stderr)
    beat = paired_beat(
        10_000 if quick else 100_000, beats=50_000 if quick else 200_000, rounds=5 if quick else 15
    )
    print(f"core: mass expiry on the real clock, {largest:,} peers...", file=sys.stderr)
    mass = mass_expiry_probe(
        largest, timeout=1.0 if quick else TIMEOUT, resolution=0.1 if quick else RESOLUTION
    )
    return {"upkeep": upkeep, "beat": beat, "mass_expiry": mass}
