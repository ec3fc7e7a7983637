"""A server out of file descriptors: back off, log it a few times, never crash.

When a process reaches ``RLIMIT_NOFILE`` (or the system its file table),
``accept`` fails with ``EMFILE``/``ENFILE`` (``ENOBUFS``/``ENOMEM`` under memory
pressure) while the pending connection stays in the listen backlog, so the
listening socket stays readable: a naive loop spins, a careless one crashes
(anyio's ``Listener.serve`` lets the error out), and asyncio's own servers log
a traceback per failure (Python 3.11 retries once per failed ``accept`` of a
batch, so thousands of lines a second).

:class:`AcceptBackoff` is what a server does instead: the established
connections keep working, new ones wait in the backlog, ``accept`` is retried
after a delay that doubles up to ``most`` seconds, and the condition is logged
once (``heartbeat_monitor.<transport>.accept_failed``) and then at most once
per ``log_every`` seconds with the count of failures since, until an accept
succeeds again (``accept_recovered``). :meth:`AcceptBackoff.asyncio_servers`
applies the same pacing to asyncio's servers (websockets, uvicorn), whose
accept loop we do not own.
"""

from __future__ import annotations

import asyncio
import errno
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final, final

import structlog

__all__ = ("RESOURCE_ERRNOS", "AcceptBackoff")

#: ``accept`` errors that mean "no resources now", not "this connection is bad".
RESOURCE_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: The message asyncio's selector loop gives these errors (``_accept_connection``).
_ASYNCIO_MESSAGE: Final = "socket.accept() out of system resource"

_logger = structlog.get_logger("heartbeat_monitor")


@final
class AcceptBackoff:
    """Paced logging and a growing delay for one server's failing ``accept``."""

    __slots__ = (
        "_delay",
        "_last_log",
        "_unlogged",
        "failures",
        "first",
        "log_every",
        "most",
        "transport",
    )

    def __init__(
        self, transport: str, *, first: float = 0.05, most: float = 1.0, log_every: float = 10.0
    ) -> None:
        self.transport = transport
        self.first = first
        self.most = most
        self.log_every = log_every
        #: Failed accepts since the last success.
        self.failures = 0
        self._delay = first
        self._unlogged = 0
        self._last_log = -float("inf")

    @staticmethod
    def resource_error(exc: BaseException) -> OSError | None:
        """The resource-exhaustion ``OSError`` behind ``exc`` (anyio wraps it on trio), if any."""
        for error in (exc, exc.__cause__):
            if isinstance(error, OSError) and error.errno in RESOURCE_ERRNOS:
                return error
        return None

    def failed(self, exc: OSError) -> float:
        """Count one failure (logged, paced); the seconds to wait before accepting again."""
        self.failures += 1
        self._unlogged += 1
        now = time.monotonic()  # paces the log only, never liveness
        if now - self._last_log >= self.log_every:
            _logger.error(
                f"heartbeat_monitor.{self.transport}.accept_failed",
                error=f"{errno.errorcode.get(exc.errno or 0, exc.errno)}: {exc.strerror}",
                failures=self._unlogged,
                hint="raise the open-file limit (ulimit -n) or shed idle connections",
            )
            self._last_log = now
            self._unlogged = 0
        delay = self._delay
        self._delay = min(self.most, delay * 2)
        return delay

    def succeeded(self) -> None:
        """An accept worked: reset the delay; say so once if it had been failing."""
        if self.failures:
            _logger.warning(
                f"heartbeat_monitor.{self.transport}.accept_recovered", failures=self.failures
            )
            self.failures = 0
            self._unlogged = 0
            self._last_log = -float("inf")
        self._delay = self.first

    @contextmanager
    def asyncio_servers(self) -> Iterator[None]:
        """While inside, asyncio's "out of system resource" accept errors come here, paced.

        The running loop's exception handler is wrapped: that one message is counted
        and logged through :meth:`failed` (asyncio itself retries a second later);
        everything else goes to the previous handler, unchanged. No-op outside asyncio.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # trio: no asyncio servers to watch
            yield
            return
        previous = loop.get_exception_handler()

        def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            exc = context.get("exception")
            if context.get("message") == _ASYNCIO_MESSAGE and isinstance(exc, OSError):
                self.failed(exc)
            elif previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)

        loop.set_exception_handler(handler)
        try:
            yield
        finally:
            if loop.get_exception_handler() is handler:  # not replaced since by someone else
                loop.set_exception_handler(previous)
