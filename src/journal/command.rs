//! `status`, `report` and `revert`: read-only views of a journal. Each opens the journal
//! read-only (so it works while a run holds the job's lock), and writes to standard output
//! or, with `-o FILE`, to a temporary file renamed into place (never over the journal).
//!
//! Stable formats for scripts: `status --json`, `report --format csv|json` (columns below)
//! and the CSV manifests of `report --failed` and `revert` (see `csvout`).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::Serialize;

use super::csvout::ManifestWriter;
use super::{
    Counts, FailureGroup, JobInfo, Journal, JournalError, OpRow, OpState, RunInfo, fmt_ms,
    revert_plan, running_pid,
};
use crate::Exit;
use crate::cli::{ReportArgs, ReportFormat, RevertArgs, StatusArgs};

/// The columns of `report --format csv`, in order.
pub const REPORT_COLUMNS: [&str; 17] = [
    "seq",
    "file",
    "line",
    "action",
    "room",
    "client",
    "fields",
    "state",
    "attempts",
    "http_status",
    "rc",
    "error_code",
    "message",
    "latency_ms",
    "first_attempt_at",
    "last_attempt_at",
    "prior",
];

fn open(path: &Path) -> anyhow::Result<Journal> {
    Journal::open_read_only(path).map_err(|e| anyhow::Error::new(crate::ExitError::from(e)))
}

/// Where a command's output goes: stdout, or a file written whole then renamed into place.
enum Output {
    Stdout,
    File { tmp: PathBuf, dest: PathBuf },
}

impl Output {
    fn new(dest: Option<&Path>, journal: &Path) -> anyhow::Result<(Output, Box<dyn Write>)> {
        let Some(dest) = dest else {
            return Ok((Output::Stdout, Box::new(BufWriter::new(std::io::stdout()))));
        };
        if same_file(dest, journal) {
            bail!(
                "refusing to write to {}: it is the journal itself (or one of its files); choose another -o FILE",
                dest.display()
            );
        }
        let mut tmp = dest.as_os_str().to_owned();
        tmp.push(format!(".tmp.{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let f = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        Ok((
            Output::File {
                tmp,
                dest: dest.to_path_buf(),
            },
            Box::new(BufWriter::new(f)),
        ))
    }

    fn commit(self, mut w: Box<dyn Write>) -> anyhow::Result<()> {
        w.flush().context("cannot write the output")?;
        drop(w);
        if let Output::File { tmp, dest } = self {
            std::fs::rename(&tmp, &dest)
                .with_context(|| format!("cannot move {} to {}", tmp.display(), dest.display()))?;
        }
        Ok(())
    }

