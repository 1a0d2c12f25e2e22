"""Tasks on the loop: creation, task factories, current/all tasks, cancellation and the
structured-concurrency helpers (TaskGroup, timeout, wait_for, shield, gather)."""

from __future__ import annotations

import asyncio
import contextvars
import sys

import pytest

var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="default")

py311 = pytest.mark.skipif(sys.version_info < (3, 11), reason="new in Python 3.11")
py312 = pytest.mark.skipif(sys.version_info < (3, 12), reason="new in Python 3.12")


async def return_after_yield(value):
    await asyncio.sleep(0)
    return value


# -- create_task -----------------------------------------------------------------------------


def test_create_task_returns_a_task_bound_to_the_loop(loop):
    task = loop.create_task(return_after_yield(42))
    assert isinstance(task, asyncio.Task)
    assert task.get_loop() is loop
    assert not task.done()
    assert loop.run_until_complete(task) == 42
    assert task.done() and task.result() == 42


def test_create_task_name(loop):
    named = loop.create_task(return_after_yield(1), name="worker-1")
    unnamed = loop.create_task(return_after_yield(2))
    assert named.get_name() == "worker-1"
    assert unnamed.get_name().startswith("Task-")
    loop.run_until_complete(asyncio.gather(named, unnamed))


@py311
def test_create_task_context(loop):
    ctx = contextvars.Context()
    ctx.run(var.set, "in-ctx")

    async def body():
        seen = var.get()
        var.set("set-by-task")
        return seen

    task = loop.create_task(body(), context=ctx)
    assert loop.run_until_complete(task) == "in-ctx"
    assert ctx[var] == "set-by-task"
    assert var.get() == "default"


def test_task_runs_in_a_copy_of_the_creating_context(loop):
    async def child():
        seen = var.get()
        var.set("child")
        return seen

    async def parent():
        var.set("parent")
        seen = await loop.create_task(child())
        return seen, var.get()

    assert loop.run_until_complete(parent()) == ("parent", "parent")


def test_create_task_on_closed_loop_raises(loop):
    loop.close()
    coro = return_after_yield(1)
    try:
        with pytest.raises(RuntimeError, match="closed"):
            loop.create_task(coro)
    finally:
        coro.close()


@pytest.mark.skipif(sys.version_info >= (3, 14), reason="3.14 forwards extra keywords")
def test_create_task_rejects_unknown_keywords(loop):
    coro = return_after_yield(1)
    try:
        with pytest.raises(TypeError):
            loop.create_task(coro, bogus=True)
    finally:
        coro.close()


def test_create_future_is_bound_to_the_loop(loop):
    fut = loop.create_future()
    assert isinstance(fut, asyncio.Future)
    assert fut.get_loop() is loop
    loop.call_soon(fut.set_result, "done")
    assert loop.run_until_complete(fut) == "done"


def test_future_done_callbacks_run_on_the_loop_in_order(loop):
    fut = loop.create_future()
    calls = []
    fut.add_done_callback(lambda f: calls.append(("a", f.result())))
    fut.add_done_callback(lambda f: calls.append(("b", f.result())))
    fut.set_result(7)
    assert calls == []  # scheduled with call_soon, not called synchronously
    loop.run_until_complete(asyncio.sleep(0))
    assert calls == [("a", 7), ("b", 7)]


# -- task factories --------------------------------------------------------------------------


class RecordingFactory:
    def __init__(self):
        self.calls = []

    def __call__(self, loop, coro, **kwargs):
        self.calls.append((loop, coro, kwargs))
        return asyncio.Task(coro, loop=loop, **kwargs)


def test_task_factory_set_and_get(loop):
    assert loop.get_task_factory() is None
    factory = RecordingFactory()
    loop.set_task_factory(factory)
    assert loop.get_task_factory() is factory
    loop.set_task_factory(None)
    assert loop.get_task_factory() is None


def test_task_factory_must_be_callable(loop):
    with pytest.raises(TypeError):
        loop.set_task_factory(42)
    assert loop.get_task_factory() is None


