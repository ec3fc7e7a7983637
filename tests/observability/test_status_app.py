"""The status app over real loopback HTTP (``serve_status``): routes, JSON, metrics, live events."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
import anyio.abc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from heartbeat_monitor import HeartbeatMonitor, ManualClock, Metrics, PeerHub, serve_status
from heartbeat_monitor.testing import MemoryClient

from ._http import events, get

pytestmark = pytest.mark.anyio


@dataclass
class Served:
    url: str
    clock: ManualClock
    monitor: HeartbeatMonitor
    hub: PeerHub
    metrics: Metrics


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    clock = ManualClock()
    async with HeartbeatMonitor(2.0, resolution=0.2, clock=clock) as monitor:
        hub = PeerHub(monitor)
        # A long sample interval: a live update that comes sooner was pushed by a departure.
        metrics = Metrics(hub, sample_interval=60)
        async with anyio.create_task_group() as task_group:
            host, port = await task_group.start(serve_status, metrics)
            yield Served(f"http://{host}:{port}", clock, monitor, hub, metrics)
            metrics.close()
            task_group.cancel_scope.cancel()


async def test_status_json_has_the_numbers(served: Served) -> None:
    clients = [MemoryClient(served.hub, f"p{index}") for index in range(4)]
    clients[0].beat()
    clients[1].disconnect()
    response = await get(served.url + "/status.json")
    assert response.status == 200
    assert response.headers["content-type"] == "application/json"
    status = response.json()
    assert status["peers"] == {"alive": 3, "suspect": 0, "held": 0}
    assert status["gone"] == {"client disconnect": 1}
    assert status["beats"] == 1
    assert status["timeout"] == 2.0
    assert status["resolution"] == 0.2
    assert [d["peer"] for d in status["departures"]] == ["p1"]


async def test_metrics_is_the_prometheus_exposition(served: Served) -> None:
    MemoryClient(served.hub, "a")
    response = await get(served.url + "/metrics")
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    for name in (
        "heartbeat_monitor_peers",
        "heartbeat_monitor_gone",
        "heartbeat_monitor_detection_latency_seconds",
        "heartbeat_monitor_beats",
        "heartbeat_monitor_refused",
        "heartbeat_monitor_loop_lag_seconds",
        "heartbeat_monitor_storm_active",
        "heartbeat_monitor_self_pause",
    ):
        assert name in families, name
    alive = [
        s for s in families["heartbeat_monitor_peers"].samples if s.labels == {"state": "alive"}
    ]
    assert alive[0].value == 1


async def test_the_page_is_ours_alone(served: Served) -> None:
    response = await get(served.url + "/status")
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "<script src" not in page  # no third-party (or any fetched) script
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing from elsewhere
    assert "EventSource" in page


async def test_other_paths_and_methods(served: Served) -> None:
    assert (await get(served.url + "/nothing")).status == 404
    response = await get(served.url + "/status.json", method="POST")
    assert response.status == 405
    head = await get(served.url + "/status.json", method="HEAD")
    assert head.status == 200
    assert head.body == b""


async def test_a_bad_request_is_answered_400(served: Served) -> None:
    host, port = served.url.removeprefix("http://").split(":")
    async with await anyio.connect_tcp(host, int(port)) as stream:
        await stream.send(b"NONSENSE\r\n\r\n")
        with anyio.fail_after(5):
            reply = await stream.receive()
    assert reply.startswith(b"HTTP/1.1 400")


async def test_live_events_push_a_departure_at_once(served: Served) -> None:
    client = MemoryClient(served.hub, "quiet")
    async with events(served.url + "/status/events") as stream:
        first = await stream.next()
        assert first is not None
        assert first["peers"]["alive"] == 1
        assert first["departures"] == []
        served.clock.advance(2.3)  # past the deadline and its bucket: expired
        with anyio.fail_after(5):  # far sooner than the 60 s sample interval
            update = await stream.next()
        assert update is not None
        assert client.closed == "heartbeat timeout"
        assert update["peers"]["alive"] == 0
        [departure] = update["departures"]
        assert departure["peer"] == "quiet"
        assert departure["reason"] == "heartbeat timeout"
        assert departure["latency"] == pytest.approx(0.3)


async def test_live_events_end_when_the_metrics_close(served: Served) -> None:
    async with events(served.url + "/status/events") as stream:
        await stream.next()
        served.metrics.close()
        with anyio.fail_after(5):
            rest = await stream.rest()
        assert len(rest) <= 1
