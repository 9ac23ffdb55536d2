//! The host ledger: one small file per credential in a private directory (`imkit-batch/`
//! under `$XDG_RUNTIME_DIR`, else `imkit-batch-UID/` in the system temp dir), named by the
//! credential's [`LedgerKey`] and holding only the TAT. A draw opens the file, takes an
//! exclusive `flock`, reads the TAT, decides, writes the new TAT and closes it: a few
//! microseconds under the lock, never across an `await`.
//!
//! Safe against a run killed -9 mid-draw: the kernel drops a `flock` with the last
//! descriptor of the process that held it, so no lock outlives its run, and a torn or foreign
//! content reads as "no state" (the ledger starts over, one request early at worst), never
//! as a stall or a panic.
//!
//! Beside it, `ID.limit` holds the last note a run left for the others on the ledger (the
//! server limit it measured, see the budget's `publish_limit`), replaced whole by a rename
//! and ignored once [`NOTE_TTL`] old.
//!
//! A run may also mark its presence ([`HostLedger::join`]): a file `ID.PID-N.run` beside the
//! ledger, held with a shared `flock` while the run lives, so others can count the runs that
//! share the ledger ([`HostLedger::peers_blocking`]). A killed run's mark has lost its lock;
//! whoever counts next removes it.

use std::ffi::OsString;
use std::fs::{DirBuilder, File, OpenOptions, TryLockError};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::gcra::{Decision, Gcra};
use super::key::LedgerKey;

/// Longest a draw waits for another process's lock before the ledger counts as lost. A hold
/// is a few microseconds; this is only reached when the holder is stopped (SIGSTOP, a
/// debugger), and then stopping safely beats waiting for ever.
pub const LOCK_PATIENCE: Duration = Duration::from_secs(5);

/// A note older than this is no longer read.
pub const NOTE_TTL: Duration = Duration::from_secs(600);
/// The note's frame: the prefix, its writing time (microseconds), a space, the note.
const NOTE_PREFIX: &str = "imkit-batch budget note v1 at_us=";

/// The record's fixed frame: the prefix, 20 digits of microseconds, a newline.
const RECORD_PREFIX: &str = "imkit-batch budget v1 tat_us=";
const RECORD_LEN: usize = RECORD_PREFIX.len() + 20 + 1;

/// The directory of this user's host ledgers.
pub fn default_dir() -> PathBuf {
    ledger_dir(
        std::env::var_os("XDG_RUNTIME_DIR"),
        std::env::temp_dir(),
        rustix::process::geteuid().as_raw(),
    )
}

/// `$XDG_RUNTIME_DIR/imkit-batch` when that is set to an absolute path (the XDG rule: a
/// relative one is ignored), else `TEMP/imkit-batch-UID` (the temp dir is shared by every
/// user, so each gets a directory of its own).
fn ledger_dir(xdg: Option<OsString>, temp: PathBuf, uid: u32) -> PathBuf {
    match xdg.map(PathBuf::from).filter(|p| p.is_absolute()) {
        Some(runtime) => runtime.join("imkit-batch"),
        None => temp.join(format!("imkit-batch-{uid}")),
    }
}

/// One credential's file in a ledger directory.
#[derive(Debug)]
pub(crate) struct HostLedger {
    path: PathBuf,
    /// The credential's hash: the file's stem, and the prefix of the runs' marks.
    id: String,
}

/// A run's mark beside a ledger (see the module's doc); removed when dropped.
#[derive(Debug)]
pub(crate) struct Presence {
    path: PathBuf,
    /// Holds the shared lock.
    _file: File,
}

impl Drop for Presence {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl HostLedger {
    /// Opens (creating them: directory 0700, file 0600) the ledger of `key` in `dir`, and
    /// checks the directory is this user's alone.
    pub(crate) fn open(dir: &Path, key: &LedgerKey) -> io::Result<HostLedger> {
        ensure_private_dir(dir)?;
        let ledger = HostLedger {
            path: dir.join(format!("{}.budget", key.id())),
            id: key.id().to_string(),
        };
        open_file(&ledger.path)?;
        Ok(ledger)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn note_path(&self) -> PathBuf {
        self.path.with_extension("limit")
    }

    /// Replaces the ledger's note with `note` (one line), atomically (blocking).
    pub(crate) fn put_note_blocking(&self, note: &str) -> io::Result<()> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = self.note_path();
        let temp = path.with_extension(format!(
            "limit.{}-{}.tmp",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let text = format!("{NOTE_PREFIX}{} {}\n", now_us(), note.replace('\n', " "));
        std::fs::write(&temp, text)?;
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&temp, &path)
    }

    /// The ledger's note, unless missing, unreadable or older than [`NOTE_TTL`] (blocking).
    pub(crate) fn note_blocking(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.note_path()).ok()?;
        let (at, note) = text.strip_prefix(NOTE_PREFIX)?.trim_end().split_once(' ')?;
        let age = now_us().saturating_sub(at.parse().ok()?);
        (age <= u64::try_from(NOTE_TTL.as_micros()).unwrap_or(u64::MAX)).then(|| note.to_string())
    }

