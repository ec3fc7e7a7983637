"""Simulated-time workloads, run in lockstep for every contender, with ground truth.

One :class:`FairClock` provides "time" for all contenders; it moves in ``step``
increments and, like ``time.monotonic()``, hands every reader a float object of
its own (a clock that hands every peer beating in a step the same object lets a
full scan walk one cache-hot float: it flatters the scan). Each step's beating
peers beat in a random order, not in the order they were tracked. At each step
the harness applies the schedule (joins, leaves, peers falling silent), delivers
the beats due at that step to every contender, then lets each contender do the
maintenance it says is due, timing every maintenance call in thread CPU time
(``time.thread_time_ns``: on a shared machine, wall time would charge preemption
by other processes to whichever contender was running). The order of the
contenders rotates every step, so machine noise hits them all alike.

The harness records each peer's true last beat, so every expiry is checked:

* **early** — declared strictly before the peer's true deadline (last beat + timeout),
  or declared for a peer that never fell silent;
* **missed** — a silent peer not declared expired within ``deadline + lateness
  bound + one step`` (the bound is the contender's own: its resolution or scan period);
* **duplicate** — declared twice; **after untrack** — declared after it left.

A contender with any of these is flagged as incorrect, not just timed.

The cyclic garbage collector stays on, as in production: a contender whose
structures make collections long pays for them.
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import final

from heartbeat_monitor import ManualClock

from ._contenders import (
    AsyncioTimers,
    Contender,
    FullScan,
    HeapDeadlines,
    MonitorContender,
    TrackerContender,
)

__all__ = (
    "SIM_CONTENDERS",
    "FairClock",
    "Outcome",
    "Schedule",
    "churn",
    "mass_expiry",
    "simulate",
    "steady",
)

#: Timeout, heartbeat interval (each peer beats every second) and resolution.
TIMEOUT = 10.0
INTERVAL = 1.0
RESOLUTION = 0.1
STEP = 0.01
#: Expiring less than this before the deadline is float rounding of the simulated clock
#: (asyncio itself fires a timer up to its clock resolution early), not an early expiry.
EARLY_TOLERANCE = 1e-6


@final
class FairClock:
    """Simulated time that hands each reader a float of its own, as ``time.monotonic()`` does.

    A :class:`~heartbeat_monitor.ManualClock` underneath (so the driver can subscribe to
    its moves); ``now()`` returns a fresh float equal to its time.
    """

    __slots__ = ("_clock",)

    def __init__(self, start: float = 0.0) -> None:
        self._clock = ManualClock(start)

    def now(self) -> float:
        return self._clock.now() + 0.0  # a new float object, the same value

    def advance(self, seconds: float) -> float:
        return self._clock.advance(seconds)

    def subscribe(self, callback: Callable[[], object]) -> Callable[[], None]:
        return self._clock.subscribe(callback)

    def __repr__(self) -> str:
        return f"FairClock(now={self._clock.now()!r})"


#: The simulated-time contenders, each built on the shared simulated clock.
SIM_CONTENDERS: tuple[Callable[[FairClock], Contender], ...] = (
    lambda clock: TrackerContender(TIMEOUT, resolution=RESOLUTION, clock=clock),
    lambda clock: MonitorContender(TIMEOUT, resolution=RESOLUTION, clock=clock),
    lambda clock: FullScan(
        TIMEOUT, clock.now, interval=INTERVAL, name=f"full scan @ interval ({INTERVAL:g} s)"
    ),
    lambda clock: FullScan(
        TIMEOUT, clock.now, interval=RESOLUTION, name=f"full scan @ resolution ({RESOLUTION:g} s)"
    ),
    lambda clock: AsyncioTimers(TIMEOUT, clock.now, simulated=True),
    lambda clock: HeapDeadlines(TIMEOUT, clock.now),
)


def peer_keys(prefix: str, count: int, start: int = 0) -> list[str]:
    """Keys shaped like Socket.IO session ids: short distinct strings."""
    return [f"{prefix}{i:07d}" for i in range(start, start + count)]


@dataclass(slots=True)
class Schedule:
    """What happens at which step; steps are ``STEP`` seconds of simulated time."""

    name: str
    peers: int
    steps: int
    #: First step of the measurement window (maintenance CPU, longest block).
    window_start: int
    #: Beat phase bins: peers in ``bins[s % len(bins)]`` beat at step ``s``.
    bins: list[list[Hashable]]
    initial: list[Hashable]
    joins: dict[int, list[Hashable]] = field(default_factory=dict)
    leaves: dict[int, list[Hashable]] = field(default_factory=dict)
    silences: dict[int, list[Hashable]] = field(default_factory=dict)


def _base(name: str, peers: int, seconds: float, window_from: float, seed: int) -> Schedule:
    rng = random.Random(seed)
    keys: list[Hashable] = list(peer_keys("p", peers))
    bins: list[list[Hashable]] = [[] for _ in range(round(INTERVAL / STEP))]
    for key in keys:
        bins[rng.randrange(1, len(bins))].append(key)
    for beating in bins:
        rng.shuffle(beating)  # a step's beats arrive in any order, not the tracking order
    steps = round(seconds / STEP)
    return Schedule(name, peers, steps, round(window_from / STEP), bins, keys)


def _silence(schedule: Schedule, keys: Iterable[Hashable], rng: random.Random) -> None:
    # Fall silent early enough that the expiry happens, with its lateness, before the end.
    last = schedule.steps - round((TIMEOUT + INTERVAL + 1.0) / STEP)
    for key in keys:
        schedule.silences.setdefault(rng.randrange(1, max(2, last)), []).append(key)


def steady(peers: int, *, seconds: float = 30.0, seed: int = 1) -> Schedule:
    """Every peer beats once per interval; 1% fall silent at random times."""
    schedule = _base("steady", peers, seconds, TIMEOUT + INTERVAL, seed)
    rng = random.Random(seed + 1)
    _silence(schedule, rng.sample(schedule.initial, max(1, peers // 100)), rng)
    return schedule


def churn(peers: int, *, seconds: float = 30.0, seed: int = 2) -> Schedule:
    """Steady state plus 1% of the peers leaving and as many new peers joining per second."""
    schedule = steady(peers, seconds=seconds, seed=seed)
    schedule.name = "churn"
    rng = random.Random(seed + 7)
    silent = {key for keys in schedule.silences.values() for key in keys}
    stable = [key for key in schedule.initial if key not in silent]
    rng.shuffle(stable)
    per_second = max(1, peers // 100)
    count = round(per_second * seconds)
    leaving = stable[:count]
    joining = peer_keys("j", count)
    for i, (gone, new) in enumerate(zip(leaving, joining, strict=True)):
        step = 1 + (i * (schedule.steps - 2)) // count
        schedule.leaves.setdefault(step, []).append(gone)
        schedule.joins.setdefault(step, []).append(new)
    _silence(schedule, rng.sample(joining, max(1, len(joining) // 100)), rng)
    return schedule


def mass_expiry(peers: int, *, seconds: float = 16.0, seed: int = 3) -> Schedule:
    """A partition: every peer goes silent at once, right after connecting (one deadline)."""
    schedule = _base("mass expiry", peers, seconds, 0.0, seed)
    schedule.bins = [[]]
    schedule.silences[1] = list(schedule.initial)
    return schedule


@dataclass(slots=True)
class Outcome:
    """One contender's result on one workload."""

    contender: str
    maintenance_ns: int = 0
    maintenance_calls: int = 0
    longest_block_ns: int = 0
    window_seconds: float = 0.0
    lateness: list[float] = field(default_factory=list)
    expired: int = 0
    early: int = 0
    missed: int = 0
    duplicate: int = 0
    after_untrack: int = 0
    checked: bool = True

    @property
    def correct(self) -> bool:
        return not (self.early or self.missed or self.duplicate or self.after_untrack)

    def summary(self) -> dict[str, object]:
        late = sorted(self.lateness)

        def pct(q: float) -> float | None:
            if not late:
                return None
            return late[min(len(late) - 1, round(q * (len(late) - 1)))] * 1e3

        return {
            "maintenance_cpu_ms_per_s": self.maintenance_ns / 1e6 / self.window_seconds
            if self.window_seconds
            else None,
            "maintenance_ms": self.maintenance_ns / 1e6,
            "maintenance_calls": self.maintenance_calls,
            "longest_block_ms": self.longest_block_ns / 1e6,
            "lateness_p50_ms": pct(0.5),
            "lateness_p99_ms": pct(0.99),
            "lateness_max_ms": late[-1] * 1e3 if late else None,
            "expired": self.expired,
            "early": self.early,
            "missed": self.missed,
            "duplicate": self.duplicate,
            "after_untrack": self.after_untrack,
            "correct": self.correct,
            "checked": self.checked,
        }


