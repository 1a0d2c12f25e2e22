//! The common paths of `sock_recv`, `sock_sendall` and `sock_connect`, native.
//!
//! `oxloop.Loop.sock_recv` / `sock_sendall` / `sock_connect` take these for a plain
//! non-blocking `socket.socket` outside debug mode and asyncio's own coroutines otherwise
//! (`sock_connect` also for a TCP address that needs resolving). They do what
//! asyncio's do, step for step: try the call at once; if the socket is not ready, watch the fd
//! with `_add_reader`, finish in the watcher's callback and stop watching when the future is
//! done (unless the watcher was replaced meanwhile). What changes is that the steps are Rust:
//! the `recv`/`send` system calls, the watcher callback and the done callback.

use std::os::fd::RawFd;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyCFunction, PyTuple};

use super::core::LoopCore;
use crate::errors::os_error;
use crate::handles::Handle;
use crate::transports::{sys, RawAddr};

/// Largest `n` read through the loop's shared buffer; larger reads take the socket's own
/// `recv`.
const MAX_NATIVE_RECV: usize = 256 * 1024;

fn fileno(sock: &Bound<'_, PyAny>) -> PyResult<RawFd> {
    sock.call_method0(intern!(sock.py(), "fileno"))?.extract()
}

/// `sock.recv(n)` for a non-blocking socket whose fd is `fd`: `Ok(None)` when it would block.
fn recv_now<'py>(
    sock: &Bound<'py, PyAny>,
    fd: RawFd,
    n: isize,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = sock.py();
    let size = match usize::try_from(n) {
        Ok(size) if size <= MAX_NATIVE_RECV => size,
        // Negative sizes get the socket module's own error; huge ones its own buffer.
        _ => {
            return match sock.call_method1(intern!(py, "recv"), (n,)) {
                Ok(v) => Ok(Some(v)),
                Err(e)
                    if e.is_instance_of::<pyo3::exceptions::PyBlockingIOError>(py)
                        || e.is_instance_of::<pyo3::exceptions::PyInterruptedError>(py) =>
                {
                    Ok(None)
                }
                Err(e) => Err(e),
            }
        }
    };
    let got = crate::transports::with_read_buffer(|buf| {
        sys::recv(fd, &mut buf[..size]).map(|k| PyBytes::new(py, &buf[..k]))
    });
    match got {
        Ok(data) => Ok(Some(data.into_any())),
        Err(e) if sys::would_block(&e) => Ok(None),
        Err(e) => Err(os_error(e)),
    }
}

/// The first step of `sock_recv`: the data if the socket had some, else a future that the
/// fd watcher completes.
#[pyfunction]
pub fn sock_recv_start<'py>(
    loop_: &Bound<'py, LoopCore>,
    sock: &Bound<'py, PyAny>,
    n: isize,
) -> PyResult<Bound<'py, PyAny>> {
    let py = loop_.py();
    let fd = fileno(sock)?;
    if let Some(data) = recv_now(sock, fd, n)? {
        return Ok(data);
    }
    // One function object for every wait, made on first use.
    static RECV_READY: PyOnceLock<Py<PyCFunction>> = PyOnceLock::new();
    let callback = RECV_READY
        .get_or_try_init(py, || {
            wrap_pyfunction!(sock_recv_ready, py).map(Bound::unbind)
        })?
        .bind(py)
        .clone();
    let extra = [sock.clone(), n.into_pyobject(py)?.into_any()];
    watch_until_done(
        loop_,
        fd,
        callback.into_any(),
        extra,
        super::io::Direction::Read,
    )
}

/// asyncio's way of waiting for a socket: a future, an fd watcher whose callback
/// (`callback(fut, *extra)`) finishes it, and a done callback that stops watching.
fn watch_until_done<'py, const N: usize>(
    loop_: &Bound<'py, LoopCore>,
    fd: RawFd,
    callback: Bound<'py, PyAny>,
    extra: [Bound<'py, PyAny>; N],
    dir: super::io::Direction,
) -> PyResult<Bound<'py, PyAny>> {
    let py = loop_.py();
    let fut = LoopCore::create_future(loop_)?;
    loop_.call_method1(intern!(py, "_ensure_fd_no_transport"), (fd,))?;
    let mut items = Vec::with_capacity(N + 1);
    items.push(fut.clone());
    items.extend(extra);
    let args = PyTuple::new(py, items)?;
    let read = matches!(dir, super::io::Direction::Read);
    let handle = super::io::add_watcher(
        loop_,
        &fd.into_pyobject(py)?.into_any(),
        callback,
        args,
        dir,
    )?;
    let done = Bound::new(
        py,
        WatchDone {
            loop_: loop_.clone().unbind(),
            fd,
            handle,
            read,
        },
    )?;
    fut.call_method1(intern!(py, "add_done_callback"), (done,))?;
    Ok(fut)
}

/// The watcher's callback: asyncio's `_sock_recv(fut, sock, n)`.
#[pyfunction]
fn sock_recv_ready(fut: &Bound<'_, PyAny>, sock: &Bound<'_, PyAny>, n: isize) -> PyResult<()> {
    let py = fut.py();
    if fut.call_method0(intern!(py, "done"))?.is_truthy()? {
        return Ok(());
    }
    match recv_now(sock, fileno(sock)?, n) {
        Ok(Some(data)) => fut
            .call_method1(intern!(py, "set_result"), (data,))
            .map(drop),
        Ok(None) => Ok(()),
        Err(e)
            if e.is_instance_of::<pyo3::exceptions::PySystemExit>(py)
                || e.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py) =>
        {
            Err(e)
        }
        Err(e) => fut
            .call_method1(intern!(py, "set_exception"), (e.into_value(py),))
            .map(drop),
    }
}

