"""The UDP command-line plugin: ``serve --transport udp`` with a shared key.

Published as the ``udp`` entry point of ``heartbeat_monitor.cli``. It imports
only the core and this package (no third-party library).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import structlog

from heartbeat_monitor.cli import CliPlugin, UsageError

from ._transport import UdpTransport

__all__ = ("PLUGIN",)

_logger = structlog.get_logger("heartbeat_monitor")
#: The environment variable that may hold the key instead of a file.
KEY_VARIABLE = "HEARTBEAT_MONITOR_UDP_KEY"


def _arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("UDP (--transport udp)")
    group.add_argument(
        "--udp-key-file",
        type=Path,
        default=None,
        help=f"file holding the shared HMAC key (or set {KEY_VARIABLE})",
    )


def _key(args: argparse.Namespace) -> bytes | None:
    path: Path | None = args.udp_key_file
    if path is not None:
        try:
            key = path.read_bytes().strip()
        except OSError as exc:
            raise UsageError(f"--udp-key-file {str(path)!r}: {exc.strerror or exc}") from None
        if not key:
            raise UsageError(f"--udp-key-file {str(path)!r} is empty")
        return key
    if os.environ.get(KEY_VARIABLE):
        return os.environ[KEY_VARIABLE].encode()
    return None


def _build(args: argparse.Namespace) -> UdpTransport:
    key = _key(args)
    if key is None:
        _logger.warning(
            "heartbeat_monitor.udp.no_key",
            hint="without a key anyone can beat for any peer",
            fix=f"--udp-key-file or {KEY_VARIABLE}",
        )
    return UdpTransport(args.host, args.port, key=key)


#: The ``udp`` entry point of ``heartbeat_monitor.cli``.
PLUGIN = CliPlugin(serve_arguments=_arguments, transports={"udp": _build})
