"""The one callback runner: every user callback and every deferred job of the process.

The monitor dispatches its events here, the hub its departures, the adapters
their transport work (a Socket.IO disconnect, an emit). One place decides how a
callback runs:

* a plain function runs inline, at once; an ``async def`` (or an object with an
  ``async def __call__``) is queued and run by at most ``max_concurrent``
  worker tasks in the runner's task group, each cut off after ``timeout``
  seconds when one is given;
* a callback that raises is logged once (``heartbeat_monitor.callback_failed``,
  with its traceback) and counted in :attr:`CallbackRunner.failures`; a
  callback that overruns is logged as ``heartbeat_monitor.callback_timeout``.
  Nothing a callback does stops the runner or delays the others.

Jobs queued before a task group is attached wait for it (:meth:`attach`).
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, final

import anyio
import anyio.abc
import structlog

from ._errors import ConfigurationError

__all__ = ("CallbackRunner", "is_async")

_logger = structlog.get_logger("heartbeat_monitor")


def is_async(callback: Callable[..., object]) -> bool:
    """Whether calling ``callback`` returns an awaitable that must be awaited."""
    return inspect.iscoroutinefunction(callback) or inspect.iscoroutinefunction(
        getattr(callback, "__call__", None)  # noqa: B004 -- an object with ``async def __call__``
    )


def _describe(callback: object) -> str:
    return repr(callback)[:120]


@final
class CallbackRunner:
    """Runs plain callbacks inline and async ones in bounded worker tasks.

    ``call(callback, *args)`` is the whole interface for users of the runner;
    ``attach(task_group)`` / ``detach()`` are for the driver that owns it.
    """

    __slots__ = (
        "_busy",
        "_idle",
        "_pending",
        "_task_group",
        "_workers",
        "failures",
        "max_concurrent",
        "timeout",
    )

    def __init__(self, *, max_concurrent: int = 64, timeout: float | None = None) -> None:
        if type(max_concurrent) is not int or max_concurrent < 1:
            raise ConfigurationError(
                f"max_concurrent_callbacks must be an int >= 1, not {max_concurrent!r}"
            )
        if timeout is not None and not (timeout > 0):
            raise ConfigurationError(f"callback_timeout must be > 0 or None, not {timeout!r}")
        self.max_concurrent = max_concurrent
        self.timeout = timeout
        #: Callbacks that raised or overran, so far.
        self.failures = 0
        self._pending: deque[tuple[Callable[..., Awaitable[object]], tuple[Any, ...]]] = deque()
        self._workers = 0
        self._busy = 0
        self._task_group: anyio.abc.TaskGroup | None = None
        self._idle: anyio.Event | None = None

    # -- for callers ---------------------------------------------------------------------

    def call(self, callback: Callable[..., object], *args: Any) -> None:
        """Run ``callback(*args)``: inline if plain, queued if async. Never raises."""
        if is_async(callback):
            self._pending.append((callback, args))  # type: ignore[arg-type]
            self._start_workers()
            return
        try:
            callback(*args)
        except Exception:
            self._failed(callback, args)

    def spawn(self, job: Callable[..., Awaitable[object]], *args: Any) -> None:
        """Run the async ``job(*args)`` in a worker (transport work an adapter defers)."""
        self._pending.append((job, args))
        self._start_workers()

    @property
    def idle(self) -> bool:
        """Nothing queued and no async callback running."""
        return not self._pending and self._workers == 0

    async def wait_idle(self) -> None:
        """Return once nothing is queued or running (jobs queued meanwhile included)."""
        while not self.idle:
            if self._task_group is None:
                raise RuntimeError("the callback runner has no task group: is the monitor running?")
            if self._idle is None:
                self._idle = anyio.Event()
            await self._idle.wait()

    # -- for the owner -------------------------------------------------------------------

    def attach(self, task_group: anyio.abc.TaskGroup) -> None:
        """Run workers in ``task_group`` from now on (and start the queued jobs)."""
        self._task_group = task_group
        self._start_workers()

    def detach(self) -> None:
        """The task group is ending: queue jobs from now on, and wake waiters."""
        self._task_group = None
        self._set_idle()

    # -- internals -----------------------------------------------------------------------

    def _start_workers(self) -> None:
        task_group = self._task_group
        if task_group is None:
            return
        pending = self._pending
        # Idle workers take what is queued; start more only for the rest, up to the cap.
        while (
            pending
            and self._workers < self.max_concurrent
            and self._workers - self._busy < len(pending)
        ):
            self._workers += 1
            task_group.start_soon(self._worker)

    async def _worker(self) -> None:
        pending = self._pending
        timeout = self.timeout
        try:
            while pending:
                callback, args = pending.popleft()
                self._busy += 1
                try:
                    if timeout is None:
                        await callback(*args)
                    else:
                        with anyio.move_on_after(timeout) as scope:
                            await callback(*args)
                        if scope.cancelled_caught:
                            self.failures += 1
                            _logger.error(
                                "heartbeat_monitor.callback_timeout",
                                callback=_describe(callback),
                                timeout=timeout,
                                **_peer_of(args),
                            )
                except Exception:
                    self._failed(callback, args)
                finally:
                    self._busy -= 1
        finally:
            self._workers -= 1
            if not self._workers and not pending:
                self._set_idle()

    def _failed(self, callback: object, args: tuple[Any, ...]) -> None:
        self.failures += 1
        _logger.exception(
            "heartbeat_monitor.callback_failed", callback=_describe(callback), **_peer_of(args)
        )

    def _set_idle(self) -> None:
        idle = self._idle
        if idle is not None:
            self._idle = None
            idle.set()

    def __repr__(self) -> str:
        return (
            f"<CallbackRunner workers={self._workers} pending={len(self._pending)} "
            f"failures={self.failures}>"
        )


def _peer_of(args: tuple[Any, ...]) -> dict[str, object]:
    """The peer a failed callback was about, for its log line (events carry ``key``)."""
    for arg in args:
        key = getattr(arg, "key", None)
        if key is not None:
            return {"peer": key}
    return {}
