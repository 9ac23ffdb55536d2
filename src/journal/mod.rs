//! The SQLite journal of one job (SPEC §5): it owns the job's on-disk record, from the plan
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
//! Layout, one concern per file:
//! - `store`: [`Journal`] itself, its two ways of opening and every read query;
//! - `open`: an existing journal, checked before anything is written, and resumed; the files
//!   beside it (`--fresh` and an interrupted import rename them aside, a read tidies the WAL
//!   files it made);
//! - `import`: a new journal, created 0600 with the whole plan in one transaction;
//! - `lock`: the run lock;
//! - `writer`: [`JournalWriter`] and the thread that commits outcomes in groups;
//! - `schema`: the on-disk format, its version, the durability settings, the damage checks;
//! - `types`: the records stored and read back; `error`: [`JournalError`];
//! - `undo`: the undo phase of a job (`undo_at_end`, `--undo-at`): its plan (the inverse
//!   `revert` computes), its ops and their outcomes, in tables of their own;
//! - `revert`: the inverse of what a job changed; `csvout`: the CSV manifests `report
//!   --failed` and `revert` write; `status`: what `status` shows; `report`: the report, the
//!   failed-ops manifest and the revert manifest written from a journal.

mod csvout;
mod error;
mod import;
mod lock;
mod open;
pub mod report;
mod revert;
mod schema;
pub mod status;
mod store;
mod types;
mod undo;
mod writer;

pub use error::JournalError;
pub use lock::{lock_path, running_pid};
pub(crate) use revert::revert_plan;
pub use store::Journal;
pub(crate) use types::fmt_ms;
pub use types::{
    Counts, FailureGroup, JobInfo, JobMeta, JournalOp, OpRecord, OpRow, OpState, OpenOptions,
    RunInfo, Snapshot,
};
pub(crate) use undo::UndoPlanRecord;
pub use undo::{UndoPhase, owes_undo};
pub use writer::JournalWriter;
