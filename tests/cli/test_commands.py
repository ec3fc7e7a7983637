"""The documented commands, run as a user runs them (real processes, real clients)."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from ._run import run_cli, run_smoke

COMMANDS = ["serve", "demo", "simulate"]


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["tcp", "udp", "websocket", "socketio"])
def test_serve_expires_the_silent_client_and_tells_the_beating_one(transport):
    result = run_smoke("serve", transport)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ok  serve --transport")


@pytest.mark.slow
def test_demo_speaks_client_names_and_ends_with_a_summary():
    result = run_cli(
        "demo", "--duration", "5", "--interval", "0.3", "--clients", "3", "--silent", "2",
        "--log-format", "json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    started = [e for e in events if e["event"] == "heartbeat_monitor.demo.client_started"]
    names = {e["client"] for e in started}
    assert names == {f"client-{i}" for i in range(5)}
    sids = {e["sid"] for e in started}
    gone = [e for e in events if e["event"] == "heartbeat_monitor.peer_gone"]
    told = [e for e in events if e["event"] == "heartbeat_monitor.demo.told"]
    assert {e["peer"] for e in gone} <= names  # peers are named, not sids ...
    assert {e["peer"] for e in told} <= names
    expired = [e for e in events if e["event"] == "heartbeat_monitor.peer_expired"]
    assert {e["peer"] for e in expired} == {"client-3", "client-4"}
    connecting = {
        "heartbeat_monitor.demo.client_started",
        "heartbeat_monitor.socketio.peer_connected",
    }
    for event in events:  # ... and a sid is shown only as its client connects
        if event["event"] not in connecting:
            assert not sids & {str(v) for v in event.values()}, event
    [summary] = [e for e in events if e["event"] == "heartbeat_monitor.demo.summary"]
    assert summary["clients"] == 5
    assert summary["expiries"] == 2  # the two silent clients
    assert summary["departures"] == 1  # client-0 leaves
    assert summary["notices_delivered"] == len(told)
    latency = summary["detection_latency_s"]
    assert 0.6 <= latency["min"] <= latency["median"] <= latency["max"]  # never early


def test_simulate_through_the_smoke_check_ci_runs():
    result = run_smoke("simulate")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ok  simulate:")


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_a_description_and_examples_and_no_markup(command):
    result = run_cli(command, "--help")
    assert result.returncode == 0
    text = result.stdout
    assert "examples:\n  heartbeat-monitor " + command in text
    description = text.split("\n\n")[1]
    assert len(description.split()) > 10, description
    for markup in ("``", ":class:", ":func:", ":mod:"):
        assert markup not in text


def test_python_dash_m_is_the_same_command():
    import subprocess

    result = subprocess.run(
        [sys.executable, "-m", "heartbeat_monitor", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    assert "usage: heartbeat-monitor" in result.stdout


def test_top_level_help_lists_every_command():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in COMMANDS:
        assert f"    {command} " in result.stdout
    assert "bench" not in result.stdout  # a source-tree tool: python -m benchmarks


BLOCK = "import sys; sys.modules.update({name: None for name in sys.argv[1].split(',')}); "
MAIN = "from heartbeat_monitor._cli import main; sys.exit(main(sys.argv[2:]))"


def run_without(modules: str, *args: str):
    """The command line in a process where ``modules`` cannot be imported (an extra missing)."""
    import subprocess

    return subprocess.run(
        [sys.executable, "-c", BLOCK + MAIN, modules, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("blocked", "arguments", "install"),
    [
        ("socketio", ["serve", "--port", "0"], "[socketio]"),
        ("socketio", ["demo"], "[socketio]"),
        ("uvicorn", ["serve", "--port", "0"], "[socketio]"),
        ("websockets", ["serve", "--transport", "websocket", "--port", "0"], "[websockets]"),
        ("redis", ["serve", "--port", "0", "--redis-url", "redis://127.0.0.1:1/0"], "[redis]"),
    ],
)
def test_a_missing_extra_is_one_line_naming_the_pip_install(blocked, arguments, install):
    result = run_without(blocked, *arguments)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"pip install 'aio-heartbeat-monitor{install}'" in lines[0]


def test_the_core_alone_still_serves_tcp_and_simulates():
    result = run_without("socketio,websockets,redis,uvicorn", "--help")
    assert result.returncode == 0
    assert "not installed: socketio (pip install 'aio-heartbeat-monitor[socketio]')" in (
        result.stdout
    )
    result = run_without("socketio,websockets,redis,uvicorn", "simulate", "--duration", "1")
    assert result.returncode == 0, result.stderr


def test_a_broken_plugin_is_reported_not_skipped(tmp_path):
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('this plugin is broken')\n")
    info = tmp_path / "broken_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        textwrap.dedent(
            """
            [heartbeat_monitor.cli]
            broken = broken_plugin:PLUGIN

            [heartbeat_monitor.adapters]
            pigeon = no_such_module:PigeonTransport
            """
        )
    )
    env = {"PYTHONPATH": str(tmp_path)}
    import os

    result = run_cli("simulate", "--duration", "0.5", env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    assert "warning: plugin broken (failed to load: RuntimeError: this plugin is broken)" in (
        result.stderr
    )
    assert "warning: plugin pigeon (failed to load: ModuleNotFoundError" in result.stderr
    result = run_cli("serve", "--transport", "pigeon", env={**os.environ, **env})
    assert result.returncode == 2
    assert "the pigeon transport failed to load: ModuleNotFoundError" in result.stderr
