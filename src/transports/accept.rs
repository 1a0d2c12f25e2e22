//! `Acceptor`: a listening socket's accept callback, native.
//!
//! asyncio's `_accept_connection` accepts up to `backlog` connections per readiness report,
//! making a Python `socket.socket` for each (and setting it non-blocking), then creates one
//! Task per connection to run `_accept_connection2`: the protocol factory, the transport and a
//! future awaited until `connection_made` has been scheduled. This does the same work without
//! the socket object, the task, its coroutine and the future: `accept4` (non-blocking and
//! close-on-exec in one call), the peer's address from the kernel (and the local one, unless
//! it is the listener's own, as with a Unix socket or an address bound), `TCP_NODELAY`,
//! and then a handle on the ready queue that runs the Python side of the connection
//! (`connect(accepted, extra)`: the factory and the transport) in a fresh copy of the context,
//! as asyncio's task does, one iteration later, as asyncio's task step runs.
//!
//! Errors other than "nothing more to accept" go to the Python side (`failed(exc)`), which
//! handles them as asyncio does (running out of descriptors pauses accepting for a while).

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, Ordering};

use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use pyo3::{intern, PyTraverseError};

use super::addr::{address_to_py, RawAddr};
use super::sys;
use crate::errors::os_error;
use crate::event_loop::LoopCore;

/// A connection accepted natively, not yet owned by a transport: its descriptor is closed
/// when this object goes away, unless a transport (or a `socket.socket`) took it first.
#[pyclass(module = "oxloop._oxloop", frozen)]
pub struct AcceptedSocket {
    /// The descriptor, or -1 once taken or closed.
    fd: AtomicI32,
    /// `AF_INET`, `AF_INET6` or `AF_UNIX`.
    #[pyo3(get)]
    family: i32,
}

impl AcceptedSocket {
    /// Takes the descriptor; whoever takes it closes it.
    pub(crate) fn take(&self) -> Option<RawFd> {
        let fd = self.fd.swap(-1, Ordering::AcqRel);
        (fd >= 0).then_some(fd)
    }
}

impl Drop for AcceptedSocket {
    fn drop(&mut self) {
        if let Some(fd) = self.take() {
            // Nobody is left to tell of a failure to close.
            let _ = sys::close(fd);
        }
    }
}

#[pymethods]
impl AcceptedSocket {
    /// The descriptor (-1 once taken or closed), as `socket.fileno()`.
    fn fileno(&self) -> RawFd {
        self.fd.load(Ordering::Acquire)
    }

    /// Hands the descriptor over (as `socket.detach()`): the caller now owns it.
    fn detach(&self) -> RawFd {
        self.take().unwrap_or(-1)
    }

    fn close(&self) -> PyResult<()> {
        match self.take() {
            Some(fd) => sys::close(fd).map_err(os_error),
            None => Ok(()),
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "<AcceptedSocket fd={} family={}>",
            self.fileno(),
            self.family
        )
    }
}

/// The accept callback of one listening socket, registered as its fd watcher.
#[pyclass(module = "oxloop._oxloop", frozen)]
pub struct Acceptor {
    loop_: Py<LoopCore>,
    /// The listening socket's descriptor (owned by its `socket.socket`).
    fd: RawFd,
    family: i32,
    /// Most connections accepted per readiness report, as asyncio's `backlog` argument.
    backlog: usize,
    /// `connect(accepted, extra)`: the protocol factory and the transport, per connection.
    connect: Py<PyAny>,
    /// `failed(exc)`: an accept error other than "nothing to accept"; may raise.
    failed: Py<PyAny>,
    /// `accepted(conn, peername)` in debug mode: logs as asyncio does and returns what
    /// `connect` gets instead of `conn` (a `socket.socket`, for the log's sake).
    debug_log: Py<PyAny>,
    /// Every connection's local address, when it is the listener's own: a Unix socket's path,
    /// or a TCP listener bound to one address. A wildcard listener's connections each ask.
    sockname: Option<Py<PyAny>>,
}

