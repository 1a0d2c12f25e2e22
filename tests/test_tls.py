"""TLS on servers and clients: certificates both ways, ALPN, SNI, ``start_tls`` upgrading a
plain connection from either side, the handshake and shutdown timeouts, a peer that resets
during the handshake, and many handshakes leaving no memory behind.

Certificates come from ``trustme``: a throwaway CA issuing a server certificate for
``localhost`` and a client certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import sys
import threading

import pytest
from netutil import Accepting, Peer, run, skip_leak_check_in_debug, traced_growth

trustme = pytest.importorskip("trustme")

if sys.version_info < (3, 11):
    # 3.10's TLS protocol (the older design) can leave the server's application transport
    # unmarked as closed after the connection is lost, and its __del__ then warns, on
    # asyncio's loop as on oxloop's.
    pytestmark = pytest.mark.filterwarnings(
        "ignore:unclosed transport <asyncio.sslproto._SSLProtocolTransport:ResourceWarning"
    )


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def server_ctx(ca):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(ctx)
    return ctx


@pytest.fixture(scope="module")
def client_ctx(ca):
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(ctx)
    return ctx


HANDSHAKE_FAILURES = {"SSL handshake failed", "Error on transport creation for incoming connection"}


def take_handshake_failures(loop, loop_errors):
    """asyncio reports failed handshakes to the exception handler in debug mode only; takes
    those reports, checking that nothing else was reported."""
    contexts = loop_errors.consume()
    if not loop.get_debug():
        assert contexts == []
    for context in contexts:
        assert context["message"] in HANDSHAKE_FAILURES, context


async def connect_tls(loop, host, port, ctx):
    """A TLS client connection to the test server, for the name the certificate bears."""
    return await loop.create_connection(
        lambda: Peer(echo=False), host, port, ssl=ctx, server_hostname="localhost"
    )


@contextlib.asynccontextmanager
async def tls_server_and_client(loop, server_ctx, client_ctx, factory=None):
    """A TLS echo server (`factory`'s protocols, by default `Accepting()`'s) and a client
    connected to it: yields the client's transport and protocol, and closes both after."""
    server = await loop.create_server(factory or Accepting(), "127.0.0.1", 0, ssl=server_ctx)
    host, port = server.sockets[0].getsockname()
    transport, client = await connect_tls(loop, host, port, client_ctx)
    try:
        yield transport, client
    finally:
        transport.close()
        await client.lost
        server.close()
        await server.wait_closed()


async def never_connected(accepting):
    """The next server-side protocol, which asyncio makes before the handshake, never got
    its connection_made()."""
    peer = await accepting.next()
    await asyncio.sleep(0.05)
    assert peer.transport is None


