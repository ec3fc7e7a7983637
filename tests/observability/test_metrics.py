"""Metrics on the manual clock: what is counted, by what name, and the detection latency."""

from __future__ import annotations

import math
import subprocess
import sys
import time

import anyio
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from heartbeat_monitor import (
    ConfigurationError,
    Expired,
    HeartbeatMonitor,
    ManualClock,
    Metrics,
    PeerGone,
    PeerHub,
    Reason,
)
from heartbeat_monitor._prometheus import Histogram
from heartbeat_monitor.testing import MemoryClient
from tests.transports._util import until

from ._http import Samples, samples

pytestmark = pytest.mark.anyio

TIMEOUT = 2.0
RESOLUTION = 0.2


def scrape(metrics: Metrics) -> Samples:
    """Every sample of a scrape of ``metrics`` alone."""
    registry = CollectorRegistry()
    metrics.register(registry)
    return samples(generate_latest(registry).decode())


def connect(hub: PeerHub, count: int, prefix: str = "p") -> list[MemoryClient]:
    return [MemoryClient(hub, f"{prefix}{index}") for index in range(count)]


async def test_peers_gone_refused_and_beats_by_their_names() -> None:
    clock = ManualClock()
    async with HeartbeatMonitor(TIMEOUT, resolution=RESOLUTION, clock=clock) as monitor:
        hub = PeerHub(monitor)
        metrics = Metrics(hub)
        clients = connect(hub, 10)
        clock.advance(1.0)
        for client in clients[:7]:
            assert client.beat()
        clock.advance(1.5)  # the other 3 are past their deadline (2.0) by 0.5 s
        await monitor.wait_idle()
        assert metrics.peers() == {"alive": 7, "suspect": 0, "held": 0}
        clients[0].deliver(b"\xff not json")  # refused: malformed
        clients[1].disconnect()
        await monitor.wait_idle()

        samples = scrape(metrics)
        assert samples["heartbeat_monitor_peers"] == {
            (("state", "alive"),): 5,
            (("state", "suspect"),): 0,
            (("state", "held"),): 0,
        }
        assert samples["heartbeat_monitor_gone_total"] == {
            (("reason", Reason.HEARTBEAT_TIMEOUT),): 3,
            (("reason", "refused: malformed"),): 1,
            (("reason", Reason.CLIENT_DISCONNECT),): 1,
        }
        assert samples["heartbeat_monitor_refused_total"] == {(("kind", "malformed"),): 1}
        assert samples["heartbeat_monitor_beats_total"] == {(): 7}
        assert samples["heartbeat_monitor_storm_active"] == {(): 0}
        assert samples["heartbeat_monitor_self_pause_total"] == {(): 0}
        assert samples["heartbeat_monitor_detection_latency_seconds_count"] == {(): 3}
        assert "heartbeat_monitor_loop_lag_seconds_count" in samples
        # Never a peer id as a label.
        peers = {client.peer for client in clients}
        for values in samples.values():
            for labels in values:
                assert not peers & {value for _, value in labels}


async def test_detection_latency_is_from_the_deadline_to_the_announcement() -> None:
    clock = ManualClock()
    async with HeartbeatMonitor(TIMEOUT, resolution=RESOLUTION, clock=clock) as monitor:
        hub = PeerHub(monitor)
        metrics = Metrics(hub)
        expired: list[Expired] = []
        monitor.on_expire(expired.append)
        clients = connect(hub, 3)
        for client in clients:  # last beats at 0.13, 0.26, 0.39: each its own lateness
            clock.advance(0.13)
            client.beat()
        clock.advance(TIMEOUT + 0.05)  # every deadline passed, and its bucket is due
        await monitor.wait_idle()
        assert len(expired) == 3
        histogram = metrics.detection_latency
        assert histogram.count == 3
        # Announced in the same dispatch on a clock that did not move: latency == late_by.
        assert histogram.sum == pytest.approx(sum(event.late_by for event in expired))
        latencies = sorted(d.latency for d in metrics.departures if d.latency is not None)
        assert latencies == pytest.approx(sorted(event.late_by for event in expired))
        assert all(0 < latency <= TIMEOUT for latency in latencies)


