"""Every operator mistake is one line on stderr and exit status 2 (real processes)."""

from __future__ import annotations

import os
import socket

import pytest

from ._run import run_cli


def assert_one_line(result, *words: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0]
    return str(lines[0])


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        (["serve", "--port", "70000"], ["--port", "0..65535", "70000"]),
        (["serve", "--port", "-1"], ["--port", "0..65535", "-1"]),
        (["serve", "--port", "http"], ["--port", "not a port number"]),
        (["serve", "--transport", "tcp", "--host", "no-such-host.invalid"], ["--host", "resolve"]),
        (
            ["serve", "--transport", "tcp", "--interval", "1", "--resolution", "5"],
            ["--resolution 5 is larger than the timeout", "= 2 s"],
        ),
        (["serve", "--log-level", "chatty"], ["--log-level", "'chatty'", "warning"]),
        (
            ["serve", "--transport", "udp", "--udp-key-file", "/no/such/key"],
            ["--udp-key-file", "/no/such/key", "No such file"],
        ),
        (["serve", "--misses", "0"], ["--misses", "misses > 0"]),
        (["serve", "--interval", "soon"], ["--interval", "not a number"]),
        (["serve", "--transport", "carrier-pigeon"], ["no transport 'carrier-pigeon'", "tcp"]),
        (["serve", "--redis-url", "http://127.0.0.1/", "--port", "0"], ["--redis-url"]),
        (["simulate", "--peers", "2", "--silent", "3"], ["--silent", "between 0 and --peers"]),
        (["simulate", "--interval", "0.1", "--resolution", "1"], ["--resolution"]),
        (["demo", "--clients", "0"], ["--clients", ">= 1"]),
        (["frobnicate"], ["invalid choice: 'frobnicate'", "serve"]),
    ],
)
def test_one_line_and_status_2(arguments, words):
    assert_one_line(run_cli(*arguments), *words)


def test_misses_says_misses_not_seconds():
    line = assert_one_line(run_cli("serve", "--misses", "0"))
    assert "seconds" not in line


def test_an_empty_udp_key_file(tmp_path):
    key = tmp_path / "key"
    key.write_text("\n")
    assert_one_line(
        run_cli("serve", "--transport", "udp", "--port", "0", "--udp-key-file", str(key)), "empty"
    )


@pytest.mark.parametrize("transport", ["tcp", "udp", "websocket", "socketio", "demo"])
def test_port_in_use(transport):
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as taken:
        taken.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            taken.listen()
        port = str(taken.getsockname()[1])
        env = {**os.environ, "HEARTBEAT_MONITOR_UDP_KEY": "a key"}
        if transport == "demo":
            result = run_cli("demo", "--port", port, "--duration", "5")
        else:
            result = run_cli("serve", "--transport", transport, "--port", port, env=env)
    line = assert_one_line(result, f"cannot listen on 127.0.0.1:{port}", "address already in use")
    command = "demo" if transport == "demo" else "serve"
    assert line.startswith(f"heartbeat-monitor {command}: error:")
