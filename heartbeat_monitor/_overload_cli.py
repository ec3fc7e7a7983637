"""``serve``'s overload options (``--shed-lag``, ``--max-stretch``) and the guard they build."""

from __future__ import annotations

import argparse
import math

from ._overload import OverloadGuard

__all__ = ("add_overload_arguments", "overload_guard")


def _seconds_or_off(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, not {text!r}")
    return value


def add_overload_arguments(parser: argparse.ArgumentParser) -> None:
    """``--shed-lag`` and ``--max-stretch`` for ``serve`` (see docs/overload.md)."""
    group = parser.add_argument_group("overload (docs/overload.md)")
    group.add_argument(
        "--shed-lag",
        type=_seconds_or_off,
        default=None,
        metavar="SECONDS",
        help="refuse new clients ('server overloaded') while the event loop lags more than "
        "this; 0: never (0.25)",
    )
    group.add_argument(
        "--max-stretch",
        type=_seconds_or_off,
        default=None,
        metavar="SECONDS",
        help="the most a deadline waits for the server's own lag; 0: never "
        "(the timeout, at least 5)",
    )


def overload_guard(args: argparse.Namespace, timeout: float) -> OverloadGuard:
    """The :class:`OverloadGuard` the options ask for."""
    shed_lag: float | None = getattr(args, "shed_lag", None)
    max_stretch: float | None = getattr(args, "max_stretch", None)
    lag_factor = 0.0 if max_stretch == 0 else 1.0
    if shed_lag is None:  # the default, from the timeout
        return OverloadGuard(timeout, lag_factor=lag_factor, max_stretch=max_stretch or None)
    return OverloadGuard(
        timeout, shed_lag=shed_lag or None, lag_factor=lag_factor, max_stretch=max_stretch or None
    )
