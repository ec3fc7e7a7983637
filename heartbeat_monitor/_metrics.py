"""What the monitor and the hub have seen, read in bulk: for Prometheus and the status page.

Theory of operation
===================

Nothing here runs per beat. The figures already exist as plain numbers where
the work is done: the hub's counters (``hub.beats``, ``hub.gone`` by reason,
``hub.refused`` by kind), the tracker's size and suspects, the storm brake,
the driver's ``loop_lag``. :class:`Metrics` reads them when asked — a
Prometheus scrape, a ``/status.json``, a sample for the status page's plots —
so a beat costs exactly what it cost before.

What has no counter of its own is measured on the rare events only:

* **detection latency**, from a peer's deadline to its end being announced:
  the monitor's :class:`~heartbeat_monitor.Expired` carries the deadline, the
  hub's :class:`~heartbeat_monitor.PeerGone` is the announcement; whichever of
  the two comes first waits for the other (a gated hub announces later);
* **self-pauses**: the driver's :class:`~heartbeat_monitor.Stalled` events;
* **loop lag**: a sampler task wakes every ``sample_interval`` seconds and
  records how late it woke (and the driver's lag when that was a new peak), so
  the histogram fills even while the driver sleeps with no peer due.

The Prometheus side (``_prometheus.py``) builds metric families from these
numbers at scrape time; ``prometheus_client`` is imported only then, so the
core never imports it and works without it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, final

import anyio
import anyio.abc
import structlog

from ._episode import Episode, PeerGone, Reason
from ._errors import ConfigurationError
from ._events import Expired, Stalled
from ._hub import PeerHub
from ._monitor import HeartbeatMonitor
from ._prometheus import (
    DETECTION_BUCKETS,
    LAG_BUCKETS,
    Figure,
    Histogram,
    cluster_nodes,
    families,
    prometheus_client,
    read_figures,
)
from ._status import Departure, StatusApp
from ._validate import positive

if TYPE_CHECKING:
    from ._status import ASGIApp

__all__ = ("Metrics",)

_logger = structlog.get_logger("heartbeat_monitor")

#: Expiries waiting for their announcement (or the reverse) are forgotten beyond this many
#: (a gate that never lets a departure through must not grow memory).
_MAX_WAITING = 10_000


@final
class Metrics:
    """The figures of one hub (or a bare monitor), read in bulk; nothing is counted per beat.

    ``Metrics(hub)`` subscribes to the hub's departures and the monitor's
    expiries and stalls (rare events only). Then, one line each:

    * ``metrics.register(registry)``: its collector on a ``prometheus_client``
      registry (default: the global one; needs the ``metrics`` extra);
    * ``metrics.app()``: an ASGI app serving ``/metrics``, ``/status`` (a live
      page), ``/status.json`` and ``/status/events`` (Server-Sent Events), to
      mount beside an application (``socketio.ASGIApp(sio, other_asgi_app=...)``);
    * ``async with metrics:`` (or ``await task_group.start(metrics.run)``): the
      sampler behind the loop-lag histogram and the page's plots.

    ``sample_interval``: seconds between samples; ``history``: samples kept for
    the plots; ``departures``: recent ends listed on the page. With a hub, its
    presence diffs and notices are counted too (``presence_diffs``, ``notices_sent``).
    """

    __slots__ = (
        "__weakref__",
        "_announced",
        "_changed",
        "_closed",
        "_deadlines",
        "_expired",
        "_lag_peak",
        "_last_beats",
        "_last_sample",
        "_latest_latency",
        "_sources",
        "_task_group",
        "_version",
        "departures",
        "detection_latency",
        "history",
        "hub",
        "loop_lag",
        "monitor",
        "sample_interval",
        "self_pauses",
        "started",
    )

    def __init__(
        self,
        source: PeerHub | HeartbeatMonitor,
        *,
        sample_interval: float = 1.0,
        history: int = 300,
        departures: int = 50,
        detection_buckets: Sequence[float] = DETECTION_BUCKETS,
        lag_buckets: Sequence[float] = LAG_BUCKETS,
    ) -> None:
        if isinstance(source, PeerHub):
            self.hub: PeerHub | None = source
            self.monitor = source.monitor
        elif isinstance(source, HeartbeatMonitor):
            self.hub = None
            self.monitor = source
        else:
            raise ConfigurationError(
                f"Metrics needs a PeerHub or a HeartbeatMonitor, not {source!r}"
            )
        self.sample_interval = positive("sample_interval", sample_interval)
        if history < 1 or departures < 1:
            raise ConfigurationError("history and departures must be >= 1")
        #: Seconds from each expired peer's deadline to its end being announced.
        self.detection_latency = Histogram(detection_buckets)
        #: How late the event loop woke a sleeping task, one observation per sample.
        self.loop_lag = Histogram(lag_buckets)
        #: Times the driver found its own loop stalled and granted grace (``Stalled``).
        self.self_pauses = 0
        #: The most recent ends, newest last.
        self.departures: deque[Departure] = deque(maxlen=departures)
        #: Samples for the plots: (monotonic time, beats per second, max detection latency or None).
        self.history: deque[tuple[float, float, float | None]] = deque(maxlen=history)
        #: Monotonic time this object was made (for uptime). Every time this class reports is
        #: ``time.monotonic()``: the page turns them into times of day with its own clock.
        self.started = time.monotonic()
        #: Figures of other parts (presence, a cluster): name -> (kind, read, label).
        self._sources: dict[str, tuple[str, Any, str | None]] = {}
        self._expired = 0
        self._deadlines: dict[tuple[Hashable, int], float] = {}
        self._announced: dict[tuple[Hashable, int], tuple[float, Departure]] = {}
        self._latest_latency: float | None = None
        self._last_beats = self.beats
        self._last_sample = time.monotonic()
        self._lag_peak = self.monitor.max_loop_lag
        self._changed: anyio.Event | None = None
        self._version = 0
        self._closed = False
        self.monitor.on_expire(self._on_expired)
        self.monitor.on_stall(self._on_stall)
        overload = self.monitor.overload  # its own figures, read at scrape time
        self.add_gauge("overload_lag_seconds", lambda: overload.lag)
        self.add_gauge("overload_stretch_seconds", lambda: overload.stretch)
        self.add_gauge("overload_shedding", lambda: int(overload.shedding))
        self.add_gauge("message_wait_seconds", lambda: overload.wait)
        self.add_gauge("message_wait_max_seconds", lambda: overload.max_wait)
        if self.hub is not None:
            self.hub.on_gone(self._on_gone)
            roster, told = self.hub.roster, self.hub._departures
            self.add_counter("presence_diffs", lambda: roster.diffs)
            self.add_counter("notices_sent", lambda: roster.notices + told.notices)

    # -- the rare events -------------------------------------------------------------------

    def _on_gone(self, event: PeerGone) -> None:
        departure = Departure(event, time.monotonic())
        self.departures.append(departure)
        if event.expired:
            key = (event.key, event.episode)
            deadline = self._deadlines.pop(key, None)
            now = self.monitor.clock.now()
            if deadline is None:  # the expiry comes next, in the same dispatch
                _remember(self._announced, key, (now, departure))
            else:  # a gated hub: the expiry came first
                self._latency(now - deadline, departure)
        self._notify()

    def _on_expired(self, event: Expired) -> None:
        episode = event.key
        if self.hub is None:
            self._expired += 1
            self._latency(event.late_by, None)
            self._notify()
            return
        if type(episode) is not Episode:
            return  # not this hub's key
        key = (episode.peer, episode.number)
        announced = self._announced.pop(key, None)
        if announced is None:
            _remember(self._deadlines, key, event.deadline)
        else:
            at, departure = announced
            self._latency(at - event.deadline, departure)

    def _latency(self, latency: float, departure: Departure | None) -> None:
        latency = max(latency, 0.0)
        self.detection_latency.observe(latency)
        if departure is not None:
            departure.latency = latency
        if self._latest_latency is None or latency > self._latest_latency:
            self._latest_latency = latency

    def _on_stall(self, event: Stalled) -> None:
        self.self_pauses += 1
        self._notify()

    def _notify(self) -> None:
        self._version += 1
        changed = self._changed
        if changed is not None:
            self._changed = None
            changed.set()

    @property
    def version(self) -> int:
        """Grows with every departure, stall and :meth:`close` (for live views)."""
        return self._version

    async def changed(self, seen: int, within: float) -> int:
        """Wait until :attr:`version` is past ``seen``, at most ``within`` seconds; return it."""
        with anyio.move_on_after(within):
            while self._version == seen:
                if self._changed is None:
                    self._changed = anyio.Event()
                await self._changed.wait()
        return self._version

    # -- figures of other parts ------------------------------------------------------------

    def add_counter(self, name: str, read: Callable[[], int]) -> None:
        """Expose ``read()`` (an int that only grows) as ``heartbeat_monitor_<name>_total``.

        For parts that keep their own counters (presence: ``presence_diffs``,
        ``notices_sent``); read at scrape time, like everything here.
        """
        self._add("counter", name, read, None)

    def add_gauge(
        self, name: str, read: Callable[[], float | Mapping[str, float]], *, label: str = ""
    ) -> None:
        """Expose ``read()`` as the gauge ``heartbeat_monitor_<name>``.

        With ``label``, ``read()`` returns ``{label value: number}`` (never a peer id).
        """
        self._add("gauge", name, read, label or None)

    def watch_cluster(self, cluster: Any) -> None:
        """``heartbeat_monitor_cluster_nodes{state="alive|fenced"}`` of a ``RedisCluster`` (or
        of a function returning it, ``None`` while there is none): see :func:`cluster_nodes`."""
        self.add_gauge("cluster_nodes", cluster_nodes(cluster), label="state")

    def _add(self, kind: str, name: str, read: Any, label: str | None) -> None:
        if not name.isidentifier() or not callable(read):
            raise ConfigurationError(f"add_{kind} needs a name and a callable, not {name!r}")
        self._sources[name] = (kind, read, label)

    def figures(self) -> dict[str, Figure]:
        """What :meth:`add_counter` and :meth:`add_gauge` added, read now: name -> figure."""
        return read_figures(self._sources)

    # -- reading ---------------------------------------------------------------------------

    @property
    def beats(self) -> int:
        """Beats passed to the monitor through the hub so far (0 without a hub)."""
        return self.hub.beats if self.hub is not None else 0

    def peers(self) -> dict[str, int]:
        """Tracked peers by state: ``alive``, ``suspect`` and ``held`` (by the storm brake).

        A suspect's expiry is held while the storm brake holds, so then every
        suspect counts as ``held``.
        """
        tracker = self.monitor.tracker
        suspects = tracker.suspects
        held = tracker.storm
        return {
            "alive": len(tracker) - suspects,
            "suspect": 0 if held else suspects,
            "held": suspects if held else 0,
        }

    def gone(self) -> Mapping[str, int]:
        """Ends so far, by reason."""
        if self.hub is not None:
            return self.hub.gone
        return {Reason.HEARTBEAT_TIMEOUT: self._expired} if self._expired else {}

    def refused(self) -> Mapping[str, int]:
        """Refusals of bad input so far, by kind."""
        return self.hub.refused if self.hub is not None else {}

    def snapshot(self) -> dict[str, object]:
        """Every figure, as the status page and ``/status.json`` show it."""
        monitor = self.monitor
        tracker = monitor.tracker
        return {
            "time": time.monotonic(),
            "started": self.started,
            "timeout": tracker.timeout,
            "resolution": tracker.resolution,
            "peers": self.peers(),
            "beats": self.beats,
            "gone": dict(self.gone()),
            "refused": dict(self.refused()),
            "detection_latency": self.detection_latency.as_dict(),
            "loop_lag": {
                "last": monitor.loop_lag,
                "max": monitor.max_loop_lag,
                **self.loop_lag.as_dict(),
            },
            "storm_active": tracker.storm,
            "self_pauses": self.self_pauses,
            "callback_failures": monitor.runner.failures,
            "figures": {name: figure.value for name, figure in self.figures().items()},
            "departures": [departure.as_dict() for departure in self.departures],
            "history": {
                "interval": self.sample_interval,
                "time": [sample[0] for sample in self.history],
                "beats_per_second": [sample[1] for sample in self.history],
                "detection_latency": [sample[2] for sample in self.history],
            },
        }

    # -- sampling --------------------------------------------------------------------------

    def sample(self, lag: float = 0.0) -> None:
        """Record one sample: beats per second since the last, latency, ``lag`` (seconds)."""
        now = time.monotonic()
        peak = self.monitor.max_loop_lag
        if peak > self._lag_peak:  # the driver woke later than ever: a stall between samples
            self._lag_peak = peak
            lag = max(lag, peak)
        self.loop_lag.observe(lag)
        beats = self.beats
        elapsed = now - self._last_sample
        rate = (beats - self._last_beats) / elapsed if elapsed > 0 else 0.0
        self._last_beats = beats
        self._last_sample = now
        latency, self._latest_latency = self._latest_latency, None
        self.history.append((time.monotonic(), rate, latency))

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Sample every ``sample_interval`` seconds until cancelled or :meth:`close`.

        Ending (either way) closes the live streams; running again reopens them.
        """
        interval = self.sample_interval
        self._closed = False
        task_status.started()
        try:
            while not self._closed:
                due = time.monotonic() + interval
                await anyio.sleep(interval)
                self.sample(max(time.monotonic() - due, 0.0))
        finally:
            self.close()

    def close(self) -> None:
        """Stop the sampler and end the live streams of the status page."""
        self._closed = True
        self._notify()

    @property
    def closed(self) -> bool:
        return self._closed

    async def __aenter__(self) -> Self:
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        await self._task_group.start(self.run)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self.close()
        self._task_group.cancel_scope.cancel()
        return await self._task_group.__aexit__(exc_type, exc, tb)

    # -- Prometheus ------------------------------------------------------------------------

    def collect(self) -> Iterator[Any]:
        """The metric families, built now (``prometheus_client``'s collector interface)."""
        return families(self)

    def register(self, registry: Any = None) -> Self:
        """Register this collector on ``registry`` (default: ``prometheus_client.REGISTRY``)."""
        client = prometheus_client()
        (client.REGISTRY if registry is None else registry).register(self)
        return self

    def app(self, *, registry: Any = None) -> ASGIApp:
        """An ASGI app: ``/metrics``, ``/status``, ``/status.json``, ``/status/events``.

        ``/metrics`` exposes ``registry`` (default: a registry of this collector
        alone); other paths answer 404, so it can sit behind another app.
        """
        return StatusApp(self, registry=registry)

    def __repr__(self) -> str:
        return f"<Metrics peers={self.peers()} gone={dict(self.gone())}>"


def _remember(waiting: dict[Any, Any], key: Any, value: Any) -> None:
    if len(waiting) >= _MAX_WAITING:
        del waiting[next(iter(waiting))]
    waiting[key] = value