    fn abandon(self) {
        if let Output::File { tmp, .. } = self {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// True when `dest` names the journal, its lock or one of SQLite's files of it.
fn same_file(dest: &Path, journal: &Path) -> bool {
    let canon = |p: &Path| -> Option<PathBuf> {
        if let Ok(c) = p.canonicalize() {
            return Some(c);
        }
        let parent = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.canonicalize().ok()?,
            _ => std::env::current_dir().ok()?,
        };
        Some(parent.join(p.file_name()?))
    };
    let (Some(d), Some(j)) = (canon(dest), canon(journal)) else {
        return false;
    };
    ["", "-wal", "-shm", "-journal", ".lock"].iter().any(|s| {
        let mut o = j.as_os_str().to_owned();
        o.push(s);
        Path::new(&o) == d
    })
}

fn write_with(
    dest: Option<&Path>,
    journal: &Path,
    body: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let (out, mut w) = Output::new(dest, journal)?;
    match body(&mut w) {
        Ok(()) => out.commit(w),
        Err(e) => {
            drop(w);
            out.abandon();
            Err(e)
        }
    }
}

/// Writes a manifest made by `body` (which returns the ops written and the lines describing
/// ops it had to leave out) to `dest` or standard output, then tells stderr what was written
/// and lists what was left out.
fn write_manifest(
    dest: Option<&Path>,
    journal: &Path,
    written_note: &str,
    apart_note: &str,
    body: impl FnOnce(&mut dyn Write) -> anyhow::Result<(u64, Vec<String>)>,
) -> anyhow::Result<()> {
    let mut result = (0, Vec::new());
    write_with(dest, journal, |w| {
        result = body(w)?;
        Ok(())
    })?;
    let (written, apart) = result;
    let dest = dest.map_or_else(|| "standard output".into(), |p| p.display().to_string());
    eprintln!("{written} {written_note} to {dest}");
    if !apart.is_empty() {
        eprintln!("{} {apart_note}:", apart.len());
        for a in apart.iter().take(APART_SHOWN) {
            eprintln!("  {a}");
        }
        if apart.len() > APART_SHOWN {
            eprintln!(
                "  ... and {} more, every one of them in the manifest's closing comments",
                apart.len() - APART_SHOWN
            );
        }
    }
    Ok(())
}

/// How many ops left out of a written manifest are named on stderr: a job of 200,000 rooms
/// run without `--snapshot` leaves every one out of its revert, and the terminal gets the
/// first few and the count; the manifest's comments keep the whole list.
const APART_SHOWN: usize = 20;

// ---------------------------------------------------------------------------------------
// status

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

/// The human form of `status`.
pub fn render_status(s: &StatusReport) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
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
        "progress   {} of {} ops final ({:.1}%): {} done, {} failed, {} skipped, {} pending",
        c.done + c.failed + c.skipped,
        s.total,
        s.progress_percent,
        c.done,
        c.failed,
        c.skipped,
        c.pending
    );
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
    }
    if !s.failures_by_code.is_empty() {
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
    o
}

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

pub fn status(args: &StatusArgs) -> anyhow::Result<Exit> {
    let journal = open(&args.journal)?;
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

// ---------------------------------------------------------------------------------------
// report

/// One row of `report --format json`.
#[derive(Debug, Serialize)]
struct ReportRow<'a> {
    seq: u64,
    file: &'a str,
    line: u32,
    action: &'static str,
    room: &'a str,
    client: Option<&'a str>,
    fields: Option<serde_json::Value>,
    state: OpState,
    attempts: u32,
    http_status: Option<u16>,
    rc: Option<i64>,
    error_code: Option<&'a str>,
    message: Option<&'a str>,
    latency_ms: Option<u64>,
    first_attempt_at: Option<String>,
    last_attempt_at: Option<String>,
    /// The room as read before this op, its first change (`--snapshot`): the fields an
    /// update can set. On the room's first changing op only.
    prior: Option<serde_json::Value>,
}

/// Hands each room's snapshot to the room's first changing op, in manifest order.
struct Priors(std::collections::HashMap<String, super::Snapshot>);

impl Priors {
    fn load(journal: &Journal) -> anyhow::Result<Priors> {
        Ok(Priors(journal.snapshots()?))
    }

    fn take(&mut self, r: &OpRow) -> Option<serde_json::Value> {
        if r.op.action.needs_client() {
            return None;
        }
        self.0.remove(&*r.op.room).and_then(|s| s.prior)
    }
}

impl<'a> ReportRow<'a> {
    fn new(r: &'a OpRow, prior: Option<serde_json::Value>) -> Self {
        ReportRow {
            seq: r.seq,
            file: &r.file,
            line: r.line,
            action: r.op.action.as_str(),
            room: &r.op.room,
            client: r.op.client.as_deref(),
            fields: r.op.fields.as_ref().map(|f| f.to_body()),
            state: r.state,
            attempts: r.attempts,
            http_status: r.http_status,
            rc: r.rc,
            error_code: r.error_code.as_deref(),
            message: r.message.as_deref(),
            latency_ms: r.latency_ms,
            first_attempt_at: r.first_attempt_at.map(fmt_ms),
            last_attempt_at: r.last_attempt_at.map(fmt_ms),
            prior,
        }
    }

