"""asyncio's fake-clock `test_utils.TestLoop`, on oxloop.

CPython's tests build it with `self.new_test_loop(gen)`: a loop whose clock starts at 0 and only
moves when the test moves it. After every iteration the loop sends the generator `gen` the `when`
of each timer scheduled since the last one, and advances its clock by the number the generator
yields back, so a test can both check when the loop schedules its timers and decide how much
virtual time passes. `TestLoop` is the same in CPython 3.10 to 3.13.

`OxTestLoop` is that loop as a subclass of `oxloop.Loop`, through the extension points oxloop
honours as asyncio's loop does: an overridden `time()` (timers and the poll timeout follow it)
and an overridden `_run_once()` (called for every iteration; `_run_once(0)` runs one native
iteration without blocking, as TestLoop's `TestSelector` never blocks). What TestLoop fakes of
the selector (`readers`/`writers` dicts, `assert_reader()`, `_process_events`, `_write_to_self`)
is left out: it stands in for asyncio's selector, and oxloop's own I/O is what is under test.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import oxloop


def _idle_gen() -> Generator[None, Any, None]:
    yield


class OxTestLoop(oxloop.Loop):
    """TestLoop's virtual clock on an oxloop loop (see the module docstring)."""

    def __init__(self, gen: Callable[[], Generator[Any, Any, Any]] | None = None) -> None:
        super().__init__()
        if gen is None:
            gen = _idle_gen
            self._check_on_close = False
        else:
            self._check_on_close = True
        self._gen = gen()
        next(self._gen)
        self._time: float = 0
        # What asyncio's loop adds to time() when it picks the due timers; oxloop reads no
        # such attribute (a timer is due when `when <= time()`), some tests read it.
        self._clock_resolution = 1e-9
        self._timers: list[Any] = []

    def time(self) -> float:
        return self._time

    def advance_time(self, advance: float) -> None:
        """Move test time forward."""
        if advance:
            self._time += advance

    def close(self) -> None:
        super().close()
        if self._check_on_close:
            try:
                self._gen.send(0)
            except StopIteration:
                pass
            else:  # pragma: no cover
                raise AssertionError("Time generator is not finished")

    def _run_once(self, max_wait: float | None = None) -> None:
        # One native iteration that never waits for I/O (TestLoop's selector returns at once),
        # then the generator hears of every timer scheduled meanwhile and moves the clock.
        super()._run_once(0)
        for when in self._timers:
            advance = self._gen.send(when)
            self.advance_time(advance)
        self._timers = []

    def call_at(
        self, when: Any, callback: Callable[..., object], *args: Any, context: Any = None
    ) -> Any:
        self._timers.append(when)
        return super().call_at(when, callback, *args, context=context)

    def call_later(
        self, delay: Any, callback: Callable[..., object], *args: Any, context: Any = None
    ) -> Any:
        # asyncio's call_later() goes through call_at(), which TestLoop overrides; oxloop's
        # schedules natively (at time() + delay), so record the `when` it chose.
        handle = super().call_later(delay, callback, *args, context=context)
        self._timers.append(handle.when())
        return handle
