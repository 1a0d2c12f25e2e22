//! Socket addresses: the kernel's binary form, and the Python objects the `socket` module
//! makes of them (`makesockaddr`), so that addresses oxloop hands out natively equal the ones
//! asyncio's calls through `socket` give.

use std::mem::{offset_of, size_of, zeroed};

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};

use super::sys;

/// A socket address in the kernel's binary form.
#[derive(Clone, Copy)]
pub struct RawAddr {
    /// The address, as the kernel reads and writes it.
    pub storage: libc::sockaddr_storage,
    /// In: the room in `storage`; out: the length the kernel wrote.
    pub len: libc::socklen_t,
}

impl RawAddr {
    /// Room for any address, to be filled by the kernel.
    pub fn empty() -> Self {
        RawAddr {
            // SAFETY: all-zero is a valid sockaddr_storage.
            storage: unsafe { zeroed() },
            len: size_of::<libc::sockaddr_storage>() as _,
        }
    }

    /// The address's bytes, as long as the kernel said.
    pub fn bytes(&self) -> &[u8] {
        let len = (self.len as usize).min(size_of::<libc::sockaddr_storage>());
        // SAFETY: `storage` is plain old data of at least `len` bytes.
        unsafe {
            std::slice::from_raw_parts((&self.storage as *const libc::sockaddr_storage).cast(), len)
        }
    }
}

/// The object the `socket` module builds for an address: `(host, port)` for IPv4, `(host,
/// port, flowinfo, scope_id)` for IPv6, the path for a Unix socket (`str`, or `bytes` in
/// Linux's abstract namespace; `''` for an unnamed one). `None` for a family not known here
/// (the caller then takes the `socket` module's path).
pub fn address_to_py<'py>(py: Python<'py>, addr: &RawAddr) -> PyResult<Option<Bound<'py, PyAny>>> {
    match libc::c_int::from(addr.storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel filled `storage` with a sockaddr_in (family AF_INET).
            let sin = unsafe { &*(&addr.storage as *const _ as *const libc::sockaddr_in) };
            let Some(host) = sys::ipv4_text(&sin.sin_addr) else {
                return Ok(None);
            };
            let items = [
                host.into_pyobject(py)?.into_any(),
                u16::from_be(sin.sin_port).into_pyobject(py)?.into_any(),
            ];
            Ok(Some(PyTuple::new(py, items)?.into_any()))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel filled `storage` with a sockaddr_in6 (family AF_INET6).
            let sin6 = unsafe { &*(&addr.storage as *const _ as *const libc::sockaddr_in6) };
            let Some(host) = sys::ipv6_text(&sin6.sin6_addr) else {
                return Ok(None);
            };
            let items = [
                host.into_pyobject(py)?.into_any(),
                u16::from_be(sin6.sin6_port).into_pyobject(py)?.into_any(),
                u32::from_be(sin6.sin6_flowinfo)
                    .into_pyobject(py)?
                    .into_any(),
                sin6.sin6_scope_id.into_pyobject(py)?.into_any(),
            ];
            Ok(Some(PyTuple::new(py, items)?.into_any()))
        }
        libc::AF_UNIX => {
            let path_at = offset_of!(libc::sockaddr_un, sun_path);
            let bytes = addr.bytes();
            let path = bytes.get(path_at..).unwrap_or_default();
            if path.first() == Some(&0) {
                return Ok(Some(PyBytes::new(py, path).into_any()));
            }
            let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
            Ok(Some(fs_decode(py, &path[..end])?))
        }
        _ => Ok(None),
    }
}

/// `bytes` decoded as the `socket` module decodes a Unix socket's path (the file system
/// encoding, with its error handler).
fn fs_decode<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        return Ok(PyString::new(py, text).into_any());
    }
    let os = py.import(pyo3::intern!(py, "os"))?;
    os.call_method1(pyo3::intern!(py, "fsdecode"), (PyBytes::new(py, bytes),))
}

/// A connected socket's `(sockname, peername)` as `socket.getsockname()` and
/// `getpeername()` give them, each `None` where the call fails (as asyncio's transports
/// record a failure), without the `socket` module's method calls.
#[pyfunction]
pub fn socket_names(py: Python<'_>, fd: i32) -> PyResult<Bound<'_, PyTuple>> {
    let mut local = RawAddr::empty();
    let sockname = match sys::sock_name(fd, &mut local.storage, &mut local.len) {
        Ok(()) => address_to_py(py, &local)?.map(Bound::unbind),
        Err(_) => None,
    };
    let mut peer = RawAddr::empty();
    let peername = match sys::peer_name(fd, &mut peer.storage, &mut peer.len) {
        Ok(()) => address_to_py(py, &peer)?.map(Bound::unbind),
        Err(_) => None,
    };
    PyTuple::new(py, [sockname, peername])
}
