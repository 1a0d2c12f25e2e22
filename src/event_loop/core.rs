//! `LoopCore`: the loop's state and its scheduling API.

use std::collections::{HashMap, VecDeque};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use mio::Waker;
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use pyo3::PyTraverseError;

use crate::errors::{loop_closed, os_error, poisoned};
use crate::handles::{Handle, TimerHandle};
use crate::py::{self, GilCell};
use crate::reactor::{self, IoEvent, Poller, Registrar};
use crate::ready::ReadyQueue;
use crate::signals::SignalSocket;
use crate::stats::{clock, Stats};
use crate::timers::{self, TimerHeap, TimerId};
use crate::transports::StreamTransport;

/// Longest single wait in the poller, as asyncio's `MAXIMUM_SELECT_TIMEOUT`.
pub(super) const MAX_POLL_TIMEOUT: f64 = 24.0 * 3600.0;

/// State owned by the thread running the loop while it waits without the GIL.
pub(super) struct PollState {
    /// The epoll instance.
    pub(super) poller: Poller,
    /// Reports of the last wait, reused between iterations.
    pub(super) events: Vec<IoEvent>,
    /// Signal numbers read in the last iteration, reused between iterations.
    pub(super) signals: Vec<u8>,
}

/// Everything else, guarded by the GIL.
pub(super) struct State {
    /// Callbacks to run in the next iteration, in order.
    pub(super) ready: ReadyQueue<Py<Handle>>,
    /// Handles scheduled for later.
    pub(super) timers: TimerHeap<Py<TimerHandle>>,
    /// Interest registrations; `None` once the loop is closed.
    pub(super) registrar: Option<Registrar>,
    /// `add_reader` callbacks by fd.
    pub(super) readers: HashMap<RawFd, Py<Handle>>,
    /// `add_writer` callbacks by fd.
    pub(super) writers: HashMap<RawFd, Py<Handle>>,
    /// The signal wake-up socket.
    pub(super) signal_socket: Option<SignalSocket>,
    /// `stop()` was called: finish this iteration, then return from `run_forever`.
    pub(super) stopping: bool,
    /// `close()` completed.
    pub(super) closed: bool,
    /// Debug mode.
    pub(super) debug: bool,
    /// `threading.get_ident()` of the thread running the loop, while it runs.
    pub(super) thread_id: Option<u64>,
    /// Callbacks slower than this are logged in debug mode.
    pub(super) slow_callback_duration: f64,
    /// `set_task_factory`'s factory.
    pub(super) task_factory: Option<Py<PyAny>>,
    /// A subclass overrides `time()`: timers follow that clock instead of the monotonic one.
    pub(super) clock_override: bool,
    /// A subclass overrides `_run_once()`: `run_forever` calls it for every iteration.
    pub(super) run_once_override: bool,
    /// Native transports registered with the reactor, indexed by their fd (token
    /// `SOURCE_TOKEN_BASE + fd`): an fd is registered once at most, and descriptors are
    /// small and dense, so the table is found by fd at once (`_native_transport`).
    pub(super) sources: Vec<Option<Py<StreamTransport>>>,
    /// Callbacks are running (`run_ready`): what a transport is given to write waits for the
    /// end of the callback, so that a callback's writes leave in one system call.
    pub(super) dispatching: bool,
    /// Transports holding writes of the running callback (see `StreamTransport::uncork`).
    pub(super) corked: VecDeque<Py<StreamTransport>>,
    /// What the loop counts about itself (`loop.stats()`); the slowest callbacks are kept
    /// with their description and the wall-clock time they ended.
    pub(super) stats: Stats<(Py<PyAny>, f64)>,
}

/// The native part of the event loop.
#[pyclass(module = "oxloop._oxloop", subclass, frozen, weakref, dict)]
pub struct LoopCore {
    /// Scheduling state, guarded by the GIL.
    pub(super) state: GilCell<State>,
    /// The poller, locked by the running thread for the duration of an iteration's wait.
    pub(super) poll: Mutex<Option<PollState>>,
    /// Interrupts a wait from other threads (`call_soon_threadsafe`); replaced along with the
    /// reactor in a forked child.
    pub(super) waker: Mutex<Arc<Waker>>,
    /// A wake-up is already on its way to the poller: further ones can be skipped.
    /// Cleared by the loop (holding the GIL) when it consumes the wake-up.
    pub(super) wake_pending: AtomicBool,
}

