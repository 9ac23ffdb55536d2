//! Delivery: scheduling that keeps ops on one room or client in order, rate limiting per
//! credential, retries with backoff and the server's hints, deadlines, shutdown and progress
//! (docs/behaviour.md §4). [`run_job`] wires the pieces for one [`Job`]: the credentials' rate budgets,
//! journal, target (API or sandbox), scheduler, summary, exit status and, last, the job's
//! metrics file; it is told to stop from outside through a [`Shutdown`].

mod discovery;
pub mod executor;
mod forecast;
mod job;
pub mod pacing;
mod phases;
pub mod retry;
pub(crate) mod schedule;
pub mod scheduler;
mod shutdown;
pub mod summary;

pub use executor::{Executor, MemoryRecorder, Recorder};
pub(crate) use job::{
    DEFAULT_CONCURRENCY, DEFAULT_MAX_ATTEMPTS, DEFAULT_RATE, default_journal_path,
};
pub use job::{Job, Target};
pub use schedule::Schedule;
pub(crate) use schedule::default_journal_template;

/// The journal `status` shows for `manifest`: the one `run` would use now or, when that one
/// does not exist yet (the next night's, in the daytime), the latest night's.
pub(crate) fn latest_journal(
    manifest: &crate::manifest::Manifest,
    template: &std::path::Path,
) -> std::path::PathBuf {
    let s = resolve_schedule(manifest, template, None);
    if s.journal_path.exists() {
        return s.journal_path;
    }
    let previous = manifest
        .window
        .as_ref()
        .and_then(|w| w.previous(s.now))
        .and_then(|o| o.date)
        .map(|d| schedule::with_date(template, d))
        .filter(|p| p.exists());
    match previous {
        Some(p) => {
            tracing::info!(
                "no journal yet for the next window ({}): showing the latest one",
                s.journal_path.display()
            );
            p
        }
        None => s.journal_path,
    }
}

/// `path` with `{date}` replaced by today's local date (a journal named without its
/// manifest).
pub(crate) fn resolve_date_today(path: &std::path::Path) -> std::path::PathBuf {
    let today = crate::clock::now()
        .to_zoned(jiff::tz::TimeZone::system())
        .date();
    schedule::with_date(path, today)
}

/// Where a run of `manifest` with the journal path `template` (may hold `{date}`) and
/// `--undo-at` would stand now: what `plan` and `status` show.
pub(crate) fn resolve_schedule(
    manifest: &crate::manifest::Manifest,
    template: &std::path::Path,
    undo_at: Option<jiff::Timestamp>,
) -> Schedule {
    schedule::resolve_at(manifest, template, undo_at, crate::clock::now())
}
pub use scheduler::{Controls, RunReport, RunnerOptions, Snapshotted, StopReason, run};
pub use shutdown::Shutdown;
pub use summary::Stats;

use std::path::Path;
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
/// status. A job with an undo phase (`undo_at_end`, `--undo-at`, or one already planned in
/// its journal) goes through [`phases`]. Every run that opened the journal ends by writing
/// the metrics file, when the job has one.
pub async fn run_job(job: Job, shutdown: Shutdown) -> anyhow::Result<Exit> {
    let schedule = job.schedule();
    if let Some(exit) = phases::no_wait_exit(&job, &schedule) {
        return Ok(exit);
    }
    // Before the journal: a budget that cannot be reached is a configuration error (exit 2)
    // that writes and sends nothing.
    let budgets = open_budgets(&job).await?;
    let (journal, pending, before) = open_journal(&job, &schedule)?;
    // `pending` is the scheduler's copy of the ops: no second copy for the whole run.
    let job = release_manifest_ops(job);
    let metrics = job
        .metrics_file
        .clone()
        .map(|path| (path, schedule.journal_path.clone(), job.label()));
    let result =
        if schedule.undo_at.is_some() || journal.undo_phase().map_err(journal_error)?.is_some() {
            let opened = phases::Opened {
                journal,
                pending,
                before,
                budgets,
            };
            phases::run_with_undo(job, schedule, opened, shutdown).await
        } else if pending.is_empty() {
            drop(journal);
            Ok(already_complete(&job, &schedule, &before))
        } else {
            let opened = phases::Opened {
                journal,
                pending,
                before,
                budgets,
            };
            run_pending(&job, &schedule, opened, shutdown).await
        };
    if let Some((path, journal, label)) = &metrics {
        write_metrics(path, journal, label, &result);
    }
    result
}

