"""False expiries when the server's own event loop stalls: guard on vs off vs a naive scan.

Real sockets, real time. A client process keeps ``--peers`` TCP connections on
loopback and writes a beat line on each every ``--interval`` seconds, never
stopping. The server tracks each connection and counts a beat per line. After a
warm-up the server blocks its event loop with ``time.sleep`` for ``--stall``
seconds (2x the timeout by default) while the client keeps writing, then runs on.
Every expiry is a false one: nobody ever stopped beating.

Two ways a server reads a beat: ``direct`` (the read loop calls ``beat``) and
``task`` (each message is handled in a task of its own, as python-socketio does
with its default ``async_handlers=True``). With ``task``, after a stall the
driver's own timer runs before the handler tasks that carry the buffered beats.

Contenders, one after another against the same client load:

* ``monitor, guard on``  — HeartbeatMonitor with its default self-pause guard;
* ``monitor, guard off`` — the same with ``stall_limit=None``;
* ``naive scan``         — the source article's approach: a dict of last-seen
  times, scanned every interval by an asyncio task.

Run: ``python -m benchmarks.stall_guard`` (about a minute).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import textwrap
import time
from collections.abc import Callable

import structlog

from heartbeat_monitor import HeartbeatMonitor

_CLIENT = textwrap.dedent(
    """
    import asyncio, sys
    async def main(port, peers, interval):
        writers = []
        for _ in range(peers):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writers.append(writer)
        while True:
            for writer in writers:
                writer.write(b"beat\\n")
            await asyncio.sleep(interval)
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])))
    """
)


class _Contender:
    """track/beat/untrack plus an ``expired`` counter; ``run`` keeps it working."""

    def __init__(self) -> None:
        self.expired = 0

    def track(self, key: object) -> None: ...
    def beat(self, key: object) -> None: ...
    def untrack(self, key: object) -> None: ...
    async def run(self, ready: asyncio.Event) -> None: ...


class _Monitor(_Contender):
    def __init__(self, timeout: float, guard: bool) -> None:
        super().__init__()
        stall_limit = {} if guard else {"stall_limit": None}
        self.monitor = HeartbeatMonitor(timeout, on_expire=self._on_expire, **stall_limit)  # type: ignore[arg-type]
        self.track = self.monitor.track  # type: ignore[method-assign]
        self.beat = self.monitor.beat  # type: ignore[method-assign,assignment]
        self.untrack = self.monitor.untrack  # type: ignore[method-assign,assignment]

    def _on_expire(self, event: object) -> None:
        self.expired += 1

    async def run(self, ready: asyncio.Event) -> None:
        async with self.monitor:
            ready.set()
            await asyncio.Event().wait()


class _NaiveScan(_Contender):
    def __init__(self, timeout: float, interval: float) -> None:
        super().__init__()
        self.timeout, self.interval = timeout, interval
        self.last: dict[object, float] = {}

    def track(self, key: object) -> None:
        self.last[key] = time.monotonic()

    def beat(self, key: object) -> None:
        if key in self.last:
            self.last[key] = time.monotonic()

    def untrack(self, key: object) -> None:
        self.last.pop(key, None)

    async def run(self, ready: asyncio.Event) -> None:
        ready.set()
        while True:
            await asyncio.sleep(self.interval)
            now = time.monotonic()
            for key in [k for k, t in self.last.items() if now - t > self.timeout]:
                del self.last[key]
                self.expired += 1


async def _round(contender: _Contender, args: argparse.Namespace, dispatch: str) -> int:
    peers: set[asyncio.StreamWriter] = set()
    tasks: set[asyncio.Task[None]] = set()

    async def on_message(writer: asyncio.StreamWriter) -> None:
        contender.beat(writer)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.add(writer)
        contender.track(writer)
        try:
            while await reader.readline():
                if dispatch == "direct":
                    contender.beat(writer)
                else:
                    task = asyncio.create_task(on_message(writer))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
        except ConnectionError:
            pass
        finally:
            contender.untrack(writer)
            peers.discard(writer)
            writer.close()

    ready = asyncio.Event()
    runner = asyncio.create_task(contender.run(ready))
    await ready.wait()
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CLIENT, str(port), str(args.peers), str(args.interval)
    )
    try:
        deadline = time.monotonic() + 30
        while len(peers) < args.peers:
            if time.monotonic() > deadline:
                raise RuntimeError("the client process did not connect")
            await asyncio.sleep(0.05)
        await asyncio.sleep(args.warmup)
        before = contender.expired
        time.sleep(args.stall)  # noqa: ASYNC251 -- the point: the server's loop stalls
        await asyncio.sleep(args.after)
        return contender.expired - before
    finally:
        client.kill()
        await client.wait()
        server.close()
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.25)
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--stall", type=float, default=None, help="default: 2 x timeout")
    parser.add_argument("--warmup", type=float, default=1.5)
    parser.add_argument("--after", type=float, default=2.5)
    parser.add_argument("--repeat", type=int, default=3, help="rounds per cell (default 3)")
    args = parser.parse_args(argv)
    if args.stall is None:
        args.stall = 2 * args.timeout
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # errors only
    contenders: list[tuple[str, Callable[[], _Contender]]] = [
        ("monitor, guard on", lambda: _Monitor(args.timeout, guard=True)),
        ("monitor, guard off", lambda: _Monitor(args.timeout, guard=False)),
        ("naive scan", lambda: _NaiveScan(args.timeout, args.interval)),
    ]
    print(
        f"{args.peers} peers beating every {args.interval}s, timeout {args.timeout}s, "
        f"server loop blocked for {args.stall}s\n"
    )
    print("| contender | beat read by | false expiries per round | of peers |")
    print("|---|---|---|---|")
    for dispatch in ("direct", "task"):
        results: dict[str, list[int]] = {name: [] for name, _ in contenders}
        for _ in range(args.repeat):  # interleaved: machine noise hits all contenders alike
            for name, make in contenders:
                results[name].append(asyncio.run(_round(make(), args, dispatch)))
        for name, counts in results.items():
            shown = ", ".join(map(str, counts))
            print(f"| {name} | {dispatch} | {shown} | {args.peers} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
