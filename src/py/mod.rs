//! Everything that touches the interpreter below PyO3's safe API: cached imports, the GIL-guarded
//! cell, and the only raw FFI calls of the crate (context enter/exit, thread identity, filling
//! a fresh `bytes` object in place).

mod gil_cell;

pub use gil_cell::GilCell;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyTuple, PyType};

static FUTURE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static TASK: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static HELPERS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
static SERVER_TRACKS: PyOnceLock<bool> = PyOnceLock::new();

/// `asyncio.Future` (the C-accelerated class when the interpreter has it).
pub fn future_type(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    FUTURE.import(py, "asyncio", "Future")
}

/// `asyncio.Task`.
pub fn task_type(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    TASK.import(py, "asyncio", "Task")
}

/// The Python helpers of the package (`oxloop._helpers`): the slow, rarely taken paths that
/// are plain asyncio plumbing (formatting callbacks, debug checks, logging).
pub fn helpers(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    HELPERS
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(py.import("oxloop._helpers")?.unbind())
        })
        .map(|m| m.bind(py))
}

/// Whether asyncio's `Server._attach` / `_detach` take the transport (3.13) or nothing.
pub fn server_tracks_transports(py: Python<'_>) -> PyResult<bool> {
    SERVER_TRACKS
        .get_or_try_init(py, || {
            helpers(py)?
                .getattr(pyo3::intern!(py, "SERVER_TRACKS_TRANSPORTS"))?
                .is_truthy()
        })
        .copied()
}

/// Calls `name(*args)` from the helpers module.
pub fn call_helper<'py>(
    py: Python<'py>,
    name: &str,
    args: impl pyo3::call::PyCallArgs<'py>,
) -> PyResult<Bound<'py, PyAny>> {
    helpers(py)?.getattr(name)?.call1(args)
}

/// Calls `callable(*positional, **dict(zip(kwnames, keyword_values)))` through vectorcall,
/// which spares the keyword dict `Bound::call` would build on every `create_task`.
pub fn vectorcall<'py>(
    callable: &Bound<'py, PyAny>,
    positional: &[&Bound<'py, PyAny>],
    keyword_values: &[&Bound<'py, PyAny>],
    kwnames: &Bound<'py, PyTuple>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = callable.py();
    let mut argv: [*mut ffi::PyObject; 8] = [std::ptr::null_mut(); 8];
    let total = positional.len() + keyword_values.len();
    if total > argv.len() || keyword_values.len() != kwnames.len() {
        return Err(pyo3::exceptions::PySystemError::new_err(
            "oxloop: vectorcall used with more arguments than it supports",
        ));
    }
    for (slot, arg) in argv.iter_mut().zip(positional.iter().chain(keyword_values)) {
        *slot = arg.as_ptr();
    }
    // SAFETY: the GIL is held; `argv[..total]` are borrowed references kept alive by the
    // `Bound`s for the duration of the call; `kwnames` is a tuple of str whose length is the
    // number of keyword values after the positional ones, as the vectorcall protocol requires.
    // The result is a new reference or NULL with an exception set.
    unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            ffi::PyObject_Vectorcall(
                callable.as_ptr(),
                argv.as_ptr(),
                positional.len(),
                kwnames.as_ptr(),
            ),
        )
    }
}

/// A cached tuple of keyword names for [`vectorcall`].
pub struct KwNames {
    /// The tuple, built on first use.
    cell: PyOnceLock<Py<PyTuple>>,
    /// The names.
    names: &'static [&'static str],
}

impl KwNames {
    /// Keyword names `names`.
    pub const fn new(names: &'static [&'static str]) -> Self {
        KwNames {
            cell: PyOnceLock::new(),
            names,
        }
    }

    /// The tuple of interned names.
    pub fn get<'py>(&'py self, py: Python<'py>) -> PyResult<&'py Bound<'py, PyTuple>> {
        self.cell
            .get_or_try_init(py, || {
                let names = self
                    .names
                    .iter()
                    .map(|n| pyo3::types::PyString::intern(py, n));
                Ok::<_, PyErr>(PyTuple::new(py, names)?.unbind())
            })
            .map(|t| t.bind(py))
    }
}