/// The local address every connection accepted on `fd` shares, if the listener's is one.
fn shared_sockname(py: Python<'_>, fd: RawFd) -> PyResult<Option<Py<PyAny>>> {
    let mut local = RawAddr::empty();
    if sys::sock_name(fd, &mut local.storage, &mut local.len).is_err() {
        return Ok(None);
    }
    let specific = match libc::c_int::from(local.storage.ss_family) {
        libc::AF_UNIX => true,
        libc::AF_INET => {
            // SAFETY: the kernel filled `storage` with a sockaddr_in (family AF_INET).
            let sin = unsafe { &*(&local.storage as *const _ as *const libc::sockaddr_in) };
            sin.sin_addr.s_addr != libc::INADDR_ANY
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel filled `storage` with a sockaddr_in6 (family AF_INET6).
            let sin6 = unsafe { &*(&local.storage as *const _ as *const libc::sockaddr_in6) };
            sin6.sin6_addr.s6_addr != [0; 16]
        }
        _ => false,
    };
    if !specific {
        return Ok(None);
    }
    Ok(address_to_py(py, &local)?.map(Bound::unbind))
}

/// One connection `accept_one` took.
struct Accepted<'py> {
    /// The `AcceptedSocket`.
    conn: Bound<'py, PyAny>,
    peername: Bound<'py, PyAny>,
    /// The transport's `extra`: `peername` and `sockname`.
    extra: Bound<'py, PyDict>,
}

impl Acceptor {
    /// Accepts one connection: `Ok(None)` when there is none to accept now.
    fn accept_one<'py>(&self, py: Python<'py>) -> PyResult<Option<Accepted<'py>>> {
        let mut peer = RawAddr::empty();
        let fd = match sys::accept(self.fd, &mut peer.storage, &mut peer.len) {
            Ok(fd) => fd,
            Err(e)
                if sys::would_block(&e)
                    || e.raw_os_error() == Some(libc::ECONNABORTED)
                    || e.kind() == std::io::ErrorKind::Interrupted =>
            {
                return Ok(None)
            }
            Err(e) => return Err(os_error(e)),
        };
        let conn = Bound::new(
            py,
            AcceptedSocket {
                fd: AtomicI32::new(fd),
                family: self.family,
            },
        )?
        .into_any();
        if self.family != libc::AF_UNIX {
            // asyncio sets it on every TCP transport; a failure is as harmless as there.
            let _ = sys::set_nodelay(fd);
        }
        let sockname = match &self.sockname {
            Some(shared) => Some(shared.bind(py).clone()),
            None => {
                let mut local = RawAddr::empty();
                match sys::sock_name(fd, &mut local.storage, &mut local.len) {
                    Ok(()) => address_to_py(py, &local)?,
                    Err(_) => None,
                }
            }
        };
        let peername = address_to_py(py, &peer)?;
        let extra = PyDict::new(py);
        extra.set_item(intern!(py, "peername"), &peername)?;
        extra.set_item(intern!(py, "sockname"), &sockname)?;
        Ok(Some(Accepted {
            conn,
            peername: peername.unwrap_or_else(|| py.None().into_bound(py)),
            extra,
        }))
    }
}

#[pymethods]
impl Acceptor {
    #[new]
    #[pyo3(signature = (loop_, fd, family, backlog, connect, failed, debug_log))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        loop_: Py<LoopCore>,
        fd: RawFd,
        family: i32,
        backlog: usize,
        connect: Py<PyAny>,
        failed: Py<PyAny>,
        debug_log: Py<PyAny>,
    ) -> PyResult<Self> {
        Ok(Acceptor {
            loop_,
            fd,
            family,
            backlog: backlog.max(1),
            connect,
            failed,
            debug_log,
            sockname: shared_sockname(py, fd)?,
        })
    }

    /// The fd watcher's callback: accepts what is waiting, up to `backlog` connections.
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        let loop_ = self.loop_.bind(py);
        let connect = self.connect.bind(py);
        for _ in 0..self.backlog {
            let Accepted {
                conn,
                peername,
                extra,
            } = match self.accept_one(py) {
                Ok(Some(accepted)) => accepted,
                Ok(None) => return Ok(()),
                Err(e) => {
                    self.failed.bind(py).call1((e.into_value(py),))?;
                    return Ok(());
                }
            };
            let debug = loop_.get().debug(py);
            let conn = if debug {
                self.debug_log.bind(py).call1((conn, peername))?
            } else {
                conn
            };
            let args = PyTuple::new(py, [conn, extra.into_any()])?;
            // Each connection runs in a context of its own, as in asyncio's task per
            // connection: what one protocol sets is not seen by the next.
            let handle = LoopCore::new_handle(loop_, connect.clone(), args, None, debug)?;
            loop_.get().push_ready(py, handle);
        }
        Ok(())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.loop_)?;
        visit.call(&self.connect)?;
        visit.call(&self.failed)?;
        visit.call(&self.debug_log)?;
        visit.call(&self.sockname)
    }
}
