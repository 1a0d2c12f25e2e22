"""Datagram endpoints (create_datagram_endpoint) over UDP/IPv4, UDP/IPv6 and Unix datagrams.

Pins down what a DatagramProtocol observes: datagrams and their source addresses, connected
(``remote_addr``) versus unconnected endpoints, the socket options the keywords set, adopting a
socket, ICMP errors reaching ``error_received``, how ``sendto`` treats bad data and bad
addresses, closing, and the argument checks (which differ between 3.10 and later versions).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import warnings

import pytest
from netutil import requires_ipv6, run


class Endpoint(asyncio.DatagramProtocol):
    """Queues what it receives; echoes datagrams back to their sender if asked to."""

    def __init__(self, echo=False):
        loop = asyncio.get_running_loop()
        self.echo = echo
        self.transport = None
        self.events = []
        self.datagrams = asyncio.Queue()
        self.errors = asyncio.Queue()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("connection_made")

    def datagram_received(self, data, addr):
        if not self.events or self.events[-1] != "datagram":
            self.events.append("datagram")
        self.datagrams.put_nowait((data, addr))
        if self.echo:
            self.transport.sendto(data, addr)

    def error_received(self, exc):
        self.events.append("error")
        self.errors.put_nowait(exc)

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.set_result(exc)


async def close_all(*transports):
    protocols = [transport.get_protocol() for transport in transports]
    for transport in transports:
        transport.close()
    for proto in protocols:
        assert await proto.lost is None


async def echo_server(loop, host="127.0.0.1", **kwargs):
    transport, proto = await loop.create_datagram_endpoint(
        lambda: Endpoint(echo=True), local_addr=(host, 0), **kwargs
    )
    return transport, transport.get_extra_info("sockname")


# -- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["127.0.0.1", pytest.param("::1", marks=requires_ipv6)], ids=["ipv4", "ipv6"]
)
def test_echo(loop, host):
    async def main():
        server, server_addr = await echo_server(loop, host)
        client, proto = await loop.create_datagram_endpoint(Endpoint, remote_addr=server_addr[:2])
        client_addr = client.get_extra_info("sockname")
        assert client.get_extra_info("peername") == server_addr
        client.sendto(b"ping")
        client.sendto(bytearray(b"pong"))
        client.sendto(memoryview(b"bing"))
        got = [await proto.datagrams.get() for _ in range(3)]
        assert got == [(b"ping", server_addr), (b"pong", server_addr), (b"bing", server_addr)]
        assert all(type(data) is bytes for data, _ in got)
        seen_by_server = [await server.get_protocol().datagrams.get() for _ in range(3)]
        assert {addr for _, addr in seen_by_server} == {client_addr}
        await close_all(client, server)
        assert proto.events == ["connection_made", "datagram", "lost"]

    run(loop, main())


@pytest.mark.parametrize(
    "host", ["127.0.0.1", pytest.param("::1", marks=requires_ipv6)], ids=["ipv4", "ipv6"]
)
def test_many_senders_each_get_their_own_replies(loop, host):
    # More senders than a loop might remember, interleaved: each datagram must be reported
    # with its own sender's address, and the echo must go back to that sender alone.
    async def main():
        server, server_addr = await echo_server(loop, host)
        clients = [
            await loop.create_datagram_endpoint(Endpoint, remote_addr=server_addr[:2])
            for _ in range(40)
        ]
        for round_ in range(3):
            for i, (client, _) in enumerate(clients):
                client.sendto(f"{round_}:{i}".encode())
            for i, (_, proto) in enumerate(clients):
                data, addr = await proto.datagrams.get()
                assert (data, addr) == (f"{round_}:{i}".encode(), server_addr)
                assert proto.datagrams.empty()
        seen = {}
        sproto = server.get_protocol()
        while not sproto.datagrams.empty():
            data, addr = sproto.datagrams.get_nowait()
            seen.setdefault(addr, set()).add(data.split(b":")[1])
        assert seen == {
            client.get_extra_info("sockname"): {str(i).encode()}
            for i, (client, _) in enumerate(clients)
        }
        await close_all(server, *(client for client, _ in clients))

    run(loop, main())


def test_datagram_boundaries_and_size(loop):
    async def main():
        server, server_addr = await echo_server(loop)
        client, proto = await loop.create_datagram_endpoint(Endpoint, remote_addr=server_addr)
        big = os.urandom(60000)
        client.sendto(big)
        client.sendto(b"x")
        assert (await proto.datagrams.get())[0] == big
        assert (await proto.datagrams.get())[0] == b"x"
        count = 100
        for i in range(count):
            client.sendto(b"%d" % i)
        got = {(await proto.datagrams.get())[0] for _ in range(count)}
        assert got == {b"%d" % i for i in range(count)}
        assert client.get_write_buffer_size() == 0
        await close_all(client, server)

    run(loop, main())


def test_empty_datagram(loop):
    async def main():
        server, server_addr = await echo_server(loop)
        client, proto = await loop.create_datagram_endpoint(Endpoint, remote_addr=server_addr)
        client.sendto(b"")
        client.sendto(b"marker")
        first = (await proto.datagrams.get())[0]
        # 3.13 sends zero-length datagrams; earlier versions drop them silently.
        if sys.version_info >= (3, 13):
            assert first == b""
            assert (await proto.datagrams.get())[0] == b"marker"
        else:
            assert first == b"marker"
        await close_all(client, server)

    run(loop, main())


def test_transport_type_and_extra_info(loop, loop_name):
    async def main():
        server, server_addr = await echo_server(loop)
        assert isinstance(server, asyncio.BaseTransport)
        # asyncio's own datagram transport derives from DatagramTransport only since 3.12;
        # oxloop's is one everywhere (a documented difference: code checks for it).
        expected = loop_name == "oxloop" or sys.version_info >= (3, 12)
        assert isinstance(server, asyncio.DatagramTransport) == expected
        sock = server.get_extra_info("socket")
        assert isinstance(sock, asyncio.trsock.TransportSocket)
        assert sock.type == socket.SOCK_DGRAM
        assert sock.getsockname() == server_addr
        # Unconnected: no peer.
        assert server.get_extra_info("peername") is None
        assert server.get_extra_info("no such key", "fallback") == "fallback"
        assert server.get_protocol().transport is server
        await close_all(server)

    run(loop, main())


# -- addressing -------------------------------------------------------------------------------


def test_connected_endpoint_only_sends_to_its_peer(loop):
    async def main():
        server, server_addr = await echo_server(loop)
        client, proto = await loop.create_datagram_endpoint(Endpoint, remote_addr=server_addr)
        with pytest.raises(ValueError):
            client.sendto(b"elsewhere", ("127.0.0.1", server_addr[1] + 1))
        client.sendto(b"explicit", server_addr)
        assert await proto.datagrams.get() == (b"explicit", server_addr)
        assert not client.is_closing()
        await close_all(client, server)

    run(loop, main())


def test_local_and_remote_addr(loop):
    async def main():
        server, server_addr = await echo_server(loop)
        client, proto = await loop.create_datagram_endpoint(
            Endpoint, local_addr=("127.0.0.2", 0), remote_addr=server_addr
        )
        sockname = client.get_extra_info("sockname")
        assert sockname[0] == "127.0.0.2"
        assert client.get_extra_info("peername") == server_addr
        client.sendto(b"hi")
        assert await server.get_protocol().datagrams.get() == (b"hi", sockname)
        assert await proto.datagrams.get() == (b"hi", server_addr)
        await close_all(client, server)

    run(loop, main())


def test_family_without_addresses_makes_an_unbound_endpoint(loop):
    async def main():
        server, server_addr = await echo_server(loop)
        client, proto = await loop.create_datagram_endpoint(Endpoint, family=socket.AF_INET)
        assert client.get_extra_info("socket").family == socket.AF_INET
        assert client.get_extra_info("peername") is None
        client.sendto(b"from nowhere", server_addr)
        assert await proto.datagrams.get() == (b"from nowhere", server_addr)
        await close_all(client, server)

    run(loop, main())


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT")
def test_reuse_port(loop):
    async def main():
        first, _ = await loop.create_datagram_endpoint(
            Endpoint, local_addr=("127.0.0.1", 0), reuse_port=True
        )
        port = first.get_extra_info("sockname")[1]
        second, _ = await loop.create_datagram_endpoint(
            Endpoint, local_addr=("127.0.0.1", port), reuse_port=True
        )
        for transport in (first, second):
            sock = transport.get_extra_info("socket")
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
        assert second.get_extra_info("sockname")[1] == port
        await close_all(first, second)

    run(loop, main())


def test_port_in_use_without_reuse_port(loop):
    async def main():
        first, first_addr = await echo_server(loop)
        with pytest.raises(OSError):
            await loop.create_datagram_endpoint(Endpoint, local_addr=first_addr)
        await close_all(first)

    run(loop, main())


def test_allow_broadcast(loop):
    async def main():
        server, server_addr = await echo_server(loop)
        client, proto = await loop.create_datagram_endpoint(
            Endpoint, remote_addr=server_addr, allow_broadcast=True
        )
        sock = client.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST)
        # With allow_broadcast the socket is not connected, yet sendto() defaults to remote_addr.
        assert client.get_extra_info("peername") is None
        client.sendto(b"to remote_addr")
        assert await proto.datagrams.get() == (b"to remote_addr", server_addr)
        await close_all(client, server)

    run(loop, main())


def test_broadcast_off_by_default(loop):
    async def main():
        server, _ = await echo_server(loop)
        sock = server.get_extra_info("socket")
        assert not sock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST)
        await close_all(server)

    run(loop, main())


def test_sock(loop):
    async def main():
        server, server_addr = await echo_server(loop)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        client, proto = await loop.create_datagram_endpoint(Endpoint, sock=sock)
        assert sock.gettimeout() == 0
        assert client.get_extra_info("socket").fileno() == sock.fileno()
        client.sendto(b"adopted", server_addr)
        assert await proto.datagrams.get() == (b"adopted", server_addr)
        await close_all(client, server)
        assert sock.fileno() == -1

    run(loop, main())


def test_unix_datagrams(loop, short_tmp):
    async def main():
        server_path = os.path.join(short_tmp, "server")
        client_path = os.path.join(short_tmp, "client")
        # A stale socket file at the local path is removed first, as for stream servers.
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        stale.bind(server_path)
        stale.close()
        server, server_proto = await loop.create_datagram_endpoint(
            lambda: Endpoint(echo=True), local_addr=server_path, family=socket.AF_UNIX
        )
        client, proto = await loop.create_datagram_endpoint(
            Endpoint, local_addr=client_path, remote_addr=server_path, family=socket.AF_UNIX
        )
        assert client.get_extra_info("sockname") == client_path
        assert client.get_extra_info("peername") == server_path
        client.sendto(b"unix datagram")
        assert await server_proto.datagrams.get() == (b"unix datagram", client_path)
        assert await proto.datagrams.get() == (b"unix datagram", server_path)
        await close_all(client, server)

    run(loop, main())


def test_unix_datagram_addresses_must_be_strings(loop):
    async def main():
        with pytest.raises(TypeError):
            await loop.create_datagram_endpoint(
                Endpoint, local_addr=("127.0.0.1", 0), family=socket.AF_UNIX
            )

    run(loop, main())


# -- errors -----------------------------------------------------------------------------------


def test_icmp_port_unreachable_reaches_error_received(loop):
    async def main():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as gone:
            gone.bind(("127.0.0.1", 0))
            address = gone.getsockname()
        client, proto = await loop.create_datagram_endpoint(Endpoint, remote_addr=address)
        client.sendto(b"anyone?")
        # Linux reports the ICMP error on the next receive (or send) on a connected socket.
        exc = await proto.errors.get()
        while not isinstance(exc, ConnectionRefusedError):
            client.sendto(b"anyone?")
            exc = await proto.errors.get()
        assert isinstance(exc, ConnectionRefusedError)
        # An error_received() does not close the endpoint.
        assert not client.is_closing()
        assert not proto.lost.done()
        await close_all(client)

    run(loop, main())


def test_sendto_rejects_non_bytes(loop):
    async def main():
        server, server_addr = await echo_server(loop)
        with pytest.raises(TypeError, match="bytes-like"):
            server.sendto("text", server_addr)
        assert not server.is_closing()
        await close_all(server)

    run(loop, main())


def test_sendto_address_of_the_wrong_family_reaches_error_received(loop):
    async def main():
        server, server_addr = await echo_server(loop)
        proto = server.get_protocol()
        server.sendto(b"x", ("::1", 9))
        exc = await proto.errors.get()
        assert isinstance(exc, OSError)
        assert not server.is_closing()
        await close_all(server)

    run(loop, main())


def test_sendto_malformed_address_is_a_fatal_error(loop, loop_errors):
    async def main():
        server, _ = await echo_server(loop)
        proto = server.get_protocol()
        server.sendto(b"x", "not an address")
        assert server.is_closing()
        exc = await proto.lost
        assert isinstance(exc, TypeError)
        return exc

    exc = run(loop, main())
    context = loop_errors.pop_one()
    assert context["message"] == "Fatal write error on datagram transport"
    assert context["exception"] is exc


# -- closing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["close", "abort"])
def test_close_and_abort(loop, how):
    async def main():
        server, _ = await echo_server(loop)
        proto = server.get_protocol()
        assert not server.is_closing()
        getattr(server, how)()
        assert server.is_closing()
        getattr(server, how)()
        assert await proto.lost is None
        assert proto.events == ["connection_made", "lost"]
        assert server.get_extra_info("socket").fileno() == -1

    run(loop, main())


def test_sends_on_a_closed_connected_endpoint_are_dropped_and_logged(loop, caplog):
    async def main():
        server, server_addr = await echo_server(loop)
        client, proto = await loop.create_datagram_endpoint(Endpoint, remote_addr=server_addr)
        client.close()
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            for _ in range(4):
                client.sendto(b"dropped")
            quiet = [r for r in caplog.records if r.name == "asyncio"]
            client.sendto(b"dropped")
            client.sendto(b"dropped")
        assert await proto.lost is None
        server_proto = server.get_protocol()
        await close_all(server)
        assert server_proto.datagrams.empty()
        return quiet

    quiet = run(loop, main())
    assert quiet == []
    logged = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert logged == ["socket.send() raised exception."] * 2


# -- argument checks --------------------------------------------------------------------------


def test_reuse_address(loop):
    async def main():
        if sys.version_info >= (3, 11):
            # The keyword is gone.
            with pytest.raises(TypeError):
                await loop.create_datagram_endpoint(
                    Endpoint, local_addr=("127.0.0.1", 0), reuse_address=True
                )
            return
        with pytest.raises(ValueError):
            await loop.create_datagram_endpoint(
                Endpoint, local_addr=("127.0.0.1", 0), reuse_address=True
            )
        with pytest.warns(DeprecationWarning):
            transport, _ = await loop.create_datagram_endpoint(
                Endpoint, local_addr=("127.0.0.1", 0), reuse_address=False
            )
        await close_all(transport)

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        run(loop, main())


def test_sock_with_other_socket_keywords(loop):
    async def main():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            with pytest.raises(ValueError):
                await loop.create_datagram_endpoint(
                    Endpoint, local_addr=("127.0.0.1", 0), sock=sock
                )
            with pytest.raises(ValueError):
                await loop.create_datagram_endpoint(Endpoint, sock=sock, reuse_port=True)

    run(loop, main())


def test_stream_sock_is_rejected(loop):
    async def main():
        with socket.socket() as sock:
            with pytest.raises(ValueError):
                await loop.create_datagram_endpoint(Endpoint, sock=sock)

    run(loop, main())


def test_no_address_and_no_family(loop):
    async def main():
        with pytest.raises(ValueError):
            await loop.create_datagram_endpoint(Endpoint)

    run(loop, main())


@requires_ipv6
def test_addresses_must_be_2_tuples(loop):
    async def main():
        # 3.10 checks with an assert statement, later versions raise TypeError.
        expected = TypeError if sys.version_info >= (3, 11) else AssertionError
        with pytest.raises(expected):
            await loop.create_datagram_endpoint(Endpoint, local_addr=("::1", 0, 0, 0))
        with pytest.raises(expected):
            await loop.create_datagram_endpoint(Endpoint, remote_addr="127.0.0.1:9")

    run(loop, main())