def simulate(
    schedule: Schedule,
    make: Iterable[Callable[[FairClock], Contender]],
    *,
    progress: Callable[[int], object] | None = None,
) -> list[Outcome]:
    """Run ``schedule`` for every contender built by ``make`` (on one shared clock)."""
    clock = FairClock(0.0)
    contenders = [factory(clock) for factory in make]
    outcomes = [Outcome(c.name) for c in contenders]
    expiries: list[list[tuple[Hashable, float, float]]] = [[] for _ in contenders]
    truth: dict[Hashable, float] = {}
    left: set[Hashable] = set()
    silent: set[Hashable] = set()
    for contender in contenders:
        for key in schedule.initial:
            contender.track(key)
    for key in schedule.initial:
        truth[key] = 0.0
    gc.collect()
    _run_steps(schedule, clock, contenders, outcomes, expiries, truth, left, silent, progress)
    end = clock.now()
    for contender, outcome, declared in zip(contenders, outcomes, expiries, strict=True):
        contender.close()
        outcome.window_seconds = (schedule.steps - schedule.window_start + 1) * STEP
        _check(outcome, declared, contender.lateness_bound, silent, left, truth, end)
    gc.collect()
    return outcomes


def _run_steps(
    schedule: Schedule,
    clock: FairClock,
    contenders: list[Contender],
    outcomes: list[Outcome],
    expiries: list[list[tuple[Hashable, float, float]]],
    truth: dict[Hashable, float],
    left: set[Hashable],
    silent: set[Hashable],
    progress: Callable[[int], object] | None,
) -> None:
    # Beat phase bins as dicts (key -> None): a str -> None dict is invisible to the garbage
    # collector, and a peer that stops is deleted in place, so the harness never hands the
    # collector a young million-key container whose traversal a contender would pay for.
    bins: list[dict[Hashable, None]] = [dict.fromkeys(keys) for keys in schedule.bins]
    phase_of = {key: phase for phase, keys in enumerate(bins) for key in keys}
    order = list(range(len(contenders)))
    perf = time.thread_time_ns
    window_start = schedule.window_start
    for step in range(1, schedule.steps + 1):
        now = clock.advance(STEP)
        for key in schedule.silences.get(step, ()):
            silent.add(key)
            bins[phase_of.get(key, 0)].pop(key, None)
        for key in schedule.leaves.get(step, ()):
            left.add(key)
            bins[phase_of.get(key, 0)].pop(key, None)
            for contender in contenders:
                contender.untrack(key)
        phase = step % len(bins)
        beating = bins[phase]
        joining = schedule.joins.get(step, ())
        for key in joining:
            beating[key] = None
            phase_of[key] = phase
        for key in beating:
            truth[key] = now
        order.append(order.pop(0))
        in_window = step >= window_start
        for i in order:
            contender = contenders[i]
            for key in joining:
                contender.track(key)
            contender.beat_many(beating)
            outcome = outcomes[i]
            while contender.due(now):
                t0 = perf()
                done = contender.maintain()
                spent = perf() - t0
                for key, at in done.expired:
                    expiries[i].append((key, at, truth[key]))
                if in_window:
                    outcome.maintenance_ns += spent
                    outcome.maintenance_calls += 1
                    block = spent if done.block_ns is None else done.block_ns
                    outcome.longest_block_ns = max(outcome.longest_block_ns, block)
        if progress is not None:
            progress(1)


def _check(
    outcome: Outcome,
    declared: list[tuple[Hashable, float, float]],
    bound: float | None,
    silent: set[Hashable],
    left: set[Hashable],
    truth: dict[Hashable, float],
    end: float,
) -> None:
    if bound is None:
        outcome.checked = False
        return
    slack = bound + STEP + 1e-6
    seen: set[Hashable] = set()
    on_time: set[Hashable] = set()
    for key, at, last in declared:
        if key in seen:
            outcome.duplicate += 1
            continue
        seen.add(key)
        deadline = last + TIMEOUT
        if key in left:
            outcome.after_untrack += 1
        elif key not in silent or at < deadline - EARLY_TOLERANCE:
            outcome.early += 1
        else:
            outcome.lateness.append(at - deadline)
            if at <= deadline + slack:
                on_time.add(key)
    outcome.expired = len(seen)
    for key in silent:
        if key not in on_time and truth[key] + TIMEOUT + slack < end:
            outcome.missed += 1
