"""Networking, pipes and subprocesses are not implemented in oxloop yet: the methods exist with
asyncio's shape (coroutine functions) and raise NotImplementedError when awaited.

The NotImplementedError tests are oxloop-specific, so this module narrows the loop matrix to
oxloop; the shape test at the bottom runs on both loops.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import subprocess
import sys

import pytest

NETWORKING = [
    "create_connection", "create_server", "create_unix_connection", "create_unix_server",
    "create_datagram_endpoint", "connect_accepted_socket", "sendfile", "start_tls",
    "sock_recv", "sock_recv_into", "sock_sendall", "sock_connect", "sock_accept",
    "sock_sendfile",
]
if sys.version_info >= (3, 11):
    NETWORKING += ["sock_recvfrom", "sock_recvfrom_into", "sock_sendto"]
PIPES = ["connect_read_pipe", "connect_write_pipe"]
SUBPROCESS = ["subprocess_exec", "subprocess_shell"]
AREAS = {name: "networking" for name in NETWORKING}
AREAS.update({name: "pipe" for name in PIPES})
AREAS.update({name: "subprocess" for name in SUBPROCESS})


@pytest.fixture(params=["oxloop"])
def loop_name(request):
    """This module's loop matrix: oxloop only."""
    return request.param


@pytest.mark.parametrize("method", list(AREAS))
def test_method_raises_not_implemented_when_awaited(loop, method):
    coro = getattr(loop, method)(None, None)
    assert inspect.iscoroutine(coro)
    with pytest.raises(NotImplementedError) as info:
        loop.run_until_complete(coro)
    message = str(info.value)
    assert f"loop.{method}()" in message
    assert AREAS[method] in message


def test_open_connection_raises_not_implemented(loop):
    with pytest.raises(NotImplementedError, match="create_connection"):
        loop.run_until_complete(asyncio.open_connection("127.0.0.1", 9))


def test_start_server_raises_not_implemented(loop):
    with pytest.raises(NotImplementedError, match="create_server"):
        loop.run_until_complete(asyncio.start_server(lambda r, w: None, "127.0.0.1", 0))


def test_create_subprocess_exec_raises_not_implemented(loop):
    with pytest.raises(NotImplementedError, match="subprocess_exec"):
        loop.run_until_complete(
            asyncio.create_subprocess_exec(sys.executable, "-c", "pass", stdout=subprocess.PIPE)
        )


def test_sock_recv_on_a_real_socket_raises_not_implemented(loop):
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        b.send(b"data")
        with pytest.raises(NotImplementedError):
            loop.run_until_complete(loop.sock_recv(a, 10))
        # Nothing was consumed from the socket.
        assert a.recv(10) == b"data"


def test_the_loop_still_works_after_a_not_implemented_call(loop):
    with pytest.raises(NotImplementedError):
        loop.run_until_complete(loop.create_connection(asyncio.Protocol, "127.0.0.1", 9))
    assert loop.run_until_complete(asyncio.sleep(0, "fine")) == "fine"


@pytest.mark.parametrize("loop_kind", ["asyncio", "oxloop"])
def test_methods_are_coroutine_functions_on_both_loops(loop_kind):
    import oxloop

    factory = oxloop.new_event_loop if loop_kind == "oxloop" else asyncio.new_event_loop
    other = factory()
    try:
        for method in AREAS:
            assert inspect.iscoroutinefunction(getattr(other, method)), method
    finally:
        other.close()
