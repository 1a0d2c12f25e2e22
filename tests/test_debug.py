"""Debug mode: how it is switched on, slow-callback logging, the extra argument checks, and the
creation tracebacks it records."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import pytest

DEBUG_ENV_VARS = ("PYTHONASYNCIODEBUG", "PYTHONDEVMODE")


def run_briefly(loop, iterations=1):
    for _ in range(iterations):
        loop.call_soon(loop.stop)
        loop.run_forever()


def plain_callback():
    pass


async def coroutine_function():
    pass


# -- switching debug mode on -----------------------------------------------------------------

CHILD = """
import asyncio, sys
import oxloop

factory = oxloop.new_event_loop if sys.argv[1] == "oxloop" else asyncio.new_event_loop
run = oxloop.run if sys.argv[1] == "oxloop" else asyncio.run
loop = factory()
print(loop.get_debug())
loop.close()

async def main():
    return asyncio.get_running_loop().get_debug()

print(run(main()))
"""


@pytest.mark.parametrize(
    "flags, env, expected",
    [
        ([], {}, "False"),
        ([], {"PYTHONASYNCIODEBUG": "1"}, "True"),
        (["-X", "dev"], {}, "True"),
        # -E makes the interpreter ignore PYTHONASYNCIODEBUG.
        (["-E"], {"PYTHONASYNCIODEBUG": "1"}, "False"),
    ],
    ids=["default", "PYTHONASYNCIODEBUG=1", "-X dev", "-E ignores env"],
)
def test_get_debug_follows_the_environment(loop_name, flags, env, expected):
    child_env = {k: v for k, v in os.environ.items() if k not in DEBUG_ENV_VARS}
    child_env.update(env)
    if "-E" in flags:
        # -E also ignores PYTHONPATH: pass the import path explicitly.
        code = f"import sys; sys.path[:0] = {sys.path!r}\n" + CHILD
    else:
        code = CHILD
    out = subprocess.run(
        [sys.executable, *flags, "-c", code, loop_name],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [expected, expected]


def test_set_debug(loop):
    loop.set_debug(True)
    assert loop.get_debug() is True
    loop.set_debug(False)
    assert loop.get_debug() is False


@pytest.mark.parametrize("on, off", [(1, 0), ("yes", ""), ([None], None)], ids=repr)
def test_set_debug_takes_any_value_by_its_truth(loop, on, off):
    loop.set_debug(on)
    assert loop.get_debug()
    loop.set_debug(off)
    assert not loop.get_debug()


def test_set_debug_enables_coroutine_origin_tracking_while_running(loop):
    before = sys.get_coroutine_origin_tracking_depth()
    loop.set_debug(True)

    async def main():
        return sys.get_coroutine_origin_tracking_depth()

    assert loop.run_until_complete(main()) > 0
    assert sys.get_coroutine_origin_tracking_depth() == before


def test_slow_callback_duration_default_and_setter(loop):
    assert loop.slow_callback_duration == 0.1
    loop.slow_callback_duration = 0.25
    assert loop.slow_callback_duration == 0.25


# -- slow callbacks --------------------------------------------------------------------------


def slow_callback():
    time.sleep(0.25)


def test_slow_callbacks_are_logged_in_debug_mode(loop, caplog):
    loop.set_debug(True)
    loop.slow_callback_duration = 0.2
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.call_soon(slow_callback)
        loop.call_soon(plain_callback)
        run_briefly(loop)
    messages = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert len(messages) == 1, messages
    assert messages[0].startswith("Executing <Handle slow_callback()")
    assert "took" in messages[0] and messages[0].endswith("seconds")
    assert caplog.records[0].levelno == logging.WARNING


def test_slow_callbacks_are_not_logged_without_debug(loop, caplog):
    loop.set_debug(False)
    loop.slow_callback_duration = 0.2
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.call_soon(slow_callback)
        run_briefly(loop)
    assert [r for r in caplog.records if r.name == "asyncio"] == []


def test_slow_task_step_is_logged_with_the_task(loop, caplog):
    loop.set_debug(True)
    loop.slow_callback_duration = 0.2

    async def slow_coroutine():
        time.sleep(0.25)

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.run_until_complete(slow_coroutine())
    messages = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert len(messages) == 1, messages
    # asyncio names the task (and its coroutine) rather than the internal step callback.
    assert messages[0].startswith("Executing <Task")
    assert "slow_coroutine" in messages[0]


# -- debug-mode argument checks --------------------------------------------------------------


SCHEDULERS = {
    "call_soon": lambda lp, cb: lp.call_soon(cb),
    "call_soon_threadsafe": lambda lp, cb: lp.call_soon_threadsafe(cb),
    "call_later": lambda lp, cb: lp.call_later(1, cb),
    "call_at": lambda lp, cb: lp.call_at(lp.time() + 1, cb),
    "run_in_executor": lambda lp, cb: lp.run_in_executor(None, cb),
}


@pytest.mark.parametrize("method", list(SCHEDULERS))
def test_debug_mode_rejects_non_callables(loop, method):
    loop.set_debug(True)
    with pytest.raises(TypeError, match="callable"):
        SCHEDULERS[method](loop, 42)


@pytest.mark.parametrize("method", list(SCHEDULERS))
def test_debug_mode_rejects_coroutine_functions(loop, method):
    loop.set_debug(True)
    with pytest.raises(TypeError, match="coroutines cannot be used"):
        SCHEDULERS[method](loop, coroutine_function)


@pytest.mark.parametrize("method", ["call_soon", "call_later", "call_at"])
def test_debug_mode_rejects_coroutine_objects(loop, method):
    loop.set_debug(True)
    coro = coroutine_function()
    try:
        with pytest.raises(TypeError, match="coroutines cannot be used"):
            SCHEDULERS[method](loop, coro)
    finally:
        coro.close()


def test_without_debug_a_non_callable_fails_when_run(loop, loop_errors):
    loop.set_debug(False)
    handle = loop.call_soon(42)  # accepted: the check is a debug-mode one
    run_briefly(loop)
    context = loop_errors.pop_one()
    assert context["handle"] is handle
    assert isinstance(context["exception"], TypeError)


# -- creation tracebacks ---------------------------------------------------------------------


def test_handle_source_traceback_in_debug_mode(loop):
    loop.set_debug(True)
    this_line = sys._getframe().f_lineno + 1
    handles = [loop.call_soon(plain_callback), loop.call_later(10, plain_callback)]
    for handle in handles:
        tb = handle._source_traceback
        assert tb, "debug mode records where the handle was created"
        frame = tb[-1]
        # The innermost frame is the caller of call_soon / call_later, not loop internals.
        assert (frame.filename, frame.lineno) == (__file__, this_line)
        assert f"created at {__file__}:{this_line}" in repr(handle)
        handle.cancel()


def test_cancelled_handle_repr_keeps_the_callback_in_debug_mode(loop):
    loop.set_debug(True)
    handle = loop.call_soon(plain_callback)
    handle.cancel()
    text = repr(handle)
    assert "cancelled" in text
    assert "plain_callback" in text  # captured before the callback was released
    assert handle._callback is None


def test_no_source_traceback_without_debug(loop):
    loop.set_debug(False)
    handle = loop.call_soon(plain_callback)
    assert not handle._source_traceback
    assert "created at" not in repr(handle)
    handle.cancel()


def test_task_source_traceback_in_debug_mode(loop):
    loop.set_debug(True)
    this_line = sys._getframe().f_lineno + 1
    task = loop.create_task(coroutine_function())
    frame = task._source_traceback[-1]
    assert (frame.filename, frame.lineno) == (__file__, this_line)
    loop.run_until_complete(task)


def test_callback_error_context_has_source_traceback_in_debug_mode(loop, loop_errors):
    loop.set_debug(True)

    def fails():
        raise ValueError("debug")

    handle = loop.call_soon(fails)
    run_briefly(loop)
    context = loop_errors.pop_one()
    assert context["handle"] is handle
    assert context["source_traceback"] == handle._source_traceback
    assert context["source_traceback"][-1].filename == __file__


def test_close_is_logged_in_debug_mode(loop, caplog):
    loop.set_debug(True)
    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        loop.close()
    assert any(r.getMessage().startswith("Close <") for r in caplog.records), caplog.text
