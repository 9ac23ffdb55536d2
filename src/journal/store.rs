//! Opening a journal (create + plan import, resume with checksum check, `--fresh`,
//! `--retry-failed`, the exclusive run lock) and every read query behind `run`, `plan`,
//! `status`, `report` and `revert`.
//!
//! Safety rules: a new journal file is created with mode 0600 before SQLite writes a byte; an
//! existing file is checked through a read-only connection (header, identity, schema version,
//! `quick_check`) before a read-write connection is opened, so a torn, corrupt or foreign file
//! is reported and never written to; `--fresh` renames, never deletes. The one exception is a
//! journal whose first run was killed before its plan import committed (nothing was sent
//! with it): the next run renames it aside, keeps it, and imports again.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions as FsOpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::Serialize;

use super::schema::{self, IdentityError};
use super::{Counts, JobMeta, Journal, JournalError, JournalOp, OpState, OpenOptions};
use crate::manifest::Manifest;
use crate::op::{Action, Op, RoomFields};

/// The sidecar file that carries the run lock of the journal at `path`: `PATH.lock`.
/// It holds the pid of the run that last took it and is left in place (removing a lock file
/// races with a process about to take it).
pub fn lock_path(path: &Path) -> PathBuf {
    suffixed(path, ".lock")
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// SQLite's companion files of a database.
const COMPANIONS: [&str; 3] = ["-wal", "-shm", "-journal"];

/// Unix milliseconds now.
pub(crate) fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// RFC 3339 (UTC) of Unix milliseconds.
pub(crate) fn fmt_ms(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| ms.to_string())
}

impl OpState {
    pub fn as_str(self) -> &'static str {
        match self {
            OpState::Pending => "pending",
            OpState::Done => "done",
            OpState::Failed => "failed",
            OpState::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<OpState> {
        [
            OpState::Pending,
            OpState::Done,
            OpState::Failed,
            OpState::Skipped,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    /// True for done, failed and skipped.
    pub fn is_final(self) -> bool {
        self != OpState::Pending
    }
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.pending + self.done + self.failed + self.skipped
    }
}

/// Tries to take the run lock of `path`; on success the returned file holds it (and our pid).
fn take_lock(path: &Path) -> Result<File, JournalError> {
    let lp = lock_path(path);
    let mut f = FsOpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lp)
        .map_err(|e| JournalError::io(&lp, "open the lock file", e))?;
    // `status` takes a shared lock for an instant to see whether a run is going; a few
    // quick retries keep that instant from refusing a run.
    let mut result = f.try_lock();
    for _ in 0..10 {
        if !matches!(result, Err(std::fs::TryLockError::WouldBlock)) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        result = f.try_lock();
    }
    match result {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut s = String::new();
            let _ = f.read_to_string(&mut s);
            return Err(JournalError::Locked {
                path: path.to_path_buf(),
                pid: s.trim().parse().ok(),
            });
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(JournalError::io(&lp, "lock the lock file", e));
        }
    }
    let pid = std::process::id();
    f.set_len(0)
        .and_then(|_| f.seek(SeekFrom::Start(0)))
        .and_then(|_| writeln!(f, "{pid}"))
        .map_err(|e| JournalError::io(&lp, "write the lock file", e))?;
    Ok(f)
}

