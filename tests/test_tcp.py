"""TCP transports and protocols over real loopback sockets.

Pins down what a protocol observes through ``create_server`` / ``create_connection``: the order
of its callbacks, the transport's type and extra info, what ``write`` accepts and delivers,
half-close, ``close`` versus ``abort``, read pausing, write flow control (``pause_writing`` /
``resume_writing`` around the buffer limits), protocol switching, connection errors, the
argument checks, and errors raised by protocol callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import struct
import subprocess
import sys
import textwrap

import pytest
from netutil import ChunkChecker, requires_ipv6, run

# Connections held open at once against a single server in the scale test.
SCALE_CONNECTIONS = 10_000





class Peer(asyncio.Protocol):
    """Records its callbacks in order ("data" once per run of data_received calls)."""

    def __init__(self, *, echo=False, eof_result=None):
        loop = asyncio.get_running_loop()
        self.echo = echo
        self.eof_result = eof_result
        self.events = []
        self.data = bytearray()
        self.data_types = set()
        self.transport = None
        self.made = loop.create_future()
        self.got_eof = loop.create_future()
        self.lost = loop.create_future()
        self._more = asyncio.Event()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("connection_made")
        self.made.set_result(transport)

    def data_received(self, data):
        self.data_types.add(type(data))
        if not self.events or self.events[-1] != "data":
            self.events.append("data")
        self.data += data
        self._more.set()
        if self.echo:
            self.transport.write(data)

    def eof_received(self):
        self.events.append("eof")
        self.got_eof.set_result(None)
        return self.eof_result

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.set_result(exc)
        self._more.set()

    async def stop_reading(self):
        # Not from connection_made(): 3.10 starts reading after it regardless.
        await self.made
        self.transport.pause_reading()

    async def received(self, nbytes):
        """Waits until at least nbytes arrived in total."""
        while len(self.data) < nbytes:
            if self.lost.done():
                raise AssertionError(f"connection lost after {len(self.data)} bytes")
            self._more.clear()
            await self._more.wait()
        return bytes(self.data)


@contextlib.asynccontextmanager
async def serving(loop, protocol_factory=Peer, host="127.0.0.1", **kwargs):
    """A listening server; yields it and a queue of the protocols it creates."""
    accepted = asyncio.Queue()
    made = []

    def factory():
        proto = protocol_factory()
        made.append(proto)
        accepted.put_nowait(proto)
        return proto

    server = await loop.create_server(factory, host, 0, **kwargs)
    try:
        yield server, accepted
    except BaseException:
        # A failing test must not leave connections that would keep wait_closed() waiting.
        for proto in made:
            if proto.transport is not None:
                proto.transport.abort()
        raise
    finally:
        server.close()
        await server.wait_closed()


def address(server):
    return server.sockets[0].getsockname()[:2]


def free_closed_port():
    """A loopback port bound by a socket that does not listen: connecting is refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


async def fill_until_buffered(transport, chunk=b"x" * (1 << 20), limit=256):
    """Writes to a peer that does not read until the transport has to buffer."""
    total = 0
    for _ in range(limit):
        transport.write(chunk)
        total += len(chunk)
        if transport.get_write_buffer_size():
            return total
        await asyncio.sleep(0)
    raise AssertionError("the peer's socket never filled up")


# -- round trip and callback order ------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["127.0.0.1", pytest.param("::1", marks=requires_ipv6)], ids=["ipv4", "ipv6"]
)
def test_echo_round_trip_and_callback_order(loop, host):
    async def main():
        async with serving(loop, lambda: Peer(echo=True), host=host) as (server, accepted):
            transport, client = await loop.create_connection(Peer, *address(server))
            transport.write(b"hello ")
            transport.write(b"world")
            transport.write_eof()
            peer = await accepted.get()
            assert await client.lost is None
            assert await peer.lost is None
        assert peer.data == b"hello world"
        assert client.data == b"hello world"
        assert client.data_types == {bytes}
        assert peer.events == ["connection_made", "data", "eof", "lost"]
        assert client.events == ["connection_made", "data", "eof", "lost"]

    run(loop, main())


def test_connection_made_runs_before_create_connection_returns(loop):
    async def main():
        async with serving(loop) as (server, accepted):
            transport, client = await loop.create_connection(Peer, *address(server))
            assert client.made.done() and client.made.result() is transport
            assert client.events == ["connection_made"]
            peer = await accepted.get()
            transport.close()
            await client.lost
            await peer.lost

    run(loop, main())


