//! Native transports: the per-message work of asyncio's transports, in Rust.
//!
//! `stream` is the engine of socket (TCP, Unix stream) transports; `sys` wraps the system
//! calls they make.

mod stream;
pub mod sys;

pub use stream::StreamTransport;
