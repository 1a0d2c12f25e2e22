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
        st.stopping = false;
        st.thread_id = None;
    }
    this.track_shared_ready(py);
    result
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
    while let Some(timer) = st.timers.pop_due(now) {
        timer.get().set_timer(py, None);
        let handle: Py<Handle> = timer.into_bound(py).into_super().unbind();
        st.ready.push_back(handle);
    }
    Ok(())
}

fn run_ready(slf: &Bound<'_, LoopCore>) -> PyResult<()> {
    let py = slf.py();
    let this = slf.get();
    let (ntodo, debug) = {
        let mut st = this.state.borrow_mut(py);
        st.dispatching = true;
        (st.ready.len(), st.debug)
    };
    let result = run_callbacks(slf, ntodo, debug);
    this.state.borrow_mut(py).dispatching = false;
    result
}

fn run_callbacks(slf: &Bound<'_, LoopCore>, ntodo: usize, debug: bool) -> PyResult<()> {
    let py = slf.py();
    let this = slf.get();
    let mut left = ntodo;
    loop {
        // One look at the state between callbacks: what the last one wrote goes out first.
        let handle = {
            let mut st = this.state.borrow_mut(py);
            if let Some(transport) = st.corked.pop_front() {
                drop(st);
                if let Err(e) = transport.get().uncork(py) {
                    return Err(flush_corked_after(slf, e));
                }
                continue;
            }
            if left == 0 {
                return Ok(());
            }
            left -= 1;
            match st.ready.pop_front() {
                Some(h) => h.into_bound(py),
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
    }
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
