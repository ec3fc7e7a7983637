"""``serve --shed-lag`` and ``--max-stretch``: the guard they build, and what argparse refuses."""

from __future__ import annotations

import argparse

import pytest

from heartbeat_monitor._overload_cli import add_overload_arguments, overload_guard


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_overload_arguments(parser)
    return parser.parse_args(argv)


def test_the_defaults():
    guard = overload_guard(parse(), timeout=2.0)
    assert (guard.shed_lag, guard.max_stretch, guard.lag_factor) == (0.25, 5.0, 1.0)


def test_the_options_set_the_guard():
    guard = overload_guard(parse("--shed-lag", "0.3", "--max-stretch", "8"), timeout=2.0)
    assert (guard.shed_lag, guard.recover_lag, guard.max_stretch) == (0.3, 0.15, 8.0)


def test_zero_turns_each_off():
    guard = overload_guard(parse("--shed-lag", "0", "--max-stretch", "0"), timeout=2.0)
    assert guard.shed_lag is None
    assert guard.lag_factor == 0.0
    guard.observe(10.0, now=0.0)
    assert guard.stretch_at(0.0) == 0.0


@pytest.mark.parametrize("bad", ["-1", "soon", "inf"])
def test_bad_values_are_one_line_errors(bad: str, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit):
        parse("--shed-lag", bad)
    assert "--shed-lag" in capsys.readouterr().err
