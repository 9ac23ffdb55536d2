//! Delivery: scheduling that keeps ops on one room or client in order, rate limiting per
//! credential, retries with backoff and the server's hints, deadlines, shutdown and progress
//! (SPEC §4).

pub mod executor;
pub mod pacing;
pub mod progress;
pub mod retry;
pub mod scheduler;
pub mod summary;

pub use executor::{Executor, MemoryRecorder, Recorder};
pub use scheduler::{Controls, RunReport, RunnerOptions, StopReason, run};
pub use summary::Stats;

use crate::Exit;
use crate::cli::job::JobConfig;

/// Runs (or resumes) a job to its end and returns the exit status.
pub async fn run_job(config: JobConfig) -> anyhow::Result<Exit> {
    let _ = config;
    anyhow::bail!("`run` is not built yet")
}
