"""What a command-line plugin builds on (``heartbeat_monitor.cli`` entry points).

See ``docs/plugins.md``: a :class:`CliPlugin` adds commands, options for
``serve`` and builders of transports from those options; :class:`UsageError`
is an operator mistake (one line, exit status 2); :func:`serve` runs a
monitor, a hub and one transport until cancelled.
"""

from __future__ import annotations

from ._logging import configure_cli_logging
from ._options import (
    ADAPTERS_GROUP,
    CLI_GROUP,
    CliPlugin,
    Command,
    TransportBuilder,
    UsageError,
    add_logging_arguments,
    add_server_arguments,
    add_timing_arguments,
    check_server_arguments,
    check_timing_arguments,
    port_number,
    positive,
    positive_int,
)
from ._transports import serve, wait_for_stop

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
    "configure_cli_logging",
    "port_number",
    "positive",
    "positive_int",
    "serve",
    "wait_for_stop",
)