/// `contextvars.copy_context()`.
pub fn copy_context(py: Python<'_>) -> PyResult<Py<PyAny>> {
    // SAFETY: the GIL is held (we have `py`); PyContext_CopyCurrent returns a new reference
    // or NULL with an exception set, which `from_owned_ptr_or_err` turns into a PyErr.
    unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyContext_CopyCurrent()) }.map(Bound::unbind)
}

/// `context.run(callback, *args)`, without building the argument tuple `Context.run` needs.
pub fn run_in_context<'py>(
    py: Python<'py>,
    context: &Bound<'py, PyAny>,
    callback: &Bound<'py, PyAny>,
    args: &Bound<'py, PyTuple>,
) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: the GIL is held. PyContext_Enter only reads the object after checking its type
    // (it raises TypeError for a non-Context), and on failure leaves an exception set.
    if unsafe { ffi::PyContext_Enter(context.as_ptr()) } < 0 {
        return Err(PyErr::fetch(py));
    }
    let result = callback.call1(args);
    // SAFETY: the GIL is held, and `context` was entered just above by this thread, so
    // exiting it is the matching call and cannot fail for a reason other than misuse.
    let exited = unsafe { ffi::PyContext_Exit(context.as_ptr()) };
    if exited < 0 {
        return Err(PyErr::fetch(py));
    }
    result
}

/// Takes a freshly made object out of the garbage collector's lists.
///
/// The loop does this to the handles `call_soon` queues while it runs: a million pending
/// callbacks would otherwise be traversed by every collection, which costs more than running
/// them. An untracked handle sits in a running loop's ready queue, not yet run or cancelled;
/// [`gc_track_if_shared`] puts it back under the collector's watch the moment that stops being
/// true, so cycles through it are found.
pub fn gc_untrack(obj: &Bound<'_, PyAny>) {
    // SAFETY: the GIL is held and `obj` is a live GC-enabled object (a pyclass instance);
    // untracking an object that is not tracked is a no-op.
    unsafe { ffi::PyObject_GC_UnTrack(obj.as_ptr().cast()) }
}

/// Puts an object taken out by [`gc_untrack`] back under the collector if anything besides
/// the caller's reference keeps it alive (else it is about to be freed and needs no tracking).
pub fn gc_track_if_shared(obj: &Bound<'_, PyAny>) {
    // SAFETY: the GIL is held and `obj` is live. An object must not be tracked twice, hence the
    // check; PyObject_GC_IsTracked only reads the object's GC header.
    unsafe {
        if ffi::Py_REFCNT(obj.as_ptr()) > 1 && ffi::PyObject_GC_IsTracked(obj.as_ptr()) == 0 {
            ffi::PyObject_GC_Track(obj.as_ptr().cast());
        }
    }
}

/// How the collector sees an object that may have been hidden with [`gc_untrack`].
pub enum GcOwnership {
    /// Tracked: the collector traverses it itself.
    Tracked,
    /// Untracked, and the caller's reference is the only one.
    UntrackedExclusive,
    /// Untracked, and referenced from elsewhere too.
    UntrackedShared,
}

/// Classifies `obj`; safe to call from a `__traverse__` (it only reads the object's header).
pub fn gc_ownership(obj: &Py<PyAny>) -> GcOwnership {
    // SAFETY: `obj` is a live object (we hold a reference); both calls only read its header and
    // neither touches interpreter state, so they are allowed during a GC traversal.
    unsafe {
        if ffi::PyObject_GC_IsTracked(obj.as_ptr()) != 0 {
            GcOwnership::Tracked
        } else if ffi::Py_REFCNT(obj.as_ptr()) == 1 {
            GcOwnership::UntrackedExclusive
        } else {
            GcOwnership::UntrackedShared
        }
    }
}