/// The first step of `sock_sendall` for `bytes`: how much the socket took at once (0 when it
/// would block). Errors are raised as `sock.send` raises them.
#[pyfunction]
pub fn sock_send_now(sock: &Bound<'_, PyAny>, data: &Bound<'_, PyBytes>) -> PyResult<usize> {
    let fd = fileno(sock)?;
    match sys::send(fd, data.as_bytes()) {
        Ok(n) => Ok(n),
        Err(e) if sys::would_block(&e) => Ok(0),
        Err(e) => Err(os_error(e)),
    }
}

/// The binary form of a numeric `(host, port[, flowinfo, scope_id])` address for a TCP socket
/// of `family`; `None` when it is anything else (a name to resolve, another family), which
/// asyncio's path handles.
fn numeric_address(family: i32, address: &Bound<'_, PyAny>) -> PyResult<Option<RawAddr>> {
    let Ok(tuple) = address.cast::<PyTuple>() else {
        return Ok(None);
    };
    let (Ok(host), Ok(port)) = (tuple.get_item(0), tuple.get_item(1)) else {
        return Ok(None);
    };
    let (Ok(host), Ok(port)) = (host.extract::<String>(), port.extract::<u16>()) else {
        return Ok(None);
    };
    let mut raw = RawAddr::empty();
    match (family, host.parse::<std::net::IpAddr>()) {
        (libc::AF_INET, Ok(std::net::IpAddr::V4(ip))) if tuple.len() == 2 => {
            // SAFETY: sockaddr_storage is large enough and aligned for any sockaddr.
            let sin = unsafe { &mut *(&mut raw.storage as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = port.to_be();
            sin.sin_addr.s_addr = u32::from(ip).to_be();
            raw.len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        }
        (libc::AF_INET6, Ok(std::net::IpAddr::V6(ip))) if tuple.len() <= 4 => {
            let flowinfo: u32 = match tuple.get_item(2) {
                Ok(v) => v.extract()?,
                Err(_) => 0,
            };
            let scope_id: u32 = match tuple.get_item(3) {
                Ok(v) => v.extract()?,
                Err(_) => 0,
            };
            // SAFETY: as above, for a sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut raw.storage as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = port.to_be();
            sin6.sin6_flowinfo = flowinfo.to_be();
            sin6.sin6_addr.s6_addr = ip.octets();
            sin6.sin6_scope_id = scope_id;
            raw.len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        }
        _ => return Ok(None),
    }
    Ok(Some(raw))
}

/// The first step of `sock_connect` for a TCP socket and a numeric address (asyncio resolves
/// nothing for one either): `None` once connected, a future the fd watcher completes while the
/// connection is in progress, or `NotImplemented` for an address asyncio's path must take.
/// An immediate failure is raised, as it would be from asyncio's future.
#[pyfunction]
pub fn sock_connect_start<'py>(
    loop_: &Bound<'py, LoopCore>,
    sock: &Bound<'py, PyAny>,
    family: i32,
    address: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = loop_.py();
    let Some(raw) = numeric_address(family, address)? else {
        return Ok(py.NotImplemented().into_bound(py));
    };
    let fd = fileno(sock)?;
    match sys::connect(fd, &raw.storage, raw.len) {
        Ok(()) => return Ok(py.None().into_bound(py)),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(os_error(e)),
    }
    static CONNECT_READY: PyOnceLock<Py<PyCFunction>> = PyOnceLock::new();
    let callback = CONNECT_READY
        .get_or_try_init(py, || {
            wrap_pyfunction!(sock_connect_ready, py).map(Bound::unbind)
        })?
        .bind(py)
        .clone();
    let extra = [sock.clone(), address.clone()];
    watch_until_done(
        loop_,
        fd,
        callback.into_any(),
        extra,
        super::io::Direction::Write,
    )
}

/// The watcher's callback: asyncio's `_sock_connect_cb(fut, sock, address)`.
#[pyfunction]
fn sock_connect_ready(
    fut: &Bound<'_, PyAny>,
    sock: &Bound<'_, PyAny>,
    address: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let py = fut.py();
    if fut.call_method0(intern!(py, "done"))?.is_truthy()? {
        return Ok(());
    }
    match sys::socket_error(fileno(sock)?) {
        Ok(0) => fut
            .call_method1(intern!(py, "set_result"), (py.None(),))
            .map(drop),
        Ok(err) => {
            let message = format!("Connect call failed {}", address.str()?);
            let exc = pyo3::exceptions::PyOSError::new_err((err, message));
            fut.call_method1(intern!(py, "set_exception"), (exc.into_value(py),))
                .map(drop)
        }
        Err(e) => fut
            .call_method1(intern!(py, "set_exception"), (os_error(e).into_value(py),))
            .map(drop),
    }
}

/// asyncio's `_sock_read_done` / `_sock_write_done` as a done callback: stop watching the fd,
/// unless the watcher was replaced (its handle then is cancelled).
#[pyclass(module = "oxloop._oxloop", frozen)]
pub struct WatchDone {
    loop_: Py<LoopCore>,
    fd: RawFd,
    handle: Py<Handle>,
    read: bool,
}

#[pymethods]
impl WatchDone {
    fn __call__(&self, py: Python<'_>, _fut: &Bound<'_, PyAny>) -> PyResult<()> {
        if self.handle.get().is_cancelled(py) {
            return Ok(());
        }
        let method = if self.read {
            intern!(py, "remove_reader")
        } else {
            intern!(py, "remove_writer")
        };
        self.loop_
            .bind(py)
            .call_method1(method, (self.fd,))
            .map(drop)
    }
}
