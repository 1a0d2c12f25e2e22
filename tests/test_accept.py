"""The connection life cycle on a server: accepting, the first callbacks, closing.

What each accepted connection looks like to its protocol (addresses, the socket object,
``TCP_NODELAY``, its own copy of the context), a ``connection_made`` that raises, a client
that goes away before the server's protocol exists, ``Server.close()`` while connections are
waiting to be accepted, a process that runs out of descriptors, and thousands of connections
opened and closed leaving no descriptor and no memory behind.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import os
import socket
import subprocess
import sys
import textwrap

import pytest
from netutil import (
    Accepting,
    Peer,
    echo_once,
    requires_ipv6,
    run,
    skip_leak_check_in_debug,
    traced_growth,
)

FAMILIES = [
    "ipv4",
    pytest.param("ipv6", marks=requires_ipv6),
    "unix",
    "abstract",
]


async def serve(loop, family, factory, path):
    """A server of the given family, and the address a client connects to."""
    if family in ("ipv4", "ipv6"):
        host = "127.0.0.1" if family == "ipv4" else "::1"
        server = await loop.create_server(factory, host, 0)
        return server, server.sockets[0].getsockname()
    address = path if family == "unix" else "\0oxloop-test-" + os.urandom(6).hex()
    server = await loop.create_unix_server(factory, address)
    return server, server.sockets[0].getsockname()


async def connected(accepting):
    """The next server-side protocol, once its connection_made() has run."""
    peer = await accepting.next()
    while peer.transport is None:
        await asyncio.sleep(0)
    return peer


def client_socket(family):
    return socket.socket(
        {"ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}.get(family, socket.AF_UNIX)
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_accepted_connection_describes_itself(loop, family, short_tmp):
    async def main():
        accepting = Accepting()
        server, address = await serve(loop, family, accepting, str(short_tmp / "s.sock"))
        with client_socket(family) as client:
            client.setblocking(False)
            await loop.sock_connect(client, address)
            peer = await connected(accepting)
            transport = peer.transport
            assert transport.get_extra_info("peername") == client.getsockname()
            assert transport.get_extra_info("sockname") == client.getpeername()
            sock = transport.get_extra_info("socket")
            assert isinstance(sock, asyncio.trsock.TransportSocket)
            assert sock.family == client.family
            assert sock.type == socket.SOCK_STREAM
            assert sock.getpeername() == client.getsockname()
            assert sock.gettimeout() == 0
            if family in ("ipv4", "ipv6"):
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert transport.get_extra_info("missing", "default") == "default"
            # Asking for the socket does not disturb the connection.
            await loop.sock_sendall(client, b"ping")
            assert await peer.received(4) == b"ping"
            assert await loop.sock_recv(client, 4) == b"ping"
            transport.close()
            assert await peer.lost is None
            assert sock.fileno() == -1
            assert await loop.sock_recv(client, 1) == b""
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_each_connection_runs_in_a_context_of_its_own(loop):
    """What a protocol factory sets in the context is seen by its connection's callbacks and
    not by the next connection's."""
    var = contextvars.ContextVar("var", default="unset")
    seen = []

    class Setter(Peer):
        def connection_made(self, transport):
            seen.append(("made", var.get()))
            # Runs in a copy of its connection's context: not seen by the reads either.
            var.set("set by connection_made")
            super().connection_made(transport)

        def data_received(self, data):
            seen.append(("data", var.get()))
            super().data_received(data)

    def factory():
        seen.append(("factory", var.get()))
        var.set(f"connection {len(seen)}")
        return Setter()

    async def main():
        server = await loop.create_server(factory, "127.0.0.1", 0)
        host, port = server.sockets[0].getsockname()
        await echo_once(loop, host, port)
        await echo_once(loop, host, port)
        server.close()
        await server.wait_closed()

    run(loop, main())
    assert seen == [
        ("factory", "unset"),
        ("made", "connection 1"),
        ("data", "connection 1"),
        ("factory", "unset"),
        ("made", "connection 4"),
        ("data", "connection 4"),
    ]


