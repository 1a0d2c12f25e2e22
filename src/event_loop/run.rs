//! One iteration of the loop, the way asyncio's `BaseEventLoop._run_once` does it: wait for I/O
//! (not at all if callbacks are ready), queue the I/O callbacks, then the due timers, then run
//! exactly the callbacks queued so far. Callbacks they schedule wait for the next iteration.

use std::sync::atomic::Ordering;
use std::time::Duration;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use super::core::{LoopCore, PollState, MAX_POLL_TIMEOUT};
use crate::errors::{os_error, poisoned};
use crate::handles::{run_handle, Handle};
use crate::py;
use crate::reactor::{IoEvent, SIGNAL_TOKEN, SOURCE_TOKEN_BASE, WAKER_TOKEN};
use crate::timers;

/// Runs iterations until `stop()` is called or a callback raises `KeyboardInterrupt` /
/// `SystemExit` (or the loop itself fails).
pub(super) fn run_forever(slf: &Bound<'_, LoopCore>) -> PyResult<()> {
    let py = slf.py();
    let this = slf.get();
    {
        let mut st = this.state.borrow_mut(py);
        if st.closed {
            return Err(crate::errors::loop_closed());
        }
        if st.thread_id.is_some() {
            return Err(PyRuntimeError::new_err(
                "This event loop is already running",
            ));
        }
        st.thread_id = Some(py::thread_ident(py));
        // The time the loop was not running is neither waiting nor running callbacks.
        if st.stats.enabled {
            st.stats.skip();
        }
    }
    let custom_iteration = this.state.borrow_mut(py).run_once_override;
    let result = loop {
        let ran = if custom_iteration {
            slf.call_method0(pyo3::intern!(py, "_run_once")).map(drop)
        } else {
            run_once(slf, None)
        };
        if let Err(e) = ran {
            break Err(e);
        }
        if this.state.borrow_mut(py).stopping {
            break Ok(());
        }
    };
    {
        let mut st = this.state.borrow_mut(py);
        if st.stats.span_open() {
            st.stats.close_span();
        }
        st.stopping = false;
        st.thread_id = None;
        // Callbacks queued while the loop is not running are due whenever it next runs.
        st.ready.now = 0;
    }
    this.track_shared_ready(py);
    result
}

/// Ends the span of callbacks not counted yet before a wait (see `Stats::before_wait`).
fn close_open_span(this: &LoopCore, py: Python<'_>) {
    this.state.borrow_mut(py).stats.before_wait();
}

/// How long the next wait may last: not at all if anything is ready or the loop is stopping,
/// until the next timer if there is one, else indefinitely (capped as asyncio caps it).
fn poll_timeout(slf: &Bound<'_, LoopCore>) -> PyResult<Option<Duration>> {
    let next = {
        let mut st = slf.get().state.borrow_mut(slf.py());
        if !st.ready.is_empty() || st.stopping {
            return Ok(Some(Duration::ZERO));
        }
        st.timers.next_deadline()
    };
    let Some(when) = next else {
        return Ok(None);
    };
    let wait = (when - LoopCore::now(slf)?).clamp(0.0, MAX_POLL_TIMEOUT);
    Ok(Some(Duration::from_secs_f64(wait)))
}

