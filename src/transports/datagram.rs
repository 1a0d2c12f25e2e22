//! `DatagramCore`: the per-datagram work of oxloop's UDP transports.
//!
//! The transport itself (`oxloop._transports.DatagramTransport`) is asyncio's own datagram
//! transport class of the running interpreter, so buffering, flow control, closing and every
//! version-specific rule stay asyncio's. This core replaces its two hot paths: the read
//! callback (one `recvfrom` into a reused buffer, then `datagram_received` with the sender's
//! address) and the common case of `sendto` (nothing buffered, an address this transport
//! received from), which becomes one `sendto` system call with the address it already holds
//! in binary form; anything else goes on to asyncio's `sendto`.
//!
//! The address tuples of recent senders are kept: a datagram from one of them is handed the
//! same tuple again (tuples are immutable, so only `is` could tell), and a reply to it is
//! found by identity.
//!
//! The socket is watched with a level-triggered fd watcher, so one datagram is read per report
//! and no read is spent learning that the socket is empty.

use std::os::fd::RawFd;

use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use pyo3::{intern, PyTraverseError};

use super::addr::{address_to_py, RawAddr};
use super::sys;
use crate::errors::os_error;
use crate::py::GilCell;

/// Addresses remembered for `sendto`: replies go to recent senders.
const ADDRESS_CACHE: usize = 16;

/// Mutable state: the face, and the address cache.
struct DatagramState {
    /// The Python transport (asyncio's datagram transport class).
    face: Option<Py<PyAny>>,
    /// `(address object, its binary form)`, most recent last; the objects are the tuples
    /// handed to `datagram_received`.
    addresses: Vec<(Py<PyAny>, RawAddr)>,
    /// asyncio's own `sendto`, bound to the face: every case the fast path does not take.
    fallback: Option<Py<PyAny>>,
}

/// The native half of a datagram transport over an `AF_INET` / `AF_INET6` socket.
#[pyclass(module = "oxloop._oxloop", frozen)]
pub struct DatagramCore {
    fd: RawFd,
    family: libc::c_int,
    state: GilCell<DatagramState>,
}

impl DatagramCore {
    fn face(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.state
            .borrow_mut(py)
            .face
            .as_ref()
            .map(|f| f.clone_ref(py))
    }

    /// The tuple handed out before for this sender, made most recent.
    fn known_sender<'py>(&self, py: Python<'py>, addr: &RawAddr) -> Option<Bound<'py, PyAny>> {
        let mut st = self.state.borrow_mut(py);
        let at = st
            .addresses
            .iter()
            .rposition(|(_, a)| a.bytes() == addr.bytes())?;
        let last = st.addresses.len() - 1;
        st.addresses[at..].rotate_left(1);
        Some(st.addresses[last].0.bind(py).clone())
    }

    fn remember(&self, py: Python<'_>, obj: &Bound<'_, PyAny>, addr: RawAddr) {
        let dropped = {
            let mut st = self.state.borrow_mut(py);
            let dropped = if st.addresses.len() == ADDRESS_CACHE {
                Some(st.addresses.remove(0))
            } else {
                None
            };
            st.addresses.push((obj.clone().unbind(), addr));
            dropped
        };
        drop(dropped);
    }

    fn lookup(&self, py: Python<'_>, obj: &Bound<'_, PyAny>) -> Option<RawAddr> {
        let st = self.state.borrow_mut(py);
        st.addresses
            .iter()
            .rev()
            .find(|(o, _)| o.as_ptr() == obj.as_ptr())
            .map(|(_, a)| *a)
    }

    /// The fast path of `sendto`; `Ok(false)` when asyncio's must take the datagram.
    fn try_sendto(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        addr: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        let Ok(bytes) = data.cast_exact::<PyBytes>() else {
            return Ok(false);
        };
        let bytes = bytes.as_bytes();
        if bytes.is_empty() {
            return Ok(false);
        }
        let Some(raw) = self.lookup(py, addr) else {
            return Ok(false);
        };
        let Some(face) = self.face(py) else {
            return Ok(false);
        };
        let face = face.bind(py);
        // asyncio queues behind datagrams already buffered, and drops after a loss.
        if face.getattr(intern!(py, "_buffer"))?.len()? != 0
            || face.getattr(intern!(py, "_conn_lost"))?.is_truthy()?
        {
            return Ok(false);
        }
        Ok(sys::send_to(self.fd, bytes, &raw.storage, raw.len).is_ok())
    }
}

