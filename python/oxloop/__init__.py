"""oxloop: a drop-in asyncio event loop for CPython, written in Rust.

    import oxloop
    oxloop.run(main())

or `asyncio.Runner(loop_factory=oxloop.new_event_loop)`.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar, cast

from oxloop import metrics, monitor
from oxloop._loop import Loop
from oxloop._oxloop import Handle, TimerHandle
from oxloop._stats import Lag, LoopStats, SlowCallback, stats, watch_tasks
from oxloop._tasks import Frame, TaskNode, format_tree, task_tree

__all__ = [
    "EventLoopPolicy",
    "Frame",
    "Handle",
    "Lag",
    "Loop",
    "LoopStats",
    "SlowCallback",
    "TaskNode",
    "TimerHandle",
    "format_tree",
    "metrics",
    "monitor",
    "new_event_loop",
    "run",
    "stats",
    "task_tree",
    "watch_tasks",
]

_T = TypeVar("_T")


def new_event_loop() -> Loop:
    """A new oxloop event loop."""
    return Loop()


def run(main: Coroutine[Any, Any, _T], *, debug: bool | None = None) -> _T:
    """Run a coroutine on a new oxloop loop, as `asyncio.run` does, and close the loop."""
    if asyncio.events._get_running_loop() is not None:
        # Checked before a loop exists, as asyncio.run does, so no coroutine is left unawaited.
        raise RuntimeError("asyncio.run() cannot be called from a running event loop")
    if sys.version_info >= (3, 11):
        with asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
            return cast(_T, runner.run(main))
    return _run_310(main, debug=debug)


def _run_310(main: Coroutine[Any, Any, _T], *, debug: bool | None) -> _T:
    from asyncio import coroutines, events

    if not coroutines.iscoroutine(main):
        raise ValueError(f"a coroutine was expected, got {main!r}")
    loop = new_event_loop()
    try:
        events.set_event_loop(loop)
        if debug is not None:
            loop.set_debug(debug)
        return cast(_T, loop.run_until_complete(main))
    finally:
        try:
            _cancel_all_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            events.set_event_loop(None)
            loop.close()


def _cancel_all_tasks(loop: Loop) -> None:
    to_cancel = asyncio.all_tasks(loop)
    if not to_cancel:
        return
    for task in to_cancel:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*to_cancel, return_exceptions=True))
    for task in to_cancel:
        if task.cancelled():
            continue
        if task.exception() is not None:
            loop.call_exception_handler(
                {
                    "message": "unhandled exception during asyncio.run() shutdown",
                    "exception": task.exception(),
                    "task": task,
                }
            )


class EventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """An event loop policy whose loops are oxloop loops, for code that still sets a policy."""

    def _loop_factory(self) -> Loop:
        return Loop()


# A process opts in to the live view (`python -m oxloop top PATH`) from its environment.
_monitor = monitor.serve_from_environment()
