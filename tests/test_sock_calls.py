"""The low-level socket coroutines (loop.sock_*), sendfile, and name resolution.

Pins down sock_connect / sock_accept / sock_sendall / sock_recv / sock_recv_into over TCP and
Unix sockets, the datagram calls (sock_sendto / sock_recvfrom / sock_recvfrom_into, 3.11+), the
debug-mode check for blocking sockets, that a cancelled sock_recv leaves neither the data nor a
watcher behind, sock_sendfile and loop.sendfile with offset/count and their fallbacks and
argument checks, and getaddrinfo / getnameinfo answering as the socket module does.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import os
import socket
import struct
import sys

import pytest
from netutil import HAVE_IPV6, requires_ipv6, run

FILE_SIZE = 1 << 20

requires_datagram_calls = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="sock_recvfrom/sock_recvfrom_into/sock_sendto are 3.11+"
)





def nonblocking(sock):
    sock.setblocking(False)
    return sock



@pytest.fixture
def tcp_pair():
    """A connected pair of non-blocking TCP sockets on 127.0.0.1."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    pair = nonblocking(client), nonblocking(server)
    yield pair
    for sock in pair:
        sock.close()


@pytest.fixture
def unix_pair():
    pair = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    for sock in pair:
        sock.setblocking(False)
    yield pair
    for sock in pair:
        sock.close()


@pytest.fixture
def data_file(tmp_path):
    content = os.urandom(FILE_SIZE)
    path = tmp_path / "payload.bin"
    path.write_bytes(content)
    with open(path, "rb") as file:
        yield file, content


async def recv_exactly(loop, sock, nbytes):
    chunks = bytearray()
    while len(chunks) < nbytes:
        chunk = await loop.sock_recv(sock, 65536)
        if not chunk:
            break
        chunks += chunk
    return bytes(chunks)


async def recv_to_eof(loop, sock):
    chunks = bytearray()
    while chunk := await loop.sock_recv(sock, 65536):
        chunks += chunk
    return bytes(chunks)


# -- stream sockets ---------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["tcp", "unix"])
def test_connect_accept_sendall_recv(loop, short_tmp, family):
    async def main():
        if family == "tcp":
            listener = socket.socket()
            listener.bind(("127.0.0.1", 0))
            client = socket.socket()
        else:
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(os.path.join(short_tmp, "sock"))
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with listener, client:
            listener.listen()
            listener.setblocking(False)
            client.setblocking(False)
            accepting = asyncio.ensure_future(loop.sock_accept(listener))
            assert await loop.sock_connect(client, listener.getsockname()) is None
            conn, addr = await accepting
            with conn:
                # The accepted socket comes back non-blocking.
                assert conn.gettimeout() == 0
                assert addr == client.getsockname()
                payload = os.urandom(4 << 20)
                receiving = asyncio.ensure_future(recv_exactly(loop, conn, len(payload)))
                assert await loop.sock_sendall(client, payload) is None
                assert await receiving == payload
                await loop.sock_sendall(conn, b"reply")
                assert await loop.sock_recv(client, 100) == b"reply"
                client.shutdown(socket.SHUT_WR)
                assert await loop.sock_recv(conn, 100) == b""

    run(loop, main())


def test_sock_recv_waits_for_data(loop, tcp_pair):
    a, b = tcp_pair

    async def main():
        receiving = asyncio.ensure_future(loop.sock_recv(a, 100))
        await asyncio.sleep(0.01)
        assert not receiving.done()
        b.send(b"late")
        assert await receiving == b"late"

    run(loop, main())


@pytest.mark.parametrize("data_type", [bytes, bytearray, memoryview])
def test_sock_sendall_larger_than_the_socket_buffer(loop, unix_pair, data_type):
    # The first send takes part of it; the rest waits for the reader.
    a, b = unix_pair
    payload = bytes(range(256)) * (4 * 4096)

    async def main():
        sending = asyncio.ensure_future(loop.sock_sendall(a, data_type(payload)))
        received = await recv_exactly(loop, b, len(payload))
        assert await sending is None
        return received

    assert run(loop, main()) == payload


