//! oxloop: a drop-in asyncio event loop for CPython, written in Rust.
//!
//! The pure-Rust core ([`timers`], [`reactor`], [`signals`], [`buffers`], [`stats`], [`ready`],
//! `transports::sys`) knows nothing of Python and is
//! tested with `cargo test`; [`handles`], [`event_loop`] and [`transports`] are the PyO3 face
//! over it, and
//! [`py`] holds the cached imports and the crate's only raw FFI. See ARCHITECTURE.md.

pub mod buffers;
pub mod errors;
pub mod event_loop;
pub mod executor;
pub mod handles;
pub mod py;
pub mod reactor;
pub mod ready;
pub mod signals;
pub mod stats;
pub mod timers;
pub mod transports;

use pyo3::prelude::*;

/// The extension module `oxloop._oxloop`.
#[pymodule(gil_used = true)]
mod _oxloop {
    #[pymodule_export]
    use crate::event_loop::{
        sock_connect_start, sock_recv_start, sock_send_now, LoopCore, WatchDone,
    };
    #[pymodule_export]
    use crate::executor::WorkerPool;
    #[pymodule_export]
    use crate::handles::{Handle, TimerHandle};
    #[pymodule_export]
    use crate::transports::{
        socket_names, tls_read, tls_write, AcceptedSocket, Acceptor, DatagramCore, StreamTransport,
    };
}
