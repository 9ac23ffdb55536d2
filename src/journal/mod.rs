//! The SQLite journal of one job: plan import, op state transitions written by one
//! group-committing writer, resume, and the queries behind `status`, `report` and `revert`
//! (SPEC §5).
//!
//! INTERFACE CONTRACT (skeleton): the runner codes against the signatures below; the journal
//! implementation fills them in and may add to them, but must not change them.
//!
//! Layout: `schema` (on-disk format, version, durability choice, damage checks), `store`
//! (open/create/import, lock, `--fresh`, `--retry-failed`, read queries), `writer` (the
//! group-committing writer thread), `revert` (the inverse of a job), `csvout` (CSV
//! manifests `run` accepts), `status` (what `status` shows) and `report` (the report, failed
//! and revert manifests written from a journal).
//!
//! Two runs never drive one job: `open_for_run` takes an exclusive advisory lock on the
//! sidecar `PATH.lock` (holding the pid) for the life of the run; `open_read_only` takes no
//! lock, so `status` works during a run. Nothing in the journal comes from credentials: the
//! settings JSON is built by the runner from flags and manifest settings, op fields come
//! from the manifest, snapshots keep only the room's updatable fields.

mod csvout;
pub mod report;
mod revert;
mod schema;
pub mod status;
mod store;
mod writer;

pub use revert::{RevertPlan, Unknown, revert_plan};
pub use schema::SCHEMA_VERSION;
pub use store::{FailureGroup, JobInfo, OpRow, RunInfo, Snapshot, lock_path, running_pid};

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Exit;
use crate::manifest::Manifest;
use crate::op::Op;

/// What the journal records about the job itself (never a credential).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobMeta {
    pub manifest_path: PathBuf,
    pub checksum: String,
    pub name: Option<String>,
    /// The effective settings of this run (concurrency, rate, ...), for `status`.
    pub settings: serde_json::Value,
}

/// The state of one op.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpState {
    Pending,
    Done,
    Failed,
    Skipped,
}

/// How `run` opens the journal.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenOptions {
    /// Start a new job: an existing journal is renamed aside (never deleted).
    pub fresh: bool,
    /// Put ops that failed permanently back to pending.
    pub retry_failed: bool,
}

/// An op still to run, as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct JournalOp {
    /// Position in manifest order, 0-based; stable for the life of the journal.
    pub seq: u64,
    pub op: Op,
    /// Attempts already made in earlier runs.
    pub attempts: u32,
}

/// Ops per state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub pending: u64,
    pub done: u64,
    pub failed: u64,
    pub skipped: u64,
}

/// The latest outcome of one op, written by the runner.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OpRecord {
    pub seq: u64,
    pub state: Option<OpState>,
    /// Total attempts so far, across runs.
    pub attempts: u32,
    pub http_status: Option<u16>,
    pub rc: Option<i64>,
    pub error_code: Option<String>,
    pub message: Option<String>,
    /// Latency of the last attempt, in milliseconds.
    pub latency_ms: Option<u64>,
}

/// Why the journal cannot be used. Callers branch on the variant; [`JournalError::exit`]
/// gives the process exit status it calls for.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The journal belongs to a manifest whose bytes have changed since the job started.
    #[error(
        "the manifest changed since this job started: journal {path} was written for checksum \
         {journal_checksum}, but {manifest} now has checksum {manifest_checksum}. Run with \
         --fresh to start a new job (the old journal is kept, renamed), or restore the original \
         manifest to resume"
    )]
    ChecksumMismatch {
        path: PathBuf,
        manifest: PathBuf,
        journal_checksum: String,
        manifest_checksum: String,
    },
    /// The manifest has the journal's checksum but expands to a different number of ops
    /// (e.g. another imkit-batch version expands it differently).
    #[error(
        "journal {path} holds {journal_ops} ops but the manifest now expands to {manifest_ops}; \
         it cannot be resumed safely. Run with --fresh to start a new job (the old journal is \
         kept, renamed)"
    )]
    PlanMismatch {
        path: PathBuf,
        journal_ops: u64,
        manifest_ops: u64,
    },
    /// Another process holds the job's lock.
    #[error(
        "journal {path} is in use by another imkit-batch run{}; two runs must never drive one \
         job: wait for it to end or stop it (Ctrl-C or SIGTERM), then run again",
        pid.map(|p| format!(" (pid {p}?)")).unwrap_or_default()
    )]
    Locked { path: PathBuf, pid: Option<u32> },
    /// A torn, truncated, corrupt or foreign file. Nothing was written to it.
    #[error(
        "journal {path} is damaged or not an imkit-batch journal: {reason}. It was left \
         untouched: inspect it or move it aside, or start a new job with --fresh (which keeps \
         the file, renamed)"
    )]
    Corrupt { path: PathBuf, reason: String },
    /// Written by a newer imkit-batch whose schema this build does not know.
    #[error(
        "journal {path} has schema version {found}, newer than version {supported} that this \
         imkit-batch reads; use the imkit-batch version that wrote it"
    )]
    UnsupportedVersion {
        path: PathBuf,
        found: i32,
        supported: i32,
    },
    /// No journal at that path (`status`, `report`, `revert`).
    #[error("no journal at {path}: check the path (`run` writes MANIFEST.journal by default)")]
    NotFound { path: PathBuf },
    /// A SQLite `-wal`/`-shm`/`-journal` file of a journal that is not there any more.
    #[error(
        "{leftover} exists but journal {path} does not: it belongs to a journal that was moved \
         or deleted, and SQLite would apply it to a new one. Move it aside (it is never deleted \
         for you), then run again"
    )]
    Orphan { path: PathBuf, leftover: PathBuf },
    #[error("journal {path}: cannot {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("journal {path}: cannot {action}: {source}")]
    Sqlite {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    /// The writer thread has stopped (after a write error, or after `finish`).
    #[error("journal {path}: the writer has stopped: {reason}")]
    WriterStopped { path: PathBuf, reason: String },
    #[error("journal error: {0}")]
    Other(String),
}