@pytest.fixture(scope="module")
def client_auth_ctx(ca):
    """A server context that requires a client certificate signed by the CA."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(ctx)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(ctx)
    return ctx


def test_echo_with_a_client_certificate(loop, ca, client_auth_ctx):
    client_ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(client_ctx)
    ca.issue_cert("client@example.com").configure_cert(client_ctx)

    async def main():
        accepting = Accepting()
        server = await loop.create_server(accepting, "127.0.0.1", 0, ssl=client_auth_ctx)
        host, port = server.sockets[0].getsockname()
        transport, client = await connect_tls(loop, host, port, client_ctx)
        transport.write(b"over tls" * 1000)
        assert await client.received(8000) == b"over tls" * 1000
        peer = await accepting.next()
        server_side = peer.transport
        cert = server_side.get_extra_info("peercert")
        assert ("email", "client@example.com") in cert["subjectAltName"]
        assert isinstance(server_side.get_extra_info("ssl_object"), ssl.SSLObject)
        assert transport.get_extra_info("cipher")[1].startswith("TLS")
        assert transport.get_extra_info("compression") is None
        assert transport.get_extra_info("peercert")["subjectAltName"] == (("DNS", "localhost"),)
        assert isinstance(transport.get_extra_info("socket"), asyncio.trsock.TransportSocket)
        transport.close()
        assert await client.lost is None
        assert await peer.lost is None
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_client_without_the_required_certificate_is_refused(
    loop, loop_errors, client_auth_ctx, client_ctx
):
    async def main():
        accepting = Accepting()
        server = await loop.create_server(accepting, "127.0.0.1", 0, ssl=client_auth_ctx)
        host, port = server.sockets[0].getsockname()
        # TLS 1.3 completes the client's handshake before the server checks its certificate:
        # the refusal shows as an error or a lost connection on the first read.
        try:
            transport, client = await connect_tls(loop, host, port, client_ctx)
        except (ssl.SSLError, ConnectionError):
            pass
        else:
            exc = await client.lost
            assert exc is None or isinstance(exc, (ssl.SSLError, ConnectionError))
            transport.close()
        await never_connected(accepting)
        server.close()
        await server.wait_closed()
        take_handshake_failures(loop, loop_errors)

    run(loop, main())


def test_alpn_and_sni(loop, ca, client_ctx):
    names = []
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    server_ctx.set_alpn_protocols(["h2", "http/1.1"])
    server_ctx.sni_callback = lambda sslobj, name, ctx: names.append(name)
    client_ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(client_ctx)
    client_ctx.set_alpn_protocols(["http/1.1"])

    async def main():
        accepting = Accepting()
        server = await loop.create_server(accepting, "127.0.0.1", 0, ssl=server_ctx)
        host, port = server.sockets[0].getsockname()
        transport, client = await connect_tls(loop, host, port, client_ctx)
        peer = await accepting.next()
        transport.write(b"x")
        await client.received(1)
        for side in (transport, peer.transport):
            assert side.get_extra_info("ssl_object").selected_alpn_protocol() == "http/1.1"
        transport.close()
        await client.lost
        await peer.lost
        server.close()
        await server.wait_closed()

    run(loop, main())
    assert names == ["localhost"]


class StartTlsServer(asyncio.Protocol):
    """Plain text until a line "STARTTLS\\n", answered "GO\\n"; then TLS, echoing."""

    def __init__(self, loop, ctx, ready):
        self.loop = loop
        self.ctx = ctx
        self.ready = ready

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        if data == b"STARTTLS\n":
            self.transport.write(b"GO\n")
            self.loop.create_task(self.upgrade())

    async def upgrade(self):
        echo = Peer()
        tls = await self.loop.start_tls(self.transport, echo, self.ctx, server_side=True)
        echo.connection_made(tls)
        self.ready.set_result(echo)


def test_start_tls_upgrades_a_plain_connection_from_either_side(
    loop, server_ctx, client_ctx
):
    async def main():
        upgraded = loop.create_future()
        server = await loop.create_server(
            lambda: StartTlsServer(loop, server_ctx, upgraded), "127.0.0.1", 0
        )
        host, port = server.sockets[0].getsockname()
        transport, client = await loop.create_connection(lambda: Peer(echo=False), host, port)
        transport.write(b"STARTTLS\n")
        assert await client.received(3) == b"GO\n"
        tls = await loop.start_tls(transport, client, client_ctx, server_hostname="localhost")
        client.data.clear()
        echo = await upgraded
        tls.write(b"secret")
        assert await client.received(6) == b"secret"
        assert tls.get_extra_info("ssl_object") is not None
        assert echo.transport.get_extra_info("ssl_object").server_side
        tls.close()
        assert await client.lost is None
        await echo.lost
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_server_handshake_timeout_closes_a_silent_client(loop, loop_errors, server_ctx):
    async def main():
        accepting = Accepting()
        server = await loop.create_server(
            accepting, "127.0.0.1", 0, ssl=server_ctx, ssl_handshake_timeout=0.2
        )
        address = server.sockets[0].getsockname()
        with socket.socket() as raw:
            raw.setblocking(False)
            await loop.sock_connect(raw, address)
            # The server gives up on the handshake and closes the connection.
            try:
                data = await asyncio.wait_for(loop.sock_recv(raw, 1024), 10)
            except ConnectionResetError:
                data = b""
            assert data == b""
        await never_connected(accepting)
        server.close()
        await server.wait_closed()
        take_handshake_failures(loop, loop_errors)

    run(loop, main())


def test_client_handshake_timeout(loop):
    async def main():
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen()
            ctx = ssl.create_default_context()
            with pytest.raises(ConnectionAbortedError, match="SSL handshake is taking longer"):
                await loop.create_connection(
                    asyncio.Protocol,
                    *silent.getsockname(),
                    ssl=ctx,
                    server_hostname="localhost",
                    ssl_handshake_timeout=0.2,
                )

    run(loop, main())


def test_peer_reset_during_the_handshake(loop, loop_errors, server_ctx, client_ctx):
    async def main():
        accepting = Accepting()
        server = await loop.create_server(accepting, "127.0.0.1", 0, ssl=server_ctx)
        host, port = server.sockets[0].getsockname()
        for _ in range(5):
            raw = socket.socket()
            raw.setblocking(False)
            await loop.sock_connect(raw, (host, port))
            # The start of a ClientHello, then a reset.
            await loop.sock_sendall(raw, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
            raw.close()
        await asyncio.sleep(0.05)
        # Nothing reached the application, and the server still serves.
        for _ in range(5):
            await never_connected(accepting)
        transport, client = await connect_tls(loop, host, port, client_ctx)
        transport.write(b"after")
        assert await client.received(5) == b"after"
        transport.close()
        await client.lost
        await (await accepting.next()).lost
        server.close()
        await server.wait_closed()
        take_handshake_failures(loop, loop_errors)

    run(loop, main())


@pytest.mark.skipif(sys.version_info < (3, 11), reason="ssl_shutdown_timeout is 3.11's")
def test_shutdown_timeout_aborts_when_the_peer_never_answers(loop, ca, client_ctx):
    """The peer completes the handshake, then never reads: close() sends close_notify, waits
    ssl_shutdown_timeout for the peer's, then aborts; connection_lost comes either way."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    done = threading.Event()

    def peer():
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(b"hi")
            done.wait(10)

    thread = threading.Thread(target=peer)
    thread.start()

    async def main():
        transport, client = await loop.create_connection(
            lambda: Peer(echo=False),
            *listener.getsockname(),
            ssl=client_ctx,
            server_hostname="localhost",
            ssl_shutdown_timeout=0.2,
        )
        assert await client.received(2) == b"hi"
        transport.close()
        exc = await asyncio.wait_for(client.lost, 10)
        assert exc is None or isinstance(exc, (ConnectionError, TimeoutError))

    try:
        run(loop, main())
    finally:
        done.set()
        thread.join()
        listener.close()


