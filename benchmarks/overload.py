"""Overload: one ``serve`` process offered more clients than it can keep up with.

Two processes on loopback, as an operator would run them: a real
``heartbeat-monitor serve`` (its JSON log read line by line) and one Node
process (``tests/js/load.mjs``) holding many official socket.io-client
connections, each beating every ``--interval`` seconds. Clients open at
``--rate`` per second; a few go silent mid-run (the real departures, whose
detection lateness the server logs as ``late_by``); at the end every client
still connected leaves and the server is stopped with SIGINT.

**Capacity** is the most clients beating once a second that one process serves
with a median detection lateness under 50 ms (``--resolution 0.01``, so the
wheel adds at most 10 ms) and no refusal; it is found by doubling, then
bisecting. The table then offers 1.5x and 3x that load: accepted, refused (with
the reason clients got), false departures (a client that never stopped beating
but was disconnected, by any reason other than the end of the run; must be 0),
the detection lateness of the real departures and the server's measured lag.

Each transport is measured (``--transports socketio,websocket,tcp``): Socket.IO
with official socket.io-client connections beating once a second; websocket and
TCP with clients of the JSON wire beating ten times a second (:data:`BEATS`: one
such client is the load of ten beating once a second; their capacity is counted
in these clients).

Run: ``python -m benchmarks.overload`` (many minutes), or ``--capacity
socketio=N,websocket=N,tcp=N`` to skip the search. Needs Node and
``tests/js/node_modules`` (``npm ci``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = (
    "Calibration",
    "Outcome",
    "Server",
    "available",
    "calibrate",
    "cpu_share",
    "find_capacity",
    "main",
    "most",
    "offer",
    "rows",
    "table",
)

JS = Path(__file__).resolve().parents[1] / "tests" / "js"
#: What a refused Socket.IO client is told.
OVERLOADED = "server overloaded"


_EXPIRY_FIELDS = ("timestamp", "peer", "silent_for", "late_by", "stretch", "loop_lag")


def available() -> str | None:
    """``None`` when Node and the JS client are there; else what is missing."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not (JS / "node_modules" / "socket.io-client").is_dir():
        return "tests/js/node_modules is missing (cd tests/js && npm ci)"
    return None


