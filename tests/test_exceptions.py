"""Errors raised by callbacks and tasks: the exception handler API, the default handler's
logging, and KeyboardInterrupt / SystemExit escaping the loop."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
import sys

import pytest

var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="default")


class CustomBaseException(BaseException):
    pass


def run_briefly(loop, iterations=1):
    for _ in range(iterations):
        loop.call_soon(loop.stop)
        loop.run_forever()


def failing_callback(message):
    raise ZeroDivisionError(message)


# -- callback errors -------------------------------------------------------------------------


def test_callback_exception_goes_to_the_handler_with_asyncio_context_keys(loop, loop_errors):
    handle = loop.call_soon(failing_callback, "in call_soon")
    run_briefly(loop)
    context = loop_errors.pop_one()
    assert {"message", "exception", "handle"} <= set(context)
    assert context["handle"] is handle
    assert isinstance(context["exception"], ZeroDivisionError)
    assert context["exception"].args == ("in call_soon",)
    assert context["message"].startswith("Exception in callback ")
    assert "failing_callback" in context["message"]
    assert context["exception"].__traceback__ is not None


def test_timer_callback_exception_reports_the_timer_handle(loop, loop_errors):
    timer = loop.call_later(0.001, failing_callback, "in a timer")
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    context = loop_errors.pop_one()
    assert context["handle"] is timer
    assert context["exception"].args == ("in a timer",)


def test_loop_keeps_running_after_a_callback_error(loop, loop_errors):
    calls = []
    loop.call_soon(failing_callback, "first")
    loop.call_soon(calls.append, "second")
    loop.call_soon(failing_callback, "third")
    loop.call_soon(calls.append, "fourth")
    run_briefly(loop)
    assert calls == ["second", "fourth"]
    contexts = loop_errors.consume()
    assert [c["exception"].args[0] for c in contexts] == ["first", "third"]


@pytest.mark.parametrize(
    "exc", [CustomBaseException("custom"), asyncio.CancelledError("plain callback")]
)
def test_other_base_exceptions_in_callbacks_go_to_the_handler(loop, loop_errors, exc):
    def raiser():
        raise exc

    loop.call_soon(raiser)
    run_briefly(loop)
    assert loop_errors.pop_one()["exception"] is exc


def test_done_callback_exception_goes_to_the_handler(loop, loop_errors):
    fut = loop.create_future()

    def bad_done_callback(f):
        raise KeyError("done callback")

    fut.add_done_callback(bad_done_callback)
    fut.set_result(None)
    run_briefly(loop, 2)
    context = loop_errors.pop_one()
    assert isinstance(context["exception"], KeyError)
    assert "bad_done_callback" in context["message"]


# -- handler API -----------------------------------------------------------------------------


def test_get_and_set_exception_handler(loop, loop_errors):
    assert loop.get_exception_handler() is loop_errors
    loop.set_exception_handler(None)
    assert loop.get_exception_handler() is None

    def handler(lp, context):
        pass

    loop.set_exception_handler(handler)
    assert loop.get_exception_handler() is handler
    loop.set_exception_handler(loop_errors)


def test_set_exception_handler_rejects_non_callables(loop, loop_errors):
    with pytest.raises(TypeError):
        loop.set_exception_handler("not callable")
    assert loop.get_exception_handler() is loop_errors


def test_custom_handler_receives_loop_and_context(loop):
    calls = []
    loop.set_exception_handler(lambda lp, ctx: calls.append((lp, ctx)))
    context = {"message": "explicit", "extra": 1}
    loop.call_exception_handler(context)
    assert calls == [(loop, context)]


def test_default_handler_logs_on_the_asyncio_logger(loop, caplog):
    loop.set_exception_handler(None)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.call_soon(failing_callback, "logged")
        run_briefly(loop)
    records = [r for r in caplog.records if r.name == "asyncio"]
    assert len(records) == 1
    record = records[0]
    assert record.levelno == logging.ERROR
    assert "Exception in callback" in record.getMessage()
    assert "failing_callback" in record.getMessage()
    assert "handle:" in record.getMessage()
    assert record.exc_info and record.exc_info[0] is ZeroDivisionError
    # The logged traceback reaches into the callback that raised.
    assert 'in failing_callback' in caplog.text


def test_default_exception_handler_called_directly(loop, caplog):
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.default_exception_handler({"message": "direct call", "custom_key": [1, 2]})
        loop.default_exception_handler({"exception": ValueError("no message")})
    records = [r for r in caplog.records if r.name == "asyncio"]
    assert len(records) == 2
    assert "direct call" in records[0].getMessage()
    assert "custom_key: [1, 2]" in records[0].getMessage()
    assert not records[0].exc_info
    assert "Unhandled exception in event loop" in records[1].getMessage()
    assert records[1].exc_info[0] is ValueError


def test_custom_handler_can_delegate_to_the_default(loop, caplog):
    seen = []

    def handler(lp, context):
        seen.append(context["message"])
        lp.default_exception_handler(context)

    loop.set_exception_handler(handler)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.call_soon(failing_callback, "delegated")
        run_briefly(loop)
    assert len(seen) == 1 and "failing_callback" in seen[0]
    records = [r for r in caplog.records if r.name == "asyncio"]
    assert len(records) == 1
    assert records[0].getMessage().startswith(seen[0])
    assert records[0].exc_info[1].args == ("delegated",)


def test_failing_custom_handler_falls_back_to_default(loop, caplog):
    def broken_handler(lp, context):
        raise RuntimeError("handler is broken")

    loop.set_exception_handler(broken_handler)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.call_soon(failing_callback, "original")
        run_briefly(loop)
    messages = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert len(messages) == 1
    assert "Unhandled error in exception handler" in messages[0]
    assert caplog.records[-1].exc_info[0] is RuntimeError


@pytest.mark.skipif(sys.version_info < (3, 12), reason="3.12+ runs handlers in the context")
def test_custom_handler_runs_in_the_failing_callbacks_context(loop):
    seen = []
    loop.set_exception_handler(lambda lp, ctx: seen.append(var.get()))
    ctx = contextvars.Context()
    ctx.run(var.set, "callback context")
    loop.call_soon(failing_callback, "x", context=ctx)
    run_briefly(loop)
    assert seen == ["callback context"]


# -- KeyboardInterrupt / SystemExit ----------------------------------------------------------


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exceptions_in_callbacks_propagate_out_of_run_forever(loop, exc_type):
    calls = []

    def raiser():
        raise exc_type("escaping")

    loop.call_soon(raiser)
    loop.call_soon(calls.append, "after")
    with pytest.raises(exc_type):
        loop.run_forever()
    assert not loop.is_running()
    assert calls == []
    # The loop is still usable, and what was left in the queue runs next time.
    run_briefly(loop)
    assert calls == ["after"]


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exceptions_in_callbacks_propagate_out_of_run_until_complete(loop, exc_type):
    def raiser():
        raise exc_type()

    async def main():
        loop.call_soon(raiser)
        await asyncio.sleep(3600)

    task = loop.create_task(main())
    with pytest.raises(exc_type):
        loop.run_until_complete(task)
    assert not loop.is_running()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(task)


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exceptions_in_coroutines_propagate(loop, exc_type):
    async def main():
        await asyncio.sleep(0)
        raise exc_type()

    with pytest.raises(exc_type):
        loop.run_until_complete(main())
    assert loop.run_until_complete(asyncio.sleep(0, "still usable")) == "still usable"


def test_keyboard_interrupt_in_timer_callback(loop):
    def raiser():
        raise KeyboardInterrupt

    loop.call_later(0.001, raiser)
    with pytest.raises(KeyboardInterrupt):
        loop.run_until_complete(asyncio.sleep(10))


# -- never-retrieved exceptions --------------------------------------------------------------


def test_never_retrieved_task_exception_is_reported(loop, loop_errors):
    async def fails():
        raise ValueError("nobody looked")

    task = loop.create_task(fails())
    run_briefly(loop, 2)
    assert task.done()
    del task
    gc.collect()
    context = loop_errors.pop_one()
    assert context["message"] == "Task exception was never retrieved"
    assert isinstance(context["exception"], ValueError)
    assert "future" in context


def test_never_retrieved_future_exception_is_reported(loop, loop_errors):
    fut = loop.create_future()
    fut.set_exception(OSError("nobody looked"))
    del fut
    gc.collect()
    context = loop_errors.pop_one()
    assert context["message"] == "Future exception was never retrieved"
    assert isinstance(context["exception"], OSError)


def test_retrieved_task_exception_is_not_reported(loop):
    async def fails():
        raise ValueError("retrieved")

    task = loop.create_task(fails())
    run_briefly(loop, 2)
    assert isinstance(task.exception(), ValueError)
    del task
    gc.collect()
    # The loop_errors teardown check asserts no handler call happened.


def test_pending_task_destroyed_is_reported(loop, loop_errors):
    async def forever():
        await loop.create_future()

    task = loop.create_task(forever())
    run_briefly(loop)
    loop.close()
    del task
    gc.collect()
    context = loop_errors.pop_one()
    assert context["message"] == "Task was destroyed but it is pending!"


def test_stop_request_does_not_outlive_a_keyboard_interrupt(loop):
    def stop_then_raise():
        loop.stop()
        raise KeyboardInterrupt

    loop.call_soon(stop_then_raise)
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    assert asyncio._get_running_loop() is None
    # run_forever reset the stop request on the way out: this run lasts until the next stop().
    calls = []
    loop.call_later(0.01, calls.append, "timer")
    loop.call_later(0.02, loop.stop)
    loop.run_forever()
    assert calls == ["timer"]
