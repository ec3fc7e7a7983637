"""static/heartbeat.js in real headless Chromium against a real server (see conftest, _cdp).

What is real: Chromium 150 (Debian's), the page, the official socket.io-client,
the module, python-socketio under uvicorn, the adapter, loopback sockets, the
page's visibility state and events and Chromium's throttling of a hidden page's
timers, page freezing, a stopped main thread. What is emulated: only the cause
of hiding (DevTools' focus emulation switched off instead of a user switching
tabs) and of freezing (DevTools instead of Chromium's own freezing policy).
"""

from __future__ import annotations

import itertools

import anyio
import pytest

from heartbeat_monitor import Reason

from .conftest import HIDDEN_TIMEOUT, TIMEOUT, browser_world, until

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
def anyio_backend() -> str:
    """python-socketio runs on asyncio only."""
    return "asyncio"


async def test_a_visible_page_beats_and_stays_present():
    async with browser_world() as world:
        page, sid = await world.open()
        await world.heartbeats.wait(1)
        start = world.beats_from(sid)
        await until(lambda: world.beats_from(sid) >= start + 10)  # 3 s: five timeouts
        assert world.gone_of(sid) == []
        assert world.told_of(sid) == []
        assert world.leaves_of(sid) == []
        assert sid in world.adapter.peers()
        assert await page.evaluate("document.visibilityState") == "visible"
        # Present, and its presence meta says it is visible (the module reported on connect).
        assert world.visibility_now(sid) == ["visible"]
        assert (await until(lambda: world.visibility_told(sid)))[-1] == "visible"


def _gaps(sent: list[list[object]], name: str, state: str | None = None) -> list[float]:
    """Seconds between consecutive sends of ``name`` (with ``state``) the page recorded."""
    times = [float(t) for n, s, t in sent if n == name and s == state]  # type: ignore[arg-type]
    return [(b - a) / 1000 for a, b in itertools.pairwise(times)]


async def test_a_hidden_page_is_throttled_for_real_and_only_the_module_survives_it():
    async with browser_world() as world:
        module, module_sid = await world.open("module")
        plain, plain_sid = await world.open("plain")
        await module.hide()
        await plain.hide()
        assert await module.evaluate("document.visibilityState") == "hidden"
        # Chromium throttles a hidden page's timers to once a second: the plain client's
        # 0.3 s beats come too late for interval x misses (0.6 s), and it is expired.
        [gone] = await world.gone.wait(1, within=10)
        assert (gone.peer, gone.reason) == (plain_sid, Reason.HEARTBEAT_TIMEOUT)
        assert await until(lambda: world.leaves_of(plain_sid)) == ["heartbeat timeout"]
        # The module's page said it is hidden and goes on saying so on its throttled timer.
        await until(lambda: world.episode(module_sid) in world.adapter.visibility.held)
        await until(
            lambda: module.evaluate("record.sent.filter(([n, s]) => s === 'hidden').length >= 4")
        )
        assert world.gone_of(module_sid) == []
        assert world.told_of(module_sid) == []
        assert world.leaves_of(module_sid) == []
        assert world.visibility_now(module_sid) == ["hidden"]
        await until(lambda: world.visibility_told(module_sid)[-1:] == ["hidden"])
        sent = await module.evaluate("record.sent")
        # The first tick after hiding may come early (Chromium aligns throttled timers to
        # whole seconds); every later one is throttled: real, not emulated.
        hidden_gaps = _gaps(sent, "visibility", "hidden")[1:]
        assert min(hidden_gaps) > TIMEOUT, hidden_gaps
        plain_sent = await plain.evaluate("record.sent")
        assert max(_gaps(plain_sent, "heartbeat")) > TIMEOUT
        await module.show()
        await until(lambda: world.episode(module_sid) not in world.adapter.visibility.held)
        await until(lambda: world.visibility_told(module_sid)[-1:] == ["visible"])
        sent = await module.evaluate("record.sent")
        assert [name for name, _, _ in sent[-2:]] == ["visibility", "heartbeat"]
        print(f"hidden: module reports every {hidden_gaps} s; plain client {gone.detail}")


