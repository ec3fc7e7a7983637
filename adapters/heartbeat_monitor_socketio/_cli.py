"""The Socket.IO command-line plugin: ``serve --transport socketio`` and ``demo``.

Published as the ``socketio`` entry point of ``heartbeat_monitor.cli`` (see
``docs/plugins.md``); the core's ``serve`` runs the transport built here.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
from collections.abc import Hashable, Mapping
from typing import Any, ClassVar

import anyio
import anyio.abc
import structlog

from heartbeat_monitor import PeerGone, PeerHub, Reason
from heartbeat_monitor.cli import (
    CliPlugin,
    Command,
    UsageError,
    add_server_arguments,
    check_server_arguments,
    positive,
    positive_int,
    serve,
    wait_for_stop,
)

__all__ = ("PLUGIN", "SocketIOCommandLine")

_logger = structlog.get_logger("heartbeat_monitor")


def add_socketio_options(parser: argparse.ArgumentParser) -> None:
    """The options of the Socket.IO server (``serve --transport socketio`` and ``demo``)."""
    group = parser.add_argument_group("Socket.IO (--transport socketio)")
    group.add_argument("--namespace", default="/", help="Socket.IO namespace to watch (/)")
    group.add_argument(
        "--room",
        default="peers",
        help="room every client joins, to hear who comes and goes (peers)",
    )
    group.add_argument(
        "--notify",
        choices=("presence", "peer_gone", "both"),
        default=None,
        help="tell the others with presence diffs (one per room per window; cluster-wide with "
        "--redis-url), one peer_gone per departure (N x M messages), or both (presence)",
    )
    group.add_argument("--event", default="heartbeat", help="heartbeat event name (heartbeat)")
    group.add_argument(
        "--any-event", action="store_true", help="count any inbound event as a heartbeat"
    )
    group.add_argument(
        "--ping-interval",
        type=positive("seconds"),
        default=25.0,
        help="engine.io ping interval in seconds; rounded to whole seconds as advertised (25)",
    )
    group.add_argument(
        "--ping-timeout",
        type=positive("seconds"),
        default=20.0,
        help="engine.io ping timeout in seconds (20)",
    )
    group.add_argument(
        "--hidden-timeout",
        type=positive("seconds"),
        default=300.0,
        help="how long a client whose page said it is hidden may stay silent (300; "
        "docs/browser.md); browsers get the client module at /static/heartbeat.js",
    )
    group.add_argument(
        "--cors-allowed-origins",
        default="*",
        help="comma-separated origins allowed to connect, or * (*)",
    )


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    add_socketio_options(parser)


class SocketIOCommandLine:
    """The transport ``serve --transport socketio`` runs: a python-socketio server under
    uvicorn with a :class:`SocketIOAdapter` on the hub's monitor, in a cluster with
    ``--redis-url``."""

    name: ClassVar[str] = "socketio"

    def __init__(
        self, args: argparse.Namespace, *, identify: Any = None, on_gone: Any = None
    ) -> None:
        self.args = args
        self.identify = identify
        self.on_gone = on_gone
        #: The Socket.IO endpoint, once listening.
        self.url: str | None = None
        self.adapter: Any = None
        #: An ASGI app served beside python-socketio (``serve --metrics`` sets it).
        self.other_asgi_app: Any = None
        #: The running ``RedisCluster`` with ``--redis-url`` (``serve --metrics`` counts its nodes).
        self.cluster: Any = None
        #: The cluster's hooks, if the redis plugin added its options (``--redis-url``):
        #: ``manager(args)`` and ``around(args, adapter)``, see ``heartbeat_monitor_redis.cli``.
        self._cluster: Any = getattr(args, "cluster", None)
        # A bad --redis-url is refused before starting.
        self._manager = None if self._cluster is None else self._cluster.manager(args)
        if args.hidden_timeout < args.interval * args.misses:
            raise UsageError(
                f"--hidden-timeout ({args.hidden_timeout:g} s) must not be shorter than "
                f"--interval x --misses ({args.interval * args.misses:g} s)"
            )

    async def serve(
        self,
        hub: PeerHub,
        *,
        task_status: anyio.abc.TaskStatus[tuple[str, int]] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        import socketio

        from ._adapter import SocketIOAdapter
        from ._server import SocketIOServer
        from ._static import StaticModules

        args = self.args
        hub.notify = args.notify or "presence"
        origins = args.cors_allowed_origins
        cors: str | list[str] = "*" if origins == "*" else [o for o in origins.split(",") if o]
        sio = socketio.AsyncServer(
            async_mode="asgi",
            ping_interval=args.ping_interval,
            ping_timeout=args.ping_timeout,
            cors_allowed_origins=cors,
            client_manager=self._manager,
        )
        adapter = SocketIOAdapter(
            sio,
            hub=hub,
            interval=args.interval,
            misses=args.misses,
            event=args.event,
            namespace=args.namespace,
            any_event=args.any_event,
            room=args.room or None,
            identify=self.identify,
            on_gone=self.on_gone,
            engineio="fix",
            min_beat_gap=args.interval / 10,
            hidden_timeout=args.hidden_timeout,
        )
        server = SocketIOServer(
            adapter,
            host=args.host,
            port=args.port,
            other_asgi_app=StaticModules(app=self.other_asgi_app),  # /static/*.js, then the rest
        )
        self.adapter = adapter
        self.url = f"{server.url}/{server.path}/"

        async def run(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            # Shielded: cancelling serve() (Ctrl-C) stops uvicorn, which then shuts down in
            # full: every peer ends with "server shutdown" and the sockets are closed.
            with anyio.CancelScope(shield=True):
                await server.serve(task_status=task_status)

        cluster = self._cluster
        around = contextlib.nullcontext() if cluster is None else cluster.around(args, adapter)
        async with around as self.cluster, adapter, anyio.create_task_group() as task_group:
            await task_group.start(run)
            task_status.started((server.host, server.port))
            try:
                await anyio.sleep_forever()
            finally:
                server.stop()


# -- demo ------------------------------------------------------------------------------------


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    add_server_arguments(parser, interval=0.5, port=0)
    parser.add_argument("--clients", type=positive_int, default=4, help="beating clients (4)")
    parser.add_argument(
        "--silent", type=int, default=2, help="clients that go silent, one after another (2)"
    )
    parser.add_argument(
        "--duration",
        type=positive("seconds"),
        default=None,
        help="stop after this many seconds (default: run until Ctrl-C)",
    )
    add_socketio_options(parser)


def _identify(sid: str, environ: Mapping[str, Any], auth: Any) -> Hashable | None:
    """Demo clients connect with ``auth={"name": "client-N"}``: the name is the peer id."""
    name = auth.get("name") if isinstance(auth, dict) else None
    return name if isinstance(name, str) and name else None


class _Tally:
    """What the demo saw, for the summary at the end."""

    def __init__(self) -> None:
        self.clients = 0
        self.last_beat: dict[str, float] = {}
        self.ends: dict[str, tuple[str, float]] = {}
        self.notices = 0
        #: Set when the demo ends: later ends are the shutdown's, not departures.
        self.stopping = False

    def gone(self, event: PeerGone) -> None:
        if not self.stopping:
            self.ends.setdefault(str(event.key), (event.reason, anyio.current_time()))

    def summary(self) -> dict[str, Any]:
        timeout = Reason.HEARTBEAT_TIMEOUT
        expiries = {p: t for p, (r, t) in self.ends.items() if r == timeout}
        departures = [r for r, _ in self.ends.values() if r != timeout]
        latency = [t - self.last_beat[p] for p, t in expiries.items() if p in self.last_beat]
        figures: dict[str, Any] = {
            "clients": self.clients,
            "expiries": len(expiries),
            "departures": len(departures),
            "notices_delivered": self.notices,
        }
        if latency:
            figures["detection_latency_s"] = {
                "min": round(min(latency), 3),
                "median": round(statistics.median(latency), 3),
                "max": round(max(latency), 3),
            }
        return figures


def _run_demo(args: argparse.Namespace) -> int:
    """Serve in-process plus simulated clients: some beat, some go silent, one leaves."""
    timeout = check_server_arguments(args)
    if args.silent < 0:
        raise UsageError(f"--silent must be >= 0, not {args.silent}")
    tally = _Tally()
    transport = SocketIOCommandLine(args, identify=_identify, on_gone=tally.gone)

    status: int | None = None

    async def main() -> None:
        nonlocal status
        # The clients stop cooperatively (an Event, not cancellation): python-socketio's
        # client swallows CancelledError in places, which would confuse cancel scopes.
        stopping = anyio.Event()
        try:
            async with anyio.create_task_group() as clients:
                async with anyio.create_task_group() as server:
                    await server.start(
                        lambda task_status: serve(
                            transport,
                            timeout=timeout,
                            resolution=args.resolution,
                            task_status=task_status,
                        )
                    )
                    for index in range(args.clients + args.silent):
                        silent_after = leave_after = None
                        if index >= args.clients:
                            silent_after = timeout * (1 + 2 * (index - args.clients))
                        elif index == 0 and args.clients > 1:
                            leave_after = timeout * 2
                        clients.start_soon(
                            _demo_client, transport, args, tally, f"client-{index}", stopping,
                            silent_after, leave_after,
                        )  # fmt: skip
                    status = await wait_for_stop(args.duration)
                    # The server stops first: the clients still connected end with
                    # "server shutdown", not as departures.
                    tally.stopping = True
                    server.cancel_scope.cancel()
                stopping.set()
        finally:
            tally.stopping = True
            stopping.set()
            _logger.info("heartbeat_monitor.demo.summary", **tally.summary())

    anyio.run(main, backend="asyncio")
    return status or 0


async def _demo_client(
    transport: SocketIOCommandLine,
    args: argparse.Namespace,
    tally: _Tally,
    name: str,
    stopping: anyio.Event,
    silent_after: float | None,
    leave_after: float | None,
) -> None:
    import socketio

    from ._client import HeartbeatClient

    # handle_sigint=False: engine.io would otherwise cancel every task in the process on Ctrl-C.
    client = socketio.AsyncClient(reconnection=False, handle_sigint=False)

    def told(data: dict[str, Hashable]) -> None:
        tally.notices += 1
        _logger.info("heartbeat_monitor.demo.told", client=name, **data)

    def diff(data: dict[str, Any]) -> None:
        for peer, left in data.get("leaves", {}).items():
            told({"peer": peer, "reason": left["reason"]})

    client.on("peer_gone", told, namespace=args.namespace)
    client.on("presence_diff", diff, namespace=args.namespace)
    try:
        await client.connect(
            transport.url or "", namespaces=[args.namespace], auth={"name": name}, wait_timeout=5
        )
        tally.clients += 1
        _logger.info(
            "heartbeat_monitor.demo.client_started",
            client=name,
            sid=client.get_sid(args.namespace),
            goes_silent_after=silent_after,
            leaves_after=leave_after,
        )
        beating = HeartbeatClient(client, args.interval, event=args.event, namespace=args.namespace)
        until = leave_after if leave_after is not None else silent_after
        started = anyio.current_time()
        while not stopping.is_set():
            if until is not None and anyio.current_time() - started >= until:
                break
            if await beating.beat():
                tally.last_beat[name] = anyio.current_time()
            with anyio.move_on_after(args.interval):
                await stopping.wait()
        if stopping.is_set():
            return
        if leave_after is not None:
            _logger.info("heartbeat_monitor.demo.client_leaving", client=name)
            return
        _logger.info("heartbeat_monitor.demo.client_silent", client=name)
        await stopping.wait()  # the server disconnects it meanwhile
    finally:
        with anyio.CancelScope(shield=True):
            await client.disconnect()


DEMO = Command(
    name="demo",
    help="a Socket.IO server plus simulated clients, some going silent: watch expiry happen",
    description=(
        "Serve Socket.IO in this process and connect simulated clients to it. Every\n"
        "client beats every --interval seconds; --silent of them stop beating, one after\n"
        "another, and are expired once silent for --interval x --misses; one client\n"
        "leaves. The others are told each time (peer_gone). Clients are named client-N\n"
        "everywhere (the peer id); each one's Socket.IO sid is shown once, when it\n"
        "connects. A summary closes the run: clients, expiries, departures, notices\n"
        "delivered and the detection latency (last heartbeat to expiry)."
    ),
    examples=(
        "heartbeat-monitor demo",
        "heartbeat-monitor demo --duration 10",
        "heartbeat-monitor demo --clients 10 --silent 3 --interval 0.2 --log-format json",
    ),
    add_arguments=_demo_arguments,
    run=_run_demo,
)


#: The ``socketio`` entry point of ``heartbeat_monitor.cli``.
PLUGIN = CliPlugin(
    commands=(DEMO,),
    serve_arguments=_serve_arguments,
    transports={"socketio": SocketIOCommandLine},
)
