"""`oxloop.Loop`: the native core plus asyncio's plumbing around it.

The hot paths (scheduling, timers, the ready queue, I/O readiness, running an iteration) live
in Rust, in `LoopCore`. What remains here runs once per `run_forever`, per error or per executor
job, and follows CPython's `asyncio.base_events` / `unix_events` so that behaviour, messages and
warnings match the interpreter it runs on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import functools
import signal
import socket
import sys
import threading
import traceback
import warnings
import weakref
from asyncio import (
    base_subprocess,
    coroutines,
    events,
    futures,
    selector_events,
    tasks,
    unix_events,
)
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from oxloop import _stats
from oxloop._helpers import base_logger, unix_logger
from oxloop._network import NetworkMethods, SelectorView
from oxloop._oxloop import (
    Handle,
    LoopCore,
    WorkerPool,
    sock_connect_start,
    sock_recv_start,
    sock_send_now,
)
from oxloop._process import ChildWatcher
from oxloop._stats import LoopStats
from oxloop._transports import (
    DatagramTransport,
    SocketTransport,
    TlsProtocol,
    TransportTable,
    make_acceptor,
    make_pipe_transport,
)

if TYPE_CHECKING:
    from typing_extensions import TypeVarTuple, Unpack

    _Ts = TypeVarTuple("_Ts")

_T = TypeVar("_T")

# asyncio's socket coroutines, for the cases the native fast paths leave to them.
_AsyncioSockets: Any = selector_events.BaseSelectorEventLoop

# asyncio.constants.DEBUG_STACK_DEPTH
_DEBUG_STACK_DEPTH = 10


def _run_until_complete_cb(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        exc = fut.exception()
        if isinstance(exc, (SystemExit, KeyboardInterrupt)):
            # Issue #22429: run_forever() already finished, no need to stop it.
            return
    fut.get_loop().stop()


def _set_result_unless_cancelled(fut: asyncio.Future[Any], result: Any) -> None:
    if not fut.cancelled():
        fut.set_result(result)


_live_pools: weakref.WeakSet[DefaultExecutor] = weakref.WeakSet()


def _shutdown_pools_at_exit() -> None:
    # Run before the interpreter joins its non-daemon threads, as concurrent.futures does:
    # idle workers would otherwise wait for jobs forever.
    for executor in list(_live_pools):
        executor._pool.shutdown(False)


threading._register_atexit(_shutdown_pools_at_exit)  # type: ignore[attr-defined]


class DefaultExecutor(concurrent.futures.ThreadPoolExecutor):
    """The loop's default executor.

    A `ThreadPoolExecutor` for everything that looks at it or calls `submit()`; jobs that
    `run_in_executor()` sends it run on native workers instead (see src/executor.rs), which
    skip the `concurrent.futures.Future` and `wrap_future` relay.
    """

    def __init__(self) -> None:
        super().__init__(thread_name_prefix="asyncio")
        self._pool = WorkerPool(self._max_workers)
        _live_pools.add(self)

    def _start_native_worker(self) -> None:
        name = f"{self._thread_name_prefix}_{len(self._threads)}"
        thread = threading.Thread(name=name, target=self._pool.worker_loop)
        thread.start()
        # ThreadPoolExecutor keeps its threads in a set; shutdown(wait=True) joins them all.
        cast(set[threading.Thread], self._threads).add(thread)

    def _submit_to_loop(
        self, loop: Loop, func: Callable[..., Any], args: tuple[Any, ...]
    ) -> asyncio.Future[Any]:
        future = loop.create_future()
        with self._shutdown_lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if self._pool.submit(loop, future, func, args):
                self._start_native_worker()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        for loop, future in self._pool.shutdown(cancel_futures):
            if not loop.is_closed():
                loop.call_soon_threadsafe(future.cancel)
        super().shutdown(wait=wait, cancel_futures=cancel_futures)


# Listening sockets whose connections `_start_serving` accepts natively.
_NATIVE_ACCEPT_FAMILIES = (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX)
_SSL_TIMEOUTS = ("ssl_handshake_timeout", "ssl_shutdown_timeout")
# Sockets whose `sock_connect` to a numeric address is native.
_NATIVE_CONNECT_FAMILIES = (socket.AF_INET, socket.AF_INET6)


# Methods the core calls through Python when a subclass or an instance attribute replaces
# them; setting or deleting one of these on a loop tells the core.
_OVERRIDABLE = frozenset({"time", "_run_once"})


def _sighandler_noop(signum: int, frame: Any) -> None:
    """Dummy signal handler: the wake-up fd does the work."""


class Loop(LoopCore, NetworkMethods, asyncio.AbstractEventLoop):  # type: ignore[misc]
    """An asyncio event loop whose core is written in Rust."""

    def __init__(self) -> None:
        self._default_executor: concurrent.futures.Executor | None = None
        self._executor_shutdown_called = False
        self._exception_handler: Callable[..., Any] | None = None
        self._asyncgens: weakref.WeakSet[Any] = weakref.WeakSet()
        self._asyncgens_shutdown_called = False
        self._signal_handlers: dict[int, Handle] = {}
        self._transports = TransportTable(self._native_transport)
        self._unix_server_sockets: dict[socket.socket, int] = {}
        self._child_watcher: ChildWatcher | None = None
        # Servers this loop has served, for `stats()`; a closed one drops out on its own.
        self._servers: weakref.WeakSet[Any] = weakref.WeakSet()
        _stats.register(self)
        self._coroutine_origin_tracking_enabled = False
        self._coroutine_origin_tracking_saved_depth: int | None = None
        # PYTHONASYNCIODEBUG / -X dev, read the way asyncio reads them.
        self._set_debug_flag(coroutines._is_debug_mode())  # type: ignore[attr-defined]
        self._sync_overrides()

    def _sync_overrides(self) -> None:
        """Tells the core whether `time` or `_run_once` is overridden, by the class or by an
        attribute of the instance (`mock.patch.object(loop, "time")`): the core then calls
        them, as asyncio's `_run_once` calls `self.time()`."""
        cls = type(self)
        own = self.__dict__
        self._configure_overrides(
            "time" in own or cls.time is not LoopCore.time,
            "_run_once" in own or cls._run_once is not LoopCore._run_once,
        )

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name in _OVERRIDABLE:
            self._sync_overrides()

    def __delattr__(self, name: str) -> None:
        super().__delattr__(name)
        if name in _OVERRIDABLE:
            self._sync_overrides()

    def __repr__(self) -> str:
        return (
            f"<{self.__class__.__name__} running={self.is_running()} "
            f"closed={self.is_closed()} debug={self.get_debug()}>"
        )

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if not self.is_closed():
            _warn(f"unclosed event loop {self!r}", ResourceWarning, source=self)
            if not self.is_running():
                self.close()

    # -- running and stopping -------------------------------------------------

    def _check_closed(self) -> None:
        if self.is_closed():
            raise RuntimeError("Event loop is closed")

    def _check_running(self) -> None:
        if self.is_running():
            raise RuntimeError("This event loop is already running")
        if events._get_running_loop() is not None:
            raise RuntimeError("Cannot run the event loop while another loop is running")

    def run_forever(self) -> None:
        """Run until stop() is called."""
        self._check_closed()
        self._check_running()
        self._set_coroutine_origin_tracking(self.get_debug())
        old_agen_hooks = sys.get_asyncgen_hooks()
        try:
            sys.set_asyncgen_hooks(
                firstiter=self._asyncgen_firstiter_hook,
                finalizer=self._asyncgen_finalizer_hook,
            )
            events._set_running_loop(self)
            self._run()
        finally:
            events._set_running_loop(None)
            self._set_coroutine_origin_tracking(False)
            sys.set_asyncgen_hooks(*old_agen_hooks)

    def run_until_complete(self, future: Any) -> Any:
        """Run until the Future is done, and return its result (or raise its exception)."""
        self._check_closed()
        self._check_running()
        new_task = not futures.isfuture(future)
        future = tasks.ensure_future(future, loop=self)
        if new_task:
            # An exception is raised if the future didn't complete, so there
            # is no need to log the "destroy pending task" message.
            future._log_destroy_pending = False
        future.add_done_callback(_run_until_complete_cb)
        try:
            self.run_forever()
        except BaseException:
            if new_task and future.done() and not future.cancelled():
                # The coroutine raised a BaseException. Consume the exception
                # to not log a warning, the caller doesn't have access to the
                # local task.
                future.exception()
            raise
        finally:
            future.remove_done_callback(_run_until_complete_cb)
        if not future.done():
            raise RuntimeError("Event loop stopped before Future completed.")
        return future.result()

    def close(self) -> None:
        """Close the loop: drop pending callbacks, release the poller and signal handlers."""
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        if self.get_debug():
            base_logger().debug("Close %r", self)
        if self._child_watcher is not None:
            self._child_watcher.close()
        self._close_core()
        self._executor_shutdown_called = True
        executor = self._default_executor
        if executor is not None:
            self._default_executor = None
            executor.shutdown(wait=False)
        if not sys.is_finalizing():
            for sig in list(self._signal_handlers):
                self.remove_signal_handler(sig)
        elif self._signal_handlers:
            warnings.warn(
                f"Closing the loop {self!r} on interpreter shutdown "
                f"stage, skipping signal handlers removal",
                ResourceWarning,
                source=self,
            )
            self._signal_handlers.clear()

    # -- debug ------------------------------------------------------------------

    def set_debug(self, enabled: bool) -> None:
        # asyncio takes any value and tests its truth (set_debug(1) is common).
        self._set_debug_flag(bool(enabled))
        if self.is_running():
            self.call_soon_threadsafe(self._set_coroutine_origin_tracking, enabled)

    def _set_coroutine_origin_tracking(self, enabled: bool) -> None:
        if bool(enabled) == bool(self._coroutine_origin_tracking_enabled):
            return
        if enabled:
            self._coroutine_origin_tracking_saved_depth = sys.get_coroutine_origin_tracking_depth()
            sys.set_coroutine_origin_tracking_depth(_DEBUG_STACK_DEPTH)
        else:
            sys.set_coroutine_origin_tracking_depth(
                self._coroutine_origin_tracking_saved_depth or 0
            )
        self._coroutine_origin_tracking_enabled = enabled

    # -- async generators ---------------------------------------------------

    def _asyncgen_finalizer_hook(self, agen: Any) -> None:
        self._asyncgens.discard(agen)
        if not self.is_closed():
            self.call_soon_threadsafe(self.create_task, agen.aclose())

    def _asyncgen_firstiter_hook(self, agen: Any) -> None:
        if self._asyncgens_shutdown_called:
            warnings.warn(
                f"asynchronous generator {agen!r} was scheduled after "
                f"loop.shutdown_asyncgens() call",
                ResourceWarning,
                source=self,
            )
        self._asyncgens.add(agen)

    async def shutdown_asyncgens(self) -> None:
        """Shutdown all active asynchronous generators."""
        self._asyncgens_shutdown_called = True
        if not len(self._asyncgens):
            return
        closing_agens = list(self._asyncgens)
        self._asyncgens.clear()
        results = await tasks.gather(*[ag.aclose() for ag in closing_agens], return_exceptions=True)
        for result, agen in zip(results, closing_agens, strict=True):
            if isinstance(result, Exception):
                self.call_exception_handler(
                    {
                        "message": f"an error occurred during closing of "
                        f"asynchronous generator {agen!r}",
                        "exception": result,
                        "asyncgen": agen,
                    }
                )

    # -- executors --------------------------------------------------------------

    def _check_default_executor(self) -> None:
        if self._executor_shutdown_called:
            raise RuntimeError("Executor shutdown has been called")

    def run_in_executor(
        self,
        executor: concurrent.futures.Executor | None,
        func: Callable[[Unpack[_Ts]], _T],
        *args: Unpack[_Ts],
    ) -> asyncio.Future[_T]:
        self._check_closed()
        if self.get_debug():
            from oxloop._helpers import check_callback

            check_callback(func, "run_in_executor")
        if executor is None:
            executor = self._default_executor
            # Only check when the default executor is being used
            self._check_default_executor()
            if executor is None:
                executor = DefaultExecutor()
                self._default_executor = executor
        if type(executor) is DefaultExecutor:
            return executor._submit_to_loop(self, func, args)
        return futures.wrap_future(executor.submit(func, *args), loop=self)

    def set_default_executor(self, executor: Any) -> None:
        if not isinstance(executor, concurrent.futures.ThreadPoolExecutor):
            if sys.version_info >= (3, 11):
                raise TypeError("executor must be ThreadPoolExecutor instance")
            warnings.warn(
                "Using the default executor that is not an instance of "
                "ThreadPoolExecutor is deprecated and will be prohibited "
                "in Python 3.9",
                DeprecationWarning,
                2,
            )
        self._default_executor = executor

    async def shutdown_default_executor(self, timeout: float | None = None) -> None:
        """Schedule the shutdown of the default executor and wait for its threads."""
        self._executor_shutdown_called = True
        if self._default_executor is None:
            return
        future = self.create_future()
        thread = threading.Thread(target=self._do_shutdown, args=(future,))
        thread.start()
        if sys.version_info < (3, 12):
            try:
                await future
            finally:
                thread.join()
            return
        try:
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError:
            warnings.warn(
                f"The executor did not finishing joining its threads within {timeout} seconds.",
                RuntimeWarning,
                stacklevel=2,
            )
            self._default_executor.shutdown(wait=False)
        else:
            thread.join()

    def _do_shutdown(self, future: asyncio.Future[None]) -> None:
        try:
            assert self._default_executor is not None
            self._default_executor.shutdown(wait=True)
            if not self.is_closed():
                self.call_soon_threadsafe(_set_result_unless_cancelled, future, None)
        except Exception as ex:
            if not self.is_closed() and not future.cancelled():
                self.call_soon_threadsafe(future.set_exception, ex)

    # -- name resolution ----------------------------------------------------------

    def _getaddrinfo_debug(
        self, host: Any, port: Any, family: int, type: int, proto: int, flags: int
    ) -> Any:
        msg = [f"{host}:{port!r}"]
        if family:
            msg.append(f"family={family!r}")
        if type:
            msg.append(f"type={type!r}")
        if proto:
            msg.append(f"proto={proto!r}")
        if flags:
            msg.append(f"flags={flags!r}")
        text = ", ".join(msg)
        base_logger().debug("Get address info %s", text)
        t0 = self.time()
        addrinfo = socket.getaddrinfo(host, port, family, type, proto, flags)
        dt = self.time() - t0
        text = f"Getting address info {text} took {dt * 1e3:.3f}ms: {addrinfo!r}"
        if dt >= self.slow_callback_duration:
            base_logger().info(text)
        else:
            base_logger().debug(text)
        return addrinfo

    async def getaddrinfo(
        self,
        host: Any,
        port: Any,
        *,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> Any:
        if self.get_debug():
            getaddr_func: Callable[..., Any] = self._getaddrinfo_debug
        else:
            # A numeric host and port need no lookup: the C library answers at once (no
            # resolver, no hosts file), with exactly the result the same call gives in a
            # thread, IPv6 scope ids included. Anything else goes to the executor, as in
            # asyncio (a failure here is simply asked again there).
            numeric = flags | socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
            try:
                return socket.getaddrinfo(host, port, family, type, proto, numeric)
            except (OSError, UnicodeError):
                pass
            getaddr_func = socket.getaddrinfo
        return await self.run_in_executor(
            None, getaddr_func, host, port, family, type, proto, flags
        )

    async def getnameinfo(self, sockaddr: Any, flags: int = 0) -> Any:
        return await self.run_in_executor(None, socket.getnameinfo, sockaddr, flags)

    # -- errors -------------------------------------------------------------------

    def get_exception_handler(self) -> Callable[..., Any] | None:
        return self._exception_handler

    def set_exception_handler(self, handler: Callable[..., Any] | None) -> None:
        if handler is not None and not callable(handler):
            raise TypeError(f"A callable object or None is expected, got {handler!r}")
        self._exception_handler = handler

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        """The handler used when none is set: logs the context on the asyncio logger."""
        message = context.get("message")
        if not message:
            message = "Unhandled exception in event loop"
        exception = context.get("exception")
        exc_info: Any
        if exception is not None:
            exc_info = (type(exception), exception, exception.__traceback__)
        else:
            exc_info = False
        log_lines = [message]
        for key in sorted(context):
            if key in {"message", "exception"}:
                continue
            value = context[key]
            if key == "source_traceback":
                tb = "".join(traceback.format_list(value))
                value = "Object created at (most recent call last):\n"
                value += tb.rstrip()
            elif key == "handle_traceback":
                tb = "".join(traceback.format_list(value))
                value = "Handle created at (most recent call last):\n"
                value += tb.rstrip()
            else:
                value = repr(value)
            log_lines.append(f"{key}: {value}")
        base_logger().error("\n".join(log_lines), exc_info=exc_info)

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        if self._exception_handler is None:
            try:
                self.default_exception_handler(context)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                # Second protection layer for unexpected errors
                # in the default implementation, as well as for subclassed
                # event loops with overloaded "default_exception_handler".
                base_logger().error("Exception in default exception handler", exc_info=True)
            return
        try:
            self._call_custom_handler(context)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            # Exception in the user set custom exception handler.
            try:
                # Let's try default handler.
                self.default_exception_handler(
                    {
                        "message": "Unhandled error in exception handler",
                        "exception": exc,
                        "context": context,
                    }
                )
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                # Guard 'default_exception_handler' in case it is
                # overloaded.
                base_logger().error(
                    "Exception in default exception handler "
                    "while handling an unexpected error "
                    "in custom exception handler",
                    exc_info=True,
                )

    def _call_custom_handler(self, context: dict[str, Any]) -> None:
        handler = self._exception_handler
        assert handler is not None
        if sys.version_info >= (3, 12):
            # Run the handler in the context of the object the error is about.
            ctx = None
            thing = context.get("task")
            if thing is None:
                thing = context.get("future")
            if thing is None:
                thing = context.get("handle")
            if thing is not None and hasattr(thing, "get_context"):
                ctx = thing.get_context()
            if ctx is not None and hasattr(ctx, "run"):
                ctx.run(handler, self, context)
                return
        handler(self, context)

    # -- signals --------------------------------------------------------------------

    def _check_signal(self, sig: Any) -> None:
        if not isinstance(sig, int):
            raise TypeError(f"sig must be an int, not {sig!r}")
        if sig not in signal.valid_signals():
            raise ValueError(f"invalid signal number {sig}")

    def add_signal_handler(
        self, sig: int, callback: Callable[[Unpack[_Ts]], object], *args: Unpack[_Ts]
    ) -> None:
        """Run callback(*args) on the loop when signal `sig` arrives (main thread only)."""
        if coroutines.iscoroutine(callback) or coroutines.iscoroutinefunction(callback):
            raise TypeError("coroutines cannot be used with add_signal_handler()")
        self._check_signal(sig)
        self._check_closed()
        try:
            # set_wakeup_fd() raises ValueError if this is not the
            # main thread.  By calling it early we ensure that an
            # event loop running in another thread cannot add a signal
            # handler.
            signal.set_wakeup_fd(self._signal_wakeup_fd())
        except (ValueError, OSError) as exc:
            raise RuntimeError(str(exc)) from None

        handle = Handle(callback, args, self, None)
        self._signal_handlers[sig] = handle

        try:
            # Register a dummy signal handler to ask Python to write the signal
            # number in the wakeup file descriptor.
            signal.signal(sig, _sighandler_noop)
            # Set SA_RESTART to limit EINTR occurrences.
            signal.siginterrupt(sig, False)
        except OSError as exc:
            del self._signal_handlers[sig]
            if not self._signal_handlers:
                try:
                    signal.set_wakeup_fd(-1)
                except (ValueError, OSError) as nexc:
                    unix_logger().info("set_wakeup_fd(-1) failed: %s", nexc)
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig:d} cannot be caught") from None
            raise

    def _signal_socket_replaced(self, inherited_fd: int) -> None:
        """In a forked child, the loop's signal socket is new (the old one is the parent's):
        Python's wake-up fd follows it if it still names the inherited one. 3.12+ clears the
        wake-up fd in every child; it stays cleared there, as for asyncio's loops."""
        if not self._signal_handlers:
            return
        try:
            previous = signal.set_wakeup_fd(self._signal_wakeup_fd())
            if previous != inherited_fd:
                signal.set_wakeup_fd(previous)
        except (ValueError, OSError) as exc:  # not the main thread
            unix_logger().info("set_wakeup_fd() failed after fork: %s", exc)

    def _handle_signal(self, sig: int) -> None:
        """Internal helper that is the actual signal handler."""
        handle = self._signal_handlers.get(sig)
        if handle is None:
            return  # Assume it's some race condition.
        if handle._cancelled:
            self.remove_signal_handler(sig)  # Remove it properly.
        else:
            self._add_callback(handle)

    def remove_signal_handler(self, sig: int) -> bool:
        """Remove the handler for a signal; return whether one was set."""
        self._check_signal(sig)
        try:
            del self._signal_handlers[sig]
        except KeyError:
            return False
        handler: Any = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
        try:
            signal.signal(sig, handler)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig:d} cannot be caught") from None
            raise
        if not self._signal_handlers:
            try:
                signal.set_wakeup_fd(-1)
            except (ValueError, OSError) as exc:
                unix_logger().info("set_wakeup_fd(-1) failed: %s", exc)
        return True

    # -- fd watchers and networking (see _network.py) ---------------------------

    @property
    def _debug(self) -> bool:
        return bool(self.get_debug())

    @property
    def _closed(self) -> bool:
        # asyncio's and uvloop's attribute, which libraries read to skip work on a closed loop.
        return bool(self.is_closed())

    @property
    def _selector(self) -> SelectorView | None:
        # asyncio's loop drops its selector on close(); pipe transports' reprs look for that.
        return None if self.is_closed() else SelectorView(self)

    def add_reader(
        self, fd: Any, callback: Callable[[Unpack[_Ts]], object], *args: Unpack[_Ts]
    ) -> None:
        self._ensure_fd_no_transport(fd)
        self._add_reader(fd, callback, *args)

    def remove_reader(self, fd: Any) -> bool:
        self._ensure_fd_no_transport(fd)
        return bool(self._remove_reader(fd))

    def add_writer(
        self, fd: Any, callback: Callable[[Unpack[_Ts]], object], *args: Unpack[_Ts]
    ) -> None:
        self._ensure_fd_no_transport(fd)
        self._add_writer(fd, callback, *args)

    def remove_writer(self, fd: Any) -> bool:
        self._ensure_fd_no_transport(fd)
        return bool(self._remove_writer(fd))

    async def sock_recv(self, sock: socket.socket, n: int) -> bytes:
        if type(sock) is not socket.socket or self.get_debug() or sock.gettimeout() != 0:
            # Subclasses, TLS sockets, blocking sockets, debug checks: asyncio's own path.
            return await _AsyncioSockets.sock_recv(self, sock, n)  # type: ignore[no-any-return]
        result = sock_recv_start(self, sock, n)
        if result.__class__ is bytes:
            return result
        return await result  # type: ignore[no-any-return]

    async def sock_sendall(self, sock: socket.socket, data: Any) -> None:
        if (
            type(sock) is not socket.socket
            or data.__class__ is not bytes
            or self.get_debug()
            or sock.gettimeout() != 0
        ):
            return await _AsyncioSockets.sock_sendall(self, sock, data)  # type: ignore[no-any-return]
        n = sock_send_now(sock, data)
        if n == len(data):
            return None
        # The socket's buffer is full: the rest as asyncio sends it.
        fut = self.create_future()
        fd = sock.fileno()
        self._ensure_fd_no_transport(fd)
        handle = self._add_writer(fd, self._sock_sendall, fut, sock, memoryview(data), [n])
        fut.add_done_callback(functools.partial(self._sock_write_done, fd, handle=handle))
        return await fut  # type: ignore[no-any-return]

    async def sock_connect(self, sock: socket.socket, address: Any) -> None:
        family = sock.family
        if (
            type(sock) is not socket.socket
            or family not in _NATIVE_CONNECT_FAMILIES
            or self.get_debug()
            or sock.gettimeout() != 0
        ):
            # Subclasses, TLS sockets, blocking sockets, debug checks, Unix sockets:
            # asyncio's own path.
            return await _AsyncioSockets.sock_connect(self, sock, address)  # type: ignore[no-any-return]
        started = sock_connect_start(self, sock, family, address)
        if started is None:
            return None
        if started is NotImplemented:
            # A name, a port given as text, ...: asyncio resolves and checks it.
            return await _AsyncioSockets.sock_connect(self, sock, address)  # type: ignore[no-any-return]
        return await started  # type: ignore[no-any-return]

    def _start_serving(
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        sock: socket.socket,
        sslcontext: Any = None,
        server: Any = None,
        backlog: int = 100,
        *timeouts: Any,
    ) -> None:
        if server is not None:
            self._servers.add(server)
        # TCP and Unix listeners accept natively; others keep asyncio's path.
        if sock.family not in _NATIVE_ACCEPT_FAMILIES:
            super()._start_serving(  # type: ignore[misc]
                protocol_factory, sock, sslcontext, server, backlog, *timeouts
            )
            return
        # asyncio passes the TLS timeouts on by position: the handshake's, then (3.11+) the
        # shutdown's.
        ssl_timeouts = dict(zip(_SSL_TIMEOUTS, timeouts, strict=False))
        serve_again = (protocol_factory, sock, sslcontext, server, backlog, *timeouts)
        acceptor = make_acceptor(
            self, protocol_factory, sock, sslcontext, server, backlog, ssl_timeouts, serve_again
        )
        self._add_reader(sock.fileno(), acceptor)

    def stats(self) -> LoopStats:
        """A snapshot of what the loop counts about itself (see `oxloop.LoopStats`)."""
        return _stats.snapshot(self)

    def _children_count(self) -> int:
        return 0 if self._child_watcher is None else len(self._child_watcher)

    def _make_socket_transport(
        self,
        sock: socket.socket,
        protocol: asyncio.BaseProtocol,
        waiter: asyncio.Future[None] | None = None,
        *,
        extra: dict[str, Any] | None = None,
        server: Any = None,
    ) -> SocketTransport:
        self._ensure_fd_no_transport(sock)
        return SocketTransport(self, sock, protocol, waiter, extra, server)

    def _make_datagram_transport(
        self,
        sock: socket.socket,
        protocol: asyncio.BaseProtocol,
        address: Any = None,
        waiter: asyncio.Future[None] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> DatagramTransport:
        self._ensure_fd_no_transport(sock)
        return DatagramTransport(self, sock, protocol, address, waiter, extra)

    def _make_ssl_transport(
        self,
        rawsock: socket.socket,
        protocol: asyncio.BaseProtocol,
        sslcontext: Any,
        waiter: asyncio.Future[None] | None = None,
        *,
        server_side: bool = False,
        server_hostname: str | None = None,
        extra: dict[str, Any] | None = None,
        server: Any = None,
        **timeouts: Any,
    ) -> Any:
        # asyncio's TLS protocol over the native transport; `timeouts` are the handshake and
        # (3.11+) shutdown timeouts, passed as this interpreter's SSLProtocol takes them.
        self._ensure_fd_no_transport(rawsock)
        ssl_protocol = TlsProtocol(
            self,
            protocol,
            sslcontext,
            waiter,  # type: ignore[arg-type]
            server_side,
            server_hostname,
            **timeouts,
        )
        SocketTransport(self, rawsock, ssl_protocol, extra=extra, server=server)
        return ssl_protocol._app_transport

    # -- subprocesses (see _process.py) -------------------------------------------

    def _make_read_pipe_transport(
        self, pipe: Any, protocol: Any, waiter: Any = None, extra: Any = None
    ) -> Any:
        child = isinstance(protocol, base_subprocess.ReadSubprocessPipeProto)
        return make_pipe_transport(self, pipe, protocol, waiter, extra, write=False, child=child)

    def _make_write_pipe_transport(
        self, pipe: Any, protocol: Any, waiter: Any = None, extra: Any = None
    ) -> Any:
        child = isinstance(protocol, base_subprocess.WriteSubprocessPipeProto)
        return make_pipe_transport(self, pipe, protocol, waiter, extra, write=True, child=child)

    async def _make_subprocess_transport(
        self,
        protocol: Any,
        args: Any,
        shell: bool,
        stdin: Any,
        stdout: Any,
        stderr: Any,
        bufsize: int,
        extra: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        waiter = self.create_future()
        transp = unix_events._UnixSubprocessTransport(  # type: ignore[attr-defined]
            self,
            protocol,
            args,
            shell,
            stdin,
            stdout,
            stderr,
            bufsize,
            waiter=waiter,
            extra=extra,
            **kwargs,
        )
        if self._child_watcher is None:
            self._child_watcher = ChildWatcher(self)
        self._child_watcher.add_child_handler(
            transp.get_pid(), self._child_watcher_callback, transp
        )
        try:
            await waiter
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            transp.close()
            await transp._wait()
            raise
        return transp