impl LoopCore {
    /// The loop's notion of now: `time.monotonic()`, or a subclass's own `time()`.
    pub(super) fn now(slf: &Bound<'_, Self>) -> PyResult<f64> {
        if slf.get().state.borrow_mut(slf.py()).clock_override {
            slf.call_method0(pyo3::intern!(slf.py(), "time"))?.extract()
        } else {
            Ok(timers::monotonic())
        }
    }

    pub(crate) fn debug(&self, py: Python<'_>) -> bool {
        self.state.borrow_mut(py).debug
    }

    fn check_closed(&self, py: Python<'_>) -> PyResult<bool> {
        let st = self.state.borrow_mut(py);
        if st.closed {
            return Err(loop_closed());
        }
        Ok(st.debug)
    }

    /// The debug-mode check that non-thread-safe methods run on the loop's own thread.
    fn check_thread(&self, py: Python<'_>) -> PyResult<()> {
        let owner = self.state.borrow_mut(py).thread_id;
        match owner {
            Some(id) if id != py::thread_ident(py) => Err(PyRuntimeError::new_err(
                "Non-thread-safe operation invoked on an event loop other than the current one",
            )),
            _ => Ok(()),
        }
    }

    /// Debug checks shared by every method that schedules a callback.
    fn debug_checks(
        &self,
        py: Python<'_>,
        callback: &Bound<'_, PyAny>,
        method: &str,
        check_thread: bool,
    ) -> PyResult<()> {
        if check_thread {
            self.check_thread(py)?;
        }
        py::call_helper(py, "check_callback", (callback, method))?;
        Ok(())
    }

    /// Sets `attr` of `task` to the clock's reading, while the loop watches its tasks (from
    /// the first `oxloop.task_tree()`, or from its start while a monitor serves): the mark
    /// gives the task an instance dictionary, which costs a task's creation a third of a
    /// microsecond, too much to pay when nobody looks. A task type that takes no attributes is
    /// left unmarked.
    pub(super) fn mark_task(
        &self,
        py: Python<'_>,
        task: &Bound<'_, PyAny>,
        attr: &Bound<'_, pyo3::types::PyString>,
    ) -> PyResult<()> {
        let now = {
            let st = self.state.borrow_mut(py);
            if !st.stats.enabled || st.stats.watching_tasks == 0 {
                return Ok(());
            }
            // The loop's last reading, while it runs: the start of the running callback, or
            // the end of its step, so that no clock is read for it.
            if st.thread_id.is_some() {
                st.stats.mark
            } else {
                clock::now()
            }
        };
        match task.setattr(attr, now) {
            // A task type without an instance dictionary has no age to show.
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyAttributeError>(py) => Ok(()),
            Err(e) => super::run::only_interrupts(py, e, task),
            Ok(()) => Ok(()),
        }
    }

    /// Takes a timer out of the heap (called by `TimerHandle.cancel`).
    pub fn cancel_timer(&self, py: Python<'_>, id: TimerId) {
        let removed = self.state.borrow_mut(py).timers.cancel(id);
        drop(removed);
    }

    /// Holds a transport's writes until the running callback returns; false when no callback
    /// is running (the write goes out at once, as asyncio's does).
    pub(crate) fn cork(&self, py: Python<'_>, transport: &Bound<'_, StreamTransport>) -> bool {
        let mut st = self.state.borrow_mut(py);
        if st.dispatching {
            st.corked.push_back(transport.clone().unbind());
        }
        st.dispatching
    }

    /// Appends a handle to the ready queue.
    pub(crate) fn push_ready(&self, py: Python<'_>, handle: Py<Handle>) {
        self.state.borrow_mut(py).ready.push_back(handle);
    }

