"""call_soon / call_later / call_at: ordering, contexts, and the Handle / TimerHandle API."""

from __future__ import annotations

import contextvars
import logging
import random
import sys
import time
import weakref

import pytest

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


def run_briefly(loop, iterations=1):
    """Runs exactly `iterations` loop iterations (stop() lets the current one finish)."""
    for _ in range(iterations):
        loop.call_soon(loop.stop)
        loop.run_forever()


def run_until(loop, predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        loop.call_later(0.001, loop.stop)
        loop.run_forever()


# -- call_soon -------------------------------------------------------------------------------


def test_call_soon_runs_callbacks_in_fifo_order_with_args(loop):
    calls = []
    for i in range(100):
        loop.call_soon(calls.append, i)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls == list(range(100))


def test_call_soon_passes_positional_args_unchanged(loop):
    got = []
    marker = object()
    loop.call_soon(lambda *a: got.append(a), 1, "two", marker)
    run_briefly(loop)
    assert got == [(1, "two", marker)]


def test_call_soon_rejects_keyword_arguments_other_than_context(loop):
    with pytest.raises(TypeError):
        loop.call_soon(print, flush=True)
    with pytest.raises(TypeError):
        loop.call_later(1, print, flush=True)


def test_callbacks_scheduled_during_a_batch_run_in_the_next_iteration(loop):
    calls = []

    def first():
        calls.append("first")
        loop.call_soon(calls.append, "scheduled-by-first")
        loop.stop()

    loop.call_soon(first)
    loop.call_soon(calls.append, "second")
    loop.run_forever()
    # stop() lets the current batch finish, but what it scheduled waits for the next one.
    assert calls == ["first", "second"]
    run_briefly(loop)
    assert calls == ["first", "second", "scheduled-by-first"]


def test_stop_in_a_callback_lets_the_rest_of_the_batch_run(loop):
    calls = []
    loop.call_soon(calls.append, 1)
    loop.call_soon(loop.stop)
    loop.call_soon(calls.append, 2)
    loop.call_soon(calls.append, 3)
    loop.run_forever()
    assert calls == [1, 2, 3]


def test_self_rescheduling_callback_does_not_starve_timers(loop):
    spins = 0
    fired = []

    def spin():
        nonlocal spins
        spins += 1
        if not fired:
            loop.call_soon(spin)

    def timer():
        fired.append(loop.time())
        loop.stop()

    loop.call_later(0.02, timer)
    loop.call_soon(spin)
    loop.run_forever()
    assert fired
    assert spins > 1


def test_cancelled_call_soon_handle_is_not_run(loop):
    calls = []
    handle = loop.call_soon(calls.append, "cancelled")
    loop.call_soon(calls.append, "kept")
    handle.cancel()
    assert handle.cancelled()
    run_briefly(loop)
    assert calls == ["kept"]


def test_handle_cancelled_by_an_earlier_callback_in_the_same_batch_is_skipped(loop):
    calls = []
    later = None

    def canceller():
        calls.append("canceller")
        later.cancel()

    loop.call_soon(canceller)
    later = loop.call_soon(calls.append, "victim")
    run_briefly(loop)
    assert calls == ["canceller"]


def test_cancel_is_idempotent(loop):
    handle = loop.call_soon(print)
    timer = loop.call_later(10, print)
    for h in (handle, timer):
        assert not h.cancelled()
        h.cancel()
        h.cancel()
        assert h.cancelled()
    run_briefly(loop)


def test_cancel_releases_callback_and_arguments(loop):
    class Payload:
        def method(self, arg):
            raise AssertionError("cancelled callback ran")

    schedulers = [
        loop.call_soon,
        lambda cb, arg: loop.call_later(3600, cb, arg),
        lambda cb, arg: loop.call_at(loop.time() + 3600, cb, arg),
    ]
    for schedule in schedulers:
        owner, arg = Payload(), Payload()
        owner_ref, arg_ref = weakref.ref(owner), weakref.ref(arg)
        handle = schedule(owner.method, arg)
        del owner, arg
        assert owner_ref() is not None and arg_ref() is not None
        handle.cancel()
        # No gc.collect(): cancel() itself must drop the references.
        assert owner_ref() is None
        assert arg_ref() is None
    run_briefly(loop)


# -- context= --------------------------------------------------------------------------------


def test_callbacks_run_in_a_copy_of_the_scheduling_context(loop):
    seen = []

    def callback():
        seen.append(request_id.get())
        request_id.set("changed-in-callback")

    token = request_id.set("outer")
    try:
        loop.call_soon(callback)
        loop.call_later(0, callback)
        loop.call_at(loop.time(), callback)
        request_id.set("after-scheduling")
        run_until(loop, lambda: len(seen) == 3)
        assert seen == ["outer", "outer", "outer"]
        # The callback's set() happened in its own copy.
        assert request_id.get() == "after-scheduling"
    finally:
        request_id.reset(token)


@pytest.mark.parametrize("method", ["call_soon", "call_soon_threadsafe", "call_later", "call_at"])
def test_explicit_context_is_used_and_shared_between_callbacks(loop, method):
    ctx = contextvars.Context()
    ctx.run(request_id.set, "from-context")
    seen = []

    def callback(tag):
        seen.append((tag, request_id.get()))
        request_id.set(tag)

    def schedule(tag):
        if method in ("call_soon", "call_soon_threadsafe"):
            return getattr(loop, method)(callback, tag, context=ctx)
        if method == "call_later":
            return loop.call_later(0, callback, tag, context=ctx)
        return loop.call_at(loop.time(), callback, tag, context=ctx)

    schedule("a")
    schedule("b")
    run_until(loop, lambda: len(seen) == 2)
    # Both ran in the very same Context object: the second sees what the first set.
    assert seen == [("a", "from-context"), ("b", "a")]
    assert ctx[request_id] == "b"
    assert request_id.get() == "unset"


@pytest.mark.skipif(sys.version_info < (3, 12), reason="Handle.get_context() is new in 3.12")
def test_handle_get_context(loop):
    ctx = contextvars.Context()
    assert loop.call_soon(print, context=ctx).get_context() is ctx
    assert loop.call_later(10, print, context=ctx).get_context() is ctx
    assert loop.call_at(loop.time() + 10, print, context=ctx).get_context() is ctx
    token = request_id.set("at-scheduling")
    try:
        default = loop.call_later(10, print)
    finally:
        request_id.reset(token)
    assert isinstance(default.get_context(), contextvars.Context)
    assert default.get_context()[request_id] == "at-scheduling"
    default.cancel()
    run_briefly(loop)


# -- timers ----------------------------------------------------------------------------------


def test_call_later_orders_by_deadline_not_by_scheduling(loop):
    calls = []
    loop.call_later(0.03, calls.append, 3)
    loop.call_later(0.01, calls.append, 1)
    loop.call_later(0.02, calls.append, 2)
    loop.call_later(0.0, calls.append, 0)
    loop.call_later(0.04, loop.stop)
    loop.run_forever()
    assert calls == [0, 1, 2, 3]


def test_call_at_orders_by_deadline(loop):
    calls = []
    now = loop.time()
    for offset in (0.02, 0.005, 0.015, 0.01):
        loop.call_at(now + offset, calls.append, offset)
    loop.call_at(now + 0.03, loop.stop)
    loop.run_forever()
    assert calls == [0.005, 0.01, 0.015, 0.02]


def test_equal_deadlines_fire_in_scheduling_order(loop):
    calls = []
    when = loop.time() + 0.01
    loop.call_at(when, calls.append, "first")
    loop.call_at(when, calls.append, "second")
    loop.call_at(when + 0.001, loop.stop)
    loop.run_forever()
    assert calls == ["first", "second"]


def test_equal_deadlines_all_fire_in_the_same_iteration(loop):
    """asyncio documents the order of many callbacks sharing one deadline as undefined (its
    heap is not stable beyond two), so only the set and the iteration are asserted here."""
    calls = []
    when = loop.time() + 0.01
    for i in range(500):
        loop.call_at(when, calls.append, i)
    loop.call_at(when, loop.stop)
    loop.run_forever()
    assert sorted(calls) == list(range(500))


def test_many_random_timers_fire_in_deadline_order(loop):
    rng = random.Random(1234)
    now = loop.time()
    deadlines = [now + rng.uniform(0, 0.05) for _ in range(300)]
    deadlines += deadlines[:20]  # some exact duplicates
    fired = []
    for when in deadlines:
        loop.call_at(when, fired.append, when)
    loop.call_at(now + 0.06, loop.stop)
    loop.run_forever()
    assert fired == sorted(deadlines)


def test_timers_never_fire_before_their_deadline(loop):
    early = []
    count = 0

    def check(handle_box):
        nonlocal count
        count += 1
        now = loop.time()
        when = handle_box[0].when()
        if now < when:
            early.append((when, now))

    for i in range(60):
        box = []
        box.append(loop.call_later(0.001 * (i % 20), check, box))
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert count == 60
    assert early == []


def test_call_later_deadline_is_loop_time_plus_delay(loop):
    before = loop.time()
    handle = loop.call_later(10, print)
    after = loop.time()
    assert before + 10 <= handle.when() <= after + 10
    handle.cancel()


def test_call_at_keeps_the_given_deadline(loop):
    when = loop.time() + 123.5
    handle = loop.call_at(when, print)
    assert handle.when() == when
    handle.cancel()


def test_negative_delay_fires_as_soon_as_possible(loop):
    calls = []
    loop.call_later(-5, calls.append, "negative")
    # In asyncio's loop, due timers join the ready queue behind callbacks already in it, and
    # the whole batch runs in this same iteration.
    loop.call_soon(calls.append, "soon")
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls == ["soon", "negative"]


def test_negative_delay_fires_before_zero_delay(loop):
    calls = []
    loop.call_later(0, calls.append, "zero")
    loop.call_later(-1, calls.append, "negative")
    loop.call_at(loop.time() - 100, calls.append, "far past")
    run_until(loop, lambda: len(calls) == 3)
    assert calls == ["far past", "negative", "zero"]


def test_none_delay_raises_type_error(loop):
    with pytest.raises(TypeError):
        loop.call_later(None, print)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="3.10 asserts instead of raising")
