"""``python -m benchmarks``: run everything, write the results (a source-tree tool)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._contenders import quiet_structlog
from ._core import core_figures
from ._micro import BEAT_CONTENDERS, beat_cost, memory_per_peer
from ._report import machine_info, markdown, plot, targets, write_json
from ._workloads import (
    INTERVAL,
    RESOLUTION,
    SIM_CONTENDERS,
    TIMEOUT,
    churn,
    mass_expiry,
    simulate,
    steady,
)

__all__ = ("SIM_CONTENDERS", "main", "run")

_DEFAULT_SIZES = (10_000, 100_000)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: small sizes, every contender checked"
    )
    parser.add_argument(
        "--full", action="store_true", help="also run 1,000,000 peers (several minutes, ~4 GiB)"
    )
    parser.add_argument(
        "--peers",
        type=lambda text: [int(x) for x in text.split(",")],
        help="comma-separated peer counts (overrides --quick/--full sizes)",
    )
    parser.add_argument("--rounds", type=int, help="beat-cost repetitions per contender")
    parser.add_argument(
        "--e2e-clients",
        type=int,
        default=1000,
        help="Socket.IO clients in the end-to-end run (0: skip it; --quick skips it)",
    )
    parser.add_argument(
        "--e2e-metrics",
        action="store_true",
        help="also: Socket.IO end to end, metrics off vs on (interleaved in one server, 80 s)",
    )
    parser.add_argument(
        "--presence",
        action="store_true",
        help="also run benchmarks.presence: presence vs peer_gone end to end (minutes)",
    )
    parser.add_argument(
        "--overload",
        type=int,
        metavar="CAPACITY",
        help="also: one serve process offered 1x, 1.5x, 3x CAPACITY clients (benchmarks.overload)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="folder for results.json and the PNG plots (default: a temp dir)",
    )


def _progress(total: int, desc: str) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:  # the bench extra is not installed: run without a bar
        return None
    return tqdm(total=total, desc=desc, unit="step", leave=False, disable=None)


def run(args: argparse.Namespace) -> int:
    quiet_structlog()
    quick: bool = args.quick
    sizes: list[int] = args.peers or (
        [2_000, 10_000]
        if quick
        else [*_DEFAULT_SIZES, 1_000_000]
        if args.full
        else list(_DEFAULT_SIZES)
    )
    rounds: int = args.rounds or (3 if quick else 7)
    folder: Path = args.output or Path(tempfile.mkdtemp(prefix="heartbeat-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    command = (
        "python -m benchmarks " + " ".join(sys.argv[1:]) if sys.argv[1:] else "python -m benchmarks"
    )
    results: dict[str, Any] = {
        "command": command,
        "machine": machine_info(),
        "config": {
            "timeout_s": TIMEOUT,
            "beat_interval_s": INTERVAL,
            "resolution_s": RESOLUTION,
            "simulation_step_s": 0.01,
            "beat_rounds": rounds,
            "logging": "structlog filtered below warning (measures the monitor, not log printing)",
        },
        "sizes": sizes,
        "beat_ns": {},
        "bytes_per_peer": {},
        "workloads": {"steady": {}, "churn": {}, "mass expiry": {}},
    }
    started = time.perf_counter()
    print(
        "note: structlog is configured to drop records below warning, "
        "so expiries are measured without log printing",
        file=sys.stderr,
    )
    for size in sizes:
        key = str(size)
        beats = max(50_000, min(size, 200_000)) if not quick else 50_000
        bar = _progress(rounds * len(BEAT_CONTENDERS), f"beat cost, {size:,} peers")
        results["beat_ns"][key] = beat_cost(
            size, beats=beats, rounds=rounds, progress=bar.update if bar else None
        )
        if bar:
            bar.close()
        results["bytes_per_peer"][key] = {
            name: memory_per_peer(name, size) for name in BEAT_CONTENDERS
        }
        seconds = 26.0 if quick else 30.0
        for workload in (
            steady(size, seconds=seconds),
            churn(size, seconds=seconds),
            mass_expiry(size),
        ):
            bar = _progress(workload.steps, f"{workload.name}, {size:,} peers")
            outcomes = simulate(workload, SIM_CONTENDERS, progress=bar.update if bar else None)
            if bar:
                bar.close()
            results["workloads"][workload.name][key] = {
                outcome.contender: outcome.summary() for outcome in outcomes
            }
    results["core"] = core_figures(sizes[-1], quick=quick)
    if not quick and args.e2e_clients > 0:
        from . import _socketio_e2e

        if _socketio_e2e.available():
            print(f"Socket.IO end to end, {args.e2e_clients} clients...", file=sys.stderr)
            results["socketio_e2e"] = _socketio_e2e.measure(clients=args.e2e_clients)
            if args.e2e_metrics:
                from . import _metrics_cost

                print("Socket.IO end to end, metrics off vs on...", file=sys.stderr)
                results["metrics_cost"] = _metrics_cost.measure(clients=args.e2e_clients)
                results["metrics_cost"]["requests_ms"] = _metrics_cost.measure_requests()
        else:
            results["socketio_e2e"] = "skipped: heartbeat_monitor_socketio or node missing"
    if args.presence:
        from . import presence

        results["presence"] = presence.measure(quick=quick)
    if args.overload:
        from . import overload

        print(f"overload, capacity {args.overload}...", file=sys.stderr)
        results["overload"] = overload.rows(args.overload)
        print(overload.table(args.overload, results["overload"]))
    results["elapsed_s"] = round(time.perf_counter() - started, 1)
    if hasattr(os, "getloadavg"):
        results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["targets"] = targets(results)
    table = markdown(results)
    print(table)
    path = write_json(results, folder)
    pictures = plot(results, folder)
    print(f"wrote {path} and {', '.join(p.name for p in pictures)} in {folder}", file=sys.stderr)
    wrong = [
        f"{workload} / {size} peers / {name}"
        for workload, by_size in results["workloads"].items()
        for size, rows in by_size.items()
        for name, row in rows.items()
        if row["checked"] and not row["correct"]
    ]
    if wrong:
        print("INCORRECT contenders: " + "; ".join(wrong), file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="heartbeat_monitor side by side with what users would otherwise write.",
    )
    _add_arguments(parser)
    return run(parser.parse_args(argv))
