//! A job with an undo phase (`undo_at_end`, `--undo-at`), run as one process: the main
//! phase (in its window), a wait for the undo time, then the undo phase (the inverse of what
//! the main phase changed, by the rules of `revert`), all recorded in the job's journal.
//!
//! Resumable at any moment, because every step starts from the journal: a main phase with
//! ops pending is resumed while its window is open; once its window has ended (or the undo
//! time has come) it sends nothing more, and the undo follows. The undo plan is recorded
//! whole when the undo time comes, so a run started after that goes on with its pending undo
//! ops at once, whatever the clock says: the undo is what must happen after the end. A
//! signal while waiting for the undo time exits 4; the next run waits again.
//!
//! Exit status: 0 when both phases are done with nothing failed; 1 when an op of either
//! failed permanently; 4 when the main phase was cut short by its window (ops never sent)
//! even though the undo is done, or when a run stops before the undo (signal, `--no-wait`,
//! `--until`); 3 as any run aborts.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::job::DeadlineKind;
use super::schedule::Schedule;
use super::scheduler::{self, Controls, RunReport, Snapshotted, StopReason};
use super::{Job, Shutdown, conclude, connect, journal_error};
use crate::api::ApiClient;
use crate::journal::{Counts, Journal, JournalOp, JournalWriter, UndoPhase, UndoPlanRecord};
use crate::output;
use crate::{Exit, ExitError};

/// `--no-wait`: the exit when nothing can be done yet (the window has not opened; or the
/// main phase is over and the undo is not due), with a message saying when. Reads the
/// journal only, and only for the second case.
pub(super) fn no_wait_exit(job: &Job, s: &Schedule) -> Option<Exit> {
    if !job.no_wait {
        return None;
    }
    if let Some(w) = s.window
        && s.now < w.start
        && !s.owed_undo
    {
        let window = job
            .manifest
            .window
            .as_ref()
            .map(|w| format!(" ({})", w.describe()))
            .unwrap_or_default();
        tracing::warn!(
            "--no-wait: the window{window} opens at {}, in {}: nothing was sent (exit 4); run \
             again then, or without --no-wait to wait for it",
            w.start,
            until(s.now, w.start)
        );
        return Some(Exit::Stopped);
    }
    let t = s.undo_at?;
    if s.now < t && main_phase_over(&s.journal_path) {
        tracing::warn!(
            "--no-wait: the job's main phase is over and its undo is due at {t}, in {}: nothing \
             was sent (exit 4); run again then, or without --no-wait to wait for it",
            until(s.now, t)
        );
        return Some(Exit::Stopped);
    }
    None
}

/// True when the journal at `path` has no main op pending and no undo planned yet.
fn main_phase_over(path: &Path) -> bool {
    if !path.exists() {
        return false;
    }
    let Ok(j) = Journal::open_read_only(path) else {
        return false;
    };
    matches!(j.pending(), Ok(p) if p.is_empty()) && matches!(j.undo_phase(), Ok(None))
}

/// "3h 12m" or "42s" from `now` to `t`.
fn until(now: jiff::Timestamp, t: jiff::Timestamp) -> String {
    let d = t.duration_since(now);
    let d = Duration::try_from(d).unwrap_or(Duration::ZERO);
    let d = if d >= Duration::from_secs(60) {
        Duration::from_secs(d.as_secs() / 60 * 60)
    } else {
        Duration::from_secs(d.as_secs())
    };
    humantime::format_duration(d).to_string()
}

/// The journal of a run, opened: its ops still pending and its counts before the run.
pub(super) struct Opened {
    pub journal: Journal,
    /// The credentials' rate budgets, opened before the journal.
    pub budgets: [Option<crate::budget::Budget>; 2],
    pub pending: Vec<JournalOp>,
    pub before: Counts,
}

/// Runs (or resumes) a job with an undo phase, to its end or until `shutdown` stops it.
pub(super) async fn run_with_undo(
    job: Job,
    schedule: Schedule,
    opened: Opened,
    shutdown: Shutdown,
) -> anyhow::Result<Exit> {
    let Opened {
        journal,
        pending,
        before,
        budgets,
    } = opened;
    let undo = journal.undo_phase().map_err(journal_error)?;
    let main_over = pending.is_empty() || window_over(&job, &schedule);
    if main_over && let Some(u) = undo.as_ref().filter(|u| u.counts.pending == 0) {
        return Ok(already_complete(&job, &schedule, &before, u));
    }
    let snapshotted = if job.snapshot && undo.is_none() {
        Snapshotted {
            rooms: journal.snapshotted_rooms().map_err(journal_error)?,
            bans: journal.snapshotted_ban_rooms().map_err(journal_error)?,
        }
    } else {
        Snapshotted::default()
    };
    let writer = journal.start_writer().map_err(journal_error)?;
    let (client, _sandbox) = connect(&job).await?;
    let controls = Controls::default();
    let phases = Phases {
        job: &job,
        schedule: &schedule,
        writer: &writer,
        api: Arc::new(client.api.with_auth(job.auth())),
        controls: controls.clone(),
        budgets,
    };
    let work = phases.run(pending, before, undo, snapshotted);
    let end = shutdown.drive(work, &controls).await;
    let flushed = writer.flush().await;
    let finished = writer.finish(end.exit).await;
    flushed.map_err(journal_error)?;
    finished.map_err(journal_error)?;
    match end.error {
        Some(msg) => Err(ExitError::new(end.exit, msg).into()),
        None => Ok(end.exit),
    }
}

