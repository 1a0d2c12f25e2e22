"""add_reader / add_writer / remove_reader / remove_writer on real pipes and socket pairs."""

from __future__ import annotations

import asyncio
import contextvars
import os
import socket

import pytest


def run_iterations(loop, n=1):
    """Runs exactly n loop iterations."""
    for _ in range(n):
        loop.call_soon(loop.stop)
        loop.run_forever()


def run_for(loop, seconds):
    loop.call_later(seconds, loop.stop)
    loop.run_forever()


@pytest.fixture
def pipe():
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass


@pytest.fixture
def sockpair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


class FileLike:
    """Anything with a fileno() method is accepted where an fd is."""

    def __init__(self, fd):
        self.fd = fd

    def fileno(self):
        return self.fd


# -- readers ---------------------------------------------------------------------------------


def test_reader_called_when_pipe_has_data(loop, pipe):
    r, w = pipe
    got = []

    def on_readable(tag):
        got.append((tag, os.read(r, 100)))
        loop.stop()

    loop.add_reader(r, on_readable, "pipe")
    loop.call_later(0.01, os.write, w, b"hello")
    loop.call_later(10, loop.stop)  # fallback
    loop.run_forever()
    assert got == [("pipe", b"hello")]
    assert loop.remove_reader(r) is True


def test_reader_not_called_without_data(loop, pipe):
    r, _ = pipe
    calls = []
    loop.add_reader(r, calls.append, "spurious")
    run_for(loop, 0.05)
    assert calls == []
    assert loop.remove_reader(r)


def test_level_triggered_reader_called_every_iteration_until_drained(loop, pipe):
    r, w = pipe
    calls = 0

    def lazy_reader():
        nonlocal calls
        calls += 1  # does not read

    loop.add_reader(r, lazy_reader)
    os.write(w, b"x")
    run_iterations(loop, 5)
    assert calls == 5
    os.read(r, 1)
    run_iterations(loop, 3)
    assert calls == 5
    assert loop.remove_reader(r)


def test_draining_reader_is_not_called_again_spuriously(loop, sockpair):
    a, b = sockpair
    received = []

    def drain():
        while True:
            try:
                chunk = a.recv(4096)
            except BlockingIOError:
                break
            received.append(chunk)

    loop.add_reader(a, drain)
    b.send(b"one")
    run_iterations(loop, 1)
    assert received == [b"one"]
    run_iterations(loop, 5)
    run_for(loop, 0.03)
    assert received == [b"one"]
    # New data makes it ready again.
    b.send(b"two")
    run_for(loop, 0.03)
    assert received == [b"one", b"two"]
    assert loop.remove_reader(a)


def test_reader_partial_reads_continue_next_iteration(loop, pipe):
    r, w = pipe
    chunks = []

    def read_one_byte():
        chunks.append(os.read(r, 1))
        if len(chunks) == 5:
            loop.stop()

    loop.add_reader(r, read_one_byte)
    os.write(w, b"abcde")
    loop.call_later(10, loop.stop)
    loop.run_forever()
    assert b"".join(chunks) == b"abcde"
    assert loop.remove_reader(r)


def test_reader_sees_eof_when_writer_closes(loop, pipe):
    r, w = pipe
    got = []

    def on_readable():
        got.append(os.read(r, 100))
        loop.remove_reader(r)
        loop.stop()

    loop.add_reader(r, on_readable)
    loop.call_soon(os.close, w)
    loop.call_later(10, loop.stop)
    loop.run_forever()
    assert got == [b""]


def test_reader_that_removes_itself_is_not_called_again(loop, pipe):
    r, w = pipe
    calls = []

    def once():
        calls.append(1)
        assert loop.remove_reader(r) is True

    loop.add_reader(r, once)
    os.write(w, b"data left unread")
    run_iterations(loop, 5)
    assert calls == [1]
    assert loop.remove_reader(r) is False


def test_reader_removed_by_an_earlier_callback_in_the_same_iteration(loop):
    pairs = [socket.socketpair() for _ in range(2)]
    try:
        (a1, b1), (a2, b2) = pairs
        calls = []

        def first():
            calls.append("first")
            loop.remove_reader(a2)
            loop.remove_reader(a1)

        def second():
            calls.append("second")
            loop.remove_reader(a1)
            loop.remove_reader(a2)

        loop.add_reader(a1, first)
        loop.add_reader(a2, second)
        b1.send(b"x")
        b2.send(b"x")
        run_iterations(loop, 2)
        # Whichever ran first removed the other before its turn came.
        assert calls in (["first"], ["second"])
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_replacing_a_reader(loop, pipe):
    r, w = pipe
    calls = []
    loop.add_reader(r, calls.append, "old")
    loop.add_reader(r, calls.append, "new")
    os.write(w, b"x")
    run_iterations(loop, 2)
    assert calls == ["new", "new"]
    assert loop.remove_reader(r) is True
    assert loop.remove_reader(r) is False