/// One iteration; `max_wait` caps the poller's wait (a test loop with a simulated clock
/// passes 0, as asyncio's TestLoop uses a selector that never blocks).
pub(super) fn run_once(slf: &Bound<'_, LoopCore>, max_wait: Option<f64>) -> PyResult<()> {
    let py = slf.py();
    let this = slf.get();
    LoopCore::own_reactor(slf)?;
    let mut timeout = poll_timeout(slf)?;
    if let Some(cap) = max_wait {
        let cap = Duration::from_secs_f64(cap.clamp(0.0, MAX_POLL_TIMEOUT));
        timeout = Some(timeout.map_or(cap, |t| t.min(cap)));
    }
    let blocking = timeout != Some(Duration::ZERO);
    if blocking {
        // A signal that arrived while callbacks ran must not wait for the poller's timeout.
        py.check_signals()?;
        // Callbacks not counted yet are callback time, not waiting.
        close_open_span(this, py);
    }

    let mut guard = this.poll.lock().map_err(|_| poisoned())?;
    let Some(state) = guard.as_mut() else {
        return Err(crate::errors::loop_closed());
    };
    state.events.clear();
    let polled = if blocking {
        let PollState { poller, events, .. } = state;
        py.detach(|| poller.poll(timeout, events))
    } else {
        state.poller.poll(timeout, &mut state.events)
    };
    match polled {
        Ok(()) => {}
        // Interrupted by a signal: its Python-level handler runs now (Ctrl-C raises here).
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => py.check_signals()?,
        Err(e) => return Err(os_error(e)),
    }
    let events = std::mem::take(&mut state.events);
    let mut signals = std::mem::take(&mut state.signals);
    drop(guard);

    {
        let mut st = this.state.borrow_mut(py);
        if st.stats.enabled {
            st.ready.now = st.stats.polled(events.len(), blocking);
        }
    }
    let outcome = process_events(slf, &events, &mut signals);
    if let Ok(mut guard) = this.poll.lock() {
        if let Some(state) = guard.as_mut() {
            state.events = events;
            signals.clear();
            state.signals = signals;
        }
    }
    outcome?;

    queue_due_timers(slf)?;
    run_ready(slf)
}

fn process_events(
    slf: &Bound<'_, LoopCore>,
    events: &[IoEvent],
    signals: &mut Vec<u8>,
) -> PyResult<()> {
    let py = slf.py();
    let this = slf.get();
    for ev in events {
        if ev.token == WAKER_TOKEN {
            this.wake_pending.store(false, Ordering::Release);
        } else if ev.token == SIGNAL_TOKEN {
            let mut st = this.state.borrow_mut(py);
            if let Some(sock) = st.signal_socket.as_mut() {
                sock.drain(signals).map_err(os_error)?;
            }
        } else if ev.token.0 >= SOURCE_TOKEN_BASE {
            if let Some(t) = this.source(py, ev.token.0 - SOURCE_TOKEN_BASE) {
                t.get().on_ready(py, ev);
            }
        } else {
            let fd = ev.token.0 as std::os::fd::RawFd;
            let (reader, writer) = {
                let st = this.state.borrow_mut(py);
                let reader = if ev.readable {
                    st.readers.get(&fd).map(|h| h.clone_ref(py))
                } else {
                    None
                };
                let writer = if ev.writable {
                    st.writers.get(&fd).map(|h| h.clone_ref(py))
                } else {
                    None
                };
                (reader, writer)
            };
            if let Some(h) = reader {
                queue_io_callback(slf, h, fd, super::io::Direction::Read)?;
            }
            if let Some(h) = writer {
                queue_io_callback(slf, h, fd, super::io::Direction::Write)?;
            }
        }
    }
    for sig in signals.drain(..) {
        slf.call_method1(pyo3::intern!(py, "_handle_signal"), (sig,))?;
    }
    Ok(())
}

fn queue_io_callback(
    slf: &Bound<'_, LoopCore>,
    handle: Py<Handle>,
    fd: std::os::fd::RawFd,
    dir: super::io::Direction,
) -> PyResult<()> {
    let py = slf.py();
    if handle.get().is_cancelled(py) {
        let fd = fd.into_pyobject(py)?;
        match dir {
            super::io::Direction::Read => {
                slf.call_method1(pyo3::intern!(py, "remove_reader"), (fd,))?
            }
            super::io::Direction::Write => {
                slf.call_method1(pyo3::intern!(py, "remove_writer"), (fd,))?
            }
        };
    } else {
        slf.get().push_ready(py, handle);
    }
    Ok(())
}