def test_none_when_raises_type_error(loop):
    with pytest.raises(TypeError):
        loop.call_at(None, print)


def test_non_numeric_delay_raises_type_error(loop):
    with pytest.raises(TypeError):
        loop.call_later("1", print)


def test_cancelled_timer_does_not_fire(loop):
    calls = []
    doomed = loop.call_later(0.001, calls.append, "doomed")
    loop.call_later(0.002, calls.append, "kept")
    doomed.cancel()
    loop.call_later(0.02, loop.stop)
    loop.run_forever()
    assert calls == ["kept"]


def test_timer_cancelled_by_an_earlier_timer_in_the_same_iteration_is_skipped(loop):
    calls = []
    when = loop.time() - 1  # both due in the first iteration
    victim = None

    def canceller():
        calls.append("canceller")
        victim.cancel()

    loop.call_at(when, canceller)
    victim = loop.call_at(when, calls.append, "victim")
    loop.call_at(when, loop.stop)
    loop.run_forever()
    assert calls == ["canceller"]
    assert victim.cancelled()


def test_pending_timer_does_not_keep_run_forever_from_stopping(loop):
    handle = loop.call_later(3600, print)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert not handle.cancelled()
    handle.cancel()


def test_timers_scheduled_from_a_timer_callback(loop):
    calls = []

    def chain(n):
        calls.append(n)
        if n < 5:
            loop.call_later(0.001, chain, n + 1)
        else:
            loop.stop()

    loop.call_later(0.001, chain, 0)
    loop.run_forever()
    assert calls == [0, 1, 2, 3, 4, 5]


