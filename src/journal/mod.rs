//! The SQLite journal of one job: plan import, op state transitions written by one
//! group-committing writer, resume, and the queries behind `status`, `report` and `revert`
//! (SPEC §5).
//!
//! Two runs never drive one job: `open_for_run` takes an exclusive advisory lock on the
//! sidecar `PATH.lock` (holding the pid) for the life of the run; `open_read_only` takes no
//! lock, so `status` works during a run. Nothing in the journal comes from credentials: the
//! settings JSON is built by the runner from flags and manifest settings, op fields come
//! from the manifest, snapshots keep only the room's updatable fields.

pub mod command;
mod csvout;
mod error;
mod import;
mod lock;
mod open;
mod revert;
mod schema;
mod store;
mod types;
mod writer;

pub use error::JournalError;
pub use lock::{lock_path, running_pid};
pub use revert::{RevertPlan, Unknown, revert_plan};
pub use schema::SCHEMA_VERSION;
pub use store::Journal;
pub(crate) use types::fmt_ms;
pub use types::{
    Counts, FailureGroup, JobInfo, JobMeta, JournalOp, OpRecord, OpRow, OpState, OpenOptions,
    RunInfo, Snapshot,
};
pub use writer::JournalWriter;