def test_transport_is_a_read_write_transport(loop):
    async def main():
        async with serving(loop) as (server, accepted):
            transport, client = await loop.create_connection(Peer, *address(server))
            for cls in (
                asyncio.BaseTransport,
                asyncio.ReadTransport,
                asyncio.WriteTransport,
                asyncio.Transport,
            ):
                assert isinstance(transport, cls), cls
            assert not isinstance(transport, asyncio.DatagramTransport)
            peer = await accepted.get()
            assert isinstance(peer.transport, asyncio.Transport)
            assert transport.get_protocol() is client
            transport.close()
            await client.lost
            await peer.lost

    run(loop, main())


def test_get_extra_info(loop):
    async def main():
        async with serving(loop) as (server, accepted):
            host, port = address(server)
            transport, client = await loop.create_connection(Peer, host, port)
            peer = await accepted.get()
            sock = transport.get_extra_info("socket")
            assert isinstance(sock, asyncio.trsock.TransportSocket)
            assert sock.fileno() >= 0
            assert sock.family == socket.AF_INET
            assert sock.type == socket.SOCK_STREAM
            sockname = transport.get_extra_info("sockname")
            assert sockname == sock.getsockname()
            assert sockname[0] == "127.0.0.1"
            assert transport.get_extra_info("peername") == (host, port)
            assert peer.transport.get_extra_info("peername") == sockname
            assert peer.transport.get_extra_info("sockname") == (host, port)
            assert isinstance(
                peer.transport.get_extra_info("socket"), asyncio.trsock.TransportSocket
            )
            assert transport.get_extra_info("peercert") is None
            assert transport.get_extra_info("sslcontext") is None
            assert transport.get_extra_info("no such key") is None
            assert transport.get_extra_info("no such key", "fallback") == "fallback"
            transport.close()
            await client.lost
            await peer.lost

    run(loop, main())


# -- writing ----------------------------------------------------------------------------------


def test_write_and_writelines_accept_bytes_like(loop):
    async def main():
        async with serving(loop) as (server, accepted):
            transport, client = await loop.create_connection(Peer, *address(server))
            transport.write(b"a")
            transport.write(bytearray(b"b"))
            transport.write(memoryview(b"xcx")[1:2])
            transport.write(b"")
            transport.writelines([b"d", bytearray(b"e"), memoryview(b"f")])
            transport.writelines([])
            transport.write_eof()
            peer = await accepted.get()
            await peer.got_eof
            assert peer.data == b"abcdef"
            await client.lost
            await peer.lost

    run(loop, main())


def test_write_rejects_str(loop):
    async def main():
        async with serving(loop) as (server, accepted):
            transport, client = await loop.create_connection(Peer, *address(server))
            with pytest.raises(TypeError, match="bytes-like"):
                transport.write("text")
            with pytest.raises(TypeError):
                transport.writelines(["text"])
            assert not transport.is_closing()
            transport.write(b"still usable")
            transport.write_eof()
            peer = await accepted.get()
            await peer.got_eof
            assert peer.data == b"still usable"
            await client.lost
            await peer.lost

    run(loop, main())


def test_large_payload_arrives_intact_and_in_order(loop):
    payload = os.urandom(8 << 20)

    async def main():
        async with serving(loop, lambda: Peer(echo=True)) as (server, accepted):
            transport, client = await loop.create_connection(Peer, *address(server))
            transport.write(payload)
            transport.write_eof()
            peer = await accepted.get()
            assert await client.lost is None
            await peer.lost
        assert len(peer.data) == len(payload)
        assert peer.data == payload
        assert client.data == payload

    run(loop, main(), timeout=30)


def test_large_reads_arrive_intact_whether_the_protocol_keeps_them_or_not(loop):
    # A loop may recycle the bytes objects of large reads that protocols drop: a chunk that
    # is kept must never change, and one that is dropped after its hash was cached must not
    # come back with the old hash.
    payload = os.urandom(32 << 20)

    async def main():
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            sender = socket.create_connection(listener.getsockname())
            accepted, _ = listener.accept()
        with sender:
            _, proto = await loop.connect_accepted_socket(ChunkChecker, accepted)
            await loop.run_in_executor(None, sender.sendall, payload)
            sender.shutdown(socket.SHUT_WR)
            await proto.lost
        return proto

    proto = run(loop, main(), timeout=30)
    assert proto.data == payload
    assert proto.mismatches == 0
    assert all(payload[at : at + len(chunk)] == chunk for at, chunk in proto.kept)
    assert max(proto.sizes) > 64 * 1024


def test_close_delivers_buffered_data_before_eof(loop):
    async def main():
        async with serving(loop) as (server, accepted):
            transport, client = await loop.create_connection(Peer, *address(server))
            peer = await accepted.get()
            await peer.stop_reading()
            total = await fill_until_buffered(transport)
            transport.close()
            assert transport.is_closing()
            # The buffer cannot drain while the peer does not read: no connection_lost yet.
            await asyncio.sleep(0.05)
            assert not client.lost.done()
            peer.transport.resume_reading()
            assert await client.lost is None
            await peer.got_eof
            assert len(peer.data) == total
            assert await peer.lost is None
        assert peer.events == ["connection_made", "data", "eof", "lost"]
        assert client.events == ["connection_made", "lost"]

    run(loop, main())


