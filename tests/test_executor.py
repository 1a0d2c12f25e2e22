"""run_in_executor with the default executor, thread and process pools and a custom Executor;
set_default_executor; asyncio.to_thread; and loop responsiveness while CPU-bound jobs run in
worker processes."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import multiprocessing
import os
import socket
import sys
import threading

import pytest

var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="default")


def cpu_bound(n: int) -> int:
    """Pure CPU work, run in worker processes (module level, so that it pickles)."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def worker_pid(_: int = 0) -> int:
    return os.getpid()


def thread_name() -> str:
    return threading.current_thread().name


def raise_value_error(message: str) -> None:
    raise ValueError(message)


# -- default executor ------------------------------------------------------------------------


def test_run_in_executor_default_runs_in_a_worker_thread(loop):
    async def main():
        fut = loop.run_in_executor(None, thread_name)
        assert isinstance(fut, asyncio.Future)
        assert fut.get_loop() is loop
        return await fut

    name = loop.run_until_complete(main())
    assert name != threading.current_thread().name
    assert name.startswith("asyncio")


def test_run_in_executor_passes_args_and_returns_results(loop):
    async def main():
        return await asyncio.gather(*(loop.run_in_executor(None, pow, i, 2) for i in range(50)))

    assert loop.run_until_complete(main()) == [i * i for i in range(50)]


def test_run_in_executor_propagates_exceptions(loop):
    async def main():
        await loop.run_in_executor(None, raise_value_error, "from a thread")

    with pytest.raises(ValueError, match="from a thread"):
        loop.run_until_complete(main())


def test_default_executor_is_reused(loop):
    async def main():
        idents = set()
        for _ in range(20):
            idents.add(await loop.run_in_executor(None, threading.get_ident))
        return idents

    idents = loop.run_until_complete(main())
    # Sequential jobs on one pool reuse its idle worker rather than starting 20 threads.
    assert len(idents) < 20


def test_cancelling_the_wrapper_cancels_a_queued_job(loop):
    started = threading.Event()
    release = threading.Event()
    ran = []

    async def main():
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            blocker = loop.run_in_executor(pool, lambda: (started.set(), release.wait(10)))
            queued = loop.run_in_executor(pool, ran.append, "queued job ran")
            await loop.run_in_executor(None, started.wait, 10)
            queued.cancel()
            await asyncio.sleep(0)
            release.set()
            await blocker
            with pytest.raises(asyncio.CancelledError):
                await queued

    loop.run_until_complete(main())
    assert ran == []


# -- explicit executors ----------------------------------------------------------------------


def test_run_in_thread_pool_executor(loop):
    with concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="mypool") as pool:

        async def main():
            jobs = [loop.run_in_executor(pool, thread_name) for _ in range(8)]
            return await asyncio.gather(*jobs)

        names = loop.run_until_complete(main())
    assert all(name.startswith("mypool") for name in names)


def test_process_pool_cpu_jobs_keep_the_loop_responsive(loop):
    """CPU-bound jobs in worker processes: results are right and the loop keeps ticking."""
    period = 0.01
    lags = []
    ctx = multiprocessing.get_context("spawn")

    async def heartbeat(stop):
        next_tick = loop.time() + period
        while not stop.is_set():
            await asyncio.sleep(max(0.0, next_tick - loop.time()))
            lags.append(loop.time() - next_tick)
            next_tick += period

    async def main(pool):
        # Start the workers (spawn imports this module in them) before measuring.
        warmup = [loop.run_in_executor(pool, worker_pid) for _ in range(4)]
        pids = set(await asyncio.gather(*warmup))
        stop = asyncio.Event()
        beat = asyncio.create_task(heartbeat(stop))
        jobs = [loop.run_in_executor(pool, cpu_bound, 300_000 + i) for i in range(8)]
        results = await asyncio.gather(*jobs)
        stop.set()
        await beat
        return pids, results

    with concurrent.futures.ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool:
        pids, results = loop.run_until_complete(main(pool))
    assert os.getpid() not in pids
    assert results == [cpu_bound(300_000 + i) for i in range(8)]
    assert len(lags) >= 5, "the heartbeat hardly ran while the jobs did"
    assert max(lags) < 0.5, f"loop lag reached {max(lags):.3f}s"


