//! The one policy for poisoned locks: recover the data and go on.
//!
//! A lock is poisoned when a thread panicked while holding it. Every lock in
//! tracegate guards plain bookkeeping (a pool's worker list, the session →
//! worker map, the open flush reservations, idle read connections) that each
//! critical section leaves consistent at every step, so the data behind a
//! poisoned lock is still good. Refusing to serve — or silently skipping the
//! work, as a `.lock().ok()` would — would turn one panic into an outage.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `mutex`, recovering it if a panic poisoned it.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Read-locks `lock`, recovering it if a panic poisoned it.
pub fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// Write-locks `lock`, recovering it if a panic poisoned it.
pub fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}
