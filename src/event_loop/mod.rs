//! The event loop: `LoopCore`, the native base class of `oxloop.Loop`.
//!
//! `core` holds the state and the Python-facing methods, `run` one iteration of the loop, and
//! `io` the fd-watching API (`add_reader` and friends). The Python subclass in
//! `python/oxloop/_loop.py` adds the rarely-hot asyncio plumbing on top (exception handler,
//! executors, async generator hooks, signal handler bookkeeping).

mod core;
mod io;
mod run;
mod sock;

pub use self::core::LoopCore;
pub use self::sock::{sock_connect_start, sock_recv_start, sock_send_now, WatchDone};