def test_abort_drops_buffered_data(loop):
    async def main():
        async with serving(loop) as (server, accepted):
            transport, client = await loop.create_connection(Peer, *address(server))
            peer = await accepted.get()
            await peer.stop_reading()
            total = await fill_until_buffered(transport)
            assert transport.get_write_buffer_size() > 0
            transport.abort()
            assert transport.is_closing()
            assert transport.get_write_buffer_size() == 0
            assert await client.lost is None
            peer.transport.resume_reading()
            await peer.lost
            assert 0 < len(peer.data) < total
        assert client.events == ["connection_made", "lost"]

    run(loop, main())


def test_write_after_write_eof_raises(loop):
    async def main():
        async with serving(loop) as (server, accepted):
            transport, client = await loop.create_connection(Peer, *address(server))
            assert transport.can_write_eof()
            transport.write(b"last")
            transport.write_eof()
            transport.write_eof()  # a second call is a no-op
            assert not transport.is_closing()
            with pytest.raises(RuntimeError):
                transport.write(b"more")
            peer = await accepted.get()
            await peer.got_eof
            assert peer.data == b"last"
            await client.lost
            await peer.lost

    run(loop, main())


def test_eof_received_returning_true_keeps_the_connection_half_open(loop):
    async def main():
        async with serving(loop, lambda: Peer(eof_result=True)) as (server, accepted):
            transport, client = await loop.create_connection(Peer, *address(server))
            transport.write(b"ping")
            transport.write_eof()
            peer = await accepted.get()
            await peer.got_eof
            # Later iterations must not close it either.
            for _ in range(5):
                await asyncio.sleep(0)
            assert not peer.transport.is_closing()
            assert not peer.lost.done()
            peer.transport.write(b"pong")
            peer.transport.close()
            assert await client.lost is None
            assert await peer.lost is None
        assert peer.data == b"ping"
        assert client.data == b"pong"
        assert client.events == ["connection_made", "data", "eof", "lost"]
        assert peer.events == ["connection_made", "data", "eof", "lost"]

    run(loop, main())


@pytest.mark.parametrize("result", [None, False])
def test_eof_received_returning_false_closes_the_transport(loop, result):
    async def main():
        async with serving(loop, lambda: Peer(eof_result=result)) as (server, accepted):
            transport, client = await loop.create_connection(Peer, *address(server))
            transport.write_eof()
            peer = await accepted.get()
            await peer.got_eof
            assert peer.transport.is_closing()
            assert await peer.lost is None
            assert await client.lost is None
        assert peer.events == ["connection_made", "eof", "lost"]
        assert client.events == ["connection_made", "eof", "lost"]

    run(loop, main())


def test_is_closing(loop):
    async def main():
        async with serving(loop) as (server, accepted):
            transport, client = await loop.create_connection(Peer, *address(server))
            peer = await accepted.get()
            assert not transport.is_closing()
            assert not peer.transport.is_closing()
            transport.close()
            assert transport.is_closing()
            transport.close()  # idempotent
            await peer.got_eof
            assert peer.transport.is_closing()
            await client.lost
            await peer.lost
            assert transport.is_closing()

    run(loop, main())


# -- reading ----------------------------------------------------------------------------------


def test_pause_reading_holds_data_until_resumed(loop):
    async def main():
        async with serving(loop) as (server, accepted):
            transport, client = await loop.create_connection(Peer, *address(server))
            peer = await accepted.get()
            assert transport.is_reading()
            transport.pause_reading()
            transport.pause_reading()  # pausing twice is allowed
            assert not transport.is_reading()
            peer.transport.write(b"held back")
            for _ in range(5):
                await asyncio.sleep(0)
            await asyncio.sleep(0.02)
            assert client.data == b""
            transport.resume_reading()
            transport.resume_reading()
            assert transport.is_reading()
            assert await client.received(9) == b"held back"
            transport.close()
            assert not transport.is_reading()
            transport.pause_reading()  # no-ops once closing
            transport.resume_reading()
            assert not transport.is_reading()
            await client.lost
            await peer.lost

    run(loop, main())


class PausesTheOther(Peer):
    """On its first data, pauses reading on the other connection."""

    other = None

    def data_received(self, data):
        super().data_received(data)
        self.other.transport.pause_reading()


