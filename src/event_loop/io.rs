//! `add_reader` / `add_writer` / `remove_reader` / `remove_writer`.

use std::os::fd::RawFd;

use pyo3::exceptions::{PyOverflowError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyInt, PyTuple};

use super::core::{LoopCore, State};
use crate::errors::{loop_closed, os_error};
use crate::handles::Handle;
use crate::reactor::{Interests, READ, WRITE};

/// Which side of an fd a watcher is for.
#[derive(Clone, Copy)]
pub(super) enum Direction {
    /// `add_reader`.
    Read,
    /// `add_writer`.
    Write,
}

impl Direction {
    fn bit(self) -> Interests {
        match self {
            Direction::Read => READ,
            Direction::Write => WRITE,
        }
    }
}

fn watchers(st: &mut State, dir: Direction) -> &mut std::collections::HashMap<RawFd, Py<Handle>> {
    match dir {
        Direction::Read => &mut st.readers,
        Direction::Write => &mut st.writers,
    }
}

/// An fd from an int or an object with `fileno()`, with the errors `selectors` and `epoll`
/// give: `ValueError` for a bad object or a negative fd, `OverflowError` past a C int.
pub(super) fn fileobj_to_fd(obj: &Bound<'_, PyAny>) -> PyResult<RawFd> {
    let fd = if obj.is_instance_of::<PyInt>() {
        obj.clone()
    } else {
        obj.call_method0("fileno")
            .and_then(|f| f.call_method0("__index__"))
            .map_err(|_| {
                let repr = obj.repr().map(|r| r.to_string()).unwrap_or_default();
                PyValueError::new_err(format!("Invalid file object: {repr}"))
            })?
    };
    if fd.lt(0)? {
        return Err(PyValueError::new_err(format!(
            "Invalid file descriptor: {fd}"
        )));
    }
    fd.extract::<RawFd>()
        .map_err(|_| PyOverflowError::new_err("Python int too large to convert to C int"))
}

pub(super) fn add_watcher(
    slf: &Bound<'_, LoopCore>,
    fileobj: &Bound<'_, PyAny>,
    callback: Bound<'_, PyAny>,
    args: Bound<'_, PyTuple>,
    dir: Direction,
) -> PyResult<Py<Handle>> {
    let py = slf.py();
    let fd = fileobj_to_fd(fileobj)?;
    let this = slf.get();
    let debug = {
        let st = this.state.borrow_mut(py);
        if st.closed {
            return Err(loop_closed());
        }
        st.debug
    };
    let handle = LoopCore::new_handle(slf, callback, args, None, debug)?;
    LoopCore::own_reactor(slf)?;
    let previous = {
        let mut st = this.state.borrow_mut(py);
        let st = &mut *st;
        let registrar = st.registrar.as_mut().ok_or_else(loop_closed)?;
        let interests = registrar.interests(fd) | dir.bit();
        registrar.set(fd, interests).map_err(os_error)?;
        watchers(st, dir).insert(fd, handle.clone_ref(py))
    };
    if let Some(old) = previous {
        Handle::cancel_bound(old.bind(py))?;
    }
    Ok(handle)
}

pub(super) fn watched_events(
    slf: &Bound<'_, LoopCore>,
    fileobj: &Bound<'_, PyAny>,
) -> PyResult<u8> {
    let py = slf.py();
    let fd = fileobj_to_fd(fileobj)?;
    let st = slf.get().state.borrow_mut(py);
    let mut mask = 0;
    if st.readers.contains_key(&fd) {
        mask |= 1;
    }
    if st.writers.contains_key(&fd) {
        mask |= 2;
    }
    Ok(mask)
}

pub(super) fn remove_watcher(
    slf: &Bound<'_, LoopCore>,
    fileobj: &Bound<'_, PyAny>,
    dir: Direction,
) -> PyResult<bool> {
    let py = slf.py();
    let fd = fileobj_to_fd(fileobj)?;
    let this = slf.get();
    LoopCore::own_reactor(slf)?;
    let removed = {
        let mut st = this.state.borrow_mut(py);
        let st = &mut *st;
        let Some(registrar) = st.registrar.as_mut() else {
            return Ok(false);
        };
        let interests = registrar.interests(fd);
        if interests & dir.bit() == 0 {
            return Ok(false);
        }
        registrar
            .set(fd, interests & !dir.bit())
            .map_err(os_error)?;
        watchers(st, dir).remove(&fd)
    };
    match removed {
        Some(handle) => {
            Handle::cancel_bound(handle.bind(py))?;
            Ok(true)
        }
        None => Ok(false),
    }
}
