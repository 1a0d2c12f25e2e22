"""Subclasses that override ``time()`` and ``_run_once()``: asyncio's loop honours both (test
loops and simulated clocks rely on it), and so must oxloop's."""

from __future__ import annotations

import asyncio
import time

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
