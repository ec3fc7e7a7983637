"""Telling the others at scale: presence diffs side by side with one ``peer_gone`` per departure.

Socket.IO end to end on loopback, in processes of their own: a server
(python-socketio under uvicorn with a ``SocketIOAdapter``, ``--interval 1
--misses 2``, everyone in the room ``peers``) and crowds of clients. The
clients speak Socket.IO v5 over a websocket themselves (a few lines on
``websockets``: 1,000 python-socketio ``AsyncClient`` objects, each with its
own HTTP session, would measure the client library); the server is the real
thing. Each scenario runs with ``notify="presence"`` and with
``notify="peer_gone"`` in the same run:

* **kill** — 1,000 of 2,000 clients killed at once (SIGKILL of their process):
  when has every stayer heard of every departure, and how many server
  CPU-seconds did it take? (Target: within 2 s, <= 2 CPU-s.)
* **silent** — 500 of 1,000 clients stop beating at once: how late after its
  deadline (last beat + 2 s) does each stayer hear of each silent peer, and
  were healthy peers expired? (Target: within 1 s of the deadlines, none.)
* **joins** — 1,000 clients connect within about 1 s: how many diffs did the
  room get, and how close together? (Target: at most one per window.)

``python -m benchmarks.presence`` runs it (``--quick``: 200 / 100 / 200 clients);
``python -m benchmarks --presence`` runs it with the rest. It takes minutes.
``--only kill|silent|joins`` and ``--mode presence|peer_gone`` narrow it (for
finding costs; the targets are judged on a full run); ``--profile DIR`` samples the
server and one client process with py-spy (if installed) through each telling.
Besides the targets, each scenario reports where the time went: when the server
ended the last peer, each leave diff (seconds after the kill or the first deadline,
leaves), and the clients' own loop lag and CPU (they share the two cores).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ("main", "measure")

INTERVAL = 1.0
MISSES = 2
TIMEOUT = INTERVAL * MISSES
#: How long a mode may take to tell everyone before it is reported as not done.
CAP = 60.0
ROOM = "peers"
#: What follows each peer id among a presence_diff's "leaves" (peer ids here are sids).
_LEAVE = '":{"metas":'
#: Clients per client process.
PER_PROCESS = 250
ROOT = Path(__file__).resolve().parents[1]


# -- the server -----------------------------------------------------------------------------


def _quiet() -> None:
    """Warnings and worse only, on stderr: stdout is this process's answers to the parent."""
    import logging

    import structlog

    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


