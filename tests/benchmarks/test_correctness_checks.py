"""The benchmark's correctness checks catch a wrong contender (no timing asserts here)."""

from __future__ import annotations

from collections.abc import Callable, Hashable

from benchmarks._contenders import Contender, FullScan, HeapDeadlines, Maintained
from benchmarks._workloads import (
    SIM_CONTENDERS,
    TIMEOUT,
    FairClock,
    Outcome,
    Schedule,
    churn,
    mass_expiry,
    simulate,
    steady,
)


class EarlyScan(FullScan):
    """Declares peers expired 10% before their deadline."""

    def __init__(self, now: Callable[[], float]) -> None:
        super().__init__(TIMEOUT * 0.9, now, interval=0.1, name="early scan")


class ForgetfulHeap(HeapDeadlines):
    """Drops every other expiry on the floor."""

    def __init__(self, now: Callable[[], float]) -> None:
        super().__init__(TIMEOUT, now, name="forgetful heap")
        self._drop = False

    def maintain(self) -> Maintained:
        done = super().maintain()
        kept: list[tuple[Hashable, float]] = []
        for item in done.expired:
            self._drop = not self._drop
            if not self._drop:
                kept.append(item)
        return Maintained(kept)


class StutteringHeap(HeapDeadlines):
    """Declares each expiry twice."""

    def __init__(self, now: Callable[[], float]) -> None:
        super().__init__(TIMEOUT, now, name="stuttering heap")

    def maintain(self) -> Maintained:
        done = super().maintain()
        return Maintained(done.expired * 2)


class DeafToUntrack(FullScan):
    """Ignores untrack, so peers that left later expire."""

    def __init__(self, now: Callable[[], float]) -> None:
        super().__init__(TIMEOUT, now, interval=0.1, name="deaf to untrack")

    def untrack(self, key: Hashable) -> None:
        pass


def run(schedule: Schedule, *factories: Callable[[FairClock], Contender]) -> dict[str, Outcome]:
    return {outcome.contender: outcome for outcome in simulate(schedule, factories)}


def test_early_expiry_is_flagged():
    outcome = run(steady(300, seconds=25), lambda c: EarlyScan(c.now))["early scan"]
    assert outcome.early > 0
    assert not outcome.correct


def test_missed_expiry_is_flagged():
    outcome = run(mass_expiry(200), lambda c: ForgetfulHeap(c.now))["forgetful heap"]
    assert outcome.missed == 100
    assert not outcome.correct


def test_duplicate_expiry_is_flagged():
    outcome = run(mass_expiry(50), lambda c: StutteringHeap(c.now))["stuttering heap"]
    assert outcome.duplicate == 50
    assert not outcome.correct


def test_expiry_after_untrack_is_flagged():
    outcome = run(churn(300, seconds=25), lambda c: DeafToUntrack(c.now))
    assert outcome["deaf to untrack"].after_untrack > 0


def test_every_real_contender_is_correct_on_a_small_run():
    outcomes = run(churn(300, seconds=25), *SIM_CONTENDERS)
    assert len(outcomes) == len(SIM_CONTENDERS)
    for outcome in outcomes.values():
        assert outcome.correct, outcome.summary()
        assert outcome.expired > 0


def test_the_paired_upkeep_rounds_check_both_contenders():
    from benchmarks._core import paired_upkeep

    result = paired_upkeep(300, rounds=2, seconds=25)
    assert result["correct"]
    assert len(result["ratio"]["rounds"]) == 2
    assert result["ratio"]["min"] <= result["ratio"]["median"] <= result["ratio"]["max"]


def test_the_mass_expiry_probe_sees_every_peer_expire():
    import asyncio

    from benchmarks._mass import measure

    result = asyncio.run(measure(500, 0.2, 0.05))
    assert result["all_expired"]
    assert result["expired"] == 500
    assert result["probe_max_late_ms"] >= 0
