"""Scheduling and cancelling a million timers must not grow the process.

Memory is measured as the resident set size, which also sees allocations made outside
Python's allocator (oxloop's timer heap lives in Rust, where tracemalloc cannot see it).
asyncio purges cancelled timers once they make up half of its heap, at the next iteration,
so the loop gets an iteration between batches; the bound is the same for both loops.
"""

from __future__ import annotations

import asyncio
import gc
import os

TOTAL = 1_000_000
BATCH = 10_000
WARMUP_BATCHES = 5
# A leak of even 16 bytes per timer would show as 16 MB over a million timers.
MAX_GROWTH = 10 * 2**20


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def never_called() -> None:
    raise AssertionError("a cancelled timer fired")


def rss_growth(loop, batch_work, batches: int = TOTAL // BATCH, iterations: int = 1) -> int:
    """Runs `batch_work()` `batches` times on `loop`, giving the loop `iterations` iterations
    after each; returns how much the RSS grew after the warm-up batches."""

    async def churn():
        baseline = None
        for batch in range(batches):
            batch_work()
            for _ in range(iterations):
                await asyncio.sleep(0)
            if batch == WARMUP_BATCHES - 1:
                gc.collect()
                baseline = rss_bytes()
        gc.collect()
        return rss_bytes() - baseline

    return loop.run_until_complete(churn())


def test_million_timers_scheduled_then_cancelled_in_batches(loop):
    keep_alive = loop.call_later(3600, never_called)  # the heap is never empty

    def schedule_and_cancel():
        handles = [loop.call_later(3600, never_called) for _ in range(BATCH)]
        for handle in handles:
            handle.cancel()

    growth = rss_growth(loop, schedule_and_cancel)
    assert growth < MAX_GROWTH, f"RSS grew by {growth / 2**20:.1f} MB"
    assert not keep_alive.cancelled()
    keep_alive.cancel()


def test_million_timers_each_cancelled_right_away(loop):
    fired = []
    # Live timers interleaved with the cancelled ones: they must survive every purge.
    live = [loop.call_later(0.2 + i * 0.01, fired.append, i) for i in range(5)]

    def cancel_each_right_away():
        for _ in range(BATCH):
            loop.call_later(3600, never_called).cancel()

    growth = rss_growth(loop, cancel_each_right_away)
    assert growth < MAX_GROWTH, f"RSS grew by {growth / 2**20:.1f} MB"
    loop.run_until_complete(asyncio.sleep(max(h.when() for h in live) - loop.time() + 0.01))
    assert fired == [0, 1, 2, 3, 4]


def test_fired_timers_leave_memory_flat(loop):
    count = 0

    def tick():
        nonlocal count
        count += 1

    def schedule_due_now():
        for _ in range(BATCH):
            loop.call_later(0, tick)

    growth = rss_growth(loop, schedule_due_now, batches=40, iterations=2)
    assert count == 40 * BATCH
    assert growth < MAX_GROWTH, f"RSS grew by {growth / 2**20:.1f} MB"