def test_process_pool_exception_propagates(loop):
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:

        async def main():
            await loop.run_in_executor(pool, raise_value_error, "from a process")

        with pytest.raises(ValueError, match="from a process"):
            loop.run_until_complete(main())


class ThreadPerJobExecutor(concurrent.futures.Executor):
    """A minimal custom Executor: every job gets its own thread."""

    def __init__(self):
        self.submitted = 0
        self.threads = []

    def submit(self, fn, /, *args, **kwargs):
        self.submitted += 1
        future = concurrent.futures.Future()

        def run():
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:
                future.set_exception(exc)

        thread = threading.Thread(target=run, name=f"custom-{self.submitted}")
        self.threads.append(thread)
        thread.start()
        return future

    def shutdown(self, wait=True, *, cancel_futures=False):
        if wait:
            for thread in self.threads:
                thread.join()


def test_run_in_custom_executor(loop):
    executor = ThreadPerJobExecutor()

    async def main():
        jobs = [loop.run_in_executor(executor, thread_name) for _ in range(3)]
        names = await asyncio.gather(*jobs)
        with pytest.raises(ValueError, match="custom"):
            await loop.run_in_executor(executor, raise_value_error, "custom")
        return names

    names = loop.run_until_complete(main())
    executor.shutdown()
    assert sorted(names) == ["custom-1", "custom-2", "custom-3"]
    assert executor.submitted == 4


class InlineExecutor(concurrent.futures.Executor):
    """Runs jobs synchronously in submit(): the future is already done when returned."""

    def submit(self, fn, /, *args, **kwargs):
        future = concurrent.futures.Future()
        future.set_running_or_notify_cancel()
        future.set_result(fn(*args, **kwargs))
        return future


def test_run_in_executor_whose_future_is_already_done(loop):
    async def main():
        return await loop.run_in_executor(InlineExecutor(), threading.get_ident)

    assert loop.run_until_complete(main()) == threading.get_ident()


# -- set_default_executor --------------------------------------------------------------------


def test_set_default_executor(loop):
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="my-default")
    loop.set_default_executor(pool)
    try:
        name = loop.run_until_complete(loop.run_in_executor(None, thread_name))
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
    assert name.startswith("my-default")
    # shutdown_default_executor shut down the pool that was set.
    with pytest.raises(RuntimeError):
        pool.submit(print)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="3.10 only warns")
def test_set_default_executor_requires_a_thread_pool(loop):
    with pytest.raises(TypeError, match="ThreadPoolExecutor"):
        loop.set_default_executor(ThreadPerJobExecutor())
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        with pytest.raises(TypeError):
            loop.set_default_executor(pool)


@pytest.mark.skipif(sys.version_info >= (3, 11), reason="3.11+ raises TypeError")
def test_set_default_executor_non_thread_pool_warns_on_310(loop):
    with pytest.warns(DeprecationWarning):
        loop.set_default_executor(InlineExecutor())
    assert loop.run_until_complete(loop.run_in_executor(None, threading.get_ident)) == (
        threading.get_ident()
    )


# -- asyncio.to_thread -----------------------------------------------------------------------


def test_to_thread_runs_in_a_thread_with_the_callers_context(loop):
    async def main():
        var.set("from caller")
        return await asyncio.to_thread(lambda: (var.get(), threading.get_ident()))

    value, ident = loop.run_until_complete(main())
    assert value == "from caller"
    assert ident != threading.get_ident()


def test_to_thread_calls_run_concurrently(loop):
    # Four calls meet at a barrier: run one after the other, the first would wait forever.
    barrier = threading.Barrier(4)

    async def main():
        return await asyncio.gather(*(asyncio.to_thread(barrier.wait, 10) for _ in range(4)))

    assert sorted(loop.run_until_complete(main())) == [0, 1, 2, 3]


# -- name resolution (runs in the default executor) ------------------------------------------


