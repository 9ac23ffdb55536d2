//! The undo phase of a job (`undo_at_end`, `--undo-at`): the ops that undo what the job's
//! main phase changed, planned once by the rules of `revert` ([`revert_plan`], over the
//! same done ops, snapshots and runs) when the undo time has come, then sent and recorded
//! like the main ops, in the same journal.
//!
//! On disk: two tables beside `ops`. `undo` (one row) says when the phase was planned, for
//! which undo time, how many ops it has, what was listed apart (prior state unknown, as
//! `revert` lists it) and when it ended; `undo_ops` holds the undo ops with the same state
//! and outcome columns as `ops`. Both are created by the transaction that records the plan
//! (`CREATE TABLE IF NOT EXISTS`): that is the migration. A journal written before undo
//! phases existed, or one of a job without an undo, has neither and reads as it always did
//! (no `undo` table: no undo phase planned); the `ops` table, and every report of the main
//! phase, is the same with or without them. The plan is recorded whole in one transaction,
//! so after a crash it is either there, complete, or not at all (and is planned again from
//! the same journal, which gives the same ops).

use std::path::Path;

use rusqlite::{OptionalExtension, Transaction, params};

use super::revert::{RevertPlan, revert_plan};
use super::store::parse_op;
use super::{Counts, Journal, JournalError, JournalOp, OpRecord, OpRow, OpState};
use crate::op::Op;

/// The tables of the undo phase.
const UNDO_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS undo (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    planned_at      INTEGER NOT NULL,
    due_at          INTEGER,
    total_ops       INTEGER NOT NULL,
    -- JSON array of the ops not undone, each with its reason (as `revert` lists them).
    apart           TEXT    NOT NULL,
    unmutes_assumed INTEGER NOT NULL DEFAULT 0,
    ended_at        INTEGER
);
CREATE TABLE IF NOT EXISTS undo_ops (
    seq              INTEGER PRIMARY KEY,
    action           TEXT    NOT NULL,
    room             TEXT    NOT NULL,
    client           TEXT,
    fields           TEXT,
    state            TEXT    NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'done', 'failed', 'skipped')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    http_status      INTEGER,
    rc               INTEGER,
    error_code       TEXT,
    message          TEXT,
    latency_ms       INTEGER,
    first_attempt_at INTEGER,
    last_attempt_at  INTEGER
);
";

/// The undo phase as the journal records it.
#[derive(Clone, Debug, PartialEq)]
pub struct UndoPhase {
    /// Unix milliseconds.
    pub planned_at: i64,
    /// The undo time it was planned for (Unix milliseconds).
    pub due_at: Option<i64>,
    pub total: u64,
    pub counts: Counts,
    /// The ops of the main phase not undone, each with its reason.
    pub apart: Vec<String>,
    /// Unmutes written on the assumption that the pair was not muted before the job.
    pub unmutes_assumed: u64,
    /// When a run last left no undo op pending.
    pub ended_at: Option<i64>,
}

/// What the writer records when the undo phase is planned.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct UndoPlanRecord {
    pub ops: Vec<Op>,
    pub apart: Vec<String>,
    pub unmutes_assumed: u64,
    pub due_at: Option<i64>,
}

impl UndoPlanRecord {
    /// The record of `plan`, due at `due_at`.
    pub(crate) fn of(plan: RevertPlan, due_at: Option<i64>) -> UndoPlanRecord {
        UndoPlanRecord {
            apart: plan
                .unknown
                .iter()
                .map(|u| {
                    format!(
                        "seq {} ({}:{}) {}: {}",
                        u.seq, u.file, u.line, u.op, u.reason
                    )
                })
                .collect(),
            unmutes_assumed: plan.unmutes_assumed as u64,
            ops: plan.ops,
            due_at,
        }
    }
}