def test_reader_runs_in_context_of_add_reader(loop, pipe):
    r, w = pipe
    var = contextvars.ContextVar("var", default="default")
    seen = []
    token = var.set("at add_reader")
    try:
        loop.add_reader(r, lambda: seen.append(var.get()))
    finally:
        var.reset(token)
    os.write(w, b"x")
    run_iterations(loop, 1)
    assert seen == ["at add_reader"]
    loop.remove_reader(r)


def test_exception_in_reader_goes_to_handler_and_reader_stays(loop, loop_errors, pipe):
    r, w = pipe
    calls = 0

    def failing_reader():
        nonlocal calls
        calls += 1
        raise RuntimeError("reader failed")

    loop.add_reader(r, failing_reader)
    os.write(w, b"x")
    run_iterations(loop, 2)
    assert calls == 2
    contexts = loop_errors.consume()
    assert len(contexts) == 2
    for ctx in contexts:
        assert isinstance(ctx["exception"], RuntimeError)
        assert "failing_reader" in ctx["message"]
        assert "handle" in ctx
    assert loop.remove_reader(r)


def test_many_readers(loop):
    pairs = [socket.socketpair() for _ in range(100)]
    try:
        got = {}

        def on_readable(i, sock):
            got[i] = sock.recv(100)
            loop.remove_reader(sock)
            if len(got) == len(pairs):
                loop.stop()

        for i, (a, _) in enumerate(pairs):
            a.setblocking(False)
            loop.add_reader(a, on_readable, i, a)
        for i, (_, b) in enumerate(pairs):
            b.send(str(i).encode())
        loop.call_later(10, loop.stop)
        loop.run_forever()
        assert got == {i: str(i).encode() for i in range(len(pairs))}
    finally:
        for a, b in pairs:
            a.close()
            b.close()


# -- writers ---------------------------------------------------------------------------------


def test_writer_called_when_writable(loop, sockpair):
    a, b = sockpair
    calls = []

    def on_writable():
        calls.append(a.send(b"ping"))
        loop.remove_writer(a)
        loop.stop()

    loop.add_writer(a, on_writable)
    loop.call_later(10, loop.stop)
    loop.run_forever()
    assert calls == [4]
    assert b.recv(100) == b"ping"


def test_writer_is_level_triggered(loop, sockpair):
    a, _ = sockpair
    calls = []
    loop.add_writer(a, calls.append, "writable")
    run_iterations(loop, 4)
    assert calls == ["writable"] * 4
    assert loop.remove_writer(a) is True
    run_iterations(loop, 2)
    assert len(calls) == 4


def test_writer_waits_while_buffer_is_full(loop, sockpair):
    a, b = sockpair
    # Fill the send buffer until the socket is no longer writable.
    with pytest.raises(BlockingIOError):
        while True:
            a.send(b"x" * 65536)
    calls = []
    loop.add_writer(a, calls.append, "writable again")
    run_for(loop, 0.03)
    assert calls == []

    def drain():
        while True:
            try:
                if not b.recv(1 << 20):
                    break
            except BlockingIOError:
                break

    loop.call_soon(drain)
    loop.call_later(10, loop.stop)

    def stop_when_called():
        if calls:
            loop.stop()
        else:
            loop.call_later(0.001, stop_when_called)

    loop.call_soon(stop_when_called)
    loop.run_forever()
    assert calls and calls[0] == "writable again"
    assert loop.remove_writer(a)


def test_reader_and_writer_on_the_same_fd(loop, sockpair):
    a, b = sockpair
    reads, writes = [], []
    loop.add_reader(a, lambda: reads.append(a.recv(100)))
    loop.add_writer(a, writes.append, 1)
    b.send(b"data")
    run_iterations(loop, 1)
    assert reads == [b"data"] and writes == [1]
    assert loop.remove_writer(a) is True
    b.send(b"more")
    run_iterations(loop, 1)
    assert reads == [b"data", b"more"] and writes == [1]
    assert loop.remove_reader(a) is True
    assert loop.remove_writer(a) is False


# -- accepted fd forms, return values and errors ---------------------------------------------


def test_objects_with_fileno_are_accepted(loop, sockpair):
    a, b = sockpair
    calls = []
    loop.add_reader(FileLike(a.fileno()), calls.append, "filelike")
    b.send(b"x")
    run_iterations(loop, 1)
    assert calls == ["filelike"]
    # Registrations are keyed by fd: any form naming the same fd removes it.
    assert loop.remove_reader(a) is True
    loop.add_writer(a, calls.append, "socket object")
    assert loop.remove_writer(FileLike(a.fileno())) is True
    loop.add_writer(FileLike(a.fileno()), calls.append, "filelike")
    assert loop.remove_writer(a.fileno()) is True


