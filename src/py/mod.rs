//! Everything that touches the interpreter below PyO3's safe API: cached imports, the GIL-guarded
//! cell, and the only raw FFI calls of the crate (context enter/exit, thread identity).

mod gil_cell;

pub use gil_cell::GilCell;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyTuple, PyType};

static FUTURE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static TASK: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static HELPERS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

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
        .get_or_try_init(py, || Ok::<_, PyErr>(py.import("oxloop._helpers")?.unbind()))
        .map(|m| m.bind(py))
}

/// Calls `name(*args)` from the helpers module.
pub fn call_helper<'py>(
    py: Python<'py>,
    name: &str,
    args: impl pyo3::call::PyCallArgs<'py>,
) -> PyResult<Bound<'py, PyAny>> {
    helpers(py)?.getattr(name)?.call1(args)
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

/// `threading.get_ident()` of the calling thread.
pub fn thread_ident(_py: Python<'_>) -> u64 {
    // SAFETY: PyThread_get_thread_ident has no preconditions; it reads pthread_self().
    unsafe { ffi::PyThread_get_thread_ident() }
}