impl Journal {
    /// True when the journal has the undo tables.
    fn has_undo(&self) -> Result<bool, JournalError> {
        self.conn()
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'undo'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)
            .map_err(|e| JournalError::sqlite(self.path(), "look for the undo phase", e))
    }

    /// The undo phase, once planned.
    pub fn undo_phase(&self) -> Result<Option<UndoPhase>, JournalError> {
        if !self.has_undo()? {
            return Ok(None);
        }
        let err = |e| JournalError::sqlite(self.path(), "read the undo phase", e);
        let row = self
            .conn()
            .query_row(
                "SELECT planned_at, due_at, total_ops, apart, unmutes_assumed, ended_at \
                 FROM undo WHERE id = 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Option<i64>>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, Option<i64>>(5)?,
                    ))
                },
            )
            .optional()
            .map_err(err)?;
        let Some((planned_at, due_at, total, apart, unmutes, ended_at)) = row else {
            return Ok(None);
        };
        let apart: Vec<String> =
            serde_json::from_str(&apart).map_err(|e| JournalError::Corrupt {
                path: self.path().to_path_buf(),
                reason: format!("the undo phase's list of ops apart: {e}"),
            })?;
        Ok(Some(UndoPhase {
            planned_at,
            due_at,
            total: total as u64,
            counts: self.undo_counts()?,
            apart,
            unmutes_assumed: unmutes as u64,
            ended_at,
        }))
    }

    fn undo_counts(&self) -> Result<Counts, JournalError> {
        self.state_counts("undo_ops", "count the undo ops", "undo op")
    }

    /// The undo ops not yet final, in order.
    pub fn undo_pending(&self) -> Result<Vec<JournalOp>, JournalError> {
        let mut out = Vec::new();
        self.for_each_undo_op(Some(OpState::Pending), |row| -> Result<(), JournalError> {
            out.push(JournalOp {
                seq: row.seq,
                op: row.op,
                attempts: row.attempts,
            });
            Ok(())
        })?;
        Ok(out)
    }

    /// Calls `f` with every undo op (or only those in `state`), in order. An undo op has no
    /// manifest line: its `file` is empty and its `line` 0. Nothing when no undo is planned.
    pub fn for_each_undo_op<E: From<JournalError>>(
        &self,
        state: Option<OpState>,
        mut f: impl FnMut(OpRow) -> Result<(), E>,
    ) -> Result<(), E> {
        if !self.has_undo()? {
            return Ok(());
        }
        let err = |e| JournalError::sqlite(self.path(), "read the undo ops", e);
        let mut st = self
            .conn()
            .prepare(
                "SELECT seq, action, room, client, fields, state, attempts, http_status, rc, \
                 error_code, message, latency_ms, first_attempt_at, last_attempt_at \
                 FROM undo_ops WHERE ?1 IS NULL OR state = ?1 ORDER BY seq",
            )
            .map_err(err)?;
        let mut rows = st.query([state.map(OpState::as_str)]).map_err(err)?;
        while let Some(r) = rows.next().map_err(err)? {
            let row = undo_row(self, r)?;
            f(row)?;
        }
        Ok(())
    }

    /// The inverse of what the main phase changed, by the rules of `revert`.
    pub(crate) fn plan_undo(&self) -> Result<RevertPlan, JournalError> {
        let mut rows = Vec::new();
        self.for_each_op(None, |row| -> Result<(), JournalError> {
            rows.push(row);
            Ok(())
        })?;
        Ok(revert_plan(
            rows,
            &self.snapshots()?,
            &self.ban_snapshots()?,
            &self.runs()?,
        ))
    }
}

/// Whether the journal at `path`, written for a manifest with `checksum`, owes an undo: its
/// main phase sent something and its undo phase is not planned, or has ops pending. A
/// missing, unreadable or foreign journal owes nothing (`run` reports a damaged one when it
/// opens it).
pub fn owes_undo(path: &Path, checksum: &str) -> bool {
    if path.symlink_metadata().is_err() {
        return false;
    }
    let owes = || -> Result<bool, JournalError> {
        let j = Journal::open_read_only(path)?;
        if j.meta()?.checksum != checksum {
            return Ok(false);
        }
        Ok(match j.undo_phase()? {
            Some(u) => u.counts.pending > 0,
            None => j.attempt_totals()?.0 > 0,
        })
    };
    owes().unwrap_or_else(|e| {
        tracing::warn!("cannot tell whether {} owes its undo: {e}", path.display());
        false
    })
}

