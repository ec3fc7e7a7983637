"""``heartbeat-monitor serve`` and ``heartbeat-monitor demo`` (the CLI loads ``register``).

This is application code: it configures structlog (:func:`configure_logging`,
reusable by other subcommands): a console renderer on a TTY, JSON lines otherwise.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Hashable
from typing import Any, Literal, TextIO

import anyio
import anyio.abc
import structlog

__all__ = ("configure_logging", "register")

LogFormat = Literal["auto", "console", "json"]


def configure_logging(
    log_format: LogFormat = "auto", *, level: str = "info", stream: TextIO | None = None
) -> None:
    """Configure structlog for a command: console on a TTY (or ``"console"``), else JSON lines."""
    import logging

    stream = sys.stdout if stream is None else stream
    if log_format == "auto":
        log_format = "console" if stream.isatty() else "json"
    renderer: Any
    if log_format == "console":
        renderer = structlog.dev.ConsoleRenderer()
    else:
        renderer = structlog.processors.JSONRenderer(default=repr)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, not {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {text!r}")
    return value


def _add_server_options(parser: argparse.ArgumentParser, *, interval: float, port: int) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=port, help=f"port to listen on ({port})")
    parser.add_argument(
        "--interval",
        type=_seconds,
        default=interval,
        help=f"heartbeat interval clients use, in seconds; fractions allowed ({interval})",
    )
    parser.add_argument(
        "--misses",
        type=_seconds,
        default=2.0,
        help="intervals a client may miss before it is gone; fractions allowed (2)",
    )
    parser.add_argument(
        "--resolution", type=_seconds, default=None, help="expiry resolution (timeout/10, max 1 s)"
    )
    parser.add_argument("--namespace", default="/", help="Socket.IO namespace to watch (/)")
    parser.add_argument(
        "--room", default="peers", help="room every client joins, to hear peer_gone (peers)"
    )
    parser.add_argument("--event", default="heartbeat", help="heartbeat event name (heartbeat)")
    parser.add_argument(
        "--any-event", action="store_true", help="count any inbound event as a heartbeat"
    )
    parser.add_argument(
        "--ping-interval",
        type=_seconds,
        default=25.0,
        help="engine.io ping interval; fractions are corrected to whole advertised seconds (25)",
    )
    parser.add_argument(
        "--ping-timeout", type=_seconds, default=20.0, help="engine.io ping timeout (20)"
    )
    parser.add_argument(
        "--cors-allowed-origins",
        default="*",
        help="comma-separated origins allowed to connect, or * (default *)",
    )
    parser.add_argument(
        "--log-format",
        choices=("auto", "console", "json"),
        default="auto",
        help="console on a TTY, JSON otherwise (auto)",
    )
    parser.add_argument("--log-level", default="info", help="debug, info, warning, error (info)")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``serve`` and ``demo`` to the ``heartbeat-monitor`` command line."""
    serve = commands.add_parser(
        "serve",
        help="run a Socket.IO server that watches its clients' heartbeats",
        description=(
            "Run python-socketio under uvicorn (path /socket.io/). Clients emit 'heartbeat' "
            "every --interval seconds; one silent for more than --misses intervals is "
            "disconnected, and the others (all in one room) receive peer_gone "
            '{"peer": <sid>, "reason": <str>}. Departures are logged live.'
        ),
    )
    _add_server_options(serve, interval=5.0, port=8000)
    from heartbeat_monitor._transports import add_transport_options

    add_transport_options(serve)  # --transport socketio|websocket|tcp|udp (entry points)
    from ._cluster_cli import add_cluster_options

    add_cluster_options(serve)
    serve.set_defaults(run=run_serve)

    demo = commands.add_parser(
        "demo",
        help="serve, plus a few simulated clients, some going silent: watch expiry happen",
    )
    _add_server_options(demo, interval=0.5, port=0)
    demo.add_argument("--clients", type=_positive_int, default=4, help="beating clients (4)")
    demo.add_argument("--silent", type=int, default=2, help="clients that go silent (2)")
    demo.add_argument(
        "--duration", type=_seconds, default=None, help="stop after this many seconds (Ctrl-C)"
    )
    demo.set_defaults(run=run_demo)


def _build(args: argparse.Namespace) -> Any:
    import socketio

    from ._adapter import SocketIOAdapter
    from ._cluster_cli import manager_for
    from ._server import SocketIOServer

    origins = args.cors_allowed_origins
    cors: str | list[str] = "*" if origins == "*" else [o for o in origins.split(",") if o]
    sio = socketio.AsyncServer(
        async_mode="asgi",
        ping_interval=args.ping_interval,
        ping_timeout=args.ping_timeout,
        cors_allowed_origins=cors,
        client_manager=manager_for(args),
    )
    adapter = SocketIOAdapter(
        sio,
        interval=args.interval,
        misses=args.misses,
        event=args.event,
        namespace=args.namespace,
        any_event=args.any_event,
        room=args.room or None,
        resolution=args.resolution,
        engineio="fix",
        min_beat_gap=args.interval / 10,
    )
    return SocketIOServer(adapter, host=args.host, port=args.port, signals=True)


