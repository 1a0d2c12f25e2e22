"""asyncio streams (start_server / open_connection and their Unix variants) on the loop.

Pins down the reads a StreamReader offers over a real connection (read, readline, readexactly,
readuntil, their EOF and limit errors), ``drain()`` as back-pressure against a peer that does
not read, what ``drain()`` and ``wait_closed()`` raise once the peer reset the connection, and
closing.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct

import pytest
from netutil import run


class Handlers:
    """A client_connected_cb that hands each (reader, writer) pair to the test."""

    def __init__(self):
        self.queue = asyncio.Queue()

    def __call__(self, reader, writer):
        self.queue.put_nowait((reader, writer))

    async def next(self):
        return await self.queue.get()


async def echo_handler(reader, writer):
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()
    await writer.wait_closed()


async def close_all(*writers):
    for writer in writers:
        writer.close()
    for writer in writers:
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass



# -- echo -------------------------------------------------------------------------------------


def test_tcp_echo(loop):
    async def main():
        server = await asyncio.start_server(echo_handler, "127.0.0.1", 0)
        host, port = server.sockets[0].getsockname()
        reader, writer = await asyncio.open_connection(host, port)
        assert isinstance(writer.transport, asyncio.Transport)
        assert writer.get_extra_info("peername") == (host, port)
        writer.write(b"hello\n")
        writer.writelines([b"wor", b"ld\n"])
        await writer.drain()
        assert await reader.readline() == b"hello\n"
        assert await reader.readline() == b"world\n"
        assert writer.can_write_eof()
        writer.write_eof()
        assert await reader.read() == b""
        assert reader.at_eof()
        await close_all(writer)
        assert writer.is_closing()
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_unix_echo(loop, short_tmp):
    async def main():
        path = os.path.join(short_tmp, "s")
        server = await asyncio.start_unix_server(echo_handler, path)
        reader, writer = await asyncio.open_unix_connection(path)
        assert writer.get_extra_info("peername") == path
        payload = os.urandom(1 << 20)
        writer.write(payload)
        writer.write_eof()
        assert await reader.read() == payload
        await close_all(writer)
        server.close()
        await server.wait_closed()

    run(loop, main())


# -- reads ------------------------------------------------------------------------------------


def test_readline_readexactly_readuntil(loop):
    async def main():
        handlers = Handlers()
        server = await asyncio.start_server(handlers, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
        peer_reader, peer_writer = await handlers.next()
        peer_writer.write(b"line one\nfixed12|record-->rest")
        await peer_writer.drain()
        assert await reader.readline() == b"line one\n"
        assert await reader.readexactly(7) == b"fixed12"
        assert await reader.readuntil(b"|") == b"|"
        assert await reader.readuntil(b"-->") == b"record-->"
        assert await reader.read(100) == b"rest"
        assert await reader.readexactly(0) == b""
        assert not reader.at_eof()
        await close_all(peer_writer, writer)
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_reads_at_eof(loop):
    async def main():
        handlers = Handlers()
        server = await asyncio.start_server(handlers, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
        peer_reader, peer_writer = await handlers.next()
        peer_writer.write(b"partial")
        peer_writer.write_eof()
        with pytest.raises(asyncio.IncompleteReadError) as info:
            await reader.readexactly(10)
        assert info.value.partial == b"partial"
        assert info.value.expected == 10
        assert isinstance(info.value, EOFError)
        assert reader.at_eof()
        assert await reader.readline() == b""
        assert await reader.read() == b""
        await close_all(peer_writer, writer)
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_readuntil_and_readline_at_eof_without_separator(loop):
    async def main():
        handlers = Handlers()
        server = await asyncio.start_server(handlers, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
        peer_reader, peer_writer = await handlers.next()
        peer_writer.write(b"no separator")
        peer_writer.close()
        await peer_writer.wait_closed()
        with pytest.raises(asyncio.IncompleteReadError) as info:
            await reader.readuntil(b"\n")
        assert info.value.partial == b"no separator"
        assert info.value.expected is None
        await close_all(writer)

        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
        peer_reader, peer_writer = await handlers.next()
        peer_writer.write(b"last line")
        peer_writer.close()
        await peer_writer.wait_closed()
        # readline returns what there is instead.
        assert await reader.readline() == b"last line"
        await close_all(writer)
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_limit_overrun(loop):
    async def main():
        handlers = Handlers()
        server = await asyncio.start_server(handlers, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname(), limit=16)
        peer_reader, peer_writer = await handlers.next()
        peer_writer.write(b"a" * 40 + b"\n" + b"tail\n")
        await peer_writer.drain()
        with pytest.raises(asyncio.LimitOverrunError) as info:
            await reader.readuntil(b"\n")
        assert info.value.consumed > 16
        # readline reports the overrun as ValueError and drops the long line.
        with pytest.raises(ValueError):
            await reader.readline()
        assert await reader.readline() == b"tail\n"
        await close_all(peer_writer, writer)
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_large_transfer_through_a_small_limit(loop):
    payload = os.urandom(4 << 20)

    async def main():
        handlers = Handlers()
        server = await asyncio.start_server(handlers, "127.0.0.1", 0, limit=1024)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
        peer_reader, peer_writer = await handlers.next()
        writer.write(payload)
        writer.write_eof()
        received = bytearray()
        while chunk := await peer_reader.read(4096):
            received += chunk
        assert received == payload
        await close_all(peer_writer, writer)
        server.close()
        await server.wait_closed()

    run(loop, main())


# -- back-pressure ----------------------------------------------------------------------------


def test_drain_waits_for_a_slow_reader(loop):
    async def main():
        handlers = Handlers()
        server = await asyncio.start_server(handlers, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
        peer_reader, peer_writer = await handlers.next()
        chunk = os.urandom(1 << 20)
        sent = 0
        for _ in range(256):
            writer.write(chunk)
            sent += len(chunk)
            drain = asyncio.ensure_future(writer.drain())
            await asyncio.sleep(0)
            if not drain.done():
                break
            await drain
        # The peer does not read: drain() stays pending.
        await asyncio.sleep(0.02)
        assert not drain.done()
        assert writer.transport.get_write_buffer_size() > 0
        received = await peer_reader.readexactly(sent)
        await drain
        assert received == chunk * (sent // len(chunk))
        await close_all(peer_writer, writer)
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_drain_after_peer_reset_raises_connection_reset_error(loop):
    async def main():
        handlers = Handlers()
        server = await asyncio.start_server(handlers, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
        peer_reader, peer_writer = await handlers.next()
        sock = peer_writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer_writer.transport.abort()
        await peer_writer.wait_closed()
        with pytest.raises(ConnectionResetError):
            for _ in range(100):
                writer.write(b"x" * 1024)
                await writer.drain()
        assert writer.is_closing()
        with pytest.raises(ConnectionResetError):
            await reader.read()
        writer.close()
        with pytest.raises(ConnectionResetError):
            await writer.wait_closed()
        server.close()
        await server.wait_closed()

    run(loop, main())


# -- closing ----------------------------------------------------------------------------------


def test_wait_closed(loop):
    async def main():
        handlers = Handlers()
        server = await asyncio.start_server(handlers, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
        peer_reader, peer_writer = await handlers.next()
        writer.write(b"before close")
        assert not writer.is_closing()
        writer.close()
        assert writer.is_closing()
        await writer.wait_closed()
        await writer.wait_closed()  # again: still fine
        # Written data was flushed before the close reached the peer.
        assert await peer_reader.read() == b"before close"
        assert peer_reader.at_eof()
        await close_all(peer_writer)
        server.close()
        await server.wait_closed()

    run(loop, main())