def test_handshakes_leave_no_memory_behind(loop, server_ctx, client_ctx):
    """1,500 TLS connections, each a handshake, an echo and a close: memory is flat between
    the first 500 and the last 1,000 (uvloop has been known to grow here)."""

    skip_leak_check_in_debug(loop)

    async def one(host, port):
        transport, client = await connect_tls(loop, host, port, client_ctx)
        transport.write(b"ping")
        await client.received(4)
        transport.close()
        await client.lost

    async def rounds(host, port, count):
        for _ in range(count // 10):
            await asyncio.gather(*(one(host, port) for _ in range(10)))

    async def main():
        server = await loop.create_server(Peer, "127.0.0.1", 0, ssl=server_ctx)
        host, port = server.sockets[0].getsockname()
        await rounds(host, port, 200)
        growth = await traced_growth(lambda n: rounds(host, port, n), 500, 1000)
        # One small object kept per connection would show as 1,000 of them.
        assert growth < 100_000, growth
        server.close()
        await server.wait_closed()

    run(loop, main(), timeout=300)


def test_concurrent_connections_keep_their_own_bytes(loop, server_ctx, client_ctx):
    """20 TLS connections echo 256 KiB each at the same time, every one a different
    pattern: no connection ever sees another's bytes (oxloop's share one read buffer)."""

    async def one(host, port, n):
        transport, client = await connect_tls(loop, host, port, client_ctx)
        payload = bytes((n * 7 + i) % 251 for i in range(256 * 1024))
        transport.write(payload)
        assert await client.received(len(payload)) == payload
        transport.close()
        await client.lost

    async def main():
        server = await loop.create_server(Peer, "127.0.0.1", 0, ssl=server_ctx)
        host, port = server.sockets[0].getsockname()
        await asyncio.gather(*(one(host, port, n) for n in range(20)))
        server.close()
        await server.wait_closed()

    run(loop, main(), timeout=60)


def test_a_context_s_own_sslobject_class_does_the_reading_and_writing(loop, ca, client_ctx):
    """`SSLContext.sslobject_class` is asyncio's way in for a subclass of `ssl.SSLObject`:
    every record still goes through its methods."""
    calls = {"read": 0, "write": 0}

    class Counting(ssl.SSLObject):
        def read(self, *args, **kwargs):
            calls["read"] += 1
            return super().read(*args, **kwargs)

        def write(self, data):
            calls["write"] += 1
            return super().write(data)

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(ctx)
    ctx.sslobject_class = Counting

    async def main():
        async with tls_server_and_client(loop, ctx, client_ctx) as (transport, client):
            for n in range(1, 4):
                transport.write(b"record")
                assert await client.received(6 * n) == b"record" * n
        # The handshake reads too; each echo is at least one read and one write.
        assert calls["read"] > 3
        assert calls["write"] >= 3

    run(loop, main())


def test_the_application_transport_takes_what_asyncio_s_takes(loop, server_ctx, client_ctx):
    async def main():
        accepting = Accepting()
        pair = tls_server_and_client(loop, server_ctx, client_ctx, accepting)
        async with pair as (transport, client):
            transport.write(b"bytes,")
            transport.write(bytearray(b"bytearray,"))
            transport.write(memoryview(b"memoryview,"))
            transport.write(b"")
            transport.writelines([b"lines", bytearray(b".")])
            with pytest.raises(TypeError, match="data: expecting a bytes-like instance, got str"):
                transport.write("text")
            expected = b"bytes,bytearray,memoryview,lines."
            assert await client.received(len(expected)) == expected
            peer = await accepting.next()
            assert isinstance(peer.transport, asyncio.Transport)
            assert peer.transport.get_protocol() is peer
        await peer.lost

    run(loop, main())
