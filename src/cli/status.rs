//! `status`: progress and outcome counts of a job, from its journal, as text or as the
//! stable JSON of [`StatusReport`].

use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use super::files::open_journal;
use crate::Exit;
use crate::journal::status::{StatusReport, status_report};
use crate::runner::summary::PaceReport;

#[derive(Debug, Args)]
pub(super) struct StatusArgs {
    /// The job's journal. `{date}` in it is resolved as `run` resolves it: with --manifest,
    /// by the manifest's daily window; otherwise it is today's local date.
    #[arg(value_name = "JOURNAL", required_unless_present = "manifest")]
    journal: Option<PathBuf>,

    /// The job's manifest: its journal (JOURNAL, or the default one) is the one `run` would
    /// use now (for a daily window, the night it is in, or the next) or, when that one does
    /// not exist yet, the latest night's.
    #[arg(long, value_name = "MANIFEST")]
    manifest: Option<PathBuf>,

    /// Print JSON (a stable format for scripts).
    #[arg(long)]
    json: bool,
}

/// Prints the status of the job, as text or JSON.
pub(super) fn status(args: &StatusArgs) -> anyhow::Result<Exit> {
    let path = journal_path(args)?;
    let journal = open_journal(&path)?;
    let report = status_report(&journal).map_err(crate::ExitError::from)?;
    let text = if args.json {
        let mut s = serde_json::to_string_pretty(&report).context("cannot encode the status")?;
        s.push('\n');
        s
    } else {
        render_status(&report)
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .context("cannot write the status")?;
    Ok(Exit::Success)
}

/// The journal `status` reads: JOURNAL, or the manifest's default, `{date}` resolved.
fn journal_path(args: &StatusArgs) -> anyhow::Result<PathBuf> {
    let Some(m) = &args.manifest else {
        let p = args.journal.clone().unwrap_or_default();
        return Ok(crate::runner::resolve_date_today(&p));
    };
    let manifest = crate::manifest::load(m, &Default::default()).map_err(|e| {
        crate::ExitError::new(
            Exit::Invalid,
            format!("{} is not a valid manifest:\n{e}", m.display()),
        )
    })?;
    let template = args
        .journal
        .clone()
        .unwrap_or_else(|| crate::runner::default_journal_template(&manifest, false));
    Ok(crate::runner::latest_journal(&manifest, &template))
}

/// The human form of `status`.
fn render_status(s: &StatusReport) -> String {
    let mut o = String::new();
    render_job(&mut o, s);
    render_actions(&mut o, s);
    render_runs(&mut o, s);
    render_failures(&mut o, s);
    o
}

/// The job, its state, progress, attempts, rate and times.
fn render_job(o: &mut String, s: &StatusReport) {
    let name = s.job.name.as_deref().unwrap_or("(unnamed)");
    let _ = writeln!(o, "job        {name}");
    let _ = writeln!(
        o,
        "manifest   {} (sha256 {})",
        s.job.manifest, s.job.checksum
    );
    let _ = writeln!(
        o,
        "journal    {} (schema {}, created by imkit-batch {} at {})",
        s.journal, s.schema_version, s.job.tool_version, s.job.created_at
    );
    let state = match (s.state, s.running_pid) {
        ("running", Some(pid)) => format!("running (pid {pid})"),
        (st, _) => st.to_string(),
    };
    let _ = writeln!(o, "state      {state}");
    let c = &s.counts;
    let _ = writeln!(
        o,
        "progress   {}{} of {} ops final ({:.1}%): {} done, {} failed, {} skipped, {} pending",
        if s.undo.is_some() { "main phase " } else { "" },
        c.done + c.failed + c.skipped,
        s.total,
        s.progress_percent,
        c.done,
        c.failed,
        c.skipped,
        c.pending
    );
    render_undo(o, s);
    let _ = writeln!(o, "attempts   {} ({} retries)", s.attempts, s.retries);
    match s.rate_ops_per_sec {
        Some(r) => {
            let _ = writeln!(
                o,
                "rate       {r:.2} ops/s over {} of running",
                if s.running_seconds < 60.0 {
                    format!("{:.1}s", s.running_seconds)
                } else {
                    humantime::format_duration(std::time::Duration::from_secs(
                        s.running_seconds.round() as u64,
                    ))
                    .to_string()
                }
            );
        }
        None => {
            let _ = writeln!(o, "rate       -");
        }
    }
    let _ = writeln!(
        o,
        "started    {}",
        s.job.started_at.as_deref().unwrap_or("never")
    );
    let _ = writeln!(
        o,
        "ended      {}",
        s.job.ended_at.as_deref().unwrap_or("not yet")
    );
}

/// One line per action the job holds (the done ops answered "already in state" counted
/// apart), then the credential of each kind of op.
fn render_actions(o: &mut String, s: &StatusReport) {
    if !s.by_action.is_empty() {
        let _ = writeln!(o, "ops by action:");
    }
    for a in &s.by_action {
        let c = &a.counts;
        let already = if a.already > 0 {
            format!(" ({} already in state)", a.already)
        } else {
            String::new()
        };
        let _ = writeln!(
            o,
            "  {:<9} {}: {} done{already}, {} failed, {} skipped, {} pending",
            a.action.as_str(),
            c.total(),
            c.done,
            c.failed,
            c.skipped,
            c.pending
        );
    }
    for c in &s.credentials {
        let _ = writeln!(o, "credentials {}", c.line());
    }
}

/// The undo phase's line, for a job with one: after the main phase's `progress` line.
fn render_undo(o: &mut String, s: &StatusReport) {
    let Some(u) = &s.undo else {
        return;
    };
    let due = u.due_at.as_deref().unwrap_or("?");
    let line = match u.state {
        "waiting" => format!("waiting until {due}: not planned yet"),
        _ => {
            let c = &u.counts;
            let apart = if u.apart.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} ops of the main phase listed apart, not undone",
                    u.apart.len()
                )
            };
            format!(
                "{} of {} ops final ({:.1}%): {} done, {} failed, {} pending; due {due}{}{apart}",
                c.done + c.failed + c.skipped,
                u.total,
                u.progress_percent,
                c.done,
                c.failed,
                c.pending,
                u.ended_at
                    .as_deref()
                    .map(|t| format!(", ended {t}"))
                    .unwrap_or_default()
            )
        }
    };
    let _ = writeln!(o, "undo       {line}");
    for a in &u.apart {
        let _ = writeln!(o, "  apart: {}", one_line(a, 160));
    }
}

