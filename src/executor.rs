//! The native workers behind the loop's default executor.
//!
//! `run_in_executor(None, func, *args)` through a `ThreadPoolExecutor` costs a
//! `concurrent.futures.Future`, a work item, a Python-level queue, a condition variable and a
//! `wrap_future` relay per job. The loop's default executor (`oxloop._loop.DefaultExecutor`, a
//! `ThreadPoolExecutor` subclass, so everything that inspects it still sees one) hands such
//! jobs to this pool instead: a Rust queue served by Python threads that wait without the GIL,
//! run the job, and queue the result for the loop directly.
//!
//! Semantics follow `ThreadPoolExecutor` + `wrap_future`: at most `max_workers` threads, a new
//! one only when no worker is idle; a job whose future was cancelled before it started is not
//! run; the result is delivered with `call_soon_threadsafe`, and dropped if the loop closed.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use pyo3::exceptions::{PyRuntimeError, PySystemError};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::event_loop::LoopCore;
use crate::py;

/// One `run_in_executor` call.
struct Job {
    /// The callable.
    func: Py<PyAny>,
    /// Its positional arguments.
    args: Py<PyTuple>,
    /// The asyncio future `run_in_executor` returned.
    future: Py<PyAny>,
    /// The loop that future belongs to.
    loop_: Py<LoopCore>,
}

/// Queue and bookkeeping, shared by the submitting loop and the workers.
#[derive(Default)]
struct PoolState {
    /// Jobs not yet taken by a worker.
    jobs: VecDeque<Job>,
    /// Workers that finished a job and have not been counted against a new one
    /// (`ThreadPoolExecutor`'s idle semaphore).
    idle_tokens: usize,
    /// Worker threads started.
    threads: usize,
    /// No new jobs; workers leave once the queue is empty.
    shutdown: bool,
}

/// The pool of native workers of one default executor.
#[pyclass(module = "oxloop._oxloop", frozen)]
pub struct WorkerPool {
    /// The queue; never locked while calling into Python.
    state: Arc<(Mutex<PoolState>, Condvar)>,
    /// Upper bound on worker threads.
    max_workers: usize,
}

impl WorkerPool {
    fn lock(&self) -> PyResult<MutexGuard<'_, PoolState>> {
        self.state
            .0
            .lock()
            .map_err(|_| PySystemError::new_err("oxloop executor state is poisoned"))
    }
}

/// Waits (without the GIL) for the next job; `None` once shut down and drained.
fn next_job(state: &(Mutex<PoolState>, Condvar)) -> Option<Job> {
    let (lock, cond) = state;
    let mut st = lock.lock().ok()?;
    loop {
        if let Some(job) = st.jobs.pop_front() {
            return Some(job);
        }
        if st.shutdown {
            return None;
        }
        st = cond.wait(st).ok()?;
    }
}

fn run_job(py: Python<'_>, job: Job) -> PyResult<()> {
    let future = job.future.bind(py);
    if future
        .call_method0(pyo3::intern!(py, "cancelled"))?
        .is_truthy()?
    {
        return Ok(());
    }
    let outcome = job.func.bind(py).call1(job.args.bind(py));
    let none = py.None().into_bound(py);
    let (exception, result) = match outcome {
        Ok(value) => (none, value),
        Err(err) => (err.into_value(py).into_bound(py).into_any(), none),
    };
    let setter = py::helpers(py)?.getattr(pyo3::intern!(py, "set_future_state"))?;
    let args = PyTuple::new(py, [future.clone(), exception, result])?;
    LoopCore::call_soon_threadsafe_native(job.loop_.bind(py), setter, args)
}

#[pymethods]
impl WorkerPool {
    #[new]
    fn py_new(max_workers: usize) -> Self {
        WorkerPool {
            state: Arc::new((Mutex::new(PoolState::default()), Condvar::new())),
            max_workers: max_workers.max(1),
        }
    }

    /// Queues `func(*args)` for `future` on `loop`; returns whether the caller should start
    /// a new worker thread (no worker is idle and the pool is below `max_workers`).
    fn submit(
        &self,
        r#loop: Py<LoopCore>,
        future: Py<PyAny>,
        func: Py<PyAny>,
        args: Py<PyTuple>,
    ) -> PyResult<bool> {
        let mut st = self.lock()?;
        if st.shutdown {
            return Err(PyRuntimeError::new_err(
                "cannot schedule new futures after shutdown",
            ));
        }
        st.jobs.push_back(Job {
            func,
            args,
            future,
            loop_: r#loop,
        });
        self.state.1.notify_one();
        if st.idle_tokens > 0 {
            st.idle_tokens -= 1;
            return Ok(false);
        }
        if st.threads < self.max_workers {
            st.threads += 1;
            return Ok(true);
        }
        Ok(false)
    }

    /// A worker thread's body: run jobs until the pool shuts down and its queue is empty.
    fn worker_loop(&self, py: Python<'_>) -> PyResult<()> {
        let state = Arc::clone(&self.state);
        loop {
            let shared = Arc::clone(&state);
            let Some(job) = py.detach(move || next_job(&shared)) else {
                return Ok(());
            };
            if let Err(err) = run_job(py, job) {
                // Delivery failed (the loop's state, not the job): report it as the thread's
                // own error would be, without killing the worker.
                err.write_unraisable(py, None);
            }
            if let Ok(mut st) = self.lock() {
                st.idle_tokens += 1;
            }
        }
    }

    /// Stops taking jobs; with `cancel_pending`, returns the futures of jobs never started
    /// (for the caller to cancel on their loops), else lets the workers finish the queue.
    fn shutdown(&self, cancel_pending: bool) -> PyResult<Vec<(Py<PyAny>, Py<PyAny>)>> {
        let dropped = {
            let mut st = self.lock()?;
            st.shutdown = true;
            self.state.1.notify_all();
            if cancel_pending {
                st.jobs.drain(..).collect::<Vec<_>>()
            } else {
                Vec::new()
            }
        };
        Ok(dropped
            .into_iter()
            .map(|j| (j.loop_.into_any(), j.future))
            .collect())
    }

    /// Number of worker threads started.
    #[getter]
    fn threads(&self) -> PyResult<usize> {
        Ok(self.lock()?.threads)
    }
}
