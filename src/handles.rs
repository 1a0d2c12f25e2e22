//! `Handle` and `TimerHandle`: a scheduled callback, as returned by `call_soon` / `call_later`.
//!
//! They mirror `asyncio.Handle` / `asyncio.TimerHandle`, including the private attributes that
//! code in the wild reads (`_callback`, `_args`, `_cancelled`, `_scheduled`, `_when`, ...).
//! Both classes are `frozen`: their mutable part sits in a [`GilCell`], which spares the
//! per-access borrow flag and lets the loop's garbage-collector traversal read a handle's
//! references without a `Python` token.

use pyo3::basic::CompareOp;
use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit};
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyTuple, PyWeakrefReference};
use pyo3::PyTraverseError;

use crate::event_loop::LoopCore;
use crate::py::{self, GilCell};
use crate::timers::TimerId;

/// A callback with its arguments and context, scheduled on a loop.
#[pyclass(module = "oxloop", subclass, weakref, frozen)]
pub struct Handle {
    /// What `cancel()` changes.
    state: GilCell<HandleState>,
    /// The `contextvars.Context` the callback runs in.
    context: Py<PyAny>,
    /// The loop the handle belongs to, held weakly: a queued handle must not keep its loop
    /// alive, since handles queued by `call_soon` are hidden from the garbage collector.
    loop_: LoopRef,
}

/// The mutable part of a handle.
struct HandleState {
    /// The callable; `None` once cancelled, so that it and its arguments can be freed.
    callback: Option<Py<PyAny>>,
    /// Positional arguments; `None` once cancelled.
    args: Option<Py<PyTuple>>,
    /// Set by `cancel()`; a cancelled handle is skipped when its turn comes.
    cancelled: bool,
    /// What debug mode records; boxed, so that handles made outside debug mode stay small.
    debug: Option<Box<DebugInfo>>,
}

/// Debug-mode records of a handle.
#[derive(Default)]
struct DebugInfo {
    /// The repr captured at cancellation, when the callback is still known.
    repr: Option<Py<PyAny>>,
    /// Where the handle was created (`traceback.StackSummary`-like list).
    source_traceback: Option<Py<PyAny>>,
}

impl HandleState {
    fn repr(&self) -> Option<&Py<PyAny>> {
        self.debug.as_ref().and_then(|d| d.repr.as_ref())
    }

    fn source_traceback(&self) -> Option<&Py<PyAny>> {
        self.debug
            .as_ref()
            .and_then(|d| d.source_traceback.as_ref())
    }

    fn debug_mut(&mut self) -> &mut DebugInfo {
        self.debug.get_or_insert_with(Box::default)
    }
}

/// A reference from a handle to its loop: a weak reference when the loop supports them (the
/// usual case), else the loop itself. Loops are never weak-reference objects themselves, so the
/// two cannot be confused.
struct LoopRef(Py<PyAny>);

impl LoopRef {
    fn new(loop_: &Bound<'_, PyAny>) -> LoopRef {
        match PyWeakrefReference::new(loop_) {
            Ok(w) => LoopRef(w.into_any().unbind()),
            Err(_) => LoopRef(loop_.clone().unbind()),
        }
    }