/// True when the main phase may send nothing more: its window has ended, or its undo time
/// has come.
fn window_over(job: &Job, s: &Schedule) -> bool {
    matches!(job.deadline(s), Some((t, _, DeadlineKind::WindowEnd)) if t <= s.now)
}

/// A job whose both phases are over: says so and gives the recorded outcome.
fn already_complete(job: &Job, s: &Schedule, main: &Counts, undo: &UndoPhase) -> Exit {
    let exit = two_phase_exit(main.pending, main.failed + undo.counts.failed);
    let never_sent = if main.pending > 0 {
        format!(" ({} ops never sent: their window ended)", main.pending)
    } else {
        String::new()
    };
    let message = format!(
        "job already complete ({}): main phase {} done, {} failed, {} skipped{never_sent}; \
         undo {} done, {} failed; nothing to send",
        s.journal_path.display(),
        main.done,
        main.failed,
        main.skipped,
        undo.counts.done,
        undo.counts.failed
    );
    output::print_already_complete(&message, main, job.log_format);
    exit
}

/// The exit of a job whose undo is done: 4 when main ops were never sent, else 1 when any op
/// failed, else 0.
fn two_phase_exit(main_pending: u64, failed: u64) -> Exit {
    if main_pending > 0 {
        Exit::Stopped
    } else if failed > 0 {
        Exit::OpsFailed
    } else {
        Exit::Success
    }
}

/// How the phases ended: the exit status and, for an abort, its message.
struct End {
    exit: Exit,
    error: Option<String>,
}

impl End {
    fn stopped() -> End {
        End {
            exit: Exit::Stopped,
            error: None,
        }
    }
}

/// What the phases of one run share.
struct Phases<'a> {
    job: &'a Job,
    schedule: &'a Schedule,
    writer: &'a JournalWriter,
    api: Arc<ApiClient>,
    controls: Controls,
    /// The credentials' rate budgets, for both phases.
    budgets: [Option<crate::budget::Budget>; 2],
}

/// Where the main phase left the job.
struct MainDone {
    pending: u64,
    failed: u64,
}

