"""`loop.stats()`: what an oxloop loop counts about itself while it runs.

The counting is native and always on (``OXLOOP_STATS=0`` in the environment, or
``loop.stats_enabled = False``, turns it off); a snapshot is taken only when asked for.
"""

from __future__ import annotations

import asyncio
import dataclasses
import weakref
from typing import Any

# Every oxloop loop of the process, for the exporters (`oxloop.metrics`) and the monitor.
_LOOPS: weakref.WeakSet[Any] = weakref.WeakSet()


# Every loop marks its tasks' steps from its start (a monitor is serving).
_WATCH_TASKS = False


def register(loop: Any) -> None:
    _LOOPS.add(loop)
    if _WATCH_TASKS:
        loop._task_clock()


def watch_tasks(on: bool = True) -> None:
    """Has every oxloop loop, present and made from now on, watch its tasks: mark each task
    `create_task` makes with when, and the end of each task step on its task, so that
    `oxloop.task_tree()` can tell each task's age and how long it has been idle. It costs
    a task's creation about a third of a microsecond, and each task step a lookup. `on`
    false: loops made from now on do not (those watching go on)."""
    global _WATCH_TASKS
    _WATCH_TASKS = on
    if on:
        for loop in live_loops():
            loop._task_clock()


def live_loops() -> list[Any]:
    """The oxloop loops of this process that are still referenced."""
    return list(_LOOPS)


@dataclasses.dataclass(frozen=True)
class Lag:
    """How late callbacks started: from when each was due (when it was queued, or its timer's
    deadline) to when it began. Quantiles are read from log-linear buckets, within 12.5%."""

    count: int
    #: The lags added up, in seconds.
    sum: float
    p50: float
    p99: float
    max: float
    #: The non-empty buckets as ``(upper bound in seconds, count)``, in increasing order.
    buckets: tuple[tuple[float, int], ...]


@dataclasses.dataclass(frozen=True)
class SlowCallback:
    """One of the slowest callbacks seen."""

    #: Seconds it ran, sending what it wrote included.
    duration: float
    #: What ran: a task's name and coroutine with where it is suspended, or a callable.
    name: str
    #: When it ended, as `time.time()`.
    at: float


@dataclasses.dataclass(frozen=True)
class LoopStats:
    """A snapshot of a loop's statistics, cumulative since the loop was made."""

    enabled: bool
    #: Seconds since the loop was made.
    uptime: float
    iterations: int
    #: Callbacks run (cancelled ones are skipped, not counted).
    callbacks: int
    #: Readiness reports from the poller.
    io_events: int
    timers_fired: int
    #: Seconds in the poller: waiting for I/O or timers, and the wait's own system call.
    poll_time: float
    #: Seconds running callbacks.
    callback_time: float
    lag: Lag
    #: The slowest callbacks, slowest first.
    slowest: tuple[SlowCallback, ...]
    #: Callbacks waiting for the next iteration.
    ready: int
    #: Scheduled timers.
    timers: int
    #: Open transports: sockets, pipes and datagram endpoints.
    transports: int
    #: Servers accepting connections.
    servers: int
    #: File descriptors watched by `add_reader` / `add_writer` (each direction counts).
    fd_watchers: int
    #: Child processes the loop waits for.
    children: int

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as plain data (for JSON)."""
        return dataclasses.asdict(self)


def snapshot(loop: Any) -> LoopStats:
    raw = loop._stats()
    lag = Lag(
        raw["lag_count"],
        raw["lag_sum"],
        raw["lag_p50"],
        raw["lag_p99"],
        raw["lag_max"],
        tuple(raw["lag_buckets"]),
    )
    slowest = tuple(SlowCallback(d, name, at) for d, name, at in raw["slowest"])
    return LoopStats(
        enabled=raw["enabled"],
        uptime=raw["uptime"],
        iterations=raw["iterations"],
        callbacks=raw["callbacks"],
        io_events=raw["io_events"],
        timers_fired=raw["timers_fired"],
        poll_time=raw["poll_time"],
        callback_time=raw["callback_time"],
        lag=lag,
        slowest=slowest,
        ready=raw["ready"],
        timers=raw["timers"],
        transports=raw["native_transports"] + loop._transports.other_count(),
        servers=sum(1 for s in list(loop._servers) if s.is_serving()),
        fd_watchers=raw["readers"] + raw["writers"],
        children=loop._children_count(),
    )


def stats(loop: Any = None) -> LoopStats:
    """`loop.stats()` of `loop`, by default the running loop (which must be an oxloop loop)."""
    if loop is None:
        loop = asyncio.get_running_loop()
    take = getattr(loop, "_stats", None)
    if take is None:
        raise TypeError(f"{loop!r} is not an oxloop loop: it keeps no statistics")
    return snapshot(loop)