    fn get<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyAny>> {
        let held = self.0.bind(py);
        match held.cast::<PyWeakrefReference>() {
            Ok(w) => w.upgrade(),
            Err(_) => Some(held.clone()),
        }
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.0)
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
        let debug = if debug {
            Some(Box::new(DebugInfo {
                repr: None,
                source_traceback: Some(py::call_helper(py, "extract_stack", ())?.unbind()),
            }))
        } else {
            None
        };
        Ok(Handle {
            state: GilCell::new(HandleState {
                callback: Some(callback),
                args: Some(args),
                cancelled: false,
                debug,
            }),
            context,
            loop_: LoopRef::new(loop_),
        })
    }

    /// The callback, unless the handle was cancelled.
    pub fn callback<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyAny>> {
        self.state
            .borrow_mut(py)
            .callback
            .as_ref()
            .map(|c| c.bind(py).clone())
    }

    /// Whether `cancel()` was called.
    pub fn is_cancelled(&self, py: Python<'_>) -> bool {
        self.state.borrow_mut(py).cancelled
    }

    /// Visits everything the handle references. The loop calls this for handles it owns
    /// alone while they are hidden from the collector, so that cycles through them are seen.
    pub fn traverse_contents(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(st) = self.state.try_borrow_for_gc() {
            visit.call(&st.callback)?;
            visit.call(&st.args)?;
            visit.call(st.repr())?;
            visit.call(st.source_traceback())?;
        }
        visit.call(&self.context)?;
        self.loop_.traverse(visit)
    }

    /// `handle.cancel()` from Rust.
    pub fn cancel_bound(handle: &Bound<'_, Handle>) -> PyResult<()> {
        let py = handle.py();
        let this = handle.get();
        {
            let mut st = this.state.borrow_mut(py);
            if st.cancelled {
                return Ok(());
            }
            st.cancelled = true;
        }
        // Whatever held it in a queue lets go of it now: the collector must see it again.
        py::gc_track(handle.as_any());
        // In debug mode keep what the callback was, for the repr, before it is released.
        let debug = match this.loop_.get(py) {
            Some(l) => loop_debug(&l)?,
            None => false,
        };
        let repr = if debug {
            Some(py::call_helper(py, "handle_repr", (handle,))?.unbind())
        } else {
            None
        };
        let released = {
            let mut st = this.state.borrow_mut(py);
            if repr.is_some() {
                st.debug_mut().repr = repr;
            }
            (st.callback.take(), st.args.take())
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
    let this = handle.get();
    let (callback, args) = {
        let st = this.state.borrow_mut(py);
        match (&st.callback, &st.args) {
            (Some(cb), Some(args)) if !st.cancelled => (
                cb.clone_ref(py).into_bound(py),
                args.clone_ref(py).into_bound(py),
            ),
            _ => return Ok(()),
        }
    };
    match py::run_in_context(py, this.context.bind(py), &callback, &args) {
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
    let debug = match handle.get().loop_.get(py) {
        Some(l) => loop_debug(&l)?,
        None => false,
    };
    let source = py::call_helper(py, "format_callback_source", (callback, args, debug))?;
    let context = PyDict::new(py);
    context.set_item("message", format!("Exception in callback {source}"))?;
    // `into_value` attaches the traceback, which before 3.12 lives beside the exception.
    let exception = err.clone_ref(py).into_value(py);
    context.set_item("exception", exception)?;
    context.set_item("handle", handle)?;
    let this = handle.get();
    let source_traceback = this
        .state
        .borrow_mut(py)
        .source_traceback()
        .map(|tb| tb.clone_ref(py));
    if let Some(tb) = source_traceback {
        context.set_item("source_traceback", tb)?;
    }
    match this.loop_.get(py) {
        Some(l) => {
            l.call_method1("call_exception_handler", (context,))?;
        }
        None => err.write_unraisable(py, Some(handle.as_any())),
    }
    Ok(())
}

fn clone_opt<T>(py: Python<'_>, value: &Option<Py<T>>) -> Option<Py<T>> {
    value.as_ref().map(|v| v.clone_ref(py))
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
        self.traverse_contents(&visit)
    }

    fn __clear__(&self, py: Python<'_>) {
        let released = match self.state.try_borrow_mut(py) {
            Some(mut st) => (st.callback.take(), st.args.take(), st.debug.take()),
            None => return,
        };
        drop(released);
    }

    /// Whether the handle was cancelled.
    fn cancelled(&self, py: Python<'_>) -> bool {
        self.is_cancelled(py)
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
        clone_opt(py, &self.state.borrow_mut(py).callback)
    }

    #[getter]
    fn _args(&self, py: Python<'_>) -> Option<Py<PyTuple>> {
        clone_opt(py, &self.state.borrow_mut(py).args)
    }

    #[getter]
    fn _cancelled(&self, py: Python<'_>) -> bool {
        self.is_cancelled(py)
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
        self.state.borrow_mut(py).repr().map(|r| r.clone_ref(py))
    }

    #[getter(_source_traceback)]
    fn get_source_traceback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.state
            .borrow_mut(py)
            .source_traceback()
            .map(|tb| tb.clone_ref(py))
    }

    #[setter(_source_traceback)]
    fn set_source_traceback(&self, py: Python<'_>, value: Option<Py<PyAny>>) {
        let old = std::mem::replace(
            &mut self.state.borrow_mut(py).debug_mut().source_traceback,
            value,
        );
        drop(old);
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let captured = slf
            .get()
            .state
            .borrow_mut(py)
            .repr()
            .map(|r| r.clone_ref(py));
        if let Some(r) = captured {
            return Ok(r);
        }
        Ok(py::call_helper(py, "handle_repr", (slf,))?.unbind())
    }
}

