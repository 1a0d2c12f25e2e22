"""call_soon_threadsafe and friends: waking an idle loop from real threads, and the debug-mode
check that non-thread-safe methods are only called from the loop's thread."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time

import pytest

# A loop that misses a wake-up sleeps until its fallback timer; these bounds are far above any
# real wake-up latency and only there so that a lost wake-up fails instead of hanging.
FALLBACK = 20.0
WAKE_BOUND = 5.0


def run_with_fallback(loop, done):
    """Runs the loop until `done()` (checked by the callbacks, which call loop.stop()) or until
    the fallback timer fires; returns whether the fallback fired."""
    fired = []

    def fallback():
        fired.append(True)
        loop.stop()

    handle = loop.call_later(FALLBACK, fallback)
    loop.run_forever()
    handle.cancel()
    return bool(fired)


def test_call_soon_threadsafe_wakes_an_idle_loop(loop):
    """Nothing else is scheduled: the loop blocks in the poller until the thread wakes it."""
    ran = []

    def from_thread():
        time.sleep(0.05)  # let the loop go idle first
        loop.call_soon_threadsafe(lambda: (ran.append(threading.get_ident()), loop.stop()))

    thread = threading.Thread(target=from_thread)
    thread.start()
    start = time.monotonic()
    loop.run_forever()
    elapsed = time.monotonic() - start
    thread.join()
    assert ran == [threading.get_ident()]  # ran on the loop's thread
    assert elapsed < WAKE_BOUND


def test_call_soon_threadsafe_wakes_a_loop_waiting_for_a_distant_timer(loop):
    ran = []
    far = loop.call_later(3600, ran.append, "far timer")

    def from_thread():
        time.sleep(0.05)
        loop.call_soon_threadsafe(lambda: (ran.append("woken"), loop.stop()))

    thread = threading.Thread(target=from_thread)
    thread.start()
    start = time.monotonic()
    loop.run_forever()
    thread.join()
    assert ran == ["woken"]
    assert time.monotonic() - start < WAKE_BOUND
    far.cancel()


def test_many_threads_many_callbacks(loop):
    threads_n, per_thread = 8, 2000
    total = threads_n * per_thread
    received = {t: [] for t in range(threads_n)}
    count = 0

    def callback(t, i):
        nonlocal count
        received[t].append(i)
        count += 1
        if count == total:
            loop.stop()

    barrier = threading.Barrier(threads_n)

    def producer(t):
        barrier.wait()
        for i in range(per_thread):
            loop.call_soon_threadsafe(callback, t, i)
            if i % 100 == 0:
                time.sleep(0.001)  # let the loop catch up and go idle now and then

    threads = [threading.Thread(target=producer, args=(t,)) for t in range(threads_n)]
    for thread in threads:
        thread.start()
    fell_back = run_with_fallback(loop, lambda: count == total)
    for thread in threads:
        thread.join()
    assert not fell_back, f"only {count} of {total} callbacks ran: a wake-up was lost"
    # Each thread's callbacks ran exactly once, in the order that thread scheduled them.
    for t in range(threads_n):
        assert received[t] == list(range(per_thread))


def test_ping_pong_every_call_wakes_the_loop(loop):
    """Each round trip needs a fresh wake-up of an idle loop; a lost one shows as a timeout."""
    threads_n, rounds = 4, 300
    failures = []
    finished = 0

    def on_loop(event):
        event.set()

    def player(t):
        nonlocal finished
        event = threading.Event()
        for i in range(rounds):
            event.clear()
            loop.call_soon_threadsafe(on_loop, event)
            if not event.wait(WAKE_BOUND):
                failures.append((t, i))
                break
        loop.call_soon_threadsafe(player_done)

    def player_done():
        nonlocal finished
        finished += 1
        if finished == threads_n:
            loop.stop()

    threads = [threading.Thread(target=player, args=(t,)) for t in range(threads_n)]
    for thread in threads:
        thread.start()
    fell_back = run_with_fallback(loop, lambda: finished == threads_n)
    for thread in threads:
        thread.join()
    assert failures == []
    assert not fell_back


def test_call_soon_threadsafe_context(loop):
    var = contextvars.ContextVar("var", default="default")
    ctx = contextvars.Context()
    ctx.run(var.set, "explicit")
    seen = []

    def from_thread():
        loop.call_soon_threadsafe(lambda: seen.append(var.get()), context=ctx)
        loop.call_soon_threadsafe(loop.stop)

    thread = threading.Thread(target=from_thread)
    thread.start()
    assert not run_with_fallback(loop, lambda: True)
    thread.join()
    assert seen == ["explicit"]


def test_run_coroutine_threadsafe(loop):
    results = []

    async def compute(x):
        await asyncio.sleep(0.001)
        assert asyncio.get_running_loop() is loop
        return x * 2

    def from_thread():
        futs = [asyncio.run_coroutine_threadsafe(compute(i), loop) for i in range(20)]
        results.extend(f.result(timeout=WAKE_BOUND) for f in futs)
        loop.call_soon_threadsafe(loop.stop)

    thread = threading.Thread(target=from_thread)
    thread.start()
    assert not run_with_fallback(loop, lambda: True)
    thread.join()
    assert results == [i * 2 for i in range(20)]


def test_threads_can_stop_the_loop(loop):
    def from_thread():
        time.sleep(0.02)
        loop.call_soon_threadsafe(loop.stop)

    thread = threading.Thread(target=from_thread)
    thread.start()
    assert not run_with_fallback(loop, lambda: True)
    thread.join()
    assert not loop.is_running()


def test_future_resolved_from_a_thread_via_call_soon_threadsafe(loop):
    async def main():
        fut = loop.create_future()

        def worker():
            time.sleep(0.01)
            loop.call_soon_threadsafe(fut.set_result, threading.get_ident())

        thread = threading.Thread(target=worker)
        thread.start()
        ident = await asyncio.wait_for(fut, WAKE_BOUND)
        thread.join()
        return ident, thread.ident

    ident, thread_ident = loop.run_until_complete(main())
    assert ident == thread_ident


# -- debug-mode thread checks ----------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda lp: lp.call_soon(print),
        lambda lp: lp.call_later(1, print),
        lambda lp: lp.call_at(lp.time() + 1, print),
    ],
    ids=["call_soon", "call_later", "call_at"],
)
def test_debug_mode_rejects_non_threadsafe_calls_from_other_threads(loop, call):
    loop.set_debug(True)
    outcome = []

    def from_thread():
        try:
            handle = call(loop)
        except RuntimeError as exc:
            outcome.append(str(exc))
        else:
            outcome.append(handle)
            handle.cancel()

    async def main():
        thread = threading.Thread(target=from_thread)
        thread.start()
        while thread.is_alive():
            await asyncio.sleep(0.001)
        thread.join()

    loop.run_until_complete(main())
    assert len(outcome) == 1
    assert isinstance(outcome[0], str), f"no RuntimeError, got {outcome[0]!r}"
    assert "Non-thread-safe operation" in outcome[0]


def test_debug_mode_allows_call_soon_threadsafe_from_other_threads(loop):
    loop.set_debug(True)
    ran = []

    def from_thread():
        loop.call_soon_threadsafe(ran.append, "ok")
        loop.call_soon_threadsafe(loop.stop)

    thread = threading.Thread(target=from_thread)
    thread.start()
    assert not run_with_fallback(loop, lambda: True)
    thread.join()
    assert ran == ["ok"]


def test_debug_mode_allows_call_soon_from_another_thread_while_not_running(loop):
    """The thread check only applies while the loop runs (asyncio has no owner otherwise)."""
    loop.set_debug(True)
    errors, ran = [], []

    def from_thread():
        try:
            loop.call_soon(ran.append, "scheduled from a thread")
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=from_thread)
    thread.start()
    thread.join()
    assert errors == []
    loop.run_until_complete(asyncio.sleep(0))
    assert ran == ["scheduled from a thread"]