    /// Marks this run's presence: the mark is made under a temporary name, locked, and only
    /// then renamed, so a counter never sees an unlocked live mark.
    pub(crate) fn join(&self) -> io::Result<Presence> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let stem = format!(
            "{}.{}-{}",
            self.id,
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let temp = dir.join(format!(".{stem}.tmp"));
        let file = open_file(&temp)?;
        file.lock_shared()?;
        let path = dir.join(format!("{stem}.run"));
        std::fs::rename(&temp, &path)?;
        Ok(Presence { path, _file: file })
    }

    /// How many other runs mark their presence beside this ledger now (blocking, for
    /// `spawn_blocking`); removes the marks of runs that died.
    pub(crate) fn peers_blocking(&self, me: &Presence) -> io::Result<u32> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let prefix = format!("{}.", self.id);
        let mut peers = 0;
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !name.starts_with(&prefix) || !name.ends_with(".run") || path == me.path {
                continue;
            }
            let Ok(file) = File::open(&path) else {
                continue;
            };
            match file.try_lock() {
                // Nobody holds it: its run is gone.
                Ok(()) => {
                    let _ = std::fs::remove_file(&path);
                }
                Err(TryLockError::WouldBlock) => peers += 1,
                Err(TryLockError::Error(_)) => {}
            }
        }
        Ok(peers)
    }

    /// One draw, blocking (for `spawn_blocking`): lock, read, decide, write, unlock.
    pub(crate) fn draw_blocking(&self, gcra: &Gcra) -> io::Result<Decision> {
        self.update_blocking(|stored, now| {
            let decision = gcra.decide(stored, now);
            match decision {
                Decision::Grant { tat } => (Some(tat), decision),
                Decision::Refuse { .. } => (None, decision),
            }
        })
    }

    /// Holds every draw back for `wait` (blocking, for `spawn_blocking`): see
    /// [`Gcra::pause`].
    pub(crate) fn pause_blocking(&self, gcra: &Gcra, wait: Duration) -> io::Result<()> {
        let wait_us = u64::try_from(wait.as_micros()).unwrap_or(u64::MAX);
        self.update_blocking(|stored, now| (gcra.pause(stored, now, wait_us), ()))
    }

    /// Under the ledger's lock: `f` gets the stored TAT and the time, and says what to store
    /// (nothing for `None`).
    fn update_blocking<T>(
        &self,
        f: impl FnOnce(Option<u64>, u64) -> (Option<u64>, T),
    ) -> io::Result<T> {
        let file = match open_file(&self.path) {
            // The directory went (a logout cleans `$XDG_RUNTIME_DIR`): make it again.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(dir) = self.path.parent() {
                    ensure_private_dir(dir)?;
                }
                open_file(&self.path)?
            }
            other => other?,
        };
        lock_with_patience(&file)?;
        // The clock is read under the lock: a draw that waited for it decides on the time it
        // holds it. Wall-clock time, because the TAT is compared across processes, which share
        // the system's real-time clock (an `Instant` means nothing outside its process).
        let now = now_us();
        let (store, out) = f(read_tat(&file), now);
        if let Some(tat) = store {
            let record = format!("{RECORD_PREFIX}{tat:020}\n");
            file.write_all_at(record.as_bytes(), 0)?;
            if file.metadata()?.len() != record.len() as u64 {
                file.set_len(record.len() as u64)?;
            }
        }
        // Closing the file drops the lock too; unlocking first makes it explicit.
        file.unlock()?;
        Ok(out)
    }
}

/// Microseconds since the Unix epoch on the system's real-time clock.
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn open_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
}

/// Creates `dir` (0700) if missing; refuses one another user owns or a symlink (someone
/// could read or steer the ledger through it), and tightens our own if it is open to others.
fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    match DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(dir)?;
    let me = rustix::process::geteuid().as_raw();
    if !meta.is_dir() || meta.uid() != me {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a directory of user {me} (a symlink, or another user's)",
                dir.display()
            ),
        ));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Takes the exclusive lock, polling while another process holds it, for at most
/// [`LOCK_PATIENCE`].
fn lock_with_patience(file: &File) -> io::Result<()> {
    let started = Instant::now();
    let mut pause = Duration::from_micros(50);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(TryLockError::Error(e)) => return Err(e),
            Err(TryLockError::WouldBlock) if started.elapsed() >= LOCK_PATIENCE => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "another process has held the ledger's lock for over {}s (stopped?)",
                        LOCK_PATIENCE.as_secs()
                    ),
                ));
            }
            Err(TryLockError::WouldBlock) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(1));
            }
        }
    }
}

