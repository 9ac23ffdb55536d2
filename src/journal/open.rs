//! Opening a journal that is already on disk, safely: the checks made through a read-only
//! connection before anything is written (header, identity, schema version, `quick_check`),
//! and the files beside a journal (SQLite's companions, renaming aside for `--fresh` and
//! after an interrupted import, tidying the WAL files a read leaves). What a resume checks
//! and updates is in `resume`.
//!
//! Safety rules: an existing file is checked before a read-write connection is opened, so
//! a torn, corrupt or foreign file is reported and never written to; `--fresh` renames,
//! never deletes. The one exception is a journal whose first run was killed before its plan
//! import committed (nothing was sent with it): the next run renames it aside, keeps it, and
//! imports again.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::JournalError;
use super::schema::{self, HeaderError, IdentityError};
use super::sniff;

/// SQLite's companion files of a database.
const COMPANIONS: [&str; 3] = ["-wal", "-shm", "-journal"];

/// `path` with `suffix` appended to its file name (`PATH-wal`, `PATH.lock`, ...).
pub(super) fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// True when no `-wal` file is beside `path`: no connection has the journal open (one in
/// WAL mode keeps it while open), so the companions a read makes SQLite create are ours to
/// remove afterwards (see [`TidyWal`]).
pub(super) fn no_wal(path: &Path) -> bool {
    !suffixed(path, "-wal").exists()
}

/// Creates the directory of the journal at `path` when it does not exist yet (mode 0700,
/// like every directory it creates on the way), for `run`.
pub(super) fn ensure_parent_dir(path: &Path) -> Result<(), JournalError> {
    use std::os::unix::fs::DirBuilderExt;
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    if dir.symlink_metadata().is_ok() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| JournalError::io_write(path, "create its directory", e))?;
    tracing::info!(journal = %path.display(), dir = %dir.display(), "created the journal's directory {} (mode 0700)", dir.display());
    Ok(())
}

/// For `--fresh`: renames the journal at `path` and its companions aside (never deleted),
/// its WAL folded in first when it is healthy. The caller holds the run lock.
pub(super) fn set_aside_for_fresh(path: &Path) -> Result<(), JournalError> {
    fold_wal_for_keeping(path);
    if let Some(old) = move_aside(path)? {
        tracing::warn!(
            journal = %path.display(),
            kept_as = %old.display(),
            "--fresh: the old journal was renamed to {} (not deleted); starting a new job",
            old.display()
        );
    }
    Ok(())
}

/// Killed while creating the journal: the plan import never committed, so nothing was sent
/// with it (sending starts after the import). Resume means starting the import over; the
/// torn file is kept, renamed, like --fresh does. True when the journal at `path` was such
/// a file and was renamed aside, so the plan is to be imported again.
pub(super) fn set_aside_interrupted_import(path: &Path) -> Result<bool, JournalError> {
    let Some(why) = interrupted_import(path) else {
        return Ok(false);
    };
    let kept = move_aside(path)?;
    let kept = kept.as_deref().unwrap_or(path).display().to_string();
    tracing::warn!(
        journal = %path.display(),
        kept_as = %kept,
        "journal {} was never completed ({why}); nothing was sent with it. It was renamed to {kept} (kept) and the plan is imported again",
        path.display()
    );
    Ok(true)
}

/// Opens an existing journal read-only after checking it: the file and its header, then
/// the identity and schema version, then SQLite's `quick_check`. Nothing is written to it.
pub(super) fn open_checked(path: &Path) -> Result<Connection, JournalError> {
    check_file(path)?;
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| JournalError::sqlite(path, "open", e))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(|e| JournalError::sqlite(path, "configure", e))?;
    check_identity(&conn, path)?;
    quick_check(&conn, path)?;
    Ok(conn)
}