async def test_a_gated_announcement_counts_until_it_is_announced() -> None:
    clock = ManualClock()
    async with HeartbeatMonitor(TIMEOUT, resolution=RESOLUTION, clock=clock) as monitor:
        hub = PeerHub(monitor)
        metrics = Metrics(hub)
        release = anyio.Event()

        async def gate(event: PeerGone) -> bool:
            await release.wait()
            return True

        hub.add_gate(gate)
        expired: list[Expired] = []
        monitor.on_expire(expired.append)
        connect(hub, 1)
        clock.advance(TIMEOUT + RESOLUTION)
        while not expired:
            await anyio.lowlevel.checkpoint()
        assert metrics.detection_latency.count == 0  # not announced yet
        clock.advance(1.0)  # the gate takes a second
        release.set()
        await monitor.wait_idle()
        assert metrics.detection_latency.count == 1
        assert metrics.detection_latency.sum == pytest.approx(expired[0].late_by + 1.0)


async def test_suspect_and_held_by_the_storm_brake() -> None:
    clock = ManualClock()
    async with HeartbeatMonitor(
        TIMEOUT, resolution=RESOLUTION, clock=clock, storm_share=0.5
    ) as monitor:
        hub = PeerHub(monitor)
        metrics = Metrics(hub)
        clients = connect(hub, 10)
        clock.advance(0.9)
        for client in clients[:8]:
            client.beat()
        clock.advance(0.35)  # 2 are past the suspect stage (half the timeout): no storm
        await monitor.wait_idle()
        assert metrics.peers() == {"alive": 8, "suspect": 2, "held": 0}
        assert scrape(metrics)["heartbeat_monitor_storm_active"] == {(): 0}
        clock.advance(1.2)  # the 8 are suspects too: a storm; every expiry is held
        await monitor.wait_idle()
        assert monitor.tracker.storm
        assert metrics.peers() == {"alive": 0, "suspect": 0, "held": 10}
        assert dict(metrics.gone()) == {}
        assert scrape(metrics)["heartbeat_monitor_storm_active"] == {(): 1}
        assert metrics.snapshot()["storm_active"] is True


async def test_a_bare_monitor_counts_its_expiries() -> None:
    clock = ManualClock()
    async with HeartbeatMonitor(TIMEOUT, resolution=RESOLUTION, clock=clock) as monitor:
        metrics = Metrics(monitor)
        monitor.track("a")
        monitor.track("b")
        clock.advance(TIMEOUT + 0.3)
        await monitor.wait_idle()
        assert dict(metrics.gone()) == {Reason.HEARTBEAT_TIMEOUT: 2}
        assert metrics.detection_latency.count == 2
        assert metrics.detection_latency.sum == pytest.approx(0.6)
        assert "heartbeat_monitor_beats_total" not in scrape(metrics)


async def test_a_real_stall_of_the_loop_counts_as_a_self_pause() -> None:
    async with HeartbeatMonitor(10.0, resolution=0.01, stall_limit=0.1) as monitor:
        metrics = Metrics(monitor)
        stalled = anyio.Event()
        monitor.on_stall(lambda event: stalled.set())
        monitor.track("a", timeout=0.5)
        await anyio.sleep(0.02)  # the driver is now asleep until the deadline, 0.5 s away
        time.sleep(1.0)  # noqa: ASYNC251 -- the point: the event loop stalls past that deadline
        with anyio.fail_after(5):
            await stalled.wait()
        assert metrics.self_pauses == 1
        assert scrape(metrics)["heartbeat_monitor_self_pause_total"] == {(): 1}
        assert monitor.max_loop_lag >= 0.4
        metrics.sample()  # the driver's new peak lag is sampled once, not again
        metrics.sample(0.0)
        assert metrics.loop_lag.count == 2
        assert metrics.loop_lag.sum == pytest.approx(monitor.max_loop_lag)