def test_pause_reading_takes_effect_within_the_same_iteration(loop):
    async def main():
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            ta, a = await loop.create_connection(PausesTheOther, *listener.getsockname())
            raw_a, _ = listener.accept()
            tb, b = await loop.create_connection(PausesTheOther, *listener.getsockname())
            raw_b, _ = listener.accept()
        a.other, b.other = b, a
        with raw_a, raw_b:

            def send_both():
                raw_a.send(b"a")
                raw_b.send(b"b")

            # Both sockets are readable at the next poll; whichever protocol runs first pauses
            # the other, whose readiness from that same poll must then be ignored.
            loop.call_soon(send_both)
            await asyncio.sleep(0.05)
            assert len(a.data) + len(b.data) == 1
            (paused,) = [p for p in (a, b) if not p.data]
            assert not paused.transport.is_reading()
            paused.transport.resume_reading()
            assert await paused.received(1) in (b"a", b"b")
            ta.close()
            tb.close()
            await a.lost
            await b.lost

    run(loop, main())


def test_eof_waits_for_resume_reading(loop):
    async def main():
        async with serving(loop) as (server, accepted):
            transport, client = await loop.create_connection(Peer, *address(server))
            peer = await accepted.get()
            transport.pause_reading()
            peer.transport.write(b"bye")
            peer.transport.close()
            await peer.lost
            await asyncio.sleep(0.02)
            assert client.events == ["connection_made"]
            transport.resume_reading()
            await client.lost
        assert client.events == ["connection_made", "data", "eof", "lost"]
        assert client.data == b"bye"

    run(loop, main())


class BufferedPeer(asyncio.BufferedProtocol):
    def __init__(self, size):
        loop = asyncio.get_running_loop()
        self.buffer = bytearray(size)
        self.data = bytearray()
        self.updates = []
        self.hints = []
        self.events = []
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.events.append("connection_made")
        self.transport = transport

    def get_buffer(self, sizehint):
        self.hints.append(sizehint)
        return memoryview(self.buffer)

    def buffer_updated(self, nbytes):
        self.updates.append(nbytes)
        self.data += self.buffer[:nbytes]
        if self.events[-1] != "data":
            self.events.append("data")

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.set_result(exc)


def test_buffered_protocol_receives_data_intact_through_small_buffers(loop):
    payload = os.urandom(256 << 10)

    async def main():
        async with serving(loop) as (server, accepted):
            transport, client = await loop.create_connection(
                lambda: BufferedPeer(61), *address(server)
            )
            peer = await accepted.get()
            peer.transport.write(payload)
            peer.transport.close()
            assert await client.lost is None
            await peer.lost
        assert client.data == payload
        assert all(0 < n <= 61 for n in client.updates)
        assert len(client.updates) >= len(payload) // 61
        assert all(isinstance(hint, int) for hint in client.hints)
        assert client.events == ["connection_made", "data", "eof", "lost"]

    run(loop, main())


def test_buffered_protocol_empty_buffer_is_a_fatal_error(loop, loop_errors):
    async def main():
        async with serving(loop) as (server, accepted):
            transport, client = await loop.create_connection(
                lambda: BufferedPeer(0), *address(server)
            )
            peer = await accepted.get()
            peer.transport.write(b"data")
            exc = await client.lost
            assert isinstance(exc, RuntimeError)
            assert client.data == b""
            await peer.lost
            return exc

    exc = run(loop, main())
    context = loop_errors.pop_one()
    assert context["exception"] is exc
    assert context["message"] == "Fatal error: protocol.get_buffer() call failed."


# -- write flow control -----------------------------------------------------------------------


def test_write_buffer_limits(loop):
    async def main():
        async with serving(loop) as (server, accepted):
            transport, client = await loop.create_connection(Peer, *address(server))
            assert transport.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
            assert transport.get_write_buffer_size() == 0
            transport.set_write_buffer_limits(high=1000)
            assert transport.get_write_buffer_limits() == (250, 1000)
            transport.set_write_buffer_limits(low=100)
            assert transport.get_write_buffer_limits() == (100, 400)
            transport.set_write_buffer_limits(high=300, low=300)
            assert transport.get_write_buffer_limits() == (300, 300)
            transport.set_write_buffer_limits(high=0)
            assert transport.get_write_buffer_limits() == (0, 0)
            with pytest.raises(ValueError):
                transport.set_write_buffer_limits(high=10, low=20)
            with pytest.raises(ValueError):
                transport.set_write_buffer_limits(low=-1)
            assert transport.get_write_buffer_limits() == (0, 0)
            transport.set_write_buffer_limits()
            assert transport.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
            peer = await accepted.get()
            transport.close()
            await client.lost
            await peer.lost

    run(loop, main())


