"""Unix signal handlers, with real signals: os.kill on this process, and SIGINT (Ctrl-C) sent to
child interpreters running each loop."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

WATCHED = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT, signal.SIGTERM)


@pytest.fixture(autouse=True)
def restore_signal_state():
    """Whatever a test does, later tests get the default dispositions and no wake-up fd."""
    saved = {sig: signal.getsignal(sig) for sig in WATCHED}
    yield
    for sig, handler in saved.items():
        if signal.getsignal(sig) is not handler:
            signal.signal(sig, handler)
    signal.set_wakeup_fd(-1)


def run_until_true(loop, predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        loop.call_later(0.005, loop.stop)
        loop.run_forever()
    return predicate()


# -- delivery --------------------------------------------------------------------------------


def test_signal_handler_runs_on_the_loop_with_its_args(loop):
    calls = []

    def handler(*args):
        calls.append((args, asyncio.get_running_loop() is loop, threading.get_ident()))

    loop.add_signal_handler(signal.SIGUSR1, handler, "a", 2)
    loop.call_later(0.01, os.kill, os.getpid(), signal.SIGUSR1)
    assert run_until_true(loop, lambda: calls)
    assert calls == [(("a", 2), True, threading.get_ident())]
    assert loop.remove_signal_handler(signal.SIGUSR1)


def test_signal_wakes_an_idle_loop(loop):
    """A signal sent from another thread while the loop waits with nothing scheduled."""
    calls = []

    def handler():
        calls.append("signal")
        loop.stop()

    loop.add_signal_handler(signal.SIGUSR1, handler)
    timer = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGUSR1))
    timer.start()
    fallback = loop.call_later(10, loop.stop)
    loop.run_forever()
    timer.join()
    fallback.cancel()
    assert calls == ["signal"]
    loop.remove_signal_handler(signal.SIGUSR1)


def test_signal_sent_while_loop_not_running_is_delivered_on_next_run(loop):
    calls = []
    loop.add_signal_handler(signal.SIGUSR2, calls.append, "late")
    os.kill(os.getpid(), signal.SIGUSR2)
    time.sleep(0.01)
    assert calls == []  # nothing runs until the loop does
    assert run_until_true(loop, lambda: calls)
    assert calls == ["late"]
    loop.remove_signal_handler(signal.SIGUSR2)


def test_two_different_signals(loop):
    calls = []
    loop.add_signal_handler(signal.SIGUSR1, calls.append, "usr1")
    loop.add_signal_handler(signal.SIGUSR2, calls.append, "usr2")
    os.kill(os.getpid(), signal.SIGUSR1)
    os.kill(os.getpid(), signal.SIGUSR2)
    assert run_until_true(loop, lambda: len(calls) >= 2)
    assert sorted(calls) == ["usr1", "usr2"]
    assert loop.remove_signal_handler(signal.SIGUSR1)
    assert loop.remove_signal_handler(signal.SIGUSR2)


def test_replacing_a_signal_handler(loop):
    calls = []
    loop.add_signal_handler(signal.SIGUSR1, calls.append, "old")
    loop.add_signal_handler(signal.SIGUSR1, calls.append, "new")
    os.kill(os.getpid(), signal.SIGUSR1)
    assert run_until_true(loop, lambda: calls)
    assert calls == ["new"]
    assert loop.remove_signal_handler(signal.SIGUSR1) is True
    assert loop.remove_signal_handler(signal.SIGUSR1) is False


def test_exception_in_signal_handler_goes_to_exception_handler(loop, loop_errors):
    def failing():
        raise ValueError("handler failed")

    loop.add_signal_handler(signal.SIGUSR1, failing)
    os.kill(os.getpid(), signal.SIGUSR1)
    assert run_until_true(loop, lambda: loop_errors.contexts)
    context = loop_errors.pop_one()
    assert isinstance(context["exception"], ValueError)
    assert "handle" in context
    loop.remove_signal_handler(signal.SIGUSR1)


def test_signal_handler_can_stop_a_running_coroutine(loop):
    async def main():
        stopped = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stopped.set)
        loop.call_later(0.01, os.kill, os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(stopped.wait(), 10)
        return "terminated cleanly"

    assert loop.run_until_complete(main()) == "terminated cleanly"
    loop.remove_signal_handler(signal.SIGTERM)


# -- registration API ------------------------------------------------------------------------


def test_remove_signal_handler_returns_bool_and_restores_default(loop):
    assert loop.remove_signal_handler(signal.SIGUSR1) is False
    loop.add_signal_handler(signal.SIGUSR1, print)
    assert signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, signal.SIG_IGN)
    assert loop.remove_signal_handler(signal.SIGUSR1) is True
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
    assert loop.remove_signal_handler(signal.SIGUSR1) is False


def test_removing_sigint_restores_default_int_handler(loop):
    loop.add_signal_handler(signal.SIGINT, print)
    assert loop.remove_signal_handler(signal.SIGINT) is True
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_wakeup_fd_is_set_while_handlers_exist(loop):
    loop.add_signal_handler(signal.SIGUSR1, print)
    fd = signal.set_wakeup_fd(-1)
    assert fd >= 0
    signal.set_wakeup_fd(fd)  # put it back
    loop.remove_signal_handler(signal.SIGUSR1)
    # The last handler removed also removes the wake-up fd.
    assert signal.set_wakeup_fd(-1) == -1


def test_close_removes_signal_handlers(loop):
    loop.add_signal_handler(signal.SIGUSR1, print)
    loop.add_signal_handler(signal.SIGUSR2, print)
    loop.close()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL
    assert signal.set_wakeup_fd(-1) == -1


@pytest.mark.parametrize("sig", [0, -1, 10_000, signal.NSIG + 1])
def test_invalid_signal_numbers_raise_value_error(loop, sig):
    with pytest.raises(ValueError):
        loop.add_signal_handler(sig, print)
    with pytest.raises(ValueError):
        loop.remove_signal_handler(sig)


@pytest.mark.parametrize("sig", ["SIGUSR1", 10.0, None])
def test_non_int_signals_raise_type_error(loop, sig):
    with pytest.raises(TypeError):
        loop.add_signal_handler(sig, print)
    with pytest.raises(TypeError):
        loop.remove_signal_handler(sig)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP])
def test_uncatchable_signals_raise_runtime_error(loop, sig):
    with pytest.raises(RuntimeError):
        loop.add_signal_handler(sig, print)
    assert loop.remove_signal_handler(sig) is False


def test_coroutine_callbacks_raise_type_error(loop):
    async def coro_func():
        pass

    with pytest.raises(TypeError):
        loop.add_signal_handler(signal.SIGUSR1, coro_func)
    coro = coro_func()
    try:
        with pytest.raises(TypeError):
            loop.add_signal_handler(signal.SIGUSR1, coro)
    finally:
        coro.close()
    assert loop.remove_signal_handler(signal.SIGUSR1) is False


def test_add_signal_handler_on_closed_loop_raises(loop):
    loop.close()
    with pytest.raises(RuntimeError):
        loop.add_signal_handler(signal.SIGUSR1, print)


def test_add_signal_handler_outside_the_main_thread_raises(loop):
    errors = []

    def from_thread():
        try:
            loop.add_signal_handler(signal.SIGUSR1, print)
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=from_thread)
    thread.start()
    thread.join()
    assert len(errors) == 1
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
    assert loop.remove_signal_handler(signal.SIGUSR1) is False


# -- Ctrl-C in child interpreters ------------------------------------------------------------

CHILD_PRELUDE = """
import asyncio, sys
import oxloop

