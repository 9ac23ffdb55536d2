//! Delivery: scheduling that keeps ops on one room or client in order, rate limiting per
//! credential, retries with backoff and the server's hints, deadlines, shutdown and progress
//! (SPEC §4). [`run_job`] wires the pieces: journal, target (API or sandbox), scheduler,
//! summary and exit status.

pub mod executor;
pub mod pacing;
pub mod progress;
pub mod retry;
pub mod scheduler;
pub mod summary;

pub use executor::{Executor, MemoryRecorder, Recorder};
pub use scheduler::{Controls, RunReport, RunnerOptions, StopReason, run};
pub use summary::Stats;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use reqwest::Url;
use tokio::time::Instant;

use crate::api::{ApiClient, ClientOptions, Credentials, Secret};
use crate::cli::job::{JobConfig, Target};
use crate::journal::{Counts, JobMeta, Journal, OpenOptions};
use crate::{Exit, ExitError};

/// Runs (or resumes) a job to its end and returns the exit status.
pub async fn run_job(config: JobConfig) -> anyhow::Result<Exit> {
    let meta = JobMeta {
        manifest_path: config.manifest.path.clone(),
        checksum: config.manifest.checksum.clone(),
        name: config.manifest.name.clone(),
        settings: config.settings_json(),
    };
    let opts = OpenOptions {
        fresh: config.fresh,
        retry_failed: config.retry_failed,
    };
    let journal = Journal::open_for_run(&config.journal_path, &config.manifest, &meta, opts)
        .map_err(|e| ExitError::new(Exit::Invalid, e.to_string()))?;
    let pending = journal.pending().map_err(journal_error)?;
    let before = journal.counts().map_err(journal_error)?;
    if pending.is_empty() {
        let exit = completed_exit(&before, 0);
        let message = format!(
            "job already complete ({}): {} done, {} failed, {} skipped; nothing to send",
            config.journal_path.display(),
            before.done,
            before.failed,
            before.skipped
        );
        match config.log_format {
            crate::cli::LogFormat::Text => eprintln!("{message}"),
            crate::cli::LogFormat::Json => {
                let fields = serde_json::json!({
                    "summary": true,
                    "already_complete": true,
                    "done": before.done,
                    "failed": before.failed,
                    "skipped": before.skipped,
                    "pending": 0,
                    "requests": 0,
                });
                eprintln!("{}", progress::json_event("INFO", &message, fields));
            }
        }
        return Ok(exit);
    }
    let snapshotted = if config.snapshot {
        journal.snapshotted_rooms().map_err(journal_error)?
    } else {
        HashSet::new()
    };
    let writer = journal.start_writer().map_err(journal_error)?;

    // The target: the real API, or the in-process sandbox seeded from the manifest.
    let (base_url, credentials, _sandbox) = match &config.target {
        Target::Remote { base_url } => (base_url.clone(), config.credentials.clone(), None),
        Target::Sandbox => {
            let s = start_sandbox(&config).await?;
            (s.base_url, s.credentials, Some(s.guard))
        }
    };
    let client = ApiClient::new(
        &base_url,
        credentials,
        ClientOptions {
            timeout: config.timeout,
            connect_timeout: config.timeout.min(Duration::from_secs(10)),
            pool_size: config.concurrency as usize,
        },
    )
    .context("cannot set up the API client")?;
    tracing::info!(
        ops = pending.len(),
        base_url = %base_url,
        concurrency = config.concurrency,
        rate = %config.rate,
        "starting {} ops ({} already done, {} failed earlier)",
        pending.len(),
        before.done,
        before.failed
    );

    let controls = Controls::default();
    let signals = tokio::spawn(listen_for_signals(controls.clone()));
    let options = runner_options(&config);
    let mut progress = progress::Progress::new(config.progress, pending.len() as u64);
    let report = scheduler::run(
        pending,
        Arc::new(client),
        Arc::new(writer.clone()),
        options,
        controls,
        snapshotted,
        &mut progress,
    )
    .await;
    signals.abort();

    // The summary comes after the journal's last commit, so what it says is on disk (or it
    // says that it is not).
    let flushed = writer.flush().await;
    let (exit, mut headline, error) = conclude(&report, &before);
    let finished = writer.finish(exit).await;
    if flushed.is_err() || finished.is_err() {
        headline.push_str(" (but the journal's last outcomes could not be written: see below)");
    }
    print_summary(&report.stats, &headline, config.log_format);
    flushed.map_err(journal_error)?;
    finished.map_err(journal_error)?;
    match error {
        Some(msg) => Err(ExitError::new(exit, msg).into()),
        None => Ok(exit),
    }
}

/// The summary, on stderr whatever `-q` says (a cron job's log should say how the job
/// ended): text, or with `--log-format json` one JSON object on its own line shaped like the
/// log events (`timestamp`, `level`, `message`), marked `"summary": true`.
fn print_summary(stats: &Stats, headline: &str, format: crate::cli::LogFormat) {
    match format {
        crate::cli::LogFormat::Text => eprint!("{}", stats.render(headline)),
        crate::cli::LogFormat::Json => eprintln!("{}", summary_json(stats, headline)),
    }
}

