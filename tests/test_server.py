"""The Server object that ``create_server`` returns.

Pins down which sockets it listens on (host string, list of hosts, all interfaces, ``port=0``),
the socket options it sets, the serving state (``start_serving=False``, ``start_serving()``,
``serve_forever()``, ``close()``, ``wait_closed()``, ``async with``), what happens to existing
and new connections once it is closed, ``close_clients`` / ``abort_clients``, and how accepting
survives a failing protocol factory and running out of file descriptors.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import os
import resource
import socket
import sys
import warnings

import pytest
from netutil import Accepting, Peer, echo_once, requires_ipv6, run


async def assert_refused(loop, host, port):
    with pytest.raises(ConnectionRefusedError):
        await loop.create_connection(lambda: Peer(echo=False), host, port)


def port_of(server, family=socket.AF_INET):
    (sock,) = [s for s in server.sockets if s.family == family]
    return sock.getsockname()[1]


# -- where it listens -------------------------------------------------------------------------


def test_host_string(loop):
    async def main():
        accepting = Accepting()
        server = await loop.create_server(accepting, "127.0.0.1", 0)
        assert isinstance(server.sockets, tuple)
        (sock,) = server.sockets
        assert isinstance(sock, asyncio.trsock.TransportSocket)
        assert sock.family == socket.AF_INET
        assert sock.type == socket.SOCK_STREAM
        host, port = sock.getsockname()
        assert host == "127.0.0.1" and port != 0
        await echo_once(loop, host, port)
        await (await accepting.next()).lost
        server.close()
        await server.wait_closed()

    run(loop, main())


@requires_ipv6
def test_list_of_hosts_binds_each(loop):
    async def main():
        accepting = Accepting()
        server = await loop.create_server(accepting, ["127.0.0.1", "::1"], 0)
        assert sorted(s.family for s in server.sockets) == [socket.AF_INET, socket.AF_INET6]
        # port=0 is resolved per socket: each family answers on its own port.
        await echo_once(loop, "127.0.0.1", port_of(server, socket.AF_INET))
        await echo_once(loop, "::1", port_of(server, socket.AF_INET6))
        for _ in range(2):
            await (await accepting.next()).lost
        (v6,) = [s for s in server.sockets if s.family == socket.AF_INET6]
        assert v6.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_duplicate_hosts_bind_once(loop):
    async def main():
        server = await loop.create_server(Accepting(), ["127.0.0.1", "127.0.0.1"], 0)
        assert len(server.sockets) == 1
        server.close()
        await server.wait_closed()

    run(loop, main())


@requires_ipv6
@pytest.mark.parametrize("host", [None, ""], ids=["none", "empty"])
def test_no_host_listens_on_all_interfaces(loop, host):
    async def main():
        accepting = Accepting()
        server = await loop.create_server(accepting, host, 0)
        addresses = sorted((s.family, s.getsockname()[0]) for s in server.sockets)
        assert addresses == [(socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")]
        await echo_once(loop, "127.0.0.1", port_of(server, socket.AF_INET))
        await (await accepting.next()).lost
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_address_in_use(loop):
    async def main():
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            with pytest.raises(OSError) as info:
                await loop.create_server(Accepting(), "127.0.0.1", port)
        assert info.value.errno == errno.EADDRINUSE

    run(loop, main())


# -- socket options ---------------------------------------------------------------------------


@pytest.mark.parametrize("reuse", [None, True, False])
def test_reuse_address(loop, reuse):
    async def main():
        server = await loop.create_server(Accepting(), "127.0.0.1", 0, reuse_address=reuse)
        (sock,) = server.sockets
        # On Unix the default is to set it.
        expected = reuse is not False
        assert bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)) == expected
        server.close()
        await server.wait_closed()

    run(loop, main())


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT")
def test_reuse_port_lets_two_servers_share_a_port(loop):
    async def main():
        first = await loop.create_server(Accepting(), "127.0.0.1", 0, reuse_port=True)
        (sock,) = first.sockets
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
        port = sock.getsockname()[1]
        second = await loop.create_server(Accepting(), "127.0.0.1", port, reuse_port=True)
        assert second.sockets[0].getsockname()[1] == port
        for server in (first, second):
            server.close()
            await server.wait_closed()

    run(loop, main())


def test_reuse_port_off_by_default(loop):
    async def main():
        server = await loop.create_server(Accepting(), "127.0.0.1", 0)
        (sock,) = server.sockets
        if hasattr(socket, "SO_REUSEPORT"):
            assert not sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
        with pytest.raises(OSError) as info:
            await loop.create_server(Accepting(), "127.0.0.1", sock.getsockname()[1])
        assert info.value.errno == errno.EADDRINUSE
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_backlog_is_accepted(loop):
    async def main():
        accepting = Accepting()
        server = await loop.create_server(accepting, "127.0.0.1", 0, backlog=1)
        host, port = server.sockets[0].getsockname()
        for i in range(3):
            await echo_once(loop, host, port, b"%d" % i)
            await (await accepting.next()).lost
        server.close()
        await server.wait_closed()

    run(loop, main())


@pytest.mark.skipif(sys.version_info < (3, 13), reason="keep_alive is new in 3.13")
@pytest.mark.parametrize("keep_alive", [False, True])
def test_keep_alive(loop, keep_alive):
    async def main():
        accepting = Accepting()
        server = await loop.create_server(accepting, "127.0.0.1", 0, keep_alive=keep_alive)
        (sock,) = server.sockets
        assert bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)) == keep_alive
        await echo_once(loop, *sock.getsockname())
        await (await accepting.next()).lost
        server.close()
        await server.wait_closed()

    run(loop, main())


# -- serving state ----------------------------------------------------------------------------


def test_get_loop_and_is_serving(loop):
    async def main():
        server = await loop.create_server(Accepting(), "127.0.0.1", 0)
        assert server.get_loop() is loop
        assert server.is_serving()
        server.close()
        assert not server.is_serving()
        await server.wait_closed()

    run(loop, main())


def test_start_serving_false_does_not_listen_until_started(loop):
    async def main():
        accepting = Accepting()
        server = await loop.create_server(accepting, "127.0.0.1", 0, start_serving=False)
        assert not server.is_serving()
        host, port = server.sockets[0].getsockname()
        await assert_refused(loop, host, port)
        await server.start_serving()
        assert server.is_serving()
        await server.start_serving()  # a second call is a no-op
        await echo_once(loop, host, port)
        await (await accepting.next()).lost
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_close_stops_listening(loop):
    async def main():
        server = await loop.create_server(Accepting(), "127.0.0.1", 0)
        sockets = server.sockets
        host, port = sockets[0].getsockname()
        server.close()
        assert server.sockets == ()
        assert not server.is_serving()
        assert sockets[0].fileno() == -1
        server.close()  # idempotent
        await server.wait_closed()
        await server.wait_closed()
        await assert_refused(loop, host, port)

    run(loop, main())


def test_async_with_closes_the_server(loop):
    async def main():
        accepting = Accepting()
        async with await loop.create_server(accepting, "127.0.0.1", 0) as server:
            assert server.is_serving()
            host, port = server.sockets[0].getsockname()
            await echo_once(loop, host, port)
            await (await accepting.next()).lost
        assert not server.is_serving()
        assert server.sockets == ()
        await assert_refused(loop, host, port)

    run(loop, main())


def test_serve_forever_cancelled_closes_the_server(loop):
    async def main():
        accepting = Accepting()
        server = await loop.create_server(accepting, "127.0.0.1", 0, start_serving=False)
        host, port = server.sockets[0].getsockname()
        task = asyncio.ensure_future(server.serve_forever())
        await asyncio.sleep(0)
        assert server.is_serving()
        with pytest.raises(RuntimeError):
            await server.serve_forever()
        await echo_once(loop, host, port)
        await (await accepting.next()).lost
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not server.is_serving()
        assert server.sockets == ()
        await assert_refused(loop, host, port)
        with pytest.raises(RuntimeError):
            await server.serve_forever()

    run(loop, main())


def test_close_ends_serve_forever(loop):
    async def main():
        server = await loop.create_server(Accepting(), "127.0.0.1", 0)
        task = asyncio.ensure_future(server.serve_forever())
        await asyncio.sleep(0)
        server.close()
        with pytest.raises(asyncio.CancelledError):
            await task
        await server.wait_closed()

    run(loop, main())


# -- closing with connections open ------------------------------------------------------------


def test_existing_connections_outlive_close(loop):
    async def main():
        accepting = Accepting()
        server = await loop.create_server(accepting, "127.0.0.1", 0)
        host, port = server.sockets[0].getsockname()
        transport, client = await loop.create_connection(lambda: Peer(echo=False), host, port)
        peer = await accepting.next()
        waiting = asyncio.ensure_future(server.wait_closed())
        await asyncio.sleep(0)
        server.close()
        await assert_refused(loop, host, port)
        transport.write(b"still here")
        assert await client.received(10) == b"still here"
        # wait_closed() called before close() waits for the last connection to go.
        assert not waiting.done()
        transport.close()
        await client.lost
        await peer.lost
        await waiting

    run(loop, main())


def test_wait_closed_after_close_with_a_connection_open(loop):
    async def main():
        accepting = Accepting()
        server = await loop.create_server(accepting, "127.0.0.1", 0)
        transport, client = await loop.create_connection(
            lambda: Peer(echo=False), *server.sockets[0].getsockname()
        )
        peer = await accepting.next()
        server.close()
        waiting = asyncio.ensure_future(server.wait_closed())
        for _ in range(5):
            await asyncio.sleep(0)
        # 3.12.1 fixed wait_closed() to wait for the connections in this order too.
        assert waiting.done() == (sys.version_info < (3, 12, 1))
        transport.close()
        await client.lost
        await peer.lost
        await waiting

    run(loop, main())


@pytest.mark.skipif(sys.version_info < (3, 13), reason="close_clients is new in 3.13")
def test_close_clients_flushes_then_closes(loop):
    async def main():
        accepting = Accepting(echo=False)
        server = await loop.create_server(accepting, "127.0.0.1", 0)
        host, port = server.sockets[0].getsockname()
        clients = []
        for _ in range(2):
            clients.append(await loop.create_connection(lambda: Peer(echo=False), host, port))
        peers = [await accepting.next() for _ in range(2)]
        for peer in peers:
            peer.transport.write(b"goodbye")
        server.close()
        server.close_clients()
        for peer in peers:
            assert await peer.lost is None
        for _, client in clients:
            assert await client.lost is None
            assert client.data == b"goodbye" and client.got_eof
        await server.wait_closed()

    run(loop, main())


@pytest.mark.skipif(sys.version_info < (3, 13), reason="abort_clients is new in 3.13")
def test_abort_clients_drops_them(loop):
    async def main():
        accepting = Accepting(echo=False)
        server = await loop.create_server(accepting, "127.0.0.1", 0)
        host, port = server.sockets[0].getsockname()
        transport, client = await loop.create_connection(lambda: Peer(echo=False), host, port)
        transport.pause_reading()
        peer = await accepting.next()
        chunk = b"x" * (1 << 20)
        sent = 0
        for _ in range(256):
            peer.transport.write(chunk)
            sent += len(chunk)
            if peer.transport.get_write_buffer_size():
                break
            await asyncio.sleep(0)
        server.close()
        server.abort_clients()
        assert peer.transport.get_write_buffer_size() == 0
        assert await peer.lost is None
        await server.wait_closed()
        transport.resume_reading()
        await client.lost
        assert 0 < len(client.data) < sent

    run(loop, main())


# -- failures while accepting -----------------------------------------------------------------


@pytest.mark.parametrize("debug", [False, True], ids=["nodebug", "debug"])
def test_protocol_factory_raising_drops_that_connection_only(loop, loop_errors, debug):
    loop.set_debug(debug)
    calls = 0

    def factory():
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ZeroDivisionError("no protocol for you")
        return Peer()

    async def main():
        server = await loop.create_server(factory, "127.0.0.1", 0)
        host, port = server.sockets[0].getsockname()
        refused, victim = await loop.create_connection(lambda: Peer(echo=False), host, port)
        await echo_once(loop, host, port)
        assert calls == 2
        contexts = loop_errors.consume()
        # asyncio reports it only in debug mode.
        if debug:
            (context,) = contexts
            assert context["message"] == "Error on transport creation for incoming connection"
            assert isinstance(context["exception"], ZeroDivisionError)
            del context
        else:
            assert contexts == []
        del contexts
        # The accepted socket that got no protocol is released (asyncio leaves that to the
        # garbage collector): the client sees its connection end.
        gc.collect()
        await victim.lost
        refused.close()
        server.close()
        await server.wait_closed()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        run(loop, main())
        gc.collect()


def lowest_free_fd():
    fd = os.open(os.devnull, os.O_RDONLY)
    os.close(fd)
    return fd


def test_accept_out_of_file_descriptors_retries(loop, loop_errors):
    async def main():
        accepting = Accepting()
        server = await loop.create_server(accepting, "127.0.0.1", 0, backlog=5)
        address = server.sockets[0].getsockname()
        client_sock = socket.socket()
        client_sock.setblocking(False)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        # No descriptor below the limit is free: accept() fails with EMFILE.
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free_fd(), hard))
        try:
            await loop.sock_connect(client_sock, address)
            while not loop_errors.contexts:
                await asyncio.sleep(0.005)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        contexts = loop_errors.consume()
        assert 1 <= len(contexts) <= 5
        for context in contexts:
            assert context["message"] == "socket.accept() out of system resource"
            assert context["exception"].errno == errno.EMFILE
            assert isinstance(context["socket"], asyncio.trsock.TransportSocket)
        # The server retries on its own once descriptors are available again.
        transport, client = await loop.create_connection(lambda: Peer(echo=False), sock=client_sock)
        transport.write(b"late")
        assert await client.received(4) == b"late"
        transport.close()
        await client.lost
        await (await accepting.next()).lost
        assert server.is_serving()
        server.close()
        await server.wait_closed()

    run(loop, main())


# -- argument checks --------------------------------------------------------------------------


def test_argument_checks(loop):
    async def main():
        with pytest.raises(ValueError):
            await loop.create_server(Accepting())
        with socket.socket() as sock:
            with pytest.raises(ValueError):
                await loop.create_server(Accepting(), "127.0.0.1", 0, sock=sock)
        with pytest.raises(ValueError, match="ssl_handshake_timeout"):
            await loop.create_server(Accepting(), "127.0.0.1", 0, ssl_handshake_timeout=1.0)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            with pytest.raises(ValueError):
                await loop.create_server(Accepting(), sock=sock)

    run(loop, main())