def run_serve(args: argparse.Namespace) -> int:
    configure_logging(args.log_format, level=args.log_level)
    if args.transport != "socketio":
        from heartbeat_monitor._transports import run_serve as run_transport

        return run_transport(args)
    server = _build(args)
    from ._cluster_cli import cluster_for

    cluster = cluster_for(args, server.adapter)

    async def main() -> None:
        async with cluster, server.adapter, anyio.create_task_group() as task_group:
            await task_group.start(_serve_logged, server, args)

    anyio.run(main, backend="asyncio")
    server.raise_captured_signals()
    return 0


async def _serve_logged(
    server: Any,
    args: argparse.Namespace,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    logger = structlog.get_logger("heartbeat_monitor")
    async with anyio.create_task_group() as task_group:
        await task_group.start(server.serve)
        task_status.started()
        logger.info(
            "heartbeat_monitor.socketio.serving",
            url=f"{server.url}/socket.io/",
            namespace=args.namespace,
            interval=args.interval,
            misses=args.misses,
            timeout=server.adapter.timeout,
            heartbeat_event=args.event,
            room=args.room,
        )


def run_demo(args: argparse.Namespace) -> int:
    """``serve`` in-process plus simulated clients: some beat, some go silent, one leaves."""
    configure_logging(args.log_format, level=args.log_level)
    server = _build(args)

    async def main() -> None:
        # The clients stop cooperatively (an Event, not cancellation): python-socketio's
        # client swallows CancelledError in places, which would confuse cancel scopes.
        stopping = anyio.Event()
        async with server.adapter, anyio.create_task_group() as task_group:

            async def serve(*, task_status: anyio.abc.TaskStatus[None]) -> None:
                await _serve_logged(server, args, task_status=task_status)
                stopping.set()  # stopped by Ctrl-C: the clients stop too

            await task_group.start(serve)
            async with anyio.create_task_group() as clients:
                total = args.clients + max(0, args.silent)
                timeout = server.adapter.timeout
                for index in range(total):
                    silent_after = leave_after = None
                    if index >= args.clients:
                        silent_after = timeout * (1 + 2 * (index - args.clients))
                    elif index == 0 and args.clients > 1:
                        leave_after = timeout * 2
                    clients.start_soon(
                        _demo_client,
                        server,
                        args,
                        f"client-{index}",
                        stopping,
                        silent_after,
                        leave_after,
                    )
                if args.duration is not None:
                    with anyio.move_on_after(args.duration):
                        await stopping.wait()
                    stopping.set()
            server.stop()

    anyio.run(main, backend="asyncio")
    server.raise_captured_signals()
    return 0


async def _demo_client(
    server: Any,
    args: argparse.Namespace,
    name: str,
    stopping: anyio.Event,
    silent_after: float | None,
    leave_after: float | None,
) -> None:
    import socketio

    from ._client import HeartbeatClient

    logger = structlog.get_logger("heartbeat_monitor")
    # handle_sigint=False: engine.io would otherwise cancel every task in the process on Ctrl-C.
    client = socketio.AsyncClient(reconnection=False, handle_sigint=False)

    def told(data: dict[str, Hashable]) -> None:
        logger.info("heartbeat_monitor.demo.told", client=name, **data)

    client.on("peer_gone", told, namespace=args.namespace)
    try:
        await client.connect(server.url, namespaces=[args.namespace], wait_timeout=5)
        logger.info(
            "heartbeat_monitor.demo.client_started",
            client=name,
            sid=client.get_sid(args.namespace),
            goes_silent_after=silent_after,
            leaves_after=leave_after,
        )
        beating = HeartbeatClient(client, args.interval, event=args.event, namespace=args.namespace)
        until = leave_after if leave_after is not None else silent_after
        async with beating:
            with anyio.move_on_after(math.inf if until is None else until):
                await stopping.wait()
        if stopping.is_set():
            return
        if leave_after is not None:
            logger.info("heartbeat_monitor.demo.client_leaving", client=name)
            return
        logger.info("heartbeat_monitor.demo.client_silent", client=name)
        await stopping.wait()  # the server disconnects it meanwhile
    finally:
        with anyio.CancelScope(shield=True):
            await client.disconnect()
