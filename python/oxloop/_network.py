"""Networking, pipes and subprocesses on oxloop: the interpreter's own asyncio orchestration
over oxloop's reactor.

Address resolution, happy eyeballs, `Server`, the `sock_*` coroutines, sendfile and its
fallback, and the argument checks of `create_connection` / `create_server` /
`create_datagram_endpoint` / `create_unix_*` are taken from the running interpreter's
`asyncio` (`base_events`, `selector_events`, `unix_events`) and installed on `oxloop.Loop`.
They are written against a handful of loop primitives (`_add_reader`, `_remove_reader`,
`_add_writer`, `_remove_writer`, `_transports`, `_make_socket_transport`, ...) which oxloop
provides natively, so every version-specific detail (keywords, messages, exception types) is
the interpreter's own, on 3.10 as on 3.13.
"""

from __future__ import annotations

import selectors
import types
from asyncio import base_events, selector_events, unix_events
from typing import TYPE_CHECKING, Any

# Taken from asyncio's Unix selector loop (looked up through its MRO, so the most derived
# definition wins, as it would on asyncio's own loop). Names a given interpreter lacks are
# skipped: the loop then lacks them too, as asyncio's does.
_BORROWED = (
    # public API
    "create_connection",
    "create_server",
    "create_unix_connection",
    "create_unix_server",
    "create_datagram_endpoint",
    "connect_accepted_socket",
    "sendfile",
    "start_tls",
    "sock_recv",
    "sock_recv_into",
    "sock_recvfrom",
    "sock_recvfrom_into",
    "sock_sendall",
    "sock_sendto",
    "sock_connect",
    "sock_accept",
    "sock_sendfile",
    # what they are built from
    "_ensure_resolved",
    "_connect_sock",
    "_create_connection_transport",
    "_create_server_getaddrinfo",
    "_start_serving",
    "_stop_serving",
    "_accept_connection",
    "_accept_connection2",
    "_ensure_fd_no_transport",
    "_sock_read_done",
    "_sock_write_done",
    "_sock_recv",
    "_sock_recv_into",
    "_sock_recvfrom",
    "_sock_recvfrom_into",
    "_sock_sendall",
    "_sock_sendto",
    "_sock_connect",
    "_sock_connect_cb",
    "_sock_accept",
    "_check_sendfile_params",
    "_sendfile_native",
    "_sendfile_fallback",
    "_sock_sendfile_native",
    "_sock_sendfile_native_impl",
    "_sock_sendfile_fallback",
    "_sock_sendfile_update_filepos",
    "_sock_add_cancellation_callback",
    # pipes and subprocesses
    "connect_read_pipe",
    "connect_write_pipe",
    "subprocess_exec",
    "subprocess_shell",
    "_child_watcher_callback",
    "_log_subprocess",
)


def _rebind(fn: Any, owner: type) -> Any:
    """`fn` with its zero-argument `super()` cell (if any) pointing at `owner`."""
    code = fn.__code__
    if "__class__" not in code.co_freevars:
        return fn
    closure = tuple(
        types.CellType(owner) if name == "__class__" else cell
        for name, cell in zip(code.co_freevars, fn.__closure__, strict=True)
    )
    new = types.FunctionType(code, fn.__globals__, fn.__name__, fn.__defaults__, closure)
    new.__kwdefaults__ = fn.__kwdefaults__
    new.__qualname__ = fn.__qualname__
    new.__doc__ = fn.__doc__
    return new


def _mirror() -> type:
    """Classes mirroring asyncio's BaseEventLoop -> BaseSelectorEventLoop -> Unix loop chain,
    each holding the borrowed functions its asyncio counterpart defines, so that a
    `super().method()` inside one of them reaches the next one as it does in asyncio."""
    sources = (
        base_events.BaseEventLoop,
        selector_events.BaseSelectorEventLoop,
        unix_events._UnixSelectorEventLoop,
    )
    base: type = object
    for source in sources:
        cls = types.new_class(
            f"_Borrowed{source.__name__}",
            (base,),
            exec_body=lambda ns: ns.update(__module__=__name__),
        )
        for attr in _BORROWED:
            fn = vars(source).get(attr)
            if fn is not None:
                setattr(cls, attr, _rebind(fn, cls))
        base = cls
    return base


if TYPE_CHECKING:

    class NetworkMethods(base_events.BaseEventLoop):
        def _ensure_fd_no_transport(self, fd: Any) -> None: ...
        def _sock_sendall(self, fut: Any, sock: Any, view: Any, pos: list[int]) -> None: ...
        def _sock_write_done(self, fd: int, fut: Any, handle: Any = None) -> None: ...
        def _child_watcher_callback(self, pid: int, returncode: int, transp: Any) -> None: ...

else:
    NetworkMethods = _mirror()


class SelectorView:
    """Read-only `selectors`-style view of the loop's fd watchers.

    asyncio's transports consult `loop._selector.get_key(fd)` only to describe themselves in
    `repr()` ("polling" / "idle"); this answers from the native watcher table.
    """

    __slots__ = ("_loop",)

    def __init__(self, loop: Any) -> None:
        self._loop = loop

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        events = self._loop._fd_events(fileobj)
        if not events:
            raise KeyError(f"{fileobj!r} is not registered")
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        return selectors.SelectorKey(fileobj, fd, events, None)
