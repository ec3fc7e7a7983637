"""The command line's shared parts: plugin types, option types, one-line operator errors.

Public as :mod:`heartbeat_monitor.cli` for plugins (see ``docs/plugins.md``).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._logging import LEVELS

if TYPE_CHECKING:
    from ._connection import Transport

__all__ = (
    "ADAPTERS_GROUP",
    "CLI_GROUP",
    "CliPlugin",
    "Command",
    "TransportBuilder",
    "UsageError",
    "add_logging_arguments",
    "add_server_arguments",
    "add_timing_arguments",
    "check_server_arguments",
    "check_timing_arguments",
    "port_number",
    "positive",
    "positive_int",
)

#: Transports by name (``Transport`` classes), as the adapters publish them.
ADAPTERS_GROUP = "heartbeat_monitor.adapters"
#: Command-line plugins (:class:`CliPlugin` objects).
CLI_GROUP = "heartbeat_monitor.cli"


class UsageError(Exception):
    """An operator mistake: printed as one line, exit status 2."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    """A subcommand: ``heartbeat-monitor NAME``."""

    name: str
    #: One line for the command list.
    help: str
    #: Plain text for ``NAME --help`` (no markup).
    description: str
    #: Command lines shown under "examples:" in ``--help``.
    examples: Sequence[str]
    add_arguments: Callable[[argparse.ArgumentParser], None]
    #: Runs the command; returns the exit status. Raise :class:`UsageError` for a mistake.
    run: Callable[[argparse.Namespace], int]


#: Builds a transport from ``serve``'s parsed options (raise :class:`UsageError` if bad).
TransportBuilder = Callable[[argparse.Namespace], "Transport"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CliPlugin:
    """What a ``heartbeat_monitor.cli`` entry point names.

    The module holding it must import with the core alone where it can; its
    ``run`` and builders import the transport's libraries when they run.
    """

    #: Extra subcommands (``demo``).
    commands: Sequence[Command] = ()
    #: Adds this plugin's options to ``serve`` (use an argument group titled by the plugin).
    serve_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    #: ``serve --transport NAME``: how to build NAME from the options.
    transports: Mapping[str, TransportBuilder] = field(default_factory=dict)


# -- argument types: each error is one line that names the option ---------------------------


def positive(what: str = "number") -> Callable[[str], float]:
    """An argparse type: a finite number > 0 (``what`` names it in the error: "seconds")."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"must be a number of {what} > 0, not {text!r}")
        return value

    return parse


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, not {text!r}")
    return value


def port_number(text: str) -> int:
    """An argparse type: a TCP/UDP port, 0..65535 (0: any free port)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0..65535 (0: any free port), not {text!r}")
    return value


def add_logging_arguments(parser: argparse.ArgumentParser) -> None:
    """``--log-format`` and ``--log-level`` (every command has them)."""
    group = parser.add_argument_group("logging")
    group.add_argument(
        "--log-format",
        choices=("auto", "console", "json"),
        default="auto",
        help="console on a terminal, JSON lines otherwise (auto)",
    )
    group.add_argument(
        "--log-level", choices=LEVELS, default="info", help="least severe level shown (info)"
    )


def add_timing_arguments(parser: argparse.ArgumentParser, *, interval: float) -> None:
    """``--interval``, ``--misses`` and ``--resolution``: how long a peer may be silent."""
    parser.add_argument(
        "--interval",
        type=positive("seconds"),
        default=interval,
        help=f"seconds between a client's heartbeats; fractions allowed ({interval:g})",
    )
    parser.add_argument(
        "--misses",
        type=positive("misses"),
        default=2.0,
        help="intervals a client may miss before it is gone; timeout = interval x misses (2)",
    )
    parser.add_argument(
        "--resolution",
        type=positive("seconds"),
        default=None,
        help="how late an expiry may fire, in seconds, at most the timeout (timeout/10, max 1)",
    )


def check_timing_arguments(args: argparse.Namespace) -> float:
    """The timeout (interval x misses); :class:`UsageError` if ``--resolution`` exceeds it."""
    timeout: float = args.interval * args.misses
    if args.resolution is not None and args.resolution > timeout:
        raise UsageError(
            f"--resolution {args.resolution:g} is larger than the timeout "
            f"(interval {args.interval:g} x misses {args.misses:g} = {timeout:g} s)"
        )
    return timeout


def add_server_arguments(parser: argparse.ArgumentParser, *, interval: float, port: int) -> None:
    """Where to listen and how long a peer may be silent (``serve``, ``demo``)."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument(
        "--port",
        type=port_number,
        default=port,
        help=f"port to listen on; 0: any free one ({port})",
    )
    add_timing_arguments(parser, interval=interval)


def check_server_arguments(args: argparse.Namespace) -> float:
    """Checks the options parsing cannot (host, resolution); returns the timeout."""
    import socket

    try:
        socket.getaddrinfo(args.host, None)
    except (OSError, UnicodeError) as exc:
        raise UsageError(f"--host {args.host!r} does not resolve ({exc})") from None
    return check_timing_arguments(args)
