"""Running, stopping and closing the loop; async generator and executor shutdown; the
runners (asyncio.run / oxloop.run, asyncio.Runner) and the event loop policy."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import threading
import warnings
import weakref

import oxloop
import pytest

py311 = pytest.mark.skipif(sys.version_info < (3, 11), reason="new in Python 3.11")

RUN_FUNCTIONS = {"asyncio": asyncio.run, "oxloop": oxloop.run}
POLICIES = {"asyncio": asyncio.DefaultEventLoopPolicy, "oxloop": oxloop.EventLoopPolicy}


@pytest.fixture
def run_function(loop_name):
    """asyncio.run for the asyncio column, oxloop.run for the oxloop column."""
    if loop_name == "asyncio":
        # asyncio.run uses the policy's loop; make sure it is asyncio's own.
        assert isinstance(asyncio.get_event_loop_policy(), asyncio.DefaultEventLoopPolicy)
        assert not isinstance(asyncio.get_event_loop_policy(), oxloop.EventLoopPolicy)
    return RUN_FUNCTIONS[loop_name]


async def value_after_yield(value):
    await asyncio.sleep(0)
    return value


# -- run_forever / stop / run_until_complete -------------------------------------------------


def test_run_forever_until_stop(loop):
    states = []

    def probe():
        states.append((loop.is_running(), asyncio.get_running_loop() is loop))
        loop.stop()

    assert not loop.is_running()
    loop.call_soon(probe)
    loop.run_forever()
    assert states == [(True, True)]
    assert not loop.is_running()
    assert asyncio._get_running_loop() is None


def test_stop_before_run_forever_runs_one_iteration(loop):
    calls = []
    loop.call_soon(calls.append, 1)
    loop.stop()
    loop.run_forever()
    assert calls == [1]
    # The stop request was consumed: the next run_forever runs until the next stop().
    loop.call_later(0.01, loop.stop)
    loop.call_later(0.005, calls.append, 2)
    loop.run_forever()
    assert calls == [1, 2]


def test_run_forever_can_be_called_again(loop):
    count = 0

    def tick():
        nonlocal count
        count += 1
        loop.stop()

    for _ in range(5):
        loop.call_soon(tick)
        loop.run_forever()
    assert count == 5


def test_run_until_complete_returns_the_result(loop):
    assert loop.run_until_complete(value_after_yield("result")) == "result"
    fut = loop.create_future()
    loop.call_later(0.001, fut.set_result, "from future")
    assert loop.run_until_complete(fut) == "from future"


def test_run_until_complete_accepts_any_awaitable(loop):
    class Awaitable:
        def __await__(self):
            yield from asyncio.sleep(0).__await__()
            return "awaited"

    assert loop.run_until_complete(Awaitable()) == "awaited"


def test_run_until_complete_rejects_non_awaitables(loop):
    with pytest.raises(TypeError):
        loop.run_until_complete(42)


def test_run_until_complete_with_a_future_of_another_loop(loop, loop_factory):
    other = loop_factory()
    try:
        fut = other.create_future()
        with pytest.raises(ValueError):
            loop.run_until_complete(fut)
    finally:
        other.close()


def test_run_until_complete_when_stopped_early(loop):
    fut = loop.create_future()
    loop.call_soon(loop.stop)
    with pytest.raises(RuntimeError, match="Event loop stopped before Future completed"):
        loop.run_until_complete(fut)
    fut.cancel()


def test_run_until_complete_restores_asyncgen_hooks(loop):
    before = sys.get_asyncgen_hooks()
    inside = []

    async def main():
        inside.append(sys.get_asyncgen_hooks())

    loop.run_until_complete(main())
    assert sys.get_asyncgen_hooks() == before
    firstiter, finalizer = inside[0]
    assert firstiter is not None and finalizer is not None


def test_get_event_loop_inside_a_coroutine_is_the_running_loop(loop):
    async def main():
        return asyncio.get_event_loop(), asyncio.get_running_loop()

    assert loop.run_until_complete(main()) == (loop, loop)


# -- nested runs -----------------------------------------------------------------------------


def test_nested_run_until_complete_raises(loop):
    async def main():
        coro = value_after_yield(1)
        try:
            with pytest.raises(RuntimeError, match="already running"):
                loop.run_until_complete(coro)
        finally:
            coro.close()
        with pytest.raises(RuntimeError, match="already running"):
            loop.run_forever()
        return "outer survived"

    assert loop.run_until_complete(main()) == "outer survived"
    assert not loop.is_running()


def test_running_a_second_loop_inside_a_running_loop_raises(loop, loop_factory):
    other = loop_factory()

    async def main():
        coro = value_after_yield(1)
        try:
            with pytest.raises(RuntimeError, match="another loop is running"):
                other.run_until_complete(coro)
        finally:
            coro.close()
        return other.is_running()

    try:
        assert loop.run_until_complete(main()) is False
    finally:
        other.close()


def test_loops_in_different_threads_run_independently(loop, loop_factory):
    results = []

    def thread_main():
        other = loop_factory()
        try:
            results.append(other.run_until_complete(value_after_yield("thread loop")))
        finally:
            other.close()

    async def main():
        thread = threading.Thread(target=thread_main)
        thread.start()
        while thread.is_alive():
            await asyncio.sleep(0.001)
        thread.join()
        return "main loop"

    assert loop.run_until_complete(main()) == "main loop"
    assert results == ["thread loop"]


# -- close -----------------------------------------------------------------------------------


def test_close_state_and_idempotence(loop):
    assert not loop.is_closed()
    # The private attribute libraries read (asyncio's and uvloop's loops have it).
    assert loop._closed is False
    loop.close()
    assert loop.is_closed()
    assert loop._closed is True
    loop.close()
    assert loop.is_closed()


def test_close_running_loop_raises(loop):
    errors = []

    def try_close():
        try:
            loop.close()
        except RuntimeError as exc:
            errors.append(str(exc))
        loop.stop()

    loop.call_soon(try_close)
    loop.run_forever()
    assert errors and "running" in errors[0]
    assert not loop.is_closed()


def test_run_on_closed_loop_raises(loop):
    loop.close()
    with pytest.raises(RuntimeError, match="closed"):
        loop.run_forever()
    coro = value_after_yield(1)
    try:
        with pytest.raises(RuntimeError, match="closed"):
            loop.run_until_complete(coro)
    finally:
        coro.close()


@pytest.mark.parametrize(
    "schedule",
    [
        lambda lp: lp.call_soon(print),
        lambda lp: lp.call_soon_threadsafe(print),
        lambda lp: lp.call_later(1, print),
        lambda lp: lp.call_at(lp.time() + 1, print),
        lambda lp: lp.run_in_executor(None, print),
    ],
    ids=["call_soon", "call_soon_threadsafe", "call_later", "call_at", "run_in_executor"],
)
def test_scheduling_on_a_closed_loop_raises(loop, schedule):
    loop.close()
    with pytest.raises(RuntimeError, match="closed"):
        schedule(loop)


def test_close_drops_pending_callbacks(loop):
    import weakref

    class Payload:
        pass

    payload = Payload()
    ref = weakref.ref(payload)
    loop.call_soon(print, payload)
    loop.call_later(3600, print, payload)
    del payload
    loop.close()
    assert ref() is None


def test_cancelling_handles_after_close_is_harmless(loop):
    soon = loop.call_soon(print)
    timer = loop.call_later(10, print)
    loop.close()
    soon.cancel()
    timer.cancel()
    assert soon.cancelled() and timer.cancelled()


def test_close_shuts_down_the_default_executor(loop):
    loop.run_until_complete(loop.run_in_executor(None, sum, [1, 2]))
    loop.close()
    with pytest.raises(RuntimeError):
        loop.run_in_executor(None, sum, [1, 2])


# -- async generators ------------------------------------------------------------------------


def test_shutdown_asyncgens_finalizes_suspended_generators(loop):
    events = []

    async def agen(tag):
        try:
            yield 1
            yield 2
        finally:
            events.append(f"{tag} finalized")

    gens = []

    async def main():
        for tag in ("a", "b"):
            gen = agen(tag)
            gens.append(gen)
            assert await gen.__anext__() == 1

    loop.run_until_complete(main())
    assert events == []
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert sorted(events) == ["a finalized", "b finalized"]


def test_shutdown_asyncgens_reports_errors_from_aclose(loop, loop_errors):
    async def agen():
        try:
            yield 1
        finally:
            raise ValueError("error while closing")

    gen = agen()

    async def main():
        await gen.__anext__()

    loop.run_until_complete(main())
    loop.run_until_complete(loop.shutdown_asyncgens())
    context = loop_errors.pop_one()
    assert isinstance(context["exception"], ValueError)
    assert context["asyncgen"] is gen
    assert "asynchronous generator" in context["message"]


def test_asyncgen_iterated_after_shutdown_warns(loop):
    async def agen():
        yield 1

    loop.run_until_complete(loop.shutdown_asyncgens())

    async def main():
        gen = agen()
        with pytest.warns(ResourceWarning, match="shutdown_asyncgens"):
            await gen.__anext__()
        await gen.aclose()

    loop.run_until_complete(main())


def test_garbage_collected_async_generator_is_closed_on_the_loop(loop):
    events = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            events.append(("finalized", asyncio.get_running_loop() is loop))

    async def main():
        gen = agen()
        await gen.__anext__()
        del gen  # the finalizer hook schedules aclose() on the loop
        for _ in range(10):
            await asyncio.sleep(0)

    loop.run_until_complete(main())
    assert events == [("finalized", True)]


# -- default executor shutdown ---------------------------------------------------------------


def test_shutdown_default_executor_joins_threads(loop):
    async def main():
        name = await loop.run_in_executor(None, lambda: threading.current_thread().name)
        await loop.shutdown_default_executor()
        return name

    name = loop.run_until_complete(main())
    assert name.startswith("asyncio")
    assert not [t for t in threading.enumerate() if t.name == name]
    with pytest.raises(RuntimeError, match="shutdown"):
        loop.run_in_executor(None, print)


def test_shutdown_default_executor_without_executor(loop):
    loop.run_until_complete(loop.shutdown_default_executor())
    with pytest.raises(RuntimeError, match="shutdown"):
        loop.run_in_executor(None, print)


# -- runners ---------------------------------------------------------------------------------


def test_run_function_returns_and_closes_its_loop(run_function, loop_name, loop_errors):
    seen = {}

    async def main():
        running = asyncio.get_running_loop()
        running.set_exception_handler(loop_errors)
        seen["loop"] = running
        seen["debug"] = running.get_debug()
        return await value_after_yield("done")

    assert run_function(main()) == "done"
    assert isinstance(seen["loop"], oxloop.Loop) == (loop_name == "oxloop")
    assert seen["loop"].is_closed()
    # Debug mode follows PYTHONASYNCIODEBUG / -X dev unless run() is told otherwise.
    assert seen["debug"] is sys.flags.dev_mode or bool(os.environ.get("PYTHONASYNCIODEBUG"))


def test_run_function_debug_flag(run_function, loop_errors):
    async def main():
        asyncio.get_running_loop().set_exception_handler(loop_errors)
        return asyncio.get_running_loop().get_debug()

    assert run_function(main(), debug=True) is True


def test_run_function_propagates_exceptions(run_function, loop_errors):
    async def main():
        asyncio.get_running_loop().set_exception_handler(loop_errors)
        await asyncio.sleep(0)
        raise LookupError("from main")

    with pytest.raises(LookupError, match="from main"):
        run_function(main())


def test_run_function_cancels_leftover_tasks_and_closes_generators(run_function, loop_errors):
    events = []

    async def leftover():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            events.append("task cancelled")
            raise

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            events.append("generator closed")

    gens = []

    async def main():
        asyncio.get_running_loop().set_exception_handler(loop_errors)
        asyncio.get_running_loop().create_task(leftover())
        gen = agen()
        gens.append(gen)
        await gen.__anext__()
        await asyncio.sleep(0)

    run_function(main())
    assert sorted(events) == ["generator closed", "task cancelled"]


def test_run_function_shuts_down_the_default_executor(run_function, loop_errors):
    names = []

    async def main():
        asyncio.get_running_loop().set_exception_handler(loop_errors)
        names.append(
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: threading.current_thread().name
            )
        )

    run_function(main())
    assert names and not [t for t in threading.enumerate() if t.name == names[0]]


def test_run_function_inside_a_running_loop_raises(run_function, loop):
    async def main():
        coro = value_after_yield(1)
        try:
            with pytest.raises(RuntimeError, match="running event loop"):
                run_function(coro)
        finally:
            coro.close()

    loop.run_until_complete(main())


def test_run_function_rejects_non_coroutines(run_function):
    with pytest.raises(ValueError, match="coroutine was expected"):
        run_function(42)


@py311
def test_runner_with_loop_factory(loop_factory, loop_name, loop_errors):
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner_loop = runner.get_loop()
        runner_loop.set_exception_handler(loop_errors)
        assert isinstance(runner_loop, oxloop.Loop) == (loop_name == "oxloop")
        assert runner.run(value_after_yield(1)) == 1
        # The same loop serves every run() call.
        assert runner.run(value_after_yield(2)) == 2
        assert runner.get_loop() is runner_loop
    assert runner_loop.is_closed()


@py311
def test_runner_debug_and_context(loop_factory, loop_errors):
    import contextvars

    var = contextvars.ContextVar("var")

    async def set_var():
        var.set("kept between runs")

    async def get_var():
        return var.get(), asyncio.get_running_loop().get_debug()

    with asyncio.Runner(debug=True, loop_factory=loop_factory) as runner:
        runner.get_loop().set_exception_handler(loop_errors)
        runner.run(set_var())
        assert runner.run(get_var()) == ("kept between runs", True)


# -- policies --------------------------------------------------------------------------------


@pytest.fixture
def restore_policy():
    old = asyncio.get_event_loop_policy()
    try:
        yield
    finally:
        asyncio.set_event_loop_policy(old)


def test_event_loop_policy(loop_name, restore_policy, loop_errors):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # policies are deprecated in 3.14
        policy = POLICIES[loop_name]()
        asyncio.set_event_loop_policy(policy)
        assert asyncio.get_event_loop_policy() is policy
        new = asyncio.new_event_loop()
    try:
        assert isinstance(new, oxloop.Loop) == (loop_name == "oxloop")
        assert new.run_until_complete(value_after_yield("policy loop")) == "policy loop"
    finally:
        new.close()

    async def main():
        asyncio.get_running_loop().set_exception_handler(loop_errors)
        return type(asyncio.get_running_loop())

    # asyncio.run() takes its loop from the policy.
    assert issubclass(asyncio.run(main()), oxloop.Loop) == (loop_name == "oxloop")


# -- resources -------------------------------------------------------------------------------


def open_fds():
    return len(os.listdir("/proc/self/fd"))


def test_closing_loops_releases_their_fds(loop_factory):
    def cycle():
        new = loop_factory()
        new.run_until_complete(value_after_yield(None))
        new.close()

    cycle()  # warm up lazily created process-wide resources
    gc.collect()
    before = open_fds()
    for _ in range(100):
        cycle()
    gc.collect()
    assert open_fds() - before <= 2


def test_closing_loops_with_signal_handlers_and_watchers_releases_fds(loop_factory):
    import signal
    import socket

    def cycle():
        new = loop_factory()
        a, b = socket.socketpair()
        new.add_reader(a, print)
        new.add_writer(b, print)
        new.add_signal_handler(signal.SIGUSR1, print)
        new.run_until_complete(value_after_yield(None))
        new.close()
        a.close()
        b.close()
        assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL

    cycle()
    gc.collect()
    before = open_fds()
    for _ in range(50):
        cycle()
    gc.collect()
    assert open_fds() - before <= 2


def collect_unclosed_loop(drop):
    """Calls drop() (which deletes the last reference to an unclosed loop) and collects;
    returns the ResourceWarning messages. Only the text is kept: a recorded WarningMessage
    would hold the loop (its `source`) and keep it alive."""
    messages = []

    def showwarning(message, category, *args, **kwargs):
        messages.append((category, str(message)))

    with warnings.catch_warnings():
        warnings.simplefilter("always", ResourceWarning)
        warnings.showwarning = showwarning
        drop()
        gc.collect()
    return [text for category, text in messages if category is ResourceWarning]


async def sleep_forever():
    await asyncio.sleep(3600)


def done_future_with_callback(lp, sock):
    fut = lp.create_future()
    fut.add_done_callback(print)
    fut.set_result(None)  # queues the callback


class HandleHolder:
    """Keeps the handle of its own queued callback (to cancel it later), and its loop."""

    def __init__(self, lp, schedule):
        self.loop = lp
        self.handle = schedule(self.method)

    def method(self):
        pass


PENDING_WORK = {
    "nothing": lambda lp, sock: None,
    "ran once": lambda lp, sock: lp.run_until_complete(value_after_yield(None)),
    "call_soon": lambda lp, sock: lp.call_soon(lp.stop),
    "call_later": lambda lp, sock: lp.call_later(3600, lp.stop),
    "future callback": done_future_with_callback,
    "reader": lambda lp, sock: lp.add_reader(sock, lp.stop),
    "held call_soon handle": lambda lp, sock: HandleHolder(lp, lp.call_soon),
    "held call_soon_threadsafe handle": lambda lp, sock: HandleHolder(lp, lp.call_soon_threadsafe),
    "held timer handle": lambda lp, sock: HandleHolder(lp, lambda cb: lp.call_later(3600, cb)),
}


@pytest.mark.parametrize("pending", list(PENDING_WORK))
def test_unclosed_loop_is_collected_warns_and_releases_fds(loop_factory, pending):
    """A loop dropped without close() -- even with callbacks still queued, each of which
    refers back to the loop -- is garbage collected: it warns and its fds are released."""
    import socket

    a, b = socket.socketpair()
    try:
        gc.collect()
        before = open_fds()
        box = [loop_factory()]
        PENDING_WORK[pending](box[0], a)
        ref = weakref.ref(box[0])
        texts = collect_unclosed_loop(box.clear)
        assert len(texts) == 1 and "unclosed event loop" in texts[0], texts
        assert ref() is None, "the loop was not freed"
        assert open_fds() <= before
    finally:
        a.close()
        b.close()


def test_unclosed_loop_with_a_pending_task_is_collected(loop_factory):
    gc.collect()
    before = open_fds()
    box = [loop_factory()]
    box[0].set_exception_handler(lambda lp, ctx: None)  # "Task was destroyed but it is pending"
    task = box[0].create_task(sleep_forever())
    box[0].run_until_complete(asyncio.sleep(0))
    del task
    ref = weakref.ref(box[0])
    texts = collect_unclosed_loop(box.clear)
    assert len(texts) == 1 and "unclosed event loop" in texts[0], texts
    assert ref() is None, "the loop was not freed"
    assert open_fds() <= before


def test_set_event_loop_and_get_event_loop_outside_a_coroutine(loop):
    asyncio.set_event_loop(loop)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            assert asyncio.get_event_loop() is loop
    finally:
        asyncio.set_event_loop(None)


def test_is_running_seen_from_another_thread(loop):
    seen = []

    async def main():
        thread = threading.Thread(target=lambda: seen.append(loop.is_running()))
        thread.start()
        while thread.is_alive():
            await asyncio.sleep(0.001)
        thread.join()

    loop.run_until_complete(main())
    assert seen == [True]
    assert not loop.is_running()


def test_run_until_complete_with_an_already_done_future(loop):
    fut = loop.create_future()
    fut.set_result("already")
    assert loop.run_until_complete(fut) == "already"


@pytest.mark.skipif(
    sys.version_info < (3, 13),
    reason="timeout= is new in 3.12, but early 3.12 releases only apply it after the join",
)
def test_shutdown_default_executor_timeout_warns(loop):
    release = threading.Event()

    async def main():
        loop.run_in_executor(None, release.wait, 10)
        with pytest.warns(RuntimeWarning, match="did not finish"):
            await loop.shutdown_default_executor(timeout=0.05)
        release.set()
        # Let the shutdown thread finish and report back before the loop goes away.
        for _ in range(50):
            await asyncio.sleep(0.01)
            if not [t for t in threading.enumerate() if t.name.startswith("asyncio")]:
                break

    loop.run_until_complete(main())


# -- python -m oxloop script.py: an unmodified program on oxloop ---------------------------

PROGRAM = """\
import asyncio, sys

async def main():
    return type(asyncio.get_running_loop()).__module__.split(".")[0]

print(__name__, sys.argv[1:], asyncio.run(main()))
loop = asyncio.new_event_loop()
print(type(loop).__module__.split(".")[0])
loop.close()
import helper  # found beside the script, as `python script.py` finds it
sys.exit(int(sys.argv[1]))
"""


@pytest.mark.parametrize("how", ["script", "module"])
def test_python_m_oxloop_runs_a_program_on_oxloop(loop_name, tmp_path, how):
    (tmp_path / "prog.py").write_text(PROGRAM)
    (tmp_path / "helper.py").write_text("")
    if loop_name == "asyncio":
        launcher = [sys.executable]
    else:
        launcher = [sys.executable, "-m", "oxloop"]
    target = ["prog.py"] if how == "script" else ["-m", "prog"]
    done = subprocess.run(
        [*launcher, *target, "3", "x"], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 3, done.stderr
    assert done.stdout.splitlines() == [f"__main__ ['3', 'x'] {loop_name}", loop_name]