/// A handle scheduled for a point in time (`call_later` / `call_at`).
#[pyclass(module = "oxloop", extends = Handle, frozen)]
pub struct TimerHandle {
    /// The deadline on the loop's clock as the caller gave it (an int stays an int, as in
    /// asyncio); the loop's heap keeps its own float copy for ordering.
    when_obj: Py<PyAny>,
    /// The entry in the loop's timer heap while scheduled.
    timer: GilCell<Option<TimerId>>,
}

impl TimerHandle {
    /// A timer handle (not yet in any heap).
    pub fn create(when_obj: Py<PyAny>, base: Handle) -> PyClassInitializer<TimerHandle> {
        PyClassInitializer::from(base).add_subclass(TimerHandle {
            when_obj,
            timer: GilCell::new(None),
        })
    }

    /// Records the heap entry once the loop scheduled the handle (`None` once it left).
    pub fn set_timer(&self, py: Python<'_>, id: Option<TimerId>) {
        *self.timer.borrow_mut(py) = id;
    }
}

#[pymethods]
impl TimerHandle {
    #[new]
    #[pyo3(signature = (when, callback, args, r#loop, context=None))]
    fn py_new(
        py: Python<'_>,
        when: Py<PyAny>,
        callback: Py<PyAny>,
        args: Py<PyAny>,
        r#loop: Py<PyAny>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<PyClassInitializer<TimerHandle>> {
        if when.is_none(py) && py.version_info() < (3, 11) {
            // 3.10's TimerHandle asserts this.
            return Err(pyo3::exceptions::PyAssertionError::new_err(()));
        }
        let base = Handle::py_new(py, callback, args, r#loop, context)?;
        Ok(TimerHandle::create(when, base))
    }

    /// The absolute time, on the loop's clock, at which the callback is scheduled.
    fn when(&self, py: Python<'_>) -> Py<PyAny> {
        self.when_obj.clone_ref(py)
    }

    #[getter]
    fn _when(&self, py: Python<'_>) -> Py<PyAny> {
        self.when_obj.clone_ref(py)
    }

    #[getter]
    fn _scheduled(&self, py: Python<'_>) -> bool {
        self.timer.borrow_mut(py).is_some()
    }

    /// Cancels the call and takes it out of the loop's timer heap.
    fn cancel(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let base = slf.as_super();
        if base.get().is_cancelled(py) {
            return Ok(());
        }
        let timer = slf.get().timer.borrow_mut(py).take();
        if let (Some(id), Some(loop_)) = (timer, base.get().loop_.get(py)) {
            if let Ok(core) = loop_.cast::<LoopCore>() {
                core.get().cancel_timer(py, id);
            }
        }
        Handle::cancel_bound(base)
    }

    fn __hash__(&self, py: Python<'_>) -> PyResult<isize> {
        self.when_obj.bind(py).hash()
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
        let (a, b) = (slf.get().when_obj.bind(py), other.get().when_obj.bind(py));
        let result = match op {
            CompareOp::Lt => a.lt(b)?,
            CompareOp::Le => a.lt(b)? || timers_equal(slf, other)?,
            CompareOp::Gt => a.gt(b)?,
            CompareOp::Ge => a.gt(b)? || timers_equal(slf, other)?,
            CompareOp::Eq => timers_equal(slf, other)?,
            CompareOp::Ne => !timers_equal(slf, other)?,
        };
        Ok(PyBool::new(py, result).to_owned().into_any().unbind())
    }
}

/// `TimerHandle.__eq__` as asyncio defines it: same deadline, callback, arguments and state.
fn timers_equal(a: &Bound<'_, TimerHandle>, b: &Bound<'_, TimerHandle>) -> PyResult<bool> {
    let py = a.py();
    if !a.get().when_obj.bind(py).eq(b.get().when_obj.bind(py))? {
        return Ok(false);
    }
    let fields = |h: &Bound<'_, TimerHandle>| {
        let st = h.as_super().get().state.borrow_mut(py);
        (
            st.cancelled,
            clone_opt(py, &st.callback),
            clone_opt(py, &st.args),
        )
    };
    let (x, y) = (fields(a), fields(b));
    Ok(x.0 == y.0 && opt_eq(py, x.1, y.1)? && opt_eq(py, x.2, y.2)?)
}

fn opt_eq<T>(py: Python<'_>, a: Option<Py<T>>, b: Option<Py<T>>) -> PyResult<bool> {
    match (a, b) {
        (None, None) => Ok(true),
        (Some(a), Some(b)) => a.bind(py).as_any().eq(b.bind(py).as_any()),
        _ => Ok(false),
    }
}