def test_task_factory_is_called_with_loop_and_coro(loop):
    factory = RecordingFactory()
    loop.set_task_factory(factory)
    coro = return_after_yield("via factory")
    task = loop.create_task(coro, name="factory-made")
    assert len(factory.calls) == 1
    got_loop, got_coro, kwargs = factory.calls[0]
    assert got_loop is loop
    assert got_coro is coro
    # Without context=, the legacy two-argument form is used.
    assert kwargs == {}
    assert task.get_name() == "factory-made"
    assert loop.run_until_complete(task) == "via factory"


@py311
def test_task_factory_receives_context_only_when_given(loop):
    factory = RecordingFactory()
    loop.set_task_factory(factory)
    ctx = contextvars.Context()
    task = loop.create_task(return_after_yield(1), context=ctx)
    assert factory.calls[0][2] == {"context": ctx}
    loop.run_until_complete(task)


def test_tasks_created_by_asyncio_helpers_use_the_factory(loop):
    factory = RecordingFactory()
    loop.set_task_factory(factory)

    async def main():
        return await asyncio.gather(return_after_yield(1), return_after_yield(2))

    # run_until_complete wraps main() and gather wraps both coroutines.
    assert loop.run_until_complete(main()) == [1, 2]
    assert len(factory.calls) == 3


def test_task_factory_returning_a_custom_task_subclass(loop):
    class MyTask(asyncio.Task):
        pass

    loop.set_task_factory(lambda lp, coro, **kw: MyTask(coro, loop=lp, **kw))
    task = loop.create_task(return_after_yield("custom"))
    assert type(task) is MyTask
    assert loop.run_until_complete(task) == "custom"


@py312
def test_eager_task_factory_starts_tasks_synchronously(loop):
    loop.set_task_factory(asyncio.eager_task_factory)
    steps = []

    async def child():
        steps.append("child started")
        await asyncio.sleep(0)
        steps.append("child resumed")
        return "child"

    async def finishes_eagerly():
        return "eager"

    async def main():
        task = asyncio.create_task(child())
        steps.append("after create_task")
        eager = asyncio.create_task(finishes_eagerly())
        assert eager.done()
        return await task, eager.result()

    assert loop.run_until_complete(main()) == ("child", "eager")
    assert steps == ["child started", "after create_task", "child resumed"]


# -- current_task / all_tasks ----------------------------------------------------------------


def test_current_task(loop):
    async def main():
        return asyncio.current_task(), asyncio.current_task(loop)

    task = loop.create_task(main())
    assert loop.run_until_complete(task) == (task, task)
    assert asyncio.current_task(loop) is None


def test_current_task_in_a_plain_callback_is_none(loop):
    seen = []
    loop.call_soon(lambda: seen.append(asyncio.current_task()))
    loop.run_until_complete(asyncio.sleep(0.001))
    assert seen == [None]


def test_current_task_without_running_loop_raises(loop):
    with pytest.raises(RuntimeError):
        asyncio.current_task()


def test_all_tasks_lists_pending_tasks_of_this_loop(loop):
    async def main():
        gate = asyncio.Event()
        waiters = [asyncio.create_task(gate.wait()) for _ in range(3)]
        await asyncio.sleep(0)
        pending = asyncio.all_tasks()
        gate.set()
        await asyncio.gather(*waiters)
        after = asyncio.all_tasks()
        return set(waiters), pending, after

    waiters, pending, after = loop.run_until_complete(main())
    assert waiters <= pending
    assert len(pending) == 4  # the waiters and main itself
    assert waiters.isdisjoint(after)
    assert len(after) == 1
    assert asyncio.all_tasks(loop) == set()


# -- cancellation ----------------------------------------------------------------------------


def test_cancel_raises_cancelled_error_inside_and_runs_cleanup(loop):
    events = []

    async def worker(started):
        try:
            started.set_result(None)
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise
        finally:
            events.append("cleanup")

    async def main():
        started = loop.create_future()
        task = asyncio.create_task(worker(started))
        await started
        assert task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return task

    task = loop.run_until_complete(main())
    assert task.cancelled()
    assert events == ["cancelled", "cleanup"]
    assert not task.cancel()  # already done


