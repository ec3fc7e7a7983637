"""``heartbeat-monitor simulate``: the monitor on the real clock with simulated peers.

Every peer beats on its interval (with a little jitter); ``silent`` of them stop
beating at a random moment in the first half of the run. Each expiry is logged
as it happens, and a summary at the end checks what was expected.
"""

from __future__ import annotations

import argparse
import random
from typing import Any

import anyio
import structlog

from ._events import Expired
from ._monitor import HeartbeatMonitor
from ._options import (
    Command,
    UsageError,
    add_timing_arguments,
    check_timing_arguments,
    positive,
    positive_int,
)

__all__ = ("SIMULATE", "simulate")

_logger = structlog.get_logger("heartbeat_monitor")


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--peers", type=positive_int, default=20, help="peers to simulate (20)")
    parser.add_argument("--silent", type=int, default=5, help="peers that stop beating (5)")
    add_timing_arguments(parser, interval=0.5)
    parser.add_argument(
        "--duration", type=positive("seconds"), default=6.0, help="run time in seconds (6)"
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (a new one each run)")


def _run(args: argparse.Namespace) -> int:
    if not 0 <= args.silent <= args.peers:
        raise UsageError(
            f"--silent must be between 0 and --peers ({args.peers}), not {args.silent}"
        )
    check_timing_arguments(args)
    summary = anyio.run(
        lambda: simulate(
            peers=args.peers,
            silent=args.silent,
            interval=args.interval,
            misses=args.misses,
            resolution=args.resolution,
            duration=args.duration,
            seed=args.seed,
        )
    )
    _logger.info("heartbeat_monitor.simulate.summary", **summary)
    return 0 if summary["unexpected"] == 0 else 1


SIMULATE = Command(
    name="simulate",
    help="the monitor alone on the real clock, with simulated peers (no network)",
    description=(
        "Run the monitor on the real clock with simulated peers, no network. Every peer\n"
        "beats every --interval seconds; --silent of them stop at a random moment in the\n"
        "first half of the run. Each expiry is logged as it happens; the summary at the\n"
        "end says how many expired, whether any beating peer expired (exit status 1),\n"
        "and the largest lateness seen."
    ),
    examples=(
        "heartbeat-monitor simulate",
        "heartbeat-monitor simulate --peers 1000 --silent 50 --interval 0.2 --duration 5",
        "heartbeat-monitor simulate --seed 3 --log-format json",
    ),
    add_arguments=_add_arguments,
    run=_run,
)


async def simulate(
    *,
    peers: int,
    silent: int,
    interval: float,
    misses: float,
    resolution: float | None,
    duration: float,
    seed: int | None = None,
) -> dict[str, Any]:
    """Run the simulation; return counts (``unexpected`` is expiries of beating peers)."""
    rng = random.Random(seed)
    timeout = interval * misses
    quiet_at = {f"peer-{i}": rng.uniform(0, duration / 2) for i in rng.sample(range(peers), silent)}
    expired: list[Expired] = []

    async with HeartbeatMonitor(
        timeout, resolution=resolution, on_expire=expired.append
    ) as monitor:
        _logger.info(
            "heartbeat_monitor.simulate.start",
            peers=peers,
            silent=silent,
            interval=interval,
            timeout=timeout,
            resolution=monitor.tracker.resolution,
        )
        start = anyio.current_time()

        async def peer(key: str) -> None:
            monitor.track(key)
            stop = quiet_at.get(key)
            while True:
                await anyio.sleep(interval * rng.uniform(0.9, 1.0))
                elapsed = anyio.current_time() - start
                if stop is not None and elapsed >= stop:
                    _logger.info("heartbeat_monitor.simulate.peer_silenced", peer=key)
                    return
                if not monitor.beat(key):
                    return

        with anyio.move_on_after(duration):
            async with anyio.create_task_group() as tg:
                for i in range(peers):
                    tg.start_soon(peer, f"peer-{i}")
        alive = len(monitor)
    gone = {event.key for event in expired}
    late = max((event.late_by for event in expired), default=0.0)
    return {
        "expired": len(expired),
        "expected": len(quiet_at),
        "unexpected": len(gone - quiet_at.keys()),
        "still_tracked": alive,
        "max_late_by": round(late, 4),
    }