async def test_hidden_and_frozen_shorter_than_hidden_timeout_no_leave_longer_one_leave():
    async with browser_world() as world:
        page, sid = await world.open()
        await page.hide()
        episode = world.episode(sid)
        await until(lambda: episode in world.adapter.visibility.held)
        await page.freeze()  # Chromium freezes the page: no timer, no task runs
        frozen_for = TIMEOUT + (HIDDEN_TIMEOUT - TIMEOUT) / 2
        await anyio.sleep(frozen_for)  # the stimulus: the length of the freeze
        silent = world.silence(sid)
        assert TIMEOUT < silent < HIDDEN_TIMEOUT
        assert world.gone_of(sid) == []
        assert world.told_of(sid) == []
        await page.resume()  # it proves life at once, still hidden
        await until(lambda: world.silence(sid) < silent)
        assert world.episode(sid) is episode
        assert world.gone_of(sid) == []
        assert world.told_of(sid) == []
        assert world.leaves_of(sid) == []

        await page.freeze()  # now for good
        [gone] = await world.gone.wait(1, within=HIDDEN_TIMEOUT + 5)
        assert (gone.peer, gone.reason, gone.expired) == (sid, Reason.HIDDEN_TIMEOUT, True)
        silent_at_expiry = float(gone.detail.removeprefix("silent for ").removesuffix(" s"))
        assert silent_at_expiry > HIDDEN_TIMEOUT
        await until(lambda: world.told_of(sid))
        await page.resume()
        assert await until(lambda: page.evaluate("record.disconnect")) == "io server disconnect"
        assert len(world.gone_of(sid)) == 1
        assert world.told_of(sid) == [{"peer": sid, "reason": "heartbeat timeout (hidden)"}]
        assert await until(lambda: world.leaves_of(sid)) == ["heartbeat timeout (hidden)"]
        print(f"frozen {frozen_for:.2f} s: silent {silent:.3f} s, kept; for good: {gone.detail}")


async def test_hidden_page_whose_main_thread_stops_leaves_once_on_the_hidden_timeout():
    async with browser_world() as world:
        page, sid = await world.open()
        await page.hide()
        await until(lambda: world.episode(sid) in world.adapter.visibility.held)
        await page.stop()  # Debugger.pause: the main thread stops for real
        [gone] = await world.gone.wait(1, within=HIDDEN_TIMEOUT + 5)
        assert (gone.peer, gone.reason) == (sid, Reason.HIDDEN_TIMEOUT)
        assert float(gone.detail.split()[2]) > HIDDEN_TIMEOUT
        print(f"hidden, stopped: expired after {gone.detail}")
        await until(lambda: world.told_of(sid))
        await page.start()
        assert await until(lambda: page.evaluate("record.disconnect")) == "io server disconnect"
        assert len(world.gone_of(sid)) == 1
        assert len(world.told_of(sid)) == 1
        assert await until(lambda: world.leaves_of(sid)) == ["heartbeat timeout (hidden)"]


async def test_a_visible_page_whose_main_thread_stops_is_expired_on_the_normal_timeout():
    async with browser_world() as world:
        page, sid = await world.open()
        # Hidden, then visible again: back on the normal timeout.
        await page.hide()
        await until(lambda: world.episode(sid) in world.adapter.visibility.held)
        await page.show()
        await until(lambda: world.episode(sid) not in world.adapter.visibility.held)
        await page.stop()  # a hung app is not alive, visible or not
        [gone] = await world.gone.wait(1, within=TIMEOUT + 5)
        assert (gone.peer, gone.reason) == (sid, Reason.HEARTBEAT_TIMEOUT)
        silent = float(gone.detail.split()[2])
        assert TIMEOUT < silent < HIDDEN_TIMEOUT
        await until(lambda: world.told_of(sid))
        await page.start()
        assert await until(lambda: page.evaluate("record.disconnect")) == "io server disconnect"
        assert world.told_of(sid) == [{"peer": sid, "reason": "heartbeat timeout"}]
        assert await until(lambda: world.leaves_of(sid)) == ["heartbeat timeout"]
        print(f"visible, stopped: expired after {gone.detail}")