fn summary_json(stats: &Stats, headline: &str) -> String {
    let ms = |p: f64| stats.percentile(p).map(|d| d.as_secs_f64() * 1000.0);
    let fields = serde_json::json!({
        "summary": true,
        "total": stats.total,
        "done": stats.done,
        "already_in_state": stats.already,
        "failed": stats.failed,
        "pending": stats.pending(),
        "requests": stats.attempts,
        "retries": stats.retries,
        "rate_limited": stats.rate_limited,
        "elapsed_s": stats.elapsed.as_secs_f64(),
        "ops_per_s": stats.ops_per_sec(),
        "latency_p50_ms": ms(50.0),
        "latency_p95_ms": ms(95.0),
        "latency_p99_ms": ms(99.0),
        "failures_by_code": stats.failures_by_code,
    });
    progress::json_event("INFO", headline, fields)
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

/// Scheduler options from the checked config: the earliest of `--until`, `--max-duration`
/// and the window's end is the deadline; the window's start delays the first request.
pub fn runner_options(config: &JobConfig) -> RunnerOptions {
    let now_ts = jiff::Timestamp::now();
    let now = Instant::now();
    let at = |ts: jiff::Timestamp| -> Instant {
        let d = ts.duration_since(now_ts);
        if d.is_negative() {
            now
        } else {
            now + Duration::try_from(d).unwrap_or(Duration::ZERO)
        }
    };
    let mut deadline: Option<(Instant, String)> = None;
    let mut earliest = |t: Instant, label: String| {
        if deadline.as_ref().is_none_or(|(d, _)| t < *d) {
            deadline = Some((t, label));
        }
    };
    if let Some(u) = config.until {
        earliest(at(u), format!("--until {u}"));
    }
    if let Some(d) = config.max_duration {
        earliest(
            now + d,
            format!("--max-duration {}", humantime::format_duration(d)),
        );
    }
    let mut start_at = None;
    if let Some(w) = config.manifest.window {
        earliest(at(w.end), format!("the window's end ({})", w.end));
        if w.start > now_ts {
            start_at = Some((at(w.start), format!("the window's start, {}", w.start)));
        }
    }
    RunnerOptions {
        concurrency: config.concurrency as usize,
        rate: config.rate,
        max_attempts: config.max_attempts,
        max_failures: config.max_failures,
        max_failure_ratio: config.max_failure_ratio,
        start_at,
        deadline,
        snapshot: config.snapshot,
        backoff: config.backoff,
        ..RunnerOptions::default()
    }
}

/// First SIGINT/SIGTERM: stop dispatching; second: cancel what is in flight.
async fn listen_for_signals(controls: Controls) {
    for n in 0..2 {
        if !wait_for_signal().await {
            return;
        }
        if n == 0 {
            controls.stop.cancel();
        } else {
            controls.cancel.cancel();
        }
    }
}

/// Resolves on SIGINT or SIGTERM; false when signals cannot be watched.
async fn wait_for_signal() -> bool {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot watch SIGTERM: {e}");
                return tokio::signal::ctrl_c().await.is_ok();
            }
        };
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.is_ok(),
            _ = term.recv() => true,
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.is_ok()
    }
}

/// The in-process sandbox for `run --sandbox`: its URL, its credentials, and a guard that
/// keeps it serving until dropped.
pub struct SandboxTarget {
    pub base_url: Url,
    pub credentials: Credentials,
    pub guard: Box<dyn std::any::Any + Send>,
}

/// Starts the in-process emulator for `run --sandbox`, seeded with every room and client the
/// manifest names, on a free loopback port. It accepts the credentials in the environment
/// when they are set (SPEC §7), and otherwise made-up ones that the runner then uses.
async fn start_sandbox(config: &JobConfig) -> anyhow::Result<SandboxTarget> {
    let (creds, generated) = crate::sandbox::SandboxCredentials::from_env_or_generate();
    let mut sc = crate::sandbox::SandboxConfig::new(creds);
    sc.seed_from_ops(config.manifest.ops.iter().map(|p| &p.op));
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
    use crate::cli::{Cli, Command};
    use crate::manifest::{Format, Manifest, Settings, Window};
    use clap::Parser;

    fn config(argv: &[&str], window: Option<Window>) -> JobConfig {
        let mut full = vec!["imkit-batch", "run", "x.csv", "--sandbox"];
        full.extend_from_slice(argv);
        let cli = Cli::try_parse_from(full).unwrap();
        let Command::Run(args) = cli.command else {
            unreachable!()
        };
        let manifest = Manifest {
            path: "x.csv".into(),
            format: Format::Yaml,
            name: None,
            checksum: "0".into(),
            window,
            settings: Settings::default(),
            ops: vec![],
            sources: vec![],
            warnings: vec![],
        };
        let flags = crate::cli::job::check_flags(&args).unwrap();
        JobConfig::from_parts(&args, &cli.global, flags, manifest, Credentials::default()).unwrap()
    }

    #[test]
    fn the_earliest_limit_is_the_deadline_and_the_window_start_is_awaited() {
        let now = jiff::Timestamp::now();
        let in_1h = (now + jiff::SignedDuration::from_hours(1)).to_string();
        let o = runner_options(&config(&["--until", &in_1h, "--max-duration", "10m"], None));
        let (at, label) = o.deadline.unwrap();
        assert!(label.starts_with("--max-duration"), "{label}");
        let left = at - Instant::now();
        assert!(left <= Duration::from_secs(600) && left > Duration::from_secs(590));
        assert!(o.start_at.is_none());

        let w = Window {
            start: now + jiff::SignedDuration::from_hours(2),
            end: now + jiff::SignedDuration::from_hours(4),
        };
        let o = runner_options(&config(&["--until", &in_1h], Some(w)));
        assert!(o.deadline.unwrap().1.starts_with("--until"));
        let (start, label) = o.start_at.unwrap();
        assert!(label.contains("window"));
        assert!(start - Instant::now() > Duration::from_secs(7100));

        let past = Window {
            start: now - jiff::SignedDuration::from_hours(4),
            end: now - jiff::SignedDuration::from_hours(2),
        };
        let o = runner_options(&config(&[], Some(past)));
        let (at, label) = o.deadline.unwrap();
        assert!(at <= Instant::now() && label.contains("window"));
        assert!(o.start_at.is_none());
    }

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