/// Refuses what is not a regular file with a SQLite journal's header, or a journal whose
/// plan import was cut short, before SQLite opens it.
fn check_file(path: &Path) -> Result<(), JournalError> {
    match path.metadata() {
        Ok(m) if m.is_file() => {}
        Ok(m) if m.is_dir() => return Err(sniff::directory(path)),
        Ok(_) => {
            return Err(JournalError::Corrupt {
                path: path.to_path_buf(),
                reason: "it is not a regular file".into(),
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(JournalError::NotFound {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(JournalError::io(path, "read", e)),
    }
    let rollback = suffixed(path, "-journal");
    if rollback.symlink_metadata().is_ok() {
        // A journal in WAL mode never has a rollback journal; only the first import does.
        return Err(JournalError::Corrupt {
            path: path.to_path_buf(),
            reason: format!(
                "its plan import was interrupted ({} is still there); no op was recorded in it",
                rollback.display()
            ),
        });
    }
    schema::check_header(path).map_err(|e| match e {
        HeaderError::NotSqlite(reason) => {
            sniff::not_a_journal(path).unwrap_or_else(|| JournalError::Corrupt {
                path: path.to_path_buf(),
                reason,
            })
        }
        HeaderError::Damaged(reason) => JournalError::Corrupt {
            path: path.to_path_buf(),
            reason,
        },
    })
}

/// Refuses a SQLite file that is not an imkit-batch journal this build reads.
fn check_identity(conn: &Connection, path: &Path) -> Result<(), JournalError> {
    match schema::check_identity(conn) {
        Ok(()) => Ok(()),
        Err(IdentityError::Foreign(reason)) => Err(JournalError::Corrupt {
            path: path.to_path_buf(),
            reason,
        }),
        Err(IdentityError::Newer(found)) => Err(JournalError::UnsupportedVersion {
            path: path.to_path_buf(),
            found,
            supported: schema::SCHEMA_VERSION,
        }),
        Err(IdentityError::Sqlite(e)) => Err(JournalError::sqlite(path, "read the schema", e)),
    }
}

/// Refuses a journal that fails SQLite's `quick_check`.
fn quick_check(conn: &Connection, path: &Path) -> Result<(), JournalError> {
    let mut stmt = conn
        .prepare("PRAGMA quick_check")
        .map_err(|e| JournalError::sqlite(path, "check integrity", e))?;
    let problems: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect())
        .map_err(|e| JournalError::sqlite(path, "check integrity", e))?;
    if problems.first().map(String::as_str) != Some("ok") {
        return Err(JournalError::Corrupt {
            path: path.to_path_buf(),
            reason: format!(
                "SQLite's integrity check failed: {}",
                problems
                    .iter()
                    .take(3)
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        });
    }
    Ok(())
}

/// Why the file at `path` is a journal whose creation was cut short (the run holding the
/// lock now knows no other run is creating it), or `None`. Only states that the first
/// `run` leaves when killed before its plan import committed: an empty file (killed before
/// SQLite wrote a byte), or a rollback journal beside it (killed mid-import; a journal in
/// use is in WAL mode and never has one). Anything else is checked as a journal.
fn interrupted_import(path: &Path) -> Option<String> {
    let meta = path.symlink_metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    if meta.len() == 0 {
        return Some("the file is empty: a run was stopped while creating it".into());
    }
    let rollback = suffixed(path, "-journal");
    if rollback.symlink_metadata().is_ok() {
        return Some(format!(
            "its plan import was interrupted ({} is still there)",
            rollback.display()
        ));
    }
    None
}

/// Renames the journal at `path` and its SQLite companions aside to `PATH.<UTC time>`.
fn move_aside(path: &Path) -> Result<Option<PathBuf>, JournalError> {
    let exists = |p: &Path| p.symlink_metadata().is_ok();
    let any = exists(path) || COMPANIONS.iter().any(|c| exists(&suffixed(path, c)));
    if !any {
        return Ok(None);
    }
    let stamp = jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%SZ")
        .to_string();
    let mut target = suffixed(path, &format!(".{stamp}"));
    let mut n = 1;
    while exists(&target) || COMPANIONS.iter().any(|c| exists(&suffixed(&target, c))) {
        target = suffixed(path, &format!(".{stamp}-{n}"));
        n += 1;
    }
    if exists(path) {
        std::fs::rename(path, &target)
            .map_err(|e| JournalError::io(path, "rename the old journal aside", e))?;
    }
    for c in COMPANIONS {
        let from = suffixed(path, c);
        if exists(&from) {
            std::fs::rename(&from, suffixed(&target, c))
                .map_err(|e| JournalError::io(&from, "rename aside", e))?;
        }
    }
    Ok(Some(target))
}

/// For `--fresh`: folds the WAL of a healthy journal into its main file (a TRUNCATE
/// checkpoint), so the copy kept aside is one self-contained file rather than a file that
/// is only whole with its `-wal` beside it. The caller holds the run lock, so no run writes
/// meanwhile. A journal that fails the checks is never written to: it is moved as it is,
/// with its companions. Best effort: if the checkpoint cannot complete (a reader in the
/// way), the WAL is moved along with the file, which keeps it whole too.
fn fold_wal_for_keeping(path: &Path) {
    let wal = suffixed(path, "-wal");
    if !wal.symlink_metadata().is_ok_and(|m| m.len() > 0) {
        return;
    }
    if open_checked(path).is_err() {
        return;
    }
    let Ok(conn) = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) else {
        return;
    };
    let _ = conn.busy_timeout(std::time::Duration::from_secs(10));
    match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        r.get::<_, i64>(0)
    }) {
        Ok(0) => {}
        Ok(_) => tracing::warn!(
            journal = %path.display(),
            "--fresh: the old journal's WAL could not be checkpointed (a reader holds it); it is kept beside the renamed file"
        ),
        Err(e) => tracing::warn!(
            journal = %path.display(),
            error = %e,
            "--fresh: the old journal's WAL could not be checkpointed; it is kept beside the renamed file"
        ),
    }
    // The last connection to close also removes the (now empty) `-wal` and the `-shm`.
    let _ = conn.close();
}

/// Removes the empty `-wal` and `-shm` files a read-only connection leaves beside a journal
/// (only the last connection to close removes them, and a read-only one cannot), so
/// `status`, `report`, `revert` and `plan` leave the directory as they found it. It opens
/// and closes one read-write connection, which makes SQLite do it under its own locks: if
/// a run has opened the journal meanwhile, that run's connection is not the last, and
/// nothing is removed. Best effort: a failure leaves two harmless files.
pub(super) struct TidyWal(pub(super) PathBuf);

impl Drop for TidyWal {
    fn drop(&mut self) {
        let Ok(conn) = Connection::open_with_flags(
            &self.0,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        ) else {
            return;
        };
        // A read opens the WAL, so the close below checkpoints (nothing) and removes it.
        let _ = conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()));
        let _ = conn.close();
    }
}
