"""Unix stream sockets: create_unix_server / create_unix_connection / connect_accepted_socket.

Pins down filesystem and abstract-namespace addresses, path-like paths, what binding does to a
file already at the path (a stale socket file is replaced, anything else is an error), whether
closing the server removes its socket file (3.13's ``cleanup_socket``), the addresses a transport
reports, adopting an already-accepted socket, and the argument checks.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import sys
import uuid

import pytest
from netutil import Accepting, Peer, run

LINUX = sys.platform.startswith("linux")


async def echo_over(loop, accepting, address):
    """One connection to the server at address: echo, then both sides closed. Returns both
    transports' extra info (client, server) as dicts."""
    transport, client = await loop.create_unix_connection(lambda: Peer(echo=False), address)
    peer = await accepting.next()
    transport.write(b"over unix")
    assert await client.received(9) == b"over unix"
    info = [
        {key: t.get_extra_info(key) for key in ("sockname", "peername")}
        for t in (transport, peer.transport)
    ]
    assert transport.get_extra_info("socket").family == socket.AF_UNIX
    transport.close()
    assert await client.lost is None
    assert await peer.lost is None
    return info


# -- addresses --------------------------------------------------------------------------------


def test_filesystem_path(loop, short_tmp):
    async def main():
        path = str(short_tmp / "sock")
        accepting = Accepting()
        server = await loop.create_unix_server(accepting, path)
        assert os.path.exists(path)
        (sock,) = server.sockets
        assert sock.family == socket.AF_UNIX
        assert sock.getsockname() == path
        client_info, server_info = await echo_over(loop, accepting, path)
        # The client socket is unnamed: it reports an empty address, the server its path.
        assert client_info == {"sockname": "", "peername": path}
        assert server_info == {"sockname": path, "peername": ""}
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_path_like(loop, short_tmp):
    async def main():
        path = short_tmp / "sock"
        accepting = Accepting()
        server = await loop.create_unix_server(accepting, path)
        assert server.sockets[0].getsockname() == str(path)
        client_info, _ = await echo_over(loop, accepting, path)
        assert client_info["peername"] == str(path)
        server.close()
        await server.wait_closed()

    run(loop, main())


@pytest.mark.skipif(not LINUX, reason="the abstract namespace is Linux-only")
def test_abstract_namespace(loop):
    async def main():
        name = f"\0oxloop-test-{uuid.uuid4().hex}"
        accepting = Accepting()
        server = await loop.create_unix_server(accepting, name)
        # Python reports abstract addresses as bytes.
        assert server.sockets[0].getsockname() == name.encode()
        client_info, server_info = await echo_over(loop, accepting, name)
        assert client_info["peername"] == name.encode()
        assert server_info["sockname"] == name.encode()
        server.close()
        await server.wait_closed()
        # Nothing was created on the filesystem, and the name is free again.
        again = await loop.create_unix_server(Accepting(), name)
        again.close()
        await again.wait_closed()

    run(loop, main())


# -- what is at the path already --------------------------------------------------------------


def test_stale_socket_file_is_replaced(loop, short_tmp):
    async def main():
        path = str(short_tmp / "sock")
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(path)
        stale.close()
        assert os.path.exists(path)
        accepting = Accepting()
        server = await loop.create_unix_server(accepting, path)
        await echo_over(loop, accepting, path)
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_regular_file_at_path_is_an_error(loop, short_tmp):
    async def main():
        path = short_tmp / "not-a-socket"
        path.write_bytes(b"keep me")
        with pytest.raises(OSError) as info:
            await loop.create_unix_server(Accepting(), str(path))
        assert info.value.errno == errno.EADDRINUSE
        assert str(path) in str(info.value)
        assert path.read_bytes() == b"keep me"

    run(loop, main())


def test_live_server_at_path_is_replaced(loop, short_tmp):
    """asyncio only checks that the file is a socket, not whether someone listens on it."""

    async def main():
        path = str(short_tmp / "sock")
        first = await loop.create_unix_server(Accepting(), path)
        accepting = Accepting()
        second = await loop.create_unix_server(accepting, path)
        await echo_over(loop, accepting, path)
        for server in (second, first):
            server.close()
            await server.wait_closed()

    run(loop, main())


# -- socket file on close ---------------------------------------------------------------------


def test_close_and_the_socket_file(loop, short_tmp):
    async def main():
        path = short_tmp / "sock"
        server = await loop.create_unix_server(Accepting(), path)
        server.close()
        await server.wait_closed()
        # 3.13 removes the file it created (cleanup_socket=True); earlier versions leave it.
        assert path.exists() == (sys.version_info < (3, 13))

    run(loop, main())