def test_sock_recv_sizes(loop, tcp_pair):
    a, b = tcp_pair
    big = b"x" * (600 * 1024)

    async def main():
        with pytest.raises(ValueError):
            await loop.sock_recv(a, -1)
        b.sendall(b"abc")
        assert await loop.sock_recv(a, 0) == b""
        assert await loop.sock_recv(a, 2) == b"ab"
        assert await loop.sock_recv(a, 10) == b"c"
        # Larger than a single native read: still one recv of up to n bytes.
        sender = asyncio.ensure_future(loop.sock_sendall(b, big))
        got = await loop.sock_recv(a, 512 * 1024)
        assert 0 < len(got) <= 512 * 1024 and set(got) == {ord("x")}
        rest = await recv_exactly(loop, a, len(big) - len(got))
        await sender
        assert len(got) + len(rest) == len(big)

    run(loop, main())


def test_sock_calls_on_a_closed_socket_raise_oserror(loop, tcp_pair):
    a, _ = tcp_pair
    a.close()

    async def main():
        with pytest.raises(OSError):
            await loop.sock_recv(a, 10)
        with pytest.raises(OSError):
            await loop.sock_sendall(a, b"data")

    run(loop, main())


def test_sock_recv_of_a_subclass_uses_its_recv(loop, tcp_pair):
    a, b = tcp_pair
    calls = []

    class Recording(socket.socket):
        def recv(self, n, *args):
            calls.append(n)
            return super().recv(n, *args)

    wrapped = Recording(fileno=a.detach())
    wrapped.setblocking(False)

    async def main():
        b.send(b"hi")
        await asyncio.sleep(0.05)
        return await loop.sock_recv(wrapped, 10)

    try:
        assert run(loop, main()) == b"hi"
        assert calls == [10]
    finally:
        wrapped.close()


def test_sock_recv_into(loop, unix_pair):
    a, b = unix_pair

    async def main():
        buf = bytearray(10)
        receiving = asyncio.ensure_future(loop.sock_recv_into(a, buf))
        await asyncio.sleep(0)
        b.send(b"abc")
        assert await receiving == 3
        assert buf[:3] == b"abc"
        view = memoryview(buf)[5:]
        b.send(b"0123456789")
        assert await loop.sock_recv_into(a, view) == 5
        assert buf == b"abc\0\0" + b"01234"
        b.close()
        assert await loop.sock_recv_into(a, buf) == 5
        assert buf[:5] == b"56789"
        assert await loop.sock_recv_into(a, buf) == 0

    run(loop, main())


def test_sock_connect_refused(loop):
    async def main():
        with socket.socket() as bound, nonblocking(socket.socket()) as client:
            bound.bind(("127.0.0.1", 0))
            with pytest.raises(ConnectionRefusedError):
                await loop.sock_connect(client, bound.getsockname())

    run(loop, main())


def test_sock_connect_resolves_host_names(loop):
    async def main():
        with socket.socket() as listener, nonblocking(socket.socket()) as client:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            await loop.sock_connect(client, ("localhost", listener.getsockname()[1]))
            assert client.getpeername() == listener.getsockname()
            conn, _ = listener.accept()
            conn.close()

    run(loop, main())


def test_sock_sendall_to_a_reset_peer(loop, tcp_pair):
    a, b = tcp_pair

    async def main():
        b.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        b.close()
        with pytest.raises(ConnectionResetError):
            for _ in range(100):
                await loop.sock_sendall(a, b"x" * 65536)

    run(loop, main())


