//! The records the journal stores and hands out: the job's metadata, op states and counts,
//! the outcome the runner records for an op, and what `status`, `report` and `revert` read
//! back (ops, runs, snapshots, failure groups). Times are Unix milliseconds (UTC).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::op::Op;

/// What the journal records about the job itself (never a credential).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobMeta {
    pub manifest_path: PathBuf,
    pub checksum: String,
    pub name: Option<String>,
    /// The effective settings of this run (concurrency, rate, ...), for `status`.
    pub settings: serde_json::Value,
    /// What the job sends to: the base URL, or [`SANDBOX_TARGET`](super::SANDBOX_TARGET).
    /// A journal is bound to the target of its first run (recorded as `base_url` in its
    /// settings): resuming it against another is refused. `None` checks nothing.
    #[serde(default)]
    pub target: Option<String>,
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

impl OpState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            OpState::Pending => "pending",
            OpState::Done => "done",
            OpState::Failed => "failed",
            OpState::Skipped => "skipped",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<OpState> {
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
    pub(crate) fn is_final(self) -> bool {
        self != OpState::Pending
    }
}

/// How `run` opens the journal.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenOptions {
    /// Start a new job: an existing journal is renamed aside (never deleted).
    pub fresh: bool,
    /// Put ops that failed permanently back to pending.
    pub retry_failed: bool,
    /// Resume a job whose manifest's ops changed: ops done or failed stay as they are, new
    /// ops are added as pending, pending ops no longer in the manifest are skipped.
    pub replan: bool,
    /// Resume a job recorded against another base URL (the same service under another
    /// address), and bind it to the new one. Never resumes a sandbox job against an API,
    /// nor the other way round.
    pub retarget: bool,
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

impl Counts {
    pub(crate) fn total(&self) -> u64 {
        self.pending + self.done + self.failed + self.skipped
    }
}

/// The ops of one action per state; `already` counts the done ones answered "the desired
/// state already holds" (`ROOM_NOT_MUTED`, `USER_ALREADY_BLOCKED`, `BLOCK_NOT_FOUND`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ActionCounts {
    pub action: crate::op::Action,
    #[serde(flatten)]
    pub counts: Counts,
    pub already: u64,
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

/// Unix milliseconds now.
pub(super) fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// RFC 3339 (UTC) of Unix milliseconds.
pub(crate) fn fmt_ms(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| ms.to_string())
}
