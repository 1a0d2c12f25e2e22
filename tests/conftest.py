"""Shared fixtures: every test runs on stdlib asyncio's loop and on oxloop's.

The ``loop`` fixture is parametrized over the two loop factories (ids ``asyncio`` and
``oxloop``), so each assertion is checked against the reference implementation as well as
against oxloop. The loop's exception handler records every context it receives; a test that
expects calls takes them with ``loop_errors.consume()`` / ``loop_errors.pop_one()``, and the
teardown fails the test if any context is left over.

Warnings that usually go unnoticed (ResourceWarning, RuntimeWarning such as "coroutine was
never awaited", exceptions in __del__ or in threads) are errors for the tests of this directory.
"""

from __future__ import annotations

import asyncio
import gc
import pprint
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import oxloop
import pytest

LOOP_FACTORIES: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "oxloop": oxloop.new_event_loop,
}
LOOP_IDS = list(LOOP_FACTORIES)


class ExceptionRecorder:
    """A loop exception handler that keeps every context it is called with."""

    def __init__(self) -> None:
        self.contexts: list[dict[str, Any]] = []

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        self.contexts.append(context)

    def consume(self) -> list[dict[str, Any]]:
        """Every context recorded so far; they no longer count as unexpected."""
        taken, self.contexts = self.contexts, []
        return taken

    def pop_one(self) -> dict[str, Any]:
        """The single context recorded so far (asserts there is exactly one)."""
        taken = self.consume()
        assert len(taken) == 1, f"expected exactly one exception handler call, got {taken!r}"
        return taken[0]


@pytest.fixture(params=LOOP_IDS)
def loop_name(request: pytest.FixtureRequest) -> str:
    """Which loop implementation the test runs on: "asyncio" or "oxloop"."""
    return str(request.param)


@pytest.fixture
def loop_factory(loop_name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """The factory under test: ``asyncio.new_event_loop`` or ``oxloop.new_event_loop``."""
    return LOOP_FACTORIES[loop_name]


@pytest.fixture
def loop_errors() -> Iterator[ExceptionRecorder]:
    """Contexts passed to the ``loop`` fixture's exception handler.

    Tests whose loop is made elsewhere (``asyncio.run``, ``Runner``) install it themselves with
    ``asyncio.get_running_loop().set_exception_handler(loop_errors)``. Whatever is still
    recorded at teardown -- after the loop was closed and garbage collected -- fails the test.
    """
    recorder = ExceptionRecorder()
    yield recorder
    gc.collect()
    leftover = recorder.consume()
    if leftover:
        pytest.fail(
            "unexpected call(s) to the loop's exception handler:\n" + pprint.pformat(leftover),
            pytrace=False,
        )


def check_loop_type(loop: asyncio.AbstractEventLoop, loop_name: str) -> None:
    """Guards the matrix itself: a leaked policy must not turn one column into the other."""
    assert isinstance(loop, oxloop.Loop) == (loop_name == "oxloop"), (loop_name, loop)


def finish_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Releases what a test may have left behind (async generators, executor), then closes."""
    if not loop.is_closed() and not loop.is_running():
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()


@pytest.fixture
def loop(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
    loop_name: str,
    loop_errors: ExceptionRecorder,
) -> Iterator[asyncio.AbstractEventLoop]:
    """A fresh loop whose exception handler must not be called unless the test expects it.

    Teardown releases async generators and the default executor, closes the loop and runs
    gc.collect(); then ``loop_errors`` (torn down after this fixture) fails the test if the
    handler recorded anything the test did not consume.
    """
    new_loop = loop_factory()
    check_loop_type(new_loop, loop_name)
    new_loop.set_exception_handler(loop_errors)
    try:
        yield new_loop
    finally:
        try:
            finish_loop(new_loop)
        finally:
            asyncio.set_event_loop(None)
            del new_loop
            gc.collect()


# Leaks and errors that happen out of sight fail the test that caused them: unclosed
# resources, exceptions in __del__ or in threads, coroutines never awaited.
STRICT_WARNINGS = (
    "error::ResourceWarning",
    "error::RuntimeWarning",
    "error::pytest.PytestUnraisableExceptionWarning",
    "error::pytest.PytestUnhandledThreadExceptionWarning",
)
HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Only this suite's modules: tests/conformance has its own rules.
    for item in items:
        if Path(item.path).parent == HERE:
            for line in STRICT_WARNINGS:
                item.add_marker(pytest.mark.filterwarnings(line))


def pytest_report_header(config: pytest.Config) -> str:
    return f"oxloop loops under test: {', '.join(LOOP_IDS)} (python {sys.version.split()[0]})"


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A fresh directory whose paths fit in a Unix socket address (108 bytes), which pytest's
    tmp_path may not."""
    path = Path(tempfile.mkdtemp(dir="/tmp", prefix="oxl-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Any]:
    """A PostgreSQL server of the test run's own (see servers.py), started on first use."""
    from servers import PostgresCluster

    cluster = PostgresCluster()
    try:
        yield cluster.start()
    finally:
        cluster.stop()