def test_loop_sleeps_until_the_next_timer(loop):
    """With nothing ready, the loop waits for the timer rather than returning early or
    spinning: the timer fires after its deadline and no other iteration is observable."""
    fired = []
    start = loop.time()
    loop.call_later(0.05, lambda: (fired.append(loop.time()), loop.stop()))
    loop.run_forever()
    assert fired and fired[0] - start >= 0.05


# -- the clock -------------------------------------------------------------------------------


def test_loop_time_is_time_monotonic(loop):
    for _ in range(100):
        t0 = time.monotonic()
        now = loop.time()
        t1 = time.monotonic()
        assert t0 <= now <= t1


def test_loop_time_is_a_float(loop):
    assert isinstance(loop.time(), float)


# -- Handle / TimerHandle API ----------------------------------------------------------------


def named_callback_for_repr():
    pass


def test_handle_repr_names_the_callback(loop):
    handle = loop.call_soon(named_callback_for_repr)
    assert "named_callback_for_repr" in repr(handle)
    assert "cancelled" not in repr(handle)
    handle.cancel()
    assert "cancelled" in repr(handle)


def test_timer_handle_repr_names_the_callback_and_deadline(loop):
    timer = loop.call_later(10, named_callback_for_repr)
    text = repr(timer)
    assert "named_callback_for_repr" in text
    assert f"when={timer.when()}" in text
    timer.cancel()
    assert "cancelled" in repr(timer)