/// Whether a run holds the lock of the journal at `path` right now, and its pid if known.
/// Takes and releases a shared lock; never creates the lock file.
pub fn running_pid(path: &Path) -> Option<Option<u32>> {
    let lp = lock_path(path);
    let mut f = File::open(&lp).ok()?;
    // A process forked by the lock holder shares its lock until it execs: retry briefly so
    // that instant is not taken for a run.
    let mut result = f.try_lock_shared();
    for _ in 0..10 {
        if !matches!(result, Err(std::fs::TryLockError::WouldBlock)) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        result = f.try_lock_shared();
    }
    match result {
        Ok(()) => {
            let _ = f.unlock();
            None
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut s = String::new();
            let _ = f.read_to_string(&mut s);
            Some(s.trim().parse().ok())
        }
        Err(std::fs::TryLockError::Error(_)) => None,
    }
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
    if open_checked(path, true).is_err() {
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

pub(super) fn open_for_run(
    path: &Path,
    manifest: &Manifest,
    meta: &JobMeta,
    opts: OpenOptions,
) -> Result<Journal, JournalError> {
    let lock = take_lock(path)?;
    let settings = serde_json::to_string(&meta.settings)
        .map_err(|e| JournalError::Other(format!("cannot encode the settings: {e}")))?;
    if opts.fresh {
        fold_wal_for_keeping(path);
    }
    if opts.fresh
        && let Some(old) = move_aside(path)?
    {
        tracing::warn!(
            journal = %path.display(),
            kept_as = %old.display(),
            "--fresh: the old journal was renamed to {} (not deleted); starting a new job",
            old.display()
        );
    }
    if path.symlink_metadata().is_err()
        && let Some(j) = create_new(path, manifest, meta, &settings, opts)?
    {
        return Ok(j.with_lock(lock));
    }
    if let Some(why) = interrupted_import(path) {
        // Killed while creating the journal: the plan import never committed, so nothing
        // was sent with it (sending starts after the import). Resume means starting the
        // import over; the torn file is kept, renamed, like --fresh does.
        let kept = move_aside(path)?;
        let kept = kept.as_deref().unwrap_or(path).display().to_string();
        tracing::warn!(
            journal = %path.display(),
            kept_as = %kept,
            "journal {} was never completed ({why}); nothing was sent with it. It was renamed to {kept} (kept) and the plan is imported again",
            path.display()
        );
        if let Some(j) = create_new(path, manifest, meta, &settings, opts)? {
            return Ok(j.with_lock(lock));
        }
    }
    // An existing journal: check it without writing, then open it for writing. SQLite's
    // read-only look creates an empty `-wal` and `-shm` when there were none; a refused run
    // removes them again (as `status` does), so it leaves the directory as it found it.
    let no_wal_before = !suffixed(path, "-wal").exists();
    let checked = (|| -> Result<(), JournalError> {
        let ro = open_checked(path, true)?;
        let (checksum, total): (String, i64) = ro
            .query_row(
                "SELECT checksum, total_ops FROM job WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| JournalError::sqlite(path, "read the job record", e))?;
        if checksum != manifest.checksum {
            return Err(JournalError::ChecksumMismatch {
                path: path.to_path_buf(),
                manifest: manifest.path.clone(),
                journal_checksum: checksum,
                manifest_checksum: manifest.checksum.clone(),
            });
        }
        if total as u64 != manifest.ops.len() as u64 {
            return Err(JournalError::PlanMismatch {
                path: path.to_path_buf(),
                journal_ops: total as u64,
                manifest_ops: manifest.ops.len() as u64,
            });
        }
        Ok(())
    })();
    if let Err(e) = checked {
        // Only a journal that passed the checks is touched (a damaged one never is).
        if no_wal_before
            && matches!(
                e,
                JournalError::ChecksumMismatch { .. } | JournalError::PlanMismatch { .. }
            )
        {
            drop(TidyWal(path.to_path_buf()));
        }
        return Err(e);
    }
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| JournalError::sqlite(path, "open", e))?;
    schema::configure(&conn).map_err(|e| JournalError::sqlite(path, "configure", e))?;
    // A run killed between the import's commit and the switch to WAL left a complete journal
    // in rollback mode: switch now, or this run's commits would lock out `status`.
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .map_err(|e| JournalError::sqlite(path, "read the journal mode", e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))
            .map_err(|e| JournalError::sqlite(path, "turn on WAL mode", e))?;
    }
    let tx = conn
        .transaction()
        .map_err(|e| JournalError::sqlite(path, "update the job", e))?;
    if opts.retry_failed {
        let err = |e| JournalError::sqlite(path, "reset failed ops", e);
        let n = tx
            .execute(
                "UPDATE ops SET state = 'pending' WHERE state = 'failed'",
                [],
            )
            .map_err(err)?;
        if n > 0 {
            tx.execute("UPDATE job SET ended_at = NULL WHERE id = 1", [])
                .map_err(err)?;
        }
        tracing::info!(journal = %path.display(), ops = n, "--retry-failed: {n} failed ops set back to pending");
    }
    // A run killed after its last outcome was committed but before it recorded its end left
    // a finished job without an end time: give it the time of its last attempt, so `status`
    // does not show a complete job as never ended.
    tx.execute(
        "UPDATE job SET ended_at = (SELECT max(last_attempt_at) FROM ops) \
         WHERE id = 1 AND ended_at IS NULL \
         AND NOT EXISTS (SELECT 1 FROM ops WHERE state = 'pending')",
        [],
    )
    .map_err(|e| JournalError::sqlite(path, "record the end of the job", e))?;
    tx.commit()
        .map_err(|e| JournalError::sqlite(path, "update the job", e))?;
    Ok(Journal {
        path: path.to_path_buf(),
        conn,
        lock: Some(lock),
        run_settings: settings,
        retry_failed: opts.retry_failed,
        _tidy: None,
    })
}

/// Creates a new journal at `path` (mode 0600) and imports the plan, unless a file appeared
/// there first (`None`). The caller holds the run lock and hands it over with `with_lock`.
fn create_new(
    path: &Path,
    manifest: &Manifest,
    meta: &JobMeta,
    settings: &str,
    opts: OpenOptions,
) -> Result<Option<Journal>, JournalError> {
    // A leftover WAL or rollback journal with content would be applied by SQLite to the
    // new file. A `-shm` is rebuilt by the first connection, and an empty file is inert.
    for c in ["-wal", "-journal"] {
        let leftover = suffixed(path, c);
        if leftover.symlink_metadata().is_ok_and(|m| m.len() > 0) {
            return Err(JournalError::Orphan {
                path: path.to_path_buf(),
                leftover,
            });
        }
    }
    match FsOpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(file) => drop(file),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(None),
        Err(e) => return Err(JournalError::io(path, "create the journal", e)),
    }
    let conn = match create(path, manifest, meta, settings) {
        Ok(conn) => conn,
        Err(e) => {
            // Our own file, created a moment ago, holding no committed data.
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
    };
    tracing::info!(
        journal = %path.display(),
        ops = manifest.ops.len(),
        "new journal created"
    );
    Ok(Some(Journal {
        path: path.to_path_buf(),
        conn,
        lock: None,
        run_settings: settings.to_owned(),
        retry_failed: opts.retry_failed,
        _tidy: None,
    }))
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

/// Opens an existing journal after checking its header; with `deep`, also runs SQLite's
/// `quick_check`. Read-only: nothing is written to the file.
fn open_checked(path: &Path, deep: bool) -> Result<Connection, JournalError> {
    match path.metadata() {
        Ok(m) if m.is_file() => {}
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
    schema::check_header(path).map_err(|reason| JournalError::Corrupt {
        path: path.to_path_buf(),
        reason,
    })?;
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| JournalError::sqlite(path, "open", e))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(|e| JournalError::sqlite(path, "configure", e))?;
    match schema::check_identity(&conn) {
        Ok(()) => {}
        Err(IdentityError::Foreign(reason)) => {
            return Err(JournalError::Corrupt {
                path: path.to_path_buf(),
                reason,
            });
        }
        Err(IdentityError::Newer(found)) => {
            return Err(JournalError::UnsupportedVersion {
                path: path.to_path_buf(),
                found,
                supported: schema::SCHEMA_VERSION,
            });
        }
        Err(IdentityError::Sqlite(e)) => {
            return Err(JournalError::sqlite(path, "read the schema", e));
        }
    }
    if deep {
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
    }
    Ok(conn)
}

/// Creates the schema and imports the whole plan in one transaction, then turns WAL on.
fn create(
    path: &Path,
    manifest: &Manifest,
    meta: &JobMeta,
    settings: &str,
) -> Result<Connection, JournalError> {
    let err = |action| move |e| JournalError::sqlite(path, action, e);
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(err("open"))?;
    schema::configure(&conn).map_err(err("configure"))?;
    // A larger page cache keeps the import from spilling half-built pages to disk.
    conn.pragma_update(None, "cache_size", -65_536)
        .map_err(err("configure"))?;
    // The import runs in rollback-journal mode: for a new file SQLite journals almost
    // nothing, so 1,000,000 ops are written once instead of twice (WAL, then checkpoint).
    // A crash mid-import leaves an empty file and its rollback journal: the next run keeps
    // both, renamed, and imports again (see `interrupted_import`).
    let tx = conn.transaction().map_err(err("start the import"))?;
    tx.execute_batch(schema::SCHEMA_V1)
        .map_err(err("create the schema"))?;
    tx.pragma_update(None, "application_id", schema::APPLICATION_ID)
        .map_err(err("create the schema"))?;
    tx.pragma_update(None, "user_version", schema::SCHEMA_VERSION)
        .map_err(err("create the schema"))?;
    tx.execute(
        "INSERT INTO job (id, manifest_path, checksum, name, settings, tool_version, total_ops, \
         created_at) VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            meta.manifest_path.to_string_lossy(),
            manifest.checksum,
            manifest.name.as_ref().or(meta.name.as_ref()),
            settings,
            env!("CARGO_PKG_VERSION"),
            manifest.ops.len() as i64,
            now_ms(),
        ],
    )
    .map_err(err("record the job"))?;
    {
        let mut st = tx
            .prepare("INSERT INTO sources (idx, path) VALUES (?1, ?2)")
            .map_err(err("record the sources"))?;
        for (i, p) in manifest.sources.iter().enumerate() {
            st.execute(params![i as i64, p.to_string_lossy()])
                .map_err(err("record the sources"))?;
        }
        let mut st = tx
            .prepare(
                "INSERT INTO ops (seq, source_file, line, action, room, client, fields) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .map_err(err("import the plan"))?;
        for (seq, p) in manifest.ops.iter().enumerate() {
            let fields = match &p.op.fields {
                Some(f) => Some(serde_json::to_string(&**f).map_err(|e| {
                    JournalError::Other(format!("cannot encode the fields of op {seq}: {e}"))
                })?),
                None => None,
            };
            st.execute(params![
                seq as i64,
                p.source.file,
                p.source.line,
                p.op.action.as_str(),
                &*p.op.room,
                p.op.client.as_deref(),
                fields,
            ])
            .map_err(err("import the plan"))?;
        }
    }
    tx.commit().map_err(err("commit the import"))?;
    conn.pragma_update(None, "cache_size", -2_000)
        .map_err(err("configure"))?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(err("turn on WAL mode"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(JournalError::Other(format!(
            "journal {}: SQLite refused WAL mode (got {mode}); is it on a network file system?",
            path.display()
        )));
    }
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        // Make the new directory entry durable too; failure here is not worth refusing for.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(conn)
}

pub(super) fn open_read_only(path: &Path) -> Result<Journal, JournalError> {
    // No WAL file means no connection has the journal open (one in WAL mode keeps it while
    // open): the companions SQLite creates for this read are ours to remove afterwards.
    // Decided before the open, armed only after it succeeded: a journal refused as damaged
    // (a hot rollback journal, say) must not be touched by a read-write connection.
    let no_wal_before = !suffixed(path, "-wal").exists();
    // The same checks as `run` (with `quick_check`): `status` must not call a journal
    // complete that `run` then refuses as damaged, nor `revert` work from a damaged one.
    let conn = match open_checked(path, true) {
        Ok(conn) => conn,
        // A run creating the journal (the plan import) holds the lock while the file is
        // still empty or half written: say so instead of calling it damaged.
        Err(e @ JournalError::Corrupt { .. }) => {
            return Err(match running_pid(path) {
                Some(pid) => JournalError::Locked {
                    path: path.to_path_buf(),
                    pid,
                },
                None => e,
            });
        }
        Err(e) => return Err(e),
    };
    Ok(Journal {
        path: path.to_path_buf(),
        conn,
        lock: None,
        run_settings: String::new(),
        retry_failed: false,
        _tidy: no_wal_before.then(|| TidyWal(path.to_path_buf())),
    })
}

/// Removes the empty `-wal` and `-shm` files a read-only connection leaves beside a journal
/// (only the last connection to close removes them, and a read-only one cannot), so
/// `status`, `report`, `revert` and `plan` leave the directory as they found it. It opens
/// and closes one read-write connection, which makes SQLite do it under its own locks: if
/// a run has opened the journal meanwhile, that run's connection is not the last, and
/// nothing is removed. Best effort: a failure leaves two harmless files.
pub(crate) struct TidyWal(PathBuf);

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

/// Everything recorded about one op, for `report` and `revert`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OpRow {
    pub seq: u64,
    /// The manifest file (or included file) the op came from.
    pub file: String,
    pub line: u32,
    pub op: Op,
    pub state: OpState,
    pub attempts: u32,
    pub http_status: Option<u16>,
    pub rc: Option<i64>,
    pub error_code: Option<String>,
    pub message: Option<String>,
    pub latency_ms: Option<u64>,
    /// Unix milliseconds when the first/last attempt's outcome was recorded.
    pub first_attempt_at: Option<i64>,
    pub last_attempt_at: Option<i64>,
}

/// One `run` invocation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunInfo {
    pub id: i64,
    pub pid: u32,
    pub tool_version: String,
    pub settings: serde_json::Value,
    pub retry_failed: bool,
    /// Unix milliseconds.
    pub started_at: i64,
    /// The last group commit of the run (how far a crashed run got).
    pub last_commit_at: Option<i64>,
    /// `None` for a run still going, or one that was killed.
    pub ended_at: Option<i64>,
    pub exit_code: Option<u8>,
    pub exit: Option<String>,
    /// Ops that reached a final state during this run.
    pub ops_finalized: u64,
    /// Outcomes (final or not) recorded during this run.
    pub outcomes: u64,
}

/// The prior state of a room as read before its first change.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// `None`: the read gave nothing usable.
    pub prior: Option<serde_json::Value>,
    pub taken_at: i64,
}

