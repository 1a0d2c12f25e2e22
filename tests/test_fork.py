"""A loop inherited through os.fork(): what the child does with it must not reach the parent.

A forked child shares its parent's epoll instance (the instance itself, not a copy), so a
selector loop in the child that unregisters an fd or closes itself unregisters it for the
parent too, and a child process started by the parent belongs to the parent alone. oxloop gives
an inherited loop an epoll instance, waker and signal socket of its own the first time the
child uses it, and leaves the parent's children to the parent; asyncio's loops do neither, and
each test states what asyncio does on this interpreter beside what oxloop does.

Also here: a child process still running when its loop closes is reaped once it exits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

SH = "/bin/sh"
SLEEP = shutil.which("sleep") or "/bin/sleep"


@pytest.fixture
def report() -> Iterator[tuple[int, int]]:
    """A pipe for the forked child's findings."""
    r, w = os.pipe()
    yield r, w
    os.close(r)
    os.close(w)


def in_forked_child(work: Callable[[], bytes]) -> bytes:
    """Runs `work` in a forked child and returns what it returned; the child never returns."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.write(w, work())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(r, "rb") as f:
        out = f.read()
    assert os.waitstatus_to_exitcode(status) == 0, out
    return out


def run_until(loop: asyncio.AbstractEventLoop, fut: asyncio.Future[str], deadline: float) -> str:
    """Runs the loop until `fut` is done or `deadline` seconds pass; "deadline" if they did."""
    timer = loop.call_later(deadline, lambda: fut.done() or fut.set_result("deadline"))
    try:
        return loop.run_until_complete(fut)
    finally:
        timer.cancel()


def wakeup_from_a_thread(loop: asyncio.AbstractEventLoop) -> str:
    """Runs the loop while another thread calls it with call_soon_threadsafe: "woken" if that
    woke it, "deadline" if the loop slept through it until a timer 2 s on."""
    woken: asyncio.Future[str] = loop.create_future()
    start = loop.time()

    def on_wakeup() -> None:
        if not woken.done():
            woken.set_result("woken" if loop.time() - start < 1.0 else "deadline")

    waker = threading.Timer(0.05, loop.call_soon_threadsafe, (on_wakeup,))
    waker.start()
    try:
        return run_until(loop, woken, 2.0)
    finally:
        waker.join()


def test_a_reader_the_child_removes_stays_with_the_parent(loop, loop_name, report):
    r, w = report
    fired: asyncio.Future[str] = loop.create_future()
    loop.add_reader(r, lambda: fired.done() or fired.set_result("read"))

    def child() -> bytes:
        loop.remove_reader(r)
        return b"removed"

    assert in_forked_child(child) == b"removed"
    os.write(w, b"x")
    try:
        got = run_until(loop, fired, 1.0)
    finally:
        loop.remove_reader(r)
    # asyncio's child unregistered the fd from the epoll instance the parent uses.
    assert got == ("read" if loop_name == "oxloop" else "deadline")


def test_a_connection_the_child_closes_stays_open_for_the_parent(loop, loop_name):
    ours, peer = socket.socketpair()
    received: asyncio.Future[str] = loop.create_future()

    class Receiver(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            if not received.done():
                received.set_result(data.decode())

    transport, _ = loop.run_until_complete(loop.create_connection(Receiver, sock=ours))

    def child() -> bytes:
        transport.close()
        loop.run_until_complete(asyncio.sleep(0.01))  # connection_lost, the socket closed
        return b"closed"

    assert in_forked_child(child) == b"closed"
    peer.sendall(b"data")
    try:
        got = run_until(loop, received, 1.0)
    finally:
        transport.close()
        loop.run_until_complete(asyncio.sleep(0))
        peer.close()
    # asyncio's child unregistered the socket from the epoll instance the parent uses.
    assert got == ("data" if loop_name == "oxloop" else "deadline")


def test_the_child_closing_the_loop_leaves_the_parents_wakeups(loop, loop_name):
    loop.run_until_complete(asyncio.sleep(0))

    def child() -> bytes:
        loop.close()
        return b"closed"

    assert in_forked_child(child) == b"closed"
    got = wakeup_from_a_thread(loop)
    # asyncio's child removed the loop's self-pipe from the shared epoll instance, so the
    # parent's loop sleeps through the wake-up until its next timer (the deadline).
    assert got == ("woken" if loop_name == "oxloop" else "deadline")


def test_a_wakeup_in_flight_at_the_fork_does_not_silence_the_childs(loop):
    # Queued from another thread while the loop is not running: its wake-up is still pending
    # when the process forks.
    loop.call_soon_threadsafe(lambda: None)

    def child() -> bytes:
        return wakeup_from_a_thread(loop).encode()

    assert in_forked_child(child) == b"woken"
    loop.run_until_complete(asyncio.sleep(0))


def test_both_processes_serve_on_the_inherited_loop(loop):
    async def echo_once():
        server = await asyncio.start_server(_echo, "127.0.0.1", 0)
        return server, server.sockets[0].getsockname()[1]

    server, port = loop.run_until_complete(echo_once())

    async def exchange(payload: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(payload)
        await writer.drain()
        got = await reader.readline()
        writer.close()
        await writer.wait_closed()
        return got

    def child() -> bytes:
        # The server is the child's too: the inherited loop accepts this connection itself.
        return loop.run_until_complete(exchange(b"from the child\n"))

    assert in_forked_child(child) == b"from the child\n"
    try:
        assert loop.run_until_complete(exchange(b"after fork\n")) == b"after fork\n"
    finally:
        server.close()
        loop.run_until_complete(server.wait_closed())


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(await reader.readline())
    await writer.drain()
    writer.close()
    await writer.wait_closed()


def test_the_parents_children_stay_the_parents(loop, loop_name):
    proc = loop.run_until_complete(asyncio.create_subprocess_exec(SH, "-c", "sleep 0.3; exit 4"))

    def child() -> bytes:
        # The inherited loop runs while the parent's child exits.
        async def watch() -> int | None:
            for _ in range(500):
                if _state(proc.pid) in ("Z", "gone") or proc.returncode is not None:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)  # a few iterations to handle the exit, if it would
            return proc.returncode

        logging.disable(logging.WARNING)  # asyncio 3.12+ warns of the status it cannot read
        return repr(loop.run_until_complete(watch())).encode()

    seen_by_child = in_forked_child(child)
    try:
        returncode = loop.run_until_complete(asyncio.wait_for(proc.wait(), 2.0))
    except asyncio.TimeoutError:
        returncode = None
        proc._transport.close()  # type: ignore[attr-defined]  # reaps it (Popen.poll)
    if loop_name == "oxloop" or sys.version_info < (3, 12):
        # asyncio before 3.12 waits in a thread, which the child does not have.
        assert (seen_by_child, returncode) == (b"None", 4)
    else:
        # asyncio's pidfd watcher in the child reaps nothing, reports 255, and unregisters
        # the pidfd from the epoll instance the parent waits on: the parent never hears.
        assert (seen_by_child, returncode) == (b"255", None)


def test_the_child_runs_its_own_subprocesses_on_the_inherited_loop(loop):
    async def exit_with(code: int) -> int:
        proc = await asyncio.create_subprocess_exec(SH, "-c", f"exit {code}")
        return await asyncio.wait_for(proc.wait(), 5.0)

    assert loop.run_until_complete(exit_with(1)) == 1  # the loop watches children already

    def child() -> bytes:
        return repr(loop.run_until_complete(exit_with(3))).encode()

    assert in_forked_child(child) == b"3"
    assert loop.run_until_complete(exit_with(5)) == 5


def _state(pid: int) -> str:
    """The process's state letter in /proc ("Z" for a zombie), or "gone" once reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):  # reaped before the open, or during it
        return "gone"


def test_a_child_still_running_when_the_loop_closes_is_reaped(loop, loop_name, caplog):
    proc = loop.run_until_complete(asyncio.create_subprocess_exec(SLEEP, "0.2"))
    pidfd = os.pidfd_open(proc.pid)
    loop.close()
    try:
        os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOWAIT)  # it exited; reaped or not
    except ChildProcessError:
        pass  # reaped already
    finally:
        os.close(pidfd)
    # The reaping thread logs right after it reaps; a zombie stays one.
    for _ in range(200):
        if _state(proc.pid) == "gone" and "that handles pid" in caplog.text:
            break
        time.sleep(0.01)
    state = _state(proc.pid)
    if state == "Z":
        os.waitpid(proc.pid, 0)
    proc._transport.close()  # type: ignore[attr-defined]
    reaped = loop_name == "oxloop" or sys.version_info < (3, 12)
    # asyncio's thread watcher (before 3.12) reaps it; its pidfd watcher leaves a zombie.
    assert state == ("gone" if reaped else "Z")
    assert ("that handles pid" in caplog.text) == reaped
