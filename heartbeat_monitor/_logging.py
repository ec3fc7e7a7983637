"""structlog set-up for the command line. The library itself never configures logging."""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

import structlog

from ._episode import Episode

__all__ = ("LEVELS", "LogFormat", "configure_cli_logging")

LogFormat = Literal["auto", "console", "json"]
#: The levels ``--log-level`` accepts, least severe first.
LEVELS = ("debug", "info", "warning", "error")


def _peer_names(
    _logger: object, _method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """The hub keys the monitor by episode: show the peer's own id (and the episode number)."""
    peer = event.get("peer")
    if isinstance(peer, Episode):
        event["peer"] = peer.peer
        event.setdefault("episode", peer.number)
    return event


def configure_cli_logging(
    log_format: LogFormat = "auto", level: str = "info", stream: TextIO | None = None
) -> None:
    """Console renderer on a TTY, JSON lines otherwise (or as asked), to ``stream`` (stdout)."""
    stream = sys.stdout if stream is None else stream
    if log_format == "auto":
        log_format = "console" if stream.isatty() else "json"
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer()
        if log_format == "console"
        else structlog.processors.JSONRenderer(default=repr)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _peer_names,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info
            if log_format == "json"
            else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
