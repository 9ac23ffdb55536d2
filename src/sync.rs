//! The one way the crate takes a std mutex: recovering the data of a poisoned one, so that a
//! panicking task or handler cannot take the whole run or sandbox down (every critical
//! section leaves its data consistent: plain counters, maps and pacing state).

use std::sync::{Mutex, MutexGuard};

/// Locks a mutex, recovering the data of a poisoned one.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