impl JournalError {
    /// The exit status this error calls for: refusals before anything is sent exit 2; a
    /// journal that cannot be written mid-run aborts the job (3).
    pub fn exit(&self) -> Exit {
        match self {
            JournalError::WriterStopped { .. } => Exit::Aborted,
            _ => Exit::Invalid,
        }
    }

    /// Maps a SQLite error, recognising damaged files.
    pub(crate) fn sqlite(path: &Path, action: &'static str, source: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        match source.sqlite_error_code() {
            Some(C::NotADatabase) => JournalError::Corrupt {
                path: path.to_path_buf(),
                reason: "SQLite says the file is not a database".into(),
            },
            Some(C::DatabaseCorrupt) => JournalError::Corrupt {
                path: path.to_path_buf(),
                reason: format!("SQLite found it malformed while trying to {action} ({source})"),
            },
            _ => JournalError::Sqlite {
                path: path.to_path_buf(),
                action,
                source,
            },
        }
    }

    pub(crate) fn io(path: &Path, action: &'static str, source: std::io::Error) -> Self {
        JournalError::Io {
            path: path.to_path_buf(),
            action,
            source,
        }
    }
}

impl From<JournalError> for crate::ExitError {
    fn from(e: JournalError) -> crate::ExitError {
        crate::ExitError::new(e.exit(), e.to_string())
    }
}

/// An open journal, held by one process (an exclusive lock is taken on open for `run`).
pub struct Journal {
    path: PathBuf,
    conn: rusqlite::Connection,
    /// The held lock file, for a journal opened by `open_for_run`.
    lock: Option<std::fs::File>,
    /// The settings JSON of this run (from [`JobMeta`]), recorded by `start_writer`.
    run_settings: String,
    retry_failed: bool,
    /// For a read-only open that made SQLite create the WAL companions: removes them again
    /// once `conn` is closed (declared after it, so dropped after it).
    _tidy: Option<store::TidyWal>,
}

impl Journal {
    /// For `run`: creates the journal (mode 0600, the whole plan imported in one transaction)
    /// or resumes it; refuses a journal whose checksum differs from `manifest`'s, one locked
    /// by another process, or a damaged one, each with a message that says what to do.
    ///
    /// The lock (`PATH.lock`, exclusive, advisory) is held until the [`JournalWriter`] is
    /// finished or the process ends. `meta.settings` must not hold credentials.
    pub fn open_for_run(
        path: &Path,
        manifest: &Manifest,
        meta: &JobMeta,
        opts: OpenOptions,
    ) -> Result<Journal, JournalError> {
        store::open_for_run(path, manifest, meta, opts)
    }

    /// For `status`, `report`, `revert` and `plan`: reads without locking out a running job.
    pub fn open_read_only(path: &Path) -> Result<Journal, JournalError> {
        store::open_read_only(path)
    }

    /// Ops not yet final, in manifest order.
    pub fn pending(&self) -> Result<Vec<JournalOp>, JournalError> {
        self.pending_ops()
    }

    pub fn counts(&self) -> Result<Counts, JournalError> {
        self.state_counts()
    }

    /// Rooms whose prior state was already read (`--snapshot`), so a resumed run reads none twice.
    /// A room whose read gave nothing usable counts too: reading it again after the job has
    /// changed it would record the job's own state as the prior one.
    pub fn snapshotted_rooms(&self) -> Result<HashSet<String>, JournalError> {
        self.snapshot_rooms()
    }

    /// Starts the single writer (a background thread that commits in groups) for this run.
    /// Records the start of this run (pid, settings, tool version) first.
    pub fn start_writer(self) -> Result<JournalWriter, JournalError> {
        writer::start(self)
    }
}

/// The handle through which the runner records outcomes. Cheap to clone.
#[derive(Clone)]
pub struct JournalWriter {
    inner: std::sync::Arc<writer::Shared>,
}

impl JournalWriter {
    /// Queues an outcome; it is durable at the next group commit (see [`flush`](Self::flush)).
    /// A record whose `state` is `None` updates only the attempt fields; the op stays pending.
    pub fn record(&self, rec: OpRecord) -> Result<(), JournalError> {
        self.send_record(rec)
    }

    /// How many outcomes passed to [`record`](Self::record) are not committed yet; an error
    /// once the writer has stopped (nothing more can be recorded).
    pub fn not_durable(&self) -> Result<u64, JournalError> {
        self.uncommitted()
    }

    /// Resolves after the next group commit (or at once if one happened since the last
    /// call), or when the writer stops: then [`not_durable`](Self::not_durable) has news.
    /// Meant for one waiter at a time.
    pub async fn durable_progress(&self) {
        self.next_commit().await
    }

    /// Records the prior state of `room` read before its first change (`None` when the read
    /// returned nothing usable); resolves once it is durable, so the change may go out.
    /// `prior` is the room object (`result` of `GET /rooms/{id}`; the whole response body is
    /// accepted too). Only the first snapshot of a room is kept.
    pub async fn record_snapshot(
        &self,
        room: &str,
        prior: Option<serde_json::Value>,
    ) -> Result<(), JournalError> {
        self.send_snapshot(room, prior).await
    }

    /// Resolves once everything queued so far is durable.
    pub async fn flush(&self) -> Result<(), JournalError> {
        self.send_flush().await
    }

    /// Records the end of this run and its exit status, commits and closes (releasing the
    /// lock).
    pub async fn finish(self, exit: Exit) -> Result<(), JournalError> {
        self.send_finish(exit).await
    }
}
