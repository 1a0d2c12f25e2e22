"""Point CPython's test_asyncio at oxloop, and count the loops each test builds.

All of it happens inside the worker process, before the module's tests run:

* Global: the event loop policy is `oxloop.EventLoopPolicy` and stays so after tests reset it
  with `asyncio.set_event_loop_policy(None)`; `asyncio.DefaultEventLoopPolicy` makes oxloop
  loops too, so `asyncio.new_event_loop()`, `asyncio.run()`, `asyncio.Runner` and
  `unittest.IsolatedAsyncioTestCase` all run on oxloop.
* `test_utils.TestCase.new_test_loop(gen=None)` returns `_testloop.OxTestLoop(gen)`: asyncio's
  `TestLoop` (a virtual clock driven by the test's time generator) as an `oxloop.Loop` subclass,
  so the tests that check when timers fire run on oxloop's timers and virtual time.
* Where a test mocks a global of asyncio's loop modules (`asyncio.base_events.logger`,
  `asyncio.unix_events.signal`) or a method of `BaseEventLoop`, oxloop's counterpart gets the
  same mock (MOCK_ALIASES).
* Per module, the loop factories of test classes that exercise the public API
  (`create_event_loop`, `new_loop`, a `setUp` that builds `asyncio.SelectorEventLoop()` or a
  mocked `asyncio.BaseEventLoop()`) are pointed at oxloop; tests among them that then reach for
  the loop's private attributes fail, and are listed as such. Classes that test asyncio's own
  transports or selector loop are left alone: what passes there never counts as conformance.
"""

from __future__ import annotations

import asyncio
import sys
import unittest
from asyncio import base_events, events
from collections.abc import Callable, Iterator
from typing import Any

import oxloop
from _testloop import OxTestLoop