    fn cells(&self) -> Vec<String> {
        let opt = |v: Option<String>| v.unwrap_or_default();
        vec![
            self.seq.to_string(),
            self.file.to_owned(),
            self.line.to_string(),
            self.action.to_owned(),
            self.room.to_owned(),
            opt(self.client.map(str::to_owned)),
            opt(self.fields.as_ref().map(|f| f.to_string())),
            self.state.as_str().to_owned(),
            self.attempts.to_string(),
            opt(self.http_status.map(|v| v.to_string())),
            opt(self.rc.map(|v| v.to_string())),
            opt(self.error_code.map(str::to_owned)),
            opt(self.message.map(str::to_owned)),
            opt(self.latency_ms.map(|v| v.to_string())),
            opt(self.first_attempt_at.clone()),
            opt(self.last_attempt_at.clone()),
            opt(self.prior.as_ref().map(|p| p.to_string())),
        ]
    }
}

/// Writes the report of every op as CSV ([`REPORT_COLUMNS`]).
pub fn write_report_csv(journal: &Journal, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(out);
    w.write_record(REPORT_COLUMNS)?;
    let mut priors = Priors::load(journal)?;
    journal.for_each_op(None, |row| -> anyhow::Result<()> {
        w.write_record(ReportRow::new(&row, priors.take(&row)).cells())?;
        Ok(())
    })?;
    w.flush()?;
    Ok(())
}

/// Writes the report of every op as one JSON array, streamed.
pub fn write_report_json(journal: &Journal, out: &mut dyn Write) -> anyhow::Result<()> {
    out.write_all(b"[")?;
    let mut first = true;
    let mut priors = Priors::load(journal)?;
    journal.for_each_op(None, |row| -> anyhow::Result<()> {
        out.write_all(if first { b"\n  " } else { b",\n  " })?;
        first = false;
        serde_json::to_writer(&mut *out, &ReportRow::new(&row, priors.take(&row)))?;
        Ok(())
    })?;
    out.write_all(if first { b"]\n" } else { b"\n]\n" })?;
    Ok(())
}

/// Writes the failed ops as a CSV manifest; returns (written, listed apart with reasons).
pub fn write_failed_manifest(
    journal: &Journal,
    out: &mut dyn Write,
) -> anyhow::Result<(u64, Vec<String>)> {
    let mut w = ManifestWriter::new(out)?;
    let mut written = 0;
    let mut apart = Vec::new();
    journal.for_each_op(Some(OpState::Failed), |row| -> anyhow::Result<()> {
        match w.op(&row.op)? {
            Ok(()) => written += 1,
            Err(reason) => apart.push(format!(
                "seq {} ({}:{}) {}: {reason}",
                row.seq, row.file, row.line, row.op
            )),
        }
        Ok(())
    })?;
    if !apart.is_empty() {
        w.comment(&format!(
            "{} failed ops cannot be written in a CSV manifest; retry them with `run --retry-failed` on the original manifest:",
            apart.len()
        ))?;
        for a in &apart {
            w.comment(a)?;
        }
    }
    w.finish()?;
    Ok((written, apart))
}

pub fn report(args: &ReportArgs) -> anyhow::Result<Exit> {
    // `--format` defaults to csv, so json here was asked for: refuse it rather than quietly
    // writing the CSV manifest anyway.
    if args.failed && matches!(args.format, ReportFormat::Json) {
        return Err(crate::ExitError::new(
            Exit::Invalid,
            "--failed writes the failed ops as a CSV manifest (the input `run` takes), so it \
             cannot be combined with --format json: drop --format json, or drop --failed for the \
             JSON report of every op (filter it on \"state\": \"failed\")",
        )
        .into());
    }
    let journal = open(&args.journal)?;
    if args.failed {
        write_manifest(
            args.output.as_deref(),
            &args.journal,
            "failed ops written as a manifest",
            "failed ops cannot be written in a CSV manifest (listed as comments at its end)",
            |w| write_failed_manifest(&journal, w),
        )?;
        return Ok(Exit::Success);
    }
    write_with(args.output.as_deref(), &args.journal, |w| {
        match args.format {
            ReportFormat::Csv => write_report_csv(&journal, w),
            ReportFormat::Json => write_report_json(&journal, w),
        }
    })?;
    Ok(Exit::Success)
}