@pytest.mark.parametrize("debug", [False, True], ids=["nodebug", "debug"])
def test_blocking_socket_is_rejected_only_in_debug_mode(loop, debug):
    loop.set_debug(debug)

    async def main():
        a, b = socket.socketpair()
        with a, b, socket.socket() as listener, socket.socket() as client:
            assert a.gettimeout() is None
            b.sendall(b"ready")
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            calls = [
                lambda: loop.sock_recv(a, 5),
                lambda: loop.sock_sendall(a, b"x"),
                lambda: loop.sock_recv_into(a, bytearray(5)),
                lambda: loop.sock_connect(client, listener.getsockname()),
                lambda: loop.sock_accept(listener),
            ]
            if not debug:
                # Outside debug mode nothing checks; data is ready, so none of these block.
                assert await calls[0]() == b"ready"
                await calls[1]()
                b.sendall(b"again")
                assert await calls[2]() == 5
                await calls[3]()
                conn, _ = await calls[4]()
                conn.close()
                assert b.recv(10) == b"x"
                return
            for call in calls:
                with pytest.raises(ValueError, match="non-blocking"):
                    await call()
            # Nothing was consumed.
            a.setblocking(False)
            assert a.recv(10) == b"ready"

    run(loop, main())


# -- cancellation -----------------------------------------------------------------------------


def test_cancelled_sock_recv_leaves_the_socket_usable(loop, tcp_pair):
    a, b = tcp_pair

    async def main():
        receiving = asyncio.ensure_future(loop.sock_recv(a, 100))
        await asyncio.sleep(0)
        receiving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await receiving
        # No watcher is left behind: the fd is free for add_reader.
        assert loop.remove_reader(a) is False
        b.send(b"after cancel")
        readable = loop.create_future()
        loop.add_reader(a, lambda: readable.done() or readable.set_result(a.recv(100)))
        try:
            assert await readable == b"after cancel"
        finally:
            assert loop.remove_reader(a) is True
        b.send(b"again")
        assert await loop.sock_recv(a, 100) == b"again"

    run(loop, main())


def test_cancelled_sock_accept_leaves_the_listener_usable(loop):
    async def main():
        with nonblocking(socket.socket()) as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            accepting = asyncio.ensure_future(loop.sock_accept(listener))
            await asyncio.sleep(0)
            accepting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await accepting
            assert loop.remove_reader(listener) is False
            with socket.create_connection(listener.getsockname()):
                conn, _ = await loop.sock_accept(listener)
                conn.close()

    run(loop, main())


def test_cancelled_sock_connect_leaves_no_writer(loop):
    async def main():
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(0)
            # Fill the accept queue so that further connects stay pending.
            filler = []
            try:
                for _ in range(64):
                    sock = nonblocking(socket.socket())
                    filler.append(sock)
                    connecting = asyncio.ensure_future(
                        loop.sock_connect(sock, listener.getsockname())
                    )
                    await asyncio.sleep(0.01)
                    if not connecting.done():
                        break
                    await connecting
                else:
                    pytest.skip("connections never stayed pending")
                connecting.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await connecting
                assert loop.remove_writer(sock) is False
            finally:
                for sock in filler:
                    sock.close()

    run(loop, main())


# -- datagram sockets -------------------------------------------------------------------------


