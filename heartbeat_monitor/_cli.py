"""The ``heartbeat-monitor`` command line (an application: it configures structlog)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

__all__ = ("main",)

#: Subcommands contributed by optional packages: (module, function). Each function
#: receives the argparse subparsers object and adds its commands; a module that cannot
#: be imported (its extra is not installed) is skipped.
_PLUGINS: tuple[tuple[str, str], ...] = (
    ("heartbeat_monitor_socketio._cli", "register"),
    ("benchmarks._cli", "register"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="heartbeat-monitor", description="Liveness monitoring for Python servers."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from ._simulate import register as register_simulate

    register_simulate(commands)
    import importlib

    for module_name, function in _PLUGINS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        register: Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None] = getattr(
            module, function
        )
        register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
