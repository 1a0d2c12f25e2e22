"""An echo server on a chosen event loop, for benches/echo.py.

    python benches/echo_server.py --loop oxloop --mode protocol --tcp 127.0.0.1:0
    python benches/echo_server.py --loop uvloop --mode sock --unix /tmp/echo.sock
    python benches/echo_server.py --loop asyncio --mode protocol --udp 127.0.0.1:0

Once listening it prints its address on stdout, one line, in the form the load generator takes
(``HOST:PORT``, with the actual port when given port 0, or the socket path), then echoes until
SIGTERM or SIGINT, when it closes the server and exits 0.

Modes, each the idiomatic way to write an echo server with that asyncio API:

    protocol  an ``asyncio.Protocol`` whose ``data_received`` calls ``transport.write(data)``;
              UDP: a ``DatagramProtocol`` whose ``datagram_received`` calls ``sendto``
    streams   ``asyncio.start_server``: ``data = await reader.read(65536)``,
              ``writer.write(data)``, ``await writer.drain()``
    sock      the loop's socket coroutines: ``sock_accept``, then one task per connection doing
              ``sock_recv`` and ``sock_sendall`` on a non-blocking socket

The server checks that the running loop is the one asked for, so a misconfigured loop
factory fails loudly instead of benchmarking the wrong loop.

With ``--tls-cert`` and ``--tls-key`` the protocol and streams servers speak TLS (``ssl=`` on
``create_server`` / ``start_server``).

Before serving it frees a 1 MiB block, so that every server starts with the same C allocator
state (``settle_malloc`` in ``benchutil.py``); ``--cold-malloc`` skips that.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import signal
import socket
import ssl
import sys
from collections.abc import Callable, Coroutine
from typing import Any, cast

from benchutil import oxloop_without_stats, settle_malloc

# oxloop-nostats: oxloop with its statistics off, to measure what they cost.
LOOPS = ("asyncio", "uvloop", "oxloop", "oxloop-nostats")
MODES = ("protocol", "streams", "sock")
READ_SIZE = 65536


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name == "asyncio":
        return asyncio.new_event_loop
    if name == "oxloop-nostats":
        return oxloop_without_stats
    factory: Callable[[], asyncio.AbstractEventLoop] = importlib.import_module(name).new_event_loop
    return factory




def check_loop(loop: asyncio.AbstractEventLoop, asked: str, server: str) -> None:
    """Exits unless `loop` is the loop asked for, so a misconfigured run cannot pass for it."""
    module = type(loop).__module__.split(".")[0]
    stats_off = asked.endswith("-nostats")
    if module != asked.removesuffix("-nostats") or (stats_off and loop.stats_enabled):  # type: ignore[attr-defined]
        raise SystemExit(f"{server}: asked for {asked}, running on {type(loop)!r}")


def run(main: Coroutine[Any, Any, None], factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
    """asyncio.run on the given loop: asyncio.Runner from 3.11, by hand on 3.10."""
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(main)
        return
    loop = factory()
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(main)
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def host_port(spec: str) -> tuple[str, int]:
    host, sep, port = spec.rpartition(":")
    if not sep or not port.isdigit():
        raise SystemExit(f"echo_server: expected HOST:PORT, got {spec!r}")
    return host.strip("[]"), int(port)


def format_address(sock: socket.socket) -> str:
    if sock.family == socket.AF_UNIX:
        return str(sock.getsockname())
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if sock.family == socket.AF_INET6 else f"{host}:{port}"


class EchoProtocol(asyncio.Protocol):
    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not isinstance-checked: uvloop's transports do not derive from asyncio's classes.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class EchoDatagramProtocol(asyncio.DatagramProtocol):
    transport: asyncio.DatagramTransport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(data, addr)


async def stream_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def sock_echo(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> None:
    with conn:
        try:
            while True:
                data = await loop.sock_recv(conn, READ_SIZE)
                if not data:
                    break
                await loop.sock_sendall(conn, data)
        except ConnectionError:
            pass


async def sock_server(loop: asyncio.AbstractEventLoop, listener: socket.socket) -> None:
    tasks: set[asyncio.Task[None]] = set()
    try:
        while True:
            conn, _ = await loop.sock_accept(listener)
            conn.setblocking(False)
            if conn.family != socket.AF_UNIX:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = loop.create_task(sock_echo(loop, conn))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def listening_socket(args: argparse.Namespace) -> socket.socket:
    """A bound, listening, non-blocking stream socket (sock mode makes its own)."""
    if args.unix:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(args.unix)
    else:
        host, port = host_port(args.tcp)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    check_loop(loop, args.loop, "echo_server")

    stop = loop.create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda: stop.done() or stop.set_result(None))

    closers: list[Callable[[], Any]] = []
    if args.udp:
        host, port = host_port(args.udp)
        transport, _ = await loop.create_datagram_endpoint(
            EchoDatagramProtocol, local_addr=(host, port)
        )
        address = format_address(transport.get_extra_info("socket"))
        closers.append(transport.close)
    elif args.mode == "sock":
        listener = listening_socket(args)
        address = format_address(listener)
        task = loop.create_task(sock_server(loop, listener))
        closers += [task.cancel, listener.close]
    else:
        tls = None
        if args.tls_cert:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(args.tls_cert, args.tls_key)
        if args.mode == "protocol":
            if args.unix:
                server = await loop.create_unix_server(EchoProtocol, args.unix, ssl=tls)
            else:
                host, port = host_port(args.tcp)
                server = await loop.create_server(EchoProtocol, host, port, ssl=tls)
        elif args.unix:
            server = await asyncio.start_unix_server(stream_echo, args.unix, ssl=tls)
        else:
            host, port = host_port(args.tcp)
            server = await asyncio.start_server(stream_echo, host, port, ssl=tls)
        address = format_address(server.sockets[0])
        closers.append(server.close)

    print(address, flush=True)
    await stop
    for close in closers:
        close()
    await asyncio.sleep(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Echo server on a chosen asyncio event loop.")
    parser.add_argument("--loop", choices=LOOPS, default="asyncio")
    parser.add_argument("--mode", choices=MODES, default="protocol")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--tcp", metavar="HOST:PORT")
    where.add_argument("--unix", metavar="PATH")
    where.add_argument("--udp", metavar="HOST:PORT")
    parser.add_argument(
        "--cold-malloc",
        action="store_true",
        help="serve with the C allocator as start-up left it (see settle_malloc)",
    )
    parser.add_argument("--tls-cert", metavar="PEM", help="serve TLS with this certificate chain")
    parser.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")
    args = parser.parse_args(argv)
    if args.udp and args.mode != "protocol":
        parser.error("UDP is served in protocol mode only")
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    if args.tls_cert and (args.udp or args.mode == "sock"):
        parser.error("TLS is served in protocol and streams modes, over TCP or Unix sockets")
    if not args.cold_malloc:
        settle_malloc()
    try:
        run(serve(args), loop_factory(args.loop))
    finally:
        if args.unix:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(args.unix)
    return 0


if __name__ == "__main__":
    sys.exit(main())