/// Puts an untracked object back under the collector unconditionally.
pub fn gc_track(obj: &Bound<'_, PyAny>) {
    // SAFETY: as in `gc_track_if_shared`: GIL held, live object, tracked at most once.
    unsafe {
        if ffi::PyObject_GC_IsTracked(obj.as_ptr()) == 0 {
            ffi::PyObject_GC_Track(obj.as_ptr().cast());
        }
    }
}

/// `threading.get_ident()` of the calling thread.
pub fn thread_ident(_py: Python<'_>) -> u64 {
    // SAFETY: PyThread_get_thread_ident has no preconditions; it reads pthread_self().
    unsafe { ffi::PyThread_get_thread_ident() }
}

extern "C" {
    // How CPython's own `os.read` trims the bytes object it read into. Every supported
    // interpreter exports it; pyo3-ffi does not declare it publicly.
    fn _PyBytes_Resize(bytes: *mut *mut ffi::PyObject, newsize: ffi::Py_ssize_t) -> libc::c_int;
}

/// A `bytes` object filled in place by `fill`, which gets `capacity` bytes of uninitialized
/// memory and returns how many it wrote: the data is copied once, by whoever writes it there
/// (the kernel, for a read). `reuse` is a `bytes` object made here before: if nothing else
/// refers to it any more, its memory (likely still in the CPU's caches) is filled again.
/// `Ok(Err(e))` when `fill` fails.
pub fn bytes_filled_by<'py, E>(
    py: Python<'py>,
    reuse: Option<Bound<'py, PyBytes>>,
    capacity: usize,
    fill: impl FnOnce(&mut [std::mem::MaybeUninit<u8>]) -> Result<usize, E>,
) -> PyResult<Result<Bound<'py, PyBytes>, E>> {
    let size = ffi::Py_ssize_t::try_from(capacity)?;
    let mut raw = match reuse {
        // SAFETY: reading the reference count of a live object.
        Some(old) if unsafe { ffi::Py_REFCNT(old.as_ptr()) } == 1 => {
            let mut raw = old.into_ptr();
            // SAFETY: `raw` is the only reference, so no one can see the object change. Its
            // cached hash describes the old contents, and `_PyBytes_Resize` leaves it as it is
            // when the size stays: reset it. The resize moves the object if it must, updating
            // `raw`; failing, it releases it, sets NULL and raises.
            let resized = unsafe {
                #[allow(deprecated)]
                {
                    (*raw.cast::<ffi::PyBytesObject>()).ob_shash = -1;
                }
                _PyBytes_Resize(&mut raw, size)
            };
            if resized != 0 {
                return Err(PyErr::fetch(py));
            }
            raw
        }
        // SAFETY: a NULL source asks for a new, uninitialized bytes object of `size` bytes.
        _ => unsafe { ffi::PyBytes_FromStringAndSize(std::ptr::null(), size) },
    };
    if raw.is_null() {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: `raw` is our only reference to a bytes object of `capacity` bytes not yet
    // shared, so they may be written; `MaybeUninit` makes no claim about their contents.
    let buf = unsafe {
        std::slice::from_raw_parts_mut(
            ffi::PyBytes_AsString(raw).cast::<std::mem::MaybeUninit<u8>>(),
            capacity,
        )
    };
    let filled = fill(buf).map(|n| n.min(capacity));
    // Trimmed to the bytes `fill` initialized (none when it failed).
    let keep = match filled {
        Ok(n) => n,
        Err(_) => 0,
    };
    let resized = if keep == capacity {
        0
    } else {
        // SAFETY: as above, `_PyBytes_Resize` wants the only reference to an unshared
        // object, which `raw` still is.
        unsafe { _PyBytes_Resize(&mut raw, keep as ffi::Py_ssize_t) }
    };
    if resized != 0 {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: `raw` is an owned reference to a valid bytes object.
    let obj = unsafe { Bound::from_owned_ptr(py, raw) }.cast_into::<PyBytes>()?;
    Ok(filled.map(|_| obj))
}
