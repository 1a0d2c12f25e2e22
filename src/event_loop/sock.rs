//! The common paths of `sock_recv` and `sock_sendall`, native.
//!
//! `oxloop.Loop.sock_recv` / `sock_sendall` take these for a plain non-blocking
//! `socket.socket` outside debug mode and asyncio's own coroutines otherwise. They do what
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
use crate::transports::sys;

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
    let fut = LoopCore::create_future(loop_)?;
    loop_.call_method1(intern!(py, "_ensure_fd_no_transport"), (fd,))?;
    // One function object for every wait, made on first use.
    static RECV_READY: PyOnceLock<Py<PyCFunction>> = PyOnceLock::new();
    let callback = RECV_READY
        .get_or_try_init(py, || {
            wrap_pyfunction!(sock_recv_ready, py).map(Bound::unbind)
        })?
        .bind(py)
        .clone();
    let args = PyTuple::new(
        py,
        [fut.clone(), sock.clone(), n.into_pyobject(py)?.into_any()],
    )?;
    let handle = super::io::add_watcher(
        loop_,
        &fd.into_pyobject(py)?.into_any(),
        callback.into_any(),
        args,
        super::io::Direction::Read,
    )?;
    let done = Bound::new(
        py,
        WatchDone {
            loop_: loop_.clone().unbind(),
            fd,
            handle,
            read: true,
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