def test_getaddrinfo_matches_socket_module(loop):
    expected = socket.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM)
    got = loop.run_until_complete(loop.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM))
    assert got == expected


def test_getnameinfo_matches_socket_module(loop):
    expected = socket.getnameinfo(("127.0.0.1", 80), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)
    got = loop.run_until_complete(
        loop.getnameinfo(("127.0.0.1", 80), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)
    )
    assert got == expected


# -- the default executor's own behaviour ------------------------------------------------------


def test_default_executor_is_a_thread_pool_executor(loop):
    async def main():
        await loop.run_in_executor(None, int)
        return loop._default_executor

    executor = loop.run_until_complete(main())
    assert isinstance(executor, concurrent.futures.ThreadPoolExecutor)
    # Direct use of the executor object still works like a ThreadPoolExecutor.
    assert executor.submit(pow, 3, 2).result(timeout=10) == 9


def test_cancelled_default_executor_job_that_has_not_started_does_not_run(loop):
    release = threading.Event()
    ran = []

    async def main():
        workers = loop._default_executor._max_workers if loop._default_executor else None
        # Occupy every default worker, so the next job has to wait in the queue.
        n = workers or min(32, (os.cpu_count() or 1) + 4)
        blockers = [loop.run_in_executor(None, release.wait, 10) for _ in range(n)]
        queued = loop.run_in_executor(None, ran.append, "queued job ran")
        await asyncio.sleep(0.05)
        queued.cancel()
        await asyncio.sleep(0)
        release.set()
        await asyncio.gather(*blockers)
        with pytest.raises(asyncio.CancelledError):
            await queued
        # Let the pool reach (and skip) the cancelled job before checking.
        await loop.run_in_executor(None, int)
        await asyncio.sleep(0.05)

    loop.run_until_complete(main())
    assert ran == []


def test_exception_from_default_executor_keeps_its_traceback(loop):
    async def main():
        try:
            await loop.run_in_executor(None, raise_value_error, "deep")
        except ValueError as exc:
            return exc

    exc = loop.run_until_complete(main())
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    assert "raise_value_error" in frames


def test_shutdown_default_executor_waits_for_running_jobs(loop):
    finished = []

    def slow_job():
        threading.Event().wait(0.2)
        finished.append(True)

    async def main():
        loop.run_in_executor(None, slow_job)
        await asyncio.sleep(0.01)
        await loop.shutdown_default_executor()
        assert finished == [True]
        with pytest.raises(RuntimeError, match="Executor shutdown has been called"):
            loop.run_in_executor(None, int)

    loop.run_until_complete(main())


def test_job_finishing_after_the_loop_closed_is_dropped_quietly(loop):
    release = threading.Event()

    async def main():
        return loop.run_in_executor(None, release.wait, 10)

    fut = loop.run_until_complete(main())
    executor = loop._default_executor
    loop.close()
    release.set()
    executor.shutdown(wait=True)
    assert not fut.done()


@pytest.mark.parametrize("loop_name", ["asyncio", "oxloop"])
def test_interpreter_exits_with_the_default_executor_still_open(loop_name):
    """Idle default-executor workers must not keep the interpreter from exiting."""
    import subprocess

    factory = "asyncio.new_event_loop" if loop_name == "asyncio" else "oxloop.new_event_loop"
    code = (
        "import asyncio, oxloop\n"
        f"loop = {factory}()\n"
        "print(loop.run_until_complete(loop.run_in_executor(None, sum, [1, 2])))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "3"


def test_the_private_executor_attributes_anyio_uses(loop):
    # anyio's backport of asyncio.Runner (Python 3.10) shuts the default executor down by
    # hand: it reads `_default_executor` and sets `_executor_shutdown_called`.
    assert loop._default_executor is None
    assert loop.run_until_complete(loop.run_in_executor(None, int, "7")) == 7
    executor = loop._default_executor
    assert isinstance(executor, concurrent.futures.ThreadPoolExecutor)
    loop._executor_shutdown_called = True
    executor.shutdown(wait=True)
    with pytest.raises(RuntimeError, match="Executor shutdown has been called"):
        loop.run_until_complete(loop.run_in_executor(None, int, "7"))