/// The count of runs and the last exit, then one line per run.
fn render_runs(o: &mut String, s: &StatusReport) {
    let last = s
        .last_exit
        .as_ref()
        .map(|e| format!(", last exit {} ({})", e.code, e.name))
        .unwrap_or_default();
    let _ = writeln!(o, "runs       {}{last}", s.runs.len());
    for r in &s.runs {
        let end = match (&r.ended_at, &r.exit_code, &r.exit) {
            (Some(t), Some(c), Some(n)) => format!("ended {t}, exit {c} ({n})"),
            _ => match &r.last_commit_at {
                Some(t) if s.state == "running" && Some(r.pid) == s.running_pid => {
                    format!("running, last commit {t}")
                }
                Some(t) => format!("no end recorded (killed?), last commit {t}"),
                None => "no end recorded (killed?)".into(),
            },
        };
        let _ = writeln!(
            o,
            "  #{:<3} pid {:<7} started {}, {end}, {} ops final{}",
            r.id,
            r.pid,
            r.started_at,
            r.ops_finalized,
            if r.retry_failed {
                ", --retry-failed"
            } else {
                ""
            }
        );
        // A pace this build cannot read (a later one's) is left out, not an error.
        let paces: Vec<PaceReport> = serde_json::from_value(r.pace.clone()).unwrap_or_default();
        for line in PaceReport::lines(&paces) {
            let _ = writeln!(o, "       {line}");
        }
    }
}

/// The permanent failures grouped by error code, if any.
fn render_failures(o: &mut String, s: &StatusReport) {
    if s.failures_by_code.is_empty() {
        return;
    }
    let _ = writeln!(o, "failures by error code:");
    for g in &s.failures_by_code {
        let statuses = g
            .http_statuses
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            o,
            "  {:>7}  {}{}{}",
            g.count,
            g.error_code.as_deref().unwrap_or("(no code)"),
            if statuses.is_empty() {
                String::new()
            } else {
                format!(" (HTTP {statuses})")
            },
            g.example_message
                .as_deref()
                .map(|m| format!(": {}", one_line(m, 120)))
                .unwrap_or_default()
        );
    }
}

/// `s` on one line (control characters as spaces), cut to `max` characters with an
/// ellipsis.
fn one_line(s: &str, max: usize) -> String {
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.chars().count() <= max {
        s
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}
