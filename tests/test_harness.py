"""The fixtures themselves: the matrix covers both loops, and an unexpected call to the loop's
exception handler fails the test (a guard that never fires would make every test weaker)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import oxloop
import pytest

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).with_name("conftest.py").read_text()
# The inner runs take this suite's own options (pyproject.toml's addopts).
INNER_ARGS = ("-p", "no:cacheprovider", "-p", "no:asyncio")


def test_loop_fixture_gives_the_loop_named_by_the_parameter(loop, loop_name):
    assert isinstance(loop, asyncio.AbstractEventLoop)
    assert isinstance(loop, oxloop.Loop) == (loop_name == "oxloop")
    assert not loop.is_running() and not loop.is_closed()
    assert loop.get_exception_handler() is not None


def test_consumed_handler_calls_do_not_fail_the_test(loop, loop_errors):
    def boom():
        raise ZeroDivisionError

    loop.call_soon(boom)
    loop.run_until_complete(asyncio.sleep(0.001))
    context = loop_errors.pop_one()
    assert isinstance(context["exception"], ZeroDivisionError)


def test_unexpected_handler_call_fails_at_teardown(pytester, loop_name):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        test_inner="""
        import asyncio

        def test_leaves_an_error_behind(loop):
            def boom():
                raise ZeroDivisionError("left behind")
            loop.call_soon(boom)
            loop.run_until_complete(asyncio.sleep(0.001))

        def test_clean(loop):
            loop.run_until_complete(asyncio.sleep(0))
        """
    )
    result = pytester.runpytest_inprocess(*INNER_ARGS, "-k", loop_name)
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*unexpected call(s) to the loop's exception handler*"])
    result.stdout.fnmatch_lines(["*left behind*"])


def test_pending_task_destroyed_at_teardown_is_reported(pytester, loop_name):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        test_inner="""
        import asyncio

        def test_forgets_a_task(loop):
            async def forever():
                await asyncio.sleep(3600)
            loop.create_task(forever())
            loop.run_until_complete(asyncio.sleep(0))
        """
    )
    result = pytester.runpytest_inprocess(*INNER_ARGS, "-k", loop_name)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*Task was destroyed but it is pending*"])


@pytest.mark.parametrize("expected", ["asyncio", "oxloop"])
def test_matrix_has_both_columns(pytester, expected):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_inner="def test_one(loop):\n    pass\n")
    result = pytester.runpytest_inprocess(*INNER_ARGS, "--collect-only", "-q")
    result.stdout.fnmatch_lines([f"*test_one?{expected}?*"])


def test_hidden_errors_fail_the_test(pytester, loop_name):
    """Errors nobody sees -- in __del__, in threads, never-awaited coroutines, unclosed
    resources -- are turned into failures of the test that caused them."""
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        test_inner="""
        import socket, threading

        class Broken:
            def __del__(self):
                raise ValueError("in __del__")

        def test_unraisable(loop):
            Broken()

        def test_thread(loop):
            t = threading.Thread(target=lambda: 1 / 0)
            t.start()
            t.join()

        def test_never_awaited(loop):
            async def coro():
                pass
            coro()

        def test_unclosed_socket(loop):
            socket.socket()
        """
    )
    result = pytester.runpytest_inprocess(*INNER_ARGS, "-k", loop_name)
    result.assert_outcomes(failed=4)
