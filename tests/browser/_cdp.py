"""Debian's Chromium, headless, driven over the DevTools protocol (a small client, no Playwright).

``async with Chromium() as browser: page = await browser.new_page(url)``. A
:class:`Page` can be hidden and shown, frozen and resumed, and its main thread
stopped and started again; what each does in the page is Chromium's own:

* :meth:`Page.hide` / :meth:`Page.show` switch DevTools' focus emulation off and
  on. Emulation keeps a page visible by counting as a "capturer" of its
  contents; the page's underlying state is hidden (made so once at creation by
  a freeze and resume, as :meth:`Chromium.new_page` does), so switching it off
  makes Chromium hide the page as a tab switch does: ``document.visibilityState``
  becomes ``"hidden"``, ``visibilitychange`` fires, and Chromium throttles the
  page's timers (to once a second). Only the cause is emulated: no user
  switched tabs.
* :meth:`Page.freeze` / :meth:`Page.resume` are ``Page.setWebLifecycleState``:
  Chromium's page freezing (as for a background tab or a mobile page):
  ``freeze`` fires and timers and tasks stop until ``resume``. Chromium freezes
  hidden pages only.
* :meth:`Page.stop` / :meth:`Page.start` are ``Debugger.pause`` /
  ``Debugger.resume``: the main thread stops at its next JavaScript statement
  (a timer callback, an event) and runs nothing until resumed, visible or not:
  a hung app.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.to_thread
from anyio.streams.memory import MemoryObjectSendStream
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

CHROMIUM = "/usr/bin/chromium"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--remote-debugging-port=0",
)


class CDPError(Exception):
    pass


def chromium_path() -> str | None:
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    return shutil.which("chromium")


class Chromium:
    """One headless Chromium process with a fresh profile, and its DevTools connection."""

    def __init__(self, executable: str | None = None) -> None:
        self.executable = executable or chromium_path() or CHROMIUM
        self._ids = itertools.count(1)
        self._replies: dict[int, MemoryObjectSendStream[dict[str, Any]]] = {}
        self._pages: dict[str, Page] = {}
        self._ws: ClientConnection | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Self:
        stack = self._stack
        await stack.__aenter__()
        try:
            profile = Path(
                stack.enter_context(
                    tempfile.TemporaryDirectory(prefix="hm-chromium-", ignore_cleanup_errors=True)
                )
            )
            self._process = subprocess.Popen(  # noqa: ASYNC220 -- started once, waited on below
                [self.executable, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            stack.push_async_callback(self._stop_process)
            active = profile / "DevToolsActivePort"
            with anyio.fail_after(30):
                while not active.exists() or len(active.read_text().split()) < 2:
                    if self._process.poll() is not None:
                        raise CDPError(f"chromium exited with {self._process.returncode}")
                    await anyio.sleep(0.05)
            port, path = active.read_text().split()[:2]
            self._ws = await stack.enter_async_context(
                connect(f"ws://127.0.0.1:{port}{path}", max_size=None, ping_interval=None)
            )
            task_group = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(task_group.cancel_scope.cancel)
            task_group.start_soon(self._read)
            stack.push_async_callback(self._close_browser)
        except BaseException:
            await stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    async def _close_browser(self) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(5), contextlib.suppress(Exception):
            await self.send("Browser.close")

    async def _stop_process(self) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        with anyio.CancelScope(shield=True):
            try:
                await anyio.to_thread.run_sync(process.wait, 5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)  # the group of the browser we started
                await anyio.to_thread.run_sync(process.wait, 5)

    async def _read(self) -> None:
        assert self._ws is not None
        with contextlib.suppress(ConnectionClosed):  # the browser closed
            async for raw in self._ws:
                message = json.loads(raw)
                if "id" in message:
                    reply = self._replies.pop(message["id"], None)
                    if reply is not None:
                        reply.send_nowait(message)
                else:
                    page = self._pages.get(message.get("sessionId", ""))
                    if page is not None:
                        page._event(message["method"], message.get("params", {}))

    async def send(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """One DevTools command; its result (an error reply raises :class:`CDPError`)."""
        assert self._ws is not None
        number = next(self._ids)
        send, receive = anyio.create_memory_object_stream[dict[str, Any]](1)
        self._replies[number] = send
        message: dict[str, Any] = {"id": number, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        try:
            with send, receive:
                await self._ws.send(json.dumps(message))
                with anyio.fail_after(20):
                    reply = await receive.receive()
        finally:
            self._replies.pop(number, None)
        if "error" in reply:
            raise CDPError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def new_page(self, url: str) -> Page:
        """A new tab showing ``url`` (loaded), visible, with its visibility under our control."""
        target = (await self.send("Target.createTarget", url="about:blank"))["targetId"]
        attached = await self.send("Target.attachToTarget", targetId=target, flatten=True)
        page = Page(self, target, attached["sessionId"])
        self._pages[page.session] = page
        await page.send("Page.enable")
        # Make the tab's own state hidden (Chromium hides a page before it freezes it), then
        # let focus emulation keep it visible: hide() and show() switch that emulation.
        await page.freeze()
        await page.resume()
        await page.show()
        await page.send("Debugger.enable")
        await page.navigate(url)
        return page


class Page:
    """One tab: its DevTools session, and the events it reported."""

    def __init__(self, browser: Chromium, target: str, session: str) -> None:
        self.browser = browser
        self.target = target
        self.session = session
        self._events: dict[str, list[dict[str, Any]]] = {}
        self._changed = anyio.Event()

    def _event(self, method: str, params: dict[str, Any]) -> None:
        self._events.setdefault(method, []).append(params)
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_event(self, method: str, count: int = 1, within: float = 10.0) -> None:
        """Until the page has reported ``method`` ``count`` times in all (bounded)."""
        with anyio.fail_after(within):
            while len(self._events.get(method, ())) < count:
                await self._changed.wait()

    def seen(self, method: str) -> int:
        return len(self._events.get(method, ()))

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        return await self.browser.send(method, self.session, **params)

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of ``expression`` in the page (awaited if it is a promise)."""
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise CDPError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def navigate(self, url: str) -> None:
        loaded = self.seen("Page.loadEventFired")
        await self.send("Page.navigate", url=url)
        await self.wait_event("Page.loadEventFired", loaded + 1)

    async def hide(self) -> None:
        await self.send("Emulation.setFocusEmulationEnabled", enabled=False)

    async def show(self) -> None:
        await self.send("Emulation.setFocusEmulationEnabled", enabled=True)

    async def freeze(self) -> None:
        await self.send("Page.setWebLifecycleState", state="frozen")

    async def resume(self) -> None:
        await self.send("Page.setWebLifecycleState", state="active")

    async def stop(self) -> None:
        """Stop the main thread (returns once it has stopped: at its next JavaScript)."""
        paused = self.seen("Debugger.paused")
        await self.send("Debugger.pause")
        await self.wait_event("Debugger.paused", paused + 1)

    async def start(self) -> None:
        await self.send("Debugger.resume")