impl Phases<'_> {
    /// The main phase (unless the undo is already planned), the wait, the plan, the undo.
    async fn run(
        &self,
        pending: Vec<JournalOp>,
        before: Counts,
        undo: Option<UndoPhase>,
        snapshotted: Snapshotted,
    ) -> End {
        let main = if undo.is_some() {
            MainDone {
                pending: pending.len() as u64,
                failed: before.failed,
            }
        } else {
            match self.main(pending, &before, snapshotted).await {
                Ok(m) => m,
                Err(end) => return end,
            }
        };
        let undo_before = match undo {
            Some(u) => u.counts,
            None => {
                if let Some(end) = self.wait_for_undo().await {
                    return end;
                }
                if let Err(e) = self.plan().await {
                    return End {
                        exit: Exit::Aborted,
                        error: Some(format!("{e}; the job stopped, run again to resume")),
                    };
                }
                Counts::default()
            }
        };
        self.undo(&main, &undo_before).await
    }

    /// The main phase: sends its pending ops in its window. `Err` when the run ends here.
    async fn main(
        &self,
        pending: Vec<JournalOp>,
        before: &Counts,
        snapshotted: Snapshotted,
    ) -> Result<MainDone, End> {
        let (job, s) = (self.job, self.schedule);
        if pending.is_empty() {
            return Ok(MainDone {
                pending: 0,
                failed: before.failed,
            });
        }
        if window_over(job, s) {
            let label = job.deadline(s).map(|(_, l, _)| l).unwrap_or_default();
            tracing::warn!(
                "{label} has passed: the main phase sends nothing more ({} of its ops were never \
                 sent); undoing what it changed",
                pending.len()
            );
            return Ok(MainDone {
                pending: pending.len() as u64,
                failed: before.failed,
            });
        }
        tracing::info!(
            "main phase: {} ops ({} already done, {} failed earlier); the undo follows at {}",
            pending.len(),
            before.done,
            before.failed,
            s.undo_label().unwrap_or_default()
        );
        let options = job.runner_options(s).with_budgets(self.budgets.clone());
        let report = self
            .deliver(pending, self.writer.clone(), options, snapshotted)
            .await;
        let main = MainDone {
            pending: report.stats.pending(),
            failed: before.failed + report.stats.failed,
        };
        let at_end = matches!(&report.stop, StopReason::Deadline(_))
            && matches!(job.deadline(s), Some((_, _, DeadlineKind::WindowEnd)));
        if matches!(report.stop, StopReason::Completed) || at_end {
            let headline = if main.pending == 0 {
                "main phase complete: every op done or final; the undo follows".to_string()
            } else {
                format!(
                    "main phase stopped at its end: {} ops were not sent; the undo follows",
                    main.pending
                )
            };
            output::print_summary(&report.stats, &headline, job.log_format);
            return Ok(main);
        }
        let (exit, headline, error) = conclude(&report, before);
        output::print_summary(&report.stats, &headline, job.log_format);
        Err(End { exit, error })
    }

    /// Waits for the undo time, unless it has come; `Some` when the run ends instead (a
    /// signal, or `--no-wait`).
    async fn wait_for_undo(&self) -> Option<End> {
        let s = self.schedule;
        let t = s.undo_at?;
        // What the main phase did is on disk before the wait (which may last hours).
        if let Err(e) = self.writer.flush().await {
            return Some(End {
                exit: Exit::Aborted,
                error: Some(format!("{e}; the job stopped, run again to resume")),
            });
        }
        let label = s.undo_label().unwrap_or_default();
        let now = crate::clock::now();
        if now >= t {
            return None;
        }
        let left = Duration::try_from(t.duration_since(now)).unwrap_or(Duration::ZERO);
        if self.job.no_wait {
            tracing::warn!(
                "--no-wait: the undo is due at {label}, in {}: exiting (4); run again then",
                until(now, t)
            );
            return Some(End::stopped());
        }
        tracing::info!(
            "waiting until {label} to undo what this job changed (in {}); SIGINT/SIGTERM stops \
             the wait (exit 4) and `run` again resumes it",
            until(now, t)
        );
        tokio::select! {
            () = tokio::time::sleep(left) => None,
            () = self.controls.stop.cancelled() => {
                tracing::warn!(
                    "signal received while waiting for the undo: nothing was undone; run again \
                     to resume (it waits for {label}, or undoes at once after it)"
                );
                Some(End::stopped())
            }
        }
    }

    /// Plans the undo from what the journal records and records the plan.
    async fn plan(&self) -> Result<(), crate::journal::JournalError> {
        // The plan is read from the journal: every outcome so far must be in it.
        self.writer.flush().await?;
        let journal = Journal::open_read_only(&self.schedule.journal_path)?;
        let plan = journal.plan_undo()?;
        for u in &plan.unknown {
            tracing::warn!(
                "not undone: seq {} ({}:{}) {}: {}",
                u.seq,
                u.file,
                u.line,
                u.op,
                u.reason
            );
        }
        if plan.unmutes_assumed > 0 {
            tracing::warn!(
                "{}",
                crate::journal::report::unmute_assumption_note(plan.unmutes_assumed)
            );
        }
        tracing::info!(
            "undo: {} ops undo what this job changed{}",
            plan.ops.len(),
            match plan.unknown.len() {
                0 => String::new(),
                n => format!(" ({n} ops listed apart, not undone: their prior state is unknown)"),
            }
        );
        let due = self.schedule.undo_at.map(|t| t.as_millisecond());
        self.writer
            .record_undo_plan(UndoPlanRecord::of(plan, due))
            .await
    }

    /// The undo phase: sends its pending ops, with no deadline.
    async fn undo(&self, main: &MainDone, before: &Counts) -> End {
        let journal = Journal::open_read_only(&self.schedule.journal_path);
        let pending = match journal.and_then(|j| j.undo_pending()) {
            Ok(p) => p,
            Err(e) => {
                return End {
                    exit: Exit::Aborted,
                    error: Some(format!("{e}; the job stopped, run again to resume")),
                };
            }
        };
        let options = self.job.undo_options().with_budgets(self.budgets.clone());
        let report = self
            .deliver(
                pending,
                self.writer.for_undo(),
                options,
                Snapshotted::default(),
            )
            .await;
        let failed = main.failed + before.failed + report.stats.failed;
        if !matches!(report.stop, StopReason::Completed) {
            let (exit, headline, error) = conclude(&report, before);
            let headline = format!("undo phase: {headline}");
            output::print_summary(&report.stats, &headline, self.job.log_format);
            return End { exit, error };
        }
        let exit = two_phase_exit(main.pending, failed);
        let headline = match exit {
            Exit::Success => "undo complete: both halves of the job are done".to_string(),
            Exit::OpsFailed => format!(
                "undo complete: both halves are over, {failed} ops failed permanently (see \
                 `imkit-batch report`)"
            ),
            _ => format!(
                "undo complete; {} ops of the main phase were never sent (its window ended)",
                main.pending
            ),
        };
        output::print_summary(&report.stats, &headline, self.job.log_format);
        End { exit, error: None }
    }

    /// Sends `ops` through the scheduler, recording with `writer`.
    async fn deliver(
        &self,
        ops: Vec<JournalOp>,
        writer: JournalWriter,
        options: scheduler::RunnerOptions,
        snapshotted: Snapshotted,
    ) -> RunReport {
        let mut progress = output::Progress::new(self.job.progress, ops.len() as u64);
        scheduler::run(
            ops,
            Arc::clone(&self.api),
            Arc::new(writer),
            options,
            self.controls.clone(),
            snapshotted,
            &mut progress,
        )
        .await
    }
}