fn queue_due_timers(slf: &Bound<'_, LoopCore>) -> PyResult<()> {
    let py = slf.py();
    if slf.get().state.borrow_mut(py).timers.is_empty() {
        return Ok(());
    }
    let now = LoopCore::now(slf)?;
    let mut st = slf.get().state.borrow_mut(py);
    let st = &mut *st;
    // A timer was due at its deadline, which the loop's clock places `now - when` before the
    // last reading; a subclass's own clock has no such relation to it.
    let timed = st.stats.enabled && st.ready.now != 0 && !st.clock_override;
    while let Some((when, timer)) = st.timers.pop_due_with_deadline(now) {
        timer.get().set_timer(py, None);
        let handle: Py<Handle> = timer.into_bound(py).into_super().unbind();
        st.stats.timers_fired += 1;
        if timed {
            let due = st.stats.before(st.ready.now, now - when);
            st.ready.push_due(handle, due);
        } else {
            st.ready.push_back(handle);
        }
    }
    Ok(())
}

fn run_ready(slf: &Bound<'_, LoopCore>) -> PyResult<()> {
    let py = slf.py();
    let this = slf.get();
    let (ntodo, debug, stats) = {
        let mut st = this.state.borrow_mut(py);
        st.dispatching = true;
        (st.ready.len(), st.debug, st.stats.enabled)
    };
    let result = run_callbacks(slf, ntodo, debug, stats);
    this.state.borrow_mut(py).dispatching = false;
    result
}

fn run_callbacks(
    slf: &Bound<'_, LoopCore>,
    ntodo: usize,
    debug: bool,
    stats: bool,
) -> PyResult<()> {
    let py = slf.py();
    let this = slf.get();
    let mut left = ntodo;
    // The callback that ran last, until it is counted (after what it wrote is sent).
    let mut done: Option<(Bound<'_, Handle>, u64)> = None;
    loop {
        // Dropped when this turn ends, after the state's borrow: releasing the last
        // reference to a handle may run any `__del__`.
        let finished = done.take();
        // One look at the state between callbacks: what the last one wrote goes out first,
        // then it is counted, then the next is taken.
        let (handle, due) = {
            let mut st = this.state.borrow_mut(py);
            if !st.corked.is_empty() {
                drop(st);
                done = finished;
                uncork_all(slf)?;
                continue;
            }
            if let Some((handle, due)) = &finished {
                let mut closed = st.stats.ran(*due);
                if closed.is_none() && st.ready.is_empty() {
                    // The loop is about to wait: the span ends here, while the callback that
                    // ended it can still be named. (Before an iteration that cannot wait the
                    // span stays open, so a flood of tiny callbacks costs no reading each.)
                    closed = Some(st.stats.close_span());
                }
                if closed.is_some() {
                    st.ready.now = st.stats.mark;
                }
                let watching = st.stats.watching_tasks != 0;
                let slow = closed.filter(|&(took, n)| {
                    st.stats.slowest.admits(took) && (n == 1 || is_stall(&mut st.stats, took))
                });
                if slow.is_some() || watching {
                    drop(st);
                    look_closer(slf, handle, slow, watching)?;
                    continue;
                }
            }
            if left == 0 {
                return Ok(());
            }
            left -= 1;
            match st.ready.pop_front() {
                Some((h, due)) => (h.into_bound(py), due),
                None => return Ok(()),
            }
        };
        if handle.get().is_cancelled(py) {
            continue;
        }
        let result = if debug {
            run_timed(slf, &handle)
        } else {
            run_handle(&handle)
        };
        // The queue's reference ends here; if the handle lives on, the collector must see it.
        py::gc_track_if_shared(handle.as_any());
        if let Err(e) = result {
            return Err(flush_corked_after(slf, e));
        }
        if stats {
            done = Some((handle, due));
        }
    }
}

/// A span of several tiny callbacks took long enough that one of them must have stalled the
/// loop (a millisecond, where each took under `CHEAP_CALLBACK` before).
fn is_stall(stats: &mut crate::stats::Stats<(Py<PyAny>, f64)>, took: u64) -> bool {
    took as f64 >= stats.rate() * 1e-3
}

/// Sends what the callbacks that just ran wrote.
fn uncork_all(slf: &Bound<'_, LoopCore>) -> PyResult<()> {
    let py = slf.py();
    loop {
        let Some(transport) = slf.get().state.borrow_mut(py).corked.pop_front() else {
            return Ok(());
        };
        if let Err(e) = transport.get().uncork(py) {
            return Err(flush_corked_after(slf, e));
        }
    }
}

/// What a counted callback needs besides its counts: the end of its step marked on its task
/// while the loop watches tasks; a description if its span (`took`, holding `count`
/// callbacks) is among the slowest, made now while what it ran is at hand. A span of several
/// is named as such: which of them stalled is not known.
fn look_closer(
    slf: &Bound<'_, LoopCore>,
    handle: &Bound<'_, Handle>,
    slow: Option<(u64, u32)>,
    watching: bool,
) -> PyResult<()> {
    let py = slf.py();
    if watching {
        mark_task_step(slf, handle)?;
    }
    let Some((took, count)) = slow else {
        return Ok(());
    };
    let what = describe(handle)?;
    let what = if count > 1 {
        let text = format!("one of {count} callbacks timed together, the last {what}");
        pyo3::types::PyString::new(py, &text).into_any().unbind()
    } else {
        what
    };
    keep_slow(slf, took, what);
    Ok(())
}

/// `describe_callback(handle)`: what a slow callback ran.
fn describe(handle: &Bound<'_, Handle>) -> PyResult<Py<PyAny>> {
    let py = handle.py();
    match py::call_helper(py, "describe_callback", (handle,)) {
        Ok(what) => Ok(what.unbind()),
        Err(e) => {
            only_interrupts(py, e, handle.as_any())?;
            Ok(pyo3::intern!(py, "?").clone().into_any().unbind())
        }
    }
}

/// The statistics never disturb the program: what fails in them is reported as unraisable,
/// except what stops a program (Ctrl-C's `KeyboardInterrupt`, `SystemExit`), which may arrive
/// while their Python code runs and leaves the loop as it would from a callback.
pub(super) fn only_interrupts(py: Python<'_>, e: PyErr, about: &Bound<'_, PyAny>) -> PyResult<()> {
    if e.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py)
        || e.is_instance_of::<pyo3::exceptions::PySystemExit>(py)
    {
        return Err(e);
    }
    e.write_unraisable(py, Some(about));
    Ok(())
}