def test_timer_handles_compare_by_deadline(loop):
    now = loop.time()
    early = loop.call_at(now + 1, print)
    late = loop.call_at(now + 2, print)
    assert early < late
    assert late > early
    assert early <= late
    assert sorted([late, early]) == [early, late]
    early.cancel()
    late.cancel()


def test_handles_are_hashable_and_usable_in_sets(loop):
    handles = {loop.call_soon(print), loop.call_later(5, print), loop.call_at(loop.time(), print)}
    assert len(handles) == 3
    for h in handles:
        h.cancel()


def test_timer_handles_with_same_deadline_and_callback_are_equal(loop):
    when = loop.time() + 10
    a = loop.call_at(when, print, 1)
    b = loop.call_at(when, print, 1)
    c = loop.call_at(when, print, 2)
    assert a == b and hash(a) == hash(b)
    assert a != c
    a.cancel()
    assert a != b  # cancellation is part of the comparison
    b.cancel()
    c.cancel()


@pytest.mark.parametrize("delay", [1e9, float("inf")])
def test_huge_delays_do_not_break_the_loop(loop, delay):
    calls = []
    far = loop.call_later(delay, calls.append, "far")
    loop.call_later(0.01, calls.append, "near")
    loop.call_later(0.02, loop.stop)
    loop.run_forever()
    assert calls == ["near"]
    far.cancel()


def test_callback_with_a_context_that_is_already_entered_fails_cleanly(
    loop, loop_errors, caplog
):
    ctx = contextvars.copy_context()
    calls = []
    handle = loop.call_soon(calls.append, "ran", context=ctx)
    # The loop itself runs inside ctx, so entering it again for the callback is an error.
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        ctx.run(run_briefly, loop)
    assert calls == []
    if sys.version_info >= (3, 12):
        # 3.12+ also runs the exception handler in the handle's context, which fails the
        # same way; the loop falls back to logging both errors.
        assert loop_errors.consume() == []
        messages = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
        assert len(messages) == 1 and "Unhandled error in exception handler" in messages[0]
        assert isinstance(caplog.records[0].exc_info[1], RuntimeError)
    else:
        context = loop_errors.pop_one()
        assert context["handle"] is handle
        assert isinstance(context["exception"], RuntimeError)