/// One `undo_ops` row as an [`OpRow`].
fn undo_row(journal: &Journal, r: &rusqlite::Row<'_>) -> Result<OpRow, JournalError> {
    let err = |e| JournalError::sqlite(journal.path(), "read the undo ops", e);
    let corrupt = |reason: String| JournalError::Corrupt {
        path: journal.path().to_path_buf(),
        reason,
    };
    let seq: i64 = r.get(0).map_err(err)?;
    let action: String = r.get(1).map_err(err)?;
    let op = parse_op(
        &action,
        r.get(2).map_err(err)?,
        r.get(3).map_err(err)?,
        r.get(4).map_err(err)?,
    )
    .map_err(|e| corrupt(format!("undo op {seq}: {e}")))?;
    let state: String = r.get(5).map_err(err)?;
    let state = OpState::parse(&state)
        .ok_or_else(|| corrupt(format!("undo op {seq}: unknown state {state:?}")))?;
    Ok(OpRow {
        seq: seq as u64,
        file: String::new(),
        line: 0,
        op,
        state,
        attempts: r.get::<_, i64>(6).map_err(err)? as u32,
        http_status: r
            .get::<_, Option<i64>>(7)
            .map_err(err)?
            .and_then(|v| u16::try_from(v).ok()),
        rc: r.get(8).map_err(err)?,
        error_code: r.get(9).map_err(err)?,
        message: r.get(10).map_err(err)?,
        latency_ms: r.get::<_, Option<i64>>(11).map_err(err)?.map(|v| v as u64),
        first_attempt_at: r.get(12).map_err(err)?,
        last_attempt_at: r.get(13).map_err(err)?,
    })
}

