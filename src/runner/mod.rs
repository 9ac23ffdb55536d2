//! Delivery: scheduling that keeps ops on one room or client in order, rate limiting per
//! credential, retries with backoff and the server's hints, deadlines, shutdown and progress
//! (SPEC §4). [`run_job`] wires the pieces for one [`Job`]: the credentials' rate budgets,
//! journal, target (API or sandbox), scheduler, summary and exit status; it is told to stop
//! from outside through a [`Shutdown`].

mod discovery;
pub mod executor;
mod job;
pub mod pacing;
pub mod retry;
pub mod scheduler;
mod shutdown;
pub mod summary;

pub use executor::{Executor, MemoryRecorder, Recorder};
pub(crate) use job::{
    DEFAULT_CONCURRENCY, DEFAULT_MAX_ATTEMPTS, DEFAULT_RATE, default_journal_path,
};
pub use job::{Job, Target};
pub use scheduler::{Controls, RunReport, RunnerOptions, StopReason, run};
pub use shutdown::Shutdown;
pub use summary::Stats;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use reqwest::Url;

use crate::api::{ApiClient, ClientOptions, Credentials, Secret};
use crate::budget::{Budget, LedgerKey};
use crate::journal::{Counts, JobMeta, Journal, JournalOp, JournalWriter, OpenOptions};
use crate::output;
use crate::{Exit, ExitError};

/// Runs (or resumes) a job to its end, or until `shutdown` stops it, and returns the exit
/// status.
pub async fn run_job(job: Job, shutdown: Shutdown) -> anyhow::Result<Exit> {
    // Before the journal: a budget that cannot be reached is a configuration error (exit 2)
    // that writes and sends nothing.
    let budgets = open_budgets(&job).await?;
    let (journal, pending, before) = open_journal(&job)?;
    if pending.is_empty() {
        let message = format!(
            "job already complete ({}): {} done, {} failed, {} skipped; nothing to send",
            job.journal_path.display(),
            before.done,
            before.failed,
            before.skipped
        );
        output::print_already_complete(&message, &before, job.log_format);
        return Ok(completed_exit(&before, 0));
    }
    let snapshotted = if job.snapshot {
        journal.snapshotted_rooms().map_err(journal_error)?
    } else {
        HashSet::new()
    };
    let writer = journal.start_writer().map_err(journal_error)?;
    let (client, _sandbox) = connect(&job).await?;
    tracing::info!(
        ops = pending.len(),
        base_url = %client.base_url,
        concurrency = job.concurrency,
        rate = %job.rate,
        "starting {} ops ({} already done, {} failed earlier)",
        pending.len(),
        before.done,
        before.failed
    );

    let controls = Controls::default();
    let mut progress = output::Progress::new(job.progress, pending.len() as u64);
    let mut options = job.runner_options();
    options.budgets = budgets;
    let work = scheduler::run(
        pending,
        Arc::new(client.api),
        Arc::new(writer.clone()),
        options,
        controls.clone(),
        snapshotted,
        &mut progress,
    );
    let report = shutdown.drive(work, &controls).await;
    finish(&report, &before, writer, job.log_format).await
}

/// The budget of each credential the job has secrets for (client key and token, API key),
/// at `job.budget`, named by the base URL and the credential's secrets, and joined (so other
/// runs on the host ledger count this one). For the sandbox, none: the scheduler gives each
/// credential one of this process's own.
async fn open_budgets(job: &Job) -> Result<[Option<Budget>; 2], ExitError> {
    let Target::Remote { base_url } = &job.target else {
        return Ok([None, None]);
    };
    let c = &job.credentials;
    let url = base_url.as_str();
    let keys = [
        c.client_key
            .as_ref()
            .zip(c.token.as_ref())
            .map(|(k, t)| LedgerKey::new(url, &[k.expose(), t.expose()])),
        c.api_key
            .as_ref()
            .map(|k| LedgerKey::new(url, &[k.expose()])),
    ];
    let gcra = pacing::gcra_for(job.rate);
    let mut budgets = [None, None];
    for (slot, key) in budgets.iter_mut().zip(keys) {
        if let Some(key) = key {
            let budget = Budget::open(&job.budget, &key, gcra).await?;
            budget.join();
            *slot = Some(budget);
        }
    }
    Ok(budgets)
}

