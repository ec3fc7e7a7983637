"""The per-peer timing wheel that holds the watched peers (see ``_tracker.py``'s theory).

A bucket covers one ``resolution`` of time and is keyed by its absolute tick
number ``t``; it comes due at ``t * resolution``, strictly after every deadline
placed in it and at most one resolution after. Buckets live in a dict keyed by
tick, and the ticks that have one sit in a small heap (one entry per tick, not
per peer): no wheel "turn", so a timeout of a day costs what a second costs.

Each watched key maps to the tick of its bucket. An entry in a bucket whose key
maps to another tick, or to none, is stale (the peer was untracked, expired or
placed again since) and is skipped.

Built so that a million peers falling silent at once neither stalls the event
loop nor the garbage collector:

* the key -> tick map is split in :data:`SHARDS` dicts by the key's hash, so no
  single dict grows to a million entries (growing one rebuilds it whole, tens of
  milliseconds at that size); a str -> int dict is invisible to the collector;
* a sweep's list goes into a bucket as dicts (key -> None), one per batch: a
  dict of strs is invisible to the collector, where it would visit every key of
  a list at every collection (and every key of a tuple, once).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Hashable
from typing import final

__all__ = ("SHARDS", "Bucket", "Wheel")

#: How many dicts the key -> tick map is split in (a power of two).
SHARDS = 64
_MASK = SHARDS - 1


@final
class Bucket:
    """The peers placed in one tick: one by one in ``keys``, by a sweep in ``batches``."""

    __slots__ = ("batches", "keys", "tick")

    def __init__(self, tick: int) -> None:
        self.tick = tick
        self.keys: list[Hashable] = []
        self.batches: list[dict[Hashable, None]] = []

    def next_keys(self) -> list[Hashable]:
        """The keys to check next (``keys``, refilled from a batch when empty); may be empty."""
        keys = self.keys
        if not keys and self.batches:
            keys.extend(self.batches.pop())
        return keys


@final
class Wheel:
    """Watched peers by the tick of their next check."""

    __slots__ = ("buckets", "current", "resolution", "shards", "ticks")

    def __init__(self, resolution: float) -> None:
        self.resolution = resolution
        #: key -> tick of its bucket, for watched peers, in SHARDS dicts by ``hash(key)``.
        self.shards: list[dict[Hashable, int]] = [{} for _ in range(SHARDS)]
        #: tick -> bucket, and a heap of the ticks that have one.
        self.buckets: dict[int, Bucket] = {}
        self.ticks: list[int] = []
        #: The bucket that a check is part-way through, if any.
        self.current: Bucket | None = None

    def tick_of(self, key: Hashable) -> int | None:
        """The tick of ``key``'s bucket, or ``None`` if it is not watched."""
        return self.shards[hash(key) & _MASK].get(key)

    def unwatch(self, key: Hashable) -> None:
        self.shards[hash(key) & _MASK].pop(key, None)

    def __len__(self) -> int:
        return sum(map(len, self.shards))

    def tick_after(self, deadline: float) -> int:
        """The first tick whose due time is strictly after ``deadline``."""
        resolution = self.resolution
        tick = math.floor(deadline / resolution) + 1
        while tick * resolution <= deadline:  # float rounding; at most once in practice
            tick += 1
        return tick

    def _bucket(self, tick: int) -> Bucket:
        bucket = self.buckets.get(tick)
        if bucket is None:
            bucket = self.buckets[tick] = Bucket(tick)
            heapq.heappush(self.ticks, tick)
        return bucket

    def place(self, key: Hashable, deadline: float) -> None:
        """Watch ``key`` until its check at ``deadline`` (never before it, a tick after at most)."""
        bucket = self._bucket(self.tick_after(deadline))
        bucket.keys.append(key)
        self.shards[hash(key) & _MASK][key] = bucket.tick  # one int object per tick

    def place_many(self, keys: list[Hashable], deadlines: list[float]) -> None:
        """:meth:`place` each key not watched yet (a sweep's list), a batch per tick."""
        shards, resolution, floor = self.shards, self.resolution, math.floor
        by_tick: dict[int, tuple[Bucket, list[Hashable]]] = {}
        for key, deadline in zip(keys, deadlines, strict=True):
            shard = shards[hash(key) & _MASK]
            if key in shard:
                continue  # a timeout or history of its own, a suspect, or listed already
            tick = floor(deadline / resolution) + 1
            while tick * resolution <= deadline:
                tick += 1
            entry = by_tick.get(tick)
            if entry is None:
                entry = by_tick[tick] = (self._bucket(tick), [])
            shard[key] = entry[0].tick  # the bucket's own int
            entry[1].append(key)
        for bucket, group in by_tick.values():
            bucket.batches.append(dict.fromkeys(group))

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