/// Records the undo plan in `tx`, creating the undo tables first (see the module's notes).
/// A plan already there is kept (the first one wins, as it was sent from).
pub(super) fn insert_plan(tx: &Transaction, plan: &UndoPlanRecord, now: i64) -> Result<(), String> {
    tx.execute_batch(UNDO_SCHEMA)
        .map_err(|e| format!("cannot create the undo tables: {e}"))?;
    let apart = serde_json::to_string(&plan.apart).map_err(|e| e.to_string())?;
    let n = tx
        .execute(
            "INSERT INTO undo (id, planned_at, due_at, total_ops, apart, unmutes_assumed) \
             VALUES (1, ?1, ?2, ?3, ?4, ?5) ON CONFLICT (id) DO NOTHING",
            params![
                now,
                plan.due_at,
                plan.ops.len() as i64,
                apart,
                plan.unmutes_assumed as i64
            ],
        )
        .map_err(|e| format!("cannot record the undo plan: {e}"))?;
    if n == 0 {
        return Ok(());
    }
    let mut st = tx
        .prepare(
            "INSERT INTO undo_ops (seq, action, room, client, fields) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(|e| format!("cannot record the undo ops: {e}"))?;
    for (seq, op) in plan.ops.iter().enumerate() {
        let fields = match &op.fields {
            Some(f) => Some(serde_json::to_string(&**f).map_err(|e| e.to_string())?),
            None => None,
        };
        st.execute(params![
            seq as i64,
            op.action.as_str(),
            &*op.room,
            op.client.as_deref(),
            fields
        ])
        .map_err(|e| format!("cannot record undo op {seq}: {e}"))?;
    }
    Ok(())
}

/// Records the outcome `r` of an undo op, queued at `at`: as the main ops' outcomes are.
pub(super) fn record(
    tx: &Transaction,
    r: &OpRecord,
    message: Option<&str>,
    at: i64,
) -> Result<usize, String> {
    let seq = i64::try_from(r.seq).unwrap_or(i64::MAX);
    let latency = r.latency_ms.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
    let state = r.state.map(OpState::as_str);
    tx.prepare_cached(
        "UPDATE undo_ops SET state = COALESCE(?2, state), attempts = ?3, http_status = ?4, \
         rc = ?5, error_code = ?6, message = ?7, latency_ms = ?8, \
         first_attempt_at = CASE WHEN ?3 > 0 THEN COALESCE(first_attempt_at, ?9) \
                            ELSE first_attempt_at END, \
         last_attempt_at = CASE WHEN ?3 > 0 THEN ?9 ELSE last_attempt_at END \
         WHERE seq = ?1 AND (?2 IS NOT NULL OR state = 'pending')",
    )
    .and_then(|mut st| {
        st.execute(params![
            seq,
            state,
            r.attempts,
            r.http_status,
            r.rc,
            r.error_code,
            message,
            latency,
            at
        ])
    })
    .map_err(|e| format!("cannot record undo op {}: {e}", r.seq))
}

/// At the end of a run: the undo phase's end, when it has no op pending (or `NULL`).
pub(super) fn record_end(tx: &Transaction, now: i64) -> Result<(), String> {
    let has: i64 = tx
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'undo'",
            [],
            |r| r.get(0),
        )
        .map_err(|e| format!("cannot look for the undo phase: {e}"))?;
    if has == 0 {
        return Ok(());
    }
    tx.execute(
        "UPDATE undo SET ended_at = CASE \
         WHEN EXISTS (SELECT 1 FROM undo_ops WHERE state = 'pending') THEN NULL ELSE ?1 END \
         WHERE id = 1",
        [now],
    )
    .map_err(|e| format!("cannot record the end of the undo phase: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Manifest;
    use crate::op::Op;

    fn tables(path: &Path) -> Vec<String> {
        let conn = rusqlite::Connection::open(path).unwrap();
        let mut st = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
            .unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// A journal gets the undo tables only when its undo is planned: one without (such as
    /// those written before undo phases existed) reads as "no undo phase", and its main ops
    /// are the same before and after the plan is recorded.
    #[tokio::test]
    async fn the_undo_tables_come_with_the_plan() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.csv.journal");
        let m = Manifest::from_ops("m.csv", vec![Op::mute("u", "r"), Op::freeze("a")]);
        let meta = crate::journal::JobMeta {
            manifest_path: "m.csv".into(),
            checksum: m.checksum.clone(),
            name: None,
            settings: serde_json::json!({}),
            target: None,
        };
        let j = Journal::open_for_run(&path, &m, &meta, Default::default()).unwrap();
        assert_eq!(j.undo_phase().unwrap(), None);
        assert!(j.undo_pending().unwrap().is_empty());
        let w = j.start_writer().unwrap();
        w.record(OpRecord {
            seq: 0,
            state: Some(OpState::Done),
            attempts: 1,
            http_status: Some(200),
            rc: Some(0),
            ..Default::default()
        })
        .unwrap();
        w.flush().await.unwrap();
        assert!(!tables(&path).contains(&"undo".to_string()));
        assert!(owes_undo(&path, &m.checksum), "a mute was sent");
        assert!(!owes_undo(&path, "another manifest"));

        let ro = Journal::open_read_only(&path).unwrap();
        let plan = ro.plan_undo().unwrap();
        assert_eq!(plan.ops, vec![Op::unmute("u", "r")]);
        let rec = UndoPlanRecord::of(plan, Some(42));
        w.record_undo_plan(rec.clone()).await.unwrap();
        // A second plan (a resumed run planning again) keeps the first.
        w.record_undo_plan(UndoPlanRecord::default()).await.unwrap();
        let u = ro.undo_phase().unwrap().unwrap();
        assert_eq!((u.total, u.counts.pending, u.due_at), (1, 1, Some(42)));
        assert_eq!(u.unmutes_assumed, 1);
        assert!(owes_undo(&path, &m.checksum), "planned, not sent");
        let pending = ro.undo_pending().unwrap();
        assert_eq!(pending[0].op, Op::unmute("u", "r"));

        w.for_undo()
            .record(OpRecord {
                seq: 0,
                state: Some(OpState::Done),
                attempts: 1,
                ..Default::default()
            })
            .unwrap();
        w.finish(crate::Exit::Success).await.unwrap();
        let u = ro.undo_phase().unwrap().unwrap();
        assert_eq!((u.counts.done, u.counts.pending), (1, 0));
        assert!(u.ended_at.is_some());
        assert!(!owes_undo(&path, &m.checksum));
        assert_eq!(ro.counts().unwrap().done, 1, "the main phase is untouched");
        assert_eq!(ro.counts().unwrap().pending, 1);
    }
}
