//! What is written from a journal: the report of every op (`report --format csv|json`,
//! columns [`REPORT_COLUMNS`]), and the CSV manifests `run` accepts of the failed ops
//! (`report --failed`) and of the job's inverse (`revert`). Each writes to any `Write`;
//! where it goes is the caller's business.
//!
//! A job with an undo phase (`undo_at_end`, `--undo-at`) reports both halves: the main
//! phase's rows as always, then the undo ops' rows, each row with one more column (CSV) or
//! key (JSON), `phase`, last: `main` or `undo`. An undo op has no manifest line (`file`
//! empty, `line` 0) and its `seq` counts the undo ops. The report of a job without an undo
//! phase is unchanged: no `phase` column.

use std::io::Write;

use serde::Serialize;

use super::csvout::ManifestWriter;
use super::fmt_ms;
use super::{Journal, JournalError, OpRow, OpState, revert_plan};
use crate::op::{Action, ActionKind};

/// The column a report of a job with an undo phase adds after [`REPORT_COLUMNS`].
pub const PHASE_COLUMN: &str = "phase";

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
    /// update can set. On the room's first changing op only. For the room's first ban or
    /// unban, its ban list read before it: `{"banned": [client ids]}`.
    prior: Option<serde_json::Value>,
    /// `main` or `undo`, for a job with an undo phase only.
    #[serde(skip_serializing_if = "Option::is_none")]
    phase: Option<&'static str>,
}

/// Hands each room's snapshot to the room's first changing op, and each room's ban-list
/// snapshot to its first ban or unban, in manifest order.
struct Priors {
    rooms: std::collections::HashMap<String, super::Snapshot>,
    bans: std::collections::HashMap<String, super::Snapshot>,
}

impl Priors {
    fn load(journal: &Journal) -> anyhow::Result<Priors> {
        Ok(Priors {
            rooms: journal.snapshots()?,
            bans: journal.ban_snapshots()?,
        })
    }

    fn take(&mut self, r: &OpRow) -> Option<serde_json::Value> {
        let from = match r.op.action.kind() {
            ActionKind::Room => &mut self.rooms,
            ActionKind::Ban => &mut self.bans,
            ActionKind::Mute => return None,
        };
        from.remove(&*r.op.room).and_then(|s| s.prior)
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
            phase: None,
        }
    }

    fn in_phase(self, phase: Option<&'static str>) -> Self {
        ReportRow { phase, ..self }
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
        .into_iter()
        .chain(self.phase.map(str::to_owned))
        .collect()
    }
}

/// Writes the report of every op as CSV ([`REPORT_COLUMNS`]).
pub(crate) fn write_report_csv(journal: &Journal, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(out);
    let phased = journal.undo_phase()?.is_some();
    let extra = phased.then_some(PHASE_COLUMN);
    w.write_record(REPORT_COLUMNS.into_iter().chain(extra))?;
    let mut priors = Priors::load(journal)?;
    let main = phased.then_some("main");
    journal.for_each_op(None, |row| -> anyhow::Result<()> {
        let r = ReportRow::new(&row, priors.take(&row)).in_phase(main);
        w.write_record(r.cells())?;
        Ok(())
    })?;
    journal.for_each_undo_op(None, |row| -> anyhow::Result<()> {
        w.write_record(ReportRow::new(&row, None).in_phase(Some("undo")).cells())?;
        Ok(())
    })?;
    w.flush()?;
    Ok(())
}

/// Writes the report of every op as one JSON array, streamed.
pub(crate) fn write_report_json(journal: &Journal, out: &mut dyn Write) -> anyhow::Result<()> {
    out.write_all(b"[")?;
    let mut first = true;
    let mut priors = Priors::load(journal)?;
    let main = journal.undo_phase()?.is_some().then_some("main");
    let mut write = |r: ReportRow<'_>| -> anyhow::Result<()> {
        out.write_all(if first { b"\n  " } else { b",\n  " })?;
        first = false;
        serde_json::to_writer(&mut *out, &r)?;
        Ok(())
    };
    journal.for_each_op(None, |row| -> anyhow::Result<()> {
        write(ReportRow::new(&row, priors.take(&row)).in_phase(main))
    })?;
    journal.for_each_undo_op(None, |row| -> anyhow::Result<()> {
        write(ReportRow::new(&row, None).in_phase(Some("undo")))
    })?;
    out.write_all(if first { b"]\n" } else { b"\n]\n" })?;
    Ok(())
}

/// Writes the failed ops as a CSV manifest; returns (written, listed apart with reasons).
pub(crate) fn write_failed_manifest(
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

/// What `revert` says of the unmutes it writes for pairs the job muted.
pub(crate) fn unmute_assumption_note(n: usize) -> String {
    format!(
        "{n} unmute op(s) undo mutes of this job assuming the pair was not muted before it: the API \
         cannot show a pair's mute state before a mute (the mute answer shows the client's mute \
         list after the change), so a pair that was already muted before the job is unmuted too; \
         drop the rows of pairs muted for other reasons (e.g. moderation) before running it"
    )
}

/// What `revert` says of the unbans it writes: who may run them.
pub(crate) fn unban_note(n: usize) -> String {
    format!(
        "{n} unban op(s) lift only bans this job made (bans answered USER_ALREADY_BLOCKED were \
         another moderator's and are kept); {}",
        crate::api::UNBAN_OWNER_ONLY
    )
}

/// The revert manifest written by [`write_revert_manifest`]: what it holds besides its rows.
#[derive(Debug, Default)]
pub(crate) struct RevertWritten {
    pub(crate) written: u64,
    /// One line per op listed apart (not reverted), with its reasons.
    pub(crate) apart: Vec<String>,
    /// Unmutes written on the assumption that the pair was not muted before the job.
    pub(crate) unmutes_assumed: usize,
    /// Unbans written (lifting bans this job made).
    pub(crate) unbans: usize,
}

/// Writes the revert manifest.
pub(crate) fn write_revert_manifest(
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
    let plan = revert_plan(
        rows,
        &journal.snapshots()?,
        &journal.ban_snapshots()?,
        &journal.runs()?,
    );
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
    let mut unbans_written = 0;
    for op in &plan.ops {
        match w.op(op)? {
            Ok(()) => {
                written += 1;
                match op.action {
                    Action::Unmute => unmutes_written += 1,
                    Action::Unban => unbans_written += 1,
                    _ => {}
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
    if unbans_written > 0 {
        w.comment(&unban_note(unbans_written))?;
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
        unbans: unbans_written,
    })
}
