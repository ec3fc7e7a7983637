"""``serve --metrics``: its options, their checks, and :class:`Metrics` beside a transport."""

from __future__ import annotations

import argparse
from typing import Final

import anyio
import anyio.abc

from ._connection import Transport
from ._errors import ConfigurationError
from ._hub import PeerHub
from ._metrics import Metrics
from ._options import UsageError, port_number
from ._prometheus import prometheus_client
from ._status import serve_status

__all__ = (
    "DEFAULT_METRICS_PORT",
    "add_metrics_arguments",
    "check_metrics_arguments",
    "run_metrics",
)

#: ``serve --metrics`` on a transport with no HTTP server to mount on: this port.
DEFAULT_METRICS_PORT: Final = 9464


def add_metrics_arguments(parser: argparse.ArgumentParser) -> None:
    """``--metrics`` and ``--metrics-port`` for ``serve``."""
    group = parser.add_argument_group("metrics and the status page")
    group.add_argument(
        "--metrics",
        action="store_true",
        help=(
            "serve /metrics (Prometheus), /status (a live page) and /status.json: on the "
            "Socket.IO server itself; for the other transports on --metrics-port"
        ),
    )
    group.add_argument(
        "--metrics-port",
        type=port_number,
        default=None,
        metavar="PORT",
        help=f"serve them on this port of --host (implies --metrics; else {DEFAULT_METRICS_PORT})",
    )


def check_metrics_arguments(args: argparse.Namespace) -> bool:
    """Whether ``--metrics`` is on; a one-line :class:`UsageError` for what cannot work."""
    if not (getattr(args, "metrics", False) or getattr(args, "metrics_port", None) is not None):
        return False
    try:
        prometheus_client()
    except ConfigurationError as exc:
        raise UsageError(f"--metrics: {exc}") from None
    if args.metrics_port and args.metrics_port == args.port:
        raise UsageError(f"--metrics-port {args.metrics_port} is --port: give another one")
    return True


async def run_metrics(
    hub: PeerHub,
    transport: Transport,
    *,
    host: str,
    port: int | None = None,
    task_status: anyio.abc.TaskStatus[bool] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """``serve --metrics``: :class:`Metrics` of ``hub``, its sampler, and its app until cancelled.

    The app is mounted on ``transport`` when it serves HTTP itself (it has an
    ``other_asgi_app`` attribute, read when it starts: Socket.IO) and ``port`` is
    ``None``; else it is served on ``host:port``. ``started`` with whether it was
    mounted; call this before starting the transport. A transport that runs a
    Redis cluster node exposes it as ``cluster``: its nodes are counted too.
    """
    metrics = Metrics(hub)
    metrics.watch_cluster(lambda: getattr(transport, "cluster", None))  # serve --redis-url
    async with anyio.create_task_group() as task_group:
        await task_group.start(metrics.run)
        app = metrics.app()
        if port is None and hasattr(transport, "other_asgi_app"):
            transport.other_asgi_app = app
            task_status.started(True)
        else:
            await task_group.start(
                serve_status, app, host, DEFAULT_METRICS_PORT if port is None else port
            )
            task_status.started(False)
