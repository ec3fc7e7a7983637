"""The table of last beats, and the sweep that lists the peers silent for too long.

One plain dict, ``key -> clock time of the last beat``, holds every tracked peer;
a beat writes one float into it (:meth:`BeatTable.beat`). A str -> float dict is
not tracked by the garbage collector, so a healthy peer costs the collector
nothing, and about 55 bytes in all.

A **sweep** lists the peers silent for more than ``reach`` seconds: a pass over
the dict at C level (``compress`` over ``map(lt, values)``), in chunks of
:data:`CHUNK` entries so that it never holds the event loop long. The tracker
puts what a sweep lists in its per-peer wheel (see ``_tracker.py`` for why this
is never early, never more than one resolution late, and exactly once).

A dict cannot be iterated across a change of its size, and tracks and untracks
happen between two chunks. So while a sweep is under way (a *window*), the dict
being swept (``base``) is frozen: beats and tracks go to a small dict of their
own (``last``, which the beat reads), untracks are noted in ``gone``, and all of
it is merged back into ``base`` when the sweep ends. Outside a window ``last is
base``. A sweep that fits in one call opens no window.

``reach`` is tuned at the start of each sweep from a sample of the peers'
silences: a longer reach means sweeps closer together (they come every
``span - reach``), a shorter one lists more healthy peers that the wheel then
checks for nothing. It picks the reach with the lowest expected cost per second.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Hashable, Iterator
from itertools import compress, islice, repeat
from typing import final

__all__ = ("CHUNK", "BeatTable")

#: Entries one step of a sweep examines at most (~0.1-0.5 ms of work).
CHUNK = 8192
#: At the end of a window, dicts this small are merged in one C call (~1 ms at most).
_MERGE_AT_ONCE = 32768
#: A sweep call stops once it listed this many peers (placing one in the wheel costs
#: ~0.5 us: a mass silence must not make one call place a whole chunk).
_LISTED = 1024
#: Silences sampled at the start of a sweep to tune its reach.
_SAMPLE = 1024
#: What watching a peer in the wheel costs, in sweep entries (~1.5 us vs ~50 ns, measured).
_WATCH_COST = 30.0

_lt, _add = operator.lt, operator.add


@final
class BeatTable:
    """Last beats of every tracked peer, and the chunked sweep over them.

    ``span`` is the check span of a peer with the default fixed timeout (its
    timeout, or its suspect time); ``None`` turns sweeps off (every peer is then
    watched in the wheel). ``reach`` is the first sweep's reach, before any
    sample. Times are the tracker's clock; nothing here reads a clock but the
    beat, through ``now``.
    """

    __slots__ = (
        "_chunk",
        "_duration",
        "_first",
        "_keys",
        "_left",
        "_values",
        "base",
        "gone",
        "joined",
        "last",
        "margin",
        "now",
        "reach",
        "resolution",
        "span",
        "sweep_at",
    )

    def __init__(
        self, now: Callable[[], float], *, span: float | None, resolution: float, reach: float
    ) -> None:
        self.now = now
        self.span = span
        self.resolution = resolution
        #: key -> last beat: every tracked peer (frozen while a sweep is under way).
        self.base: dict[Hashable, float] = {}
        #: Where beats go: ``base``, or during a window the peers beaten or tracked since.
        self.last = self.base
        #: During a window: keys of ``base`` untracked since it opened (``None``: no window).
        #: (A dict used as a set: a str -> None dict is invisible to the garbage collector.)
        self.gone: dict[Hashable, None] | None = None
        #: During a window: how many keys of ``last`` are not in ``base``.
        self.joined = 0
        self.margin = resolution
        self.reach = self._clamp(reach) if span is not None else 0.0
        #: When the next sweep is due (``None``: nobody to sweep).
        self.sweep_at: float | None = None
        self._first = 0.0
        self._duration = 0.0
        self._chunk = CHUNK
        self._keys: Iterator[Hashable] | None = None
        self._values: Iterator[float] = iter(())
        self._left = 0

    # -- the table ---------------------------------------------------------------------------

    def beat(self, key: Hashable) -> bool:
        """Record a beat now; ``False`` if ``key`` is not tracked (it is not added)."""
        last = self.last
        if key in last:
            last[key] = self.now()
            return True
        # During a window: the first beat of a peer still in the frozen ``base``.
        gone = self.gone
        if gone is not None and key in self.base and key not in gone:
            last[key] = self.now()
            return True
        return False

    def beat_at(self, key: Hashable, now: float) -> bool:
        """:meth:`beat` with the time read by the caller (one clock read for two uses)."""
        last = self.last
        if key in last:
            last[key] = now
            return True
        gone = self.gone
        if gone is not None and key in self.base and key not in gone:
            last[key] = now
            return True
        return False

    def get(self, key: Hashable) -> float | None:
        """The last beat of ``key``, or ``None`` if it is not tracked."""
        value = self.last.get(key)
        gone = self.gone
        if value is None and gone is not None and key not in gone:
            value = self.base.get(key)
        return value

    def put(self, key: Hashable, when: float) -> None:
        """Track ``key`` (or record a beat) at ``when``."""
        gone = self.gone
        if gone is None:
            self.base[key] = when
        else:
            last = self.last
            if key not in last:
                if key in self.base:
                    gone.pop(key, None)
                else:
                    self.joined += 1
            last[key] = when
        if self.sweep_at is None and self.span is not None:
            self.sweep_at = when + self.span - self.reach

    def drop(self, key: Hashable) -> bool:
        """Stop tracking ``key``; ``False`` if it was not tracked."""
        gone = self.gone
        if gone is None:
            if self.base.pop(key, None) is None:
                return False
            if not self.base:
                self.sweep_at = None
            return True
        in_base = key in self.base
        if self.last.pop(key, None) is not None:
            if in_base:
                gone[key] = None
            else:
                self.joined -= 1
            return True
        if in_base and key not in gone:
            gone[key] = None
            return True
        return False

    def __len__(self) -> int:
        gone = self.gone
        return len(self.base) if gone is None else len(self.base) - len(gone) + self.joined

    def __contains__(self, key: object) -> bool:
        if key in self.last:
            return True
        gone = self.gone
        return gone is not None and key in self.base and key not in gone

    def keys(self) -> list[Hashable]:
        gone = self.gone
        if gone is None:
            return list(self.base)
        base = self.base
        return [k for k in base if k not in gone] + [k for k in self.last if k not in base]

    # -- the sweep ---------------------------------------------------------------------------

    @property
    def sweeping(self) -> bool:
        """Whether a sweep is under way (it resumes at the next call of :meth:`sweep`)."""
        return self.gone is not None

    def cover(self) -> float | None:
        """A peer whose check deadline is at or after this needs no watching: a sweep lists it
        in time. ``None``: no sweep will (sweeps are off, or nobody is tracked)."""
        if self.gone is not None:
            assert self.span is not None
            return self._first + self.span - self.reach + self.margin
        if self.sweep_at is None:
            return None
        return self.sweep_at + self.margin

    def sweep(
        self, now: float, budget: float, out_of_time: Callable[[], bool] | None
    ) -> tuple[int, list[Hashable], list[float]]:
        """Sweep on, examining at most ``budget`` entries.

        Returns how many entries it examined, and the peers it listed (silent for
        more than ``reach - margin`` seconds as of ``now``) with their check
        deadlines (last beat + ``span``). ``out_of_time`` (if given) is asked
        after each chunk; with it, a call also stops once it listed ``_LISTED``.
        """
        span = self.span
        assert span is not None
        if self._keys is None and self.gone is None:
            base = self.base
            if not base:
                self.sweep_at = None
                return 0, [], []
            self._tune(now, span)
            self._first = now
            self._chunk = _LISTED  # grows to CHUNK after a chunk that lists few
            self._left = len(base)
            self._keys = iter(base)
            self._values = iter(base.values())
            # One call sweeps it all (no window) only if nothing can stop it half-way.
            done_now = budget >= self._left and (out_of_time is None or self._left <= self._chunk)
            if not done_now:
                self.gone = {}  # a window: the rest of this sweep runs in later calls
                self.last = {}
        keys: list[Hashable] = []
        examined = 0
        cut = now + self.margin - self.reach
        swept, swept_values = self._keys, self._values
        while swept is not None and self._left and examined < budget:
            size = int(min(self._chunk, self._left, budget - examined))
            before = len(keys)
            # Each key and each value is touched once; the few listed are looked up again.
            keys += compress(islice(swept, size), map(_lt, islice(swept_values, size), repeat(cut)))
            examined += size
            self._left -= size
            # About _LISTED listed per chunk: small chunks where many are silent at once.
            self._chunk = max(64, min(CHUNK, size * _LISTED // (len(keys) - before + 1)))
            if out_of_time is not None and (out_of_time() or len(keys) >= _LISTED):
                break
        assert self.gone is not None or not self._left, "a sweep left half-way needs a window"
        values = list(map(self.base.__getitem__, keys))
        if self.gone is not None:
            self._fresher(keys, values, cut)
        if swept is not None and not self._left:
            self._keys = None  # every entry examined
            self._values = iter(())
            self._duration = now - self._first
        merging = self._keys is None and self.gone is not None and examined < budget
        if merging and (out_of_time is None or not out_of_time()):
            examined += self._merge(budget - examined, out_of_time)
        if self._keys is None and self.gone is None:
            # Every peer not listed beat after ``first + margin - reach``: its deadline is at
            # or after ``first + span - reach + margin``, so the next sweep, done within its
            # margin of starting then, lists it in time.
            self.sweep_at = self._first + span - self.reach if self.base else None
        return examined, keys, list(map(_add, values, repeat(span)))

    def _fresher(self, keys: list[Hashable], values: list[float], cut: float) -> None:
        """In a window: drop listed peers untracked since it opened, or that beat since."""
        gone = self.gone
        assert gone is not None
        last = self.last
        kept = 0
        for key, value in zip(keys, values, strict=True):
            if key in gone:
                continue
            fresh = last.get(key)
            if fresh is not None:
                if fresh >= cut:
                    continue
                value = fresh
            keys[kept] = key
            values[kept] = value
            kept += 1
        del keys[kept:], values[kept:]

    def _merge(self, budget: float, out_of_time: Callable[[], bool] | None) -> int:
        """End the window, a chunk at a time: what was untracked leaves ``base``, what beat or
        was tracked moves in; returns the entries moved. The table reads right throughout."""
        gone, base, last = self.gone, self.base, self.last
        assert gone is not None
        moved = 0
        while (gone or len(last) > _MERGE_AT_ONCE) and moved < budget:
            for _ in range(int(min(CHUNK, budget - moved, len(gone) or len(last)))):
                if gone:
                    del base[gone.popitem()[0]]
                else:
                    key, value = last.popitem()
                    if key not in base:
                        self.joined -= 1
                    base[key] = value
                moved += 1
            if out_of_time is not None and out_of_time():
                return moved
        if not gone and len(last) <= _MERGE_AT_ONCE:
            base.update(last)  # one C call
            self.last = base
            self.gone = None
            self.joined = 0
        return moved

    def _clamp(self, reach: float) -> float:
        assert self.span is not None
        longest = self.span - max(self.resolution, self.span / 10)
        return max(min(reach, longest), min(2 * self.margin, longest))

    def _tune(self, now: float, span: float) -> None:
        """Pick this sweep's margin and reach (see the module's docstring)."""
        self.margin = min(max(self.resolution, 2 * self._duration), span / 4)
        margin = self.margin
        silences = sorted([now - t for t in islice(self.base.values(), _SAMPLE)])
        count = len(silences)
        shortest, longest = self._clamp(0.0), self._clamp(span)

        def cost(reach: float, listed: int) -> float:
            return (1.0 + _WATCH_COST * listed / count) / (span - reach)

        listed = sum(1 for s in silences if s > shortest - margin)
        best, best_cost = shortest, cost(shortest, listed)
        headroom = margin + self.resolution  # the sample's longest silence is not the crowd's
        for i, silence in enumerate(silences):
            reach = silence + headroom  # long enough not to list this peer, nor its like
            if reach <= shortest:
                continue
            if reach > longest:
                break
            here = cost(reach, count - 1 - i)
            if here < best_cost:
                best, best_cost = reach, here
        listed = sum(1 for s in silences if s > longest - margin)
        if cost(longest, listed) < best_cost:
            best = longest
        self.reach = best
