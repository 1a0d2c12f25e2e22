"""`oxloop.monitor` and `python -m oxloop top`: the live view over a Unix socket.

The served loops run the same workload on both loops; the monitor reports oxloop's loops
alone, so asyncio's loop must be absent from what it serves.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time

import pytest
from oxloop import monitor


@pytest.fixture
def served(short_tmp):
    """A monitor serving this process at a fresh path; closed (and its socket gone) after."""
    path = str(short_tmp / "monitor.sock")
    m = monitor.serve(path)
    yield path
    m.close()
    assert not os.path.exists(path)


def in_executor(loop, fn, *args):
    """Runs the blocking `fn` on a thread while the loop goes on."""
    return loop.run_in_executor(None, fn, *args)


def exchange(path, data, timeout=5.0):
    """Sends raw `data`, returns everything the monitor answers until it closes or stops."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk


async def ticker(ticks):
    while True:
        ticks.append(time.monotonic())
        await asyncio.sleep(0.005)


def test_a_snapshot_shows_the_running_loop_and_its_tasks(loop, loop_name, served):
    async def main():
        event = asyncio.Event()
        stuck = asyncio.create_task(event.wait(), name="stuck-task")
        await asyncio.sleep(0.05)
        snap = await in_executor(loop, monitor.request, served)
        event.set()
        await stuck
        return snap

    snap = loop.run_until_complete(main())
    assert snap["pid"] == os.getpid()
    ours = [x for x in snap["loops"] if x["loop"] == f"{id(loop):#x}"]
    if loop_name == "asyncio":
        assert ours == []
        return
    [entry] = ours
    assert entry["running"]
    assert entry["stats"]["callbacks"] > 0 and entry["stats"]["enabled"]
    [task] = [t for t in entry["tasks"] if t["name"] == "stuck-task"]
    assert task["age"] >= 0.05
    # The monitor has the loop mark task steps from its start: the idle time is known.
    assert task["idle"] is not None and task["idle"] >= 0.045
    assert "Event.wait" in task["where"]


def test_the_socket_is_its_owners_alone(short_tmp):
    path = str(short_tmp / "m.sock")
    m = monitor.serve(path)
    try:
        assert os.stat(path).st_mode & 0o777 == 0o600
        with pytest.raises(FileExistsError):
            monitor.serve(path)
    finally:
        m.close()
    shared = short_tmp / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(PermissionError):
        monitor.serve(str(shared / "m.sock"))
    # A socket left by a process that is gone is replaced.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()
    m = monitor.serve(path)
    try:
        assert monitor.request(path)["pid"] == os.getpid()
    finally:
        m.close()


@pytest.mark.parametrize(
    "data, error",
    [
        (b"\x00\xffnot a request\n", "unknown request"),
        (b"import os; os._exit(1)\n", "unknown request"),
        (b"x" * (monitor.MAX_REQUEST + 10_000), "too long"),
    ],
    ids=["garbage", "code", "oversized"],
)
def test_bad_requests_get_an_error_and_are_dropped(loop, served, data, error):
    ticks = []

    async def main():
        t = asyncio.create_task(ticker(ticks))
        await asyncio.sleep(0.02)
        reply = await in_executor(loop, exchange, served, data)
        before = len(ticks)
        await asyncio.sleep(0.05)
        good = await in_executor(loop, monitor.request, served)
        t.cancel()
        return reply, before, good

    reply, before, good = loop.run_until_complete(main())
    message = json.loads(reply)
    assert error in message["error"]
    # Nothing else came, the served loop went on, and the monitor still answers.
    assert reply.count(b"\n") == 1
    assert len(ticks) > before
    assert good["pid"] == os.getpid()


def test_silent_and_vanishing_clients_are_dropped(loop, served, monkeypatch):
    monkeypatch.setattr(monitor, "CLIENT_TIMEOUT", 0.3)
    ticks = []

    def silent():
        started = time.monotonic()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(served)
            assert s.recv(100) == b""
        return time.monotonic() - started

    def not_reading():
        # Asks again and again without reading a reply: the monitor's writes block, and it
        # gives up on the client after the timeout.
        started = time.monotonic()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(served)
            try:
                for _ in range(100_000):
                    s.sendall(b"snapshot\n")
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - started
        raise AssertionError("the monitor kept up with a client that never reads")

    def vanishing():
        for _ in range(20):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(served)
                s.sendall(b"snapshot\n")

    async def main():
        t = asyncio.create_task(ticker(ticks))
        silent_for, stuck_for, _ = await asyncio.gather(
            in_executor(loop, silent), in_executor(loop, not_reading), in_executor(loop, vanishing)
        )
        good = await in_executor(loop, monitor.request, served)
        t.cancel()
        return silent_for, stuck_for, good

    silent_for, stuck_for, good = loop.run_until_complete(main())
    assert 0.25 <= silent_for < 3
    assert stuck_for < 4
    assert good["pid"] == os.getpid()
    # The loop ticked all along: it never waited for the monitor.
    gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
    assert len(ticks) > 20 and max(gaps) < 0.25, max(gaps)


APP = textwrap.dedent(
    """
    import asyncio, sys, time
    import oxloop  # serves the monitor (OXLOOP_MONITOR), whichever loop runs
    import {module} as chosen

    async def stuck(event):
        await event.wait()

    async def busy():
        while True:
            await asyncio.sleep(0.001)

    async def main():
        event = asyncio.Event()
        asyncio.create_task(stuck(event), name="stuck-forever")
        asyncio.create_task(busy(), name="busy")
        await asyncio.sleep(0.1)
        time.sleep(0.03)
        print("ready", flush=True)
        await asyncio.sleep(60)

    chosen.run(main())
    """
)


def test_top_in_a_terminal(loop_name, short_tmp):
    tmux = shutil.which("tmux")
    assert tmux, "tmux is installed by scripts/test-servers.sh"
    path = str(short_tmp / "app.sock")
    script = short_tmp / "app.py"
    script.write_text(APP.format(module="oxloop" if loop_name == "oxloop" else "asyncio"))
    env = dict(os.environ, OXLOOP_MONITOR=path)
    app = subprocess.Popen(
        [sys.executable, str(script)], env=env, stdout=subprocess.PIPE, text=True
    )
    session = f"oxloop-top-{os.getpid()}-{loop_name}"
    try:
        assert app.stdout.readline() == "ready\n"
        top = f"{sys.executable} -m oxloop top {path} --interval 0.5"
        subprocess.run(
            [tmux, "new-session", "-d", "-s", session, "-x", "200", "-y", "50", top],
            check=True,
            env={k: v for k, v in os.environ.items() if k != "OXLOOP_MONITOR"},
        )
        screen = ""
        for _ in range(50):
            time.sleep(0.2)
            screen = subprocess.run(
                [tmux, "capture-pane", "-p", "-t", session], capture_output=True, text=True
            ).stdout
            if "callbacks/s" in screen and "callbacks/s -" not in screen:
                break
        assert "oxloop top" in screen and f"pid {app.pid}" in screen, screen
        if loop_name == "asyncio":
            assert "no oxloop loop in this process" in screen, screen
            return
        assert "lag: p50" in screen and "callbacks/s -" not in screen, screen
        assert "stuck-forever  stuck at" in screen, screen
        assert "Task 'Task-1' main at" in screen, screen
    finally:
        subprocess.run([tmux, "kill-session", "-t", session], capture_output=True)
        app.kill()
        app.wait()
        app.stdout.close()
