"""The ``heartbeat-monitor`` command line (an application: it configures structlog).

The core owns the command: ``serve`` (any installed transport) and ``simulate``
live here. Other packages add to it through two entry-point groups, described
in ``docs/plugins.md``:

* ``heartbeat_monitor.adapters``: name -> a ``Transport`` class. ``serve
  --transport NAME`` serves it, built by a plugin's builder for NAME if one is
  registered, else as ``cls(host, port)``.
* ``heartbeat_monitor.cli``: name -> a :class:`CliPlugin`: extra commands,
  options for ``serve``, and builders of transports from those options.

An entry point that cannot be imported because a library is missing is an
extra that is not installed: ``--help`` lists it, and asking for what it would
provide says which ``pip install`` to run. Any other import failure is a broken
plugin and is reported on stderr at every run. Every operator mistake is one
line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, NoReturn

from ._connection import Transport
from ._logging import configure_cli_logging
from ._options import (
    ADAPTERS_GROUP,
    CLI_GROUP,
    CliPlugin,
    Command,
    TransportBuilder,
    UsageError,
    add_logging_arguments,
)
from ._simulate import SIMULATE
from ._transports import serve_command

__all__ = ("Plugins", "build_parser", "main")

PROG = "heartbeat-monitor"


@dataclass(frozen=True, slots=True)
class Unavailable:
    """An entry point that failed to load."""

    group: str
    name: str
    error: str
    #: ``pip install '...'`` when a library of an extra is missing, else ``None`` (broken).
    install: str | None

    def describe(self) -> str:
        if self.install:
            return f"{self.name} ({self.install})"
        return f"{self.name} (failed to load: {self.error})"


def _install_hint(entry: EntryPoint, exc: BaseException) -> str | None:
    """``pip install 'dist[extra]'`` for a library an extra of the entry's distribution has."""
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    missing = exc.name.partition(".")[0]
    if missing == entry.module.partition(".")[0]:
        return None  # the plugin's own package is missing or broken: not an extra
    dist = entry.dist
    if dist is None:
        return None
    extras: list[str] = []
    for requirement in dist.requires or ():
        match = re.match(r"([A-Za-z0-9._-]+).*extra\s*==\s*['\"]([^'\"]+)['\"]", requirement)
        if not match:
            continue
        package = match.group(1).lower().replace("_", "-")
        if package == missing.replace("_", "-") or package.endswith(f"-{missing}"):
            extras.append(match.group(2))
    extras = [extra for extra in extras if extra not in ("dev", "docs")]
    if not extras:
        return None
    for preferred in (entry.name, missing):
        if preferred in extras:
            return f"pip install '{dist.name}[{preferred}]'"
    return f"pip install '{dist.name}[{extras[0]}]'"


class Plugins:
    """The installed transports and command-line plugins, loaded once."""

    def __init__(self) -> None:
        self.transports: dict[str, Any] = {}
        self.builders: dict[str, TransportBuilder] = {}
        self.plugins: dict[str, CliPlugin] = {}
        self.unavailable: list[Unavailable] = []
        for entry in entry_points(group=ADAPTERS_GROUP):
            loaded = self._load(entry)
            if loaded is not None:
                self.transports[entry.name] = loaded
        for entry in entry_points(group=CLI_GROUP):
            plugin = self._load(entry)
            if plugin is None:
                continue
            if not isinstance(plugin, CliPlugin):
                self.unavailable.append(
                    Unavailable(CLI_GROUP, entry.name, "not a CliPlugin", install=None)
                )
                continue
            self.plugins[entry.name] = plugin
            self.builders.update(plugin.transports)

    def _load(self, entry: EntryPoint) -> Any:
        try:
            return entry.load()
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            install = _install_hint(entry, exc)
            self.unavailable.append(Unavailable(entry.group, entry.name, error, install))
            return None

    @property
    def broken(self) -> list[Unavailable]:
        return [item for item in self.unavailable if item.install is None]

    def transport_names(self) -> list[str]:
        names = set(self.transports)
        names |= {item.name for item in self.unavailable if item.group == ADAPTERS_GROUP}
        return sorted(names)

    def commands(self) -> Iterator[Command]:
        for plugin in self.plugins.values():
            yield from plugin.commands

    def serve_arguments(self) -> list[Callable[[argparse.ArgumentParser], None]]:
        return [p.serve_arguments for p in self.plugins.values() if p.serve_arguments is not None]

    def not_installed(self) -> str:
        """One clause naming the missing extras, for error lines and ``--help``."""
        missing = dict.fromkeys(item.describe() for item in self.unavailable if item.install)
        return "not installed: " + ", ".join(missing) if missing else ""

    def build_transport(self, args: argparse.Namespace) -> Transport:
        """The transport ``serve --transport NAME`` asked for, or :class:`UsageError`."""
        name: str = args.transport
        for item in self.unavailable:
            if item.group == ADAPTERS_GROUP and item.name == name:
                if item.install:
                    raise UsageError(f"the {name} transport is not installed: {item.install}")
                raise UsageError(f"the {name} transport failed to load: {item.error}")
        if name not in self.transports:
            raise UsageError(
                f"--transport: no transport {name!r}; installed: "
                + ", ".join(sorted(self.transports))
            )
        builder = self.builders.get(name)
        if builder is not None:
            return builder(args)
        factory: Any = self.transports[name]
        transport: Transport = factory(args.host, args.port)
        return transport


