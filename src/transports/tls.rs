//! The steady-state paths of asyncio's TLS protocol (3.11+'s `asyncio.sslproto.SSLProtocol`),
//! native.
//!
//! `oxloop._transports.TlsProtocol` is asyncio's own `SSLProtocol` class of the running
//! interpreter, so its state machine (handshake, shutdown, timeouts, flow-control decisions,
//! errors and their messages) stays asyncio's. Once the connection is `WRAPPED`, the two paths
//! every message takes come here: data read from the socket (`buffer_updated`: into the
//! incoming BIO, decrypted records to the application, what OpenSSL has to send out), and
//! the application's writes (`_write_appdata`: encrypted and handed to the socket transport).
//! They do what asyncio's `_do_read`, `_do_read__copied`, `_do_write`, `_process_outgoing`,
//! `_control_app_writing` and `_control_ssl_reading` do, reading the protocol's own
//! attributes, and call asyncio's methods for everything else: a buffered application
//! protocol, end of stream, a flow-control change, a failure.

use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList, PyTuple};
use pyo3::{intern, PyTypeInfo};

use super::StreamTransport;

/// `(ssl.SSLWantReadError, ssl.SSLSyscallError)`: asyncio's `SSLAgainErrors`.
static AGAIN: PyOnceLock<Py<PyTuple>> = PyOnceLock::new();

fn again_errors(py: Python<'_>) -> PyResult<&Bound<'_, PyTuple>> {
    AGAIN
        .get_or_try_init(py, || {
            let sslproto = py.import(intern!(py, "asyncio.sslproto"))?;
            let errors = sslproto.getattr(intern!(py, "SSLAgainErrors"))?;
            Ok::<_, PyErr>(errors.cast_into::<PyTuple>()?.unbind())
        })
        .map(|t| t.bind(py))
}

fn is_again(py: Python<'_>, err: &PyErr) -> PyResult<bool> {
    err.value(py).is_instance(again_errors(py)?.as_any())
}

/// `ssl.SSLObject`.
static SSL_OBJECT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// What to call `read`, `write` and `pending` on for a protocol's `_sslobj`: an
/// `ssl.SSLObject`'s own methods only pass the call on to its `_ssl` object (a Python frame
/// each), so that object is called directly; a subclass (`SSLContext.sslobject_class`) keeps
/// its own methods.
fn ssl_engine<'py>(sslobj: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = sslobj.py();
    let plain = SSL_OBJECT.get_or_try_init(py, || {
        let ssl = py.import(intern!(py, "ssl"))?;
        Ok::<_, PyErr>(ssl.getattr(intern!(py, "SSLObject"))?.unbind())
    })?;
    if sslobj.get_type().is(plain.bind(py)) {
        sslobj.getattr(intern!(py, "_sslobj"))
    } else {
        Ok(sslobj)
    }
}

/// A `MemoryBIO`'s `pending`: the bytes it holds.
fn pending(obj: &Bound<'_, PyAny>) -> PyResult<usize> {
    obj.getattr(intern!(obj.py(), "pending"))?.extract()
}

/// What a `WRAPPED` TLS protocol does with a message: read and write paths.
struct Wrapped<'py> {
    proto: Bound<'py, PyAny>,
}