def test_remove_returns_false_when_nothing_registered(loop, sockpair):
    a, _ = sockpair
    assert loop.remove_reader(a) is False
    assert loop.remove_writer(a) is False
    assert loop.remove_reader(a.fileno()) is False
    loop.add_reader(a, print)
    assert loop.remove_writer(a) is False  # the reader is not a writer
    assert loop.remove_reader(a) is True


def test_remove_on_a_closed_loop_returns_false(loop, sockpair):
    a, _ = sockpair
    loop.add_reader(a, print)
    loop.close()
    assert loop.remove_reader(a) is False
    assert loop.remove_writer(a) is False


def test_add_on_a_closed_loop_raises(loop, sockpair):
    a, _ = sockpair
    loop.close()
    with pytest.raises(RuntimeError, match="closed"):
        loop.add_reader(a, print)
    with pytest.raises(RuntimeError, match="closed"):
        loop.add_writer(a, print)


@pytest.mark.parametrize(
    "bad", [-1, "not a file", 1.5, None, FileLike(-1), FileLike("x")], ids=repr
)
@pytest.mark.parametrize("method", ["add_reader", "add_writer"])
def test_invalid_fds_raise_value_error_on_add(loop, method, bad):
    with pytest.raises(ValueError):
        getattr(loop, method)(bad, print)


@pytest.mark.parametrize("bad", [-1, "not a file", FileLike(-1)], ids=repr)
@pytest.mark.parametrize("method", ["remove_reader", "remove_writer"])
def test_invalid_fds_raise_value_error_on_remove(loop, method, bad):
    with pytest.raises(ValueError):
        getattr(loop, method)(bad)


def test_fd_that_is_not_open_raises_os_error(loop):
    fd = 1_000_000  # far above anything this process has open
    with pytest.raises(OSError):
        os.fstat(fd)
    with pytest.raises(OSError):
        loop.add_reader(fd, print)
    with pytest.raises(OSError):
        loop.add_writer(fd, print)
    assert loop.remove_reader(fd) is False
    assert loop.remove_writer(fd) is False


# -- error conditions and ordering -----------------------------------------------------------


def test_writer_called_when_the_pipe_reader_closes(loop, pipe):
    """A full pipe is not writable; closing its read end is an error condition that must
    reach the writer (which then gets EPIPE), as asyncio's selector reports it."""
    r, w = pipe
    with pytest.raises(BlockingIOError):
        while True:
            os.write(w, b"x" * 65536)
    calls = []
    loop.add_writer(w, calls.append, "writer")
    run_for(loop, 0.02)
    assert calls == []
    os.close(r)
    run_iterations(loop, 2)
    assert calls
    with pytest.raises(BrokenPipeError):
        os.write(w, b"x")
    assert loop.remove_writer(w)


def test_reader_called_when_the_peer_closes(loop, sockpair):
    a, b = sockpair
    got = []
    loop.add_reader(a, lambda: got.append(a.recv(10)))
    b.close()
    run_iterations(loop, 1)
    assert got == [b""]
    assert loop.remove_reader(a)


def test_io_callbacks_run_after_ready_callbacks_and_before_due_timers(loop, pipe):
    """Within one iteration asyncio runs what was already queued, then the I/O callbacks,
    then the timers that became due."""
    r, w = pipe
    order = []
    loop.call_soon(order.append, "call_soon")
    loop.add_reader(r, order.append, "reader")
    loop.call_at(loop.time() - 1, order.append, "timer")
    os.write(w, b"x")
    run_iterations(loop, 1)
    assert order == ["call_soon", "reader", "timer"]
    assert loop.remove_reader(r)


@pytest.mark.parametrize("direction", ["reader", "writer"])
def test_fd_closed_by_its_own_callback_without_removal(loop, direction):
    """Closing the fd before removing its watcher is sloppy but common; asyncio's loop keeps
    running (epoll forgets closed fds) and a later remove_* still reports the registration."""
    a, b = socket.socketpair()
    fd = a.fileno()
    calls = []

    def close_it():
        calls.append(direction)
        a.close()

    try:
        if direction == "reader":
            loop.add_reader(fd, close_it)
            b.send(b"x")
        else:
            loop.add_writer(fd, close_it)
        run_iterations(loop, 3)
        assert calls == [direction]
        remove = loop.remove_reader if direction == "reader" else loop.remove_writer
        assert remove(fd) is True
        assert loop.run_until_complete(asyncio.sleep(0, "still running")) == "still running"
    finally:
        a.close()
        b.close()
