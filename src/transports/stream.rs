//! `StreamTransport`: the native engine of oxloop's socket and pipe transports.
//!
//! The Python face (`oxloop._transports.SocketTransport`, an `asyncio.Transport`, or one of
//! the pipe transports) owns one and delegates to it; what runs per message lives here:
//! reading into the protocol, writing at once and gathering what the kernel did not take into
//! one `sendmsg` / `writev`, and flow control. What runs once per connection or per error
//! (`connection_lost`, the exception handler, logging) stays with the face, written after
//! asyncio's `_SelectorSocketTransport` or its Unix pipe transports.
//!
//! The fd is registered with the reactor once, for both directions, edge-triggered. A
//! readiness report queues the transport's own pre-built read or write handle on the loop's
//! ready queue, so the protocol is called in the same order relative to other callbacks as on
//! asyncio's loop, and no Python object is made per event. A read that fills the buffer is
//! followed by another in the next iteration; a shorter one drained the socket, and new data
//! will bring a new report.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::exceptions::{
    PyAssertionError, PyKeyboardInterrupt, PyRuntimeError, PySystemExit, PyTypeError,
};
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyMemoryView, PyTuple};
use pyo3::{intern, PyTraverseError};

use super::accept::AcceptedSocket;
use super::{sys, MAX_READ, READ_BUF};
use crate::buffers::WriteQueue;
use crate::errors::os_error;
use crate::event_loop::LoopCore;
use crate::handles::Handle;
use crate::py::GilCell;
use crate::reactor::IoEvent;

/// Writes after the connection was lost are counted; from this many on each is logged, as
/// asyncio's `LOG_THRESHOLD_FOR_CONNLOST_WRITES`.
const LOG_THRESHOLD_FOR_CONNLOST_WRITES: u32 = 5;

/// A `bytes` object queued for writing, with its data pointer taken once.
pub struct BytesChunk {
    /// Keeps the data alive; `bytes` is immutable, so the pointer stays valid.
    _obj: Py<PyBytes>,
    ptr: *const u8,
    len: usize,
}

// SAFETY: the pointer is only a view into `_obj`'s immutable buffer, which lives as long as the
// chunk; `Py<PyBytes>` itself is `Send`.
unsafe impl Send for BytesChunk {}

impl BytesChunk {
    fn new(obj: Bound<'_, PyBytes>) -> Self {
        let data = obj.as_bytes();
        BytesChunk {
            ptr: data.as_ptr(),
            len: data.len(),
            _obj: obj.unbind(),
        }
    }
}