class Counters:
    """What the running test did: loops built, virtual clock asked for (new_test_loop(gen)),
    private attributes missed."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.oxloop = 0
        self.asyncio = 0
        self.fake_clock = False
        self.missing: set[str] = set()


COUNTERS = Counters()


def _oxloop_factory() -> oxloop.Loop:
    return oxloop.new_event_loop()


def install() -> None:
    """The global patches: counting, policy, `new_test_loop`, mocks, private-attribute misses."""
    _count_constructions()
    _install_policy()
    _patch_test_utils()
    _alias_mocks()


def _count_constructions() -> None:
    ox_init = oxloop.Loop.__init__

    def counting_ox_init(self: Any, *args: Any, **kwargs: Any) -> None:
        COUNTERS.oxloop += 1
        ox_init(self, *args, **kwargs)

    oxloop.Loop.__init__ = counting_ox_init  # type: ignore[method-assign]

    aio_init = base_events.BaseEventLoop.__init__

    def counting_aio_init(self: Any, *args: Any, **kwargs: Any) -> None:
        COUNTERS.asyncio += 1
        aio_init(self, *args, **kwargs)

    base_events.BaseEventLoop.__init__ = counting_aio_init  # type: ignore[method-assign]

    def missing_attribute(self: Any, name: str) -> Any:
        # Only reached when normal lookup fails: note which private loop attribute a test
        # wanted (`loop._ready`, `loop._selector`, ...), so failures can be classified.
        if name.startswith("_") and not name.startswith("__"):
            COUNTERS.missing.add(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    oxloop.Loop.__getattr__ = missing_attribute  # type: ignore[attr-defined]


# What CPython's tests mock on asyncio's loop modules and classes, and the same thing on oxloop's
# side. While a test patches the asyncio one, the oxloop one gets the same mock: the test then
# checks what oxloop logs, which signal calls it makes, or what it hands its exception handler.
MOCK_ALIASES: dict[str, list[str]] = {
    "asyncio.base_events.logger": ["oxloop._loop.logger", "oxloop._helpers.logger"],
    "asyncio.base_events.socket": ["oxloop._loop.socket"],
    "asyncio.unix_events.signal": ["oxloop._loop.signal"],
    "asyncio.unix_events.sys": ["oxloop._loop.sys"],
    "asyncio.base_events.BaseEventLoop.call_exception_handler": [
        "oxloop._loop.Loop.call_exception_handler"
    ],
}


def _dotted(obj: Any) -> str:
    if isinstance(obj, type):
        return f"{obj.__module__}.{obj.__qualname__}"
    return str(getattr(obj, "__name__", ""))


def _resolve(dotted: str) -> tuple[Any, str] | None:
    """`pkg.mod.name` or `pkg.mod.Class.name` -> (module or class, name), if it exists."""
    owner_path, name = dotted.rsplit(".", 1)
    parts = owner_path.split(".")
    for i in range(len(parts), 0, -1):
        owner: Any = sys.modules.get(".".join(parts[:i]))
        if owner is None:
            continue
        for attr in parts[i:]:
            owner = getattr(owner, attr, None)
        if owner is not None and hasattr(owner, name):
            return owner, name
        return None
    return None


def _alias_mocks() -> None:
    from unittest import mock

    patch_cls: Any = mock._patch  # type: ignore[attr-defined]
    enter, exit_ = patch_cls.__enter__, patch_cls.__exit__

    def patched_enter(self: Any) -> Any:
        result = enter(self)
        target = self.getter()
        saved = []
        for dotted in MOCK_ALIASES.get(f"{_dotted(target)}.{self.attribute}", []):
            found = _resolve(dotted)
            if found is None:
                continue
            owner, name = found
            own = name in vars(owner)
            saved.append((owner, name, vars(owner).get(name), own))
            setattr(owner, name, getattr(target, self.attribute))
        self._oxloop_saved = saved
        return result

    def patched_exit(self: Any, *exc_info: Any) -> Any:
        for owner, name, value, own in reversed(getattr(self, "_oxloop_saved", [])):
            if own:
                setattr(owner, name, value)
            else:
                delattr(owner, name)
        self._oxloop_saved = []
        return exit_(self, *exc_info)

    patch_cls.__enter__ = patched_enter
    patch_cls.__exit__ = patched_exit


def _install_policy() -> None:
    def init_policy() -> None:
        with events._lock:  # type: ignore[attr-defined]
            if events._event_loop_policy is None:  # type: ignore[attr-defined]
                events._event_loop_policy = oxloop.EventLoopPolicy()  # type: ignore[attr-defined]

    # asyncio.set_event_loop_policy(None), which every module's tearDownModule calls, makes
    # the next get_event_loop_policy() build a fresh default policy: make that ours.
    events._init_event_loop_policy = init_policy  # type: ignore[attr-defined]
    if sys.platform != "win32":
        from asyncio import unix_events

        # Policies the tests build themselves (asyncio.DefaultEventLoopPolicy()) make oxloop
        # loops too.
        unix_events._UnixDefaultEventLoopPolicy._loop_factory = oxloop.Loop  # type: ignore
    asyncio.set_event_loop_policy(oxloop.EventLoopPolicy())


def _patch_test_utils() -> None:
    from test.test_asyncio import utils as test_utils

    # asyncio's TestLoop(gen), on oxloop: virtual time from 0, moved by the generator (without
    # one, as in TestLoop, the clock stays at 0 and no timer may be scheduled).
    def new_test_loop(self: Any, gen: Any = None) -> Any:
        if gen is not None:
            COUNTERS.fake_clock = True
        loop = OxTestLoop(gen)
        self.set_event_loop(loop)
        return loop

    test_utils.TestCase.new_test_loop = new_test_loop


# -- per-module redirection ----------------------------------------------------------------

DUPLICATE = (
    "duplicate on oxloop: the same tests as SelectEventLoopTests (which selector asyncio "
    "uses does not apply to oxloop)"
)


def _classes(module: Any) -> Iterator[type]:
    for value in vars(module).values():
        if isinstance(value, type) and issubclass(value, unittest.TestCase):
            if value.__module__ == module.__name__:
                yield value


def _skip_class(cls: type, why: str) -> None:
    cls.__unittest_skip__ = True  # type: ignore[attr-defined]
    cls.__unittest_skip_why__ = why  # type: ignore[attr-defined]


def _redirect_selector_classes(module: Any, method: str) -> None:
    """`create_event_loop`/`new_loop` of the per-selector classes: oxloop; one class runs."""
    for cls in _classes(module):
        if method not in vars(cls):
            continue
        name = cls.__name__
        if "Proactor" in name or "Kqueue" in name:
            continue  # not on Linux
        setattr(cls, method, lambda self: _oxloop_factory())
        if name.startswith(("EPoll", "Poll")):
            _skip_class(cls, DUPLICATE)


def _setup_on_oxloop(module: Any, *names: str) -> None:
    """Classes whose `setUp` is `super().setUp()`, `self.loop = <an asyncio loop>` (with mocks
    of `_selector`/`_process_events` that only make the abstract BaseEventLoop runnable) and
    `self.set_event_loop(self.loop)`: the same on an oxloop loop, without the mocks."""
    for name in names:
        cls = getattr(module, name, None)
        if cls is None:
            continue

        def setUp(self: Any, cls: type = cls) -> None:  # noqa: N802 (unittest's name)
            super(cls, self).setUp()  # type: ignore[misc]
            self.loop = _oxloop_factory()
            self.set_event_loop(self.loop)

        cls.setUp = setUp  # type: ignore[attr-defined]


def _runners_new_loop(self: Any) -> Any:
    # test_runners' BaseTest.new_loop builds a BaseEventLoop with mocked private methods and
    # replaces shutdown_asyncgens() with one that records the call. The recording is the
    # public part; the loop is oxloop.
    loop = _oxloop_factory()
    loop.shutdown_ag_run = False

    async def shutdown_asyncgens() -> None:
        loop.shutdown_ag_run = True

    loop.shutdown_asyncgens = shutdown_asyncgens
    return loop


def _patch_runners(module: Any) -> None:
    module.BaseTest.new_loop = _runners_new_loop


def _ready_callbacks(loop: Any) -> int:
    count = loop._ready_count  # oxloop's counterpart of len(loop._ready)
    return int(count() if callable(count) else count)


def _patch_tasks(module: Any) -> None:
    from test.test_asyncio import utils as test_utils

    # The gather tests' helper runs the loop "while loop._ready": until no callback is ready.
    def _run_loop(self: Any, loop: Any) -> None:
        while _ready_callbacks(loop):
            test_utils.run_briefly(loop)

    base = getattr(module, "GatherTestsBase", None)
    if base is not None and "_run_loop" in vars(base):
        base._run_loop = _run_loop


def _handles_are_oxloops(cls: type) -> None:
    """Run `cls`'s tests with `asyncio.Handle`/`asyncio.TimerHandle` being oxloop's."""
    setup = cls.setUp

    def setUp(self: Any) -> None:  # noqa: N802 (unittest's name)
        saved = asyncio.Handle, asyncio.TimerHandle
        asyncio.Handle, asyncio.TimerHandle = oxloop.Handle, oxloop.TimerHandle  # type: ignore

        def restore() -> None:
            asyncio.Handle, asyncio.TimerHandle = saved  # type: ignore[misc]

        self.addCleanup(restore)
        setup(self)

    cls.setUp = setUp  # type: ignore[method-assign]


def _patch_events(module: Any) -> None:
    _redirect_selector_classes(module, "create_event_loop")
    # HandleTests and TimerTests build handles over mock loops: point them at oxloop's handle
    # types. (They build no loop, so their passes do not count as "on oxloop".)
    for name in ("HandleTests", "TimerTests"):
        cls = getattr(module, name, None)
        if cls is not None:
            _handles_are_oxloops(cls)


def _patch_unix_events(module: Any) -> None:
    _setup_on_oxloop(module, "SelectorEventLoopSignalTests", "SelectorEventLoopUnixSocketTests")


def _patch_base_events(module: Any) -> None:
    # BaseLoopSockSendfileTests stays on asyncio's BaseSelectorEventLoop: it tests asyncio's
    # own sendfile fallback.
    _setup_on_oxloop(module, "BaseEventLoopTests", "BaseEventLoopWithSelectorTests")


def _patch_pep492(module: Any) -> None:
    _setup_on_oxloop(module, "BaseTest")


MODULE_PATCHES: dict[str, Callable[[Any], None]] = {
    "test_events": _patch_events,
    "test_sock_lowlevel": lambda m: _redirect_selector_classes(m, "create_event_loop"),
    "test_sendfile": lambda m: _redirect_selector_classes(m, "create_event_loop"),
    "test_server": lambda m: _redirect_selector_classes(m, "new_loop"),
    "test_buffered_proto": lambda m: _redirect_selector_classes(m, "new_loop"),
    "test_sslproto": lambda m: _redirect_selector_classes(m, "new_loop"),
    "test_runners": _patch_runners,
    "test_unix_events": _patch_unix_events,
    "test_base_events": _patch_base_events,
    "test_pep492": _patch_pep492,
    "test_tasks": _patch_tasks,
}


def patch_module(short_name: str, module: Any) -> None:
    patch = MODULE_PATCHES.get(short_name)
    if patch is not None:
        patch(module)
