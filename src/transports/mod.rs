//! Native transports: the per-message work of asyncio's transports, in Rust.
//!
//! `stream` is the engine of socket (TCP, Unix stream) transports, `datagram` the hot paths of
//! UDP ones; `sys` wraps the system calls they make.

use std::cell::RefCell;

mod datagram;
mod stream;
pub mod sys;

pub use datagram::DatagramCore;
pub use stream::StreamTransport;

/// Most bytes read at once, as asyncio's `max_size`.
const MAX_READ: usize = 256 * 1024;

thread_local! {
    /// The buffer reads land in before becoming a `bytes` object: one per loop thread, since
    /// a loop reads one socket at a time.
    static READ_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; MAX_READ]);
}

/// Runs `f` with the loop thread's read buffer (`MAX_READ` bytes).
pub(crate) fn with_read_buffer<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    READ_BUF.with(|buf| f(&mut buf.borrow_mut()))
}
