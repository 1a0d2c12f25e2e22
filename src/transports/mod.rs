//! Native transports: the per-message work of asyncio's transports, in Rust.
//!
//! `stream` is the engine of socket (TCP, Unix stream) transports, `datagram` the hot paths of
//! UDP ones; `sys` wraps the system calls they make.

use std::cell::RefCell;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

mod accept;
mod addr;
mod datagram;
mod stream;
pub mod sys;
mod tls;

pub use accept::{AcceptedSocket, Acceptor};
pub use addr::{socket_names, RawAddr};
pub use datagram::DatagramCore;
pub use stream::StreamTransport;
pub use tls::{tls_read, tls_write};

/// Most bytes read at once, as asyncio's `max_size`.
const MAX_READ: usize = 256 * 1024;

thread_local! {
    /// The buffer reads land in before becoming a `bytes` object: one per loop thread, since
    /// a loop reads one socket at a time.
    static READ_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; MAX_READ]);

    /// The `bytes` object of the loop thread's last large read, which the next large read
    /// fills again if the protocol did not keep it (a stream copies the data into its own
    /// buffer): memory just used, still in the CPU's caches. One per thread, as the buffer.
    static SPARE_BYTES: RefCell<Option<Py<PyBytes>>> = const { RefCell::new(None) };
}

fn take_spare_bytes(py: Python<'_>) -> Option<Bound<'_, PyBytes>> {
    SPARE_BYTES
        .with(|spare| spare.borrow_mut().take())
        .map(|b| b.into_bound(py))
}

fn put_spare_bytes(bytes: Py<PyBytes>) {
    let old = SPARE_BYTES.with(|spare| spare.borrow_mut().replace(bytes));
    drop(old);
}

/// Runs `f` with the loop thread's read buffer (`MAX_READ` bytes).
pub(crate) fn with_read_buffer<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    READ_BUF.with(|buf| f(&mut buf.borrow_mut()))
}
