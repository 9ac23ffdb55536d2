//! The SQLite journal of one job: plan import, op state transitions written by one
//! group-committing writer, resume, and the queries behind `status`, `report` and `revert`
//! (SPEC §5).
//!
//! INTERFACE CONTRACT (skeleton): the runner codes against the signatures below; the journal
//! implementation fills them in and may add to them, but must not change them.

pub mod command;

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

/// Why the journal cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal error: {0}")]
    Other(String),
}

/// An open journal, held by one process (an exclusive lock is taken on open for `run`).
pub struct Journal {
    _private: (),
}

impl Journal {
    /// For `run`: creates the journal (mode 0600, the whole plan imported in one transaction)
    /// or resumes it; refuses a journal whose checksum differs from `manifest`'s, one locked
    /// by another process, or a damaged one, each with a message that says what to do.
    pub fn open_for_run(
        path: &Path,
        manifest: &Manifest,
        meta: &JobMeta,
        opts: OpenOptions,
    ) -> Result<Journal, JournalError> {
        let _ = (path, manifest, meta, opts);
        unimplemented!()
    }

    /// For `status`, `report`, `revert` and `plan`: reads without locking out a running job.
    pub fn open_read_only(path: &Path) -> Result<Journal, JournalError> {
        let _ = path;
        unimplemented!()
    }

    /// What the journal records about the job (checksum, name, settings).
    pub fn meta(&self) -> Result<JobMeta, JournalError> {
        unimplemented!()
    }

    /// Ops not yet final, in manifest order.
    pub fn pending(&self) -> Result<Vec<JournalOp>, JournalError> {
        unimplemented!()
    }

    pub fn counts(&self) -> Result<Counts, JournalError> {
        unimplemented!()
    }

    /// Rooms whose prior state was already read (`--snapshot`), so a resumed run reads none twice.
    pub fn snapshotted_rooms(&self) -> Result<HashSet<String>, JournalError> {
        unimplemented!()
    }

    /// Starts the single writer (a background thread that commits in groups) for this run.
    pub fn start_writer(self) -> Result<JournalWriter, JournalError> {
        unimplemented!()
    }
}

/// The handle through which the runner records outcomes. Cheap to clone.
#[derive(Clone)]
pub struct JournalWriter {
    _private: (),
}

impl JournalWriter {
    /// Queues an outcome; it is durable at the next group commit (see [`flush`](Self::flush)).
    pub fn record(&self, rec: OpRecord) -> Result<(), JournalError> {
        let _ = rec;
        unimplemented!()
    }

    /// Records the prior state of `room` read before its first change (`None` when the read
    /// returned nothing usable); resolves once it is durable, so the change may go out.
    pub async fn record_snapshot(
        &self,
        room: &str,
        prior: Option<serde_json::Value>,
    ) -> Result<(), JournalError> {
        let _ = (room, prior);
        unimplemented!()
    }

    /// Resolves once everything queued so far is durable.
    pub async fn flush(&self) -> Result<(), JournalError> {
        unimplemented!()
    }

    /// Records the end of this run and its exit status, commits and closes.
    pub async fn finish(self, exit: Exit) -> Result<(), JournalError> {
        let _ = exit;
        unimplemented!()
    }
}
