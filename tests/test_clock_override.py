"""Subclasses that override ``time()`` and ``_run_once()``: asyncio's loop honours both (test
loops and simulated clocks rely on it), and so must oxloop's."""

from __future__ import annotations

import asyncio
import threading
import time
from unittest import mock

import oxloop
import pytest

BASES = {"asyncio": asyncio.SelectorEventLoop, "oxloop": oxloop.Loop}


@pytest.fixture(params=list(BASES))
def base(request: pytest.FixtureRequest) -> type:
    return BASES[request.param]


def test_timers_follow_an_overridden_clock(base):
    class ShiftedClock(base):
        """A clock 1000 s ahead of the monotonic one, and half as fast."""

        def time(self):
            return 1000.0 + time.monotonic() / 2

    loop = ShiftedClock()
    try:
        fired = []

        async def main():
            start = loop.time()
            loop.call_at(start + 0.025, lambda: fired.append(loop.time()))
            t0 = time.monotonic()
            await asyncio.sleep(0.05)
            return start, time.monotonic() - t0

        start, real = loop.run_until_complete(main())
        assert start > 1000.0
        # 0.05 s on the loop's clock is 0.1 s of real time; no timer fired early on that clock.
        assert real >= 0.09
        assert fired and fired[0] >= start + 0.025
    finally:
        loop.close()


def test_overridden_run_once_runs_every_iteration(base):
    class CountingLoop(base):
        iterations = 0

        def _run_once(self):
            self.iterations += 1
            super()._run_once()

    loop = CountingLoop()
    try:

        async def main():
            for _ in range(5):
                await asyncio.sleep(0)

        loop.run_until_complete(main())
        assert loop.iterations >= 6
    finally:
        loop.close()


def test_simulated_clock_advanced_between_iterations():
    """A loop whose clock only moves when the test moves it (as asyncio's TestLoop does):
    `_run_once(max_wait=0)` never blocks, so virtual hours pass in no real time."""

    class VirtualClockLoop(oxloop.Loop):
        def __init__(self):
            super().__init__()
            self.now = 0.0

        def time(self):
            return self.now

        def _run_once(self):
            super()._run_once(0)
            self.now += 60.0

    loop = VirtualClockLoop()
    try:

        async def main():
            await asyncio.sleep(3600)
            return loop.time()

        t0 = time.monotonic()
        virtual = loop.run_until_complete(main())
        assert virtual >= 3600.0
        assert time.monotonic() - t0 < 5.0
    finally:
        loop.close()


# -- the same, by patching an instance (mock.patch.object(loop, "time")) ----------------------


def test_patching_time_on_the_loop_drives_its_timers(loop):
    now = [1000.0]
    fired = []

    def step():
        loop.call_soon(loop.stop)
        loop.run_forever()

    with mock.patch.object(loop, "time", side_effect=lambda: now[0]):
        handle = loop.call_later(10, fired.append, "due")
        assert handle.when() == 1010.0
        step()
        assert fired == []
        now[0] = 1010.0
        step()
        assert fired == ["due"]
    # Unpatched, the loop's own clock is back.
    assert abs(loop.time() - time.monotonic()) < 1
    assert abs(loop.call_later(1, lambda: None).when() - time.monotonic() - 1) < 1


def test_patching_time_on_the_loop_drives_the_poll_timeout(loop):
    fired = []
    # Had the poll timeout been taken from the real clock, the wait would last 100 s: the
    # guard stops the loop long before that.
    guard = threading.Timer(10, loop.call_soon_threadsafe, (loop.stop,))
    guard.start()
    try:
        with mock.patch.object(loop, "time", side_effect=lambda: time.monotonic() + 100):
            loop.call_at(loop.time() + 0.05, lambda: (fired.append("due"), loop.stop()))
            loop.run_forever()
    finally:
        guard.cancel()
    assert fired == ["due"]


def test_patching_run_once_on_the_loop_runs_every_iteration_through_it(loop):
    with mock.patch.object(loop, "_run_once", wraps=loop._run_once) as run_once:
        loop.run_until_complete(asyncio.sleep(0.01))
    assert run_once.call_count >= 2
    calls = run_once.call_count
    loop.run_until_complete(asyncio.sleep(0))
    assert run_once.call_count == calls