LOOP = {loop_name!r}

def ready():
    print("ready", flush=True)

async def idle():
    asyncio.get_running_loop().call_soon(ready)
    await asyncio.sleep(30)
"""

CHILD_MODES = {
    "run": """
run = oxloop.run if LOOP == "oxloop" else asyncio.run
run(idle())
""",
    "run_until_complete": """
loop = oxloop.new_event_loop() if LOOP == "oxloop" else asyncio.new_event_loop()
loop.run_until_complete(idle())
""",
    "run_forever": """
loop = oxloop.new_event_loop() if LOOP == "oxloop" else asyncio.new_event_loop()
loop.call_soon(ready)
loop.run_forever()
""",
    # Never idle: a callback reschedules itself, so the loop never blocks in its poller.
    "busy": """
loop = oxloop.new_event_loop() if LOOP == "oxloop" else asyncio.new_event_loop()
def spin():
    loop.call_soon(spin)
loop.call_soon(ready)
loop.call_soon(spin)
loop.run_forever()
""",
}


def start_child(code):
    return subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_ready(proc):
    line = proc.stdout.readline()
    assert line.strip() == "ready", (line, proc.stderr.read() if proc.poll() is not None else "")
    time.sleep(0.2)  # let the loop go idle in its poller


@pytest.mark.parametrize("mode", list(CHILD_MODES))
def test_ctrl_c_interrupts_the_loop(loop_name, mode):
    code = textwrap.dedent(CHILD_PRELUDE.format(loop_name=loop_name)) + CHILD_MODES[mode]
    proc = start_child(code)
    try:
        wait_ready(proc)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=10)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "KeyboardInterrupt" in stderr, stderr
    # An uncaught KeyboardInterrupt makes the interpreter exit through SIGINT.
    assert proc.returncode == -signal.SIGINT, (proc.returncode, stderr)
    assert took < 5, f"the child took {took:.1f}s to react to SIGINT"


def test_sigint_handler_installed_on_the_loop_replaces_keyboard_interrupt(loop_name):
    code = textwrap.dedent(CHILD_PRELUDE.format(loop_name=loop_name)) + textwrap.dedent(
        """
        import signal

        async def main():
            loop = asyncio.get_running_loop()
            done = asyncio.Event()
            loop.add_signal_handler(signal.SIGINT, done.set)
            loop.call_soon(ready)
            await asyncio.wait_for(done.wait(), 30)
            print("handled SIGINT", flush=True)

        loop = oxloop.new_event_loop() if LOOP == "oxloop" else asyncio.new_event_loop()
        loop.run_until_complete(main())
        loop.close()
        """
    )
    proc = start_child(code)
    try:
        wait_ready(proc)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert stdout.strip() == "handled SIGINT"
    assert "KeyboardInterrupt" not in stderr
