"""Argument checks shared by the core: bad configuration fails at construction, clearly."""

from __future__ import annotations

import math

from ._errors import ConfigurationError

__all__ = ("fraction", "optional_seconds", "positive")


def positive(name: str, value: float, unit: str = " of seconds") -> float:
    """A finite number > 0 (not a bool), as a float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{name} must be a number{unit}, not {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigurationError(f"{name} must be a finite number{unit} > 0, not {value!r}")
    return float(value)


def optional_seconds(name: str, value: float | None) -> float | None:
    return None if value is None else positive(name, value)


def fraction(name: str, value: float | None) -> float | None:
    """``None``, or a number strictly between 0 and 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise ConfigurationError(
            f"{name} must be a fraction strictly between 0 and 1, not {value!r}"
        )
    return float(value)