class FlowPeer(Peer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.flow = []

    def pause_writing(self):
        self.flow.append(("pause", self.transport.get_write_buffer_size()))

    def resume_writing(self):
        self.flow.append(("resume", self.transport.get_write_buffer_size()))


@contextlib.asynccontextmanager
async def writing_to_a_stalled_peer(loop):
    """A client transport (its protocol a FlowPeer) whose server-side peer does not read:
    yields the transport, its protocol and the peer."""
    async with serving(loop) as (server, accepted):
        transport, client = await loop.create_connection(FlowPeer, *address(server))
        peer = await accepted.get()
        await peer.stop_reading()
        yield transport, client, peer


def test_pause_and_resume_writing_around_the_high_and_low_marks(loop):
    async def main():
        async with writing_to_a_stalled_peer(loop) as (transport, client, peer):
            low, high = transport.get_write_buffer_limits()
            chunk = os.urandom(64 << 10)
            sent = bytearray()
            for _ in range(512):
                transport.write(chunk)
                sent += chunk
                if client.flow:
                    break
                await asyncio.sleep(0)
            assert len(client.flow) == 1
            kind, size = client.flow[0]
            assert kind == "pause" and size > high
            # Writing while paused is allowed and buffers; no second pause_writing call.
            transport.write(chunk)
            sent += chunk
            assert len(client.flow) == 1
            peer.transport.resume_reading()
            await peer.received(len(sent))
            assert [kind for kind, _ in client.flow] == ["pause", "resume"]
            assert client.flow[1][1] <= low
            assert transport.get_write_buffer_size() == 0
            assert peer.data == sent
            transport.close()
            await client.lost
            await peer.lost

    run(loop, main(), timeout=30)


def test_no_pause_writing_below_the_high_mark(loop):
    async def main():
        async with writing_to_a_stalled_peer(loop) as (transport, client, peer):
            transport.set_write_buffer_limits(high=1 << 30)
            await fill_until_buffered(transport)
            assert client.flow == []
            # Lowering the limit below what is buffered pauses at once.
            transport.set_write_buffer_limits(high=1000)
            assert [kind for kind, _ in client.flow] == ["pause"]
            transport.abort()
            await client.lost
            peer.transport.abort()
            await peer.lost

    run(loop, main())


# -- what one callback writes ------------------------------------------------------------------
# oxloop sends what a callback writes to a socket when the callback returns, in one system call
# (see ARCHITECTURE.md); everything a protocol can observe stays as asyncio has it.


class Replier(Peer):
    """Answers each message with `reply(transport)`, from data_received itself."""

    def __init__(self, reply):
        super().__init__()
        self.reply = reply
        self.seen = []

    def data_received(self, data):
        super().data_received(data)
        self.seen.append(self.reply(self.transport))


def test_writes_of_one_callback_arrive_whole_and_in_order(loop):
    def reply(transport):
        transport.write(b"HTTP/1.1 200 OK\r\n")
        transport.writelines([b"a: 1\r\n", bytearray(b"b: 2\r\n"), b"\r\n"])
        transport.write(memoryview(b"body"))
        # Small writes to a socket with room: asyncio's transport has sent them already.
        return transport.get_write_buffer_size(), transport.is_closing()

    async def main():
        async with serving(loop, lambda: Replier(reply)) as (server, accepted):
            transport, client = await loop.create_connection(Peer, *address(server))
            peer = await accepted.get()
            expected = b"HTTP/1.1 200 OK\r\na: 1\r\nb: 2\r\n\r\nbody"
            for n in range(1, 4):
                transport.write(b"?")
                assert await client.received(n * len(expected)) == expected * n
            assert peer.seen == [(0, False)] * 3
            transport.close()
            await peer.lost

    run(loop, main())


@pytest.mark.parametrize("end", ["close", "abort", "write_eof"])
def test_a_write_then_the_end_in_one_callback_delivers_the_write(loop, end):
    def reply(transport):
        transport.write(b"last words")
        getattr(transport, end)()

    async def main():
        async with serving(loop, lambda: Replier(reply)) as (server, accepted):
            transport, client = await loop.create_connection(Peer, *address(server))
            peer = await accepted.get()
            transport.write(b"?")
            await client.got_eof
            assert bytes(client.data) == b"last words"
            transport.close()
            assert await peer.lost is None
            await client.lost
        assert peer.events[-1] == "lost"

    run(loop, main())


def test_a_callback_writing_without_end_is_paused_past_the_high_mark(loop):
    """A callback that writes on and on to a peer that does not read sees pause_writing()
    during its writes, with the buffer past the high-water mark, as it would on asyncio."""

    async def main():
        async with writing_to_a_stalled_peer(loop) as (transport, client, peer):
            low, high = transport.get_write_buffer_limits()
            chunk = b"y" * 1000
            written = 0
            # No await: all of it is one callback.
            while not client.flow and written < 1 << 30:
                transport.write(chunk)
                written += len(chunk)
            assert [kind for kind, _ in client.flow] == ["pause"]
            assert client.flow[0][1] > high
            assert transport.get_write_buffer_size() > high
            peer.transport.resume_reading()
            await peer.received(written)
            assert [kind for kind, _ in client.flow] == ["pause", "resume"]
            assert transport.get_write_buffer_size() == 0
            transport.close()
            await client.lost
            await peer.lost

    run(loop, main(), timeout=60)


def test_writes_while_the_loop_is_not_running_go_out_at_once(loop):
    a, b = socket.socketpair()
    with b:
        transport, client = run(loop, loop.create_connection(Peer, sock=a))
        # Nothing runs the loop from here on: the peer still receives the writes.
        transport.write(b"ping")
        transport.writelines([b"-", b"pong"])
        b.settimeout(5)
        received = b""
        while len(received) < 9:
            received += b.recv(100)
        assert received == b"ping-pong"
        transport.close()
        run(loop, client.lost)


# -- protocol switching -----------------------------------------------------------------------


class Switcher(Peer):
    def __init__(self, successor):
        super().__init__()
        self.successor = successor

    def data_received(self, data):
        super().data_received(data)
        self.successor.transport = self.transport
        self.transport.set_protocol(self.successor)
        self.transport.write(b"switched")


def test_set_protocol_mid_stream(loop):
    async def main():
        successor = Peer()
        async with serving(loop, lambda: Switcher(successor)) as (server, accepted):
            transport, client = await loop.create_connection(Peer, *address(server))
            first = await accepted.get()
            transport.write(b"one")
            await client.received(8)
            assert first.transport.get_protocol() is successor
            transport.write(b"two")
            transport.write_eof()
            await successor.got_eof
            assert await successor.lost is None
            await client.lost
        assert first.data == b"one"
        assert first.events == ["connection_made", "data"]
        assert successor.data == b"two"
        assert successor.events == ["data", "eof", "lost"]

    run(loop, main())


def test_client_set_protocol_and_get_protocol(loop):
    async def main():
        async with serving(loop) as (server, accepted):
            transport, client = await loop.create_connection(Peer, *address(server))
            peer = await accepted.get()
            other = Peer()
            other.transport = transport
            transport.set_protocol(other)
            assert transport.get_protocol() is other
            peer.transport.write(b"to the new one")
            peer.transport.close()
            assert await other.lost is None
            await peer.lost
        assert other.data == b"to the new one"
        assert client.events == ["connection_made"]

    run(loop, main())


# -- after close ------------------------------------------------------------------------------


def test_set_protocol_to_a_buffered_protocol(loop):
    async def main():
        async with serving(loop) as (server, accepted):
            transport, client = await loop.create_connection(Peer, *address(server))
            peer = await accepted.get()
            peer.transport.write(b"plain")
            await client.received(5)
            buffered = BufferedPeer(3)
            buffered.events.append("connection_made")
            transport.set_protocol(buffered)
            peer.transport.write(b"into buffers")
            peer.transport.close()
            assert await buffered.lost is None
            await peer.lost
        assert client.data == b"plain"
        assert buffered.data == b"into buffers"
        assert all(n <= 3 for n in buffered.updates)
        assert buffered.events == ["connection_made", "data", "eof", "lost"]

    run(loop, main())


def test_writes_after_close_are_dropped_and_logged_after_a_few(loop, caplog):
    async def main():
        async with serving(loop) as (server, accepted):
            transport, client = await loop.create_connection(Peer, *address(server))
            peer = await accepted.get()
            transport.close()
            with caplog.at_level(logging.WARNING, logger="asyncio"):
                for _ in range(4):
                    transport.write(b"dropped")
                quiet = [r for r in caplog.records if r.name == "asyncio"]
                for _ in range(3):
                    transport.write(b"dropped")
            await client.lost
            await peer.got_eof
            await peer.lost
            assert peer.data == b""
            return quiet

    quiet = run(loop, main())
    assert quiet == []
    logged = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert logged == ["socket.send() raised exception."] * 3


def test_empty_writes_after_close_are_not_counted(loop, caplog):
    async def main():
        async with serving(loop) as (server, accepted):
            transport, client = await loop.create_connection(Peer, *address(server))
            peer = await accepted.get()
            transport.close()
            with caplog.at_level(logging.WARNING, logger="asyncio"):
                for _ in range(10):
                    transport.write(b"")
                for _ in range(5):
                    transport.write(b"dropped")
            await client.lost
            await peer.lost

    run(loop, main())
    logged = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    # Only non-empty writes count towards the threshold (the fifth is the first logged).
    assert logged == ["socket.send() raised exception."]


# -- connection errors ------------------------------------------------------------------------


def test_connection_refused(loop):
    async def main():
        with free_closed_port() as sock:
            host, port = sock.getsockname()
            with pytest.raises(ConnectionRefusedError) as info:
                await loop.create_connection(Peer, host, port)
        assert info.value.errno == errno.ECONNREFUSED

    run(loop, main())


def test_peer_reset_reaches_connection_lost_as_connection_reset_error(loop):
    async def main():
        async with serving(loop) as (server, accepted):
            transport, client = await loop.create_connection(Peer, *address(server))
            peer = await accepted.get()
            sock = peer.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            peer.transport.abort()
            assert await peer.lost is None
            exc = await client.lost
            assert isinstance(exc, ConnectionResetError)
            assert client.events == ["connection_made", "lost"]
            assert transport.is_closing()

    run(loop, main())


def test_write_to_a_reset_connection_closes_it(loop):
    async def main():
        async with serving(loop) as (server, accepted):
            transport, client = await loop.create_connection(Peer, *address(server))
            peer = await accepted.get()
            transport.pause_reading()
            sock = peer.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            peer.transport.abort()
            await peer.lost
            await asyncio.sleep(0.02)
            for _ in range(3):
                transport.write(b"into the void")
                await asyncio.sleep(0)
            exc = await client.lost
            assert isinstance(exc, ConnectionResetError)
            assert transport.is_closing()

    run(loop, main())


def test_reset_while_waiting_to_write_reaches_connection_lost(loop):
    async def main():
        async with writing_to_a_stalled_peer(loop) as (transport, client, peer):
            # Only the write side waits on the socket: the reset must wake it.
            transport.pause_reading()
            await fill_until_buffered(transport)
            sock = peer.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            peer.transport.abort()
            await peer.lost
            exc = await client.lost
            assert isinstance(exc, ConnectionResetError)
            assert transport.get_write_buffer_size() == 0

    run(loop, main())


# -- protocol callback errors -----------------------------------------------------------------


class Exploding(Peer):
    def data_received(self, data):
        super().data_received(data)
        raise ZeroDivisionError("boom")


def test_data_received_raising_closes_that_connection(loop, loop_errors):
    async def main():
        async with serving(loop, Exploding) as (server, accepted):
            transport, client = await loop.create_connection(Peer, *address(server))
            transport.write(b"trigger")
            peer = await accepted.get()
            exc = await peer.lost
            await client.lost
            assert isinstance(exc, ZeroDivisionError)
            context = loop_errors.pop_one()
            assert context["exception"] is exc
            assert context["message"] == "Fatal error: protocol.data_received() call failed."
            assert context["protocol"] is peer
            assert context["transport"] is peer.transport
            # The server is unaffected.
            transport2, client2 = await loop.create_connection(Peer, *address(server))
            peer2 = await accepted.get()
            transport2.close()
            await client2.lost
            await peer2.lost

    run(loop, main())


# -- create_connection options ----------------------------------------------------------------


def test_local_addr(loop):
    async def main():
        async with serving(loop) as (server, accepted):
            transport, client = await loop.create_connection(
                Peer, *address(server), local_addr=("127.0.0.2", 0)
            )
            peer = await accepted.get()
            sockname = transport.get_extra_info("sockname")
            assert sockname[0] == "127.0.0.2"
            assert peer.transport.get_extra_info("peername") == sockname
            transport.close()
            await client.lost
            await peer.lost

    run(loop, main())


def test_create_connection_with_sock(loop):
    async def main():
        async with serving(loop) as (server, accepted):
            sock = socket.create_connection(address(server))
            transport, client = await loop.create_connection(Peer, sock=sock)
            assert transport.get_extra_info("socket").fileno() == sock.fileno()
            assert sock.gettimeout() == 0
            peer = await accepted.get()
            transport.write(b"via sock")
            transport.write_eof()
            await peer.got_eof
            assert peer.data == b"via sock"
            await client.lost
            await peer.lost
            # The transport owned the socket and closed it.
            assert sock.fileno() == -1

    run(loop, main())


def test_create_server_with_sock(loop):
    async def main():
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        accepted = asyncio.Queue()

        def factory():
            proto = Peer(echo=True)
            accepted.put_nowait(proto)
            return proto

        server = await loop.create_server(factory, sock=listener)
        assert [s.fileno() for s in server.sockets] == [listener.fileno()]
        transport, client = await loop.create_connection(Peer, "127.0.0.1", port)
        transport.write(b"hi")
        assert await client.received(2) == b"hi"
        transport.close()
        await client.lost
        await (await accepted.get()).lost
        server.close()
        await server.wait_closed()
        assert listener.fileno() == -1

    run(loop, main())


def test_happy_eyeballs_delay_and_interleave(loop):
    async def main():
        async with serving(loop) as (server, accepted):
            port = address(server)[1]
            # 'localhost' may resolve to ::1 first, where nothing listens on this port.
            transport, client = await loop.create_connection(
                Peer, "localhost", port, happy_eyeballs_delay=0.05, interleave=1
            )
            assert transport.get_extra_info("peername")[:2] == ("127.0.0.1", port)
            peer = await accepted.get()
            transport.close()
            await client.lost
            await peer.lost

    run(loop, main())


@pytest.mark.skipif(sys.version_info < (3, 12), reason="all_errors is new in 3.12")
def test_all_errors_raises_an_exception_group(loop):
    async def main():
        with free_closed_port() as sock:
            host, port = sock.getsockname()
            with pytest.raises(ExceptionGroup) as info:  # noqa: F821 (3.11+ builtin)
                await loop.create_connection(Peer, host, port, all_errors=True)
        assert [type(e) for e in info.value.exceptions] == [ConnectionRefusedError]

    run(loop, main())


# -- argument checks --------------------------------------------------------------------------


def test_port_out_of_range_raises_overflow_error(loop):
    async def main():
        with pytest.raises(OverflowError):
            await loop.create_connection(Peer, "127.0.0.1", 70000)

    run(loop, main())


def test_host_and_sock_together_raise_value_error(loop):
    async def main():
        with socket.socket() as sock:
            with pytest.raises(ValueError):
                await loop.create_connection(Peer, "127.0.0.1", 80, sock=sock)
            assert sock.fileno() != -1

    run(loop, main())


def test_neither_host_nor_sock_raises_value_error(loop):
    async def main():
        with pytest.raises(ValueError):
            await loop.create_connection(Peer)

    run(loop, main())


def test_server_hostname_without_ssl_raises_value_error(loop):
    async def main():
        with pytest.raises(ValueError, match="server_hostname"):
            await loop.create_connection(Peer, "127.0.0.1", 80, server_hostname="example.org")

    run(loop, main())


def test_ssl_handshake_timeout_without_ssl_raises_value_error(loop):
    async def main():
        with pytest.raises(ValueError, match="ssl_handshake_timeout"):
            await loop.create_connection(Peer, "127.0.0.1", 80, ssl=None, ssl_handshake_timeout=1.0)

    run(loop, main())


def test_unknown_host_raises_gaierror(loop):
    async def main():
        with pytest.raises(socket.gaierror):
            await loop.create_connection(Peer, "no-such-host.invalid", 80)

    run(loop, main())


# -- many connections -------------------------------------------------------------------------

SCALE_CLIENT = textwrap.dedent(
    """
    import asyncio, sys

    async def main(count, port):
        gate = asyncio.Semaphore(200)

        async def connect():
            async with gate:
                return await asyncio.open_connection("127.0.0.1", port)

        conns = await asyncio.gather(*(connect() for _ in range(count)))
        # Every connection is open now; only then does any of them talk.

        async def talk(i, reader, writer):
            line = b"%d\\n" % i
            writer.write(line)
            echo = await reader.readline()
            writer.close()
            await writer.wait_closed()
            return echo == line

        ok = await asyncio.gather(*(talk(i, r, w) for i, (r, w) in enumerate(conns)))
        print("echoed", sum(ok))

    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
    """
)


class Tally:
    open_now = 0
    peak = 0
    lost = 0

    def __init__(self):
        self.errors = []


class Counting(asyncio.Protocol):
    """Echoes; keeps count of the connections open at once in a shared Tally."""

    def __init__(self, tally):
        self.tally = tally

    def connection_made(self, transport):
        self.transport = transport
        self.tally.open_now += 1
        self.tally.peak = max(self.tally.peak, self.tally.open_now)

    def data_received(self, data):
        self.transport.write(data)

    def connection_lost(self, exc):
        self.tally.open_now -= 1
        self.tally.lost += 1
        if exc is not None:
            self.tally.errors.append(exc)


def test_many_concurrent_connections_against_one_server(loop):
    tally = Tally()
    # Debug mode records a traceback per callback: at this scale it only measures that.
    loop.set_debug(False)

    async def main():
        server = await loop.create_server(lambda: Counting(tally), "127.0.0.1", 0, backlog=1024)
        port = address(server)[1]
        # The client is only the load generator: debug mode would just slow it down.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONASYNCIODEBUG"}
        proc = subprocess.Popen(
            [sys.executable, "-c", SCALE_CLIENT, str(SCALE_CONNECTIONS), str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        try:
            out, err = await loop.run_in_executor(None, proc.communicate)
        finally:
            if proc.returncode is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 0, err.decode()
        assert out.split() == [b"echoed", str(SCALE_CONNECTIONS).encode()]
        while tally.lost < SCALE_CONNECTIONS:
            await asyncio.sleep(0.01)
        server.close()
        await server.wait_closed()

    run(loop, main(), timeout=120)
    assert tally.peak == SCALE_CONNECTIONS
    assert tally.open_now == 0
    assert tally.errors == []