async def test_figures_of_other_parts_are_read_at_scrape_time() -> None:
    async with HeartbeatMonitor(TIMEOUT, clock=ManualClock()) as monitor:
        metrics = Metrics(PeerHub(monitor))
        sent = [0]
        metrics.add_counter("notices_sent", lambda: sent[0])  # replaces the hub's own
        sent[0] = 5
        assert scrape(metrics)["heartbeat_monitor_notices_sent_total"] == {(): 5}
        figures = metrics.snapshot()["figures"]
        assert isinstance(figures, dict)
        assert figures["notices_sent"] == 5
        with pytest.raises(ConfigurationError):
            metrics.add_counter("not a name", lambda: 0)
        cluster: list[object] = []
        metrics.watch_cluster(lambda: cluster[0] if cluster else None)
        assert "heartbeat_monitor_cluster_nodes" not in scrape(metrics)  # not joined yet

        class Node:  # what a RedisCluster shows: nodes() and fenced
            fenced = False

            def nodes(self) -> list[str]:
                return ["a", "b", "c"]

        cluster.append(Node())
        assert scrape(metrics)["heartbeat_monitor_cluster_nodes"] == {
            (("state", "alive"),): 3,
            (("state", "fenced"),): 0,
        }
        figures = metrics.snapshot()["figures"]
        assert isinstance(figures, dict)
        assert figures["cluster_nodes"] == {"alive": 3, "fenced": 0}


async def test_the_sampler_fills_the_history_and_the_lag_histogram() -> None:
    clock = ManualClock()
    async with HeartbeatMonitor(TIMEOUT, resolution=RESOLUTION, clock=clock) as monitor:
        hub = PeerHub(monitor)
        clients = connect(hub, 2)
        async with Metrics(hub, sample_interval=0.01) as metrics:
            for client in clients:
                client.beat()
            await until(lambda: len(metrics.history) >= 2)
            clock.advance(TIMEOUT + 0.5)  # both expire, 0.5 s late...
            await monitor.wait_idle()
            await until(lambda: metrics.history[-1][2] is not None)  # the next sample has it
            assert metrics.history[-1][2] == pytest.approx(0.5)
        assert metrics.closed
        assert metrics.loop_lag.count == len(metrics.history)
        async with metrics:  # a closed sampler runs again
            before = len(metrics.history)
            await until(lambda: len(metrics.history) > before)
        assert metrics.closed
        assert sum(sample[1] for sample in metrics.history) > 0  # the 2 beats, as a rate
        snapshot = metrics.snapshot()
        history = snapshot["history"]
        assert isinstance(history, dict)
        assert len(history["time"]) == len(history["beats_per_second"]) == len(metrics.history)


async def test_presence_diffs_and_notices_are_counted() -> None:
    clock = ManualClock()
    async with HeartbeatMonitor(TIMEOUT, resolution=0.01, clock=clock) as monitor:
        hub = PeerHub(monitor, notify="both")
        metrics = Metrics(hub)
        a = MemoryClient(hub, "a")
        clock.advance(0.1)  # a's presence state
        await monitor.wait_idle()
        b = MemoryClient(hub, "b")
        clock.advance(0.1)  # b joined: a diff to the room, b's state
        await monitor.wait_idle()
        b.disconnect()  # peer_gone told at once, and a diff at the next window
        clock.advance(0.1)
        await monitor.wait_idle()
        scraped = scrape(metrics)

        def kinds(client: MemoryClient, kind: str) -> int:
            return sum(message["type"] == kind for message in client.inbox)

        diffs = kinds(a, "presence_diff")  # a is in the room all along: it got every diff
        assert diffs >= 2  # b joined, b left (and a's own join, in its window)
        assert scraped["heartbeat_monitor_presence_diffs_total"] == {(): diffs}
        states = kinds(a, "presence_state") + kinds(b, "presence_state")  # one per connection
        assert kinds(a, "gone") == 1
        told = diffs + states + 1  # broadcasts count once, whoever receives them
        assert scraped["heartbeat_monitor_notices_sent_total"] == {(): told}