@requires_datagram_calls
def test_sock_sendto_recvfrom(loop):
    async def main():
        with (
            nonblocking(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as a,
            nonblocking(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as b,
        ):
            a.bind(("127.0.0.1", 0))
            b.bind(("127.0.0.1", 0))
            receiving = asyncio.ensure_future(loop.sock_recvfrom(b, 100))
            await asyncio.sleep(0)
            assert not receiving.done()
            assert await loop.sock_sendto(a, b"datagram", b.getsockname()) == 8
            assert await receiving == (b"datagram", a.getsockname())

            buf = bytearray(100)
            await loop.sock_sendto(b, b"into", a.getsockname())
            assert await loop.sock_recvfrom_into(a, buf) == (4, b.getsockname())
            assert buf[:4] == b"into"
            await loop.sock_sendto(b, b"truncated", a.getsockname())
            nbytes, addr = await loop.sock_recvfrom_into(a, buf, 3)
            assert (nbytes, addr, bytes(buf[:3])) == (3, b.getsockname(), b"tru")

    run(loop, main())


@requires_datagram_calls
def test_cancelled_sock_recvfrom_leaves_no_watcher(loop):
    async def main():
        with nonblocking(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as sock:
            sock.bind(("127.0.0.1", 0))
            receiving = asyncio.ensure_future(loop.sock_recvfrom(sock, 100))
            await asyncio.sleep(0)
            receiving.cancel()
            with pytest.raises(asyncio.CancelledError):
                await receiving
            assert loop.remove_reader(sock) is False

    run(loop, main())


# -- sendfile ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "offset, count", [(0, None), (1000, 500_000), (FILE_SIZE - 10, None)], ids=str
)
def test_sock_sendfile(loop, tcp_pair, data_file, offset, count):
    a, b = tcp_pair
    file, content = data_file
    expected = content[offset : offset + count if count else None]

    async def main():
        receiving = asyncio.ensure_future(recv_exactly(loop, b, len(expected)))
        sent = await loop.sock_sendfile(a, file, offset, count)
        assert sent == len(expected)
        assert await receiving == expected
        # The file position ends after what was sent.
        assert file.tell() == offset + sent

    run(loop, main())


def test_sock_sendfile_falls_back_for_a_non_regular_file(loop, tcp_pair):
    a, b = tcp_pair
    content = os.urandom(300_000)

    async def main():
        with pytest.raises(asyncio.SendfileNotAvailableError):
            await loop.sock_sendfile(a, io.BytesIO(content), fallback=False)
        receiving = asyncio.ensure_future(recv_exactly(loop, b, len(content) - 10))
        assert await loop.sock_sendfile(a, io.BytesIO(content), 10) == len(content) - 10
        assert await receiving == content[10:]

    run(loop, main())


def test_sock_sendfile_argument_checks(loop, tcp_pair, data_file):
    a, _ = tcp_pair
    file, _ = data_file

    async def main():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.setblocking(False)
            for fallback in (True, False):
                with pytest.raises(ValueError, match="SOCK_STREAM"):
                    await loop.sock_sendfile(udp, file, fallback=fallback)
        with pytest.raises(ValueError):
            await loop.sock_sendfile(a, file, count=0)
        with pytest.raises(TypeError):
            await loop.sock_sendfile(a, file, count=1.5)
        with pytest.raises(ValueError):
            await loop.sock_sendfile(a, file, offset=-1)
        with pytest.raises(TypeError):
            await loop.sock_sendfile(a, file, offset="0")
        with io.StringIO("text") as text:
            text.mode = "r"
            with pytest.raises(ValueError, match="binary"):
                await loop.sock_sendfile(a, text)
        assert file.tell() == 0

    run(loop, main())


class Tracked(asyncio.Protocol):
    """Collects what it receives; futures for EOF (with the data) and connection_lost."""

    def __init__(self):
        loop = asyncio.get_running_loop()
        self.data = bytearray()
        self.eof = loop.create_future()
        self.lost = loop.create_future()

    def data_received(self, data):
        self.data += data

    def eof_received(self):
        self.eof.set_result(bytes(self.data))

    def connection_lost(self, exc):
        self.lost.set_result(exc)


async def connected(loop):
    """A client transport and protocol, the server-side protocol, and the server."""
    accepted = asyncio.Queue()

    def factory():
        proto = Tracked()
        accepted.put_nowait(proto)
        return proto

    server = await loop.create_server(factory, "127.0.0.1", 0)
    transport, client = await loop.create_connection(Tracked, *server.sockets[0].getsockname())
    return transport, client, await accepted.get(), server


async def disconnect(transport, client, peer, server):
    transport.close()
    await client.lost
    await peer.lost
    server.close()
    await server.wait_closed()


def test_fd_of_a_transport_refuses_watchers(loop):
    async def main():
        transport, client, peer, server = await connected(loop)
        fd = transport.get_extra_info("socket").fileno()
        with pytest.raises(RuntimeError):
            loop.add_reader(fd, lambda: None)
        with pytest.raises(RuntimeError):
            loop.add_writer(fd, lambda: None)
        with pytest.raises(RuntimeError):
            loop.remove_reader(fd)
        await disconnect(transport, client, peer, server)

    run(loop, main())


@pytest.mark.parametrize("offset, count", [(0, None), (4096, 300_000)], ids=str)
def test_loop_sendfile_on_a_transport(loop, data_file, offset, count):
    file, content = data_file
    expected = content[offset : offset + count if count else None]

    async def main():
        transport, client, peer, server = await connected(loop)
        transport.write(b"header:")
        sending = asyncio.ensure_future(loop.sendfile(transport, file, offset, count))
        await asyncio.sleep(0)
        # Plain writes are refused while sendfile owns the socket.
        with pytest.raises(RuntimeError):
            transport.write(b"interleaved")
        assert await sending == len(expected)
        assert file.tell() == offset + len(expected)
        transport.write(b":trailer")
        transport.write_eof()
        assert await peer.eof == b"header:" + expected + b":trailer"
        await disconnect(transport, client, peer, server)

    run(loop, main())


def test_loop_sendfile_right_after_a_write_sends_the_write_first(loop, data_file):
    file, content = data_file

    async def main():
        transport, client, peer, server = await connected(loop)
        # The same task step: nothing runs between the write and sendfile's first steps.
        transport.write(b"header:")
        assert await loop.sendfile(transport, file) == len(content)
        transport.write_eof()
        assert await peer.eof == b"header:" + content
        await disconnect(transport, client, peer, server)

    run(loop, main())


def test_loop_sendfile_refuses_closing_and_datagram_transports(loop, data_file):
    file, _ = data_file

    async def main():
        transport, client, peer, server = await connected(loop)
        transport.close()
        with pytest.raises(RuntimeError):
            await loop.sendfile(transport, file)
        await disconnect(transport, client, peer, server)
        udp, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
        )
        with pytest.raises(RuntimeError):
            await loop.sendfile(udp, file)
        udp.close()
        await asyncio.sleep(0)
        assert file.tell() == 0

    run(loop, main())


# -- name resolution --------------------------------------------------------------------------

NUMERIC_QUERIES = [
    ("127.0.0.1", 80, {}),
    ("127.0.0.1", "80", {"type": socket.SOCK_STREAM}),
    ("127.0.0.1", 0, {"family": socket.AF_INET, "type": socket.SOCK_DGRAM}),
    ("::1", 443, {}),
    ("::1", None, {"proto": socket.IPPROTO_TCP}),
    ("fe80::1%lo", 80, {"type": socket.SOCK_STREAM}),
    (None, 8080, {"flags": socket.AI_PASSIVE, "type": socket.SOCK_STREAM}),
    ("127.0.0.1", None, {"flags": socket.AI_NUMERICHOST}),
]


@pytest.mark.parametrize("host, port, kwargs", NUMERIC_QUERIES, ids=repr)
def test_getaddrinfo_numeric_matches_the_socket_module(loop, host, port, kwargs):
    if host and ":" in host and not HAVE_IPV6:
        pytest.skip("IPv6 unavailable")
    expected = socket.getaddrinfo(host, port, **kwargs)

    async def main():
        return await loop.getaddrinfo(host, port, **kwargs)

    assert run(loop, main()) == expected


@pytest.mark.skipif(not HAVE_IPV6, reason="IPv6 unavailable")
def test_getaddrinfo_keeps_the_ipv6_scope_id(loop):
    async def main():
        return await loop.getaddrinfo("fe80::1%lo", 80, type=socket.SOCK_STREAM)

    ((family, _, _, _, sockaddr),) = run(loop, main())
    assert family == socket.AF_INET6
    assert sockaddr == ("fe80::1", 80, 0, socket.if_nametoindex("lo"))


def test_numeric_getaddrinfo_needs_no_executor(loop, loop_name):
    # oxloop answers numeric hosts and ports on the loop thread; asyncio always asks its
    # executor (a documented difference, in oxloop's favour).
    class Refusing(concurrent.futures.ThreadPoolExecutor):
        def submit(self, *args, **kwargs):
            raise RuntimeError("the executor was asked")

    executor = Refusing(max_workers=1)
    loop.set_default_executor(executor)
    # In debug mode every lookup goes through the executor, to be timed and logged.
    loop.set_debug(False)
    try:
        if loop_name == "oxloop":
            got = run(loop, loop.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM))
            assert got == socket.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM)
        else:
            with pytest.raises(RuntimeError, match="executor was asked"):
                run(loop, loop.getaddrinfo("127.0.0.1", 80))
        # A name needs a lookup on both.
        with pytest.raises(RuntimeError, match="executor was asked"):
            run(loop, loop.getaddrinfo("localhost", 80))
    finally:
        executor.shutdown()


