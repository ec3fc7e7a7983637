"""``heartbeat-monitor serve``: one monitor, one hub, the transport named by ``--transport``.

Transports are found by entry point (``heartbeat_monitor.adapters``), so this
module imports no transport library: the core alone serves TCP and UDP, and a
transport whose extra is missing is reported with the ``pip install`` to run.
"""

from __future__ import annotations

import argparse
import math
import signal
from collections.abc import Callable, Sequence
from functools import partial
from importlib.metadata import entry_points

import anyio
import anyio.abc
import structlog

from ._connection import Transport
from ._errors import ConfigurationError
from ._hub import PeerHub
from ._metrics_cli import add_metrics_arguments, check_metrics_arguments, run_metrics
from ._monitor import HeartbeatMonitor
from ._options import (
    ADAPTERS_GROUP,
    Command,
    TransportBuilder,
    add_server_arguments,
    check_server_arguments,
)
from ._overload import OverloadGuard
from ._overload_cli import add_overload_arguments, overload_guard
from ._status import log_metrics_url

__all__ = ("available", "load_transport", "serve", "serve_command", "wait_for_stop")

_logger = structlog.get_logger("heartbeat_monitor")
#: ``--transport`` when none is given.
DEFAULT = "socketio"


def available() -> list[str]:
    """The names of the transports published as entry points, sorted."""
    return sorted({entry.name for entry in entry_points(group=ADAPTERS_GROUP)})


def load_transport(name: str) -> type[Transport]:
    """The transport class published under ``name``; :class:`ConfigurationError` if none."""
    for entry in entry_points(group=ADAPTERS_GROUP, name=name):
        loaded: type[Transport] = entry.load()
        return loaded
    raise ConfigurationError(f"no transport {name!r}; installed: {', '.join(available())}")


async def serve(
    transport: Transport,
    *,
    timeout: float,  # noqa: ASYNC109 -- the heartbeat timeout, not a deadline for this call
    resolution: float | None = None,
    metrics: bool = False,
    metrics_host: str = "127.0.0.1",
    metrics_port: int | None = None,
    overload: OverloadGuard | None = None,
    task_status: anyio.abc.TaskStatus[tuple[str, int]] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run a monitor and ``transport`` until cancelled; every departure is logged.

    ``metrics``: serve ``/metrics`` and ``/status`` too (see :func:`run_metrics`).
    Cancelled, the transport stops first while the monitor still runs callbacks (a
    cluster node's goodbyes go through them), then the monitor.
    """
    stopped = anyio.Event()
    async with anyio.create_task_group() as outer:
        monitor = await outer.start(_run_monitor, timeout, resolution, overload, stopped)
        try:
            hub = PeerHub(monitor)
            async with anyio.create_task_group() as task_group:
                mounted = metrics and await task_group.start(
                    partial(run_metrics, hub, transport, host=metrics_host, port=metrics_port)
                )
                host, port = await task_group.start(transport.serve, hub)
                if mounted:
                    log_metrics_url(host, port)
                url = getattr(transport, "url", None)
                _logger.info(
                    f"heartbeat_monitor.{transport.name}.serving",
                    host=host,
                    port=port,
                    timeout=timeout,
                    resolution=monitor.tracker.resolution,
                    **({"url": url} if url else {}),
                )
                task_status.started((host, port))
        finally:
            stopped.set()


async def _run_monitor(
    timeout: float,  # noqa: ASYNC109 -- the heartbeat timeout, not a deadline for this call
    resolution: float | None,
    overload: OverloadGuard | None,
    stopped: anyio.Event,
    *,
    task_status: anyio.abc.TaskStatus[HeartbeatMonitor],
) -> None:
    with anyio.CancelScope(shield=True):  # until serve() says so, once the transport stopped
        async with HeartbeatMonitor(timeout, resolution=resolution, overload=overload) as monitor:
            task_status.started(monitor)
            await stopped.wait()


async def wait_for_stop(duration: float | None = None) -> int | None:
    """Wait for SIGINT or SIGTERM (returns 128 + its number, the exit status) or ``duration``.

    Commands stop on it in order (the server first, so its clients end with "server
    shutdown") instead of letting the signal cancel every task at once.
    """
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        with anyio.move_on_after(math.inf if duration is None else duration):
            async for signum in signals:
                return 128 + signum
    return None


def _run(build: TransportBuilder, args: argparse.Namespace) -> int:
    timeout = check_server_arguments(args)
    metrics = check_metrics_arguments(args)
    transport = build(args)

    async def main() -> int:
        async with anyio.create_task_group() as task_group:
            await task_group.start(
                partial(
                    serve,
                    transport,
                    timeout=timeout,
                    resolution=args.resolution,
                    metrics=metrics,
                    metrics_host=args.host,
                    metrics_port=args.metrics_port,
                    overload=overload_guard(args, timeout),
                )
            )
            status = await wait_for_stop()
            task_group.cancel_scope.cancel()
        return status or 0

    return anyio.run(main)  # a port in use is reported by the command line's main()


def serve_command(
    names: Sequence[str],
    build: TransportBuilder,
    plugin_arguments: Sequence[Callable[[argparse.ArgumentParser], None]],
) -> Command:
    """``serve``: ``names`` for --transport, ``build`` makes the one asked for."""

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        add_server_arguments(parser, interval=5.0, port=8000)
        parser.add_argument(
            "--transport",
            default=DEFAULT,
            metavar="NAME",
            help=f"what clients connect with: {', '.join(names)} ({DEFAULT})",
        )
        add_metrics_arguments(parser)
        add_overload_arguments(parser)
        for add in plugin_arguments:
            add(parser)

    return Command(
        name="serve",
        help="watch clients' heartbeats on one transport; log every departure",
        description=(
            "Serve one transport. Clients beat every --interval seconds; a client silent\n"
            "for longer than --interval x --misses is ended with the reason 'heartbeat\n"
            "timeout' and the other clients are told. Departures are logged as they happen\n"
            "(JSON lines when stdout is not a terminal). Ctrl-C ends every client with\n"
            "'server shutdown' and exits with status 130."
        ),
        examples=(
            "heartbeat-monitor serve                               # Socket.IO on :8000",
            "heartbeat-monitor serve --transport tcp --port 9000 --interval 1",
            "heartbeat-monitor serve --transport websocket --misses 3",
            "heartbeat-monitor serve --transport udp --udp-key-file key.txt",
            "heartbeat-monitor serve --metrics            # + /metrics and /status on :8000",
            "heartbeat-monitor serve --transport tcp --metrics-port 9464",
        ),
        add_arguments=add_arguments,
        run=partial(_run, build),
    )
