"""Helpers shared by the networking and pipe tests."""

from __future__ import annotations

import asyncio
import gc
import socket
import tracemalloc
from collections.abc import Coroutine
from typing import Any

import pytest


def ipv6_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


HAVE_IPV6 = ipv6_available()
requires_ipv6 = pytest.mark.skipif(not HAVE_IPV6, reason="IPv6 loopback unavailable")


def run(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], timeout: float = 10.0
) -> Any:
    """Runs `coro` on `loop`, failing (instead of hanging) after `timeout` seconds."""
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


def skip_leak_check_in_debug(loop: asyncio.AbstractEventLoop) -> None:
    """Debug mode records a traceback per callback: thousands of connections take minutes
    and the memory figures measure the tracebacks. Leak checks are normal mode's."""
    if loop.get_debug():
        pytest.skip("a leak check for normal mode")


async def traced_growth(work: Any, first: int, then: int) -> int:
    """How much the Python heap (tracemalloc) grew over `await work(then)`, measured once
    `await work(first)` ran with tracing on: what something kept per unit of work shows."""
    gc.collect()
    tracemalloc.start()
    try:
        await work(first)
        gc.collect()
        start = tracemalloc.get_traced_memory()[0]
        await work(then)
        gc.collect()
        end: int = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return end - start


class ChunkChecker(asyncio.Protocol):
    """Checks each chunk against a fresh copy of it (contents and hash), keeps every other
    chunk object and all the data."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.sizes: list[int] = []
        self.kept: list[tuple[int, bytes]] = []
        self.mismatches = 0
        self.lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        copy = bytes(bytearray(data))
        if hash(data) != hash(copy) or data != copy:
            self.mismatches += 1
        if len(self.sizes) % 2:
            self.kept.append((len(self.data), data))
        self.sizes.append(len(data))
        self.data += data

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.set_result(exc)


class Peer(asyncio.Protocol):
    """Echoes what it receives (unless told not to) and records how it ended."""

    def __init__(self, echo=True):
        loop = asyncio.get_running_loop()
        self.echo = echo
        self.transport = None
        self.data = bytearray()
        self.got_eof = False
        self.lost = loop.create_future()
        self._more = asyncio.Event()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.data += data
        self._more.set()
        if self.echo:
            self.transport.write(data)

    def eof_received(self):
        self.got_eof = True

    def connection_lost(self, exc):
        self.lost.set_result(exc)
        self._more.set()

    async def received(self, nbytes):
        while len(self.data) < nbytes:
            if self.lost.done():
                raise AssertionError(f"connection lost after {len(self.data)} bytes")
            self._more.clear()
            await self._more.wait()
        return bytes(self.data)


class Accepting:
    """A protocol factory that hands the server-side protocols to the test."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.queue = asyncio.Queue()

    def __call__(self):
        proto = Peer(**self.kwargs)
        self.queue.put_nowait(proto)
        return proto

    async def next(self):
        return await self.queue.get()


async def echo_once(loop, host, port, payload=b"ping"):
    """Connects, checks the echo, disconnects."""
    transport, client = await loop.create_connection(lambda: Peer(echo=False), host, port)
    transport.write(payload)
    assert await client.received(len(payload)) == payload
    transport.close()
    await client.lost
