"""Real-clock measurements: the cost of one beat, and memory per peer.

Beat cost: every contender tracks the same ``peers`` keys on the default clock
(``time.monotonic``: a float of its own per beat), then beats a random sequence
of them (random order defeats the CPU cache as a million peers would).
Repetitions are round-robin across the contenders, in a shuffled order each
round, with the garbage collector on as in production, in thread CPU time (on a
shared machine, wall time would charge preemption to whoever was running); the
figure is the median round. :func:`beat_rounds` keeps every round, for paired
ratios with their spread.

Memory: ``tracemalloc`` around building a contender with ``peers`` tracked keys
and one beat each (keys are created before, so they are excluded).
"""

from __future__ import annotations

import gc
import random
import statistics
import time
import tracemalloc
from collections.abc import Callable, Hashable, Iterable, Sequence

from heartbeat_monitor import HeartbeatMonitor

from ._contenders import (
    AsyncioTimers,
    Contender,
    DictFloor,
    FullScan,
    HeapDeadlines,
    TrackerContender,
)
from ._workloads import INTERVAL, RESOLUTION, TIMEOUT, peer_keys

__all__ = ("BEAT_CONTENDERS", "beat_cost", "beat_rounds", "memory_per_peer")


class _MonitorBeat(TrackerContender):
    """``HeartbeatMonitor.beat`` (the tracker's bound method, re-exported), outside a loop."""

    def __init__(self) -> None:
        super().__init__(TIMEOUT, resolution=RESOLUTION, clock=None, name="HeartbeatMonitor")
        self.monitor = HeartbeatMonitor(TIMEOUT, resolution=RESOLUTION)
        self.tracker = self.monitor.tracker

    def track(self, key: Hashable) -> None:
        self.monitor.track(key)

    def beat_many(self, keys: Iterable[Hashable]) -> None:
        beat = self.monitor.beat
        for key in keys:
            beat(key)


#: name -> factory on the real clock
BEAT_CONTENDERS: dict[str, Callable[[], Contender]] = {
    "floor: dict write": lambda: DictFloor(TIMEOUT, time.monotonic),
    "LivenessTracker": lambda: TrackerContender(TIMEOUT, resolution=RESOLUTION, clock=None),
    "HeartbeatMonitor": _MonitorBeat,
    "full scan": lambda: FullScan(TIMEOUT, time.monotonic, interval=INTERVAL, name="full scan"),
    "asyncio timer per peer": lambda: AsyncioTimers(TIMEOUT, time.monotonic, simulated=False),
    "heapq + lazy deletion": lambda: HeapDeadlines(TIMEOUT, time.monotonic),
}


def beat_rounds(
    peers: int,
    *,
    beats: int,
    rounds: int,
    names: Sequence[str] | None = None,
    seed: int = 4,
    progress: Callable[[], object] | None = None,
) -> dict[str, list[float]]:
    """Nanoseconds per beat in each round, per contender (all of them, or ``names``)."""
    rng = random.Random(seed)
    keys: list[Hashable] = list(peer_keys("p", peers))
    sequence = [keys[rng.randrange(peers)] for _ in range(beats)]
    chosen = list(BEAT_CONTENDERS) if names is None else list(names)
    contenders = {name: BEAT_CONTENDERS[name]() for name in chosen}
    for contender in contenders.values():
        for key in keys:
            contender.track(key)
    spent: dict[str, list[float]] = {name: [] for name in contenders}
    gc.collect()
    for _ in range(rounds):
        rng.shuffle(chosen)
        for name in chosen:
            contender = contenders[name]
            t0 = time.thread_time_ns()  # CPU time: preemption by other processes is not a cost
            contender.beat_many(sequence)
            spent[name].append((time.thread_time_ns() - t0) / beats)
            if isinstance(contender, AsyncioTimers):
                contender.run_once()  # let asyncio purge its cancelled timers, untimed
            if progress is not None:
                progress()
    for contender in contenders.values():
        contender.close()
    return spent


def beat_cost(
    peers: int, *, beats: int, rounds: int, seed: int = 4, progress: Callable[[], object] | None
) -> dict[str, float]:
    """Median nanoseconds per beat over ``rounds`` for each contender, at ``peers`` keys."""
    spent = beat_rounds(peers, beats=beats, rounds=rounds, seed=seed, progress=progress)
    return {name: statistics.median(values) for name, values in spent.items()}


def memory_per_peer(name: str, peers: int) -> float:
    """Bytes per tracked peer (keys excluded) after tracking ``peers`` keys and one beat each."""
    keys: list[Hashable] = list(peer_keys("p", peers))
    make = BEAT_CONTENDERS[name]
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        contender = make()
        for key in keys:
            contender.track(key)
        contender.beat_many(keys)
        if isinstance(contender, AsyncioTimers):
            contender.run_once()
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    contender.close()
    return used / peers
