//! The one way the sandbox takes a lock: recovering the data of a poisoned mutex, so that a
//! panicking handler cannot take the whole sandbox down (every critical section leaves its
//! data consistent).

use std::sync::{Mutex, MutexGuard};

/// Locks a mutex, recovering the data of a poisoned one.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
