"""The per-peer timing wheel that holds the watched peers (see ``_tracker.py``'s theory).

A bucket covers one ``resolution`` of time and is keyed by its absolute tick
number ``t``; it comes due at ``t * resolution``, strictly after every deadline
placed in it and at most one resolution after. Buckets live in a dict keyed by
tick, and the ticks that have one sit in a small heap (one entry per tick, not
per peer): no wheel "turn", so a timeout of a day costs what a second costs.

``watch`` maps each watched key to the tick of its bucket. An entry in a bucket
whose key maps to another tick, or to none, is stale (the peer was untracked,
expired or placed again since) and is skipped. The map holds ints, and the
buckets hold keys: neither makes the garbage collector visit a peer's objects.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Hashable
from typing import final

__all__ = ("Bucket", "Wheel")


@final
class Bucket(list[Hashable]):
    """The peers placed in one tick of the wheel (a list: appends are O(1))."""

    __slots__ = ("tick",)

    def __init__(self, tick: int) -> None:
        super().__init__()
        self.tick = tick


@final
class Wheel:
    """Watched peers by the tick of their next check."""

    __slots__ = ("buckets", "current", "resolution", "ticks", "watch")

    def __init__(self, resolution: float) -> None:
        self.resolution = resolution
        #: key -> tick of its bucket, for watched peers.
        self.watch: dict[Hashable, int] = {}
        #: tick -> bucket, and a heap of the ticks that have one.
        self.buckets: dict[int, Bucket] = {}
        self.ticks: list[int] = []
        #: The bucket that a check is part-way through, if any.
        self.current: Bucket | None = None

    def tick_after(self, deadline: float) -> int:
        """The first tick whose due time is strictly after ``deadline``."""
        resolution = self.resolution
        tick = math.floor(deadline / resolution) + 1
        while tick * resolution <= deadline:  # float rounding; at most once in practice
            tick += 1
        return tick

    def place(self, key: Hashable, deadline: float) -> None:
        """Watch ``key`` until its check at ``deadline`` (never before it, a tick after at most)."""
        tick = self.tick_after(deadline)
        bucket = self.buckets.get(tick)
        if bucket is None:
            bucket = self.buckets[tick] = Bucket(tick)
            heapq.heappush(self.ticks, tick)
        bucket.append(key)
        self.watch[key] = bucket.tick  # the bucket's own int: one object per tick, not per peer

    def due(self, now: float) -> Bucket | None:
        """The bucket to check at ``now`` (the one part-way, or the next due), or ``None``."""
        bucket = self.current
        if bucket is None:
            ticks = self.ticks
            if not ticks or ticks[0] * self.resolution > now:
                return None
            bucket = self.current = self.buckets.pop(heapq.heappop(ticks))
        return bucket

    def next_due(self) -> float | None:
        """When a bucket comes due next (``None``: no bucket)."""
        if self.current is not None:
            return self.current.tick * self.resolution
        return self.ticks[0] * self.resolution if self.ticks else None