def test_histogram_buckets_are_prometheus_buckets() -> None:
    histogram = Histogram((0.1, 1.0))
    for value in (0.0, 0.1, 0.5, 1.0, 3.0):
        histogram.observe(value)
    assert histogram.cumulative() == [(0.1, 2), (1.0, 4), (math.inf, 5)]
    assert histogram.sum == pytest.approx(4.6)
    with pytest.raises(ConfigurationError):
        Histogram(())


def test_metrics_needs_a_hub_or_a_monitor() -> None:
    with pytest.raises(ConfigurationError):
        Metrics(object())  # type: ignore[arg-type]


def test_without_prometheus_client_the_rest_works() -> None:
    """The core never needs prometheus_client: without it, everything but the exposition works."""
    code = """
import sys
sys.modules["prometheus_client"] = None  # as if it were not installed
import anyio
from heartbeat_monitor import ConfigurationError, HeartbeatMonitor, ManualClock, Metrics, PeerHub
from heartbeat_monitor.testing import MemoryClient

async def main():
    async with HeartbeatMonitor(1.0, clock=ManualClock()) as monitor:
        metrics = Metrics(PeerHub(monitor))
        MemoryClient(metrics.hub, "a")
        assert metrics.snapshot()["peers"]["alive"] == 1
        try:
            metrics.register()
        except ConfigurationError as exc:
            print(exc)
        sent = []
        async def send(message):
            sent.append(message)
        scope = {"type": "http", "method": "GET", "path": "/metrics", "root_path": ""}
        await metrics.app()(scope, None, send)
        print(sent[0]["status"], sent[1]["body"].decode().strip())

anyio.run(main)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.splitlines()
    hint = "pip install 'aio-heartbeat-monitor[metrics]'"
    assert f"Prometheus metrics need prometheus_client: {hint}" in out
    assert f"503 Prometheus metrics need prometheus_client: {hint}" in out


async def test_the_servers_own_lag_stretch_shedding_and_waits_are_gauges() -> None:
    """Issue 17: the server knows it is overloaded, and says so in the metrics too."""
    clock = ManualClock()
    async with HeartbeatMonitor(TIMEOUT, resolution=RESOLUTION, clock=clock) as monitor:
        metrics = Metrics(PeerHub(monitor))
        quiet = scrape(metrics)
        for name in (
            "overload_lag_seconds",
            "overload_stretch_seconds",
            "overload_shedding",
            "message_wait_seconds",
            "message_wait_max_seconds",
        ):
            assert quiet[f"heartbeat_monitor_{name}"] == {(): 0}, name
        guard = monitor.overload
        assert guard.shed_lag is not None  # shedding is on by default
        lag = guard.shed_lag * 2
        guard.observe_wait(0.8, clock.now())  # a message that waited 0.8 s in its queue
        for _ in range(100):  # lags past shed_lag for longer than shed_after (0.5 s)
            guard.observe(lag, clock.now())
            clock.advance(0.1)
        assert guard.shedding
        guard.stretch_at(clock.now())
        busy = scrape(metrics)
        assert busy["heartbeat_monitor_overload_shedding"] == {(): 1}
        assert busy["heartbeat_monitor_overload_lag_seconds"] == {(): lag}
        assert busy["heartbeat_monitor_overload_stretch_seconds"] == {(): guard.stretch}
        assert guard.stretch >= lag
        assert busy["heartbeat_monitor_message_wait_seconds"] == {(): 0.8}
        assert busy["heartbeat_monitor_message_wait_max_seconds"] == {(): 0.8}
        figures = metrics.snapshot()["figures"]
        assert isinstance(figures, dict)
        assert figures["overload_shedding"] == 1