impl<'py> Wrapped<'py> {
    fn get(&self, name: &Bound<'py, pyo3::types::PyString>) -> PyResult<Bound<'py, PyAny>> {
        self.proto.getattr(name)
    }

    fn flag(&self, name: &Bound<'py, pyo3::types::PyString>) -> PyResult<bool> {
        self.get(name)?.is_truthy()
    }

    fn call0(&self, name: &Bound<'py, pyo3::types::PyString>) -> PyResult<()> {
        self.proto.call_method0(name).map(drop)
    }

    /// `_do_read`, after `buffer_updated` put the bytes in the incoming BIO.
    fn do_read(&self) -> PyResult<()> {
        let py = self.proto.py();
        if !self.flag(intern!(py, "_app_reading_paused"))? {
            if self.flag(intern!(py, "_app_protocol_is_buffer"))? {
                self.call0(intern!(py, "_do_read__buffered"))?;
            } else {
                self.read_copied()?;
            }
            if self.get(intern!(py, "_write_backlog"))?.is_truthy()? {
                self.do_write()?;
            } else {
                self.process_outgoing()?;
            }
        }
        self.control_ssl_reading()
    }

    /// `_do_read__copied`: every record OpenSSL can decrypt now, to `data_received` at once.
    fn read_copied(&self) -> PyResult<()> {
        let py = self.proto.py();
        let sslobj = ssl_engine(self.get(intern!(py, "_sslobj"))?)?;
        let incoming = self.get(intern!(py, "_incoming"))?;
        // `TlsProtocol._read_size`, what its `max_size` property reads.
        let max_size = self.get(intern!(py, "_read_size"))?;
        let mut chunks: Vec<Bound<'py, PyAny>> = Vec::new();
        let mut closed = false;
        loop {
            // Nothing buffered in OpenSSL or its BIO: the read would only raise
            // SSLWantReadError, which costs more than asking.
            if !chunks.is_empty()
                && pending(&incoming)? == 0
                && sslobj
                    .call_method0(intern!(py, "pending"))?
                    .extract::<usize>()?
                    == 0
            {
                break;
            }
            match sslobj.call_method1(intern!(py, "read"), (&max_size,)) {
                Ok(chunk) => {
                    if !chunk.is_truthy()? {
                        closed = true;
                        break;
                    }
                    chunks.push(chunk);
                }
                Err(e) if is_again(py, &e)? => break,
                Err(e) => return Err(e),
            }
        }
        if !chunks.is_empty() {
            let protocol = self.get(intern!(py, "_app_protocol"))?;
            let data = if chunks.len() == 1 {
                chunks.swap_remove(0)
            } else {
                PyBytes::new(py, b"")
                    .call_method1(intern!(py, "join"), (PyList::new(py, chunks)?,))?
            };
            protocol.call_method1(intern!(py, "data_received"), (data,))?;
        }
        if closed {
            // close_notify
            self.call0(intern!(py, "_call_eof_received"))?;
            self.call0(intern!(py, "_start_shutdown"))?;
        }
        Ok(())
    }

    /// `_do_write`: the backlog through OpenSSL, then out.
    fn do_write(&self) -> PyResult<()> {
        let py = self.proto.py();
        let sslobj = ssl_engine(self.get(intern!(py, "_sslobj"))?)?;
        let backlog = self.get(intern!(py, "_write_backlog"))?;
        while backlog.is_truthy()? {
            let data = backlog.get_item(0)?;
            let count: usize = match sslobj.call_method1(intern!(py, "write"), (&data,)) {
                Ok(n) => n.extract()?,
                Err(e) if is_again(py, &e)? => break,
                Err(e) => return Err(e),
            };
            let len = data.len()?;
            let size: usize = self.get(intern!(py, "_write_buffer_size"))?.extract()?;
            if count < len {
                backlog.set_item(
                    0,
                    data.get_item(pyo3::types::PySlice::new(
                        py,
                        count as isize,
                        len as isize,
                        1,
                    ))?,
                )?;
                self.proto
                    .setattr(intern!(py, "_write_buffer_size"), size - count)?;
            } else {
                backlog.del_item(0)?;
                self.proto
                    .setattr(intern!(py, "_write_buffer_size"), size - len)?;
            }
        }
        self.process_outgoing()
    }

    /// `_write_appdata` when wrapped: with nothing waiting, each piece goes straight through
    /// OpenSSL (what queueing it and taking it off again would come to); the rest is queued
    /// as asyncio queues it.
    fn write_appdata(&self, list_of_data: &Bound<'py, PyAny>) -> PyResult<()> {
        let py = self.proto.py();
        let sslobj = ssl_engine(self.get(intern!(py, "_sslobj"))?)?;
        let backlog = self.get(intern!(py, "_write_backlog"))?;
        let mut queueing = backlog.is_truthy()?;
        for data in list_of_data.try_iter()? {
            let data = data?;
            let len = data.len()?;
            if !queueing {
                match sslobj.call_method1(intern!(py, "write"), (&data,)) {
                    Ok(n) if n.extract::<usize>()? >= len => continue,
                    Ok(n) => {
                        let count: usize = n.extract()?;
                        let rest = data.get_item(pyo3::types::PySlice::new(
                            py,
                            count as isize,
                            len as isize,
                            1,
                        ))?;
                        self.queue(&backlog, &rest, len - count)?;
                    }
                    Err(e) if is_again(py, &e)? => self.queue(&backlog, &data, len)?,
                    Err(e) => return Err(e),
                }
                queueing = true;
                continue;
            }
            self.queue(&backlog, &data, len)?;
        }
        if queueing {
            self.do_write()
        } else {
            self.process_outgoing()
        }
    }

    fn queue(
        &self,
        backlog: &Bound<'py, PyAny>,
        data: &Bound<'py, PyAny>,
        len: usize,
    ) -> PyResult<()> {
        let py = self.proto.py();
        backlog.call_method1(intern!(py, "append"), (data,))?;
        let size: usize = self.get(intern!(py, "_write_buffer_size"))?.extract()?;
        self.proto
            .setattr(intern!(py, "_write_buffer_size"), size + len)
    }

    /// `_process_outgoing`: what OpenSSL wrote, to the socket transport.
    fn process_outgoing(&self) -> PyResult<()> {
        let py = self.proto.py();
        if !self.flag(intern!(py, "_ssl_writing_paused"))? {
            let outgoing = self.get(intern!(py, "_outgoing"))?;
            if pending(&outgoing)? > 0 {
                let data = outgoing.call_method0(intern!(py, "read"))?;
                let transport = self.get(intern!(py, "_transport"))?;
                // oxloop's socket transport writes through its native engine: its write()
                // is that call, without the Python frame.
                let core = transport
                    .getattr(intern!(py, "_core"))
                    .ok()
                    .and_then(|c| c.cast_into::<StreamTransport>().ok());
                match core {
                    Some(core) => StreamTransport::write(&core, &data)?,
                    None => {
                        transport.call_method1(intern!(py, "write"), (data,))?;
                    }
                }
            }
        }
        self.control_app_writing()
    }

    /// `_control_app_writing`, asyncio's own, only when the buffer crossed a water mark.
    fn control_app_writing(&self) -> PyResult<()> {
        let py = self.proto.py();
        let size = pending(&self.get(intern!(py, "_outgoing"))?)?
            + self
                .get(intern!(py, "_write_buffer_size"))?
                .extract::<usize>()?;
        self.control(
            size,
            intern!(py, "_app_writing_paused"),
            intern!(py, "_outgoing_low_water"),
            intern!(py, "_outgoing_high_water"),
            intern!(py, "_control_app_writing"),
        )
    }

    /// `_control_ssl_reading`, asyncio's own, only when the buffer crossed a water mark.
    fn control_ssl_reading(&self) -> PyResult<()> {
        let py = self.proto.py();
        let size = pending(&self.get(intern!(py, "_incoming"))?)?;
        self.control(
            size,
            intern!(py, "_ssl_reading_paused"),
            intern!(py, "_incoming_low_water"),
            intern!(py, "_incoming_high_water"),
            intern!(py, "_control_ssl_reading"),
        )
    }

    /// Calls asyncio's flow-control method `method` when a buffer of `size` bytes crossed
    /// the water mark that matters in the `paused` state: the low one while paused, the high
    /// one otherwise. asyncio's method decides and acts again itself.
    fn control(
        &self,
        size: usize,
        paused: &Bound<'py, pyo3::types::PyString>,
        low: &Bound<'py, pyo3::types::PyString>,
        high: &Bound<'py, pyo3::types::PyString>,
        method: &Bound<'py, pyo3::types::PyString>,
    ) -> PyResult<()> {
        let crossed = if self.flag(paused)? {
            size <= self.get(low)?.extract()?
        } else {
            size >= self.get(high)?.extract()?
        };
        if crossed {
            self.call0(method)?;
        }
        Ok(())
    }

    /// asyncio's `except Exception as ex: self._fatal_error(ex, 'Fatal error on SSL protocol')`.
    fn fatal_on(&self, result: PyResult<()>) -> PyResult<()> {
        let py = self.proto.py();
        match result {
            Err(e) if e.is_instance(py, &PyException::type_object(py)) => self
                .proto
                .call_method1(
                    intern!(py, "_fatal_error"),
                    (e.into_value(py), "Fatal error on SSL protocol"),
                )
                .map(drop),
            other => other,
        }
    }
}

/// oxloop's `TlsProtocol` class (`None` on 3.10, whose TLS protocol stays asyncio's).
static NATIVE_TLS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
/// `asyncio.sslproto.SSLProtocolState.WRAPPED`.
static WRAPPED: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Whether `protocol` is a `TlsProtocol`, whose reads the socket transport may hand to
/// `feed` while it is wrapped.
pub(crate) fn is_native_tls(protocol: &Bound<'_, PyAny>) -> PyResult<bool> {
    let py = protocol.py();
    let cls = NATIVE_TLS.get_or_try_init(py, || {
        let module = py.import(intern!(py, "oxloop._transports"))?;
        Ok::<_, PyErr>(module.getattr(intern!(py, "NATIVE_TLS_PROTOCOL"))?.unbind())
    })?;
    Ok(!cls.is_none(py) && protocol.get_type().is(cls.bind(py)))
}

/// Whether a `TlsProtocol` is `WRAPPED` (its steady state).
pub(crate) fn is_wrapped(protocol: &Bound<'_, PyAny>) -> PyResult<bool> {
    let py = protocol.py();
    let wrapped = WRAPPED.get_or_try_init(py, || {
        let sslproto = py.import(intern!(py, "asyncio.sslproto"))?;
        let states = sslproto.getattr(intern!(py, "SSLProtocolState"))?;
        Ok::<_, PyErr>(states.getattr(intern!(py, "WRAPPED"))?.unbind())
    })?;
    Ok(protocol
        .getattr(intern!(py, "_state"))?
        .is(wrapped.bind(py)))
}

/// What `buffer_updated` does with bytes a wrapped `TlsProtocol` received (`data`, any
/// bytes-like object): into the incoming BIO, then `_do_read`. The socket transport calls it
/// with what it read itself, with no trip through the protocol's buffer.
pub(crate) fn feed(proto: &Bound<'_, PyAny>, data: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = proto.py();
    let this = Wrapped {
        proto: proto.clone(),
    };
    this.get(intern!(py, "_incoming"))?
        .call_method1(intern!(py, "write"), (data,))?;
    let result = this.do_read();
    this.fatal_on(result)
}

/// `buffer_updated(nbytes)` of a `WRAPPED` TLS protocol: the bytes read into its buffer go to
/// the incoming BIO, then `_do_read`.
#[pyfunction]
pub fn tls_read(proto: Bound<'_, PyAny>, nbytes: usize) -> PyResult<()> {
    let py = proto.py();
    let view = proto.getattr(intern!(py, "_ssl_buffer_view"))?;
    let chunk = view.get_item(pyo3::types::PySlice::new(py, 0, nbytes as isize, 1))?;
    feed(&proto, &chunk)
}

/// `_write_appdata(list_of_data)` of a `WRAPPED` TLS protocol.
#[pyfunction]
pub fn tls_write(proto: Bound<'_, PyAny>, list_of_data: Bound<'_, PyAny>) -> PyResult<()> {
    let this = Wrapped { proto };
    let result = this.write_appdata(&list_of_data);
    this.fatal_on(result)
}
