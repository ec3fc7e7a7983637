"""Prometheus metric families from a :class:`~heartbeat_monitor.Metrics`, built at scrape time,
and the plain :class:`Histogram` it keeps (Prometheus semantics, no lock, no library).

``prometheus_client`` is imported here, inside the functions, when a scrape or a
registration asks for it: importing ``heartbeat_monitor`` never imports it.
Names as the metrics documentation gives them (``docs/observability.md``);
never a peer id as a label.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final, NamedTuple, final

import structlog

from ._errors import ConfigurationError

if TYPE_CHECKING:
    from ._metrics import Metrics

__all__ = (
    "DETECTION_BUCKETS",
    "INSTALL_HINT",
    "LAG_BUCKETS",
    "Figure",
    "Histogram",
    "cluster_nodes",
    "families",
    "prometheus_client",
    "read_figures",
)

_logger = structlog.get_logger("heartbeat_monitor")

#: Default buckets of ``heartbeat_monitor_detection_latency_seconds`` (seconds past the deadline).
DETECTION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Default buckets of ``heartbeat_monitor_loop_lag_seconds``.
LAG_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
#: What to install for the Prometheus exposition.
INSTALL_HINT: Final = "pip install 'aio-heartbeat-monitor[metrics]'"


@final
class Histogram:
    """Counts of observations per bucket (Prometheus semantics: ``value <= le``), sum, count."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Iterable[float]) -> None:
        self.bounds = tuple(sorted(float(bound) for bound in bounds))
        if not self.bounds or not all(math.isfinite(bound) for bound in self.bounds):
            raise ConfigurationError(f"histogram buckets must be finite numbers, not {bounds!r}")
        #: Observations per bucket (not cumulative); the last one is ``+Inf``.
        self.counts = [0] * (len(self.bounds) + 1)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.sum += value

    def cumulative(self) -> list[tuple[float, int]]:
        """``(le, count of values <= le)`` per bucket, ending with ``(inf, count)``."""
        total = 0
        out = []
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            total += count
            out.append((bound, total))
        return out

    def as_dict(self) -> dict[str, object]:
        return {
            "count": self.count,
            "sum": self.sum,
            "buckets": [["+Inf" if math.isinf(le) else le, n] for le, n in self.cumulative()],
        }


class Figure(NamedTuple):
    """A figure another part keeps (presence, a cluster), as read at scrape time."""

    kind: str  #: ``counter`` or ``gauge``
    label: str | None  #: the label's name when ``value`` is a dict
    value: float | dict[str, float]


def read_figures(sources: Mapping[str, tuple[str, Any, str | None]]) -> dict[str, Figure]:
    """Read every added figure now; one that fails is logged and left out."""
    out: dict[str, Figure] = {}
    for name, (kind, read, label) in sources.items():
        try:
            value = read()
            out[name] = Figure(kind, label, dict(value) if label else float(value))
        except Exception:
            _logger.exception("heartbeat_monitor.metrics.figure_failed", figure=name)
    return out


def cluster_nodes(cluster: Any) -> Callable[[], dict[str, float]]:
    """A reader of a Redis cluster node's view (``cluster``, or a function returning it):
    ``alive``, the nodes it believes alive, itself included; ``fenced``, 1 while it has
    fenced itself; nothing while there is no cluster (``None``)."""
    find = cluster if callable(cluster) and not hasattr(cluster, "nodes") else lambda: cluster

    def read() -> dict[str, float]:
        found = find()
        if found is None:
            return {}
        return {"alive": len(found.nodes()), "fenced": int(found.fenced)}

    return read


def prometheus_client() -> ModuleType:
    """The ``prometheus_client`` module, or a :class:`ConfigurationError` saying what to install."""
    try:
        import prometheus_client
    except ImportError:
        raise ConfigurationError(
            f"Prometheus metrics need prometheus_client: {INSTALL_HINT}"
        ) from None
    return prometheus_client


def families(metrics: Metrics) -> Iterator[Any]:
    """The metric families of ``metrics``, built now from its figures."""
    prometheus_client()
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    prefix = "heartbeat_monitor_"
    peers = GaugeMetricFamily(
        prefix + "peers", "Tracked peers by state (held: by the storm brake).", labels=["state"]
    )
    for state, count in metrics.peers().items():
        peers.add_metric([state], count)
    yield peers
    gone = CounterMetricFamily(prefix + "gone", "Episodes ended, by reason.", labels=["reason"])
    for reason, count in sorted(metrics.gone().items()):
        gone.add_metric([reason], count)
    yield gone
    yield _histogram(
        HistogramMetricFamily,
        prefix + "detection_latency_seconds",
        "Seconds from an expired peer's deadline to its end being announced.",
        metrics.detection_latency,
    )
    if metrics.hub is not None:
        yield CounterMetricFamily(
            prefix + "beats", "Heartbeats passed to the monitor.", value=metrics.beats
        )
    refused = CounterMetricFamily(
        prefix + "refused", "Refusals of bad input, by kind.", labels=["kind"]
    )
    for kind, count in sorted(metrics.refused().items()):
        refused.add_metric([kind], count)
    yield refused
    yield _histogram(
        HistogramMetricFamily,
        prefix + "loop_lag_seconds",
        "How late the event loop woke a sleeping task (sampled).",
        metrics.loop_lag,
    )
    yield GaugeMetricFamily(
        prefix + "storm_active",
        "1 while the storm brake holds expiries.",
        value=int(metrics.monitor.tracker.storm),
    )
    yield CounterMetricFamily(
        prefix + "self_pause",
        "Times the driver found its event loop stalled and granted grace.",
        value=metrics.self_pauses,
    )
    yield CounterMetricFamily(
        prefix + "callback_failures",
        "Callbacks that raised or overran.",
        value=metrics.monitor.runner.failures,
    )
    for name, figure in metrics.figures().items():
        about = f"{name.replace('_', ' ')}."
        family = CounterMetricFamily if figure.kind == "counter" else GaugeMetricFamily
        value = figure.value
        if not isinstance(value, dict):
            yield family(prefix + name, about, value=value)
        elif value:  # nothing to say yet (a cluster not joined): no family
            labelled = family(prefix + name, about, labels=[figure.label or "key"])
            for key, number in sorted(value.items()):
                labelled.add_metric([key], number)
            yield labelled


def _histogram(family: Any, name: str, documentation: str, histogram: Histogram) -> Any:
    buckets = [("+Inf" if math.isinf(le) else repr(le), n) for le, n in histogram.cumulative()]
    return family(name, documentation, buckets=buckets, sum_value=histogram.sum)