async def _serve(mode: str) -> None:
    import socket

    import socketio
    import uvicorn

    from heartbeat_monitor_socketio import SocketIOAdapter

    _quiet()
    sio = socketio.AsyncServer(async_mode="asgi", ping_interval=25, ping_timeout=20)
    adapter = SocketIOAdapter(
        sio, interval=INTERVAL, misses=MISSES, room=ROOM, notify=mode, min_beat_gap=0.0
    )
    hub = adapter.hub
    flushes: list[float] = []
    leaves: list[int] = []  # how many leaves each diff to the room carried
    audience = hub.audience

    class Counting:  # the adapter's audience, noting when the room is told a diff
        def tell(self, event: str, payload: Any, *, rooms: Any, exclude: Any) -> None:
            if event == "presence_diff" and payload["room"] == ROOM:
                flushes.append(time.monotonic())
                leaves.append(len(payload["leaves"]))
            audience.tell(event, payload, rooms=rooms, exclude=exclude)

        def send(self, event: str, payload: Any, connections: Any) -> None:
            audience.send(event, payload, connections)

    hub.audience = Counting()
    gone_at: dict[str, float] = {}  # peer -> when the server ended it
    hub.on_gone(lambda event: gone_at.setdefault(str(event.key), time.monotonic()))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    config = uvicorn.Config(
        socketio.ASGIApp(sio), log_level="error", lifespan="off", access_log=False, backlog=4096
    )
    server = uvicorn.Server(config)
    print(sock.getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()

    def report() -> None:  # SIGUSR1: what the server did, one JSON line
        gaps = [b - a for a, b in itertools.pairwise(flushes)]
        print(
            json.dumps(
                {
                    "diffs": len(flushes),
                    "first_diff": flushes[0] if flushes else None,
                    "last_diff": flushes[-1] if flushes else None,
                    "min_gap_s": min(gaps) if gaps else None,
                    "gone": dict(hub.gone),
                    "peers": len(hub),
                    "gone_at": gone_at,
                    "diff_times": flushes,
                    "diff_leaves": leaves,
                }
            ),
            flush=True,
        )

    loop.add_signal_handler(signal.SIGUSR1, report)
    async with adapter:
        await server.serve(sockets=[sock])


# -- the clients ----------------------------------------------------------------------------


class _Crowd:
    """Socket.IO clients over websockets: they beat, answer pings, note departures."""

    def __init__(self, url: str, count: int) -> None:
        self.url = url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
        self.count = count
        self.clients: list[_Client] = []
        self.ready = asyncio.Event()
        #: The departures to wait for, and each client's progress through them.
        self.expect: frozenset[str] = frozenset()
        self.gate = asyncio.Semaphore(64)  # handshakes at once
        #: Connections refused (the server shedding load) and tried again.
        self.retries = 0
        #: The most this process's event loop ran late (a 10 ms probe) since ``lag_reset``.
        self.max_lag = 0.0

    async def probe(self) -> None:
        """Measure how late this process's loop runs: are the clients the bottleneck?"""
        while True:
            asked = time.monotonic()
            await asyncio.sleep(0.01)
            self.max_lag = max(self.max_lag, time.monotonic() - asked - 0.01)

    def opened(self, client: _Client) -> None:
        self.clients.append(client)
        if len(self.clients) == self.count:
            self.ready.set()

    def status(self) -> dict[str, Any]:
        done = [c.done_at for c in self.clients if c.done_at is not None]
        return {
            "done": len(done),
            "of": len(self.clients),
            "last": max(done) if done else None,
            "heard_of_others": sum(c.others for c in self.clients),
            "retries": self.retries,
            "max_lag_s": self.max_lag,
        }

    def lateness(self, deadlines: dict[str, float]) -> float | None:
        """How long after its deadline the last client heard of the last departure."""
        since = {p: deadlines[p] for p in self.expect if p in deadlines}
        late = [c.heard[p] - t for c in self.clients for p, t in since.items() if p in c.heard]
        return max(late) if late else None


class _Client:
    """One Socket.IO client over a websocket."""

    __slots__ = ("beating", "crowd", "done_at", "heard", "last_beat", "others", "sid", "ws")

    def __init__(self, crowd: _Crowd) -> None:
        self.crowd = crowd
        self.ws: Any = None
        self.sid = ""
        self.beating = True
        self.last_beat = 0.0
        #: expected peer -> monotonic time this client first heard it was gone
        self.heard: dict[str, float] = {}
        self.done_at: float | None = None
        #: Departures heard of peers not expected to leave.
        self.others = 0

    async def run(self) -> None:
        from websockets.asyncio.client import connect

        crowd = self.crowd
        for attempt in range(30):  # a refused connection (the server sheds load) tries again
            try:
                async with crowd.gate:
                    ws = await connect(
                        crowd.url, max_size=None, ping_interval=None, compression=None
                    )
                    await ws.recv()  # engine.io's open packet
                    await ws.send("40")
                    reply = str(await ws.recv())
                if reply.startswith("40{"):
                    break
                await ws.close()
            except OSError:
                pass
            crowd.retries += 1
            await asyncio.sleep(0.2 * (attempt + 1))
        else:
            raise RuntimeError("a client could not connect in 30 attempts")
        self.ws = ws
        self.sid = json.loads(reply[reply.index("{") :])["sid"]
        crowd.opened(self)
        beat = asyncio.create_task(self._beat())
        try:
            async for message in ws:
                text = message if isinstance(message, str) else message.decode()
                if text == "2":
                    await ws.send("3")
                elif text.startswith(('42["presence_diff"', '42["peer_gone"')):
                    self._event(text)
        finally:
            beat.cancel()

    def _event(self, text: str) -> None:
        now = time.monotonic()  # when this client read it (before the work below)
        if text.startswith('42["presence_diff"'):
            gone = _leaves(text)
        elif text.startswith('42["peer_gone"'):
            gone = [json.loads(text[2:])[1]["peer"]]
        else:
            return
        expect = self.crowd.expect
        told = set(gone)  # set operations: a thousand leaves in C, not a Python loop
        self.others += len(told - expect)
        heard = self.heard
        fresh = (told & expect).difference(heard)
        for peer in fresh:
            heard[peer] = now
        if fresh and len(heard) == len(expect):
            self.done_at = now

    async def _beat(self) -> None:
        await asyncio.sleep(INTERVAL * (id(self) % 997) / 997)  # spread the beats
        while True:
            if self.beating:
                await self.ws.send('42["heartbeat"]')
                self.last_beat = time.monotonic()
            await asyncio.sleep(INTERVAL)


def _leaves(text: str) -> list[str]:
    """The peer ids of a ``presence_diff``'s leaves, without parsing the rest.

    A thousand clients share a process (and two cores with the server): parsing each
    diff in full, or even a regular expression over it, made the clients, not the
    server, the bottleneck (their loops ran a second and more late). The server writes
    "leaves" between "joins" and "updates", each leave as ``"<peer>":{"metas":[...``;
    a sid has no quote, and the metas' values (sids, reasons) hold no ``_LEAVE``.
    """
    start = text.find('"leaves":{')
    if start < 0 or text.startswith('"leaves":{}', start):
        return []
    end = text.find(',"updates":{', start)
    pieces = text[start + 9 : end].split(_LEAVE)
    return [piece[piece.rfind('"') + 1 :] for piece in pieces[:-1]]


async def _clients(url: str, count: int, rate: float) -> None:
    """Open ``count`` clients (``rate`` per second; 0: as fast as they go), then obey stdin."""
    _quiet()
    crowd = _Crowd(url, count)
    tasks = []
    for _ in range(count):
        tasks.append(asyncio.create_task(_Client(crowd).run()))
        if rate:
            await asyncio.sleep(1 / rate)
    await crowd.ready.wait()
    tasks.append(asyncio.create_task(crowd.probe()))
    print(json.dumps({"ids": [c.sid for c in crowd.clients]}), flush=True)
    reader = asyncio.StreamReader(limit=1 << 24)  # a command may list every peer
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        command = json.loads(line)
        answer: Any = None
        if command["cmd"] == "expect":
            crowd.expect = frozenset(command["peers"])
            answer = {"expecting": len(crowd.expect)}
        elif command["cmd"] == "silence":
            for client in crowd.clients:
                client.beating = False
            await asyncio.sleep(INTERVAL)  # a beat being sent now is the last
            answer = {c.sid: c.last_beat for c in crowd.clients}
        elif command["cmd"] == "lag_reset":
            crowd.max_lag = 0.0
        elif command["cmd"] == "status":
            answer = crowd.status()
        elif command["cmd"] == "late":
            answer = {"max_late_s": crowd.lateness(command["deadlines"])}
        print(json.dumps(answer), flush=True)


# -- the parent -----------------------------------------------------------------------------


class _Process:
    def __init__(self, *args: str) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.presence", *args],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def line(self) -> str:
        assert self.popen.stdout is not None
        line = self.popen.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark process {self.popen.args!r} ended early")
        return line

    def ask(self, **command: Any) -> Any:
        assert self.popen.stdin is not None
        self.popen.stdin.write(json.dumps(command) + "\n")
        self.popen.stdin.flush()
        return json.loads(self.line())

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()


class _Server(_Process):
    def __init__(self, mode: str) -> None:
        super().__init__("server", mode)
        self.url = f"http://127.0.0.1:{int(self.line())}"
        self.ps = importlib.import_module("psutil").Process(self.popen.pid)

    def cpu(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def settle(self, quiet: float = 0.35, longest: float = 60.0) -> float:
        """Wait until a second passes with less than ``quiet`` CPU-s of the server (the
        setup's backlog is done); the seconds waited."""
        started = time.monotonic()
        while time.monotonic() - started < longest:
            cpu = self.cpu()
            time.sleep(1.0)
            if self.cpu() - cpu < quiet:
                break
        return round(time.monotonic() - started, 1)

    def report(self) -> dict[str, Any]:
        self.popen.send_signal(signal.SIGUSR1)
        return dict(json.loads(self.line()))


def _crowd_process(server: _Server, count: int, rate: float = 150) -> tuple[_Process, list[str]]:
    crowd = _Process("clients", server.url, str(count), str(rate))
    return crowd, list(json.loads(crowd.line())["ids"])


class _Group:
    """Clients spread over processes of at most ``PER_PROCESS`` each (so that a client
    process busy reading what it is told does not starve its own heartbeats)."""

    def __init__(self, server: _Server, count: int) -> None:
        self.processes: list[_Process] = []
        self.ids: list[str] = []
        try:
            while len(self.ids) < count:
                process, ids = _crowd_process(server, min(PER_PROCESS, count - len(self.ids)))
                self.processes.append(process)
                self.ids += ids
        except BaseException:
            self.stop()
            raise

    def ask(self, **command: Any) -> list[Any]:
        return [process.ask(**command) for process in self.processes]

    def status(self) -> dict[str, Any]:
        parts = self.ask(cmd="status")
        lasts = [part["last"] for part in parts if part["last"] is not None]
        return {
            "done": sum(part["done"] for part in parts),
            "of": sum(part["of"] for part in parts),
            "last": max(lasts) if lasts else None,
            "heard_of_others": sum(part["heard_of_others"] for part in parts),
            "retries": sum(part["retries"] for part in parts),
            "client_max_lag_s": round(max(part["max_lag_s"] for part in parts), 3),
        }

    def cpu(self) -> float:
        """CPU-seconds these client processes used so far."""
        psutil = importlib.import_module("psutil")
        total = 0.0
        for process in self.processes:
            times = psutil.Process(process.popen.pid).cpu_times()
            total += times.user + times.system
        return total

    def kill(self) -> None:
        for process in self.processes:
            process.popen.send_signal(signal.SIGKILL)

    def stop(self) -> None:
        for process in self.processes:
            process.stop()


#: ``--profile DIR``: py-spy samples the server through each scenario's telling.
PROFILE: dict[str, str] = {}


def _profile(server: _Server, clients: _Group, name: str) -> list[subprocess.Popen[bytes]]:
    """Sample the server and one client process with py-spy (if ``--profile``)."""
    folder = PROFILE.get("dir")
    if not folder:
        return []
    spy = Path(sys.executable).with_name("py-spy")
    spies = []
    for who, process in (("server", server), ("client", clients.processes[0])):
        out = Path(folder) / f"{name}-{who}.txt"
        command = [str(spy), "record", "--pid", str(process.popen.pid), "--rate", "250"]
        command += ["--format", "raw", "--output", str(out), "--nonblocking"]
        spies.append(
            subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
    return spies


def _unprofile(spies: list[subprocess.Popen[bytes]]) -> None:
    for spy in spies:
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=30)


def _late(group: _Group, since: dict[str, float]) -> float | None:
    """The most any client of ``group`` heard of a departure after ``since[peer]``."""
    parts = [part["max_late_s"] for part in group.ask(cmd="late", deadlines=since)]
    return max((part for part in parts if part is not None), default=None)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _wait(group: _Group) -> dict[str, Any]:
    """Poll ``group`` until every client heard of every expected departure (or the cap)."""
    started = time.monotonic()
    while True:
        status = group.status()
        if status["done"] == status["of"] or time.monotonic() - started > CAP:
            return status
        time.sleep(0.1)


def _kill(mode: str, clients: int) -> dict[str, Any]:
    server = _Server(mode)
    groups: list[_Group] = []
    try:
        stayers = _Group(server, clients // 2)
        groups.append(stayers)
        doomed = _Group(server, clients - clients // 2)
        groups.append(doomed)
        stayers.ask(cmd="expect", peers=doomed.ids)
        setup_cpu = server.cpu()
        settled_in = server.settle()  # the joins told, everyone beating
        before = server.report()
        stayers.ask(cmd="lag_reset")
        spy = _profile(server, stayers, f"kill-{mode}")
        cpu, clients_cpu, killed_at = server.cpu(), stayers.cpu(), time.monotonic()
        doomed.kill()
        status = _wait(stayers)
        cpu = server.cpu() - cpu
        clients_cpu = stayers.cpu() - clients_cpu
        _unprofile(spy)
        told = status["done"] == status["of"]
        after = server.report()
        gone_at = after.pop("gone_at")
        before.pop("gone_at")
        times, leaves = after.pop("diff_times"), after.pop("diff_leaves")
        for key in ("diff_times", "diff_leaves"):
            before.pop(key)
        # the diffs that told the departures: when (s after the kill) and how many leaves each
        leave_diffs = [
            [round(t - killed_at, 3), n] for t, n in zip(times, leaves, strict=True) if n
        ]
        expired = after["gone"].get("heartbeat timeout", 0) - before["gone"].get(
            "heartbeat timeout", 0
        )
        return {
            "stayers": status["of"],
            "departures": len(doomed.ids),
            "stayers_told_all": status["done"],
            "all_told_within_s": round(status["last"] - killed_at, 3) if told else None,
            "server_ended_all_within_s": _rounded(
                max((gone_at[p] for p in doomed.ids if p in gone_at), default=killed_at) - killed_at
            ),
            "max_told_after_the_server_ended_it_s": _rounded(_late(stayers, gone_at)),
            "client_max_lag_s": status["client_max_lag_s"],
            "server_cpu_s": round(cpu, 3),
            "stayers_cpu_s": round(clients_cpu, 3),
            "leave_diffs": leave_diffs,
            "stayers_expired_meanwhile": expired,
            "setup": {"server_cpu_s": round(setup_cpu, 1), "settled_in_s": settled_in},
            "gone_before_the_kill": before["gone"],
            "server": after,
        }
    finally:
        for group in groups:
            group.stop()
        server.stop()


def _silent(mode: str, clients: int) -> dict[str, Any]:
    server = _Server(mode)
    groups: list[_Group] = []
    try:
        healthy = _Group(server, clients // 2)
        groups.append(healthy)
        silent = _Group(server, clients - clients // 2)
        groups.append(silent)
        healthy.ask(cmd="expect", peers=silent.ids)
        setup_cpu = server.cpu()
        settled_in = server.settle()  # the joins told, everyone beating
        healthy.ask(cmd="lag_reset")
        spy = _profile(server, healthy, f"silent-{mode}")
        cpu, clients_cpu = server.cpu(), healthy.cpu()
        last_beats: dict[str, float] = {}
        for part in silent.ask(cmd="silence"):
            last_beats.update(part)
        deadlines = {peer: beat + TIMEOUT for peer, beat in last_beats.items()}
        status = _wait(healthy)
        cpu = server.cpu() - cpu
        clients_cpu = healthy.cpu() - clients_cpu
        _unprofile(spy)
        late = _late(healthy, deadlines)
        time.sleep(TIMEOUT)  # long enough for a wrongly expired healthy peer to show
        report = server.report()
        gone_at = report.pop("gone_at")
        first_deadline = min(deadlines.values())
        leave_diffs = [
            [round(t - first_deadline, 3), n]
            for t, n in zip(report.pop("diff_times"), report.pop("diff_leaves"), strict=True)
            if n
        ]
        after = healthy.status()
        expired_late = [gone_at[p] - deadlines[p] for p in deadlines if p in gone_at]
        return {
            "stayers": status["of"],
            "silent": len(silent.ids),
            "stayers_told_all": status["done"],
            "max_after_deadline_s": None if late is None else round(late, 3),
            # the two parts of it: the server's expiry (wheel resolution, and the stall and
            # overload guards, which give a lagging server's peers more time), then the telling
            "max_expiry_after_deadline_s": round(max(expired_late), 3) if expired_late else None,
            "max_told_after_expiry_s": _rounded(_late(healthy, gone_at)),
            "healthy_expired": report["gone"].get("heartbeat timeout", 0) - len(silent.ids),
            "healthy_told_as_gone": after["heard_of_others"],
            "client_max_lag_s": status["client_max_lag_s"],
            "setup": {"server_cpu_s": round(setup_cpu, 1), "settled_in_s": settled_in},
            "server_cpu_s": round(cpu, 3),
            "stayers_cpu_s": round(clients_cpu, 3),
            "leave_diffs": leave_diffs,
            "server": report,
        }
    finally:
        for group in groups:
            group.stop()
        server.stop()


def _joins(mode: str, clients: int) -> dict[str, Any]:
    server = _Server(mode)
    crowds: list[_Process] = []
    try:
        observer, _ = _crowd_process(server, 1)
        crowds.append(observer)
        time.sleep(0.5)
        before = server.report()
        started = time.monotonic()
        crowd, _ = _crowd_process(server, clients, rate=clients)  # ~1 s of joins
        crowds.append(crowd)
        connected_in = time.monotonic() - started
        time.sleep(1.0)
        after = server.report()
        diffs = after["diffs"] - before["diffs"]
        span = (after["last_diff"] or 0) - (before["last_diff"] or after["first_diff"] or 0)
        return {
            "joins": clients,
            "connected_in_s": round(connected_in, 3),
            "diffs": diffs,
            "windows_spanned": math.ceil(span / 0.05) + 1 if diffs else 0,
            "min_gap_s": after["min_gap_s"],
        }
    finally:
        for crowd in crowds:
            crowd.stop()
        server.stop()


def measure(
    *,
    quick: bool = False,
    modes: Sequence[str] = ("presence", "peer_gone"),
    only: Sequence[str] = ("kill", "silent", "joins"),
) -> Any:
    """Every scenario, each mode in turn; the figures, with the targets met or not."""
    size = {"kill": 200 if quick else 2000, "silent": 100 if quick else 1000}
    joins = 200 if quick else 1000
    results: dict[str, Any] = {"interval_s": INTERVAL, "misses": MISSES, "cap_s": CAP}
    for name, run, count in (("kill", _kill, size["kill"]), ("silent", _silent, size["silent"])):
        if name not in only:
            continue
        results[name] = {}
        for mode in modes:
            print(f"presence benchmark: {name}, {count} clients, {mode}...", file=sys.stderr)
            results[name][mode] = run(mode, count)
    if "joins" in only:
        print(f"presence benchmark: joins, {joins} clients, presence...", file=sys.stderr)
        results["joins"] = _joins("presence", joins)
    kill = results.get("kill", {}).get("presence", {})
    silent = results.get("silent", {}).get("presence", {})
    within = kill.get("all_told_within_s")
    late = silent.get("max_after_deadline_s")
    results["targets"] = {
        "kill: every stayer told within 2 s": within is not None and within <= 2.0,
        "kill: <= 2 server CPU-s": kill.get("server_cpu_s", math.inf) <= 2.0,
        "silent: within 1 s of the deadlines": late is not None and late <= 1.0,
        "silent: no healthy peer expired": silent.get("healthy_expired") == 0,
        "joins: at most one diff per window": (
            (results.get("joins", {}).get("min_gap_s") or 1) >= 0.05
        ),
    }
    if hasattr(os, "getloadavg"):
        results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return results


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "server":
        asyncio.run(_serve(argv[1]))
        return 0
    if argv and argv[0] == "clients":
        asyncio.run(_clients(argv[1], int(argv[2]), float(argv[3])))
        return 0
    parser = argparse.ArgumentParser(prog="python -m benchmarks.presence", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="200 / 100 / 200 clients")
    parser.add_argument("--output", help="write the figures to this JSON file too")
    parser.add_argument("--profile", metavar="DIR", help="py-spy the server into DIR (raw)")
    parser.add_argument("--only", choices=("kill", "silent", "joins"), action="append")
    parser.add_argument("--mode", choices=("presence", "peer_gone"), action="append")
    args = parser.parse_args(argv)
    if args.profile:
        PROFILE["dir"] = args.profile
    results = measure(
        quick=args.quick,
        modes=args.mode or ("presence", "peer_gone"),
        only=args.only or ("kill", "silent", "joins"),
    )
    text = json.dumps(results, indent=2)
    print(text)
    if args.output:
        with open(args.output, "w") as file:
            file.write(text + "\n")
    return 0 if all(results["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