/// Failed ops sharing an error code.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FailureGroup {
    pub error_code: Option<String>,
    pub count: u64,
    /// The HTTP statuses seen with this code.
    pub http_statuses: Vec<u16>,
    /// One message seen with this code, as an example.
    pub example_message: Option<String>,
}

/// The job record plus what describes the file itself.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobInfo {
    pub manifest_path: String,
    pub checksum: String,
    pub name: Option<String>,
    pub settings: serde_json::Value,
    pub tool_version: String,
    pub total_ops: u64,
    pub created_at: i64,
    pub started_at: Option<i64>,
    /// When the last run left no op pending.
    pub ended_at: Option<i64>,
    pub schema_version: i32,
}

fn parse_op(
    action: &str,
    room: String,
    client: Option<String>,
    fields: Option<String>,
) -> Result<Op, String> {
    let action = Action::parse(action).ok_or_else(|| format!("unknown action {action:?}"))?;
    let fields = match fields {
        Some(f) => Some(Box::new(
            serde_json::from_str::<RoomFields>(&f).map_err(|e| format!("bad fields: {e}"))?,
        )),
        None => None,
    };
    Ok(Op {
        action,
        room: room.into(),
        client: client.map(Into::into),
        fields,
    })
}

fn opt_u16(v: Option<i64>) -> Option<u16> {
    v.and_then(|v| u16::try_from(v).ok())
}

