//! Turning OS errors into the exceptions asyncio raises for them.
//!
//! `OSError(errno, strerror)` picks the subclass from the errno (ENOENT gives
//! `FileNotFoundError`, ECONNRESET `ConnectionResetError`, ...), exactly as the interpreter does
//! for its own system calls, so building the exception through it keeps oxloop's errors the same
//! type as asyncio's for the same failure.

use std::ffi::CStr;
use std::io;

use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::PyErr;

/// The message `os.strerror(errno)` gives.
pub fn strerror(errno: i32) -> String {
    let mut buf = [0 as libc::c_char; 256];
    // SAFETY: `buf` is a writable buffer of the length passed; the XSI strerror_r writes a
    // NUL-terminated string into it (truncating if needed) and touches nothing else.
    let rc = unsafe { libc::strerror_r(errno, buf.as_mut_ptr(), buf.len()) };
    if rc != 0 {
        return format!("Unknown error {errno}");
    }
    // SAFETY: on success strerror_r left a NUL-terminated string within `buf`.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// The Python exception for an OS error: the `OSError` subclass matching its errno.
pub fn os_error(err: io::Error) -> PyErr {
    match err.raw_os_error() {
        Some(errno) => PyOSError::new_err((errno, strerror(errno))),
        None => PyOSError::new_err(err.to_string()),
    }
}

/// `RuntimeError('Event loop is closed')`.
pub fn loop_closed() -> PyErr {
    PyRuntimeError::new_err("Event loop is closed")
}

/// A lock of the loop's was held by a thread that panicked.
pub fn poisoned() -> PyErr {
    PyRuntimeError::new_err("event loop state is poisoned by a panic")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strerror_matches_libc_text() {
        assert_eq!(strerror(libc::ENOENT), "No such file or directory");
        assert_eq!(strerror(libc::EBADF), "Bad file descriptor");
    }
}
