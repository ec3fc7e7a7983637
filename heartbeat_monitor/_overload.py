"""Overload: the server's own lag, the stretch it grants, and when it sheds new connections.

Theory of operation
===================

A liveness monitor tells dead peers from live ones. When the server itself is
the slow party, a live peer's beats wait in its backlog (socket buffers, the
event loop's ready queue) and look like silence. The monitor must know that and
act on it, as Lifeguard's local-health multiplier stretches suspicion when the
local node is unhealthy, and Cassandra's pause guard refuses to convict after
its own pause. :class:`OverloadGuard` does three things, all from one measure:

**Lag.** How old a beat is when the server records it, as far as the server's
own slowness goes. A probe task sleeps ``probe_interval`` seconds, then yields
``probe_hops`` more times to the event loop, and measures how late it is: in a
single-threaded server a beat read from a socket waits in the same ready queue,
and is handled a few passes of it later (with Socket.IO: uvicorn's read
callback, its queue, engine.io's reader and its ``wait_for``, then the task per
message: four hops after the read), so the probe's path is a beat's path.
The driver's own wake lag (``HeartbeatMonitor.loop_lag``) is measured too, for
the stretch only: it is the lag at the moment deadlines are checked, after a
stall the probe has not reported yet. Both feed :meth:`observe`.

**Waits** (where a transport can see them). A beat can also wait behind other
messages of its own connection: python-engineio takes one message per connection
every few passes of the loop, so a connection whose messages come faster than
that queues them, and that queue's age is no pass of the loop the probe can time.
A transport that sees a message's age when it is taken from such a queue reports it
to :meth:`observe_wait` (Socket.IO's server does: the age of each message in
uvicorn's queue); the stretch then covers that age plus the current lag (the path
the message still has to go), shedding counts the longest wait between two of
its measures as a lag (queueing shows before the loop's own lag does), and
:attr:`max_wait` shows the highest.

**Stretch** (local health). At each check, deadlines are moved later by
``stretch = min(lag_factor * recent_lag, max_stretch)``, where ``recent_lag`` is
the highest lag measured within the last ``window`` seconds. A live peer whose
beats merely waited in the backlog is not expired: its beat was at most the lag
late. A peer that really stopped is still expired, later by at most the stretch,
so by at most ``lag_factor`` times the lag measured (``lag_factor`` is 1 by
default) and never by more than ``max_stretch`` (default: the timeout, and at
least 5 s, so that a short timeout still rides out the lag of a burst or a long
garbage collection; the driver's stall guard takes over past it).

**Shedding.** Once most lags measured for ``shed_after`` seconds exceeded
``shed_lag`` (default 0.25 s: a loop that far behind is saturated, and the
lag of a saturated loop only grows, so shedding must start before the peers
already served are at risk), new connections are refused at once with ``"server
overloaded"`` (:meth:`refusal`), so that the peers already served stay served.
"Most" is an exponentially weighted share of the measures (each counts
``_WEIGHT``) above one half: an overloaded loop's lag is noisy, and one measure
under the limit does not mean it recovered, while one late wake is a stall, not
overload (a burst of handshakes, a long garbage collection): the stretch covers
it, and nobody is refused for it. Shedding stops once most lags measured for
``recover_after`` seconds stayed below ``recover_lag``. Each start and end is
logged (``heartbeat_monitor.overload_started`` / ``overload_ended``), and while
the lag stays above ``recover_lag`` a ``heartbeat_monitor.server_lagging`` line
is logged at most every ``log_every`` seconds.

Sans-I/O like the tracker: times are passed in (the monitor's clock), so tests
inject lag on a :class:`~heartbeat_monitor.ManualClock`.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Final, final

import structlog

from ._errors import ConfigurationError
from ._validate import optional_seconds, positive

__all__ = ("OVERLOADED", "OverloadGuard")

#: What a refused client is told (a Socket.IO ``connect_error`` message, a close reason).
OVERLOADED: Final = "server overloaded"

#: Default max_stretch: the timeout, and at least this (seconds).
_MIN_MAX_STRETCH = 5.0
#: How much each lag measure weighs in the shares that start and end shedding.
_WEIGHT = 0.3

_logger = structlog.get_logger("heartbeat_monitor")


@final
class OverloadGuard:
    """The server's own lag, the stretch of deadlines it grants, and load shedding.

    ``timeout`` is the monitor's (the defaults of ``max_stretch`` and ``window``
    follow it).
    ``shed_lag=None`` never sheds; ``lag_factor=0`` never stretches;
    ``probe_interval=None`` runs no probe task (the driver's own wakes still
    measure). Read :attr:`lag`, :attr:`max_lag`, :attr:`stretch`,
    :attr:`shedding`, :attr:`refused` or :meth:`snapshot` for stats and metrics.
    """

    __slots__ = (
        "_busy",
        "_high_since",
        "_last_log",
        "_over",
        "_quiet_since",
        "_recent",
        "_refused_at_start",
        "_shedding_since",
        "_waited",
        "lag",
        "lag_factor",
        "log_every",
        "max_lag",
        "max_stretch",
        "max_wait",
        "probe_hops",
        "probe_interval",
        "recover_after",
        "recover_lag",
        "refused",
        "samples",
        "shed_after",
        "shed_lag",
        "stretch",
        "wait",
        "waits",
        "window",
    )

    def __init__(
        self,
        timeout: float,
        *,
        shed_lag: float | None = 0.25,
        shed_after: float = 0.5,
        recover_lag: float | None = None,
        recover_after: float = 1.0,
        lag_factor: float = 1.0,
        max_stretch: float | None = None,
        window: float | None = None,
        probe_interval: float | None = 0.1,
        probe_hops: int = 4,
        log_every: float = 5.0,
    ) -> None:
        timeout = positive("timeout", timeout)
        #: Lag (seconds) past which new connections are refused (``None``: never).
        self.shed_lag = optional_seconds("shed_lag", shed_lag)
        #: ... once most lags measured for this long exceeded ``shed_lag``.
        self.shed_after = positive("shed_after", shed_after)
        if recover_lag is None:
            recover_lag = None if self.shed_lag is None else self.shed_lag / 2
        #: Shedding stops once the lag stayed below this for ``recover_after`` seconds.
        self.recover_lag = optional_seconds("recover_lag", recover_lag)
        if self.shed_lag is not None and (self.recover_lag or 0.0) > self.shed_lag:
            raise ConfigurationError(
                f"recover_lag ({recover_lag!r} s) must not exceed shed_lag ({shed_lag!r} s)"
            )
        self.recover_after = positive("recover_after", recover_after)
        if isinstance(lag_factor, bool) or not isinstance(lag_factor, int | float):
            raise ConfigurationError(f"lag_factor must be a number, not {lag_factor!r}")
        if not (math.isfinite(lag_factor) and lag_factor >= 0):
            raise ConfigurationError(f"lag_factor must be a finite number >= 0, not {lag_factor!r}")
        #: Deadlines stretch by this many times the recent lag (the local-health factor).
        self.lag_factor = float(lag_factor)
        #: The most a deadline is ever stretched, in seconds.
        if max_stretch is None:
            max_stretch = max(timeout, _MIN_MAX_STRETCH)
        self.max_stretch = positive("max_stretch", max_stretch)
        #: The stretch uses the highest lag measured within this many seconds.
        self.window = positive("window", timeout if window is None else window)
        #: Seconds between two probes of the event loop (``None``: no probe task).
        self.probe_interval = optional_seconds("probe_interval", probe_interval)
        if type(probe_hops) is not int or probe_hops < 0:
            raise ConfigurationError(f"probe_hops must be an int >= 0, not {probe_hops!r}")
        #: Passes of the event loop the probe waits after waking (a beat's path).
        self.probe_hops = probe_hops
        self.log_every = positive("log_every", log_every)
        #: The latest lag measured, and the highest ever (seconds; a message's wait plus the
        #: lag then counts for the highest, see observe_wait).
        self.lag = 0.0
        self.max_lag = 0.0
        #: How many lags were measured.
        self.samples = 0
        #: The latest age of a message taken from a connection's queue, the highest, how many.
        self.wait = 0.0
        self.max_wait = 0.0
        self.waits = 0
        #: The stretch of deadlines as last computed (seconds).
        self.stretch = 0.0
        #: Connections refused because the server was overloaded, so far.
        self.refused = 0
        #: (time, lag) samples of the last window, lags decreasing: the window's max first.
        self._recent: deque[tuple[float, float]] = deque()
        self._shedding_since: float | None = None
        #: Exponentially weighted shares of the measures above shed_lag / recover_lag.
        self._over = 0.0
        self._busy = 0.0
        self._high_since: float | None = None
        self._quiet_since: float | None = None
        self._refused_at_start = 0
        self._last_log = -math.inf
        #: The longest wait timed since the last shedding measure.
        self._waited = 0.0

    # -- measuring -------------------------------------------------------------------------

    def observe(self, lag: float, now: float, *, shed: bool = True) -> None:
        """One measure of the lag (seconds), taken at clock time ``now``.

        ``shed=False``: for the stretch only, not for shedding (the driver's wake
        lag, one pass of the loop where a beat takes several).
        """
        lag = max(float(lag), 0.0)
        self.lag = lag
        self.samples += 1
        if lag > self.max_lag:
            self.max_lag = lag
        recent = self._recent
        while recent and recent[-1][1] <= lag:
            recent.pop()
        recent.append((now, lag))
        if shed:
            # The longest wait timed since the last measure counts as much as the lag:
            # messages queueing is overload too, seen before the loop's own lag shows it.
            waited, self._waited = self._waited, 0.0
            self._shed(max(lag, waited), now)
        lagging = self.recover_lag is not None and lag > self.recover_lag
        if lagging and now - self._last_log >= self.log_every:
            self._last_log = now
            _logger.warning(
                "heartbeat_monitor.server_lagging",
                lag=round(lag, 6),
                recent_lag=round(self.recent_lag(now), 6),
                max_lag=round(self.max_lag, 6),
                stretch=round(min(self.lag_factor * self.recent_lag(now), self.max_stretch), 6),
                shedding=self.shedding,
                refused=self.refused,
            )

    def observe_wait(self, wait: float, now: float) -> None:
        """A message was taken from its connection's queue ``wait`` seconds after it was read.

        The message still goes the path the probe times, so the stretch covers
        ``wait`` plus the current lag. For shedding, the next measure of the lag
        counts as the longest wait since the last one, if that is longer. Cheap (it
        runs per message).
        """
        self.wait = wait
        self.waits += 1
        if wait > self._waited:
            self._waited = wait
        if wait > self.max_wait:
            self.max_wait = wait
        age = wait + self.lag
        recent = self._recent
        while recent and recent[-1][1] <= age:
            recent.pop()
        recent.append((now, age))
        if age > self.max_lag:
            self.max_lag = age

    def recent_lag(self, now: float) -> float:
        """The highest lag measured within the last ``window`` seconds before ``now``."""
        recent = self._recent
        horizon = now - self.window
        while recent and recent[0][0] < horizon:
            recent.popleft()
        return recent[0][1] if recent else 0.0

    def stretch_at(self, now: float) -> float:
        """How much later than its deadline a peer may be expired now (and remember it)."""
        stretch = min(self.lag_factor * self.recent_lag(now), self.max_stretch)
        self.stretch = stretch
        return stretch

    # -- shedding --------------------------------------------------------------------------

    @property
    def shedding(self) -> bool:
        """Whether new connections are being refused now."""
        return self._shedding_since is not None

    def refusal(self) -> str | None:
        """``None`` to admit a new connection; else the refusal reason (and it is counted).

        The reason starts with its kind, ``overloaded:``, as refusal reasons do;
        the client is told :data:`OVERLOADED`.
        """
        if self._shedding_since is None:
            return None
        self.refused += 1
        lag, limit = self.lag, self.shed_lag
        return f"overloaded: {OVERLOADED}, event-loop lag {lag:.3f} s (sheds past {limit} s)"

    def _shed(self, lag: float, now: float) -> None:
        shed_lag = self.shed_lag
        if shed_lag is None:
            return
        assert self.recover_lag is not None
        self._over += _WEIGHT * ((lag > shed_lag) - self._over)
        self._busy += _WEIGHT * ((lag >= self.recover_lag) - self._busy)
        if self._shedding_since is None:
            if self._over < 0.5:
                self._high_since = None
                return
            if self._high_since is None:
                self._high_since = now
            if now - self._high_since >= self.shed_after:
                self._shedding_since = now
                self._high_since = None
                self._quiet_since = None
                self._refused_at_start = self.refused
                _logger.warning(
                    "heartbeat_monitor.overload_started", lag=round(lag, 6), shed_lag=shed_lag
                )
            return
        if self._busy >= 0.5:
            self._quiet_since = None
            return
        if self._quiet_since is None:
            self._quiet_since = now
        if now - self._quiet_since >= self.recover_after:
            _logger.warning(
                "heartbeat_monitor.overload_ended",
                lag=round(lag, 6),
                lasted=round(now - self._shedding_since, 6),
                refused=self.refused - self._refused_at_start,
            )
            self._shedding_since = None
            self._quiet_since = None

    # -- reading ---------------------------------------------------------------------------

    def snapshot(self) -> dict[str, float | int | bool]:
        """Plain values for stats pages and metrics."""
        return {
            "lag": self.lag,
            "max_lag": self.max_lag,
            "stretch": self.stretch,
            "shedding": self.shedding,
            "refused": self.refused,
            "samples": self.samples,
            "max_wait": self.max_wait,
            "waits": self.waits,
        }

    def __repr__(self) -> str:
        return (
            f"<OverloadGuard lag={self.lag:.3f} max_lag={self.max_lag:.3f} "
            f"stretch={self.stretch:.3f} shedding={self.shedding} refused={self.refused}>"
        )