/// Opens (or creates) the job's journal for this run: the journal, the ops still to send
/// and the counts before the run.
fn open_journal(job: &Job) -> anyhow::Result<(Journal, Vec<JournalOp>, Counts)> {
    let meta = JobMeta {
        manifest_path: job.manifest.path.clone(),
        checksum: job.manifest.checksum.clone(),
        name: job.manifest.name.clone(),
        settings: job.settings_json(),
    };
    let opts = OpenOptions {
        fresh: job.fresh,
        retry_failed: job.retry_failed,
    };
    let journal = Journal::open_for_run(&job.journal_path, &job.manifest, &meta, opts)
        .map_err(|e| ExitError::new(Exit::Invalid, e.to_string()))?;
    let pending = journal.pending().map_err(journal_error)?;
    let before = journal.counts().map_err(journal_error)?;
    Ok((journal, pending, before))
}

/// The API client of a run and the URL it sends to.
struct Connected {
    api: ApiClient,
    base_url: Url,
}

/// The target of the job: the real API, or the in-process sandbox seeded from the manifest
/// (kept serving while the returned guard lives).
async fn connect(job: &Job) -> anyhow::Result<(Connected, Option<SandboxGuard>)> {
    let (base_url, credentials, sandbox) = match &job.target {
        Target::Remote { base_url } => (base_url.clone(), job.credentials.clone(), None),
        Target::Sandbox => {
            let s = start_sandbox(job).await?;
            (s.base_url, s.credentials, Some(s.guard))
        }
    };
    let api = ApiClient::new(
        &base_url,
        credentials,
        ClientOptions {
            timeout: job.timeout,
            connect_timeout: job.timeout.min(Duration::from_secs(10)),
            pool_size: job.concurrency as usize,
        },
    )
    .context("cannot set up the API client")?;
    Ok((Connected { api, base_url }, sandbox))
}

/// Ends the run: the summary comes after the journal's last commit, so what it says is on
/// disk (or it says that it is not).
async fn finish(
    report: &RunReport,
    before: &Counts,
    writer: JournalWriter,
    format: output::LogFormat,
) -> anyhow::Result<Exit> {
    let paces = serde_json::to_string(&report.stats.paces).unwrap_or_default();
    let flushed = match writer.record_pace(paces).await {
        Ok(()) => writer.flush().await,
        Err(e) => Err(e),
    };
    let (exit, mut headline, error) = conclude(report, before);
    let finished = writer.finish(exit).await;
    if flushed.is_err() || finished.is_err() {
        headline.push_str(" (but the journal's last outcomes could not be written: see below)");
    }
    output::print_summary(&report.stats, &headline, format);
    flushed.map_err(journal_error)?;
    finished.map_err(journal_error)?;
    match error {
        Some(msg) => Err(ExitError::new(exit, msg).into()),
        None => Ok(exit),
    }
}

fn journal_error(e: crate::journal::JournalError) -> anyhow::Error {
    ExitError::new(
        Exit::Aborted,
        format!("{e}; the job stopped, run again to resume"),
    )
    .into()
}

/// 0 when nothing failed, else 1.
fn completed_exit(before: &Counts, failed_now: u64) -> Exit {
    if before.failed + failed_now > 0 {
        Exit::OpsFailed
    } else {
        Exit::Success
    }
}

