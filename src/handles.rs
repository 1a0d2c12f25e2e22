//! `Handle` and `TimerHandle`: a scheduled callback, as returned by `call_soon` / `call_later`.
//!
//! They mirror `asyncio.Handle` / `asyncio.TimerHandle`, including the private attributes that
//! code in the wild reads (`_callback`, `_args`, `_cancelled`, `_scheduled`, `_when`, ...).

use pyo3::basic::CompareOp;
use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit};
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple, PyWeakrefReference};
use pyo3::PyTraverseError;

use crate::event_loop::LoopCore;
use crate::py;
use crate::timers::TimerId;

/// A callback with its arguments and context, scheduled on a loop.
#[pyclass(module = "oxloop", subclass, weakref)]
pub struct Handle {
    /// The callable; `None` once cancelled, so that it and its arguments can be freed.
    callback: Option<Py<PyAny>>,
    /// Positional arguments; `None` once cancelled.
    args: Option<Py<PyTuple>>,
    /// The `contextvars.Context` the callback runs in.
    context: Py<PyAny>,
    /// The loop the handle belongs to, held weakly: a queued handle must not keep its loop
    /// alive, since queued handles are hidden from the garbage collector.
    loop_: LoopRef,
    /// Set by `cancel()`; a cancelled handle is skipped when its turn comes.
    cancelled: bool,
    /// In debug mode, the repr captured at cancellation, when the callback is still known.
    repr: Option<Py<PyAny>>,
    /// In debug mode, where the handle was created (`traceback.StackSummary`-like list).
    #[pyo3(get, set, name = "_source_traceback")]
    source_traceback: Option<Py<PyAny>>,
}

/// A reference from a handle to its loop.
enum LoopRef {
    /// The usual case: loops support weak references.
    Weak(Py<PyWeakrefReference>),
    /// An object passed as `loop` to `Handle(...)` that cannot be referenced weakly.
    Strong(Py<PyAny>),
}

impl LoopRef {
    fn new(loop_: &Bound<'_, PyAny>) -> LoopRef {
        match PyWeakrefReference::new(loop_) {
            Ok(w) => LoopRef::Weak(w.unbind()),
            Err(_) => LoopRef::Strong(loop_.clone().unbind()),
        }
    }

    fn get<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyAny>> {
        match self {
            LoopRef::Weak(w) => w.bind(py).upgrade(),
            LoopRef::Strong(s) => Some(s.bind(py).clone()),
        }
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        match self {
            LoopRef::Weak(w) => visit.call(w),
            LoopRef::Strong(s) => visit.call(s),
        }
    }
}

impl Handle {
    /// A handle for `callback(*args)` in `context` (a copy of the current one when `None`).
    pub fn create(
        py: Python<'_>,
        callback: Py<PyAny>,
        args: Py<PyTuple>,
        loop_: &Bound<'_, PyAny>,
        context: Option<Py<PyAny>>,
        debug: bool,
    ) -> PyResult<Handle> {
        let context = match context {
            Some(c) if !c.is_none(py) => c,
            _ => py::copy_context(py)?,
        };
        let source_traceback = if debug {
            Some(py::call_helper(py, "extract_stack", ())?.unbind())
        } else {
            None
        };
        Ok(Handle {
            callback: Some(callback),
            args: Some(args),
            context,
            loop_: LoopRef::new(loop_),
            cancelled: false,
            repr: None,
            source_traceback,
        })
    }

    /// Whether `cancel()` was called.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled
    }

    /// `handle.cancel()` from Rust.
    pub fn cancel_bound(handle: &Bound<'_, Handle>) -> PyResult<()> {
        let py = handle.py();
        let loop_ = {
            let mut h = handle.borrow_mut();
            if h.cancelled {
                return Ok(());
            }
            h.cancelled = true;
            h.loop_.get(py)
        };
        // Whatever held it in a queue lets go of it now: the collector must see it again.
        py::gc_track(handle.as_any());
        // In debug mode keep what the callback was, for the repr, before it is released.
        let debug = match &loop_ {
            Some(l) => loop_debug(l)?,
            None => false,
        };
        let repr = if debug {
            Some(py::call_helper(py, "handle_repr", (handle,))?.unbind())
        } else {
            None
        };
        let released = {
            let mut h = handle.borrow_mut();
            h.repr = repr;
            (h.callback.take(), h.args.take())
        };
        // Released outside the borrow: dropping them may run arbitrary `__del__` code.
        drop(released);
        Ok(())
    }
}