/// Keeps `what`, which took `took` ticks, among the slowest, with the time it ended.
fn keep_slow(slf: &Bound<'_, LoopCore>, took: u64, what: Py<PyAny>) {
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    slf.get()
        .state
        .borrow_mut(slf.py())
        .stats
        .slowest
        .insert(took, (what, at));
}

/// Marks the end of a task's step on the task (`oxloop.task_tree()` tells how long each task
/// has been idle from these).
fn mark_task_step(slf: &Bound<'_, LoopCore>, handle: &Bound<'_, Handle>) -> PyResult<()> {
    let py = slf.py();
    let Some(callback) = handle.get().callback(py) else {
        return Ok(());
    };
    let owner = match callback.getattr_opt(pyo3::intern!(py, "__self__")) {
        Ok(Some(owner)) => owner,
        Ok(None) => return Ok(()),
        Err(e) => return only_interrupts(py, e, handle.as_any()),
    };
    if owner.is_instance(py::task_type(py)?)? {
        slf.get()
            .mark_task(py, &owner, pyo3::intern!(py, "_oxloop_ran"))?;
    }
    Ok(())
}

/// Sends what is still corked when `err` ends the batch early, and returns `err`: a send that
/// fails too is reported as unraisable, since only one exception leaves the loop.
fn flush_corked_after(slf: &Bound<'_, LoopCore>, err: PyErr) -> PyErr {
    let py = slf.py();
    loop {
        let Some(transport) = slf.get().state.borrow_mut(py).corked.pop_front() else {
            return err;
        };
        if let Err(later) = transport.get().uncork(py) {
            later.write_unraisable(py, None);
        }
    }
}

/// Debug mode: runs a callback and logs it if it took `slow_callback_duration` or longer.
fn run_timed(slf: &Bound<'_, LoopCore>, handle: &Bound<'_, Handle>) -> PyResult<()> {
    let py = slf.py();
    let start = timers::monotonic();
    let result = run_handle(handle);
    let took = timers::monotonic() - start;
    let limit = slf.get().state.borrow_mut(py).slow_callback_duration;
    if took >= limit {
        py::call_helper(py, "log_slow_callback", (handle, took))?;
    }
    result
}
