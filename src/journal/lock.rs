//! The run lock of a journal: an exclusive advisory lock on the sidecar `PATH.lock`, which
//! holds the pid of the run that took it. Two runs never drive one job: `run` holds the lock
//! for its whole life; `status` only peeks at it with a shared lock, for an instant.

use std::fs::{File, OpenOptions as FsOpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::JournalError;
use super::open::suffixed;

/// The sidecar file that carries the run lock of the journal at `path`: `PATH.lock`.
/// It holds the pid of the run that last took it and is left in place (removing a lock file
/// races with a process about to take it).
pub fn lock_path(path: &Path) -> PathBuf {
    suffixed(path, ".lock")
}

/// Tries to take the run lock of `path`; on success the returned file holds it (and our pid).
pub(super) fn take_lock(path: &Path) -> Result<File, JournalError> {
    let lp = lock_path(path);
    let mut f = FsOpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lp)
        .map_err(|e| JournalError::io_write(path, "open its lock file (PATH.lock)", e))?;
    // `status` takes a shared lock for an instant to see whether a run is going; a few
    // quick retries keep that instant from refusing a run.
    match retry_briefly(|| f.try_lock()) {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(JournalError::Locked {
                path: path.to_path_buf(),
                pid: holder_pid(&mut f),
            });
        }
        Err(TryLockError::Error(e)) => {
            return Err(JournalError::io(&lp, "lock the lock file", e));
        }
    }
    let pid = std::process::id();
    f.set_len(0)
        .and_then(|_| f.seek(SeekFrom::Start(0)))
        .and_then(|_| writeln!(f, "{pid}"))
        .map_err(|e| JournalError::io_write(path, "write its lock file (PATH.lock)", e))?;
    Ok(f)
}

/// Whether a run holds the lock of the journal at `path` right now, and its pid if known.
/// Takes and releases a shared lock; never creates the lock file.
pub fn running_pid(path: &Path) -> Option<Option<u32>> {
    let lp = lock_path(path);
    let mut f = File::open(&lp).ok()?;
    // A process forked by the lock holder shares its lock until it execs: retry briefly so
    // that instant is not taken for a run.
    match retry_briefly(|| f.try_lock_shared()) {
        Ok(()) => {
            let _ = f.unlock();
            None
        }
        Err(TryLockError::WouldBlock) => Some(holder_pid(&mut f)),
        Err(TryLockError::Error(_)) => None,
    }
}

/// Calls `try_lock` until it does not answer "would block", at most 11 times, 10 ms apart.
fn retry_briefly(
    mut try_lock: impl FnMut() -> Result<(), TryLockError>,
) -> Result<(), TryLockError> {
    let mut result = try_lock();
    for _ in 0..10 {
        if !matches!(result, Err(TryLockError::WouldBlock)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
        result = try_lock();
    }
    result
}

/// The pid written in a lock file by the run holding it, if it reads as one.
fn holder_pid(f: &mut File) -> Option<u32> {
    let mut s = String::new();
    let _ = f.read_to_string(&mut s);
    s.trim().parse().ok()
}
