//! What `status` shows of a job, gathered from its journal into one value
//! ([`StatusReport`], also the stable `status --json` format): the job, its state, counts
//! and progress, the attempts, every run, the rate so far and the failures by error code.

use serde::Serialize;

use super::{Counts, Journal, JournalError};
use super::{FailureGroup, JobInfo, RunInfo, fmt_ms, running_pid};

/// `status --json`: a stable format for scripts. Times are RFC 3339 (UTC).
#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub journal: String,
    pub schema_version: i32,
    pub job: StatusJob,
    /// `running` (a run holds the lock), `complete` (nothing pending), `incomplete`.
    pub state: &'static str,
    pub running_pid: Option<u32>,
    pub total: u64,
    pub counts: Counts,
    /// Final ops (done, failed, skipped) over the total, in percent.
    pub progress_percent: f64,
    pub attempts: u64,
    pub retries: u64,
    pub runs: Vec<StatusRun>,
    pub last_exit: Option<StatusExit>,
    /// Ops finalized per second of running, over all runs.
    pub rate_ops_per_sec: Option<f64>,
    pub running_seconds: f64,
    pub failures_by_code: Vec<FailureGroup>,
}

#[derive(Debug, Serialize)]
pub struct StatusJob {
    pub name: Option<String>,
    pub manifest: String,
    pub checksum: String,
    pub tool_version: String,
    pub settings: serde_json::Value,
    pub created_at: String,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct StatusRun {
    pub id: i64,
    pub pid: u32,
    pub tool_version: String,
    pub retry_failed: bool,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub last_commit_at: Option<String>,
    pub exit_code: Option<u8>,
    pub exit: Option<String>,
    pub ops_finalized: u64,
    pub settings: serde_json::Value,
    /// The pace the run settled on per credential, and why (recorded at its end; `null`
    /// for a run still going, killed, or of an earlier build): a list of `{credential,
    /// asked, per_second, basis (asked|discovered|lowered), limit_per_second (the limit
    /// discovered, or the pace last answered 429 when lowered), scope
    /// (process|host|redis), ledger, other_runs}`.
    pub pace: serde_json::Value,
}

#[derive(Debug, Serialize)]
pub struct StatusExit {
    pub code: u8,
    pub name: String,
}

/// Gathers everything `status` shows.
pub fn status_report(journal: &Journal) -> Result<StatusReport, JournalError> {
    let job: JobInfo = journal.job()?;
    let counts = journal.counts()?;
    let (attempts, retries) = journal.attempt_totals()?;
    let runs: Vec<RunInfo> = journal.runs()?;
    let mut paces = journal.run_paces()?;
    let running_pid = running_pid(journal.path());
    let total = counts.total();
    let final_ops = counts.done + counts.failed + counts.skipped;
    let running_ms: i64 = runs
        .iter()
        .map(|r| {
            r.ended_at
                .or(r.last_commit_at)
                .unwrap_or(r.started_at)
                .saturating_sub(r.started_at)
                .max(0)
        })
        .sum();
    let finalized: u64 = runs.iter().map(|r| r.ops_finalized).sum();
    let rate = (running_ms > 0).then(|| round2(finalized as f64 * 1000.0 / running_ms as f64));
    let last_exit = runs
        .iter()
        .rev()
        .find_map(|r| Some((r.exit_code?, r.exit.clone()?)))
        .map(|(code, name)| StatusExit { code, name });
    Ok(StatusReport {
        journal: journal.path().display().to_string(),
        schema_version: job.schema_version,
        state: match (running_pid.is_some(), counts.pending) {
            (true, _) => "running",
            (false, 0) => "complete",
            (false, _) => "incomplete",
        },
        running_pid: running_pid.flatten(),
        total,
        counts,
        progress_percent: if total == 0 {
            100.0
        } else {
            round2(final_ops as f64 * 100.0 / total as f64)
        },
        attempts,
        retries,
        runs: runs
            .iter()
            .map(|r| StatusRun {
                id: r.id,
                pid: r.pid,
                tool_version: r.tool_version.clone(),
                retry_failed: r.retry_failed,
                started_at: fmt_ms(r.started_at),
                ended_at: r.ended_at.map(fmt_ms),
                last_commit_at: r.last_commit_at.map(fmt_ms),
                exit_code: r.exit_code,
                exit: r.exit.clone(),
                ops_finalized: r.ops_finalized,
                settings: r.settings.clone(),
                pace: paces.remove(&r.id).unwrap_or_default(),
            })
            .collect(),
        last_exit,
        rate_ops_per_sec: rate,
        running_seconds: running_ms as f64 / 1000.0,
        failures_by_code: journal.failures_by_code()?,
        job: StatusJob {
            name: job.name,
            manifest: job.manifest_path,
            checksum: job.checksum,
            tool_version: job.tool_version,
            settings: job.settings,
            created_at: fmt_ms(job.created_at),
            started_at: job.started_at.map(fmt_ms),
            ended_at: job.ended_at.map(fmt_ms),
        },
    })
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}