fn loop_debug(loop_: &Bound<'_, PyAny>) -> PyResult<bool> {
    match loop_.cast::<LoopCore>() {
        Ok(core) => Ok(core.get().debug(loop_.py())),
        Err(_) => loop_.call_method0("get_debug")?.is_truthy(),
    }
}

/// Runs the handle's callback; exceptions other than `KeyboardInterrupt` and `SystemExit` go
/// to the loop's exception handler, as `asyncio.Handle._run` does.
pub fn run_handle(handle: &Bound<'_, Handle>) -> PyResult<()> {
    let py = handle.py();
    let (callback, args, context) = {
        let h = handle.borrow();
        match (&h.callback, &h.args) {
            (Some(cb), Some(args)) if !h.cancelled => (
                cb.clone_ref(py).into_bound(py),
                args.clone_ref(py).into_bound(py),
                h.context.clone_ref(py).into_bound(py),
            ),
            _ => return Ok(()),
        }
    };
    match py::run_in_context(py, &context, &callback, &args) {
        Ok(_) => Ok(()),
        Err(err) => report_callback_error(handle, &callback, &args, err),
    }
}

fn report_callback_error(
    handle: &Bound<'_, Handle>,
    callback: &Bound<'_, PyAny>,
    args: &Bound<'_, PyTuple>,
    err: PyErr,
) -> PyResult<()> {
    let py = handle.py();
    if err.is_instance_of::<PyKeyboardInterrupt>(py) || err.is_instance_of::<PySystemExit>(py) {
        return Err(err);
    }
    let source = py::call_helper(py, "format_callback_source", (callback, args))?;
    let context = PyDict::new(py);
    context.set_item("message", format!("Exception in callback {source}"))?;
    // `into_value` attaches the traceback, which before 3.12 lives beside the exception.
    let exception = err.clone_ref(py).into_value(py);
    context.set_item("exception", exception)?;
    context.set_item("handle", handle)?;
    let h = handle.borrow();
    if let Some(tb) = &h.source_traceback {
        context.set_item("source_traceback", tb)?;
    }
    let loop_ = h.loop_.get(py);
    drop(h);
    match loop_ {
        Some(l) => {
            l.call_method1("call_exception_handler", (context,))?;
        }
        None => err.write_unraisable(py, Some(handle.as_any())),
    }
    Ok(())
}

#[pymethods]
impl Handle {
    #[new]
    #[pyo3(signature = (callback, args, r#loop, context=None))]
    fn py_new(
        py: Python<'_>,
        callback: Py<PyAny>,
        args: Py<PyAny>,
        r#loop: Py<PyAny>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Handle> {
        let args = if args.is_none(py) {
            PyTuple::empty(py).unbind()
        } else {
            args.bind(py).cast::<PyTuple>()?.clone().unbind()
        };
        let debug = loop_debug(r#loop.bind(py))?;
        Handle::create(py, callback, args, r#loop.bind(py), context, debug)
    }

    /// Cancels the call; a cancelled handle is never run.
    fn cancel(slf: &Bound<'_, Self>) -> PyResult<()> {
        Handle::cancel_bound(slf)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.callback)?;
        visit.call(&self.args)?;
        visit.call(&self.context)?;
        self.loop_.traverse(&visit)?;
        visit.call(&self.repr)?;
        visit.call(&self.source_traceback)
    }

    fn __clear__(&mut self) {
        self.callback = None;
        self.args = None;
        self.repr = None;
        self.source_traceback = None;
    }

    /// Whether the handle was cancelled.
    fn cancelled(&self) -> bool {
        self.cancelled
    }

    /// The `contextvars.Context` the callback runs in.
    fn get_context(&self, py: Python<'_>) -> Py<PyAny> {
        self.context.clone_ref(py)
    }

    fn _run(slf: &Bound<'_, Self>) -> PyResult<()> {
        run_handle(slf)
    }

    #[getter]
    fn _callback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.callback.as_ref().map(|c| c.clone_ref(py))
    }

    #[getter]
    fn _args(&self, py: Python<'_>) -> Option<Py<PyTuple>> {
        self.args.as_ref().map(|a| a.clone_ref(py))
    }

    #[getter]
    fn _cancelled(&self) -> bool {
        self.cancelled
    }

    #[getter]
    fn _loop<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyAny>> {
        self.loop_.get(py)
    }

