//! What `status` shows of a job, gathered from its journal into one value
//! ([`StatusReport`], also the stable `status --json` format): the job, its state, counts
//! and progress (also per action), the credential each kind of op is sent with (names
//! only), the attempts, every run, the rate so far and the failures by error code, and the
//! job's undo phase (`undo_at_end`, `--undo-at`) when it has one.

use serde::Serialize;

use super::{ActionCounts, Counts, Journal, JournalError};
use super::{FailureGroup, JobInfo, RunInfo, fmt_ms, running_pid};
use crate::op::{ActionKind, Auth, Credential};

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
    /// Per action the job holds, in the order of `validate`.
    pub by_action: Vec<ActionCounts>,
    /// Which credential each kind of op is sent with, as the latest run recorded it (empty
    /// for a journal written before this was recorded).
    pub credentials: Vec<StatusCredential>,
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
    /// The undo phase, for a job with one (`null` otherwise). `state` and `counts` above are
    /// the main phase's; the job is `complete` once both phases are.
    pub undo: Option<StatusUndo>,
}

/// The undo phase in `status --json`.
#[derive(Debug, Serialize)]
pub struct StatusUndo {
    /// `waiting` (not planned yet: its time has not come), `incomplete` or `complete`.
    pub state: &'static str,
    /// The undo time the last run was given.
    pub due_at: Option<String>,
    pub planned_at: Option<String>,
    pub total: u64,
    pub counts: Counts,
    pub progress_percent: f64,
    /// The ops of the main phase not undone (prior state unknown), with their reasons.
    pub apart: Vec<String>,
    pub unmutes_assumed: u64,
    pub ended_at: Option<String>,
}

/// The undo phase of the job: as planned in the journal, or as the last run's settings
/// announce it (`undo_at`) while it waits for its time.
fn undo_status(journal: &Journal, runs: &[RunInfo]) -> Result<Option<StatusUndo>, JournalError> {
    let due = runs
        .last()
        .and_then(|r| r.settings.get("undo_at"))
        .and_then(serde_json::Value::as_str)
        .map(str::to_string);
    let Some(u) = journal.undo_phase()? else {
        return Ok(due.map(|due_at| StatusUndo {
            state: "waiting",
            due_at: Some(due_at),
            planned_at: None,
            total: 0,
            counts: Counts::default(),
            progress_percent: 0.0,
            apart: Vec::new(),
            unmutes_assumed: 0,
            ended_at: None,
        }));
    };
    let final_ops = u.counts.done + u.counts.failed + u.counts.skipped;
    Ok(Some(StatusUndo {
        state: if u.counts.pending == 0 {
            "complete"
        } else {
            "incomplete"
        },
        due_at: u.due_at.map(fmt_ms).or(due),
        planned_at: Some(fmt_ms(u.planned_at)),
        total: u.total,
        progress_percent: if u.total == 0 {
            100.0
        } else {
            round2(final_ops as f64 * 100.0 / u.total as f64)
        },
        counts: u.counts,
        apart: u.apart,
        unmutes_assumed: u.unmutes_assumed,
        ended_at: u.ended_at.map(fmt_ms),
    }))
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

/// The credential of one kind of op, by name: `ops` is `room ops`, `bans`, `room ops and
/// bans` or `mutes`; `credential` is `client_token` or `api_key`; `env` its variables.
#[derive(Debug, Serialize)]
pub struct StatusCredential {
    pub ops: &'static str,
    pub credential: Credential,
    pub env: &'static [&'static str],
}

impl StatusCredential {
    /// `room ops and bans: API key (IMKIT_API_KEY)`.
    pub fn line(&self) -> String {
        format!("{}: {}", self.ops, self.credential.describe())
    }
}

/// The credentials of the run whose settings are `settings` (`settings.credentials`, as
/// `runner::Job` records it: per kind, the credential's name or null when the job has none).
fn credentials_of(settings: &serde_json::Value) -> Vec<StatusCredential> {
    let c = &settings["credentials"];
    let named = |k: &str| serde_json::from_value::<Credential>(c[k].clone()).ok();
    let (rooms, mutes, bans) = (named("rooms"), named("mutes"), named("bans"));
    let kinds = [
        (rooms, ActionKind::Room),
        (mutes, ActionKind::Mute),
        (bans, ActionKind::Ban),
    ];
    // Room ops and bans share one credential; without either, only the mutes' line shows.
    let auth = Auth {
        rooms: rooms.or(bans).unwrap_or(Credential::ClientToken),
    };
    let present = kinds
        .into_iter()
        .filter(|(c, _)| c.is_some())
        .map(|(_, k)| k);
    auth.uses(present)
        .into_iter()
        .map(|(ops, credential)| StatusCredential {
            ops,
            credential,
            env: credential.env_vars(),
        })
        .collect()
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
    let credentials = credentials_of(runs.last().map_or(&job.settings, |r| &r.settings));
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
    let undo = undo_status(journal, &runs)?;
    let undo_done = undo.as_ref().is_none_or(|u| u.state == "complete");
    Ok(StatusReport {
        journal: journal.path().display().to_string(),
        schema_version: job.schema_version,
        state: match (running_pid.is_some(), counts.pending) {
            (true, _) => "running",
            (false, 0) if undo_done => "complete",
            (false, _) => "incomplete",
        },
        running_pid: running_pid.flatten(),
        total,
        counts,
        by_action: journal.counts_by_action()?,
        credentials,
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
        undo,
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The credentials a run recorded, one line per kind (room ops and bans together), and
    /// none for a journal written before they were recorded.
    #[test]
    fn credentials_come_from_the_runs_settings() {
        let lines = |v: serde_json::Value| -> Vec<String> {
            credentials_of(&v)
                .iter()
                .map(StatusCredential::line)
                .collect()
        };
        assert_eq!(
            lines(
                json!({"credentials": {"rooms": "api_key", "mutes": "api_key", "bans": "api_key"}})
            ),
            [
                "room ops and bans: API key (IMKIT_API_KEY)",
                "mutes: API key (IMKIT_API_KEY)"
            ]
        );
        assert_eq!(
            lines(json!({"credentials": {"rooms": null, "mutes": null, "bans": "client_token"}})),
            ["bans: client key and token (IMKIT_CLIENT_KEY, IMKIT_TOKEN)"]
        );
        assert_eq!(
            lines(json!({"credentials": {"rooms": null, "mutes": "api_key", "bans": null}})),
            ["mutes: API key (IMKIT_API_KEY)"]
        );
        assert!(lines(json!({"rate": "800/min"})).is_empty());
        let c = &credentials_of(&json!({"credentials": {"bans": "api_key"}}))[0];
        assert_eq!(
            serde_json::to_value(c).unwrap(),
            json!({"ops": "bans", "credential": "api_key", "env": ["IMKIT_API_KEY"]})
        );
    }
}
