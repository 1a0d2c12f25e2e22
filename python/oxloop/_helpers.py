"""The slow paths of the native loop: debug checks, formatting, logging.

The Rust core calls these rarely (debug mode, errors, reprs); they are plain asyncio
plumbing, written once here so that their output matches asyncio's word for word.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import sys
from asyncio import base_events, coroutines, format_helpers, unix_events
from typing import Any

# Python 3.13's Server tracks its transports: `_attach(transport)` / `_detach(transport)`.
SERVER_TRACKS_TRANSPORTS = (
    len(inspect.signature(base_events.Server._attach).parameters) > 1  # type: ignore[attr-defined]
)


def base_logger() -> logging.Logger:
    """asyncio's logger, looked up where asyncio's own loop finds it.

    Code (and CPython's tests) that patch `asyncio.base_events.logger` then see oxloop's
    messages exactly as they see asyncio's.
    """
    logger: logging.Logger = base_events.logger  # type: ignore[attr-defined]
    return logger


def unix_logger() -> logging.Logger:
    """The logger `asyncio.unix_events` uses (signal handling messages)."""
    logger: logging.Logger = unix_events.logger  # type: ignore[attr-defined]
    return logger


def extract_stack() -> Any:
    """Where a handle is being created: the caller of the loop method (debug mode)."""
    return format_helpers.extract_stack(sys._getframe(1))


def check_callback(callback: Any, method: str) -> None:
    if coroutines.iscoroutine(callback) or coroutines.iscoroutinefunction(callback):
        raise TypeError(f"coroutines cannot be used with {method}()")
    if not callable(callback):
        raise TypeError(f"a callable object was expected by {method}(), got {callback!r}")


def format_callback_source(callback: Any, args: Any, debug: bool = False) -> str:
    """asyncio's callback description; from 3.13 it shows the arguments in debug mode."""
    if sys.version_info >= (3, 13):
        return format_helpers._format_callback_source(callback, args, debug=debug)
    return format_helpers._format_callback_source(callback, args)


def _loop_debug(handle: Any) -> bool:
    loop = handle._loop
    return bool(loop is not None and loop.get_debug())


def handle_repr(handle: Any) -> str:
    info = [type(handle).__name__]
    if handle._cancelled:
        info.append("cancelled")
    if handle._callback is not None:
        info.append(format_callback_source(handle._callback, handle._args, _loop_debug(handle)))
    if handle._source_traceback:
        frame = handle._source_traceback[-1]
        info.append(f"created at {frame[0]}:{frame[1]}")
    when = getattr(handle, "_when", None)
    if when is not None:
        info.insert(2 if handle._cancelled else 1, f"when={when}")
    return "<{}>".format(" ".join(info))


def format_handle(handle: Any) -> str:
    """A handle as asyncio's slow-callback warning names it: a task step names its task."""
    cb = handle._callback
    if isinstance(getattr(cb, "__self__", None), asyncio.Task):
        return repr(cb.__self__)
    return str(handle)


def log_slow_callback(handle: Any, took: float) -> None:
    base_logger().warning("Executing %s took %.3f seconds", format_handle(handle), took)


def set_task_name(task: Any, name: Any) -> None:
    """Names a factory-made task the way the running interpreter's asyncio does."""
    if sys.version_info >= (3, 13):
        task.set_name(name)
        return
    if name is None:
        return
    try:
        set_name = task.set_name
    except AttributeError:
        return
    set_name(name)


def create_task(
    loop: Any, coro: Any, name: Any, context: Any, factory: Any, kwargs: dict[str, Any] | None
) -> Any:
    """`loop.create_task` with a task factory, in debug mode, or with extra keywords."""
    extra = dict(kwargs or {})
    if context is not None:
        extra["context"] = context
    if factory is None:
        task = asyncio.Task(coro, loop=loop, name=name, **extra)
        source_traceback = getattr(task, "_source_traceback", None)
        if source_traceback:
            del source_traceback[-1]
        loop._mark_created(task)
        return task
    task = factory(loop, coro, **extra)
    set_task_name(task, name)
    if isinstance(task, asyncio.Task):
        loop._mark_created(task)
    return task


def set_future_state(fut: Any, exception: BaseException | None, result: Any) -> None:
    """Delivers an executor job's outcome to its asyncio future, as `wrap_future` does."""
    if fut.cancelled():
        return
    if exception is not None:
        fut.set_exception(asyncio.futures._convert_future_exc(exception))  # type: ignore[attr-defined]
    else:
        fut.set_result(result)


def log_send_after_close() -> None:
    """A transport was written to after its connection was lost, repeatedly."""
    base_logger().warning("socket.send() raised exception.")


def log_pipe_write_after_close() -> None:
    """A write pipe transport was written to after it closed, repeatedly."""
    unix_logger().warning("pipe closed by peer or os.write(pipe, data) raised exception.")


def describe_callback(handle: Any) -> str:
    """What a slow callback ran, for `loop.stats()`: a task's step names the task and where
    its coroutine is suspended now; a transport's callback names its protocol."""
    callback = handle._callback
    try:
        owner = getattr(callback, "__self__", None)
        if isinstance(owner, asyncio.Future) and hasattr(owner, "get_coro"):
            from oxloop._tasks import describe_task

            return describe_task(owner)
        name = callable_name(callback)
        get_protocol = getattr(owner, "get_protocol", None)
        if callable(get_protocol):
            name = f"{name} of {type(get_protocol()).__qualname__}"
        return name
    except Exception:
        # What a callable says of itself is its own code, which may fail: the statistics
        # then name its type.
        return type(callback).__qualname__


def callable_name(callback: Any) -> str:
    """`module.qualname` of a callable (of what a `functools.partial` wraps), with the file
    and line of its code where it has some."""
    while isinstance(callback, functools.partial):
        callback = callback.func
    qualname = getattr(callback, "__qualname__", None) or type(callback).__qualname__
    module = getattr(callback, "__module__", None)
    name = f"{module}.{qualname}" if module and module != "builtins" else qualname
    code = getattr(getattr(callback, "__func__", callback), "__code__", None)
    if code is not None:
        name = f"{name} at {code.co_filename}:{code.co_firstlineno}"
    return name
