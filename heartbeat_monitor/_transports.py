"""Transports by name: the ``heartbeat_monitor.adapters`` entry points, and ``serve`` on one.

``heartbeat-monitor serve --transport websocket|tcp|udp`` lands here (the
Socket.IO ``serve`` command dispatches every other transport to
:func:`run_serve`). Adapters are found by entry point, so this module imports
no transport library: a transport whose extra is missing is simply not listed.
"""

from __future__ import annotations

import argparse
import os
from functools import partial
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import structlog

from ._connection import ENTRY_POINT_GROUP, Transport
from ._errors import ConfigurationError
from ._hub import PeerHub
from ._monitor import HeartbeatMonitor

__all__ = ("add_transport_options", "available", "load_transport", "run_serve", "serve")

_logger = structlog.get_logger("heartbeat_monitor")
#: The transport whose own ``serve`` command hosts the ``--transport`` flag.
DEFAULT = "socketio"


def available() -> list[str]:
    """The names of the installed transports (entry points), sorted."""
    return sorted({entry.name for entry in entry_points(group=ENTRY_POINT_GROUP)} | {DEFAULT})


def load_transport(name: str) -> type[Transport]:
    """The transport class published under ``name``; :class:`ConfigurationError` if none."""
    for entry in entry_points(group=ENTRY_POINT_GROUP, name=name):
        loaded: type[Transport] = entry.load()
        return loaded
    raise ConfigurationError(f"no transport {name!r}; installed: {', '.join(available())}")


def add_transport_options(parser: argparse.ArgumentParser) -> None:
    """``--transport`` and the options only the other transports take."""
    parser.add_argument(
        "--transport",
        choices=available(),
        default=DEFAULT,
        help=(
            f"which transport to serve ({DEFAULT}); the others use --host, --port, --interval, "
            "--misses, --resolution and the log flags, and ignore the Socket.IO-only ones"
        ),
    )
    parser.add_argument(
        "--udp-key-file",
        type=Path,
        default=None,
        help="udp: file holding the shared HMAC key (or set HEARTBEAT_MONITOR_UDP_KEY)",
    )


async def serve(
    transport: Transport,
    *,
    timeout: float,  # noqa: ASYNC109 -- the heartbeat timeout, not a deadline for this call
    resolution: float | None = None,
    task_status: anyio.abc.TaskStatus[tuple[str, int]] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run a monitor and ``transport`` until cancelled; every departure is logged."""
    async with HeartbeatMonitor(timeout, resolution=resolution) as monitor:
        hub = PeerHub(monitor)
        async with anyio.create_task_group() as task_group:
            host, port = await task_group.start(transport.serve, hub)
            _logger.info(
                f"heartbeat_monitor.{transport.name}.serving",
                host=host,
                port=port,
                timeout=timeout,
                resolution=monitor.tracker.resolution,
            )
            task_status.started((host, port))


def _options(args: argparse.Namespace) -> dict[str, Any]:
    if args.transport != "udp":
        return {}
    key: bytes | None = None
    if args.udp_key_file is not None:
        key = args.udp_key_file.read_bytes().strip()
    elif os.environ.get("HEARTBEAT_MONITOR_UDP_KEY"):
        key = os.environ["HEARTBEAT_MONITOR_UDP_KEY"].encode()
    if key is None:
        _logger.warning(
            "heartbeat_monitor.udp.no_key", hint="without a key anyone can beat for any peer"
        )
    return {"key": key}


def run_serve(args: argparse.Namespace) -> int:
    """``serve --transport NAME`` for every transport but Socket.IO (logging is configured)."""
    transport_class = load_transport(args.transport)
    factory: Any = transport_class
    transport: Transport = factory(args.host, args.port, **_options(args))
    timeout = args.interval * args.misses
    anyio.run(partial(serve, transport, timeout=timeout, resolution=args.resolution))
    return 0
