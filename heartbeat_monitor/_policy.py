"""Policies: how a peer's beat history becomes a deadline, in closed form.

A policy never runs on a timer. The wheel asks it for the peer's timeout (time
from the last beat to the deadline) when the peer is placed or re-checked, so
the beat path stays O(1) and nothing is re-evaluated per check interval.

* :class:`FixedTimeout` — silent for more than ``seconds``.
* :class:`MissedBeats` — silent for more than ``misses`` heartbeat intervals
  (the source article's rule: ``misses=2``).
* :class:`PhiAccrual` — Hayashibara et al.'s accrual detector as Akka/Pekko
  implement it: phi(t) = -log10(1 - F(t)), F the normal CDF (logistic
  approximation) of the inter-beat intervals, with the mean shifted by an
  acceptable pause. Instead of evaluating phi on a timer we solve phi(t) =
  threshold for t, which is a depressed cubic (Cardano): one ``cbrt`` per
  re-check.

Detection time for steady 1 s beats (time from the last beat to expiry):
``FixedTimeout(s)``: ``s``; ``MissedBeats(1, 2)``: 2 s; ``PhiAccrual()`` with
Akka's defaults (threshold 8, min_std 0.1 s, acceptable_pause 3 s): 4.52 s.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Hashable
from typing import Protocol, final, runtime_checkable

from ._errors import ConfigurationError
from ._validate import positive

__all__ = (
    "FixedTimeout",
    "History",
    "MissedBeats",
    "PeerPolicies",
    "PhiAccrual",
    "PhiHistory",
    "Policy",
    "StatefulPolicy",
    "as_policy",
)

# The logistic approximation of the standard normal CDF that Akka uses:
#   1 - F(y) ~= e / (1 + e),  e = exp(-y * (A + B * y * y))
_A = 1.5976
_B = 0.070566
#: A detection time is never below this (a deadline must lie after the beat).
_MIN_TIMEOUT = 1e-6
_LN10 = math.log(10.0)


@runtime_checkable
class Policy(Protocol):
    """Turns a peer's beats into a timeout. Stateless policies have one fixed timeout."""

    @property
    def timeout(self) -> float:
        """Seconds from the last beat to the deadline (for stateful ones: before any history)."""
        ...


@runtime_checkable
class History(Protocol):
    """One peer's state under a :class:`StatefulPolicy`."""

    def record(self, interval: float) -> None:
        """A beat came ``interval`` seconds after the previous one."""
        ...

    def timeout(self) -> float:
        """Seconds from the last beat to the deadline, given what was recorded."""
        ...


@runtime_checkable
class StatefulPolicy(Policy, Protocol):
    """A policy whose deadline depends on each peer's history of beats."""

    def new_history(self) -> History: ...


@final
class FixedTimeout:
    """A peer silent for more than ``seconds`` expires."""

    __slots__ = ("_seconds",)

    def __init__(self, seconds: float) -> None:
        self._seconds = positive("FixedTimeout seconds", seconds, "")

    @property
    def timeout(self) -> float:
        return self._seconds

    def __repr__(self) -> str:
        return f"FixedTimeout({self._seconds!r})"


@final
class MissedBeats:
    """A peer that misses ``misses`` consecutive heartbeat intervals expires.

    ``MissedBeats(5, 2)`` is the source article's rule: beats every 5 s, gone
    after more than 10 s of silence. ``misses`` may be fractional.
    """

    __slots__ = ("_interval", "_misses")

    def __init__(self, interval: float, misses: float = 2) -> None:
        self._interval = positive("MissedBeats interval", interval, "")
        self._misses = positive("MissedBeats misses", misses, "")

    @property
    def interval(self) -> float:
        return self._interval

    @property
    def misses(self) -> float:
        return self._misses

    @property
    def timeout(self) -> float:
        return self._interval * self._misses

    def __repr__(self) -> str:
        return f"MissedBeats(interval={self._interval!r}, misses={self._misses!r})"