@py311  # 3.10 drops the message on the awaiting side
def test_cancel_message_is_propagated(loop):
    async def main():
        task = asyncio.create_task(asyncio.sleep(3600))
        await asyncio.sleep(0)
        task.cancel("shutting down")
        try:
            await task
        except asyncio.CancelledError as exc:
            return exc.args

    assert loop.run_until_complete(main()) == ("shutting down",)


def test_cancelled_task_that_suppresses_cancellation_completes(loop):
    async def stubborn():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            return "survived"

    async def main():
        task = asyncio.create_task(stubborn())
        await asyncio.sleep(0)
        task.cancel()
        return await task, task.cancelled()

    assert loop.run_until_complete(main()) == ("survived", False)


@py311
def test_cancelling_and_uncancel(loop):
    async def main():
        task = asyncio.create_task(asyncio.sleep(3600))
        await asyncio.sleep(0)
        task.cancel()
        task.cancel()
        count = task.cancelling()
        with pytest.raises(asyncio.CancelledError):
            await task
        return count

    assert loop.run_until_complete(main()) == 2


def test_cancelling_run_until_complete_task_from_a_callback(loop):
    task = loop.create_task(asyncio.sleep(3600))
    loop.call_later(0.01, task.cancel)
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(task)
    assert task.cancelled()


def test_task_exception_propagates_through_run_until_complete(loop):
    async def boom():
        await asyncio.sleep(0)
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        loop.run_until_complete(boom())


# -- structured concurrency ------------------------------------------------------------------


@py311
def test_task_group_runs_children_and_collects_results(loop):
    async def main():
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(return_after_yield(i)) for i in range(10)]
        return [t.result() for t in tasks]

    assert loop.run_until_complete(main()) == list(range(10))


@py311
def test_task_group_failure_cancels_siblings(loop):
    cancelled = []

    async def sibling(i):
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(i)
            raise

    async def failing():
        await asyncio.sleep(0.01)
        raise ValueError("child failed")

    async def main():
        async with asyncio.TaskGroup() as tg:
            for i in range(3):
                tg.create_task(sibling(i))
            tg.create_task(failing())

    with pytest.raises(BaseExceptionGroup) as info:  # noqa: F821 (3.11+ builtin)
        loop.run_until_complete(main())
    assert [type(e) for e in info.value.exceptions] == [ValueError]
    assert sorted(cancelled) == [0, 1, 2]


@py311
def test_timeout_context_manager(loop):
    async def main():
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01) as cm:
                await asyncio.sleep(3600)
        assert cm.expired()
        async with asyncio.timeout(5) as ok:
            await asyncio.sleep(0)
        assert not ok.expired()
        async with asyncio.timeout(None) as later:
            later.reschedule(asyncio.get_running_loop().time() + 5)
            await asyncio.sleep(0)
        return later.when()

    when = loop.run_until_complete(main())
    assert when is not None and when > loop.time()


@py311
def test_timeout_at_in_the_past_times_out_at_the_next_await(loop):
    async def main():
        with pytest.raises(TimeoutError):
            async with asyncio.timeout_at(loop.time() - 1):
                await asyncio.sleep(0)
        return "ok"

    assert loop.run_until_complete(main()) == "ok"


def test_wait_for_returns_result_in_time(loop):
    async def main():
        return await asyncio.wait_for(return_after_yield("fast"), timeout=5)

    assert loop.run_until_complete(main()) == "fast"


def test_wait_for_times_out_and_cancels_the_inner_task(loop):
    inner_cancelled = []

    async def slow():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            inner_cancelled.append(True)
            raise

    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(slow(), timeout=0.01)

    loop.run_until_complete(main())
    assert inner_cancelled == [True]


def test_wait_for_many_short_timeouts(loop):
    """wait_for arms and disarms a timer each time: a thousand in a row, half expiring."""

    async def main():
        expired = {"slow": 0, "fast": 0}
        for i in range(1000):
            kind = "fast" if i % 2 else "slow"
            try:
                result = await asyncio.wait_for(
                    asyncio.sleep(0 if kind == "fast" else 1, result=i), timeout=0.0001
                )
            except asyncio.TimeoutError:
                expired[kind] += 1
            else:
                assert result == i
        return expired

    expired = loop.run_until_complete(main())
    # Every 1 s sleep expired; the instant ones usually complete (a loaded machine may let
    # some of their 0.1 ms timeouts expire first, which is fine).
    assert expired["slow"] == 500
    assert expired["fast"] <= 500