/// The stored TAT, or `None` for an empty, torn or foreign content.
fn read_tat(file: &File) -> Option<u64> {
    let mut buf = Vec::with_capacity(RECORD_LEN + 1);
    // `Read` on `&File` reads from the descriptor's offset, which is 0 in a fresh open.
    let reader = file;
    reader
        .take(RECORD_LEN as u64 + 1)
        .read_to_end(&mut buf)
        .ok()?;
    parse_record(&buf)
}

fn parse_record(buf: &[u8]) -> Option<u64> {
    let digits = buf
        .strip_prefix(RECORD_PREFIX.as_bytes())?
        .strip_suffix(b"\n")?;
    if digits.len() != 20 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directory_is_the_runtime_dir_else_a_per_user_temp_dir() {
        let temp = PathBuf::from("/tmp");
        assert_eq!(
            ledger_dir(Some("/run/user/1000".into()), temp.clone(), 1000),
            PathBuf::from("/run/user/1000/imkit-batch")
        );
        for xdg in [None, Some(OsString::new()), Some("relative/dir".into())] {
            assert_eq!(
                ledger_dir(xdg, temp.clone(), 1000),
                PathBuf::from("/tmp/imkit-batch-1000")
            );
        }
    }

    #[test]
    fn records_parse_exactly_or_not_at_all() {
        let record = format!("{RECORD_PREFIX}{:020}\n", 1_234_567u64);
        assert_eq!(record.len(), RECORD_LEN);
        assert_eq!(parse_record(record.as_bytes()), Some(1_234_567));
        let torn = &record.as_bytes()[..record.len() - 3];
        let long = format!("{record}x");
        let bad = record.replace('5', "x");
        for garbage in [&b""[..], torn, long.as_bytes(), bad.as_bytes(), b"\xff\xfe"] {
            assert_eq!(parse_record(garbage), None, "{garbage:?}");
        }
        let huge = format!("{RECORD_PREFIX}99999999999999999999\n");
        assert_eq!(parse_record(huge.as_bytes()), None, "over u64");
    }

    #[test]
    fn runs_count_each_other_and_the_marks_of_dead_runs_go() {
        let dir = tempfile::tempdir().unwrap();
        let key = LedgerKey::new("https://x.test", &["sk_test_presence"]);
        let a = HostLedger::open(dir.path(), &key).unwrap();
        let b = HostLedger::open(dir.path(), &key).unwrap();
        let other =
            HostLedger::open(dir.path(), &LedgerKey::new("https://x.test", &["k2"])).unwrap();
        let ma = a.join().unwrap();
        assert_eq!(a.peers_blocking(&ma).unwrap(), 0);
        let mb = b.join().unwrap();
        let _mo = other.join().unwrap();
        assert_eq!(
            a.peers_blocking(&ma).unwrap(),
            1,
            "b, not the other credential"
        );
        assert_eq!(b.peers_blocking(&mb).unwrap(), 1);
        // A mark whose lock is gone (its run was killed) is not counted, and is removed.
        let dead = dir.path().join(format!("{}.999999-0.run", key.id()));
        std::fs::write(&dead, b"").unwrap();
        assert_eq!(a.peers_blocking(&ma).unwrap(), 1);
        assert!(!dead.exists());
        let mark = mb.path.clone();
        drop(mb);
        assert!(!mark.exists(), "a run's mark goes with it");
        assert_eq!(a.peers_blocking(&ma).unwrap(), 0);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.contains("sk_test")), "{names:?}");
    }

    #[test]
    fn a_note_is_replaced_whole_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let key = LedgerKey::new("https://x.test", &["sk_test_note"]);
        let a = HostLedger::open(dir.path(), &key).unwrap();
        let b = HostLedger::open(dir.path(), &key).unwrap();
        assert_eq!(b.note_blocking(), None);
        a.put_note_blocking("19500 7 1").unwrap();
        assert_eq!(b.note_blocking().as_deref(), Some("19500 7 1"));
        a.put_note_blocking("18000 7 2").unwrap();
        assert_eq!(b.note_blocking().as_deref(), Some("18000 7 2"));
        let old = format!("{NOTE_PREFIX}1 18000 7 2\n");
        std::fs::write(a.note_path(), old).unwrap();
        assert_eq!(b.note_blocking(), None, "too old");
        std::fs::write(a.note_path(), b"garbage").unwrap();
        assert_eq!(b.note_blocking(), None);
        let mode = std::fs::metadata(a.note_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