/// The exit status, the summary's headline and, for an abort, the error message.
fn conclude(report: &RunReport, before: &Counts) -> (Exit, String, Option<String>) {
    let pending = report.stats.pending();
    match &report.stop {
        StopReason::Completed => {
            let exit = completed_exit(before, report.stats.failed);
            let head = if exit == Exit::Success {
                "run complete: every op done".to_string()
            } else {
                format!(
                    "run complete: {} ops failed permanently (see `imkit-batch report --failed`)",
                    before.failed + report.stats.failed
                )
            };
            (exit, head, None)
        }
        StopReason::CredentialsRejected {
            credential,
            status,
            code,
            message,
        } => {
            let detail = [code.as_deref(), message.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(": ");
            let msg = format!(
                "the {} was rejected (HTTP {status}{}{detail}); nothing more was sent and {pending} ops stay pending: fix the credential and run again to resume",
                credential.describe(),
                if detail.is_empty() { "" } else { " " },
            );
            (
                Exit::Aborted,
                "run aborted: credentials rejected".into(),
                Some(msg),
            )
        }
        StopReason::FailureBound(why) => (
            Exit::Aborted,
            "run aborted: failure bound passed".into(),
            Some(format!(
                "aborted: {why}; {pending} ops stay pending (run again to resume, after checking `imkit-batch report`)"
            )),
        ),
        StopReason::BudgetLost(e) => (
            Exit::Stopped,
            format!(
                "run stopped: the rate budget was lost; {pending} ops pending, run again to resume"
            ),
            Some(format!(
                "{e}; {pending} ops stay pending: run again to resume once the budget is reachable"
            )),
        ),
        StopReason::Journal(e) => (
            Exit::Aborted,
            "run aborted: the journal failed".into(),
            Some(format!(
                "cannot record outcomes in the journal: {e}; nothing more was sent"
            )),
        ),
        StopReason::Deadline(label) => (
            Exit::Stopped,
            format!("run stopped: {label} reached; {pending} ops pending, run again to resume"),
            None,
        ),
        StopReason::Signal {
            cancelled_in_flight,
        } => (
            Exit::Stopped,
            format!(
                "run stopped by signal{}; {pending} ops pending, run again to resume",
                if *cancelled_in_flight {
                    " (requests in flight cancelled)"
                } else {
                    ""
                }
            ),
            None,
        ),
    }
}

/// Keeps the in-process sandbox serving until dropped.
type SandboxGuard = Box<dyn std::any::Any + Send>;

/// The in-process sandbox for `run --sandbox`: its URL, its credentials, and its guard.
struct SandboxTarget {
    base_url: Url,
    credentials: Credentials,
    guard: SandboxGuard,
}

/// Starts the in-process emulator for `run --sandbox`, seeded with every room and client the
/// manifest names, on a free loopback port. It accepts the credentials in the environment
/// when they are set (SPEC §7), and otherwise made-up ones that the runner then uses.
async fn start_sandbox(job: &Job) -> anyhow::Result<SandboxTarget> {
    let (creds, generated) = crate::sandbox::SandboxCredentials::from_env_or_generate();
    let mut sc = crate::sandbox::SandboxConfig::new(creds);
    sc.seed_from_ops(job.manifest.ops.iter().map(|p| &p.op));
    let handle = crate::sandbox::spawn(sc)
        .await
        .context("cannot start the in-process sandbox")?;
    let base_url = Url::parse(&handle.base_url()).context("the sandbox's URL")?;
    tracing::info!(
        url = %base_url,
        made_up_credentials = generated,
        "sandbox started in-process"
    );
    let c = handle.credentials();
    let credentials = Credentials {
        client_key: Some(Secret::new(c.client_key.clone())),
        token: Some(Secret::new(c.token.clone())),
        api_key: Some(Secret::new(c.api_key.clone())),
    };
    Ok(SandboxTarget {
        base_url,
        credentials,
        guard: Box::new(handle),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn exit_statuses_follow_the_spec() {
        let before = Counts::default();
        let mut stats = Stats {
            total: 3,
            done: 3,
            ..Default::default()
        };
        let rep = |stop: StopReason, stats: &Stats| RunReport {
            stop,
            stats: stats.clone(),
        };
        assert_eq!(
            conclude(&rep(StopReason::Completed, &stats), &before).0,
            Exit::Success
        );
        let prior_failed = Counts {
            failed: 1,
            ..Default::default()
        };
        assert_eq!(
            conclude(&rep(StopReason::Completed, &stats), &prior_failed).0,
            Exit::OpsFailed
        );
        stats.done = 1;
        let (exit, _, msg) = conclude(
            &rep(
                StopReason::CredentialsRejected {
                    credential: crate::op::Credential::ApiKey,
                    status: 401,
                    code: Some("INVALID_API_KEY".into()),
                    message: Some("bad".into()),
                },
                &stats,
            ),
            &before,
        );
        assert_eq!(exit, Exit::Aborted);
        let msg = msg.unwrap();
        assert!(
            msg.contains("API key (IMKIT_API_KEY)") && msg.contains("2 ops stay pending"),
            "{msg}"
        );
        assert_eq!(
            conclude(
                &rep(StopReason::Deadline("--until x".into()), &stats),
                &before
            )
            .0,
            Exit::Stopped
        );
        assert_eq!(
            conclude(
                &rep(
                    StopReason::Signal {
                        cancelled_in_flight: true
                    },
                    &stats
                ),
                &before
            )
            .0,
            Exit::Stopped
        );
        assert_eq!(
            conclude(&rep(StopReason::FailureBound("x".into()), &stats), &before).0,
            Exit::Aborted
        );
    }
}

#[cfg(test)]
mod scheduler_tests;

#[cfg(test)]
mod pacing_tests;
