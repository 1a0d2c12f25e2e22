"""CPU-bound jobs past one process pool: `loop.run_in_executor(client.get_executor(), ...)`
with Dask's `distributed.Client` on a `LocalCluster` of worker processes, on both loops.

The cluster is shared by the module's tests (starting one takes seconds); each test gets its
own loop and checks results, exceptions, cancellation and that the loop keeps its pace while
jobs run elsewhere.
"""

from __future__ import annotations

import asyncio
import time

import pytest

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        host="127.0.0.1",
    )
    with cluster, distributed.Client(cluster) as c:
        yield c


def busy(seconds: float, job: int = 0) -> int:
    """CPU-bound for `seconds`, in the worker process; returns its pid. Dask names a job by
    its function and arguments, so jobs meant to be distinct pass distinct `job`s."""
    import os

    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return os.getpid()


def square(x: int) -> int:
    return x * x


def fail(message: str) -> None:
    raise ValueError(message)


def test_results_come_back_from_worker_processes(loop, client):
    import os

    executor = client.get_executor()

    async def main():
        squares = await asyncio.gather(
            *(loop.run_in_executor(executor, square, i) for i in range(20))
        )
        jobs = (loop.run_in_executor(executor, busy, 0.2, i) for i in range(4))
        pids = await asyncio.gather(*jobs)
        return squares, pids

    squares, pids = loop.run_until_complete(main())
    assert squares == [i * i for i in range(20)]
    assert os.getpid() not in pids


def test_an_exception_in_a_job_is_raised_in_the_awaiting_task(loop, client):
    executor = client.get_executor()

    async def main():
        with pytest.raises(ValueError, match="from a worker"):
            await loop.run_in_executor(executor, fail, "from a worker")

    loop.run_until_complete(main())


def test_a_pending_job_can_be_cancelled(loop, client):
    executor = client.get_executor()

    async def main():
        # Both workers busy, so the third job waits: cancelling its future cancels it.
        running = [loop.run_in_executor(executor, busy, 1.0, i) for i in range(2)]
        await asyncio.sleep(0.3)
        pending = loop.run_in_executor(executor, busy, 1.0, 2)
        await asyncio.sleep(0.05)
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        await asyncio.gather(*running)
        return pending

    pending = loop.run_until_complete(main())
    assert pending.cancelled()


def test_the_loop_keeps_its_heartbeat_while_jobs_run(loop, client):
    executor = client.get_executor()
    beats: list[float] = []

    async def heartbeat():
        while True:
            beats.append(time.monotonic())
            await asyncio.sleep(0.01)

    async def main():
        beat = asyncio.ensure_future(heartbeat())
        await asyncio.gather(*(loop.run_in_executor(executor, busy, 0.5, i) for i in range(4)))
        beat.cancel()

    loop.run_until_complete(main())
    gaps = [b - a for a, b in zip(beats, beats[1:], strict=False)]
    # Four 0.5 s jobs on two workers: about a second of beats, none held up by the jobs.
    assert len(beats) > 30, len(beats)
    assert max(gaps) < 0.25, max(gaps)