@final
class PhiAccrual:
    """The phi accrual failure detector, with a closed-form deadline.

    Parameters follow Akka's ``PhiAccrualFailureDetector``: ``threshold`` (phi
    at which the peer expires), ``min_std`` (floor on the standard deviation, so
    perfectly regular beats do not make the detector hair-triggered),
    ``acceptable_pause`` (added to the mean: pauses that short are never
    suspicious), ``max_samples`` (window of intervals kept; mean and variance
    are running sums over it, O(1) per beat) and ``expected_interval`` (the
    bootstrap estimate before any interval is seen: mean = expected, std =
    expected / 4, as Akka seeds its history).
    """

    __slots__ = ("acceptable_pause", "expected_interval", "max_samples", "min_std", "threshold")

    def __init__(
        self,
        threshold: float = 8.0,
        *,
        min_std: float = 0.1,
        acceptable_pause: float = 3.0,
        max_samples: int = 200,
        expected_interval: float = 1.0,
    ) -> None:
        self.threshold = positive("PhiAccrual threshold", threshold, "")
        self.min_std = positive("PhiAccrual min_std", min_std, "")
        if not (math.isfinite(acceptable_pause) and acceptable_pause >= 0):
            raise ConfigurationError(
                "PhiAccrual acceptable_pause must be a finite number >= 0, "
                f"not {acceptable_pause!r}"
            )
        self.acceptable_pause = float(acceptable_pause)
        if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 2:
            raise ConfigurationError(
                f"PhiAccrual max_samples must be an int >= 2, not {max_samples!r}"
            )
        self.max_samples = max_samples
        self.expected_interval = positive("PhiAccrual expected_interval", expected_interval, "")

    # -- the closed form ---------------------------------------------------------------------

    def phi(self, elapsed: float, mean: float, std: float) -> float:
        """phi after ``elapsed`` seconds of silence, Akka's formula (for checks and tests)."""
        mean += self.acceptable_pause
        std = max(std, self.min_std)
        y = (elapsed - mean) / std
        # Akka's -log10(e / (1 + e)) with e = exp(-z), computed without overflow:
        # it equals log10(1 + exp(z)), a softplus.
        z = y * (_A + _B * y * y)
        softplus = z + math.log1p(math.exp(-z)) if z > 0 else math.log1p(math.exp(z))
        return softplus / _LN10

    def detection_time(self, mean: float, std: float) -> float:
        """Silence after which phi reaches the threshold: solves phi(t) = threshold for t.

        For t above the (shifted) mean, phi(t) = threshold means
        e / (1 + e) = p with p = 10**-threshold, i.e. with y = (t - mean) / std:
        B*y**3 + A*y + ln(p / (1 - p)) = 0, a depressed cubic with one real root.
        """
        mean += self.acceptable_pause
        std = max(std, self.min_std)
        p = 10.0**-self.threshold
        # Both of Akka's branches (above and below the mean) reduce to e = p / (1 - p).
        y = _cardano(_A / _B, math.log(p / (1.0 - p)) / _B)
        return max(mean + y * std, _MIN_TIMEOUT)

    @property
    def timeout(self) -> float:
        """Detection time before any interval is seen (the bootstrap estimate)."""
        return self.detection_time(self.expected_interval, self.expected_interval / 4)

    def new_history(self) -> PhiHistory:
        return PhiHistory(self)

    def __repr__(self) -> str:
        return (
            f"PhiAccrual(threshold={self.threshold!r}, min_std={self.min_std!r}, "
            f"acceptable_pause={self.acceptable_pause!r}, max_samples={self.max_samples!r}, "
            f"expected_interval={self.expected_interval!r})"
        )


def _cardano(a: float, q: float) -> float:
    """The real root of y**3 + a*y + q = 0 for a > 0 (then there is exactly one)."""
    half_q = q / 2.0
    root = math.sqrt(half_q * half_q + (a / 3.0) ** 3)
    return math.cbrt(-half_q + root) + math.cbrt(-half_q - root)


