"""Helpers shared by the networking tests."""

from __future__ import annotations

import asyncio
import socket
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