@pytest.mark.skipif(sys.version_info < (3, 13), reason="cleanup_socket is new in 3.13")
def test_cleanup_socket_false_keeps_the_file(loop, short_tmp):
    async def main():
        path = short_tmp / "sock"
        server = await loop.create_unix_server(Accepting(), path, cleanup_socket=False)
        server.close()
        await server.wait_closed()
        assert path.exists()

    run(loop, main())


@pytest.mark.skipif(sys.version_info < (3, 13), reason="cleanup_socket is new in 3.13")
def test_cleanup_leaves_a_file_that_replaced_the_socket(loop, short_tmp):
    async def main():
        path = short_tmp / "sock"
        server = await loop.create_unix_server(Accepting(), path)
        path.unlink()
        path.write_bytes(b"someone else's")
        server.close()
        await server.wait_closed()
        assert path.read_bytes() == b"someone else's"

    run(loop, main())


def test_server_from_a_bound_sock(loop, short_tmp):
    async def main():
        path = str(short_tmp / "sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        accepting = Accepting()
        server = await loop.create_unix_server(accepting, sock=sock)
        assert server.sockets[0].fileno() == sock.fileno()
        await echo_over(loop, accepting, path)
        server.close()
        await server.wait_closed()
        assert sock.fileno() == -1

    run(loop, main())


def test_connection_from_a_connected_sock(loop, short_tmp):
    async def main():
        path = str(short_tmp / "sock")
        accepting = Accepting()
        server = await loop.create_unix_server(accepting, path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        transport, client = await loop.create_unix_connection(lambda: Peer(echo=False), sock=sock)
        assert transport.get_extra_info("peername") == path
        transport.write(b"sock")
        assert await client.received(4) == b"sock"
        transport.close()
        await client.lost
        await (await accepting.next()).lost
        assert sock.fileno() == -1
        server.close()
        await server.wait_closed()

    run(loop, main())


# -- connect_accepted_socket ------------------------------------------------------------------


@pytest.mark.parametrize("family", ["unix", "tcp"])
def test_connect_accepted_socket(loop, short_tmp, family):
    async def main():
        if family == "unix":
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(str(short_tmp / "sock"))
        else:
            listener = socket.socket()
            listener.bind(("127.0.0.1", 0))
        with listener:
            listener.listen()
            client_sock = socket.socket(listener.family, socket.SOCK_STREAM)
            client_sock.connect(listener.getsockname())
            conn, addr = listener.accept()
        transport, peer = await loop.connect_accepted_socket(Peer, conn)
        assert isinstance(transport, asyncio.Transport)
        assert peer.transport is transport
        assert transport.get_extra_info("socket").fileno() == conn.fileno()
        assert transport.get_extra_info("peername") == addr
        assert transport.get_extra_info("sockname") == conn.getsockname()
        connect = loop.create_unix_connection if family == "unix" else loop.create_connection
        client_transport, client = await connect(lambda: Peer(echo=False), sock=client_sock)
        client_transport.write(b"adopted")
        assert await client.received(7) == b"adopted"
        client_transport.close()
        assert await client.lost is None
        assert await peer.lost is None
        assert conn.fileno() == -1

    run(loop, main())


def test_connect_accepted_socket_rejects_a_datagram_socket(loop):
    async def main():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            with pytest.raises(ValueError):
                await loop.connect_accepted_socket(Peer, sock)

    run(loop, main())


# -- errors -----------------------------------------------------------------------------------


def test_connect_to_a_missing_path(loop, short_tmp):
    async def main():
        with pytest.raises(FileNotFoundError):
            await loop.create_unix_connection(Peer, str(short_tmp / "nothing"))

    run(loop, main())


def test_connect_to_a_socket_file_nobody_listens_on(loop, short_tmp):
    async def main():
        path = str(short_tmp / "sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.bind(path)
            with pytest.raises(ConnectionRefusedError):
                await loop.create_unix_connection(Peer, path)

    run(loop, main())


def test_argument_checks(loop, short_tmp):
    async def main():
        path = str(short_tmp / "sock")
        with pytest.raises(ValueError):
            await loop.create_unix_server(Peer)
        with pytest.raises(ValueError):
            await loop.create_unix_connection(Peer)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            with pytest.raises(ValueError):
                await loop.create_unix_server(Peer, path, sock=sock)
            with pytest.raises(ValueError):
                await loop.create_unix_connection(Peer, path, sock=sock)
        with socket.socket() as tcp:
            with pytest.raises(ValueError):
                await loop.create_unix_server(Peer, sock=tcp)
            with pytest.raises(ValueError):
                await loop.create_unix_connection(Peer, sock=tcp)
        with pytest.raises(ValueError):
            await loop.create_unix_connection(Peer, path, server_hostname="example.org")
        assert not os.path.exists(path)

    run(loop, main())
