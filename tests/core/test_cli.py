"""``heartbeat-monitor simulate`` end to end, as a user runs it (a real process, the real clock)."""

from __future__ import annotations

import json
import subprocess
import sys


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "heartbeat_monitor._cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_simulate_expires_exactly_the_silent_peers_and_logs_json_off_a_tty():
    result = run_cli(
        "simulate", "--peers", "12", "--silent", "4", "--interval", "0.2", "--duration", "2.5",
        "--seed", "3",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]  # JSON: stdout is no TTY
    expired = [line for line in lines if line["event"] == "heartbeat_monitor.peer_expired"]
    silenced = [
        line for line in lines if line["event"] == "heartbeat_monitor.simulate.peer_silenced"
    ]
    assert sorted(e["peer"] for e in expired) == sorted(s["peer"] for s in silenced)
    assert len(expired) == 4
    [summary] = [line for line in lines if line["event"] == "heartbeat_monitor.simulate.summary"]
    assert summary["unexpected"] == 0
    assert summary["still_tracked"] == 8


def test_simulate_refuses_nonsense():
    result = run_cli("simulate", "--peers", "2", "--silent", "3")
    assert result.returncode == 2
    assert "--silent" in result.stderr


def test_help_lists_the_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    assert "simulate" in result.stdout