@final
class PhiHistory:
    """A bounded window of inter-beat intervals with running sums (O(1) per beat)."""

    __slots__ = ("_count", "_next", "_policy", "_samples", "_sum", "_sum_sq", "_timeout")

    def __init__(self, policy: PhiAccrual) -> None:
        self._policy = policy
        self._samples = array("d", bytes(8 * policy.max_samples))
        self._count = 0
        self._next = 0
        self._sum = 0.0
        self._sum_sq = 0.0
        # Akka seeds the history with mean +- std around the expected interval.
        mean = policy.expected_interval
        std = mean / 4
        self.record(mean - std)
        self.record(mean + std)

    def record(self, interval: float) -> None:
        samples = self._samples
        i = self._next
        if self._count == len(samples):
            old = samples[i]
            self._sum -= old
            self._sum_sq -= old * old
        else:
            self._count += 1
        samples[i] = interval
        self._sum += interval
        self._sum_sq += interval * interval
        self._next = (i + 1) % len(samples)
        self._timeout = self._policy.detection_time(self.mean, self.std)

    @property
    def mean(self) -> float:
        return self._sum / self._count

    @property
    def std(self) -> float:
        mean = self._sum / self._count
        return math.sqrt(max(self._sum_sq / self._count - mean * mean, 0.0))

    def timeout(self) -> float:
        return self._timeout

    def phi(self, elapsed: float) -> float:
        return self._policy.phi(elapsed, self.mean, self.std)


def as_policy(value: float | Policy, name: str = "timeout") -> Policy:
    """A number means :class:`FixedTimeout`; a policy is checked and returned."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return FixedTimeout(positive(name, value))
    timeout = getattr(value, "timeout", None)  # a structural check: Protocol isinstance is slow
    if not isinstance(timeout, int | float) or not (math.isfinite(timeout) and timeout > 0):
        raise ConfigurationError(
            f"{name} must be a number of seconds > 0 or a policy, not {value!r}"
        )
    return value  # type: ignore[return-value]


def is_stateful(policy: Policy) -> bool:
    """Whether ``policy`` is a :class:`StatefulPolicy` (a cheap structural check: a runtime
    Protocol ``isinstance`` costs ~20 us, far too much for every ``track``)."""
    return callable(getattr(policy, "new_history", None))


@final
class PeerPolicies:
    """The tracker's default policy, and the peers with a timeout or a history of their own."""

    __slots__ = ("default", "histories", "stateful", "timeout", "timeouts")

    def __init__(self, default: Policy) -> None:
        self.default = default
        #: The default timeout (for a stateful policy: before any history).
        self.timeout = default.timeout
        self.stateful = is_stateful(default)
        #: key -> timeout, only for peers whose fixed timeout is not the default.
        self.timeouts: dict[Hashable, float] = {}
        #: key -> beat history, only for peers under a stateful policy.
        self.histories: dict[Hashable, History] = {}

    def assign(self, key: Hashable, timeout: float | Policy | None) -> tuple[float, bool]:
        """Give ``key`` ``timeout`` (``None``: the default), with a fresh history if stateful.

        Returns its timeout now, and whether it is its own (not the default fixed one).
        A bad ``timeout`` raises :class:`ConfigurationError` before anything changes.
        """
        if timeout is None:
            policy, stateful = self.default, self.stateful
        else:
            policy = as_policy(timeout)
            stateful = is_stateful(policy)
        if stateful and not self.stateful:
            raise ConfigurationError(
                f"a per-peer {policy!r} needs a tracker whose default policy is stateful "
                "too (its beats record the history the policy reads)"
            )
        if stateful:
            history = self.histories[key] = policy.new_history()  # type: ignore[attr-defined]
            self.timeouts.pop(key, None)
            return history.timeout(), True
        if self.histories:
            self.histories.pop(key, None)
        own = policy.timeout
        if own == self.timeout:
            if self.timeouts:
                self.timeouts.pop(key, None)
            return own, False
        self.timeouts[key] = own
        return own, True

    def timeout_of(self, key: Hashable) -> float:
        history = self.histories.get(key) if self.histories else None
        if history is not None:
            return history.timeout()
        return self.timeouts.get(key, self.timeout)

    def forget(self, key: Hashable) -> None:
        if self.timeouts:
            self.timeouts.pop(key, None)
        if self.histories:
            self.histories.pop(key, None)