#[pymethods]
impl DatagramCore {
    #[new]
    fn new(fd: RawFd, family: libc::c_int, face: Py<PyAny>) -> Self {
        DatagramCore {
            fd,
            family,
            state: GilCell::new(DatagramState {
                face: Some(face),
                addresses: Vec::new(),
                fallback: None,
            }),
        }
    }

    /// Whether this core reads the socket itself (IPv4 and IPv6; other families keep
    /// asyncio's read path).
    #[getter]
    fn reads_natively(&self) -> bool {
        self.family == libc::AF_INET || self.family == libc::AF_INET6
    }

    /// asyncio's `_read_ready`: one datagram to the protocol, or an error to
    /// `error_received`.
    fn read_ready(&self, py: Python<'_>) -> PyResult<()> {
        let Some(face) = self.face(py) else {
            return Ok(());
        };
        let face = face.bind(py);
        if face.getattr(intern!(py, "_conn_lost"))?.is_truthy()? {
            return Ok(());
        }
        let got = super::READ_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            let mut addr = RawAddr::empty();
            sys::recv_from(self.fd, &mut buf, &mut addr.storage, &mut addr.len)
                .map(|n| (PyBytes::new(py, &buf[..n]), addr))
        });
        let protocol = face.getattr(intern!(py, "_protocol"))?;
        let (data, addr) = match got {
            Ok(v) => v,
            Err(e) if sys::would_block(&e) => return Ok(()),
            Err(e) => {
                let exc = os_error(e).into_value(py);
                return protocol
                    .call_method1(intern!(py, "error_received"), (exc,))
                    .map(drop);
            }
        };
        let address = match self.known_sender(py, &addr) {
            Some(t) => t,
            None => match address_to_py(py, &addr)? {
                Some(t) => {
                    let t = t.into_any();
                    self.remember(py, &t, addr);
                    t
                }
                None => py.None().into_bound(py),
            },
        };
        protocol
            .call_method1(intern!(py, "datagram_received"), (data, address))
            .map(drop)
    }

    /// asyncio's `sendto` (`fallback`) for an unconnected socket, which then no longer
    /// goes through Python for a reply to a known sender.
    fn use_fast_sendto(&self, py: Python<'_>, fallback: Py<PyAny>) {
        let old = self.state.borrow_mut(py).fallback.replace(fallback);
        drop(old);
    }

    /// The transport's `sendto` once `use_fast_sendto` was called: at once when nothing is
    /// buffered, the transport is intact, `data` is non-empty `bytes` and `addr` an address
    /// this transport received from; else (and when that send fails, which asyncio's path
    /// tries again and reports) asyncio's own.
    #[pyo3(signature = (data, addr=None))]
    fn sendto(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        addr: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        if let Some(addr) = addr {
            if self.try_sendto(py, data, addr)? {
                return Ok(());
            }
        }
        let fallback = self
            .state
            .borrow_mut(py)
            .fallback
            .as_ref()
            .map(|f| f.clone_ref(py));
        match fallback {
            Some(f) => f.bind(py).call1((data, addr)).map(drop),
            None => Ok(()),
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        let Some(st) = self.state.try_borrow_for_gc() else {
            return Ok(());
        };
        visit.call(&st.face)?;
        visit.call(&st.fallback)?;
        for (obj, _) in st.addresses.iter() {
            visit.call(obj)?;
        }
        Ok(())
    }

    fn __clear__(&self, py: Python<'_>) {
        let released = {
            let Some(mut st) = self.state.try_borrow_mut(py) else {
                return;
            };
            (
                st.face.take(),
                st.fallback.take(),
                std::mem::take(&mut st.addresses),
            )
        };
        drop(released);
    }
}