def test_connection_made_raising_is_reported_and_serving_goes_on(loop, loop_errors):
    calls = 0

    class Failing(Peer):
        def connection_made(self, transport):
            nonlocal calls
            calls += 1
            super().connection_made(transport)
            if calls == 1:
                raise ZeroDivisionError("connection_made failed")

    async def main():
        server = await loop.create_server(Failing, "127.0.0.1", 0)
        host, port = server.sockets[0].getsockname()
        transport, client = await loop.create_connection(lambda: Peer(echo=False), host, port)
        while not loop_errors.contexts:
            await asyncio.sleep(0.001)
        (context,) = loop_errors.consume()
        assert isinstance(context["exception"], ZeroDivisionError)
        assert context["message"].startswith("Exception in callback")
        del context
        # As on asyncio, the transport stays open and reads: the failure was the protocol's.
        transport.write(b"still here")
        assert await client.received(10) == b"still here"
        transport.close()
        await client.lost
        await echo_once(loop, host, port)
        assert calls == 2
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_client_gone_before_its_protocol_exists(loop):
    """A client that connects and closes at once (before the server's loop runs again) still
    gets a protocol on the server, which sees the end of the stream and then the loss."""

    async def main():
        accepting = Accepting(echo=False)
        server = await loop.create_server(accepting, "127.0.0.1", 0)
        address = server.sockets[0].getsockname()
        for _ in range(20):
            with socket.create_connection(address) as client:
                client.sendall(b"bye")
        for _ in range(20):
            peer = await accepting.next()
            assert await peer.lost is None
            assert peer.got_eof
            assert bytes(peer.data) == b"bye"
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_client_reset_before_its_protocol_exists(loop):
    """A client that resets its connection at once: the server's protocol, if it got one,
    loses the connection with an error or without; no handler call, nothing left open."""

    async def main():
        accepting = Accepting()
        server = await loop.create_server(accepting, "127.0.0.1", 0)
        address = server.sockets[0].getsockname()
        for _ in range(20):
            client = socket.create_connection(address)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
            client.close()
        await echo_once(loop, *address)
        while not accepting.queue.empty():
            peer = await accepting.next()
            exc = await peer.lost
            assert exc is None or isinstance(exc, ConnectionResetError)
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_server_close_while_connections_wait_to_be_accepted(loop):
    """Connections that reached the kernel's queue but not the protocol when the server closes
    are ended: none is left open, and the server is closed once the accepted ones are gone."""

    async def main():
        accepting = Accepting(echo=False)
        server = await loop.create_server(accepting, "127.0.0.1", 0, backlog=100)
        address = server.sockets[0].getsockname()
        clients = []
        for _ in range(50):
            client = socket.socket()
            client.setblocking(False)
            await loop.sock_connect(client, address)
            clients.append(client)
        # The loop has not yet run the accept callback for most of them.
        server.close()
        await asyncio.sleep(0.05)
        served = []
        while not accepting.queue.empty():
            served.append(await accepting.next())
        for peer in served:
            # A protocol made as the server closed may never get its transport (asyncio's
            # Server refuses to attach it); that connection is closed for it.
            if peer.transport is not None:
                peer.transport.close()
                assert await peer.lost is None
        for client in clients:
            # Served and closed, or refused by the kernel as the listening socket closed.
            try:
                data = await asyncio.wait_for(loop.sock_recv(client, 1), 5)
            except ConnectionResetError:
                data = None
            assert data in (b"", None)
            client.close()
        await server.wait_closed()
        assert not server.is_serving()

    run(loop, main())


def open_fds():
    return set(os.listdir("/proc/self/fd"))


def test_ten_thousand_connections_leave_nothing_behind(loop):
    """10,000 connections accepted, echoed once and closed: the process has the same
    descriptors afterwards, and memory stays flat between the first and the last thousands."""

    skip_leak_check_in_debug(loop)

    async def one_round(host, port, count):
        for _ in range(count // 50):
            await asyncio.gather(*(echo_once(loop, host, port, b"x") for _ in range(50)))

    async def main():
        server = await loop.create_server(Peer, "127.0.0.1", 0)
        host, port = server.sockets[0].getsockname()
        await one_round(host, port, 1000)
        gc.collect()
        before = open_fds()
        growth = await traced_growth(lambda n: one_round(host, port, n), 1000, 8000)
        assert open_fds() == before
        # A leak of one small object per connection would show as 8,000 of them.
        assert growth < 200_000, growth
        server.close()
        await server.wait_closed()

    run(loop, main(), timeout=120)


EMFILE_CHILD = textwrap.dedent(
    """
    import asyncio, os, resource, socket, sys
    import oxloop

    factory = oxloop.new_event_loop if sys.argv[1] == "oxloop" else asyncio.new_event_loop
    errors = []

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda loop, context: errors.append(context))
        served = asyncio.Queue()

        class Echo(asyncio.Protocol):
            def connection_made(self, transport):
                self.transport = transport
                served.put_nowait(self)
            def data_received(self, data):
                self.transport.write(data)

        server = await loop.create_server(Echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        print(port, flush=True)
        # Use up every descriptor below the limit.
        hoard = []
        try:
            while True:
                hoard.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            pass
        # The parent connects now; accepting fails until descriptors are free again.
        while not errors:
            await asyncio.sleep(0.01)
        for fd in hoard:
            os.close(fd)
        peer = await asyncio.wait_for(served.get(), 10)
        await asyncio.sleep(0.2)
        peer.transport.close()
        (context, *_) = errors
        print(context["message"], type(context["exception"]).__name__,
              context["exception"].errno, server.is_serving(), flush=True)
        server.close()
        await server.wait_closed()

    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())
    """
)


LOW_LIMIT = "import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))\n"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="the child uses asyncio.Runner")
def test_accept_out_of_descriptors_in_a_process_with_a_low_limit(loop_name):
    """A server in a process limited to 64 descriptors (RLIMIT_NOFILE) runs out of them: it
    logs "out of system resource", keeps its listening socket, and serves the waiting client
    once descriptors are free."""
    child = subprocess.Popen(
        [sys.executable, "-c", LOW_LIMIT + EMFILE_CHILD, loop_name],
        stdout=subprocess.PIPE,
        text=True,
    )
    with child:
        port = int(child.stdout.readline())
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(b"hello")
            got = b""
            while len(got) < 5:
                chunk = client.recv(5)
                assert chunk
                got += chunk
            assert got == b"hello"
        report = child.stdout.readline().split()
        assert child.wait(10) == 0
    assert report[:5] == ["socket.accept()", "out", "of", "system", "resource"]
    assert report[5:] == ["OSError", "24", "True"]