    /// Queues a handle made by `call_soon*`, hidden from the collector while the loop runs.
    ///
    /// A million queued callbacks would otherwise be traversed by every collection. Hiding is
    /// safe while the loop runs: a running loop is alive, so skipping a handle in `__traverse__`
    /// (one that someone else also holds) can only keep objects alive a little longer. When
    /// `run_forever` returns, handles left in the queue that are held elsewhere are tracked
    /// again, so a loop dropped without `close()` is still collected.
    ///
    /// `elsewhere`: queued from another thread, maybe while the loop waits, so the time the
    /// loop last read is no measure of when it became due.
    pub(super) fn push_ready_hidden(&self, py: Python<'_>, handle: &Py<Handle>, elsewhere: bool) {
        let mut st = self.state.borrow_mut(py);
        if st.thread_id.is_some() {
            py::gc_untrack(handle.bind(py).as_any());
        }
        if elsewhere && st.ready.now != 0 {
            st.ready.push_due(handle.clone_ref(py), clock::now());
        } else {
            st.ready.push_back(handle.clone_ref(py));
        }
    }

    /// Puts back under the collector the queued handles that something besides the queue
    /// holds (called when the loop stops running).
    pub(super) fn track_shared_ready(&self, py: Python<'_>) {
        let st = self.state.borrow_mut(py);
        for h in st.ready.iter() {
            py::gc_track_if_shared(h.bind(py).as_any());
        }
    }

    /// `call_soon_threadsafe(callback, *args)` from native code (executor workers): the
    /// result of a job is dropped if the loop closed meanwhile, as `wrap_future` drops it.
    pub fn call_soon_threadsafe_native(
        slf: &Bound<'_, Self>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
    ) -> PyResult<()> {
        if slf.get().state.borrow_mut(slf.py()).closed {
            return Ok(());
        }
        Self::queue_soon(slf, callback, args, None, true).map(drop)
    }

    /// A handle for `callback(*args)` on this loop.
    pub(crate) fn new_handle(
        slf: &Bound<'_, Self>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Py<PyAny>>,
        debug: bool,
    ) -> PyResult<Py<Handle>> {
        let py = slf.py();
        let handle = Handle::create(
            py,
            callback.unbind(),
            args.unbind(),
            slf.as_any(),
            context,
            debug,
        )?;
        Py::new(py, handle)
    }

    /// Gives a loop inherited through `fork()` a reactor of its own before it is used: a new
    /// epoll instance with every watcher and transport registered again, a new waker and a new
    /// signal socket. The parent's are left to the parent, so nothing the child does with
    /// the loop reaches the parent's. Called before every use of the reactor.
    pub(super) fn own_reactor(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let inherited_socket = {
            let mut st = this.state.borrow_mut(py);
            let st = &mut *st;
            let Some(registrar) = st.registrar.as_mut() else {
                return Ok(());
            };
            if !registrar.inherited() {
                return Ok(());
            }
            // Only a thread that no longer exists in this process can hold the lock.
            let mut poll = this.poll.try_lock().map_err(|_| {
                PyRuntimeError::new_err(
                    "the event loop was running in another thread when the process forked",
                )
            })?;
            let sources = st.sources.iter().enumerate().filter_map(|(slot, t)| {
                let token = mio::Token(reactor::SOURCE_TOKEN_BASE + slot);
                t.as_ref().map(|t| (t.get().fd(), token))
            });
            let poller = registrar.rebuild(sources).map_err(os_error)?;
            let socket = SignalSocket::new().map_err(os_error)?;
            registrar
                .register_token(socket.read_fd(), reactor::SIGNAL_TOKEN)
                .map_err(os_error)?;
            *this.waker.lock().map_err(|_| poisoned())? = registrar.waker();
            // A wake-up in flight at the fork went to the old instance: the next one must not
            // be skipped as already on its way.
            this.wake_pending.store(false, Ordering::Release);
            if let Some(state) = poll.as_mut() {
                state.poller = poller;
            }
            st.signal_socket.replace(socket)
        };
        if let Some(old) = inherited_socket {
            slf.call_method1(
                pyo3::intern!(py, "_signal_socket_replaced"),
                (old.write_fd(),),
            )?;
        }
        Ok(())
    }