/// `job` without its manifest's ops, once they are in the journal, unless the in-process
/// sandbox still needs them for its seed.
fn release_manifest_ops(mut job: Job) -> Job {
    if matches!(job.target, Target::Remote { .. }) {
        job.manifest.ops = Vec::new();
    }
    job
}

/// A re-run of a finished job: sends nothing and exits with the recorded outcome.
fn already_complete(job: &Job, schedule: &Schedule, before: &Counts) -> Exit {
    let message = format!(
        "job already complete ({}): {} done, {} failed, {} skipped; nothing to send",
        schedule.journal_path.display(),
        before.done,
        before.failed,
        before.skipped
    );
    output::print_already_complete(&message, before, job.log_format);
    completed_exit(before, 0)
}

/// Sends the `pending` ops of the job and records their outcomes in `journal`.
async fn run_pending(
    job: &Job,
    schedule: &Schedule,
    opened: phases::Opened,
    shutdown: Shutdown,
) -> anyhow::Result<Exit> {
    let phases::Opened {
        journal,
        pending,
        before,
        budgets,
    } = opened;
    let before = &before;
    let snapshotted = if job.snapshot {
        Snapshotted {
            rooms: journal.snapshotted_rooms().map_err(journal_error)?,
            bans: journal.snapshotted_ban_rooms().map_err(journal_error)?,
        }
    } else {
        Snapshotted::default()
    };
    let writer = journal.start_writer().map_err(journal_error)?;
    let (client, _sandbox) = connect(job).await?;
    let auth = job.auth();
    let credentials = auth.describe(job::kinds_of(pending.iter().map(|p| p.op.action)));
    tracing::info!(
        ops = pending.len(),
        base_url = %client.base_url,
        concurrency = job.concurrency,
        rate = %job.rate,
        "starting {} ops ({} already done, {} failed earlier); {}",
        pending.len(),
        before.done,
        before.failed,
        credentials.join("; ")
    );

    let controls = Controls::default();
    let mut progress = output::Progress::new(job.progress, pending.len() as u64);
    let work = scheduler::run(
        pending,
        Arc::new(client.api.with_auth(auth)),
        Arc::new(writer.clone()),
        job.runner_options(schedule).with_budgets(budgets),
        controls.clone(),
        snapshotted,
        &mut progress,
    );
    let report = shutdown.drive(work, &controls).await;
    finish(&report, before, writer, job.log_format).await
}

/// Writes the job's metrics file at `path` (of `journal`, labelled `label`) after a run that
/// ended with `result`. A failure is logged and leaves the exit status as it is: the job's
/// outcome does not depend on its monitoring (whose staleness shows in the file's last run
/// time).
fn write_metrics(path: &Path, journal: &Path, label: &str, result: &anyhow::Result<Exit>) {
    let exit = match result {
        Ok(exit) => *exit,
        Err(e) => crate::exit_for_error(e),
    };
    let last = crate::observe::metrics::LastRun {
        exit,
        ended_at_ms: jiff::Timestamp::now().as_millisecond(),
    };
    match crate::observe::metrics::write(path, journal, label, last) {
        Ok(()) => tracing::debug!(path = %path.display(), "metrics file written"),
        Err(e) => tracing::error!("the metrics file was not written: {e:#}"),
    }
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
fn open_journal(
    job: &Job,
    schedule: &Schedule,
) -> anyhow::Result<(Journal, Vec<JournalOp>, Counts)> {
    let meta = JobMeta {
        manifest_path: job.manifest.path.clone(),
        checksum: job.manifest.checksum.clone(),
        name: job.manifest.name.clone(),
        settings: job.settings_json(schedule),
        target: Some(match &job.target {
            Target::Remote { base_url } => base_url.to_string(),
            Target::Sandbox => crate::journal::SANDBOX_TARGET.to_string(),
        }),
    };
    let opts = OpenOptions {
        fresh: job.fresh,
        retry_failed: job.retry_failed,
        replan: job.replan,
        retarget: job.retarget,
    };
    let journal = Journal::open_for_run(&schedule.journal_path, &job.manifest, &meta, opts)
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
        StopReason::Unreachable(u) => (
            Exit::Aborted,
            "run aborted: the API cannot be reached".into(),
            Some(StopReason::unreachable_message(u, pending)),
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
/// when they are set (docs/behaviour.md §7), and otherwise made-up ones that the runner then uses.
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