def test_getaddrinfo_localhost(loop):
    expected = socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)

    async def main():
        return await loop.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)

    result = run(loop, main())
    assert result == expected
    assert ("127.0.0.1", 80) in [sockaddr[:2] for *_, sockaddr in result]


def test_getaddrinfo_errors_propagate(loop):
    async def main():
        with pytest.raises(socket.gaierror):
            await loop.getaddrinfo("not a host name", 80, flags=socket.AI_NUMERICHOST)
        with pytest.raises(socket.gaierror):
            await loop.getaddrinfo("127.0.0.1", "no-such-service-name")

    run(loop, main())


@pytest.mark.parametrize(
    "sockaddr, flags",
    [
        (("127.0.0.1", 80), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV),
        (("127.0.0.1", 80), socket.NI_NUMERICHOST),
        (("::1", 443, 0, 0), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV),
    ],
    ids=repr,
)
def test_getnameinfo_matches_the_socket_module(loop, sockaddr, flags):
    if ":" in sockaddr[0] and not HAVE_IPV6:
        pytest.skip("IPv6 unavailable")
    expected = socket.getnameinfo(sockaddr, flags)

    async def main():
        return await loop.getnameinfo(sockaddr, flags)

    assert run(loop, main()) == expected


def test_getnameinfo_errors_propagate(loop):
    async def main():
        with pytest.raises(TypeError):
            await loop.getnameinfo("127.0.0.1")

    run(loop, main())


