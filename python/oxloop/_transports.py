"""The Python faces of oxloop's native transports.

`SocketTransport` is what stream protocols receive: an `asyncio.Transport` (through asyncio's
`_FlowControlMixin`, which asyncio's sendfile fallback and other code check for), whose
per-message work is done by the native `StreamTransport` it owns. What runs once per
connection or per error lives here and follows asyncio's `_SelectorSocketTransport` on the
running interpreter: `connection_lost` and closing the socket, the exception handler's
context, debug logging, the `Server` bookkeeping, `sendfile` support.

`ReadPipeTransport` and `WritePipeTransport` do the same for pipes and FIFOs (children's
stdio included), after asyncio's `_UnixReadPipeTransport` / `_UnixWritePipeTransport`.
`DatagramTransport` is asyncio's own class with native hot paths.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import socket
import stat
import sys
import threading
import warnings
import weakref
from asyncio import (
    base_events,
    constants,
    exceptions,
    futures,
    protocols,
    selector_events,
    sslproto,
    transports,
    trsock,
    unix_events,
)
from collections.abc import Callable, Iterable
from typing import Any

from oxloop._helpers import SERVER_TRACKS_TRANSPORTS, base_logger, unix_logger
from oxloop._oxloop import (
    AcceptedSocket,
    Acceptor,
    DatagramCore,
    StreamTransport,
    socket_names,
    tls_read,
    tls_write,
)


class TransportTable:
    """`loop._transports`: the fd -> transport table asyncio's code consults (to refuse
    `add_reader` & co. on a transport's fd) and keeps up to date.

    Native socket transports are found in the loop's own table of registered transports, so
    they cost no entry here; the others (asyncio's datagram transport) are kept in a weak
    dictionary, as asyncio keeps them all.
    """

    __slots__ = ("_native", "_others")

    def __init__(self, native: Callable[[int], Any]) -> None:
        self._native = native
        self._others: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()

    def __getitem__(self, fd: int) -> Any:
        transport = self._native(fd)
        return self._others[fd] if transport is None else transport

    def get(self, fd: int, default: Any = None) -> Any:
        try:
            return self[fd]
        except KeyError:
            return default

    def __contains__(self, fd: object) -> bool:
        return isinstance(fd, int) and self.get(fd) is not None

    def __setitem__(self, fd: int, transport: Any) -> None:
        if self._native(fd) is not transport:
            self._others[fd] = transport

    def other_count(self) -> int:
        """How many transports are kept here rather than in the loop's native table."""
        return len(self._others)

    def __delitem__(self, fd: int) -> None:
        # asyncio's sendfile takes a native transport out while the socket is lent to
        # sock_sendfile; the transport has left the loop's table then (suspend_reactor).
        self._others.pop(fd, None)


# Families whose addresses the native `socket_names` builds as the socket module does.
_NATIVE_NAMES = (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX)


def _names(sock: socket.socket) -> tuple[Any, Any]:
    """`(getsockname(), getpeername())`, each None where it fails, as asyncio records them."""
    names = []
    for call in (sock.getsockname, sock.getpeername):
        try:
            names.append(call())
        except OSError:
            names.append(None)
    return names[0], names[1]


def _set_nodelay(sock: socket.socket) -> None:
    # Small writes go out without waiting for the peer's ACK, as on asyncio's loop.
    base_events._set_nodelay(sock)  # type: ignore[attr-defined]


def _report_fatal(
    face: Any, exc: BaseException, message: str, expected: bool, logger: logging.Logger
) -> None:
    """How asyncio's transports report a failure: an expected one (a connection's OSError) in
    debug mode only, anything else to the loop's exception handler."""
    if expected:
        if face._loop.get_debug():
            logger.debug("%r: %s", face, message, exc_info=True)
    else:
        face._loop.call_exception_handler(
            {
                "message": message,
                "exception": exc,
                "transport": face,
                "protocol": face._core.get_protocol(),
            }
        )


class _NativeReadFace:
    """The reading half of a face over a native `StreamTransport`."""

    __slots__ = ()

    _core: StreamTransport
    _loop: Any

    def _logger(self) -> logging.Logger:
        # The logger the asyncio transport this face follows writes to.
        return base_logger()

    def is_reading(self) -> bool:
        return bool(self._core.is_reading())

    def pause_reading(self) -> None:
        if self._core.pause_reading() and self._loop.get_debug():
            self._logger().debug("%r pauses reading", self)

    def resume_reading(self) -> None:
        if self._core.resume_reading() and self._loop.get_debug():
            self._logger().debug("%r resumes reading", self)


class _NativeWriteFace(transports._FlowControlMixin):
    """The writing half of a face over a native `StreamTransport`: writes, flow control, and
    the attributes asyncio's code reads on `_FlowControlMixin` transports."""

    __slots__ = ("_core",)

    _core: StreamTransport
    _loop: Any

    def write(self, data: Any) -> None:
        self._core.write(data)

    def writelines(self, list_of_data: Iterable[Any]) -> None:
        self._core.writelines(list_of_data)

    def get_protocol(self) -> Any:
        return self._core.get_protocol()

    def get_write_buffer_size(self) -> int:
        return int(self._core.get_write_buffer_size())

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._core.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = 64 * 1024 if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._core.set_write_buffer_limits(high, low)

    @property
    def _protocol(self) -> Any:
        return self._core.get_protocol()

    @property
    def _protocol_paused(self) -> bool:
        return bool(self._core.protocol_paused)

    @property
    def _high_water(self) -> int:
        return int(self._core.get_write_buffer_limits()[1])

    @property
    def _low_water(self) -> int:
        return int(self._core.get_write_buffer_limits()[0])

    def _report_protocol_failure(self, message: str, exc: BaseException) -> None:
        _report_fatal(self, exc, message, False, base_logger())


class SocketTransport(_NativeReadFace, _NativeWriteFace):
    """A TCP or Unix stream socket transport.

    A connection accepted natively (`Acceptor`) comes as an `AcceptedSocket`, whose
    descriptor the native engine then owns: the `socket.socket` that asyncio's transports
    hold (`_sock`, and `get_extra_info('socket')`) is made the first time it is asked for.
    """

    __slots__ = (
        "_sock_obj",
        "_sock_fd",
        "_family",
        "_server",
        "__weakref__",
    )

    # Capabilities asyncio's start_tls() and sendfile() look for.
    _start_tls_compatible = True
    _sendfile_compatible = constants._SendfileMode.TRY_NATIVE

    def __init__(
        self,
        loop: Any,
        sock: socket.socket | AcceptedSocket,
        protocol: protocols.BaseProtocol,
        waiter: Any = None,
        extra: dict[str, Any] | None = None,
        server: Any = None,
    ) -> None:
        self._loop = loop
        self._sock_obj: socket.socket | None = None
        self._server = server
        self._family = sock.family
        fd = self._sock_fd = sock.fileno()
        buffered = isinstance(protocol, protocols.BufferedProtocol)
        if type(sock) is AcceptedSocket:
            # The acceptor made `extra` for this transport alone, and set TCP_NODELAY.
            self._extra = extra if extra is not None else {}
            self._attach_server()
            try:
                self._core = StreamTransport.adopt(loop, sock, self, protocol, buffered)
            except BaseException:
                self._detach_server()
                raise
        else:
            assert isinstance(sock, socket.socket)
            self._extra = {} if extra is None else dict(extra)
            self._extra["socket"] = trsock.TransportSocket(sock)
            if self._family in _NATIVE_NAMES:
                sockname, peername = socket_names(fd)
            else:
                sockname, peername = _names(sock)
            self._extra["sockname"] = sockname
            if "peername" not in self._extra:
                self._extra["peername"] = peername
            _set_nodelay(sock)
            self._attach_server()
            try:
                self._core = StreamTransport.open(loop, fd, self, protocol, buffered)
            except BaseException:
                self._detach_server()
                raise
            # Set once the transport is made: __del__ closes the socket only of a transport
            # that was.
            self._sock_obj = sock
        loop.call_soon(protocol.connection_made, self)
        # Reading starts only once connection_made() has run.
        self._core.schedule_start_reading()
        if waiter is not None:
            loop.call_soon(futures._set_result_unless_cancelled, waiter, None)  # type: ignore[attr-defined]

    def _attach_server(self) -> None:
        server = self._server
        if server is not None:
            if SERVER_TRACKS_TRANSPORTS:
                server._attach(self)
            else:
                server._attach()

    @property
    def _sock(self) -> socket.socket | None:
        """The transport's `socket.socket` (None once closed), made on first use for a
        connection accepted natively."""
        sock = self._sock_obj
        if sock is None and self._core.owns_fd():
            sock = socket.socket(self._family, socket.SOCK_STREAM, 0, self._core.release_fd())
            sock.setblocking(False)
            self._sock_obj = sock
            self._extra["socket"] = trsock.TransportSocket(sock)
        return sock

    def _closed(self) -> bool:
        return self._sock_obj is None and not self._core.owns_fd()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket" and name not in self._extra:
            self._sock  # noqa: B018 -- made on first use
        return self._extra.get(name, default)

    def __repr__(self) -> str:
        info = [self.__class__.__name__]
        if self._closed():
            info.append("closed")
        elif self._core.is_closing():
            info.append("closing")
        info.append(f"fd={self._sock_fd}")
        if self._loop is not None and not self._loop.is_closed():
            info.append("read=polling" if self._core.is_reading() else "read=idle")
            bufsize = self._core.get_write_buffer_size()
            info.append(f"write=<{'polling' if bufsize else 'idle'}, bufsize={bufsize}>")
        return "<{}>".format(" ".join(info))

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        sock = getattr(self, "_sock_obj", None)
        core = getattr(self, "_core", None)
        if sock is None and (core is None or not core.owns_fd()):
            return  # closed, as nearly every transport is by now
        _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
        if core is not None:
            core.detach()
        if sock is not None:
            sock.close()
            self._sock_obj = None
        self._detach_server()

    # -- the Transport API --------------------------------------------------------------

    def write_eof(self) -> None:
        self._core.write_eof()

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        self._core.close()

    def abort(self) -> None:
        self._core.force_close(None)

    def is_closing(self) -> bool:
        return self._core.is_closing()

    def set_protocol(self, protocol: protocols.BaseProtocol) -> None:
        self._core.set_protocol(protocol, isinstance(protocol, protocols.BufferedProtocol))

    # -- per connection and per error, called by the native engine ------------------------

    def _fatal_error(self, exc: BaseException, message: str = "Fatal error on transport") -> None:
        _report_fatal(self, exc, message, isinstance(exc, OSError), base_logger())
        self._force_close(exc)

    def _force_close(self, exc: BaseException | None) -> None:
        self._core.force_close(exc)

    def _log_eof(self) -> None:
        # Called in debug mode only.
        base_logger().debug("%r received EOF", self)

    def _detach_server(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            if SERVER_TRACKS_TRANSPORTS:
                server._detach(self)
            else:
                server._detach()

    # -- loop.sendfile() on this transport (asyncio's _sendfile_native) --------------------

    def _make_empty_waiter(self) -> Any:
        if self._core.has_empty_waiter():
            raise RuntimeError("Empty waiter is already set")
        waiter = self._loop.create_future()
        # What this callback wrote before sendfile goes first.
        self._core.uncork()
        # Once the output queued before sendfile is out, the socket is handed to
        # sock_sendfile(), which watches it with add_writer(): the native registration steps
        # aside until _reset_empty_waiter(). Added before anyone awaits the waiter, this
        # callback runs before they resume.
        if self._core.get_write_buffer_size() == 0:
            waiter.set_result(None)
            self._core.suspend_reactor()
        else:
            waiter.add_done_callback(lambda _: self._core.suspend_reactor())
        self._core.set_empty_waiter(waiter)
        return waiter

    def _reset_empty_waiter(self) -> None:
        self._core.set_empty_waiter(None)
        self._core.resume_reactor()


if sys.version_info >= (3, 11):
    _WRAPPED = sslproto.SSLProtocolState.WRAPPED  # type: ignore[attr-defined]

    class _ReadBuffer(threading.local):
        """The buffer TLS connections read into, one per thread: each read is copied into
        the connection's incoming BIO at once, so connections can share it."""

        def __init__(self) -> None:
            self.buffer = bytearray(sslproto.SSLProtocol.max_size)
            self.view = memoryview(self.buffer)

    _READ_BUFFER = _ReadBuffer()

    class TlsProtocol(sslproto.SSLProtocol):
        """asyncio's TLS protocol (3.11+'s state machine, the running interpreter's own
        class) whose steady-state paths, once the connection is wrapped, are native: data
        read from the socket (`buffer_updated`) and the application's writes
        (`_write_appdata`). See src/transports/tls.rs.

        Connections share their thread's read buffer instead of zeroing 256 KiB each, which
        was a tenth of a TLS handshake's cost: `max_size` reads 0 while asyncio's
        constructor makes its buffer."""

        _read_size = sslproto.SSLProtocol.max_size

        @property
        def max_size(self) -> int:  # type: ignore[override]
            return self._read_size

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._read_size = 0
            super().__init__(*args, **kwargs)
            del self._read_size
            shared = _READ_BUFFER
            self._ssl_buffer = shared.buffer
            self._ssl_buffer_view = shared.view

        def get_buffer(self, n: int) -> memoryview:
            # asyncio's hands out its whole buffer, grown to `n` if need be; the transport
            # asks for any size (-1), which the shared buffer always has.
            return self._ssl_buffer_view

        def buffer_updated(self, nbytes: int) -> None:
            if self._state is _WRAPPED:
                tls_read(self, nbytes)
            else:
                super().buffer_updated(nbytes)

        def _write_appdata(self, list_of_data: Any) -> None:
            if self._state is _WRAPPED:
                tls_write(self, list_of_data)
            else:
                super()._write_appdata(list_of_data)

        def _get_app_transport(self) -> Any:
            # asyncio's, making the transport below.
            if self._app_transport is None:
                if self._app_transport_created:
                    raise RuntimeError("Creating _SSLProtocolTransport twice")
                self._app_transport = SSLAppTransport(self._loop, self)
                self._app_transport_created = True
            return self._app_transport

    class SSLAppTransport(sslproto._SSLProtocolTransport):  # type: ignore[name-defined,misc]
        """The transport a TLS connection's application protocol gets (named, as asyncio's,
        for SSL: code tells TLS transports by their class name): asyncio's, whose
        `write()` of `bytes` takes the native path at once while the connection is wrapped
        (asyncio's goes through `_write_appdata`, a Python frame more per message)."""

        def write(self, data: Any) -> None:
            protocol = self._ssl_protocol
            if type(data) is bytes and data and protocol._state is _WRAPPED:
                tls_write(protocol, (data,))
            else:
                super().write(data)

    NATIVE_TLS_PROTOCOL: type | None = TlsProtocol

else:
    # 3.10's TLS protocol is the older design; it stays asyncio's as it is.
    TlsProtocol = sslproto.SSLProtocol
    NATIVE_TLS_PROTOCOL = None


# What asyncio's `_accept_connection` does about an accept error with these: the listening
# socket is set aside for `ACCEPT_RETRY_DELAY`, since the kernel keeps reporting it ready.
_ACCEPT_RESOURCE_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def make_acceptor(
    loop: Any,
    protocol_factory: Callable[[], protocols.BaseProtocol],
    sock: socket.socket,
    sslcontext: Any,
    server: Any,
    backlog: int,
    ssl_timeouts: dict[str, Any],
    serve_again: tuple[Any, ...],
) -> Acceptor:
    """The native accept callback for a listening socket: asyncio's `_accept_connection` and
    `_accept_connection2`, with the same error handling, and asyncio's TLS protocol when
    `sslcontext` is given (`ssl_timeouts`: its handshake and shutdown timeouts, by name).
    `serve_again`: the arguments `loop._start_serving` is called with again once accepting
    resumes after running out of descriptors."""

    def report(exc: BaseException, protocol: Any, transport: Any) -> None:
        # asyncio reports a connection that could not be set up in debug mode only.
        if loop._debug:
            context = {
                "message": "Error on transport creation for incoming connection",
                "exception": exc,
            }
            if protocol is not None:
                context["protocol"] = protocol
            if transport is not None:
                context["transport"] = transport
            loop.call_exception_handler(context)

    def handshake_done(protocol: Any, transport: Any, waiter: futures.Future[None]) -> None:
        exc = exceptions.CancelledError() if waiter.cancelled() else waiter.exception()
        if exc is not None:
            transport.close()
            report(exc, protocol, transport)

    def connect(conn: AcceptedSocket | socket.socket, extra: dict[str, Any]) -> None:
        protocol = None
        transport = None
        try:
            protocol = protocol_factory()
            if sslcontext:
                waiter = loop.create_future()
                transport = loop._make_ssl_transport(
                    conn,
                    protocol,
                    sslcontext,
                    waiter,
                    server_side=True,
                    extra=extra,
                    server=server,
                    **ssl_timeouts,
                )
                # What asyncio's task awaits: the handshake; a failed one closes the transport.
                waiter.add_done_callback(functools.partial(handshake_done, protocol, transport))
            else:
                SocketTransport(loop, conn, protocol, None, extra, server)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            # asyncio leaves the socket to the collector; here it is closed at once.
            if transport is None:
                conn.close()
            else:
                transport.close()
            report(exc, protocol, transport)

    def failed(exc: OSError) -> None:
        if exc.errno not in _ACCEPT_RESOURCE_ERRORS:
            raise exc  # The event loop will catch, log and ignore it (as asyncio's).
        loop.call_exception_handler(
            {
                "message": "socket.accept() out of system resource",
                "exception": exc,
                "socket": trsock.TransportSocket(sock),
            }
        )
        loop._remove_reader(sock.fileno())
        loop.call_later(constants.ACCEPT_RETRY_DELAY, loop._start_serving, *serve_again)

    def debug_log(conn: AcceptedSocket, addr: Any) -> socket.socket:
        # asyncio's debug line shows the socket object; make it, and the transport takes it.
        sock_obj = socket.socket(conn.family, socket.SOCK_STREAM, 0, conn.detach())
        sock_obj.setblocking(False)
        base_logger().debug("%r got a new connection from %r: %r", server, addr, sock_obj)
        return sock_obj

    return Acceptor(loop, sock.fileno(), sock.family, backlog, connect, failed, debug_log)


class DatagramTransport(
    selector_events._SelectorDatagramTransport,  # type: ignore[name-defined,misc]
    transports.DatagramTransport,
):
    """A UDP (or Unix datagram) transport: asyncio's own class of the running interpreter,
    whose read callback and common `sendto` are native (`DatagramCore`).

    It is an `asyncio.DatagramTransport` on every interpreter (asyncio's own class is one
    from 3.12 on).
    """

    def __init__(
        self,
        loop: Any,
        sock: socket.socket,
        protocol: protocols.BaseProtocol,
        address: Any = None,
        waiter: Any = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self._native = DatagramCore(sock.fileno(), sock.family, self)
        if self._native.reads_natively:
            # asyncio's constructor and resume_reading() hand this to the fd watcher.
            self._read_ready = self._native.read_ready
        super().__init__(loop, sock, protocol, address, waiter, extra)  # type: ignore[call-arg]
        # Replies to senders take the native path; a connected socket keeps asyncio's
        # (send() without an address).
        if not self._address and not self._extra.get("peername"):
            self._native.use_fast_sendto(super().sendto)
            self.sendto = self._native.sendto  # type: ignore[method-assign]


def make_pipe_transport(
    loop: Any,
    pipe: Any,
    protocol: protocols.BaseProtocol,
    waiter: Any,
    extra: dict[str, Any] | None,
    *,
    write: bool,
    child: bool,
) -> Any:
    """The transport `connect_read_pipe` / `connect_write_pipe` (`write=True`) make.

    Pipes, FIFOs and sockets get the native transports. Other files keep asyncio's classes:
    they refuse regular files with asyncio's `ValueError`, and a character device may be one
    that epoll cannot watch, which asyncio reports its own way. `child`: the pipe is a
    subprocess's stdio, which grows once bulk data flows.
    """
    mode = os.fstat(pipe.fileno()).st_mode
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        face = WritePipeTransport if write else ReadPipeTransport
        return face(loop, pipe, protocol, waiter, extra, child=child)
    if write:
        return unix_events._UnixWritePipeTransport(  # type: ignore[attr-defined]
            loop, pipe, protocol, waiter, extra
        )
    return unix_events._UnixReadPipeTransport(  # type: ignore[attr-defined]
        loop, pipe, protocol, waiter, extra
    )


# asyncio's default message for a pipe transport's fatal error.
_PIPE_FATAL = "Fatal error on pipe transport"


class _PipeFace:
    """What the two pipe faces share: asyncio's pipe transports' life cycle."""

    _core: StreamTransport
    _loop: Any
    _pipe: Any
    _fileno: int
    _extra: dict[str, Any]
    # Which end the face is; set by each face.
    _WRITE_END: bool

    def __init__(
        self,
        loop: Any,
        pipe: Any,
        protocol: protocols.BaseProtocol,
        waiter: Any = None,
        extra: dict[str, Any] | None = None,
        *,
        child: bool = False,
    ) -> None:
        self._extra = {} if extra is None else extra
        self._extra["pipe"] = pipe
        self._loop = loop
        self._pipe = pipe
        self._fileno = pipe.fileno()
        os.set_blocking(self._fileno, False)
        self._core = StreamTransport.open(
            loop,
            self._fileno,
            self,
            protocol,
            pipe="write" if self._WRITE_END else "read",
            enlarge=child,
        )
        loop.call_soon(protocol.connection_made, self)
        # Only once connection_made() has run: reading, or (a write end) watching the reader.
        self._core.schedule_start_reading()
        if waiter is not None:
            loop.call_soon(futures._set_result_unless_cancelled, waiter, None)  # type: ignore[attr-defined]

    def _describe(self, polling: bool) -> list[str]:
        info = [self.__class__.__name__]
        if self._pipe is None:
            info.append("closed")
        elif self._core.is_closing():
            info.append("closing")
        info.append(f"fd={self._fileno}")
        if self._pipe is None:
            info.append("closed")
        elif self._loop is not None and not self._loop.is_closed():
            info.append("polling" if polling else "idle")
        else:
            info.append("open")
        return info

    def set_protocol(self, protocol: protocols.BaseProtocol) -> None:
        self._core.set_protocol(protocol, False)

    def get_protocol(self) -> Any:
        return self._core.get_protocol()

    def is_closing(self) -> bool:
        return bool(self._core.is_closing())

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        pipe = getattr(self, "_pipe", None)
        if pipe is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self._core.detach()
            pipe.close()

    def _expected(self, exc: BaseException) -> bool:
        """Whether a fatal error is one asyncio logs in debug mode only."""
        raise NotImplementedError

    def _fatal_error(self, exc: BaseException, message: str = _PIPE_FATAL) -> None:
        _report_fatal(self, exc, message, self._expected(exc), unix_logger())
        self._close(exc)

    def _close(self, exc: BaseException | None = None) -> None:
        self._core.force_close(exc)

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        protocol = self._core.get_protocol()
        try:
            if protocol is not None:
                protocol.connection_lost(exc)
        finally:
            self._core.detach()
            if self._pipe is not None:
                self._pipe.close()
                self._pipe = None
            self._loop = None


class ReadPipeTransport(_PipeFace, _NativeReadFace, transports.ReadTransport):
    """The read end of a pipe, FIFO or socket (asyncio's `_UnixReadPipeTransport`)."""

    _WRITE_END = False

    def __repr__(self) -> str:
        return "<{}>".format(" ".join(self._describe(self._core.is_reading())))

    def _logger(self) -> logging.Logger:
        return unix_logger()

    def close(self) -> None:
        self._core.close()

    def _expected(self, exc: BaseException) -> bool:
        # A terminal whose other side went away reads EIO: that is its end, not a fault.
        return isinstance(exc, OSError) and exc.errno == errno.EIO

    def _closed_by_peer(self) -> None:
        # The native engine read end of file; it stopped reading.
        if self._loop.get_debug():
            unix_logger().info("%r was closed by peer", self)
        self._loop.call_soon(self._core.get_protocol().eof_received)
        self._loop.call_soon(self._call_connection_lost, None)


class WritePipeTransport(_PipeFace, _NativeWriteFace, transports.WriteTransport):
    """The write end of a pipe, FIFO or socket (asyncio's `_UnixWritePipeTransport`)."""

    _WRITE_END = True

    def __repr__(self) -> str:
        bufsize = self._core.get_write_buffer_size()
        info = self._describe(bool(bufsize))
        if self._pipe is not None and self._loop is not None and not self._loop.is_closed():
            info.append(f"bufsize={bufsize}")
        return "<{}>".format(" ".join(info))

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self._core.write_eof()

    def close(self) -> None:
        if self._pipe is not None:
            self._core.close()

    def abort(self) -> None:
        self._close(None)

    def _expected(self, exc: BaseException) -> bool:
        return isinstance(exc, OSError)

    def _read_ready(self) -> None:
        # The native engine saw the reader go away.
        if self._loop.get_debug():
            unix_logger().info("%r was closed by peer", self)
        self._close(BrokenPipeError() if self._core.get_write_buffer_size() else None)
