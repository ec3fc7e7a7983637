"""Figures for the multi-node (Redis) mode: beat throughput, Redis traffic, dead-node detection.

Starts its own ``redis-server`` on a free loopback port (no persistence).

1. **Heartbeats per second of one node, Redis on vs off.** A real
   ``socketio.AsyncServer`` with the :class:`SocketIOAdapter` and ``peers``
   sessions (packet sends stubbed out, as in ``benchmarks/socketio_overhead``);
   inbound ``42["heartbeat"]`` packets are fed to ``_handle_eio_message`` in
   batches, yielding to the event loop between batches so that the cluster's
   background sync (and python-socketio's Redis listener) run as they would.
   "on" adds :class:`ClusterRedisManager` and :class:`RedisCluster`. Rate =
   beats / process CPU seconds; runs interleaved after a warm-up, best of ``repeat``
   (interference from other work only slows a run), medians also given.
2. **Redis commands per heartbeat.** Redis's own ``total_commands_processed``
   over the "on" windows (our ``INFO`` calls subtracted), per second and per
   beat: at the benchmark's saturating rate, and at a realistic rate of
   ``peers`` clients beating every 5 s.
3. **Detection time of a dead node vs the node timeout.** A ``serve`` process
   (node B, one client) is SIGKILLed; an in-process node A records when its
   ``on_gone`` sees B's client (reason ``"node gone"``). Expected window:
   ``[T - sync, T + sync + resolution]`` after the kill (T = node timeout).

    python -m benchmarks.redis_figures [--quick] [--output DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

__all__ = ("main", "measure")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.asynccontextmanager
async def _redis_server() -> AsyncIterator[str]:
    from redis import asyncio as aioredis

    port = _free_port()
    process = await asyncio.create_subprocess_exec(
        *[
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = aioredis.Redis.from_url(url)
    try:
        for _ in range(200):
            try:
                await client.ping()
                break
            except Exception:
                await asyncio.sleep(0.05)
        yield url
    finally:
        await client.aclose()
        process.terminate()
        await process.wait()


async def _commands(url: str) -> int:
    from redis import asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        info = await client.info("stats")
        return int(info["total_commands_processed"])
    finally:
        await client.aclose()


# -- 1 and 2: throughput and Redis traffic ------------------------------------------------


async def _throughput(url: str | None, peers: int, seconds: float, sync: float) -> dict[str, Any]:
    import socketio

    from heartbeat_monitor_redis import ClusterRedisManager, RedisCluster
    from heartbeat_monitor_socketio import SocketIOAdapter

    manager = None if url is None else ClusterRedisManager(url)
    sio = socketio.AsyncServer(async_mode="asgi", async_handlers=False, client_manager=manager)

    async def no_send(*args: Any, **kwargs: Any) -> None:
        return None

    sio._send_packet = no_send
    # max_rate=None: each session beats far faster than a client would (the flood limit
    # would refuse them all); the measure is the cost of a beat, not of a refusal.
    adapter = SocketIOAdapter(
        sio, interval=60, misses=2, min_beat_gap=0.0, max_rate=None, room="peers"
    )
    cluster = None
    if url is not None:
        # fence=False: a node starved of CPU by the benchmark itself (two shared cores) must
        # not disconnect the sessions being measured; fencing has its own tests.
        cluster = RedisCluster(
            adapter, url, node_timeout=sync * 10, sync_interval=sync, fence=False
        )
    async with contextlib.AsyncExitStack() as stack:
        if cluster is not None:
            await stack.enter_async_context(cluster)
        await stack.enter_async_context(adapter)
        eio_sids = [f"eio{index:06d}" for index in range(peers)]
        for eio_sid in eio_sids:
            sio.eio.sockets[eio_sid] = SimpleNamespace(closed=False, closing=False)
            await sio._handle_eio_connect(eio_sid, {})
            await sio._handle_eio_message(eio_sid, "0")
        await asyncio.sleep(sync * 2)  # the first presence write is not part of the window
        handle = sio._handle_eio_message
        packet = '2["heartbeat"]'
        before = 0 if url is None else await _commands(url)
        syncs_before = 0 if cluster is None else cluster.stats.syncs
        started, cpu_started = time.monotonic(), time.process_time()
        beats = 0
        while time.monotonic() - started < seconds:
            for eio_sid in eio_sids:
                await handle(eio_sid, packet)
            beats += peers
            await asyncio.sleep(0)  # let the sync loop and the Redis listener run
        cpu = time.process_time() - cpu_started
        wall = time.monotonic() - started
        commands = 0 if url is None else await _commands(url) - before - 1
        syncs = 0 if cluster is None else cluster.stats.syncs - syncs_before
        failures = 0 if cluster is None else cluster.stats.sync_failures
        # The fake sessions need no goodbye (with a Redis manager, a shutdown would tell
        # every session of every other one's departure: a million sends, not measured).
        await adapter.aclose(notify=False)
    return {
        "beats": beats,
        "cpu": cpu,
        "wall": wall,
        "commands": commands,
        "syncs": syncs,
        "sync_failures": failures,
    }


async def _figures_1_2(url: str, peers: int, seconds: float, repeat: int, sync: float) -> Any:
    off: list[float] = []
    on: list[float] = []
    commands = syncs = failures = 0
    wall = 0.0
    await _throughput(None, peers, seconds / 2, sync)  # warm-up, not counted
    for index in range(repeat):
        # Alternate the order; collect the previous run's server first (no GC bias).
        for mode_url in (None, url) if index % 2 == 0 else (url, None):
            gc.collect()
            result = await _throughput(mode_url, peers, seconds, sync)
            (off if mode_url is None else on).append(result["beats"] / result["cpu"])
            if mode_url is not None:
                commands += result["commands"]
                syncs += result["syncs"]
                failures += result["sync_failures"]
                wall += result["wall"]
    per_sync = commands / max(syncs, 1)
    beats_at_5s = peers / 5.0  # every client beating every 5 s
    return {
        "peers": peers,
        "sync_interval": sync,
        "beats_per_cpu_second_off": max(off),
        "beats_per_cpu_second_on": max(on),
        "ratio_on_off": max(on) / max(off),
        "ratio_on_off_medians": statistics.median(on) / statistics.median(off),
        "redis_commands_per_sync": per_sync,
        "sync_failures": failures,
        "redis_commands_per_second": commands / wall,
        "redis_commands_per_beat_saturated": commands / wall / max(on),
        "redis_commands_per_beat_at_5s_interval": per_sync / sync / beats_at_5s,
    }


# -- 3: detection time ----------------------------------------------------------------------


async def _detection(url: str, node_timeout: float) -> dict[str, float]:
    import socketio

    from heartbeat_monitor import LivenessTracker
    from heartbeat_monitor_redis import ClusterRedisManager, RedisCluster
    from heartbeat_monitor_socketio import SocketIOAdapter, SocketIOServer

    sync = min(node_timeout / 5, 1.0)
    gone: asyncio.Queue[tuple[Any, str, float]] = asyncio.Queue()
    #: When a's presence told b's client joining and leaving (its on_join / on_leave: the flush).
    told: dict[tuple[Any, str], float] = {}
    sio = socketio.AsyncServer(async_mode="asgi", client_manager=ClusterRedisManager(url))
    adapter = SocketIOAdapter(
        sio,
        interval=1,
        misses=2,
        room="peers",
        on_gone=lambda event: gone.put_nowait((event.peer, event.reason, time.monotonic())),
    )
    for hook, kind in ((adapter.hub.on_join, "join"), (adapter.hub.on_leave, "leave")):
        hook(lambda event, kind=kind: told.setdefault((event.key, kind), time.monotonic()))
    cluster = RedisCluster(adapter, url, node_id="a", node_timeout=node_timeout, sync_interval=sync)
    port = _free_port()
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "heartbeat_monitor._cli", "serve", "--port", str(port),
         "--redis-url", url, "--node-id", "b", "--node-timeout", str(node_timeout),
         "--interval", "1", "--log-format", "json", "--log-level", "warning",
         "--ping-interval", "5"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = socketio.AsyncClient(reconnection=False)
    try:
        async with cluster, SocketIOServer(adapter):
            nodes_of_b: frozenset[str] = frozenset()
            await _wait_listening(port)
            connecting = time.monotonic()
            await client.connect(f"http://127.0.0.1:{port}", transports=["websocket"])
            sid = client.get_sid("/")
            for _ in range(400):
                nodes_of_b = await cluster.locate(sid)
                if nodes_of_b and (sid, "join") in told:
                    break
                await asyncio.sleep(0.05)
            assert nodes_of_b == {"b"}, nodes_of_b
            killed = time.monotonic()
            process.send_signal(signal.SIGKILL)
            while True:
                peer, reason, at = await asyncio.wait_for(gone.get(), node_timeout * 3 + 5)
                if peer == sid:
                    assert reason == "node gone", reason
                    break
            for _ in range(200):  # a forgets b, its presence tells the leave at its next flush
                if (sid, "leave") in told:
                    break
                await asyncio.sleep(0.01)
            return {
                "node_timeout": node_timeout,
                "sync_interval": sync,
                "detected_after": at - killed,
                # b's client in a's presence diffs: its join after connecting, its leave
                # ("node gone") after the kill.
                "presence_join_after": told[sid, "join"] - connecting,
                "presence_leave_after": told[sid, "leave"] - killed,
                "window_low": node_timeout - sync,
                # The node monitor's resolution: the tracker's default for that timeout.
                "window_high": node_timeout + sync + LivenessTracker(node_timeout).resolution,
            }
    finally:
        with contextlib.suppress(Exception):
            await client.disconnect()
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


async def _wait_listening(port: int) -> None:
    for _ in range(600):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise TimeoutError(f"nothing listens on port {port}")


def measure(*, quick: bool = False, detection_only: bool = False) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        async with _redis_server() as url:
            result: dict[str, Any] = {}
            if not detection_only:
                result.update(await _throughput_figures(url))
            detections = []
            for node_timeout in (1.0,) if quick else (1.0, 2.0, 4.0):
                for _ in range(1 if quick else 3):
                    detections.append(await _detection(url, node_timeout))
            result["detection"] = detections
            return result

    async def _throughput_figures(url: str) -> dict[str, Any]:
        seconds, repeat = (1.0, 1) if quick else (1.5, 10)
        return {
            "throughput": await _figures_1_2(url, 1000, seconds, repeat, sync=1.0),
            "throughput_aggressive_sync": await _figures_1_2(url, 1000, seconds, repeat, sync=0.1),
        }

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    return asyncio.run(run())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one short run of each (smoke)")
    parser.add_argument(
        "--detection-only", action="store_true", help="only the dead-node rows (no throughput)"
    )
    parser.add_argument("--output", type=Path, default=None, help="also write redis_figures.json")
    args = parser.parse_args(argv)
    if shutil.which("redis-server") is None:
        print("redis-server is not installed (apt-get install redis-server)", file=sys.stderr)
        return 1
    result = measure(quick=args.quick, detection_only=args.detection_only)
    for name in ("throughput", "throughput_aggressive_sync"):
        if name not in result:
            continue
        figures = result[name]
        print(
            f"sync every {figures['sync_interval']:g} s, {figures['peers']} peers: "
            f"{figures['beats_per_cpu_second_off']:,.0f} beats/CPU-s off, "
            f"{figures['beats_per_cpu_second_on']:,.0f} on "
            f"(ratio on/off {figures['ratio_on_off']:.3f} best of runs, "
            f"{figures['ratio_on_off_medians']:.3f} medians); "
            f"Redis {figures['redis_commands_per_sync']:.1f} commands per sync, "
            f"{figures['redis_commands_per_second']:.1f} commands/s = "
            f"{figures['redis_commands_per_beat_saturated']:.2e} per beat at that rate, "
            f"{figures['redis_commands_per_beat_at_5s_interval']:.4f} per beat when "
            f"{figures['peers']} clients beat every 5 s; {figures['sync_failures']} failed syncs"
        )
    print("dead node (SIGKILL) -> its peers announced, vs node timeout T:")
    for row in result["detection"]:
        print(
            f"  T={row['node_timeout']:g} s (sync {row['sync_interval']:g} s): "
            f"{row['detected_after']:.3f} s; expected window "
            f"[{row['window_low']:.2f}, {row['window_high']:.2f}] s; in the survivor's presence "
            f"diffs: leave {row['presence_leave_after']:.3f} s after the kill, join "
            f"{row['presence_join_after']:.3f} s after connecting"
        )
    if args.output is not None:
        args.output.mkdir(parents=True, exist_ok=True)
        (args.output / "redis_figures.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