def test_shield_protects_the_inner_task(loop):
    async def main():
        inner = asyncio.create_task(return_after_yield("inner result"))
        outer = asyncio.ensure_future(asyncio.shield(inner))
        await asyncio.sleep(0)
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer
        return await inner, inner.cancelled()

    assert loop.run_until_complete(main()) == ("inner result", False)


def test_wait_first_completed(loop):
    async def main():
        fast = asyncio.create_task(return_after_yield("fast"))
        slow = asyncio.create_task(asyncio.sleep(3600))
        done, pending = await asyncio.wait({fast, slow}, return_when=asyncio.FIRST_COMPLETED)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        return done == {fast}, pending == {slow}

    assert loop.run_until_complete(main()) == (True, True)


def test_gather_of_many_tasks_keeps_order(loop):
    async def job(i):
        await asyncio.sleep((i % 7) * 0.001)
        return i * i

    async def main():
        return await asyncio.gather(*(job(i) for i in range(2000)))

    assert loop.run_until_complete(main()) == [i * i for i in range(2000)]


def test_gather_return_exceptions(loop):
    async def fail(i):
        await asyncio.sleep(0)
        raise KeyError(i)

    async def main():
        return await asyncio.gather(
            return_after_yield(1), fail(2), return_after_yield(3), return_exceptions=True
        )

    results = loop.run_until_complete(main())
    assert results[0] == 1 and results[2] == 3
    assert isinstance(results[1], KeyError) and results[1].args == (2,)


def test_tens_of_thousands_of_concurrent_tasks(loop):
    n = 30_000
    started = 0

    async def worker(i, gate):
        nonlocal started
        started += 1
        await gate.wait()
        await asyncio.sleep(0)
        return i

    async def main():
        gate = asyncio.Event()
        tasks = [asyncio.create_task(worker(i, gate)) for i in range(n)]
        await asyncio.sleep(0)
        all_started = started
        gate.set()
        results = await asyncio.gather(*tasks)
        return all_started, results

    all_started, results = loop.run_until_complete(main())
    assert all_started == n
    assert results == list(range(n))


def test_many_concurrent_sleepers_wake_in_deadline_order(loop):
    woke = []

    async def sleeper(i, base):
        # An absolute deadline (asyncio.sleep's is relative to when it is called).
        fut = loop.create_future()
        loop.call_at(base + 0.002 * (i % 10), fut.set_result, None)
        await fut
        woke.append(i % 10)

    async def main():
        base = loop.time() + 0.2
        await asyncio.gather(*(sleeper(i, base) for i in range(2_000)))

    loop.run_until_complete(main())
    assert len(woke) == 2_000
    assert woke == sorted(woke)


def test_queue_producer_consumer(loop):
    async def main():
        queue = asyncio.Queue(maxsize=10)
        received = []

        async def producer():
            for i in range(500):
                await queue.put(i)
            await queue.put(None)

        async def consumer():
            while (item := await queue.get()) is not None:
                received.append(item)

        await asyncio.gather(producer(), consumer())
        return received

    assert loop.run_until_complete(main()) == list(range(500))


def test_sleep_returns_its_result_and_waits_at_least_the_delay(loop):
    async def main():
        start = loop.time()
        value = await asyncio.sleep(0.02, result="slept")
        return value, loop.time() - start

    value, elapsed = loop.run_until_complete(main())
    assert value == "slept"
    assert elapsed >= 0.02


def test_replaced_task_factory_may_call_the_loop_from_its_finalizer(loop):
    seen = []

    class Factory:
        def __call__(self, loop, coro, **kwargs):
            return asyncio.Task(coro, loop=loop, **kwargs)

        def __del__(self):
            seen.append(loop.get_task_factory())

    loop.set_task_factory(Factory())
    loop.set_task_factory(None)
    assert seen == [None]
