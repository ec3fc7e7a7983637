"""``heartbeat-monitor simulate``: the monitor on the real clock with simulated peers.

Every peer beats on its interval (with a little jitter); ``--silent`` of them
stop beating at a random moment in the first half of the run. Each expiry is
logged as it happens, and a summary at the end checks what was expected.
"""

from __future__ import annotations

import argparse
import random
from typing import Any

import anyio
import structlog

from ._events import Expired
from ._logging import configure_cli_logging
from ._monitor import HeartbeatMonitor

__all__ = ("register", "simulate")

_logger = structlog.get_logger("heartbeat_monitor")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "simulate",
        help="run the monitor on the real clock with simulated peers, some going silent",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--peers", type=int, default=20, help="peers to simulate (default 20)")
    parser.add_argument("--silent", type=int, default=5, help="peers that stop beating (5)")
    parser.add_argument("--interval", type=float, default=0.5, help="beat interval, s (0.5)")
    parser.add_argument("--misses", type=float, default=2, help="intervals of silence (2)")
    parser.add_argument("--resolution", type=float, default=None, help="wheel resolution, s")
    parser.add_argument("--duration", type=float, default=6.0, help="run time, s (6)")
    parser.add_argument("--seed", type=int, default=None, help="random seed")
    parser.add_argument("--log-format", choices=("auto", "console", "json"), default="auto")
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    configure_cli_logging(args.log_format)
    if not 0 <= args.silent <= args.peers:
        raise SystemExit("simulate: --silent must be between 0 and --peers")
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