    /// Registers a native transport's fd with the reactor; returns its slot (the fd).
    pub(crate) fn register_source(
        slf: &Bound<'_, Self>,
        fd: RawFd,
        transport: Py<StreamTransport>,
    ) -> PyResult<usize> {
        let py = slf.py();
        Self::own_reactor(slf)?;
        let mut st = slf.get().state.borrow_mut(py);
        let st = &mut *st;
        let registrar = st.registrar.as_ref().ok_or_else(loop_closed)?;
        let slot = usize::try_from(fd)
            .map_err(|_| os_error(std::io::Error::from_raw_os_error(libc::EBADF)))?;
        if st.sources.get(slot).is_some_and(Option::is_some) {
            return Err(os_error(std::io::Error::from_raw_os_error(libc::EEXIST)));
        }
        registrar
            .register_source(fd, mio::Token(reactor::SOURCE_TOKEN_BASE + slot))
            .map_err(os_error)?;
        if slot >= st.sources.len() {
            st.sources.resize_with(slot + 1, || None);
        }
        st.sources[slot] = Some(transport);
        Ok(slot)
    }

    /// Undoes `register_source`. `closing`: the caller owns the fd and closes it next, which
    /// takes it out of the epoll set without an `epoll_ctl` (nothing else holds the file
    /// open: the descriptor never left the transport).
    pub(crate) fn deregister_source(
        slf: &Bound<'_, Self>,
        fd: RawFd,
        slot: usize,
        closing: bool,
    ) -> PyResult<()> {
        let py = slf.py();
        Self::own_reactor(slf)?;
        let released = {
            let mut st = slf.get().state.borrow_mut(py);
            let st = &mut *st;
            let result = match st.registrar.as_ref() {
                Some(r) if !closing => r.deregister_source(fd).map_err(os_error),
                _ => Ok(()),
            };
            let released = st.sources.get_mut(slot).and_then(Option::take);
            result.map(|()| released)
        };
        // Dropped outside the borrow.
        drop(released);
        Ok(())
    }

    /// The transport registered in `slot`, if any.
    pub(super) fn source(&self, py: Python<'_>, slot: usize) -> Option<Py<StreamTransport>> {
        let st = self.state.borrow_mut(py);
        st.sources
            .get(slot)
            .and_then(|t| t.as_ref().map(|t| t.clone_ref(py)))
    }

    /// `call_soon` and `call_soon_threadsafe`: the latter skips the thread check and wakes
    /// the poller.
    fn queue_soon(
        slf: &Bound<'_, Self>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Py<PyAny>>,
        threadsafe: bool,
    ) -> PyResult<Py<Handle>> {
        let py = slf.py();
        let this = slf.get();
        let debug = this.check_closed(py)?;
        if debug {
            let method = if threadsafe {
                "call_soon_threadsafe"
            } else {
                "call_soon"
            };
            this.debug_checks(py, &callback, method, !threadsafe)?;
        }
        let handle = Self::new_handle(slf, callback, args, context, debug)?;
        this.push_ready_hidden(py, &handle, threadsafe);
        if threadsafe {
            this.wake()?;
        }
        Ok(handle)
    }

    /// Interrupts the poller if it might be waiting, at most once per iteration.
    pub(super) fn wake(&self) -> PyResult<()> {
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            let waker = self.waker.lock().map_err(|_| poisoned())?;
            waker.wake().map_err(os_error)?;
        }
        Ok(())
    }

    fn schedule_at(
        slf: &Bound<'_, Self>,
        when: f64,
        when_obj: Py<PyAny>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Py<PyAny>>,
        method: &str,
    ) -> PyResult<Py<TimerHandle>> {
        let py = slf.py();
        let this = slf.get();
        let debug = this.check_closed(py)?;
        if debug {
            this.debug_checks(py, &callback, method, true)?;
        }
        let base = Handle::create(
            py,
            callback.unbind(),
            args.unbind(),
            slf.as_any(),
            context,
            debug,
        )?;
        // Timer handles stay under the collector's watch: callers usually keep them (to cancel
        // them), and a kept handle in a cycle must be visible for the cycle to be found.
        let handle = Py::new(py, TimerHandle::create(when_obj, base))?;
        let id = this
            .state
            .borrow_mut(py)
            .timers
            .push(when, handle.clone_ref(py));
        handle.get().set_timer(py, Some(id));
        Ok(handle)
    }
}

/// Lets go of queued handles, handing any that someone else still holds back to the collector.
fn release_handles(py: Python<'_>, ready: Vec<Py<Handle>>, timers: Vec<Py<TimerHandle>>) {
    for h in ready {
        py::gc_track_if_shared(h.bind(py).as_any());
    }
    for h in timers {
        py::gc_track_if_shared(h.bind(py).as_any());
    }
}

