"""Results: machine info, targets, the markdown tables, the JSON file and the plots."""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ("machine_info", "markdown", "plot", "targets", "write_json")

Results = dict[str, Any]

SCAN_NAME = "full scan @ resolution (0.1 s)"
FLOOR_NAME = "floor: dict write"

#: The issue's targets (ratios within one run); never moved, only reported.
BEAT_VS_FLOOR_MAX = 1.5
TIMERS_VS_BEAT_MIN = 6.0
BYTES_PER_PEER_MAX = 64.0
SCAN_VS_TRACKER_MIN = 50.0
STEADY_POLL_MAX_MS = 5.0
MASS_BLOCK_MAX_MS = 10.0
MASS_FULL_GC_MAX_MS = 10.0
#: The issue's targets are stated at this many peers (the beat's at 100k).
TARGET_PEERS = 1_000_000
BEAT_TARGET_PEERS = 100_000


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        psutil = importlib.import_module("psutil")  # the bench extra; untyped
        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    if hasattr(os, "getloadavg"):
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    return info


def _fmt(value: object, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "**NO**"
    if isinstance(value, float):
        if value >= 100:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    return str(value)


def _correct(row: Mapping[str, Any]) -> str:
    if row.get("checked") is False:
        return "n/a"
    if row["correct"]:
        return "yes"
    flags = [
        f"{row[k]} {k.replace('_', ' ')}"
        for k in ("early", "missed", "duplicate", "after_untrack")
        if row[k]
    ]
    return "**NO**: " + ", ".join(flags)


def _late(row: Mapping[str, Any]) -> str:
    if row.get("lateness_p50_ms") is None:
        return "—"
    return " / ".join(f"{row[f'lateness_{q}_ms']:.0f}" for q in ("p50", "p99", "max"))


def markdown(results: Results) -> str:
    """The tables printed on stdout and pasted into the README."""
    lines: list[str] = []
    for size in results["sizes"]:
        n = str(size)
        beat = results["beat_ns"].get(n, {})
        memory = results["bytes_per_peer"].get(n, {})
        steady = results["workloads"]["steady"].get(n, {})
        churn = results["workloads"]["churn"].get(n, {})
        mass = results["workloads"]["mass expiry"].get(n, {})
        floor = beat.get("floor: dict write")
        lines += [
            f"#### {size:,} peers",
            "",
            "| contender | beat ns | x floor | B/peer | steady: CPU ms/s | longest block ms "
            "| late p50/p99/max ms | churn: CPU ms/s | mass expiry: CPU ms | longest block ms "
            "| correct (steady, churn, mass) |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
        ]
        names = list(dict.fromkeys([*beat, *steady]))
        if any(name.startswith("full scan ") for name in steady):
            names.remove("full scan")  # its beat figure is shown on each scan period's row
        for name in names:
            beat_name = "full scan" if name.startswith("full scan") else name
            ns = beat.get(beat_name)
            s, c, m = steady.get(name), churn.get(name), mass.get(name)
            verdicts = [_correct(row) for row in (s, c, m) if row is not None]
            lines.append(
                "| "
                + " | ".join(
                    [
                        name,
                        _fmt(ns, 0) if ns is not None else "—",
                        f"{ns / floor:.2f}" if ns is not None and floor else "—",
                        _fmt(memory.get(beat_name), 0),
                        _fmt(s and s["maintenance_cpu_ms_per_s"], 2),
                        _fmt(s and s["longest_block_ms"], 2),
                        _late(s) if s else "—",
                        _fmt(c and c["maintenance_cpu_ms_per_s"], 2),
                        _fmt(m and m["maintenance_ms"], 1),
                        _fmt(m and m["longest_block_ms"], 2),
                        ", ".join(dict.fromkeys(verdicts)) if verdicts else "n/a (no expiry)",
                    ]
                )
                + " |"
            )
        lines.append("")
    e2e = results.get("socketio_e2e")
    if isinstance(e2e, dict):
        low, high = e2e["ratio_range"]
        lines += [
            f"#### Socket.IO end to end ({e2e['clients_per_server']:,} socket.io-client "
            "connections per server, one beat a second each; both servers at once, "
            f"{e2e['windows']} windows of {e2e['window_s']:g} s)",
            "",
            "| server | server CPU per heartbeat (µs, median) |",
            "|---|--:|",
            f"| plain python-socketio, a no-op handler | {e2e['us_per_beat']['plain']:.0f} |",
            f"| with SocketIOAdapter, no handler | {e2e['us_per_beat']['adapter']:.0f} |",
            f"| ratio | {e2e['ratio_median']:.2f}x ({low:.2f}-{high:.2f}x) |",
            "",
        ]
    elif e2e:
        lines += [f"Socket.IO end to end: {e2e}", ""]
    cost = results.get("metrics_cost")
    if isinstance(cost, dict):
        blocks = cost["block_ratios"]
        lines += [
            f"#### Metrics off vs on, Socket.IO end to end ({cost['clients']:,} clients; "
            f"{cost['phases']} phases of {cost['phase_s']:g} s interleaved ABBA in one server; "
            f"on: the sampler, /metrics and /status.json every {cost['scrape_every_s']:g} s)",
            "",
            "| adapter | server CPU per heartbeat (µs) |",
            "|---|--:|",
            f"| metrics off | {cost['off_us_per_beat']:.1f} |",
            f"| metrics on | {cost['on_us_per_beat']:.1f} |",
            f"| ratio | {cost['ratio']:.3f}x (per ABBA block: median {blocks['median']:.3f}, "
            f"quartiles {blocks['quartiles'][0]:.3f} to {blocks['quartiles'][-1]:.3f}) |",
            "",
        ]
        requests = cost.get("requests_ms")
        if requests:
            lines += [
                "Server CPU per fetch, idle server with a full history (ms): "
                + ", ".join(f"`{path}` {ms:.2f}" for path, ms in requests.items()),
                "",
            ]
    lines += _core_markdown(results.get("core"))
    lines += [
        "#### Targets (ratios within this run)",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    for target in results["targets"]:
        lines.append(
            f"| {target['target']} | {target['measured']} | "
            f"{'yes' if target['met'] else '**missed**' if target['met'] is False else 'not run'} |"
        )
    lines.append("")
    return "\n".join(lines)


def _range(figure: Mapping[str, Any], unit: str = "", digits: int = 2) -> str:
    """``median (min-max)`` of a :func:`benchmarks._core.spread`."""
    return (
        f"{figure['median']:.{digits}f}{unit} "
        f"({figure['min']:.{digits}f}-{figure['max']:.{digits}f}{unit})"
    )


def _core_markdown(core: Mapping[str, Any] | None) -> list[str]:
    if not core:
        return []
    upkeep, beat, mass = core["upkeep"], core["beat"], core["mass_expiry"]
    rounds = len(upkeep["ratio"]["rounds"])
    lines = [
        "#### Core tracker: paired rounds, median (min-max); GC on, a float per beat",
        "",
        "| figure | value |",
        "|---|---|",
        f"| upkeep CPU, LivenessTracker ({upkeep['peers']:,} peers, {rounds} rounds of "
        f"{upkeep['simulated_s']:g} simulated s) "
        f"| {_range(upkeep['tracker_cpu_ms_per_s'], ' ms/s', 3)} |",
        f"| upkeep CPU, {SCAN_NAME} | {_range(upkeep['scan_cpu_ms_per_s'], ' ms/s', 1)} |",
        f"| full scan / tracker, per round | {_range(upkeep['ratio'], 'x', 1)} |",
    ]
    for name, ratio in beat["ratio"].items():
        ns = beat["ns"][name]
        lines.append(
            f"| beat, {name} / floor ({beat['peers']:,} peers, "
            f"{len(ratio['rounds'])} rounds) | {_range(ratio, 'x')} "
            f"({ns['median']:.0f} vs {beat['ns'][FLOOR_NAME]['median']:.0f} ns) |"
        )
    lines += [
        f"| mass expiry, real clock, {mass['peers']:,} peers: longest probe lateness "
        f"(wall) | {mass['probe_max_late_ms']:.1f} ms (during the expiries: "
        f"{mass['probe_max_late_during_expiry_ms']:.1f} ms) |",
        f"| mass expiry: longest loop block in thread CPU time (preemption by other "
        f"processes not counted) | {mass['probe_max_cpu_block_ms']:.1f} ms |",
        f"| mass expiry: collections (gen 0/1/2), longest full one (wall / CPU) "
        f"| {'/'.join(str(mass['gc_collections'][g]) for g in '012')}, "
        f"{mass['gc_full_max_ms']:.1f} / {mass['gc_full_max_cpu_ms']:.1f} ms |",
        f"| load average while it ran | {mass['load_average']} |",
        f"| mass expiry: all expired, over, latest expiry late by "
        f"| {'yes' if mass['all_expired'] else '**NO**'}, {mass['expiry_span_s']} s, "
        f"{mass['max_late_by_ms']:.0f} ms |",
        "",
    ]
    return lines


def targets(results: Results) -> list[dict[str, Any]]:
    """Check the issue's targets against this run's figures."""
    out: list[dict[str, Any]] = []
    sizes = [str(s) for s in results["sizes"]]
    largest = sizes[-1]

    def add(target: str, measured: str, met: bool | None) -> None:
        out.append({"target": target, "measured": measured, "met": met})

    beat_at = "100000" if "100000" in results["beat_ns"] else largest
    beat = results["beat_ns"].get(beat_at, {})
    tracker, floor = beat.get("LivenessTracker"), beat.get("floor: dict write")
    timers = beat.get("asyncio timer per peer")
    where = f" ({int(beat_at):,} peers)"
    core = results.get("core")
    if core:
        paired = core["beat"]["ratio"]["LivenessTracker"]
        add(
            f"beat ≤ 1.5x the floor ({core['beat']['peers']:,} peers, paired rounds)",
            _range(paired, "x"),
            # Stated at 100k: below, every key is in cache and a Python call's ~40 ns shows.
            None
            if core["beat"]["peers"] < BEAT_TARGET_PEERS
            else paired["median"] <= BEAT_VS_FLOOR_MAX,
        )
    elif tracker and floor:
        ratio = tracker / floor
        add(
            "beat ≤ 1.5x the floor" + where,
            f"{ratio:.2f}x ({tracker:.0f} vs {floor:.0f} ns)",
            ratio <= BEAT_VS_FLOOR_MAX,
        )
    if tracker and timers:
        ratio = timers / tracker
        add(
            "beat ≥ 6x cheaper than asyncio timers" + where,
            f"{ratio:.1f}x cheaper",
            ratio >= TIMERS_VS_BEAT_MIN,
        )
    memory = results["bytes_per_peer"].get("1000000", {}).get("LivenessTracker")
    add(
        "≤ 64 B per peer at 1M (tracemalloc, keys excluded)",
        f"{memory:.0f} B" if memory else "not run (needs --full)",
        None if memory is None else memory <= BYTES_PER_PEER_MAX,
    )
    if core:
        upkeep = core["upkeep"]
        ratio = upkeep["ratio"]
        add(
            "≥ 50x less upkeep CPU than the full scan at equal precision"
            f" ({upkeep['peers']:,} peers, paired rounds)",
            _range(ratio, "x less", 1) + ("" if upkeep["correct"] else " **INCORRECT**"),
            None
            if upkeep["peers"] < TARGET_PEERS
            else ratio["median"] >= SCAN_VS_TRACKER_MIN and upkeep["correct"],
        )
    million = results["workloads"]["steady"].get("1000000", {})
    block = million.get("HeartbeatMonitor", {}).get("longest_block_ms")
    poll = million.get("LivenessTracker", {}).get("longest_block_ms")
    add(
        "longest poll ≤ 5 ms at 1M peers, steady state",
        f"driver {block:.1f} ms, tracker poll {poll:.1f} ms"
        if block is not None and poll is not None
        else "not run (needs --full)",
        None if block is None or poll is None else max(block, poll) <= STEADY_POLL_MAX_MS,
    )
    if core:
        mass = core["mass_expiry"]
        block, full = mass["probe_max_late_ms"], mass["gc_full_max_ms"]
        add(
            f"{mass['peers']:,} expiring at once, GC on: longest loop block ≤ 10 ms, "
            "no full collection > 10 ms",
            f"probe {block:.1f} ms wall ({mass['probe_max_cpu_block_ms']:.1f} ms CPU), "
            f"longest full collection {full:.1f} ms wall ({mass['gc_full_max_cpu_ms']:.1f} CPU)"
            + ("" if mass["all_expired"] else " **NOT ALL EXPIRED**"),
            None
            if mass["peers"] < TARGET_PEERS
            else block <= MASS_BLOCK_MAX_MS and full <= MASS_FULL_GC_MAX_MS and mass["all_expired"],
        )
    return out


def write_json(results: Results, folder: Path) -> Path:
    path = folder / "results.json"
    path.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    return path


_PLOTS = {
    "beat-cost.png": ("beat_ns", None, "cost of one beat (ns)"),
    "maintenance-cpu.png": (
        "workloads",
        "maintenance_cpu_ms_per_s",
        "steady-state maintenance CPU (ms per simulated s)",
    ),
    "longest-block.png": ("workloads", "longest_block_ms", "steady-state longest loop block (ms)"),
    "memory-per-peer.png": ("bytes_per_peer", None, "memory per peer (bytes, tracemalloc)"),
}


def plot(results: Results, folder: Path) -> list[Path]:
    """One PNG per figure: cost vs number of peers, one line per contender (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    for filename, (section, field, title) in _PLOTS.items():
        table = results[section]["steady"] if section == "workloads" else results[section]
        series: dict[str, list[tuple[int, float]]] = {}
        for size, rows in table.items():
            for name, value in rows.items():
                y = value[field] if field else value
                if y:
                    series.setdefault(name, []).append((int(size), float(y)))
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=80)
        for name, points in series.items():
            points.sort()
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("peers")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = folder / filename
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written
