"""structlog set-up for the command line. The library itself never configures logging."""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

__all__ = ("LogFormat", "configure_cli_logging")

LogFormat = Literal["auto", "console", "json"]


def configure_cli_logging(log_format: LogFormat = "auto", level: str = "info") -> None:
    """Console renderer on a TTY, JSON lines otherwise (or as asked)."""
    if log_format == "auto":
        log_format = "console" if sys.stdout.isatty() else "json"
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer()
        if log_format == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
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
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