impl AsRef<[u8]> for BytesChunk {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr`/`len` describe the buffer of the `bytes` object this chunk keeps alive,
        // and `bytes` objects never change their contents.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// What the fd is: it decides the system calls and which of asyncio's transports to follow.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A connected stream socket (asyncio's `_SelectorSocketTransport`).
    Socket,
    /// The read end of a pipe or FIFO, or a socket used as one (`_UnixReadPipeTransport`).
    PipeRead,
    /// The write end (`_UnixWritePipeTransport`). Nothing is read from it: a readiness to
    /// read means the reader went away.
    PipeWrite,
}

/// A pipe holds 64 KiB unless told otherwise; a child's pipe found this full carries bulk data.
const DEFAULT_PIPE_SIZE: usize = 64 * 1024;

/// What a child's pipe grows to once bulk data flows: a system call on each side per 1 MiB
/// instead of per 64 KiB. Unprivileged processes may ask this much
/// (`/proc/sys/fs/pipe-max-size`); it counts against the user's pipe quota, hence only then.
const BULK_PIPE_SIZE: usize = 1024 * 1024;

/// A read this large predicts another: the next one goes straight into a new `bytes` object of
/// `MAX_READ` bytes, trimmed after, rather than through the shared buffer and a copy. Smaller
/// reads keep the buffer, where copying a few KiB costs less than allocating and trimming.
const LARGE_READ: usize = 64 * 1024;

/// Mutable state of a transport.
struct StreamState {
    /// The loop; `None` once detached.
    loop_: Option<Py<LoopCore>>,
    /// Slot in the loop's source table while registered with the reactor.
    slot: Option<usize>,
    /// The Python face handed to the protocol.
    face: Option<Py<PyAny>>,
    /// The protocol; `None` once detached.
    protocol: Option<Py<PyAny>>,
    /// The protocol is an `asyncio.BufferedProtocol`: reads go into its buffer.
    buffered: bool,
    /// The protocol is oxloop's `TlsProtocol`: while it is wrapped, reads go to its BIO
    /// straight from the loop's read buffer (`tls::feed`).
    tls: bool,
    /// Pre-built handles queued on readiness; their callbacks are this object's methods.
    read_handle: Option<Py<Handle>>,
    write_handle: Option<Py<Handle>>,
    /// The read / write handle is on the ready queue.
    read_queued: bool,
    write_queued: bool,
    /// Reading began (after `connection_made`) and has not stopped for good.
    reading: bool,
    /// The read handle is queued to begin reading (`schedule_start_reading`).
    start_pending: bool,
    /// `pause_reading()` is in effect.
    paused: bool,
    /// The reactor reported the peer's end of stream (or an error): a short read did not
    /// drain the socket, its end is still to be read, and no new report will say so.
    read_closed: bool,
    /// `close()` or a fatal error: no more reading, pending output is still written on close.
    closing: bool,
    /// asyncio's `_conn_lost`: a socket's is set when `connection_lost` is scheduled, a write
    /// pipe's by a failed write; then it counts the writes attempted after that.
    conn_lost: u32,
    /// `connection_lost` is scheduled (once).
    lost_scheduled: bool,
    /// `write_eof()` was called.
    eof: bool,
    /// `pause_writing()` was called and `resume_writing()` not yet.
    protocol_paused: bool,
    high_water: usize,
    low_water: usize,
    /// Output the kernel has not taken yet.
    wbuf: WriteQueue<BytesChunk>,
    /// Everything in `wbuf` was written by the running callback, and goes out when it
    /// returns (`uncork`).
    corked: bool,
    /// `sendfile` waits on this future for the buffer to drain.
    empty_waiter: Option<Py<PyAny>>,
    /// A child's pipe not yet enlarged to `BULK_PIPE_SIZE`.
    enlarge: bool,
    /// The last read was at least `LARGE_READ` bytes.
    large_reads: bool,
}

/// The native engine of a socket or pipe transport.
#[pyclass(module = "oxloop._oxloop", frozen)]
pub struct StreamTransport {
    /// The file descriptor: owned by the face's socket or pipe object, or (`owns_fd`) by
    /// this transport, for a connection accepted natively until its face makes a
    /// `socket.socket` of it.
    fd: RawFd,
    /// This transport closes `fd` (after `connection_lost`, or when dropped).
    owns_fd: AtomicBool,
    kind: Kind,
    state: GilCell<StreamState>,
}

impl Drop for StreamTransport {
    fn drop(&mut self) {
        if self.owns_fd.swap(false, Ordering::AcqRel) {
            // A transport dropped without detach(): nobody is left to tell of a failure.
            let _ = sys::close(self.fd);
        }
    }
}

fn is_exit(err: &PyErr, py: Python<'_>) -> bool {
    err.is_instance_of::<PySystemExit>(py) || err.is_instance_of::<PyKeyboardInterrupt>(py)
}

impl StreamTransport {
    /// Closes the descriptor if this transport owns it.
    fn close_owned_fd(&self) -> PyResult<()> {
        if self.owns_fd.swap(false, Ordering::AcqRel) {
            sys::close(self.fd).map_err(os_error)?;
        }
        Ok(())
    }

    /// The file descriptor the transport is registered with.
    pub(crate) fn fd(&self) -> RawFd {
        self.fd
    }

    /// Called when the reactor reports the fd ready.
    pub(crate) fn on_ready(&self, py: Python<'_>, ev: &IoEvent) {
        if self.kind == Kind::PipeWrite && ev.readable {
            // asyncio's write pipe transport closes when its fd turns readable.
            self.state.borrow_mut(py).read_closed = true;
            self.queue_read(py);
            return;
        }
        let pending_output = {
            let mut st = self.state.borrow_mut(py);
            st.read_closed |= ev.closed;
            !st.wbuf.is_empty()
        };
        if ev.readable {
            self.queue_read(py);
        }
        if ev.writable && pending_output {
            self.queue_write(py);
        }
    }

    fn queue_read(&self, py: Python<'_>) {
        self.queue(py, true);
    }

    fn queue_write(&self, py: Python<'_>) {
        self.queue(py, false);
    }

    /// Puts the read (or write) handle on the ready queue, unless it is there already or
    /// (reads) reading is off.
    fn queue(&self, py: Python<'_>, read: bool) {
        if !read && self.state.borrow_mut(py).write_handle.is_none() {
            // Most connections never find the kernel's buffer full: their write handle is
            // made the first time one does, in the context of the write that left output.
            if let Err(e) = self.make_write_handle(py) {
                // Nothing to report it to; the output waits for close or the next write.
                e.write_unraisable(py, None);
                return;
            }
        }
        let (handle, core) = {
            let mut st = self.state.borrow_mut(py);
            let st = &mut *st;
            let (queued, handle) = if read {
                if !st.reading || st.paused {
                    return;
                }
                (&mut st.read_queued, &st.read_handle)
            } else {
                (&mut st.write_queued, &st.write_handle)
            };
            if *queued {
                return;
            }
            *queued = true;
            (
                handle.as_ref().map(|h| h.clone_ref(py)),
                st.loop_.as_ref().map(|l| l.clone_ref(py)),
            )
        };
        if let (Some(h), Some(core)) = (handle, core) {
            core.get().push_ready(py, h);
        }
    }

    fn make_write_handle(&self, py: Python<'_>) -> PyResult<()> {
        let (face, loop_) = {
            let st = self.state.borrow_mut(py);
            match (&st.face, &st.loop_) {
                (Some(f), Some(l)) => (f.clone_ref(py), l.clone_ref(py)),
                _ => return Ok(()),
            }
        };
        let callback = self.self_method(py, &face, intern!(py, "_write_ready"))?;
        let loop_ = loop_.bind(py);
        let debug = loop_.get().debug(py);
        let handle = LoopCore::new_handle(loop_, callback, PyTuple::empty(py), None, debug)?;
        let old = self.state.borrow_mut(py).write_handle.replace(handle);
        drop(old);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn create(
        py: Python<'_>,
        loop_: &Bound<'_, LoopCore>,
        fd: RawFd,
        kind: Kind,
        face: Bound<'_, PyAny>,
        protocol: Bound<'_, PyAny>,
        buffered: bool,
        enlarge: bool,
    ) -> PyResult<Py<StreamTransport>> {
        let transport = Py::new(
            py,
            StreamTransport {
                fd,
                owns_fd: AtomicBool::new(false),
                kind,
                state: GilCell::new(StreamState {
                    loop_: Some(loop_.clone().unbind()),
                    slot: None,
                    face: Some(face.unbind()),
                    tls: buffered && super::tls::is_native_tls(&protocol)?,
                    protocol: Some(protocol.unbind()),
                    buffered,
                    read_handle: None,
                    write_handle: None,
                    read_queued: false,
                    write_queued: false,
                    reading: false,
                    start_pending: false,
                    paused: false,
                    read_closed: false,
                    closing: false,
                    conn_lost: 0,
                    lost_scheduled: false,
                    eof: false,
                    protocol_paused: false,
                    high_water: 64 * 1024,
                    low_water: 16 * 1024,
                    wbuf: WriteQueue::new(),
                    corked: false,
                    empty_waiter: None,
                    enlarge,
                    large_reads: false,
                }),
            },
        )?;
        let bound = transport.bind(py);
        let debug = loop_.get().debug(py);
        let callback = bound.getattr(intern!(py, "_read_ready"))?;
        let read = LoopCore::new_handle(loop_, callback, PyTuple::empty(py), None, debug)?;
        let slot = LoopCore::register_source(loop_, fd, transport.clone_ref(py))?;
        {
            let mut st = transport.get().state.borrow_mut(py);
            st.read_handle = Some(read);
            st.slot = Some(slot);
        }
        Ok(transport)
    }

    fn read_some(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.kind {
            Kind::Socket => sys::recv(self.fd, buf),
            Kind::PipeRead | Kind::PipeWrite => sys::read(self.fd, buf),
        }
    }

    fn read_uninit(&self, buf: &mut [std::mem::MaybeUninit<u8>]) -> std::io::Result<usize> {
        match self.kind {
            Kind::Socket => sys::recv_uninit(self.fd, buf),
            Kind::PipeRead | Kind::PipeWrite => sys::read_uninit(self.fd, buf),
        }
    }

    fn write_some(&self, buf: &[u8]) -> std::io::Result<usize> {
        match self.kind {
            Kind::Socket => sys::send(self.fd, buf),
            Kind::PipeRead | Kind::PipeWrite => sys::write(self.fd, buf),
        }
    }

    fn write_gathered(&self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        match self.kind {
            Kind::Socket => sys::send_vectored(self.fd, bufs),
            Kind::PipeRead | Kind::PipeWrite => sys::write_vectored(self.fd, bufs),
        }
    }

    fn read_error(&self) -> &'static str {
        match self.kind {
            Kind::Socket => "Fatal read error on socket transport",
            Kind::PipeRead | Kind::PipeWrite => "Fatal read error on pipe transport",
        }
    }

    fn write_error(&self) -> &'static str {
        match self.kind {
            Kind::Socket => "Fatal write error on socket transport",
            Kind::PipeRead | Kind::PipeWrite => "Fatal write error on pipe transport",
        }
    }

    /// A write the kernel refused: asyncio's write pipe transport counts it as a lost
    /// connection before reporting it; its socket transport leaves that to closing.
    fn write_failed(&self, py: Python<'_>, err: PyErr) -> PyResult<()> {
        if self.kind != Kind::Socket {
            self.state.borrow_mut(py).conn_lost += 1;
        }
        self.fatal(py, err, self.write_error())
    }

    /// Grows a child's pipe the first time it is seen carrying bulk data.
    fn enlarge_pipe(&self, py: Python<'_>) {
        let mut st = self.state.borrow_mut(py);
        if st.enlarge {
            st.enlarge = false;
            // Over the user's limits the pipe keeps its size, which is no error.
            let _ = sys::set_pipe_size(self.fd, BULK_PIPE_SIZE);
        }
    }

    /// Calls a method of the face that takes no arguments (nothing once detached).
    fn call_face(&self, py: Python<'_>, name: &Bound<'_, pyo3::types::PyString>) -> PyResult<()> {
        match self.face(py) {
            Some(face) => face.bind(py).call_method0(name).map(drop),
            None => Ok(()),
        }
    }

    /// Called once `connection_made` ran.
    fn start_reading(&self, py: Python<'_>) {
        let look = {
            let mut st = self.state.borrow_mut(py);
            if st.closing || st.loop_.is_none() {
                return;
            }
            st.reading = true;
            // A write end has nothing to read; only a reader already gone is news.
            self.kind != Kind::PipeWrite || st.read_closed
        };
        if look {
            self.queue_read(py);
        }
    }

    fn loop_debug(&self, py: Python<'_>) -> bool {
        let loop_ = self
            .state
            .borrow_mut(py)
            .loop_
            .as_ref()
            .map(|l| l.clone_ref(py));
        loop_.is_some_and(|l| l.get().debug(py))
    }

    /// The Python face (nothing once detached).
    pub(crate) fn face(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.state
            .borrow_mut(py)
            .face
            .as_ref()
            .map(|f| f.clone_ref(py))
    }

    fn protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.state
            .borrow_mut(py)
            .protocol
            .as_ref()
            .map(|p| p.clone_ref(py))
    }

    /// asyncio's `_fatal_error`: reported by the face (exception handler or debug log), which
    /// then force-closes.
    fn fatal(&self, py: Python<'_>, err: PyErr, message: &str) -> PyResult<()> {
        if is_exit(&err, py) {
            return Err(err);
        }
        match self.face(py) {
            Some(face) => face
                .bind(py)
                .call_method1(intern!(py, "_fatal_error"), (err.into_value(py), message))
                .map(drop),
            None => Ok(()),
        }
    }

    /// Calls a protocol method; failures other than exits go to `fatal` with `message`.
    fn call_protocol<'py>(
        &self,
        py: Python<'py>,
        name: &Bound<'py, pyo3::types::PyString>,
        args: impl pyo3::call::PyCallArgs<'py>,
        message: &str,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let Some(protocol) = self.protocol(py) else {
            return Ok(None);
        };
        match protocol.bind(py).call_method1(name, args) {
            Ok(v) => Ok(Some(v)),
            Err(e) => self.fatal(py, e, message).map(|()| None),
        }
    }

    fn read_data(&self, py: Python<'_>) -> PyResult<()> {
        let got = if self.state.borrow_mut(py).large_reads {
            let spare = super::take_spare_bytes(py);
            crate::py::bytes_filled_by(py, spare, MAX_READ, |buf| self.read_uninit(buf))?
                .map(|data| (data.as_bytes().len(), data))
        } else {
            READ_BUF.with(|buf| {
                let mut buf = buf.borrow_mut();
                self.read_some(&mut buf)
                    .map(|n| (n, PyBytes::new(py, &buf[..n])))
            })
        };
        let (got, data) = match got {
            Ok((n, data)) => (Ok(n), Some(data)),
            Err(e) => (Err(e), None),
        };
        if let Ok(n) = got {
            self.state.borrow_mut(py).large_reads = n >= LARGE_READ;
            if n >= DEFAULT_PIPE_SIZE {
                self.enlarge_pipe(py);
            }
        }
        let (Some(n), Some(data)) = (self.read_outcome(py, got, MAX_READ)?, data) else {
            return Ok(());
        };
        let keep = (n >= LARGE_READ).then(|| data.clone().unbind());
        self.call_protocol(
            py,
            intern!(py, "data_received"),
            (data,),
            "Fatal error: protocol.data_received() call failed.",
        )?;
        if let Some(keep) = keep {
            super::put_spare_bytes(keep);
        }
        Ok(())
    }

    /// What a read into a buffer of `full` bytes does with the system call's outcome:
    /// `Ok(Some(n))` when `n` bytes came, for the caller to pass on; `Ok(None)` when it is
    /// handled here (nothing there, an error reported, end of stream).
    fn read_outcome(
        &self,
        py: Python<'_>,
        got: std::io::Result<usize>,
        full: usize,
    ) -> PyResult<Option<usize>> {
        let n = match got {
            Ok(n) => n,
            Err(e) if sys::would_block(&e) => return Ok(None),
            Err(e) => {
                return self
                    .fatal(py, os_error(e), self.read_error())
                    .map(|()| None)
            }
        };
        if n == 0 {
            return self.read_eof(py).map(|()| None);
        }
        if n == full || self.state.borrow_mut(py).read_closed {
            // The socket may hold more (or its end): read again next iteration, as a
            // level-triggered poller would report it again.
            self.queue_read(py);
        }
        Ok(Some(n))
    }

    /// A wrapped `TlsProtocol`'s read: through the loop's read buffer to its BIO.
    fn read_tls(&self, py: Python<'_>, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        let (got, data) = READ_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            match self.read_some(&mut buf) {
                Ok(n) => (Ok(n), Some(PyBytes::new(py, &buf[..n]))),
                Err(e) => (Err(e), None),
            }
        });
        let (Some(_), Some(data)) = (self.read_outcome(py, got, MAX_READ)?, data) else {
            return Ok(());
        };
        match super::tls::feed(protocol, data.as_any()) {
            Ok(()) => Ok(()),
            Err(e) => self.fatal(py, e, "Fatal error: protocol.buffer_updated() call failed."),
        }
    }

    fn read_into_buffer(&self, py: Python<'_>) -> PyResult<()> {
        if self.state.borrow_mut(py).tls {
            if let Some(protocol) = self.protocol(py) {
                let protocol = protocol.into_bound(py);
                if super::tls::is_wrapped(&protocol)? {
                    return self.read_tls(py, &protocol);
                }
            }
        }
        let Some(buf) = self.call_protocol(
            py,
            intern!(py, "get_buffer"),
            (-1,),
            "Fatal error: protocol.get_buffer() call failed.",
        )?
        else {
            return Ok(());
        };
        // The common case (a bytearray or a memoryview of one, as asyncio's TLS protocol
        // hands out) through the buffer protocol alone; anything else, and every error, the
        // way asyncio checks it.
        let direct = pyo3::buffer::PyBuffer::<u8>::get(&buf)
            .ok()
            .filter(|b| !b.readonly() && b.is_c_contiguous() && b.len_bytes() > 0);
        let (got, len) = if let Some(export) = direct {
            let len = export.len_bytes();
            // SAFETY: `export` holds the protocol's buffer exported as writable, C-contiguous
            // memory of `len` bytes until it is dropped, after the read.
            let slice =
                unsafe { std::slice::from_raw_parts_mut(export.buf_ptr().cast::<u8>(), len) };
            (self.read_some(slice), len)
        } else {
            let view =
                match PyMemoryView::from(&buf).and_then(|v| writable_bytes(&v).map(|n| (v, n))) {
                    Ok(v) => v,
                    Err(e) => {
                        return self.fatal(py, e, "Fatal error: protocol.get_buffer() call failed.")
                    }
                };
            let (view, (ptr, len)) = view;
            // SAFETY: `view` exports the protocol's buffer as writable, C-contiguous memory of
            // `len` bytes and stays alive (holding the export) until after the read.
            let slice = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
            let got = self.read_some(slice);
            let _ = view.call_method0(intern!(py, "release"));
            (got, len)
        };
        let Some(n) = self.read_outcome(py, got, len)? else {
            return Ok(());
        };
        self.call_protocol(
            py,
            intern!(py, "buffer_updated"),
            (n,),
            "Fatal error: protocol.buffer_updated() call failed.",
        )
        .map(drop)
    }

    /// asyncio's `_read_ready__on_eof`; for a pipe, its read transport's end of file.
    fn read_eof(&self, py: Python<'_>) -> PyResult<()> {
        if self.kind != Kind::Socket {
            {
                let mut st = self.state.borrow_mut(py);
                st.closing = true;
                st.reading = false;
            }
            return self.call_face(py, intern!(py, "_closed_by_peer"));
        }
        if self.loop_debug(py) {
            self.call_face(py, intern!(py, "_log_eof"))?;
        }
        let Some(keep_open) = self.call_protocol(
            py,
            intern!(py, "eof_received"),
            (),
            "Fatal error: protocol.eof_received() call failed.",
        )?
        else {
            return Ok(());
        };
        if keep_open.is_truthy()? {
            // The protocol may still write; nothing more can be read.
            self.state.borrow_mut(py).reading = false;
            Ok(())
        } else {
            self.do_close(py)
        }
    }

    /// Writes what is queued; the kernel may take part of it.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let sent = {
            let st = self.state.borrow_mut(py);
            if st.conn_lost > 0 || st.wbuf.is_empty() {
                return Ok(());
            }
            match st.wbuf.single() {
                Some(bytes) => self.write_some(bytes).map(|n| (n, bytes.len())),
                None => {
                    let slices = st.wbuf.slices();
                    let offered: usize = slices.iter().map(|s| s.len()).sum();
                    self.write_gathered(&slices).map(|n| (n, offered))
                }
            }
        };
        let (n, offered) = match sent {
            Ok(v) => v,
            Err(e) if sys::would_block(&e) => return Ok(()),
            Err(e) => {
                let (chunks, waiter) = {
                    let mut st = self.state.borrow_mut(py);
                    (
                        st.wbuf.clear(),
                        st.empty_waiter.as_ref().map(|w| w.clone_ref(py)),
                    )
                };
                drop(chunks);
                let err = os_error(e);
                let exc = err.value(py).clone().unbind();
                self.write_failed(py, err)?;
                if let Some(w) = waiter {
                    w.bind(py)
                        .call_method1(intern!(py, "set_exception"), (exc,))?;
                }
                return Ok(());
            }
        };
        let more = {
            let mut st = self.state.borrow_mut(py);
            st.wbuf.consume(n);
            n == offered && !st.wbuf.is_empty()
        };
        self.maybe_resume_protocol(py)?;
        if more {
            // Everything offered was taken but the queue had more slices than one call
            // carries: go on in the next iteration.
            self.queue_write(py);
            return Ok(());
        }
        let (empty, closing, eof, waiter) = {
            let st = self.state.borrow_mut(py);
            let empty = st.wbuf.is_empty();
            let waiter = if empty {
                st.empty_waiter.as_ref().map(|w| w.clone_ref(py))
            } else {
                None
            };
            (empty, st.closing, st.eof, waiter)
        };
        if !empty {
            return Ok(());
        }
        if let Some(w) = waiter {
            w.bind(py)
                .call_method1(intern!(py, "set_result"), (py.None(),))?;
        }
        if closing {
            self.schedule_connection_lost(py, None, true)
        } else if eof {
            sys::shutdown_write(self.fd).map_err(os_error)
        } else {
            Ok(())
        }
    }

    fn maybe_pause_protocol(&self, py: Python<'_>) -> PyResult<()> {
        {
            let mut st = self.state.borrow_mut(py);
            if st.corked || st.wbuf.len() <= st.high_water || st.protocol_paused {
                return Ok(());
            }
            st.protocol_paused = true;
        }
        self.flow_control_call(
            py,
            intern!(py, "pause_writing"),
            "protocol.pause_writing() failed",
        )
    }

    fn maybe_resume_protocol(&self, py: Python<'_>) -> PyResult<()> {
        {
            let mut st = self.state.borrow_mut(py);
            if !st.protocol_paused || st.wbuf.len() > st.low_water {
                return Ok(());
            }
            st.protocol_paused = false;
        }
        self.flow_control_call(
            py,
            intern!(py, "resume_writing"),
            "protocol.resume_writing() failed",
        )
    }

    fn flow_control_call(
        &self,
        py: Python<'_>,
        name: &Bound<'_, pyo3::types::PyString>,
        message: &str,
    ) -> PyResult<()> {
        let Some(protocol) = self.protocol(py) else {
            return Ok(());
        };
        if let Err(e) = protocol.bind(py).call_method0(name) {
            if is_exit(&e, py) {
                return Err(e);
            }
            if let Some(face) = self.face(py) {
                face.bind(py).call_method1(
                    intern!(py, "_report_protocol_failure"),
                    (message, e.into_value(py)),
                )?;
            }
        }
        Ok(())
    }

    /// asyncio's `close()`.
    fn do_close(&self, py: Python<'_>) -> PyResult<()> {
        self.uncork(py)?;
        let lost_now = {
            let mut st = self.state.borrow_mut(py);
            if st.closing {
                return Ok(());
            }
            st.closing = true;
            st.reading = false;
            st.wbuf.is_empty()
        };
        if lost_now {
            self.schedule_connection_lost(py, None, false)?;
        }
        Ok(())
    }

    /// Counts the loss and runs `connection_lost`: now, or (`soon`) from the ready queue as
    /// asyncio's `call_soon` does. A socket transport does it natively; a pipe's face runs
    /// its `_call_connection_lost(exc)`.
    fn schedule_connection_lost(
        &self,
        py: Python<'_>,
        exc: Option<Py<PyAny>>,
        now: bool,
    ) -> PyResult<()> {
        let (face, loop_) = {
            let mut st = self.state.borrow_mut(py);
            if !now {
                st.lost_scheduled = true;
                // asyncio's pipe transports leave their count alone when they close.
                if self.kind == Kind::Socket {
                    st.conn_lost += 1;
                }
            }
            (
                st.face.as_ref().map(|f| f.clone_ref(py)),
                st.loop_.as_ref().map(|l| l.clone_ref(py)),
            )
        };
        let (Some(face), Some(loop_)) = (face, loop_) else {
            return Ok(());
        };
        let exc = exc.unwrap_or_else(|| py.None());
        if self.kind == Kind::Socket {
            // Natively: no Python frame between the loop and the protocol's connection_lost.
            if now {
                return self.connection_lost(py, face.bind(py), exc.bind(py));
            }
            let loop_ = loop_.bind(py);
            let callback = self.self_method(py, &face, intern!(py, "_connection_lost"))?;
            let args = PyTuple::new(py, [exc])?;
            let handle = LoopCore::new_handle(loop_, callback, args, None, loop_.get().debug(py))?;
            loop_.get().push_ready(py, handle);
            return Ok(());
        }
        let callback = face
            .bind(py)
            .getattr(intern!(py, "_call_connection_lost"))?;
        if now {
            callback.call1((exc,)).map(drop)
        } else {
            loop_
                .bind(py)
                .call_method1(intern!(py, "call_soon"), (callback, exc))
                .map(drop)
        }
    }

    /// A bound method of this transport, found through its face (`face._core`).
    fn self_method<'py>(
        &self,
        py: Python<'py>,
        face: &Py<PyAny>,
        name: &Bound<'py, pyo3::types::PyString>,
    ) -> PyResult<Bound<'py, PyAny>> {
        face.bind(py).getattr(intern!(py, "_core"))?.getattr(name)
    }

    /// asyncio's `_call_connection_lost` for a socket transport: the protocol's
    /// `connection_lost(exc)`; then, whatever it did, the transport lets go of the loop and
    /// the protocol, its descriptor (or the face's socket) is closed, and the server forgets
    /// the transport.
    fn connection_lost(
        &self,
        py: Python<'_>,
        face: &Bound<'_, PyAny>,
        exc: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let result = match self.protocol(py) {
            Some(protocol) => protocol
                .bind(py)
                .call_method1(intern!(py, "connection_lost"), (exc,))
                .map(drop),
            None => Ok(()),
        };
        let released = self.release_face(py, face);
        result.and(released)
    }

    /// What follows `connection_lost` on a socket face (see `connection_lost`).
    fn release_face(&self, py: Python<'_>, face: &Bound<'_, PyAny>) -> PyResult<()> {
        self.detach(py)?;
        let sock = face.getattr(intern!(py, "_sock_obj"))?;
        if !sock.is_none() {
            sock.call_method0(intern!(py, "close"))?;
            face.setattr(intern!(py, "_sock_obj"), py.None())?;
        }
        face.setattr(intern!(py, "_loop"), py.None())?;
        let server = face.getattr(intern!(py, "_server"))?;
        if server.is_none() {
            return Ok(());
        }
        face.setattr(intern!(py, "_server"), py.None())?;
        if crate::py::server_tracks_transports(py)? {
            server.call_method1(intern!(py, "_detach"), (face,))?;
        } else {
            server.call_method0(intern!(py, "_detach"))?;
        }
        Ok(())
    }

    fn to_bytes<'py>(&self, data: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
        if let Ok(b) = data.cast::<PyBytes>() {
            return Ok(b.clone());
        }
        if data.is_instance_of::<PyByteArray>() || data.is_instance_of::<PyMemoryView>() {
            let py = data.py();
            let bytes = py.get_type::<PyBytes>().call1((data,))?;
            return Ok(bytes.cast_into::<PyBytes>()?);
        }
        if self.kind != Kind::Socket {
            // asyncio's pipe transport asserts the type.
            return Err(PyAssertionError::new_err(data.repr()?.unbind()));
        }
        Err(PyTypeError::new_err(format!(
            "data argument must be a bytes-like object, not {:?}",
            data.get_type().name()?.to_string()
        )))
    }

    /// One write. While a callback runs, what it writes is held until it returns and then
    /// goes out in one system call (`uncork`); outside callbacks it goes straight to the
    /// kernel when nothing is queued, as asyncio's does. Behind a queue, it waits its turn.
    fn write_one(slf: &Bound<'_, Self>, data: Bound<'_, PyBytes>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if Self::hold(slf, std::iter::once(&data))? {
            return Ok(());
        }
        let sent = match this.write_some(data.as_bytes()) {
            Ok(n) => n,
            Err(e) if sys::would_block(&e) => 0,
            Err(e) => return this.write_failed(py, os_error(e)),
        };
        if sent == data.as_bytes().len() {
            return Ok(());
        }
        this.enlarge_pipe(py);
        this.state
            .borrow_mut(py)
            .wbuf
            .push_rest(BytesChunk::new(data), sent);
        this.maybe_pause_protocol(py)
    }

    /// Queues `chunks` unless they are to be written now (`Ok(false)`: nothing is queued and
    /// no callback is running). Held output past the high-water mark goes out at once, so a
    /// callback that writes a lot sees `pause_writing()` as it would with asyncio.
    fn hold<'a, 'py: 'a>(
        slf: &Bound<'py, Self>,
        chunks: impl Iterator<Item = &'a Bound<'py, PyBytes>>,
    ) -> PyResult<bool> {
        let py = slf.py();
        let this = slf.get();
        let mut st = this.state.borrow_mut(py);
        if st.wbuf.is_empty() {
            // Sockets only: a pipe's writes go out at once, as the few a pipe sees gain little
            // and its writer learns from the write itself that the reader went away.
            let corking = this.kind == Kind::Socket
                && st.loop_.as_ref().is_some_and(|l| l.get().cork(py, slf));
            if !corking {
                return Ok(false);
            }
            st.corked = true;
        }
        for c in chunks {
            st.wbuf.push(BytesChunk::new(c.clone()));
        }
        let (corked, over) = (st.corked, st.wbuf.len() > st.high_water);
        drop(st);
        if !corked {
            this.maybe_pause_protocol(py)?;
        } else if over {
            this.uncork(py)?;
        }
        Ok(true)
    }

    /// asyncio's `write()` refuses to write after `write_eof()` and during `sendfile`.
    fn check_not_shut(&self, py: Python<'_>, what: &str) -> PyResult<()> {
        let st = self.state.borrow_mut(py);
        if st.eof {
            return Err(PyRuntimeError::new_err(format!(
                "Cannot call {what}() after write_eof()"
            )));
        }
        if st.empty_waiter.is_some() {
            return Err(PyRuntimeError::new_err(format!(
                "unable to {what}; sendfile is in progress"
            )));
        }
        Ok(())
    }

    /// After `check_not_shut`, the rest of asyncio's checks before a write; `Ok(false)` when
    /// the write is to be dropped (connection lost: counted and logged instead).
    fn check_writable(&self, py: Python<'_>) -> PyResult<bool> {
        let log = {
            let mut st = self.state.borrow_mut(py);
            // A write pipe is closed by write_eof(): later writes are dropped too.
            let dropped = st.conn_lost > 0 || (self.kind == Kind::PipeWrite && st.closing);
            if !dropped {
                return Ok(true);
            }
            let log = st.conn_lost >= LOG_THRESHOLD_FOR_CONNLOST_WRITES;
            st.conn_lost += 1;
            log
        };
        if log {
            let helper = match self.kind {
                Kind::Socket => "log_send_after_close",
                Kind::PipeRead | Kind::PipeWrite => "log_pipe_write_after_close",
            };
            crate::py::call_helper(py, helper, ())?;
        }
        Ok(false)
    }
}

/// The writable, contiguous memory behind a memoryview, as a pointer and a length.
fn writable_bytes(view: &Bound<'_, PyMemoryView>) -> PyResult<(*mut u8, usize)> {
    let py = view.py();
    if view.getattr(intern!(py, "readonly"))?.is_truthy()? {
        return Err(PyTypeError::new_err(
            "get_buffer() returned a read-only buffer",
        ));
    }
    let len: usize = view.getattr(intern!(py, "nbytes"))?.extract()?;
    if len == 0 {
        return Err(PyRuntimeError::new_err(
            "get_buffer() returned an empty buffer",
        ));
    }
    if !view.getattr(intern!(py, "c_contiguous"))?.is_truthy()? {
        return Err(PyTypeError::new_err(
            "get_buffer() returned a non-contiguous buffer",
        ));
    }
    let buffer = pyo3::buffer::PyBuffer::<u8>::get(view.as_any()).or_else(|_| {
        let cast = view.call_method1(intern!(py, "cast"), ("B",))?;
        pyo3::buffer::PyBuffer::<u8>::get(&cast)
    })?;
    Ok((buffer.buf_ptr() as *mut u8, len))
}

#[pymethods]
impl StreamTransport {
    /// Registers `fd` with `loop` for a transport whose Python face is `face`: a socket's, or
    /// with `pipe` ("read" or "write") a pipe end's. Reading starts with `start_reading()`,
    /// which the face schedules after `connection_made`; for a write end, that starts watching
    /// for the reader to go away. `enlarge`: a child's pipe, to grow once bulk data flows.
    #[staticmethod]
    #[pyo3(signature = (loop_, fd, face, protocol, buffered=false, pipe=None, enlarge=false))]
    #[allow(clippy::too_many_arguments)]
    fn open(
        py: Python<'_>,
        loop_: &Bound<'_, LoopCore>,
        fd: RawFd,
        face: Bound<'_, PyAny>,
        protocol: Bound<'_, PyAny>,
        buffered: bool,
        pipe: Option<&str>,
        enlarge: bool,
    ) -> PyResult<Py<StreamTransport>> {
        let kind = match pipe {
            None => Kind::Socket,
            Some("read") => Kind::PipeRead,
            Some("write") => Kind::PipeWrite,
            Some(other) => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "pipe must be 'read' or 'write', not {other:?}"
                )))
            }
        };
        Self::create(py, loop_, fd, kind, face, protocol, buffered, enlarge)
    }

    /// `open` for a connection accepted natively: the transport takes its descriptor and
    /// closes it when done, unless `release_fd()` hands it to a `socket.socket` first.
    #[staticmethod]
    #[pyo3(signature = (loop_, conn, face, protocol, buffered=false))]
    fn adopt(
        py: Python<'_>,
        loop_: &Bound<'_, LoopCore>,
        conn: &Bound<'_, AcceptedSocket>,
        face: Bound<'_, PyAny>,
        protocol: Bound<'_, PyAny>,
        buffered: bool,
    ) -> PyResult<Py<StreamTransport>> {
        let fd = conn.get().take().ok_or_else(|| {
            PyRuntimeError::new_err("the accepted connection was already taken or closed")
        })?;
        match Self::create(py, loop_, fd, Kind::Socket, face, protocol, buffered, false) {
            Ok(transport) => {
                transport.get().owns_fd.store(true, Ordering::Release);
                Ok(transport)
            }
            Err(e) => {
                // Taken, so closed here: nobody else holds it now.
                let _ = sys::close(fd);
                Err(e)
            }
        }
    }

    /// Whether this transport owns its descriptor (see `adopt`).
    fn owns_fd(&self) -> bool {
        self.owns_fd.load(Ordering::Acquire)
    }

    /// Hands the descriptor to the caller, who wraps it in a `socket.socket` that will close
    /// it; returns it.
    fn release_fd(&self) -> PyResult<RawFd> {
        if self.owns_fd.swap(false, Ordering::AcqRel) {
            Ok(self.fd)
        } else {
            Err(PyRuntimeError::new_err(
                "the transport does not own its descriptor",
            ))
        }
    }

    /// Queues `start_reading()` behind what is queued now (the face's `connection_made`),
    /// through the transport's own read handle rather than a new one.
    fn schedule_start_reading(&self, py: Python<'_>) {
        let (handle, core) = {
            let mut st = self.state.borrow_mut(py);
            if st.read_queued || st.start_pending {
                return;
            }
            st.start_pending = true;
            st.read_queued = true;
            (
                st.read_handle.as_ref().map(|h| h.clone_ref(py)),
                st.loop_.as_ref().map(|l| l.clone_ref(py)),
            )
        };
        if let (Some(h), Some(core)) = (handle, core) {
            core.get().push_ready(py, h);
        }
    }

    fn _read_ready(&self, py: Python<'_>) -> PyResult<()> {
        if std::mem::take(&mut self.state.borrow_mut(py).start_pending) {
            self.state.borrow_mut(py).read_queued = false;
            // As after asyncio's add_reader: the first read comes in a later iteration, after
            // what connection_made scheduled.
            self.start_reading(py);
            return Ok(());
        }
        let buffered = {
            let mut st = self.state.borrow_mut(py);
            st.read_queued = false;
            if st.conn_lost > 0 || !st.reading || st.paused {
                return Ok(());
            }
            if self.kind == Kind::PipeWrite {
                st.reading = false;
                drop(st);
                return self.call_face(py, intern!(py, "_read_ready"));
            }
            st.buffered
        };
        if buffered {
            self.read_into_buffer(py)
        } else {
            self.read_data(py)
        }
    }

    /// The handle `connection_lost` is scheduled with (socket transports).
    fn _connection_lost(&self, py: Python<'_>, exc: &Bound<'_, PyAny>) -> PyResult<()> {
        match self.face(py) {
            Some(face) => self.connection_lost(py, face.bind(py), exc),
            None => Ok(()),
        }
    }

    /// Sends what the running callback wrote (called when it returns, or before anything that
    /// must find it sent: closing, `write_eof()`, `sendfile`); what the kernel does not take
    /// is queued and flow-controlled as asyncio's `write()` would have left it.
    pub(crate) fn uncork(&self, py: Python<'_>) -> PyResult<()> {
        {
            let mut st = self.state.borrow_mut(py);
            if !st.corked {
                return Ok(());
            }
            st.corked = false;
        }
        self.flush(py)?;
        self.maybe_pause_protocol(py)
    }

    fn _write_ready(&self, py: Python<'_>) -> PyResult<()> {
        self.state.borrow_mut(py).write_queued = false;
        self.flush(py)
    }

    pub(crate) fn write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let data = this.to_bytes(data)?;
        // asyncio refuses a write after write_eof() or during sendfile even when it is empty,
        // and counts writes after the connection was lost only when they are not.
        this.check_not_shut(py, "write")?;
        if data.as_bytes().is_empty() || !this.check_writable(py)? {
            return Ok(());
        }
        Self::write_one(slf, data)
    }

    fn writelines(slf: &Bound<'_, Self>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let mut chunks = Vec::new();
        for item in list_of_data.try_iter()? {
            chunks.push(this.to_bytes(&item?)?);
        }
        this.check_not_shut(py, "writelines")?;
        if !this.check_writable(py)? || Self::hold(slf, chunks.iter())? {
            return Ok(());
        }
        {
            let mut st = this.state.borrow_mut(py);
            for c in chunks {
                st.wbuf.push(BytesChunk::new(c));
            }
        }
        this.flush(py)?;
        this.maybe_pause_protocol(py)
    }

    fn write_eof(&self, py: Python<'_>) -> PyResult<()> {
        self.uncork(py)?;
        if self.kind != Kind::Socket {
            // A pipe has no half-close: its end of file is its closing.
            return self.do_close(py);
        }
        let shutdown_now = {
            let mut st = self.state.borrow_mut(py);
            if st.closing || st.eof {
                return Ok(());
            }
            st.eof = true;
            st.wbuf.is_empty()
        };
        if shutdown_now {
            sys::shutdown_write(self.fd).map_err(os_error)?;
        }
        Ok(())
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.do_close(py)
    }

    /// asyncio's `_force_close(exc)`: drops pending output and schedules `connection_lost`.
    fn force_close(&self, py: Python<'_>, exc: Option<Py<PyAny>>) -> PyResult<()> {
        // What asyncio's write() would have sent by now is sent before the rest is dropped.
        self.uncork(py)?;
        let released = {
            let mut st = self.state.borrow_mut(py);
            if st.lost_scheduled {
                return Ok(());
            }
            st.closing = true;
            st.reading = false;
            st.wbuf.clear()
        };
        drop(released);
        self.schedule_connection_lost(py, exc, false)
    }

    fn is_closing(&self, py: Python<'_>) -> bool {
        self.state.borrow_mut(py).closing
    }

    fn is_reading(&self, py: Python<'_>) -> bool {
        let st = self.state.borrow_mut(py);
        !st.closing && !st.paused
    }

    /// Returns whether reading was paused by this call.
    fn pause_reading(&self, py: Python<'_>) -> bool {
        let mut st = self.state.borrow_mut(py);
        if st.closing || st.paused {
            return false;
        }
        st.paused = true;
        true
    }

    /// Returns whether reading was resumed by this call.
    fn resume_reading(&self, py: Python<'_>) -> bool {
        {
            let mut st = self.state.borrow_mut(py);
            if st.closing || !st.paused {
                return false;
            }
            st.paused = false;
        }
        // Data that arrived while paused brought its report then; look again.
        self.queue_read(py);
        true
    }

    /// Held output (`corked`) does not count: asyncio's `write()` would have sent it.
    fn get_write_buffer_size(&self, py: Python<'_>) -> usize {
        let st = self.state.borrow_mut(py);
        if st.corked {
            0
        } else {
            st.wbuf.len()
        }
    }

    fn get_write_buffer_limits(&self, py: Python<'_>) -> (usize, usize) {
        let st = self.state.borrow_mut(py);
        (st.low_water, st.high_water)
    }

    fn set_write_buffer_limits(&self, py: Python<'_>, high: usize, low: usize) -> PyResult<()> {
        {
            let mut st = self.state.borrow_mut(py);
            st.high_water = high;
            st.low_water = low;
        }
        self.maybe_pause_protocol(py)
    }

    #[getter]
    fn protocol_paused(&self, py: Python<'_>) -> bool {
        self.state.borrow_mut(py).protocol_paused
    }

    fn set_protocol(&self, py: Python<'_>, protocol: Py<PyAny>, buffered: bool) -> PyResult<()> {
        let tls = buffered && super::tls::is_native_tls(protocol.bind(py))?;
        let old = {
            let mut st = self.state.borrow_mut(py);
            st.buffered = buffered;
            st.tls = tls;
            st.protocol.replace(protocol)
        };
        drop(old);
        Ok(())
    }

    fn get_protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.protocol(py)
    }

    fn set_empty_waiter(&self, py: Python<'_>, waiter: Option<Py<PyAny>>) {
        let old = std::mem::replace(&mut self.state.borrow_mut(py).empty_waiter, waiter);
        drop(old);
    }

    fn has_empty_waiter(&self, py: Python<'_>) -> bool {
        self.state.borrow_mut(py).empty_waiter.is_some()
    }

    /// Leaves the reactor while `sock_sendfile` watches the socket with `add_writer`.
    fn suspend_reactor(&self, py: Python<'_>) -> PyResult<()> {
        let (loop_, slot) = {
            let mut st = self.state.borrow_mut(py);
            (st.loop_.as_ref().map(|l| l.clone_ref(py)), st.slot.take())
        };
        match (loop_, slot) {
            (Some(loop_), Some(slot)) => {
                LoopCore::deregister_source(loop_.bind(py), self.fd, slot, false)
            }
            _ => Ok(()),
        }
    }

    /// Registers again after `suspend_reactor`.
    fn resume_reactor(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let loop_ = {
            let st = this.state.borrow_mut(py);
            if st.slot.is_some() || st.conn_lost > 0 {
                return Ok(());
            }
            st.loop_.as_ref().map(|l| l.clone_ref(py))
        };
        let Some(loop_) = loop_ else {
            return Ok(());
        };
        let slot = LoopCore::register_source(loop_.bind(py), this.fd, slf.clone().unbind())?;
        this.state.borrow_mut(py).slot = Some(slot);
        // Reports that came while suspended went to the fd watcher: look again.
        this.queue_read(py);
        if !this.state.borrow_mut(py).wbuf.is_empty() {
            this.queue_write(py);
        }
        Ok(())
    }

    /// Leaves the reactor and lets go of the loop, the protocol and the face (after
    /// `connection_lost`, before the socket is closed).
    fn detach(&self, py: Python<'_>) -> PyResult<()> {
        let released = {
            let mut st = self.state.borrow_mut(py);
            let st = &mut *st;
            st.reading = false;
            st.corked = false;
            (
                st.loop_.take(),
                st.slot.take(),
                st.face.take(),
                st.protocol.take(),
                st.read_handle.take(),
                st.write_handle.take(),
                st.wbuf.clear(),
                st.empty_waiter.take(),
            )
        };
        let result = match (&released.0, released.1) {
            (Some(loop_), Some(slot)) => {
                LoopCore::deregister_source(loop_.bind(py), self.fd, slot, self.owns_fd())
            }
            _ => Ok(()),
        };
        drop(released);
        self.close_owned_fd()?;
        result
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        let Some(st) = self.state.try_borrow_for_gc() else {
            return Ok(());
        };
        visit.call(&st.loop_)?;
        visit.call(&st.face)?;
        visit.call(&st.protocol)?;
        visit.call(&st.read_handle)?;
        visit.call(&st.write_handle)?;
        visit.call(&st.empty_waiter)
    }

    fn __clear__(&self, py: Python<'_>) {
        let released = {
            let Some(mut st) = self.state.try_borrow_mut(py) else {
                return;
            };
            (
                st.face.take(),
                st.protocol.take(),
                st.read_handle.take(),
                st.write_handle.take(),
                st.empty_waiter.take(),
            )
        };
        drop(released);
    }
}