    #[getter]
    fn _context(&self, py: Python<'_>) -> Py<PyAny> {
        self.context.clone_ref(py)
    }

    #[getter]
    fn _repr(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.repr.as_ref().map(|r| r.clone_ref(py))
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        if let Some(r) = &slf.borrow().repr {
            return Ok(r.clone_ref(slf.py()));
        }
        Ok(py::call_helper(slf.py(), "handle_repr", (slf,))?.unbind())
    }
}

/// A handle scheduled for a point in time (`call_later` / `call_at`).
#[pyclass(module = "oxloop", extends = Handle)]
pub struct TimerHandle {
    /// The deadline on the loop's clock.
    when: f64,
    /// The entry in the loop's timer heap while scheduled.
    timer: Option<TimerId>,
}

impl TimerHandle {
    /// A timer handle (not yet in any heap).
    pub fn create(when: f64, base: Handle) -> PyClassInitializer<TimerHandle> {
        PyClassInitializer::from(base).add_subclass(TimerHandle { when, timer: None })
    }

    /// Records the heap entry once the loop scheduled the handle.
    pub fn set_timer(&mut self, id: Option<TimerId>) {
        self.timer = id;
    }
}

#[pymethods]
impl TimerHandle {
    #[new]
    #[pyo3(signature = (when, callback, args, r#loop, context=None))]
    fn py_new(
        py: Python<'_>,
        when: f64,
        callback: Py<PyAny>,
        args: Py<PyAny>,
        r#loop: Py<PyAny>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<PyClassInitializer<TimerHandle>> {
        let base = Handle::py_new(py, callback, args, r#loop, context)?;
        Ok(TimerHandle::create(when, base))
    }

    /// The absolute time, on the loop's clock, at which the callback is scheduled.
    fn when(&self) -> f64 {
        self.when
    }

    #[getter]
    fn _when(&self) -> f64 {
        self.when
    }

    #[getter]
    fn _scheduled(&self) -> bool {
        self.timer.is_some()
    }

    /// Cancels the call and takes it out of the loop's timer heap.
    fn cancel(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        if slf.as_super().borrow().cancelled {
            return Ok(());
        }
        let timer = slf.borrow_mut().timer.take();
        let loop_ = slf.as_super().borrow().loop_.get(py);
        if let (Some(id), Some(loop_)) = (timer, loop_) {
            if let Ok(core) = loop_.cast::<LoopCore>() {
                core.get().cancel_timer(py, id);
            }
        }
        Handle::cancel_bound(slf.as_super())
    }

    fn __hash__(&self, py: Python<'_>) -> PyResult<isize> {
        pyo3::types::PyFloat::new(py, self.when).hash()
    }

    fn __richcmp__(
        slf: &Bound<'_, Self>,
        other: &Bound<'_, PyAny>,
        op: CompareOp,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let Ok(other) = other.cast::<TimerHandle>() else {
            return Ok(py.NotImplemented());
        };
        let (a, b) = (slf.borrow().when, other.borrow().when);
        let result = match op {
            CompareOp::Lt => a < b,
            CompareOp::Le => a < b || slf.eq(other)?,
            CompareOp::Gt => a > b,
            CompareOp::Ge => a > b || slf.eq(other)?,
            CompareOp::Eq | CompareOp::Ne => {
                let (x, y) = (slf.as_super().borrow(), other.as_super().borrow());
                let same = a == b
                    && x.cancelled == y.cancelled
                    && opt_eq(py, &x.callback, &y.callback)?
                    && opt_eq_tuple(py, &x.args, &y.args)?;
                if matches!(op, CompareOp::Eq) {
                    same
                } else {
                    !same
                }
            }
        };
        Ok(pyo3::types::PyBool::new(py, result)
            .to_owned()
            .into_any()
            .unbind())
    }
}

fn opt_eq(py: Python<'_>, a: &Option<Py<PyAny>>, b: &Option<Py<PyAny>>) -> PyResult<bool> {
    match (a, b) {
        (None, None) => Ok(true),
        (Some(a), Some(b)) => a.bind(py).eq(b.bind(py)),
        _ => Ok(false),
    }
}

fn opt_eq_tuple(
    py: Python<'_>,
    a: &Option<Py<PyTuple>>,
    b: &Option<Py<PyTuple>>,
) -> PyResult<bool> {
    match (a, b) {
        (None, None) => Ok(true),
        (Some(a), Some(b)) => a.bind(py).eq(b.bind(py)),
        _ => Ok(false),
    }
}