impl Journal {
    /// The journal's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn with_lock(self, lock: File) -> Journal {
        Journal {
            lock: Some(lock),
            ..self
        }
    }

    /// True when this journal holds the run lock (opened by `open_for_run`).
    pub fn is_locked_for_run(&self) -> bool {
        self.lock.is_some()
    }

    /// True when `--retry-failed` was asked for when opening.
    pub fn retry_failed(&self) -> bool {
        self.retry_failed
    }

    fn corrupt(&self, reason: String) -> JournalError {
        JournalError::Corrupt {
            path: self.path.clone(),
            reason,
        }
    }

    pub(super) fn pending_ops(&self) -> Result<Vec<JournalOp>, JournalError> {
        let err = |e| JournalError::sqlite(&self.path, "read the pending ops", e);
        let mut st = self
            .conn
            .prepare(
                "SELECT seq, action, room, client, fields, attempts FROM ops \
                 WHERE state = 'pending' ORDER BY seq",
            )
            .map_err(err)?;
        let mut rows = st.query([]).map_err(err)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(err)? {
            let seq: i64 = r.get(0).map_err(err)?;
            let action: String = r.get(1).map_err(err)?;
            let op = parse_op(
                &action,
                r.get(2).map_err(err)?,
                r.get(3).map_err(err)?,
                r.get(4).map_err(err)?,
            )
            .map_err(|e| self.corrupt(format!("op {seq}: {e}")))?;
            out.push(JournalOp {
                seq: seq as u64,
                op,
                attempts: r.get::<_, i64>(5).map_err(err)? as u32,
            });
        }
        Ok(out)
    }

    pub(super) fn state_counts(&self) -> Result<Counts, JournalError> {
        let err = |e| JournalError::sqlite(&self.path, "count the ops", e);
        let mut st = self
            .conn
            .prepare("SELECT state, count(*) FROM ops GROUP BY state")
            .map_err(err)?;
        let mut rows = st.query([]).map_err(err)?;
        let mut c = Counts::default();
        while let Some(r) = rows.next().map_err(err)? {
            let state: String = r.get(0).map_err(err)?;
            let n = r.get::<_, i64>(1).map_err(err)? as u64;
            match OpState::parse(&state) {
                Some(OpState::Pending) => c.pending = n,
                Some(OpState::Done) => c.done = n,
                Some(OpState::Failed) => c.failed = n,
                Some(OpState::Skipped) => c.skipped = n,
                None => return Err(self.corrupt(format!("unknown op state {state:?}"))),
            }
        }
        Ok(c)
    }

    pub(super) fn snapshot_rooms(&self) -> Result<HashSet<String>, JournalError> {
        let err = |e| JournalError::sqlite(&self.path, "read the snapshots", e);
        let mut st = self
            .conn
            .prepare("SELECT room FROM snapshots")
            .map_err(err)?;
        st.query_map([], |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect())
            .map_err(err)
    }

    /// Every snapshot, by room.
    pub fn snapshots(&self) -> Result<HashMap<String, Snapshot>, JournalError> {
        let err = |e| JournalError::sqlite(&self.path, "read the snapshots", e);
        let mut st = self
            .conn
            .prepare("SELECT room, prior, taken_at FROM snapshots")
            .map_err(err)?;
        let mut rows = st.query([]).map_err(err)?;
        let mut out = HashMap::new();
        while let Some(r) = rows.next().map_err(err)? {
            let room: String = r.get(0).map_err(err)?;
            let prior: Option<String> = r.get(1).map_err(err)?;
            let prior = match prior {
                Some(p) => Some(
                    serde_json::from_str(&p)
                        .map_err(|e| self.corrupt(format!("snapshot of {room:?}: {e}")))?,
                ),
                None => None,
            };
            out.insert(
                room,
                Snapshot {
                    prior,
                    taken_at: r.get(2).map_err(err)?,
                },
            );
        }
        Ok(out)
    }

    /// What the journal records about the job (for `plan` and `status`).
    pub fn meta(&self) -> Result<JobMeta, JournalError> {
        let j = self.job()?;
        Ok(JobMeta {
            manifest_path: PathBuf::from(j.manifest_path),
            checksum: j.checksum,
            name: j.name,
            settings: j.settings,
        })
    }

    /// The job record.
    pub fn job(&self) -> Result<JobInfo, JournalError> {
        let err = |e| JournalError::sqlite(&self.path, "read the job record", e);
        let version: i32 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(err)?;
        let (j, settings) = self
            .conn
            .query_row(
                "SELECT manifest_path, checksum, name, settings, tool_version, total_ops, \
                 created_at, started_at, ended_at FROM job WHERE id = 1",
                [],
                |r| {
                    Ok((
                        JobInfo {
                            manifest_path: r.get(0)?,
                            checksum: r.get(1)?,
                            name: r.get(2)?,
                            settings: serde_json::Value::Null,
                            tool_version: r.get(4)?,
                            total_ops: r.get::<_, i64>(5)? as u64,
                            created_at: r.get(6)?,
                            started_at: r.get(7)?,
                            ended_at: r.get(8)?,
                            schema_version: version,
                        },
                        r.get::<_, String>(3)?,
                    ))
                },
            )
            .map_err(err)?;
        let settings = serde_json::from_str(&settings)
            .map_err(|e| self.corrupt(format!("job settings: {e}")))?;
        Ok(JobInfo { settings, ..j })
    }

    /// Every run, oldest first.
    pub fn runs(&self) -> Result<Vec<RunInfo>, JournalError> {
        let err = |e| JournalError::sqlite(&self.path, "read the runs", e);
        let mut st = self
            .conn
            .prepare(
                "SELECT id, pid, tool_version, settings, retry_failed, started_at, \
                 last_commit_at, ended_at, exit_code, exit, ops_finalized, outcomes \
                 FROM runs ORDER BY id",
            )
            .map_err(err)?;
        let rows: Vec<(RunInfo, String)> = st
            .query_map([], |r| {
                Ok((
                    RunInfo {
                        id: r.get(0)?,
                        pid: r.get::<_, i64>(1)? as u32,
                        tool_version: r.get(2)?,
                        settings: serde_json::Value::Null,
                        retry_failed: r.get::<_, i64>(4)? != 0,
                        started_at: r.get(5)?,
                        last_commit_at: r.get(6)?,
                        ended_at: r.get(7)?,
                        exit_code: r.get::<_, Option<i64>>(8)?.map(|c| c as u8),
                        exit: r.get(9)?,
                        ops_finalized: r.get::<_, i64>(10)? as u64,
                        outcomes: r.get::<_, i64>(11)? as u64,
                    },
                    r.get::<_, String>(3)?,
                ))
            })
            .and_then(|rows| rows.collect())
            .map_err(err)?;
        rows.into_iter()
            .map(|(run, s)| {
                let settings = serde_json::from_str(&s)
                    .map_err(|e| self.corrupt(format!("settings of run {}: {e}", run.id)))?;
                Ok(RunInfo { settings, ..run })
            })
            .collect()
    }

    /// The exit status of the last run that ended, if any.
    pub fn last_exit(&self) -> Result<Option<crate::Exit>, JournalError> {
        let code: Option<Option<i64>> = self
            .conn
            .query_row(
                "SELECT exit_code FROM runs WHERE exit_code IS NOT NULL ORDER BY id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| JournalError::sqlite(&self.path, "read the runs", e))?;
        Ok(code.flatten().and_then(|c| {
            [
                crate::Exit::Success,
                crate::Exit::OpsFailed,
                crate::Exit::Invalid,
                crate::Exit::Aborted,
                crate::Exit::Stopped,
            ]
            .into_iter()
            .find(|e| i64::from(e.code()) == c)
        }))
    }

    /// The outcome a finished job is re-run with: `None` while ops are pending, else
    /// success (0) or, when some ops failed permanently, ops failed (1).
    pub fn recorded_outcome(&self) -> Result<Option<crate::Exit>, JournalError> {
        let c = self.state_counts()?;
        Ok((c.pending == 0).then_some(if c.failed > 0 {
            crate::Exit::OpsFailed
        } else {
            crate::Exit::Success
        }))
    }

    /// Total attempts over all ops, and retries (attempts beyond each op's first).
    pub fn attempt_totals(&self) -> Result<(u64, u64), JournalError> {
        self.conn
            .query_row(
                "SELECT COALESCE(SUM(attempts), 0), \
                 COALESCE(SUM(CASE WHEN attempts > 1 THEN attempts - 1 ELSE 0 END), 0) FROM ops",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )
            .map_err(|e| JournalError::sqlite(&self.path, "count the attempts", e))
    }

    /// Failed ops grouped by error code, most frequent first.
    pub fn failures_by_code(&self) -> Result<Vec<FailureGroup>, JournalError> {
        let err = |e| JournalError::sqlite(&self.path, "group the failures", e);
        let mut st = self
            .conn
            .prepare(
                "SELECT error_code, count(*), group_concat(DISTINCT http_status), max(message) \
                 FROM ops WHERE state = 'failed' GROUP BY error_code \
                 ORDER BY count(*) DESC, error_code",
            )
            .map_err(err)?;
        st.query_map([], |r| {
            let statuses: Option<String> = r.get(2)?;
            let mut http_statuses: Vec<u16> = statuses
                .unwrap_or_default()
                .split(',')
                .filter_map(|s| s.trim().parse().ok())
                .collect();
            http_statuses.sort_unstable();
            Ok(FailureGroup {
                error_code: r.get(0)?,
                count: r.get::<_, i64>(1)? as u64,
                http_statuses,
                example_message: r.get(3)?,
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(err)
    }

    /// The manifest files ops came from (`sources[0]` is the manifest).
    pub fn sources(&self) -> Result<Vec<String>, JournalError> {
        let mut st = self
            .conn
            .prepare("SELECT path FROM sources ORDER BY idx")
            .map_err(|e| JournalError::sqlite(&self.path, "read the sources", e))?;
        st.query_map([], |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| JournalError::sqlite(&self.path, "read the sources", e))
    }

    /// Calls `f` with every op (or only those in `state`), in manifest order, streaming.
    pub fn for_each_op<E: From<JournalError>>(
        &self,
        state: Option<OpState>,
        mut f: impl FnMut(OpRow) -> Result<(), E>,
    ) -> Result<(), E> {
        let sources = self.sources()?;
        let err = |e| JournalError::sqlite(&self.path, "read the ops", e);
        let mut st = self
            .conn
            .prepare(
                "SELECT seq, source_file, line, action, room, client, fields, state, attempts, \
                 http_status, rc, error_code, message, latency_ms, first_attempt_at, \
                 last_attempt_at FROM ops WHERE ?1 IS NULL OR state = ?1 ORDER BY seq",
            )
            .map_err(err)?;
        let mut rows = st.query([state.map(OpState::as_str)]).map_err(err)?;
        while let Some(r) = rows.next().map_err(err)? {
            let row = (|| -> Result<OpRow, JournalError> {
                let seq: i64 = r.get(0).map_err(err)?;
                let file_idx: i64 = r.get(1).map_err(err)?;
                let action: String = r.get(3).map_err(err)?;
                let op = parse_op(
                    &action,
                    r.get(4).map_err(err)?,
                    r.get(5).map_err(err)?,
                    r.get(6).map_err(err)?,
                )
                .map_err(|e| self.corrupt(format!("op {seq}: {e}")))?;
                let state: String = r.get(7).map_err(err)?;
                let state = OpState::parse(&state)
                    .ok_or_else(|| self.corrupt(format!("op {seq}: unknown state {state:?}")))?;
                Ok(OpRow {
                    seq: seq as u64,
                    file: usize::try_from(file_idx)
                        .ok()
                        .and_then(|i| sources.get(i).cloned())
                        .unwrap_or_default(),
                    line: r.get::<_, i64>(2).map_err(err)? as u32,
                    op,
                    state,
                    attempts: r.get::<_, i64>(8).map_err(err)? as u32,
                    http_status: opt_u16(r.get(9).map_err(err)?),
                    rc: r.get(10).map_err(err)?,
                    error_code: r.get(11).map_err(err)?,
                    message: r.get(12).map_err(err)?,
                    latency_ms: r.get::<_, Option<i64>>(13).map_err(err)?.map(|v| v as u64),
                    first_attempt_at: r.get(14).map_err(err)?,
                    last_attempt_at: r.get(15).map_err(err)?,
                })
            })()?;
            f(row)?;
        }
        Ok(())
    }

    /// Splits the journal into its parts for the writer thread.
    pub(super) fn into_parts(self) -> (PathBuf, Connection, Option<File>, String, bool) {
        (
            self.path,
            self.conn,
            self.lock,
            self.run_settings,
            self.retry_failed,
        )
    }
}
