//! The SQLite journal of one job (docs/behaviour.md §5): it owns the job's on-disk record, from the plan
//! import through every op's state transitions to the queries behind `status`, `report`
//! and `revert`. `run` opens it with [`Journal::open_for_run`] (creating it and importing
//! the plan, or resuming it) and records outcomes through the [`JournalWriter`] that
//! [`Journal::start_writer`] returns; the read-only commands open it with
//! [`Journal::open_read_only`].
//!
//! Two runs never drive one job: `open_for_run` takes an exclusive advisory lock on the
//! sidecar `PATH.lock` (holding the pid) for the life of the run; `open_read_only` takes no
//! lock, so `status` works during a run. Nothing in the journal comes from credentials: the
//! settings JSON is built by the runner from flags and manifest settings, op fields come
//! from the manifest, snapshots keep only the room's updatable fields.
//!
//! A journal is bound to the target of its first run (a base URL, or the sandbox: see
//! [`JobMeta::target`]) and to what its manifest means, not to the manifest's bytes: a
//! resume against another target is refused, as is one whose manifest's ops changed, unless
//! `--replan` (see `resume`).
//!
//! Layout, one concern per file:
//! - `store`: [`Journal`] itself, its two ways of opening and every read query;
//! - `open`: an existing journal, checked before anything is written; the files beside it
//!   (`--fresh` and an interrupted import rename them aside, a read tidies the WAL files it
//!   made), and the directory `run` creates for it;
//! - `resume`: what a resume checks (target, the manifest's ops) and updates (a new checksum,
//!   `--replan`, `--retarget`, `--retry-failed`); `diff`: how the manifest's ops line up with
//!   the journal's plan;
//! - `import`: a new journal, created 0600 with the whole plan in one transaction;
//! - `lock`: the run lock;
//! - `writer`: [`JournalWriter`] and the thread that commits outcomes in groups;
//! - `series`: the per-second counts of requests, retries, 429s and outcomes of every run,
//!   written with each group (a table added `IF NOT EXISTS`, so older journals read too);
//! - `schema`: the on-disk format, its versions, the durability settings, the damage checks;
//!   `wal`: what a journal's WAL holds, for a main file cut short by a full disk; `sniff`:
//!   what a file given for a journal is when it is none (a manifest, say);
//! - `types`: the records stored and read back; `error`: [`JournalError`];
//! - `undo`: the undo phase of a job (`undo_at_end`, `--undo-at`): its plan (the inverse
//!   `revert` computes), its ops and their outcomes, in tables of their own;
//! - `revert`: the inverse of what a job changed; `csvout`: the CSV manifests `report
//!   --failed` and `revert` write; `status`: what `status` shows; `report`: the report, the
//!   failed-ops manifest and the revert manifest written from a journal.

mod csvout;
mod diff;
mod error;
mod import;
mod lock;
mod open;
pub mod report;
mod resume;
mod revert;
mod schema;
mod series;
mod sniff;
pub mod status;
mod store;
mod types;
mod undo;
mod wal;
mod writer;

pub use error::JournalError;
pub use lock::{lock_path, running_pid};
pub(crate) use resume::same_ops;
pub(crate) use revert::revert_plan;
pub(crate) use series::{Counters, SeriesPoint};
pub use store::Journal;
pub(crate) use types::fmt_ms;
pub use types::{
    ActionCounts, Counts, FailureGroup, JobInfo, JobMeta, JournalOp, OpRecord, OpRow, OpState,
    OpenOptions, RunInfo, Snapshot,
};
pub(crate) use undo::UndoPlanRecord;
pub use undo::{UndoPhase, owes_undo};
pub use writer::JournalWriter;

/// The target a job run with `--sandbox` records, in place of a base URL.
pub const SANDBOX_TARGET: &str = "sandbox";