# -- the parser ------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, with every parse error on one line (no usage block) and a hint about
    missing extras when the error may come from one."""

    #: Appended to "invalid choice" and "unrecognized arguments" errors.
    hint = ""

    def error(self, message: str) -> NoReturn:
        message = message.replace("argument COMMAND: ", "")
        if self.hint and ("invalid choice" in message or "unrecognized arguments" in message):
            message += f"; {self.hint}"
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _add_command(
    commands: argparse._SubParsersAction[_Parser], command: Command, hint: str
) -> argparse.ArgumentParser:
    examples = "\n".join(f"  {line}" for line in command.examples)
    parser = commands.add_parser(
        command.name,
        help=command.help,
        description=command.description,
        epilog=f"examples:\n{examples}" if examples else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    assert isinstance(parser, _Parser)
    parser.hint = hint
    command.add_arguments(parser)
    add_logging_arguments(parser)
    parser.set_defaults(run=command.run)
    return parser


def build_parser(plugins: Plugins | None = None) -> argparse.ArgumentParser:
    """The whole command line, with every installed plugin."""
    plugins = Plugins() if plugins is None else plugins
    missing = plugins.not_installed()
    parser = _Parser(
        prog=PROG,
        description="Know which clients are alive: heartbeats, exact expiry, notices to the rest.",
        epilog=(
            f"examples:\n  {PROG} demo\n  {PROG} serve --transport tcp --port 9000\n"
            f"  {PROG} COMMAND --help" + (f"\n\n{missing}" if missing else "")
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.hint = missing
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = serve_command(
        plugins.transport_names(), plugins.build_transport, plugins.serve_arguments()
    )
    for command in (serve, *plugins.commands(), SIMULATE):
        _add_command(commands, command, missing)
    parser.set_defaults(plugins=plugins)
    return parser


def _unwrap(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _find_os_error(exc: BaseException) -> OSError | None:
    if isinstance(exc, OSError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find_os_error(inner)
            if found is not None:
                return found
    return None


#: Errors of binding a listening socket: an operator mistake, not a crash.
_CANNOT_LISTEN = (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES)


def _operator_mistake(exc: BaseException, args: argparse.Namespace) -> str | None:
    """The one line for an exception that is the operator's mistake, else ``None``."""
    inner = _unwrap(exc)
    if isinstance(inner, UsageError):
        return str(inner)
    error = _find_os_error(exc)
    if error is not None and error.errno in _CANNOT_LISTEN and hasattr(args, "port"):
        reason = os.strerror(error.errno).lower()
        return f"cannot listen on {args.host}:{args.port}: {reason}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2: an operator mistake)."""
    plugins = Plugins()
    for item in plugins.broken:
        print(f"{PROG}: warning: plugin {item.describe()}", file=sys.stderr)
    args = build_parser(plugins).parse_args(argv)  # SystemExit(2) on a mistake
    configure_cli_logging(args.log_format, args.log_level)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except BaseException as exc:  # sorted here; anything but a mistake is re-raised
        if isinstance(_unwrap(exc), KeyboardInterrupt):
            return 130
        message = _operator_mistake(exc, args)
        if message is None:
            raise
    print(f"{PROG} {args.command}: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