@pytest.mark.parametrize(
    "form",
    ["tuple", "port as text", pytest.param("ipv6 4-tuple", marks=requires_ipv6), "udp"],
)
def test_sock_connect_address_forms(loop, form):
    """Numeric addresses in every form asyncio takes reach the same peer."""

    async def main():
        family = socket.AF_INET6 if form.startswith("ipv6") else socket.AF_INET
        kind = socket.SOCK_DGRAM if form == "udp" else socket.SOCK_STREAM
        host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
        with socket.socket(family, kind) as listener, nonblocking(
            socket.socket(family, kind)
        ) as client:
            listener.bind((host, 0))
            if kind == socket.SOCK_STREAM:
                listener.listen()
            port = listener.getsockname()[1]
            address = {
                "tuple": (host, port),
                "port as text": (host, str(port)),
                "ipv6 4-tuple": (host, port, 0, 0),
                "udp": (host, port),
            }[form]
            await loop.sock_connect(client, address)
            assert client.getpeername()[:2] == listener.getsockname()[:2]
            if kind == socket.SOCK_STREAM:
                listener.accept()[0].close()

    run(loop, main())


def test_sock_connect_argument_errors_are_asyncios(loop):
    async def main():
        with nonblocking(socket.socket()) as client:
            with pytest.raises(OverflowError):
                await loop.sock_connect(client, ("127.0.0.1", 70000))
            with pytest.raises(ValueError, match="not enough values to unpack"):
                await loop.sock_connect(client, ("127.0.0.1",))

    run(loop, main())
