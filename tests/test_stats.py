"""`loop.stats()`: what oxloop's loop counts about itself.

Each test runs its workload on both loops and checks the workload's own results on both; the
statistics are oxloop's alone, so on asyncio's loop `oxloop.stats()` must refuse it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time

import oxloop
import pytest


def snapshot(loop, loop_name):
    """oxloop.stats(loop) on oxloop; None on asyncio, which must be refused."""
    if loop_name == "asyncio":
        with pytest.raises(TypeError, match="keeps no statistics"):
            oxloop.stats(loop)
        return None
    return oxloop.stats(loop)


def test_callbacks_timers_and_iterations_are_counted(loop, loop_name):
    ran = []
    before = snapshot(loop, loop_name)

    async def main():
        for i in range(100):
            loop.call_soon(ran.append, i)
        for i in range(5):
            loop.call_later(0.001 * i, ran.append, 100 + i)
        await asyncio.sleep(0.02)

    loop.run_until_complete(main())
    assert sorted(ran) == list(range(105))
    after = snapshot(loop, loop_name)
    if after is None:
        return
    assert before.callbacks == 0 and before.iterations == 0
    # The 105 callbacks, the main task's steps and the sleep's own timer.
    assert after.callbacks >= 105 + 2
    assert after.timers_fired >= 6
    assert after.iterations >= 3
    assert after.lag.count >= 105
    assert after.uptime > 0.02
    assert after.ready == 0 and after.timers == 0
    assert after.enabled


def test_poll_and_callback_time_split(loop, loop_name):
    async def main():
        await asyncio.sleep(0.1)
        time.sleep(0.05)

    loop.run_until_complete(main())
    s = snapshot(loop, loop_name)
    if s is None:
        return
    assert s.poll_time >= 0.09, s
    assert s.callback_time >= 0.05, s
    assert s.poll_time + s.callback_time <= s.uptime


def test_the_slowest_callbacks_are_named(loop, loop_name):
    def blocking_callback():
        time.sleep(0.03)

    async def slow_worker():
        await asyncio.sleep(0)
        time.sleep(0.06)
        await asyncio.sleep(0)  # the slow step ends here: this is where the task waits

    async def main():
        loop.call_soon(blocking_callback)
        await loop.create_task(slow_worker(), name="slow-worker")
        for _ in range(50):
            await asyncio.sleep(0)

    loop.run_until_complete(main())
    s = snapshot(loop, loop_name)
    if s is None:
        return
    assert len(s.slowest) == 10
    first, second = s.slowest[:2]
    assert first.duration >= 0.06 and second.duration >= 0.03, s.slowest
    assert [x.duration for x in s.slowest] == sorted((x.duration for x in s.slowest), reverse=True)
    line = slow_worker.__code__.co_firstlineno + 3
    want = f"Task 'slow-worker' {slow_worker.__qualname__} at {__file__}:{line}"
    assert first.name == want, first
    assert "blocking_callback" in second.name and __file__ in second.name, second
    assert abs(first.at - time.time()) < 60


def test_lag_shows_a_callback_that_kept_others_waiting(loop, loop_name):
    fired = []

    async def main():
        loop.call_later(0.01, lambda: fired.append(loop.time()))
        time.sleep(0.06)  # the timer is due during this step, and must wait for its end
        await asyncio.sleep(0.02)

    start = loop.time()
    loop.run_until_complete(main())
    assert fired and fired[0] - start >= 0.05
    s = snapshot(loop, loop_name)
    if s is None:
        return
    assert s.lag.max >= 0.045, s.lag
    assert s.lag.p50 < 0.045, s.lag
    assert sum(n for _, n in s.lag.buckets) == s.lag.count
    assert s.lag.p50 <= s.lag.p99 <= s.lag.max


def test_open_transports_servers_and_watchers_are_counted(loop, loop_name):
    async def main():
        base = snapshot(loop, loop_name)
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        a, b = socket.socketpair()
        loop.add_reader(a, lambda: None)
        during = snapshot(loop, loop_name)
        loop.remove_reader(a)
        a.close()
        b.close()
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.01)
        return base, during, snapshot(loop, loop_name)

    base, during, after = loop.run_until_complete(main())
    if during is None:
        return
    # The client's transport and the server's end of the connection.
    assert during.transports - base.transports == 2, (base, during)
    assert (base.servers, during.servers, after.servers) == (0, 1, 0)
    # The listening socket's accept watcher and the socket pair's reader.
    assert during.fd_watchers - base.fd_watchers == 2
    assert after.transports == base.transports
    assert after.fd_watchers == base.fd_watchers
    assert during.io_events > base.io_events


def test_children_are_counted(loop, loop_name):
    async def main():
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "input()", stdin=-1)
        during = snapshot(loop, loop_name)
        await proc.communicate(b"\n")
        return proc.returncode, during, snapshot(loop, loop_name)

    returncode, during, after = loop.run_until_complete(main())
    assert returncode == 0
    if during is None:
        return
    assert (during.children, after.children) == (1, 0)


def test_counting_can_be_turned_off(loop, loop_name):
    if loop_name == "oxloop":
        loop.stats_enabled = False

    async def main():
        for _ in range(10):
            await asyncio.sleep(0)

    loop.run_until_complete(main())
    s = snapshot(loop, loop_name)
    if s is None:
        return
    assert not s.enabled
    assert (s.callbacks, s.iterations, s.lag.count, s.slowest) == (0, 0, 0, ())
    loop.stats_enabled = True
    loop.run_until_complete(main())
    assert oxloop.stats(loop).callbacks >= 10


def test_oxloop_stats_0_in_the_environment_turns_counting_off(loop_name):
    code = (
        "import asyncio, oxloop\n"
        "loop = oxloop.new_event_loop()\n"
        "loop.run_until_complete(asyncio.sleep(0))\n"
        "s = loop.stats()\n"
        "print(s.enabled, s.callbacks)\n"
    )
    for value, want in (("0", "False 0"), ("1", "True")):
        env = dict(os.environ, OXLOOP_STATS=value)
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        ).stdout
        assert out.startswith(want), (value, out)


def test_a_callback_that_fails_to_describe_itself_still_runs(loop, loop_name):
    ran = []

    class Awkward:
        """A callable whose `__self__` raises, as a broken proxy's might."""

        def __call__(self):
            time.sleep(0.01)
            ran.append(1)

        @property
        def __self__(self):
            raise RuntimeError("no __self__")

    loop.call_soon(Awkward())
    loop.run_until_complete(asyncio.sleep(0.01))
    assert ran == [1]
    s = snapshot(loop, loop_name)
    if s is None:
        return
    assert any(x.name == Awkward.__qualname__ for x in s.slowest), s.slowest


def test_a_finaliser_run_as_a_callback_is_released_may_use_the_loop(loop, loop_name):
    ran = []

    class Reschedules:
        def __del__(self):
            loop.call_soon(ran.append, "finalised")

    loop.call_soon(lambda held: None, Reschedules())
    loop.run_until_complete(asyncio.sleep(0.01))
    assert ran == ["finalised"]
    s = snapshot(loop, loop_name)
    if s is not None:
        assert s.callbacks >= 2


def test_an_interrupt_while_a_callback_is_described_leaves_the_loop(loop, loop_name, monkeypatch):
    if loop_name == "asyncio":
        pytest.skip("asyncio's loop runs no statistics code")
    from oxloop import _helpers

    def interrupted(handle):
        # As Ctrl-C arriving while the loop names a callback among the slowest.
        raise KeyboardInterrupt

    monkeypatch.setattr(_helpers, "describe_callback", interrupted)
    loop.call_soon(time.sleep, 0.001)
    with pytest.raises(KeyboardInterrupt):
        loop.run_until_complete(asyncio.sleep(0.01))