// ---------------------------------------------------------------------------------------
// revert

/// What `revert` says of the unmutes it writes for pairs the job muted.
pub fn unmute_assumption_note(n: usize) -> String {
    format!(
        "{n} unmute op(s) undo mutes of this job assuming the pair was not muted before it: the API \
         cannot show a pair's mute state before a mute (the mute answer shows the client's mute \
         list after the change), so a pair that was already muted before the job is unmuted too; \
         drop the rows of pairs muted for other reasons (e.g. moderation) before running it"
    )
}

/// The revert manifest written by [`write_revert_manifest`]: what it holds besides its rows.
#[derive(Debug, Default)]
pub struct RevertWritten {
    pub written: u64,
    /// One line per op listed apart (not reverted), with its reasons.
    pub apart: Vec<String>,
    /// Unmutes written on the assumption that the pair was not muted before the job.
    pub unmutes_assumed: usize,
}

/// Writes the revert manifest.
pub fn write_revert_manifest(
    journal: &Journal,
    out: &mut dyn Write,
) -> anyhow::Result<RevertWritten> {
    let mut rows = Vec::new();
    // Every op: done ones are reverted, sent ones may have been applied (their attempt times
    // also date the room's snapshot), and pending ones tell which rooms still had ops to send
    // when a run was killed.
    journal.for_each_op(None, |row| -> Result<(), JournalError> {
        rows.push(row);
        Ok(())
    })?;
    let plan = revert_plan(rows, &journal.snapshots()?, &journal.runs()?);
    let mut w = ManifestWriter::new(out)?;
    let mut apart: Vec<String> = plan
        .unknown
        .iter()
        .map(|u| {
            format!(
                "seq {} ({}:{}) {}: {}",
                u.seq, u.file, u.line, u.op, u.reason
            )
        })
        .collect();
    let mut written = 0;
    let mut unmutes_written = 0;
    for op in &plan.ops {
        match w.op(op)? {
            Ok(()) => {
                written += 1;
                if op.action == crate::op::Action::Unmute {
                    unmutes_written += 1;
                }
            }
            Err(reason) => apart.push(format!("{op}: cannot be written back: {reason}")),
        }
    }
    // The unmutes' ids come from the job's own mute ops, so each is written; `min` keeps
    // the note true should one be listed apart instead.
    let unmutes_assumed = plan.unmutes_assumed.min(unmutes_written);
    if unmutes_assumed > 0 {
        w.comment(&unmute_assumption_note(unmutes_assumed))?;
    }
    if !apart.is_empty() {
        w.comment(&format!(
            "{} ops listed apart: their prior state is unknown or cannot be written back, so they are not reverted here; check and revert them by hand:",
            apart.len()
        ))?;
        for a in &apart {
            w.comment(a)?;
        }
    }
    w.finish()?;
    Ok(RevertWritten {
        written,
        apart,
        unmutes_assumed,
    })
}

pub fn revert(args: &RevertArgs) -> anyhow::Result<Exit> {
    let journal = open(&args.journal)?;
    let counts = journal.counts().map_err(crate::ExitError::from)?;
    if let Some(pid) = running_pid(&args.journal) {
        eprintln!(
            "warning: a run{} is still driving this job; the revert covers only what is done so far",
            pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
        );
    } else if counts.pending > 0 {
        eprintln!(
            "warning: the job is not finished ({} ops pending); the revert covers only what is done so far, \
             and ops in flight when it stopped may have been applied without being recorded: \
             run the job to its end before reverting it",
            counts.pending
        );
    }
    let mut assumed = 0;
    write_manifest(
        args.output.as_deref(),
        &args.journal,
        "revert ops written",
        "ops listed apart (prior state unknown, not reverted; also as comments at the end of the manifest)",
        |w| {
            let r = write_revert_manifest(&journal, w)?;
            assumed = r.unmutes_assumed;
            Ok((r.written, r.apart))
        },
    )?;
    if assumed > 0 {
        eprintln!("note: {}", unmute_assumption_note(assumed));
    }
    Ok(Exit::Success)
}
