//! A cell whose contents are guarded by the GIL instead of a lock.

use std::cell::{RefCell, RefMut};

use pyo3::Python;

/// Interior mutability for state that is only ever touched while attached to the interpreter.
///
/// The loop's ready queue and timer heap are hit on every `call_soon`; a mutex there would cost
/// two atomic operations per call for nothing, since every caller already holds the GIL. The
/// module is declared `gil_used = true`, so on free-threaded builds the interpreter keeps a GIL
/// while oxloop is imported. Re-entrant use (a borrow held across a call into Python code that
/// reaches the same cell) is a bug that the inner `RefCell` turns into a panic, which PyO3
/// reports as a Python exception rather than a crash.
pub struct GilCell<T>(RefCell<T>);

// SAFETY: every access goes through `borrow_mut`, which demands a `Python<'_>` token, so all
// accesses from any thread are serialised by the GIL; `T: Send` because the value may be
// dropped or used on whichever thread holds the GIL.
unsafe impl<T: Send> Sync for GilCell<T> {}

impl<T> GilCell<T> {
    /// Wraps `value`.
    pub fn new(value: T) -> Self {
        GilCell(RefCell::new(value))
    }

    /// Shared access for the garbage collector's traversal, which runs with the GIL held but
    /// without a token to show for it; `None` if the cell is borrowed right now (a collection
    /// triggered while the state is being changed), in which case the caller skips the visit.
    pub fn try_borrow_for_gc(&self) -> Option<std::cell::Ref<'_, T>> {
        self.0.try_borrow().ok()
    }

    /// Mutable access if no borrow is active (for the collector's `tp_clear`, which may run in
    /// the middle of an allocation).
    pub fn try_borrow_mut<'a>(&'a self, _py: Python<'_>) -> Option<RefMut<'a, T>> {
        self.0.try_borrow_mut().ok()
    }

    /// Mutable access, proven exclusive by the GIL token.
    #[inline]
    pub fn borrow_mut<'a>(&'a self, _py: Python<'_>) -> RefMut<'a, T> {
        self.0.borrow_mut()
    }
}
