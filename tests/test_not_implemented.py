"""Pipes and subprocesses are not implemented in oxloop yet: the methods exist with asyncio's
shape (coroutine functions) and raise NotImplementedError when awaited.

The NotImplementedError tests are oxloop-specific, so this module narrows the loop matrix to
oxloop; the shape test at the bottom runs on both loops.
"""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import sys

import pytest

PIPES = ["connect_read_pipe", "connect_write_pipe"]
SUBPROCESS = ["subprocess_exec", "subprocess_shell"]
AREAS = {name: "pipe" for name in PIPES}
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


def test_create_subprocess_exec_raises_not_implemented(loop):
    with pytest.raises(NotImplementedError, match="subprocess_exec"):
        loop.run_until_complete(
            asyncio.create_subprocess_exec(sys.executable, "-c", "pass", stdout=subprocess.PIPE)
        )


def test_the_loop_still_works_after_a_not_implemented_call(loop):
    with pytest.raises(NotImplementedError):
        loop.run_until_complete(loop.connect_read_pipe(asyncio.Protocol, None))
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
