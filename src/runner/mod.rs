//! Delivery: scheduling that keeps ops on one room or client in order, rate limiting per
//! credential, retries with backoff and the server's hints, deadlines, shutdown and progress
//! (SPEC §4).

use crate::Exit;
use crate::cli::job::JobConfig;

/// Runs (or resumes) a job to its end and returns the exit status.
pub async fn run_job(config: JobConfig) -> anyhow::Result<Exit> {
    let _ = config;
    anyhow::bail!("`run` is not built yet")
}