def _epoch(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


class Server:
    """A ``heartbeat-monitor serve`` process; its JSON log lines in :attr:`lines`."""

    def __init__(
        self, *options: str, interval: float, misses: float, transport: str = "socketio"
    ) -> None:
        command = [
            sys.executable,
            "-m",
            "heartbeat_monitor._cli",
            "serve",
            "--port=0",
            f"--interval={interval}",
            f"--misses={misses}",
            "--log-format=json",
            "--log-level=debug",
            f"--transport={transport}",
            *options,
        ]
        # stderr goes to a file: a pipe nobody reads would block the server once full.
        self.stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115 -- stop() closes it
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=self.stderr, text=True, bufsize=1
        )
        self.lines: list[dict[str, Any]] = []
        self._errors = ""
        self.url: str | None = None
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(30) or self.url is None:
            self.stop()
            raise RuntimeError(f"serve did not start: {self.errors()[-2000:]!r}")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for text in self.process.stdout:
            try:
                line = json.loads(text)
            except ValueError:
                continue
            self.lines.append(line)
            if line.get("event", "").endswith(".serving"):
                self.url = line.get("url") or f"http://{line['host']}:{line['port']}"
                self.url = self.url.removesuffix("/").removesuffix("/socket.io")
                self._ready.set()
        self._ready.set()

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("event") == f"heartbeat_monitor.{name}"]

    def stop(self) -> int:
        """SIGINT, as Ctrl-C; every line read."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        if not self.stderr.closed:
            self._errors = self.errors()
            self.stderr.close()
        return self.process.returncode

    def errors(self) -> str:
        """What the server wrote to stderr (all of it once stopped)."""
        if self.stderr.closed:
            return self._errors
        self.stderr.seek(0)
        return self.stderr.read()


@contextlib.contextmanager
def serving(
    *options: str, interval: float, misses: float, transport: str = "socketio"
) -> Iterator[Server]:
    server = Server(*options, interval=interval, misses=misses, transport=transport)
    try:
        yield server
    finally:
        server.stop()


def run_load(url: str, **options: float | str) -> list[dict[str, Any]]:
    """Run ``tests/js/load.mjs`` to its end; its JSON lines."""
    node = shutil.which("node")
    assert node is not None
    args = [node, str(JS / "load.mjs"), f"--url={url}"]
    args += [f"--{key.replace('_', '-')}={value}" for key, value in options.items()]
    duration = float(options.get("duration", 30))
    done = subprocess.run(args, capture_output=True, text=True, timeout=duration + 120, check=False)
    lines = [json.loads(text) for text in done.stdout.splitlines() if text.startswith("{")]
    if not any(line["type"] == "summary" for line in lines):
        raise RuntimeError(f"load.mjs failed ({done.returncode}): {done.stderr[-2000:]}")
    return lines


@dataclass
class Outcome:
    """One run: what was offered and what happened (times in seconds)."""

    offered: int
    accepted: int
    refused: int
    #: connect_error messages (and other connect failures), by message.
    refusals: dict[str, int]
    #: Clients that never stopped beating but were disconnected before the end, by reason.
    false_departures: dict[str, int]
    #: Server-side ends of never-silent clients before the end, by reason (the same, seen there).
    false_ends: dict[str, int]
    silent: int
    #: Real departures detected: late_by (server), the stretch applied, and the client's view.
    late_by: list[float] = field(default_factory=list)
    stretch: list[float] = field(default_factory=list)
    #: How late the driver itself woke at each of those expiries (its event-loop latency).
    loop_lag: list[float] = field(default_factory=list)
    #: The server's expiry lines of clients that never stopped beating (false departures).
    expired_live: list[dict[str, Any]] = field(default_factory=list)
    #: What the server wrote to stderr (uvicorn's own log: tracebacks would be here).
    server_stderr: list[str] = field(default_factory=list)
    #: (time, overload_started / overload_ended / server_lagging, lag) from the server's log.
    sheds: list[tuple[str, str, float | None]] = field(default_factory=list)
    detected_after: list[float] = field(default_factory=list)
    max_lag: float = 0.0
    #: The highest age of a message taken from a connection's queue (Socket.IO; else 0).
    max_wait: float = 0.0
    server_refused: int = 0
    load_max_loop_lag: float = 0.0
    load_max_gap: float = 0.0

    @property
    def false_total(self) -> int:
        return sum(self.false_departures.values()) + sum(self.false_ends.values())

    def median_late(self) -> float | None:
        return statistics.median(self.late_by) if self.late_by else None

    def row(self) -> dict[str, Any]:
        median = self.median_late()
        return {
            "offered": self.offered,
            "accepted": self.accepted,
            "refused": self.refused,
            "refusals": self.refusals,
            "false departures": self.false_total,
            "false by reason": {**self.false_departures, **self.false_ends},
            "false expiries": self.expired_live[:5],
            "real departures": f"{len(self.late_by)}/{self.silent}",
            "late_by median ms": None if median is None else round(median * 1000, 1),
            "late_by max ms": round(max(self.late_by) * 1000, 1) if self.late_by else None,
            "stretch max ms": round(max(self.stretch, default=0) * 1000, 1),
            "server max lag ms": round(self.max_lag * 1000, 1),
            "server max wait ms": round(self.max_wait * 1000, 1),
            "load generator max lag ms": self.load_max_loop_lag,
        }


def offer(
    clients: int,
    *,
    interval: float = 1.0,
    misses: float = 2.0,
    rate: float = 200.0,
    duration: float = 40.0,
    silent: int = 20,
    silent_at: float | None = None,
    server_options: Sequence[str] = ("--resolution=0.01", "--room="),
    transport: str = "socketio",
) -> Outcome:
    """Offer ``clients`` clients to one fresh ``serve``; ``silent`` of them stop.

    ``transport``: ``socketio`` (socket.io-client), ``websocket`` or ``tcp`` (the
    JSON wire), both the server's ``--transport`` and the load generator's ``--protocol``.

    The silent ones stop one by one, a second apart, from ``silent_at`` (default:
    a quarter into what follows the ramp).
    """
    timeout = interval * misses
    ramp = clients / rate
    duration = max(duration, ramp + 15)  # every client offered, then a steady while
    if silent_at is None:
        silent_at = ramp + (duration - ramp) / 4
    duration = max(duration, silent_at + silent + 2 * timeout + 3)  # the last one is found
    with serving(*server_options, interval=interval, misses=misses, transport=transport) as server:
        assert server.url is not None
        lines = run_load(
            server.url,
            protocol=transport,
            clients=clients,
            interval=interval,
            rate=rate,
            duration=duration,
            silent=silent,
            silent_at=round(silent_at, 3),
            silent_every=1,
        )
    summary = next(line for line in lines if line["type"] == "summary")
    ended_at = summary["ended_at"] / 1000
    silent_ids = {line["id"] for line in lines if line["type"] == "silent"}
    false_departures: Counter[str] = Counter()
    detected_after = []
    for line in lines:
        if line["type"] != "disconnect":
            continue
        if line["silent"]:
            detected_after.append((line["t"] - line["last_beat"]) / 1000 - timeout)
        else:
            false_departures[line["reason"]] += 1
    false_ends: Counter[str] = Counter()
    for line in server.events("peer_gone"):
        # Once the run ends every client leaves at once: a client whose goodbye is still
        # in the server's backlog when its deadline comes is expired, and it did stop.
        if line["peer"] in silent_ids or _epoch(line["timestamp"]) >= ended_at - 0.5:
            continue
        false_ends[line["reason"]] += 1
    late_by, stretch, loop_lag = [], [], []
    expired_live = []
    connected_at = {line["id"]: line["t"] / 1000 for line in lines if line["type"] == "connected"}
    for line in server.events("peer_expired"):
        if _epoch(line["timestamp"]) < ended_at - 0.5 and not any(
            sid in str(line["peer"]) for sid in silent_ids
        ):
            found = {key: line.get(key) for key in _EXPIRY_FIELDS}
            sid = next((sid for sid in connected_at if sid in str(line["peer"])), None)
            if sid is not None:  # how long after its connect (a new client's first beat?)
                found["after_connect"] = round(_epoch(line["timestamp"]) - connected_at[sid], 3)
            expired_live.append(found)
        if any(sid in str(line["peer"]) for sid in silent_ids):
            late_by.append(float(line["late_by"]))
            stretch.append(float(line.get("stretch", 0.0)))
            loop_lag.append(float(line.get("loop_lag", 0.0)))
    stopped = server.events("stopped")
    sheds: list[tuple[str, str, float | None]] = [
        (str(line["timestamp"])[11:23], str(line["event"]).rsplit(".", 1)[1], line.get("lag"))
        for line in server.lines
        if line.get("event", "").endswith(("overload_started", "overload_ended", "server_lagging"))
    ]
    return Outcome(
        offered=summary["offered"],
        accepted=summary["connected"],
        refused=summary["refused"],
        refusals=summary["refusals"],
        false_departures=dict(false_departures),
        false_ends=dict(false_ends),
        silent=len(silent_ids),
        late_by=late_by,
        stretch=stretch,
        loop_lag=loop_lag,
        expired_live=expired_live,
        sheds=sheds,
        server_stderr=[line for line in server.errors().splitlines() if line.strip()],
        detected_after=detected_after,
        max_lag=float(stopped[-1]["max_lag"]) if stopped else float("nan"),
        max_wait=float(stopped[-1].get("max_wait", 0.0)) if stopped else float("nan"),
        server_refused=int(stopped[-1]["refused"]) if stopped else -1,
        load_max_loop_lag=summary["max_loop_lag"],
        load_max_gap=summary["max_gap"],
    )


@dataclass
class Calibration:
    """What one client beating once a second costs the server, and the CPU it can get now."""

    #: Server CPU seconds per heartbeat (psutil, over a window of steady beating).
    cost_per_beat: float
    #: The share of one core a busy process gets on this machine now (0..1).
    share: float

    @property
    def capacity(self) -> int:
        """Clients at 1 beat/s that would fill the share of a core this process can get."""
        return round(self.share / self.cost_per_beat)


def cpu_share(seconds: float = 1.0) -> float:
    """The CPU time a busy process gets per second of wall time on this machine now."""
    code = (
        "import time\n"
        f"end = time.monotonic() + {seconds}\n"
        "while time.monotonic() < end: pass\n"
        "print(time.process_time())"
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return min(1.0, float(done.stdout) / (time.monotonic() - started))


def calibrate(
    clients: int = 300, seconds: float = 6.0, *, transport: str = "socketio", interval: float = 1.0
) -> Calibration:
    """Server CPU per beat, ``clients`` beating every ``interval`` s (no overload); the share."""
    psutil: Any = importlib.import_module("psutil")  # the bench extra; no type stubs

    with serving("--room=", interval=interval, misses=2.0, transport=transport) as server:
        assert server.url is not None
        load = threading.Thread(
            target=run_load,
            args=(server.url,),
            kwargs={
                "clients": clients,
                "interval": interval,
                "rate": clients,
                "duration": seconds + 4,
                "protocol": transport,
            },
        )
        load.start()
        time.sleep(3.0)  # the clients connect and settle (the load generator's own pacing)
        process = psutil.Process(server.process.pid)
        before = process.cpu_times()
        share = cpu_share(seconds)
        after = process.cpu_times()
        load.join()
    used = (after.user - before.user) + (after.system - before.system)
    return Calibration(cost_per_beat=used * interval / (clients * seconds), share=share)


def _serves(outcome: Outcome, limit: float) -> bool:
    median = outcome.median_late()
    return (
        outcome.refused == 0
        and outcome.false_total == 0
        and median is not None
        and median < limit
        and outcome.accepted == outcome.offered
    )


def find_capacity(
    start: int = 500, *, limit: float = 0.05, step: int = 250, **options: Any
) -> tuple[int, list[tuple[int, Outcome]]]:
    """The most clients at 1 beat/s served with median lateness < ``limit``; every run made."""
    runs: list[tuple[int, Outcome]] = []

    def ok(clients: int) -> bool:
        outcome = offer(clients, **options)
        runs.append((clients, outcome))
        print(f"  {clients:>6} clients: {json.dumps(outcome.row())}", file=sys.stderr)
        return _serves(outcome, limit)

    return most(ok, start, step), runs


def most(ok: Callable[[int], bool], start: int, step: int) -> int:
    """The largest n with ``ok(n)``, to within ``step``: doubling from ``start``, then bisecting."""
    good, bad = 0, start
    while ok(bad):
        good, bad = bad, bad * 2
    while bad - good > step:
        middle = (good + bad) // 2
        if ok(middle):
            good = middle
        else:
            bad = middle
    return good


def rows(
    capacity: int, loads: Sequence[float] = (1.0, 1.5, 3.0), **options: Any
) -> list[dict[str, Any]]:
    """Offer ``capacity`` times each of ``loads`` clients to a fresh server; one row each."""
    found = []
    for multiple in loads:
        outcome = offer(round(capacity * multiple), **options)
        found.append({"load": multiple, **outcome.row()})
        print(f"  {json.dumps(found[-1])}", file=sys.stderr, flush=True)
    return found


#: How each transport's clients beat (seconds between beats, misses): Socket.IO once a
#: second; websocket and TCP clients cost the server so little (37.5 us a beat, against 92
#: us) that one process would keep more connections at 1 beat/s than a run should open, so
#: each beats ten times a second: the load of ten clients beating once a second.
BEATS = {"socketio": (1.0, 2.0), "websocket": (0.1, 20.0), "tcp": (0.1, 20.0)}
#: Connections opened per second, per transport.
RATES = {"socketio": 100.0, "websocket": 250.0, "tcp": 250.0}


def table(capacity: int, found: Sequence[dict[str, Any]], *, transport: str = "socketio") -> str:
    """The rows as a markdown table.

    The load generator's own lag is there to be read: when it is seconds, it could
    not send its clients' beats in time, and the row measures it, not the server.
    """
    interval = BEATS.get(transport, (1.0, 2.0))[0]
    lines = [
        f"{transport}: capacity {capacity} clients beating every {interval:g} s"
        f" (cpus: {os.cpu_count()}, load average {os.getloadavg()[0]:.2f})",
        "",
        "| load | offered | accepted | refused | false departures | real departures"
        " | late_by median / max ms | stretch max ms | server max lag ms"
        " | load generator max lag ms |",
        "|" + "---|" * 10,
    ]
    for row in found:
        lines.append(
            f"| {row['load']:g}x | {row['offered']} | {row['accepted']} | {row['refused']} "
            f"| {row['false departures']} | {row['real departures']} "
            f"| {row['late_by median ms']} / {row['late_by max ms']} | {row['stretch max ms']} "
            f"| {row['server max lag ms']} | {row['load generator max lag ms']} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--capacity",
        help="skip the search: the capacity to use (N for every transport, or"
        " socketio=N,websocket=N,tcp=N)",
    )
    parser.add_argument("--duration", type=float, default=40.0, help="seconds per run (40)")
    parser.add_argument("--rate", type=float, help="connections opened per s (per transport)")
    parser.add_argument("--loads", default="1,1.5,3", help="multiples of the capacity to offer")
    parser.add_argument(
        "--transports", default="socketio,websocket,tcp", help="which (socketio,websocket,tcp)"
    )
    args = parser.parse_args(argv)
    missing = available()
    if missing:
        print(f"skipped: {missing}", file=sys.stderr)
        return 1
    capacities: dict[str, int] = {}
    if args.capacity:
        for item in args.capacity.split(","):
            name, _, value = item.rpartition("=")
            for transport in [name] if name else args.transports.split(","):
                capacities[transport] = int(value)
    loads = [float(x) for x in args.loads.split(",")]
    for transport in args.transports.split(","):
        interval, misses = BEATS[transport]
        options = {
            "duration": args.duration,
            "rate": args.rate or RATES[transport],
            "interval": interval,
            "misses": misses,
            "transport": transport,
            "server_options": ("--resolution=0.01", "--room=")
            if transport == "socketio"
            else ("--resolution=0.01",),
        }
        capacity = capacities.get(transport)
        if capacity is None:
            print(f"{transport}: capacity search (median lateness < 50 ms)...", file=sys.stderr)
            capacity, _ = find_capacity(**options)
        print(table(capacity, rows(capacity, loads, **options), transport=transport), flush=True)
        print(flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
