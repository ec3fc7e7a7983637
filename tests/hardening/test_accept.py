"""AcceptBackoff: the delay doubles to a ceiling, the log is paced, asyncio's errors routed."""

from __future__ import annotations

import asyncio
import errno

import anyio
import anyio.lowlevel
import pytest
from structlog.testing import capture_logs

from heartbeat_monitor import AcceptBackoff


def _emfile() -> OSError:
    return OSError(errno.EMFILE, "Too many open files")


def test_delays_double_to_the_ceiling_and_a_success_resets_them():
    backoff = AcceptBackoff("tcp", first=0.05, most=0.3)
    with capture_logs() as logs:
        delays = [backoff.failed(_emfile()) for _ in range(100)]
        backoff.succeeded()
        assert backoff.failed(_emfile()) == 0.05
    assert delays[:5] == [0.05, 0.1, 0.2, 0.3, 0.3]
    assert [(log["event"], log.get("failures")) for log in logs] == [
        ("heartbeat_monitor.tcp.accept_failed", 1),  # once per log_every (10 s), not 100 times
        ("heartbeat_monitor.tcp.accept_recovered", 100),
        ("heartbeat_monitor.tcp.accept_failed", 1),  # a new episode of failures is said again
    ]
    assert logs[0]["error"] == "EMFILE: Too many open files"


def test_only_resource_errors_count_and_anyio_s_wrapping_is_seen_through():
    wrapped = anyio.BrokenResourceError()
    wrapped.__cause__ = _emfile()
    assert AcceptBackoff.resource_error(wrapped) is wrapped.__cause__
    assert AcceptBackoff.resource_error(_emfile()) is not None
    assert AcceptBackoff.resource_error(OSError(errno.ECONNABORTED, "aborted")) is None
    assert AcceptBackoff.resource_error(ValueError()) is None


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_asyncio_accept_errors_are_paced_and_other_errors_pass_through(anyio_backend):
    loop = asyncio.get_running_loop()
    seen: list[dict[str, object]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    try:
        backoff = AcceptBackoff("websocket")
        with capture_logs() as logs, backoff.asyncio_servers():
            for _ in range(50):  # what Python 3.11's selector loop does per failed accept
                loop.call_exception_handler(
                    {"message": "socket.accept() out of system resource", "exception": _emfile()}
                )
            loop.call_exception_handler({"message": "something else"})
        loop.call_exception_handler({"message": "after"})
    finally:
        loop.set_exception_handler(previous)
    assert backoff.failures == 50
    assert [log["event"] for log in logs] == ["heartbeat_monitor.websocket.accept_failed"]
    assert [context["message"] for context in seen] == ["something else", "after"]


@pytest.mark.parametrize("anyio_backend", ["trio"])
@pytest.mark.anyio
async def test_outside_asyncio_the_filter_is_a_no_op(anyio_backend):
    with AcceptBackoff("websocket").asyncio_servers():
        await anyio.lowlevel.checkpoint()
