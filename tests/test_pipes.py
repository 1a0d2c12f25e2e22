"""Pipe transports: loop.connect_read_pipe / loop.connect_write_pipe.

Pins down which files they accept (pipes, FIFOs, sockets, a pty, character devices) and refuse
(regular files), what a read pipe's protocol sees (data, pause_reading / resume_reading, EOF as
eof_received then connection_lost(None), EIO from a pty as connection_lost(OSError)), and what a
write pipe does: write buffering and its limits, pause_writing / resume_writing, write_eof,
abort, and connection_lost when the reading end goes away (None with nothing buffered,
BrokenPipeError with data still buffered).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import socket
import subprocess
import sys
import tty

import pytest
from netutil import ChunkChecker

MIB = 1 << 20

requires_is_reading = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="the read pipe transport has is_reading() from 3.11"
)


def run(loop, coro, timeout=10.0):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


def pattern(size):
    """Bytes that show a lost, repeated or reordered chunk."""
    return b"".join(i.to_bytes(4, "big") for i in range(size // 4))


class Reader(asyncio.Protocol):
    """Keeps what it reads and the order of its callbacks (consecutive data counts once)."""

    def __init__(self, eof_result=None):
        loop = asyncio.get_running_loop()
        self.eof_result = eof_result
        self.transport = None
        self.events = []
        self.data = bytearray()
        self.grew = asyncio.Event()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("connection_made")

    def data_received(self, data):
        self.data += data
        self.grew.set()
        if self.events[-1] != "data":
            self.events.append("data")

    def eof_received(self):
        self.events.append("eof")
        return self.eof_result

    def connection_lost(self, exc):
        self.events.append("connection_lost")
        self.lost.set_result(exc)

    async def read_at_least(self, size):
        while len(self.data) < size:
            self.grew.clear()
            await self.grew.wait()
        return bytes(self.data)


class Writer(asyncio.BaseProtocol):
    """Keeps the order of its callbacks; `resumed` is set by resume_writing."""

    def __init__(self):
        loop = asyncio.get_running_loop()
        self.transport = None
        self.events = []
        self.resumed = asyncio.Event()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("connection_made")

    def pause_writing(self):
        self.events.append("pause_writing")

    def resume_writing(self):
        self.events.append("resume_writing")
        self.resumed.set()

    def connection_lost(self, exc):
        self.events.append("connection_lost")
        self.lost.set_result(exc)


@pytest.fixture
def pipe():
    """An os.pipe() as unbuffered file objects; whichever a test did not hand over is closed."""
    r, w = os.pipe()
    rfile, wfile = open(r, "rb", buffering=0), open(w, "wb", buffering=0)
    yield rfile, wfile
    rfile.close()
    wfile.close()


# -- reading ----------------------------------------------------------------------------------


def write_blocking(wfile, payload):
    os.set_blocking(wfile.fileno(), True)
    view = memoryview(payload)
    while view:
        view = view[os.write(wfile.fileno(), view) :]
    wfile.close()


def test_large_reads_arrive_intact_whether_the_protocol_keeps_them_or_not(loop, pipe):
    # A loop may recycle the bytes objects of large reads that protocols drop: a chunk that
    # is kept must never change, and one that is dropped after its hash was cached must not
    # come back with the old hash.
    rfile, wfile = pipe
    fcntl.fcntl(wfile.fileno(), fcntl.F_SETPIPE_SZ, MIB)
    payload = pattern(32 * MIB)

    async def main():
        _, proto = await loop.connect_read_pipe(ChunkChecker, rfile)
        await loop.run_in_executor(None, write_blocking, wfile, payload)
        assert await proto.lost is None
        return proto

    proto = run(loop, main())
    assert proto.data == payload
    assert proto.mismatches == 0
    assert all(payload[at : at + len(chunk)] == chunk for at, chunk in proto.kept)
    assert max(proto.sizes) > 64 * 1024


@pytest.mark.parametrize("eof_result", [None, True], ids=["eof-returns-none", "eof-returns-true"])
def test_read_pipe_data_then_eof_then_connection_lost(loop, pipe, eof_result):
    rfile, wfile = pipe

    async def main():
        transport, proto = await loop.connect_read_pipe(lambda: Reader(eof_result), rfile)
        assert isinstance(transport, asyncio.ReadTransport)
        assert proto.transport is transport
        assert transport.get_extra_info("pipe") is rfile
        assert transport.get_extra_info("nothing", "default") == "default"
        wfile.write(b"hello ")
        wfile.write(b"pipe")
        assert await proto.read_at_least(10) == b"hello pipe"
        wfile.close()
        # A pipe cannot stay half open: even an eof_received() returning true ends it.
        assert await proto.lost is None
        assert proto.events == ["connection_made", "data", "eof", "connection_lost"]
        assert transport.is_closing()
        assert rfile.closed

    run(loop, main())


def test_closing_a_read_pipe(loop, pipe):
    rfile, wfile = pipe

    async def main():
        transport, proto = await loop.connect_read_pipe(Reader, rfile)
        assert not transport.is_closing()
        transport.close()
        assert transport.is_closing()
        transport.close()
        assert await proto.lost is None
        assert proto.events == ["connection_made", "connection_lost"]
        assert rfile.closed
        with pytest.raises(BrokenPipeError):
            wfile.write(b"nobody reads this")

    run(loop, main())


def test_pause_and_resume_reading(loop, pipe):
    rfile, wfile = pipe
    r2, w2 = os.pipe()
    barrier_r, barrier_w = open(r2, "rb", buffering=0), open(w2, "wb", buffering=0)

    async def main():
        transport, proto = await loop.connect_read_pipe(Reader, rfile)
        barrier, barrier_proto = await loop.connect_read_pipe(Reader, barrier_r)
        transport.pause_reading()
        transport.pause_reading()
        # Both pipes are readable before the loop next polls: once the barrier's data has
        # arrived, the paused pipe's would have too, had it been watched.
        wfile.write(b"held")
        barrier_w.write(b"barrier")
        await barrier_proto.read_at_least(7)
        assert proto.data == b""
        transport.resume_reading()
        transport.resume_reading()
        assert await proto.read_at_least(4) == b"held"
        transport.close()
        barrier.close()
        await proto.lost
        await barrier_proto.lost

    try:
        run(loop, main())
    finally:
        barrier_w.close()
        barrier_r.close()


@requires_is_reading
def test_is_reading(loop, pipe):
    rfile, wfile = pipe

    async def main():
        transport, proto = await loop.connect_read_pipe(Reader, rfile)
        assert transport.is_reading()
        transport.pause_reading()
        assert not transport.is_reading()
        transport.resume_reading()
        assert transport.is_reading()
        transport.close()
        assert not transport.is_reading()
        transport.resume_reading()
        assert not transport.is_reading()
        await proto.lost

    run(loop, main())


def test_pause_reading_then_eof(loop, pipe):
    rfile, wfile = pipe

    async def main():
        transport, proto = await loop.connect_read_pipe(Reader, rfile)
        transport.pause_reading()
        wfile.write(b"last words")
        wfile.close()
        transport.resume_reading()
        assert await proto.lost is None
        assert proto.data == b"last words"
        assert proto.events == ["connection_made", "data", "eof", "connection_lost"]

    run(loop, main())


# -- writing ----------------------------------------------------------------------------------


def test_write_pipe_delivers_bytes_bytearray_and_memoryview(loop, pipe):
    rfile, wfile = pipe

    async def main():
        transport, proto = await loop.connect_write_pipe(Writer, wfile)
        assert isinstance(transport, asyncio.WriteTransport)
        assert proto.transport is transport
        assert transport.get_extra_info("pipe") is wfile
        transport.write(b"bytes ")
        transport.write(bytearray(b"bytearray "))
        transport.write(memoryview(b"memoryview"))
        transport.write(b"")
        assert transport.get_write_buffer_size() == 0
        assert transport.can_write_eof()
        transport.write_eof()
        assert transport.is_closing()
        # Ignored once closing: no exception, nothing written.
        transport.write(b" too late")
        assert await proto.lost is None
        assert proto.events == ["connection_made", "connection_lost"]
        assert wfile.closed

    run(loop, main())
    assert rfile.read() == b"bytes bytearray memoryview"


def test_write_buffer_limits(loop, pipe):
    _, wfile = pipe

    async def main():
        transport, proto = await loop.connect_write_pipe(Writer, wfile)
        assert transport.get_write_buffer_limits() == (16384, 65536)
        transport.set_write_buffer_limits(high=1000)
        assert transport.get_write_buffer_limits() == (250, 1000)
        transport.set_write_buffer_limits(low=100)
        assert transport.get_write_buffer_limits() == (100, 400)
        transport.set_write_buffer_limits(high=10, low=2)
        assert transport.get_write_buffer_limits() == (2, 10)
        with pytest.raises(ValueError):
            transport.set_write_buffer_limits(high=1, low=2)
        with pytest.raises(ValueError):
            transport.set_write_buffer_limits(low=-1)
        transport.close()
        await proto.lost

    run(loop, main())


def test_flow_control_pauses_until_the_reader_drains(loop, pipe):
    rfile, wfile = pipe
    data = pattern(MIB)

    async def main():
        writer, wproto = await loop.connect_write_pipe(Writer, wfile)
        # The pipe takes what fits at once; the rest is buffered, over the high-water mark.
        writer.write(data)
        assert writer.get_write_buffer_size() > 65536
        assert wproto.events == ["connection_made", "pause_writing"]

        reader, rproto = await loop.connect_read_pipe(Reader, rfile)
        await wproto.resumed.wait()
        assert writer.get_write_buffer_size() <= 16384
        assert wproto.events == ["connection_made", "pause_writing", "resume_writing"]
        writer.close()
        assert await wproto.lost is None
        assert await rproto.lost is None
        assert rproto.data == data

    run(loop, main())


def test_write_eof_flushes_the_buffer_first(loop, pipe):
    rfile, wfile = pipe
    data = pattern(MIB)

    async def main():
        writer, wproto = await loop.connect_write_pipe(Writer, wfile)
        writer.write(data)
        writer.write_eof()
        assert writer.is_closing()
        assert writer.get_write_buffer_size() > 0
        assert not wproto.lost.done()
        reader, rproto = await loop.connect_read_pipe(Reader, rfile)
        assert await wproto.lost is None
        assert await rproto.lost is None
        assert rproto.data == data
        assert rproto.events == ["connection_made", "data", "eof", "connection_lost"]

    run(loop, main())


def test_abort_drops_the_buffer(loop, pipe):
    rfile, wfile = pipe
    data = pattern(MIB)

    async def main():
        writer, wproto = await loop.connect_write_pipe(Writer, wfile)
        writer.write(data)
        writer.abort()
        assert writer.is_closing()
        assert writer.get_write_buffer_size() == 0
        assert await wproto.lost is None
        assert wfile.closed
        reader, rproto = await loop.connect_read_pipe(Reader, rfile)
        assert await rproto.lost is None
        # Only what the pipe had taken before the abort.
        assert 0 < len(rproto.data) < len(data)
        assert data.startswith(rproto.data)

    run(loop, main())


@pytest.mark.parametrize("how", ["write_eof", "close", "abort"])
def test_writes_after_closing_are_dropped_and_logged_from_the_sixth(loop, pipe, caplog, how):
    rfile, wfile = pipe

    async def main():
        writer, wproto = await loop.connect_write_pipe(Writer, wfile)
        writer.write(b"before")
        getattr(writer, how)()
        with caplog.at_level("WARNING", logger="asyncio"):
            for _ in range(7):
                writer.write(b"after")
        assert await wproto.lost is None
        reader, rproto = await loop.connect_read_pipe(Reader, rfile)
        assert await rproto.lost is None
        return rproto.data

    # "before" went straight into the pipe, so even abort() leaves it there.
    assert run(loop, main()) == b"before"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["pipe closed by peer or os.write(pipe, data) raised exception."] * 2


def test_write_pipe_takes_only_bytes_like_data(loop, pipe):
    _, wfile = pipe

    async def main():
        writer, wproto = await loop.connect_write_pipe(Writer, wfile)
        # asyncio's pipe transport asserts the type, where its socket transport raises
        # TypeError.
        for bad in ("text", 42, None):
            with pytest.raises(AssertionError):
                writer.write(bad)
        writer.write(b"")
        assert writer.get_write_buffer_size() == 0
        writer.close()
        assert await wproto.lost is None

    run(loop, main())


def test_buffered_bytearray_is_copied(loop, pipe):
    rfile, wfile = pipe

    async def main():
        writer, wproto = await loop.connect_write_pipe(Writer, wfile)
        writer.write(b"\0" * MIB)
        chunk = bytearray(b"A" * 1000)
        writer.write(chunk)
        chunk[:] = b"B" * 1000
        writer.close()
        reader, rproto = await loop.connect_read_pipe(Reader, rfile)
        assert await rproto.lost is None
        assert len(rproto.data) == MIB + 1000
        assert rproto.data[MIB:] == b"A" * 1000
        await wproto.lost

    run(loop, main())


@pytest.mark.parametrize("buffered", [False, True], ids=["empty-buffer", "data-buffered"])
def test_reader_closing_its_end_ends_the_write_pipe(loop, pipe, buffered):
    rfile, wfile = pipe

    async def main():
        writer, wproto = await loop.connect_write_pipe(Writer, wfile)
        writer.write(b"x" * (MIB if buffered else 10))
        assert (writer.get_write_buffer_size() > 0) == buffered
        rfile.close()
        exc = await wproto.lost
        if buffered:
            assert isinstance(exc, BrokenPipeError)
        else:
            assert exc is None
        assert writer.is_closing()
        assert wfile.closed

    run(loop, main())


def test_pipes_one_after_another_reuse_fd_numbers(loop):
    # Each transport's fd is closed before the next pipe is made, so the numbers come back:
    # nothing of an earlier registration may linger on them.
    async def main():
        numbers = set()
        for i in range(20):
            r, w = os.pipe()
            numbers.update((r, w))
            rfile, wfile = open(r, "rb", buffering=0), open(w, "wb", buffering=0)
            reader, rproto = await loop.connect_read_pipe(Reader, rfile)
            writer, wproto = await loop.connect_write_pipe(Writer, wfile)
            message = f"round {i}".encode()
            writer.write(message)
            writer.close()
            assert await wproto.lost is None
            assert await rproto.lost is None
            assert rproto.data == message
        return numbers

    assert len(run(loop, main())) < 40


def test_reprs_say_whether_the_fd_is_watched(loop, pipe):
    rfile, wfile = pipe

    async def main():
        reader, rproto = await loop.connect_read_pipe(Reader, rfile)
        writer, wproto = await loop.connect_write_pipe(Writer, wfile)
        rfd, wfd = rfile.fileno(), wfile.fileno()
        # The class names are each loop's own.
        r, w = type(reader).__name__, type(writer).__name__
        assert repr(reader) == f"<{r} fd={rfd} polling>"
        assert repr(writer) == f"<{w} fd={wfd} idle bufsize=0>"
        reader.pause_reading()
        writer.write(b"x" * MIB)
        size = writer.get_write_buffer_size()
        assert repr(reader) == f"<{r} fd={rfd} idle>"
        assert repr(writer) == f"<{w} fd={wfd} polling bufsize={size}>"
        reader.close()
        assert repr(reader) == f"<{r} closing fd={rfd} idle>"
        await rproto.lost
        await wproto.lost
        assert repr(reader) == f"<{r} closed fd={rfd} closed>"
        assert repr(writer) == f"<{w} closed fd={wfd} closed>"

    run(loop, main())


# -- what they accept -------------------------------------------------------------------------


def test_fifo(loop, tmp_path):
    path = tmp_path / "fifo"
    os.mkfifo(path)
    # Non-blocking opens: the read end first, so that the write end finds a reader.
    rfile = open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb", buffering=0)
    wfile = open(os.open(path, os.O_WRONLY | os.O_NONBLOCK), "wb", buffering=0)

    async def main():
        reader, rproto = await loop.connect_read_pipe(Reader, rfile)
        writer, wproto = await loop.connect_write_pipe(Writer, wfile)
        data = pattern(MIB)
        writer.write(data)
        writer.close()
        assert await wproto.lost is None
        assert await rproto.lost is None
        assert rproto.data == data
        assert rproto.events == ["connection_made", "data", "eof", "connection_lost"]

    try:
        run(loop, main())
    finally:
        rfile.close()
        wfile.close()


def test_socketpair(loop):
    a, b = socket.socketpair()

    async def main():
        reader, rproto = await loop.connect_read_pipe(Reader, a)
        writer, wproto = await loop.connect_write_pipe(Writer, b)
        assert reader.get_extra_info("pipe") is a
        assert writer.get_extra_info("pipe") is b
        writer.write(b"over a socket")
        writer.write_eof()
        assert await wproto.lost is None
        assert await rproto.lost is None
        assert rproto.data == b"over a socket"
        assert rproto.events == ["connection_made", "data", "eof", "connection_lost"]
        assert a.fileno() == b.fileno() == -1

    try:
        run(loop, main())
    finally:
        a.close()
        b.close()


def test_stdout_of_a_popen_child(loop):
    # A child started outside asyncio: its stdout is read through the loop, and its exit
    # status is left for Popen.wait() to collect.
    child = subprocess.Popen([sys.executable, "-c", "print('from popen')"], stdout=subprocess.PIPE)

    async def main():
        reader, rproto = await loop.connect_read_pipe(Reader, child.stdout)
        assert await rproto.lost is None
        assert rproto.data == b"from popen\n"
        assert rproto.events == ["connection_made", "data", "eof", "connection_lost"]

    try:
        run(loop, main())
    finally:
        child.stdout.close()
        assert child.wait() == 0


@pytest.mark.parametrize("buffered", [False, True], ids=["empty-buffer", "data-buffered"])
def test_socket_peer_closing_ends_the_write_pipe(loop, buffered):
    a, b = socket.socketpair()

    async def main():
        writer, wproto = await loop.connect_write_pipe(Writer, b)
        writer.write(b"x" * (4 * MIB if buffered else 10))
        assert (writer.get_write_buffer_size() > 0) == buffered
        a.close()
        exc = await wproto.lost
        if buffered:
            assert isinstance(exc, BrokenPipeError)
        else:
            assert exc is None

    try:
        run(loop, main())
    finally:
        a.close()
        b.close()


@pytest.fixture
def pty():
    master, slave = os.openpty()
    # Raw mode: no echo, no newline translation, bytes go through as written.
    tty.setraw(slave)
    mfile, sfile = open(master, "r+b", buffering=0), open(slave, "r+b", buffering=0)
    yield mfile, sfile
    mfile.close()
    sfile.close()


def test_pty_master_reads_what_the_slave_writes_then_eio(loop, loop_errors, pty):
    mfile, sfile = pty

    async def main():
        reader, rproto = await loop.connect_read_pipe(Reader, mfile)
        sfile.write(b"to the terminal")
        assert await rproto.read_at_least(15) == b"to the terminal"
        sfile.close()
        # The master reads EIO once the slave is closed: connection_lost(OSError), no
        # eof_received, and nothing for the exception handler.
        exc = await rproto.lost
        assert isinstance(exc, OSError)
        assert exc.errno == errno.EIO
        assert rproto.events == ["connection_made", "data", "connection_lost"]

    run(loop, main())
    assert loop_errors.consume() == []


def test_pty_master_writes_what_the_slave_reads(loop, pty):
    mfile, sfile = pty

    async def main():
        writer, wproto = await loop.connect_write_pipe(Writer, mfile)
        reader, rproto = await loop.connect_read_pipe(Reader, sfile)
        writer.write(b"typed in")
        assert await rproto.read_at_least(8) == b"typed in"
        reader.close()
        writer.close()
        assert await rproto.lost is None
        assert await wproto.lost is None

    run(loop, main())


def test_dev_null_as_a_write_pipe(loop):
    devnull = open(os.devnull, "wb", buffering=0)

    async def main():
        writer, wproto = await loop.connect_write_pipe(Writer, devnull)
        writer.write(b"x" * MIB)
        assert writer.get_write_buffer_size() == 0
        assert writer.can_write_eof()
        writer.close()
        assert await wproto.lost is None
        assert wproto.events == ["connection_made", "connection_lost"]
        assert devnull.closed

    try:
        run(loop, main())
    finally:
        devnull.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="epoll's refusal")
def test_dev_zero_is_accepted_but_cannot_be_watched(loop, loop_errors):
    # A character device passes the transport's check, but epoll cannot watch /dev/zero: the
    # reader is added in a callback after connection_made, whose PermissionError goes to the
    # exception handler, and the transport stays open without reading.
    devzero = open("/dev/zero", "rb", buffering=0)

    async def main():
        reader, rproto = await loop.connect_read_pipe(Reader, devzero)
        assert rproto.events == ["connection_made"]
        context = loop_errors.pop_one()
        assert isinstance(context["exception"], PermissionError)
        assert rproto.data == b""
        reader.close()
        assert await rproto.lost is None

    try:
        run(loop, main())
    finally:
        devzero.close()


def test_regular_files_are_refused(loop, tmp_path):
    path = tmp_path / "regular"
    path.write_bytes(b"data")

    async def main():
        with open(path, "rb") as f:
            with pytest.raises(ValueError, match="Pipe transport is for pipes/sockets only"):
                await loop.connect_read_pipe(Reader, f)
            assert not f.closed
        with open(path, "ab") as f:
            with pytest.raises(
                ValueError, match="Pipe transport is only for pipes, sockets and character devices"
            ):
                await loop.connect_write_pipe(Writer, f)
            assert not f.closed

    run(loop, main())