#[pymethods]
impl LoopCore {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn py_new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let (poller, registrar) = reactor::new().map_err(os_error)?;
        let signal_socket = SignalSocket::new().map_err(os_error)?;
        registrar
            .register_token(signal_socket.read_fd(), reactor::SIGNAL_TOKEN)
            .map_err(os_error)?;
        let waker = registrar.waker();
        Ok(LoopCore {
            state: GilCell::new(State {
                ready: ReadyQueue::default(),
                timers: TimerHeap::new(),
                registrar: Some(registrar),
                readers: HashMap::new(),
                writers: HashMap::new(),
                signal_socket: Some(signal_socket),
                stopping: false,
                closed: false,
                debug: false,
                thread_id: None,
                slow_callback_duration: 0.1,
                task_factory: None,
                clock_override: false,
                run_once_override: false,
                sources: Vec::new(),
                dispatching: false,
                corked: VecDeque::new(),
                stats: Stats::new(std::env::var_os("OXLOOP_STATS").map_or(true, |v| v != "0")),
            }),
            poll: Mutex::new(Some(PollState {
                poller,
                events: Vec::with_capacity(64),
                signals: Vec::new(),
            })),
            waker: Mutex::new(waker),
            wake_pending: AtomicBool::new(false),
        })
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        let Some(st) = self.state.try_borrow_for_gc() else {
            return Ok(());
        };
        for h in st.ready.iter() {
            // Handles queued by `call_soon` are hidden from the collector (see `gc_untrack`).
            // One the queue alone owns is part of the loop: its references are the loop's.
            // One someone else also holds is skipped, which can only keep objects alive, never
            // free live ones: a dropped, unclosed loop waits for that holder to let go.
            match py::gc_ownership(h.as_any()) {
                py::GcOwnership::Tracked => visit.call(h)?,
                py::GcOwnership::UntrackedExclusive => h.get().traverse_contents(&visit)?,
                py::GcOwnership::UntrackedShared => {}
            }
        }
        for h in st.timers.iter() {
            visit.call(h)?;
        }
        for h in st.readers.values().chain(st.writers.values()) {
            visit.call(h)?;
        }
        for t in st.sources.iter().flatten().chain(st.corked.iter()) {
            visit.call(t)?;
        }
        visit.call(&st.task_factory)
    }

    fn __clear__(&self, py: Python<'_>) {
        let (ready, timers, released) = {
            let Some(mut st) = self.state.try_borrow_mut(py) else {
                return;
            };
            (
                st.ready.take_all(),
                st.timers.drain(),
                (
                    std::mem::take(&mut st.readers),
                    std::mem::take(&mut st.writers),
                    st.task_factory.take(),
                    std::mem::take(&mut st.sources),
                    std::mem::take(&mut st.corked),
                ),
            )
        };
        release_handles(py, ready, timers);
        drop(released);
    }

    /// The loop's clock: `time.monotonic()`.
    fn time(&self) -> f64 {
        timers::monotonic()
    }

    /// Schedules `callback(*args)` for the next iteration.
    #[pyo3(signature = (callback, *args, context=None))]
    fn call_soon(
        slf: &Bound<'_, Self>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Py<Handle>> {
        Self::queue_soon(slf, callback, args, context, false)
    }

    /// Like `call_soon`, from any thread: wakes the loop if it is waiting.
    #[pyo3(signature = (callback, *args, context=None))]
    fn call_soon_threadsafe(
        slf: &Bound<'_, Self>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Py<Handle>> {
        Self::queue_soon(slf, callback, args, context, true)
    }

    /// Schedules `callback(*args)` to run `delay` seconds from now.
    #[pyo3(signature = (delay, callback, *args, context=None))]
    fn call_later(
        slf: &Bound<'_, Self>,
        delay: Option<f64>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Py<TimerHandle>> {
        let Some(delay) = delay else {
            return Err(PyTypeError::new_err("delay must not be None"));
        };
        let when = Self::now(slf)? + delay;
        Self::schedule_at(
            slf,
            when,
            pyo3::types::PyFloat::new(slf.py(), when)
                .into_any()
                .unbind(),
            callback,
            args,
            context,
            "call_at",
        )
    }

    /// Schedules `callback(*args)` at `when` on the loop's clock.
    #[pyo3(signature = (when, callback, *args, context=None))]
    fn call_at(
        slf: &Bound<'_, Self>,
        when: Option<Bound<'_, PyAny>>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Py<TimerHandle>> {
        let Some(when) = when else {
            return Err(PyTypeError::new_err("when cannot be None"));
        };
        let when_f = when.extract::<f64>()?;
        Self::schedule_at(
            slf,
            when_f,
            when.unbind(),
            callback,
            args,
            context,
            "call_at",
        )
    }

    /// A new `asyncio.Future` attached to this loop.
    pub(crate) fn create_future<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        static KW: py::KwNames = py::KwNames::new(&["loop"]);
        let py = slf.py();
        py::vectorcall(py::future_type(py)?, &[], &[slf.as_any()], KW.get(py)?)
    }

    /// Wraps a coroutine in a Task (through the task factory, if one is set).
    #[pyo3(signature = (coro, *, name=None, context=None, **kwargs))]
    fn create_task<'py>(
        slf: &Bound<'py, Self>,
        coro: Bound<'py, PyAny>,
        name: Option<Bound<'py, PyAny>>,
        context: Option<Bound<'py, PyAny>>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let debug = this.check_closed(py)?;
        let factory = this
            .state
            .borrow_mut(py)
            .task_factory
            .as_ref()
            .map(|f| f.clone_ref(py));
        if factory.is_some() || debug || kwargs.is_some_and(|k| !k.is_empty()) {
            return py::call_helper(
                py,
                "create_task",
                (slf, coro, name, context, factory, kwargs),
            );
        }
        static KW_LOOP: py::KwNames = py::KwNames::new(&["loop"]);
        static KW_NAME: py::KwNames = py::KwNames::new(&["loop", "name"]);
        static KW_CONTEXT: py::KwNames = py::KwNames::new(&["loop", "context"]);
        static KW_BOTH: py::KwNames = py::KwNames::new(&["loop", "name", "context"]);
        let task = py::task_type(py)?;
        let this_loop = slf.as_any();
        let task = match (&name, &context) {
            (None, None) => py::vectorcall(task, &[&coro], &[this_loop], KW_LOOP.get(py)?),
            (Some(n), None) => py::vectorcall(task, &[&coro], &[this_loop, n], KW_NAME.get(py)?),
            (None, Some(c)) => py::vectorcall(task, &[&coro], &[this_loop, c], KW_CONTEXT.get(py)?),
            (Some(n), Some(c)) => {
                py::vectorcall(task, &[&coro], &[this_loop, n, c], KW_BOTH.get(py)?)
            }
        }?;
        this.mark_task(py, &task, pyo3::intern!(py, "_oxloop_created"))?;
        Ok(task)
    }

    /// Marks a task the loop made with when (`oxloop.task_tree()` tells its age).
    #[pyo3(name = "_mark_created")]
    fn mark_created(&self, py: Python<'_>, task: &Bound<'_, PyAny>) -> PyResult<()> {
        self.mark_task(py, task, pyo3::intern!(py, "_oxloop_created"))
    }

    /// The clock `oxloop.task_tree()` reads the tasks' marks with: now, ticks per second, and
    /// since when task steps are marked. The first call starts marking them.
    fn _task_clock(&self, py: Python<'_>) -> (u64, f64, u64) {
        let mut st = self.state.borrow_mut(py);
        let now = clock::now();
        if st.stats.watching_tasks == 0 && st.stats.enabled {
            st.stats.watching_tasks = now;
        }
        let since = if st.stats.watching_tasks == 0 {
            now
        } else {
            st.stats.watching_tasks
        };
        (now, st.stats.refresh_rate(), since)
    }

    fn set_task_factory(&self, py: Python<'_>, factory: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        if let Some(f) = &factory {
            if !f.is_callable() {
                return Err(PyTypeError::new_err(
                    "task factory must be a callable or None",
                ));
            }
        }
        let previous = std::mem::replace(
            &mut self.state.borrow_mut(py).task_factory,
            factory.map(Bound::unbind),
        );
        // Released outside the borrow: the old factory's `__del__` may call into the loop.
        drop(previous);
        Ok(())
    }

    fn get_task_factory(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.state
            .borrow_mut(py)
            .task_factory
            .as_ref()
            .map(|f| f.clone_ref(py))
    }

    /// Makes `run_forever` return after the current iteration.
    fn stop(&self, py: Python<'_>) {
        self.state.borrow_mut(py).stopping = true;
    }

    fn is_running(&self, py: Python<'_>) -> bool {
        self.state.borrow_mut(py).thread_id.is_some()
    }

    fn is_closed(&self, py: Python<'_>) -> bool {
        self.state.borrow_mut(py).closed
    }

    fn get_debug(&self, py: Python<'_>) -> bool {
        self.debug(py)
    }

    /// Tells the core which extension points the Python class overrides (`time`, `_run_once`),
    /// as asyncio's own loop honours them: simulated clocks and test loops subclass them.
    fn _configure_overrides(&self, py: Python<'_>, clock: bool, run_once: bool) {
        let mut st = self.state.borrow_mut(py);
        st.clock_override = clock;
        st.run_once_override = run_once;
    }

    #[pyo3(name = "_set_debug_flag")]
    fn set_debug_flag(&self, py: Python<'_>, enabled: bool) {
        self.state.borrow_mut(py).debug = enabled;
    }

    #[getter]
    fn get_slow_callback_duration(&self, py: Python<'_>) -> f64 {
        self.state.borrow_mut(py).slow_callback_duration
    }

    #[setter]
    fn set_slow_callback_duration(&self, py: Python<'_>, value: f64) {
        self.state.borrow_mut(py).slow_callback_duration = value;
    }

    #[getter]
    fn _thread_id(&self, py: Python<'_>) -> Option<u64> {
        self.state.borrow_mut(py).thread_id
    }

    #[getter]
    fn _stopping(&self, py: Python<'_>) -> bool {
        self.state.borrow_mut(py).stopping
    }

    /// The statistics' raw snapshot, for `Loop.stats()`: times in seconds.
    fn _stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        // Read out whole before any Python object is made: making one can run a collection,
        // and a finaliser it runs may use the loop.
        let (counts, times, lag, buckets, slowest) = {
            let mut st = self.state.borrow_mut(py);
            let st = &mut *st;
            let rate = st.stats.refresh_rate();
            let secs = |t: u64| t as f64 / rate;
            let s = &st.stats;
            let counts = [
                ("iterations", s.iterations),
                ("callbacks", s.callbacks),
                ("io_events", s.io_events),
                ("timers_fired", s.timers_fired),
                ("lag_count", s.lag.count()),
                ("ready", st.ready.len() as u64),
                ("timers", st.timers.len() as u64),
                ("readers", st.readers.len() as u64),
                ("writers", st.writers.len() as u64),
                (
                    "native_transports",
                    st.sources.iter().flatten().count() as u64,
                ),
            ];
            let times = [
                ("uptime", secs(clock::now().saturating_sub(s.created))),
                ("poll_time", secs(s.poll_ticks)),
                ("callback_time", secs(s.callback_ticks)),
            ];
            let lag = [
                ("lag_sum", secs(s.lag.sum())),
                ("lag_p50", secs(s.lag.quantile(0.5))),
                ("lag_p99", secs(s.lag.quantile(0.99))),
                ("lag_max", secs(s.lag.max())),
            ];
            let buckets: Vec<(f64, u64)> = s
                .lag
                .buckets()
                .into_iter()
                .map(|(upper, n)| (secs(upper), n))
                .collect();
            let slowest: Vec<(f64, Py<PyAny>, f64)> = s
                .slowest
                .entries()
                .iter()
                .map(|(took, (what, at))| (secs(*took), what.clone_ref(py), *at))
                .collect();
            (counts, times, lag, buckets, slowest)
        };
        let out = PyDict::new(py);
        out.set_item("enabled", self.state.borrow_mut(py).stats.enabled)?;
        for (k, v) in counts {
            out.set_item(k, v)?;
        }
        for (k, v) in times.into_iter().chain(lag) {
            out.set_item(k, v)?;
        }
        out.set_item("lag_buckets", buckets)?;
        out.set_item("slowest", slowest)?;
        Ok(out)
    }

    /// Whether the loop keeps its statistics.
    #[getter]
    fn get_stats_enabled(&self, py: Python<'_>) -> bool {
        self.state.borrow_mut(py).stats.enabled
    }

    #[setter]
    fn set_stats_enabled(&self, py: Python<'_>, enabled: bool) {
        let mut st = self.state.borrow_mut(py);
        if enabled && !st.stats.enabled {
            st.stats.skip();
        }
        if !enabled {
            st.ready.now = 0;
        }
        st.stats.enabled = enabled;
    }

    /// Number of callbacks waiting for the next iteration.
    #[getter]
    fn _ready_count(&self, py: Python<'_>) -> usize {
        self.state.borrow_mut(py).ready.len()
    }

    /// Number of pending timers (cancelled ones are not counted: they leave the heap).
    #[getter]
    fn _timer_count(&self, py: Python<'_>) -> usize {
        self.state.borrow_mut(py).timers.len()
    }

    /// Queues an existing handle for the next iteration (signal delivery).
    fn _add_callback(&self, py: Python<'_>, handle: Py<Handle>) -> PyResult<()> {
        self.push_ready(py, handle);
        self.wake()
    }

    /// The fd to pass to `signal.set_wakeup_fd`.
    fn _signal_wakeup_fd(&self, py: Python<'_>) -> PyResult<RawFd> {
        match &self.state.borrow_mut(py).signal_socket {
            Some(s) => Ok(s.write_fd()),
            None => Err(loop_closed()),
        }
    }

    /// Runs iterations until `stop()`; the Python `run_forever` wraps it with the set-up
    /// asyncio does around its loop.
    fn _run(slf: &Bound<'_, Self>) -> PyResult<()> {
        super::run::run_forever(slf)
    }

    /// Runs exactly one iteration; `max_wait` caps how long it may wait for I/O.
    #[pyo3(signature = (max_wait=None))]
    fn _run_once(slf: &Bound<'_, Self>, max_wait: Option<f64>) -> PyResult<()> {
        super::run::run_once(slf, max_wait)
    }

    /// Drops every scheduled callback and releases the poller: the native half of `close()`.
    fn _close_core(&self, py: Python<'_>) -> PyResult<()> {
        if self.state.borrow_mut(py).thread_id.is_some() {
            return Err(PyRuntimeError::new_err("Cannot close a running event loop"));
        }
        let (ready, timers, readers, writers, registrar, signal_socket, sources) = {
            let mut st = self.state.borrow_mut(py);
            st.closed = true;
            (
                st.ready.take_all(),
                st.timers.drain(),
                std::mem::take(&mut st.readers),
                std::mem::take(&mut st.writers),
                st.registrar.take(),
                st.signal_socket.take(),
                std::mem::take(&mut st.sources),
            )
        };
        release_handles(py, ready, timers);
        // Dropped outside the borrow: releasing handles can run arbitrary `__del__` code.
        drop((readers, writers, registrar, signal_socket, sources));
        let poll = self.poll.lock().map_err(|_| poisoned())?.take();
        drop(poll);
        Ok(())
    }

    /// asyncio's `_add_reader`: no check for a transport owning the fd; returns the handle.
    #[pyo3(signature = (fd, callback, *args))]
    fn _add_reader(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
    ) -> PyResult<Py<Handle>> {
        super::io::add_watcher(slf, fd, callback, args, super::io::Direction::Read)
    }

    #[pyo3(signature = (fd, callback, *args))]
    fn _add_writer(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
    ) -> PyResult<Py<Handle>> {
        super::io::add_watcher(slf, fd, callback, args, super::io::Direction::Write)
    }

    fn _remove_reader(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        super::io::remove_watcher(slf, fd, super::io::Direction::Read)
    }

    fn _remove_writer(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        super::io::remove_watcher(slf, fd, super::io::Direction::Write)
    }

    /// The `selectors` event mask of the watchers on `fd` (0 when none).
    fn _fd_events(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>) -> PyResult<u8> {
        super::io::watched_events(slf, fd)
    }

    /// The Python face of the native transport registered on `fd`, if any.
    fn _native_transport(&self, py: Python<'_>, fd: i64) -> Option<Py<PyAny>> {
        let slot = usize::try_from(fd).ok()?;
        self.source(py, slot)?.get().face(py)
    }
}
