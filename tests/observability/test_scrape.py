"""Scraping ``/metrics`` of real servers on loopback: 10 real peers connect, 3 go silent.

Socket.IO serves the metrics on its own ASGI server (beside python-socketio);
a stream transport (TCP) on a port of their own (:func:`serve_status`).
Every wait is bounded; the clock is real, as in production.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.abc
import pytest

from heartbeat_monitor import Expired, HeartbeatMonitor, Metrics, PeerGone, PeerHub, serve_status
from heartbeat_monitor_tcp import TcpTransport
from tests.transports._util import until

from ._http import get, samples
from ._live import serving

pytestmark = pytest.mark.anyio

INTERVAL = 0.5
MISSES = 2
#: From the poll's clock read to the announcement, in the same dispatch (3 expiries).
POLL_TO_ANNOUNCE = 0.1
#: How often the loop probe wakes, and what its own measurement may miss.
PROBE_EVERY = 0.005


class LoopProbe:
    """The event loop's latency, as a task sleeping ``PROBE_EVERY`` in a loop sees it.

    The monitor's ``max_loop_lag`` is measured when the driver wakes; a process
    descheduled between that wake and the poll (a busy 2-core machine) shows
    here too.
    """

    def __init__(self) -> None:
        self.max_late = 0.0

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        task_status.started()
        while True:
            due = time.monotonic() + PROBE_EVERY
            await anyio.sleep(PROBE_EVERY)
            self.max_late = max(self.max_late, time.monotonic() - due)


@contextlib.asynccontextmanager
async def probing() -> AsyncIterator[LoopProbe]:
    probe = LoopProbe()
    async with anyio.create_task_group() as task_group:
        await task_group.start(probe.run)
        yield probe
        task_group.cancel_scope.cancel()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # python-socketio and uvicorn


async def check_scrape(
    url: str, monitor: HeartbeatMonitor, expired: list[Expired], probe: LoopProbe
) -> None:
    """The figures the issue asks for, from ``/metrics`` and ``/status.json`` at ``url``."""
    response = await get(url + "/metrics")
    assert response.status == 200
    scraped = samples(response.text)
    assert scraped["heartbeat_monitor_peers"][(("state", "alive"),)] == 7
    assert scraped["heartbeat_monitor_gone_total"] == {(("reason", "heartbeat timeout"),): 3}
    assert scraped["heartbeat_monitor_detection_latency_seconds_count"] == {(): 3}
    assert scraped["heartbeat_monitor_beats_total"][()] > 0
    assert scraped["heartbeat_monitor_loop_lag_seconds_count"][()] >= 1
    status = (await get(url + "/status.json")).json()
    latencies = sorted(d["latency"] for d in status["departures"])
    assert sum(latencies) == pytest.approx(
        scraped["heartbeat_monitor_detection_latency_seconds_sum"][()]
    )
    # Within one resolution (+ the loop's latency) of each deadline: the monitor's promise.
    loop_latency = max(monitor.max_loop_lag, probe.max_late) + PROBE_EVERY
    bound = monitor.tracker.resolution + loop_latency
    late_by = sorted(event.late_by for event in expired)
    assert len(late_by) == 3
    for late, latency in zip(late_by, latencies, strict=True):
        assert 0 < late <= bound
        assert late <= latency + 1e-9
        assert latency <= late + POLL_TO_ANNOUNCE
    buckets = {
        float(dict(labels)["le"]): count
        for labels, count in scraped["heartbeat_monitor_detection_latency_seconds_bucket"].items()
    }
    assert buckets[min(le for le in buckets if le >= bound + POLL_TO_ANNOUNCE)] == 3


async def test_socketio_metrics_beside_python_socketio() -> None:
    async with (
        probing() as probe,
        serving(10, interval=INTERVAL, misses=MISSES, sample_interval=0.1) as live,
    ):
        for client in live.clients[:3]:
            await client.heartbeat.stop()
        await live.gone.wait(3, within=MISSES * INTERVAL + 5)
        assert {event.reason for event in live.gone.items} == {"heartbeat timeout"}
        await check_scrape(live.url, live.adapter.monitor, live.expired, probe)
        # The Socket.IO path itself is untouched by the mount.
        assert (await get(live.url + "/socket.io/?EIO=4&transport=polling")).status == 200


async def _tcp_peer(host: str, port: int, name: str, beating: anyio.Event) -> None:
    async with await anyio.connect_tcp(host, port) as stream:
        await stream.send(json.dumps({"type": "hello", "peer": name}).encode() + b"\n")
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            while not beating.is_set():
                await stream.send(b'{"type":"beat"}\n')
                with anyio.move_on_after(INTERVAL):
                    await beating.wait()
            await anyio.sleep_forever()  # silent, connection open: only expiry ends it


async def test_tcp_metrics_on_a_port_of_their_own() -> None:
    async with HeartbeatMonitor(INTERVAL * MISSES) as monitor:
        gone: list[PeerGone] = []
        all_gone = anyio.Event()

        def on_gone(event: PeerGone) -> None:
            gone.append(event)
            if len(gone) == 3:
                all_gone.set()

        hub = PeerHub(monitor, on_gone=on_gone)
        expired: list[Expired] = []
        monitor.on_expire(expired.append)
        async with (
            probing() as probe,
            Metrics(hub, sample_interval=0.1) as metrics,
            anyio.create_task_group() as tg,
        ):
            host, port = await tg.start(TcpTransport().serve, hub)
            url_host, url_port = await tg.start(serve_status, metrics)
            stops = [anyio.Event() for _ in range(10)]
            for index, stop in enumerate(stops):
                tg.start_soon(_tcp_peer, host, port, f"tcp-{index}", stop)
            await until(lambda: len(hub) == 10)
            for stop in stops[:3]:
                stop.set()
            with anyio.fail_after(MISSES * INTERVAL + 5):
                await all_gone.wait()
            assert sorted(str(event.key) for event in gone) == ["tcp-0", "tcp-1", "tcp-2"]
            await check_scrape(f"http://{url_host}:{url_port}", monitor, expired, probe)
            tg.cancel_scope.cancel()


async def test_mounted_under_a_prefix_in_starlette() -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Mount

    async with HeartbeatMonitor(1.0) as monitor:
        metrics = Metrics(PeerHub(monitor))
        app: Any = Starlette(routes=[Mount("/ops", app=metrics.app())])
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(app, log_config=None, lifespan="off", log_level="warning")
        server = uvicorn.Server(config)
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: server.serve(sockets=[sock]))
            await until(lambda: server.started)
            base = f"http://127.0.0.1:{port}/ops"
            assert (await get(base + "/status.json")).json()["peers"]["alive"] == 0
            assert "heartbeat_monitor_peers" in (await get(base + "/metrics")).text
            assert (await get(base + "/status")).status == 200
            server.should_exit = True
