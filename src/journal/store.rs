//! [`Journal`], the open journal of one job: how `run` opens it (creating and importing
//! the plan, or resuming it) and how `status`, `report`, `revert` and `plan` open it
//! without locking a run out, and every read query behind them.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension};

use super::lock::{running_pid, take_lock};
use super::open::{self, TidyWal, open_checked};
use super::resume;
use super::{
    ActionCounts, Counts, FailureGroup, JobInfo, JobMeta, JournalError, JournalOp, JournalWriter,
    OpRow, OpState, OpenOptions, RunInfo, Snapshot, import, writer,
};
use crate::manifest::Manifest;
use crate::op::{Action, Op, RoomFields};

/// An open journal, held by one process (an exclusive lock is taken on open for `run`).
pub struct Journal {
    path: PathBuf,
    conn: Connection,
    /// The held lock file, for a journal opened by `open_for_run`.
    lock: Option<File>,
    /// The settings JSON of this run (from [`JobMeta`]), recorded by `start_writer`.
    run_settings: String,
    retry_failed: bool,
    /// For a read-only open that made SQLite create the WAL companions: removes them again
    /// once `conn` is closed (declared after it, so dropped after it).
    _tidy: Option<TidyWal>,
}

impl Journal {
    /// For `run`: creates the journal (mode 0600, the whole plan imported in one transaction;
    /// its directory 0700 when missing) or resumes it; refuses a journal run against another
    /// target than `meta.target`, one whose ops differ from what `manifest` means (unless
    /// `opts.replan`), one locked by another process, a damaged one, or a place where it
    /// cannot be written, each with a message that says what to do.
    ///
    /// The lock (`PATH.lock`, exclusive, advisory) is held until the [`JournalWriter`] is
    /// finished or the process ends. `meta.settings` must not hold credentials.
    pub fn open_for_run(
        path: &Path,
        manifest: &Manifest,
        meta: &JobMeta,
        opts: OpenOptions,
    ) -> Result<Journal, JournalError> {
        open::ensure_parent_dir(path)?;
        let lock = take_lock(path)?;
        let settings = settings_json(meta)?;
        if opts.fresh {
            open::set_aside_for_fresh(path)?;
        }
        let mut created = None;
        if path.symlink_metadata().is_err() {
            created = import::create_new(path, manifest, meta, &settings)?;
        }
        if created.is_none() && open::set_aside_interrupted_import(path)? {
            created = import::create_new(path, manifest, meta, &settings)?;
        }
        let conn = match created {
            Some(conn) => conn,
            None => resume::resume(path, manifest, meta, opts)?,
        };
        Ok(Journal {
            path: path.to_path_buf(),
            conn,
            lock: Some(lock),
            run_settings: settings,
            retry_failed: opts.retry_failed,
            _tidy: None,
        })
    }

    /// For `status`, `report`, `revert` and `plan`: reads without locking out a running job.
    pub fn open_read_only(path: &Path) -> Result<Journal, JournalError> {
        // No WAL file means no connection has the journal open (one in WAL mode keeps it while
        // open): the companions SQLite creates for this read are ours to remove afterwards.
        // Decided before the open, armed only after it succeeded: a journal refused as damaged
        // (a hot rollback journal, say) must not be touched by a read-write connection.
        let no_wal_before = open::no_wal(path);
        // The same checks as `run` (with `quick_check`): `status` must not call a journal
        // complete that `run` then refuses as damaged, nor `revert` work from a damaged one.
        let conn = match open_checked(path) {
            Ok(conn) => conn,
            // A run creating the journal (the plan import) holds the lock while the file is
            // still empty or half written: say so instead of calling it damaged.
            Err(e @ JournalError::Corrupt { .. }) => {
                return Err(match running_pid(path) {
                    Some(pid) => JournalError::Locked {
                        path: path.to_path_buf(),
                        pid,
                    },
                    None => e,
                });
            }
            Err(e) => return Err(e),
        };
        Ok(Journal {
            path: path.to_path_buf(),
            conn,
            lock: None,
            run_settings: String::new(),
            retry_failed: false,
            _tidy: no_wal_before.then(|| TidyWal(path.to_path_buf())),
        })
    }

    /// The journal's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The connection, for the queries of the other files of this module (`series`, `undo`).
    pub(super) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// True when `--retry-failed` was asked for when opening.
    pub fn retry_failed(&self) -> bool {
        self.retry_failed
    }

    fn corrupt(&self, reason: String) -> JournalError {
        JournalError::Corrupt {
            path: self.path.clone(),
            reason,
        }
    }

    /// Ops not yet final, in manifest order.
    pub fn pending(&self) -> Result<Vec<JournalOp>, JournalError> {
        let err = |e| JournalError::sqlite(&self.path, "read the pending ops", e);
        let mut st = self
            .conn
            .prepare(
                "SELECT seq, action, room, client, fields, attempts FROM ops \
                 WHERE state = 'pending' ORDER BY seq",
            )
            .map_err(err)?;
        let mut rows = st.query([]).map_err(err)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(err)? {
            let seq: i64 = r.get(0).map_err(err)?;
            let action: String = r.get(1).map_err(err)?;
            let op = parse_op(
                &action,
                r.get(2).map_err(err)?,
                r.get(3).map_err(err)?,
                r.get(4).map_err(err)?,
            )
            .map_err(|e| self.corrupt(format!("op {seq}: {e}")))?;
            out.push(JournalOp {
                seq: seq as u64,
                op,
                attempts: r.get::<_, i64>(5).map_err(err)? as u32,
            });
        }
        Ok(out)
    }

    /// Ops per state.
    pub fn counts(&self) -> Result<Counts, JournalError> {
        self.state_counts("ops", "count the ops", "op")
    }

    /// The ops of `table` (`ops`, `undo_ops`) per state; a state the schema does not know
    /// makes the journal corrupt (`what` names the kind of op, `action` what a failed read
    /// was doing).
    pub(super) fn state_counts(
        &self,
        table: &str,
        action: &'static str,
        what: &str,
    ) -> Result<Counts, JournalError> {
        let err = |e| JournalError::sqlite(&self.path, action, e);
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT state, count(*) FROM {table} GROUP BY state"
            ))
            .map_err(err)?;
        let mut rows = st.query([]).map_err(err)?;
        let mut c = Counts::default();
        while let Some(r) = rows.next().map_err(err)? {
            let state: String = r.get(0).map_err(err)?;
            let n = r.get::<_, i64>(1).map_err(err)? as u64;
            match OpState::parse(&state) {
                Some(OpState::Pending) => c.pending = n,
                Some(OpState::Done) => c.done = n,
                Some(OpState::Failed) => c.failed = n,
                Some(OpState::Skipped) => c.skipped = n,
                None => return Err(self.corrupt(format!("unknown {what} state {state:?}"))),
            }
        }
        Ok(c)
    }

    /// Rooms whose prior state was already read (`--snapshot`), so a resumed run reads none twice.
    /// A room whose read gave nothing usable counts too: reading it again after the job has
    /// changed it would record the job's own state as the prior one.
    pub fn snapshotted_rooms(&self) -> Result<HashSet<String>, JournalError> {
        let err = |e| JournalError::sqlite(&self.path, "read the snapshots", e);
        let mut st = self
            .conn
            .prepare("SELECT room FROM snapshots")
            .map_err(err)?;
        st.query_map([], |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect())
            .map_err(err)
    }

    /// Every snapshot, by room.
    pub fn snapshots(&self) -> Result<HashMap<String, Snapshot>, JournalError> {
        self.read_snapshots("snapshots", "read the snapshots", "snapshot")
    }

    /// The rows of the snapshot table `table` (`snapshots`, `ban_snapshots`), by room; a
    /// `prior` that is not JSON makes the journal corrupt (`what` names the kind, `action`
    /// what a failed read was doing).
    fn read_snapshots(
        &self,
        table: &str,
        action: &'static str,
        what: &str,
    ) -> Result<HashMap<String, Snapshot>, JournalError> {
        let err = |e| JournalError::sqlite(&self.path, action, e);
        let mut st = self
            .conn
            .prepare(&format!("SELECT room, prior, taken_at FROM {table}"))
            .map_err(err)?;
        let mut rows = st.query([]).map_err(err)?;
        let mut out = HashMap::new();
        while let Some(r) = rows.next().map_err(err)? {
            let room: String = r.get(0).map_err(err)?;
            let prior: Option<String> = r.get(1).map_err(err)?;
            let prior = match prior {
                Some(p) => Some(
                    serde_json::from_str(&p)
                        .map_err(|e| self.corrupt(format!("{what} of {room:?}: {e}")))?,
                ),
                None => None,
            };
            let taken_at = r.get(2).map_err(err)?;
            out.insert(room, Snapshot { prior, taken_at });
        }
        Ok(out)
    }

    /// Rooms whose ban list was already read before their first ban or unban
    /// (`--snapshot`); a read refused (list unknown) counts too, as for rooms.
    pub fn snapshotted_ban_rooms(&self) -> Result<HashSet<String>, JournalError> {
        let err = |e| JournalError::sqlite(&self.path, "read the ban snapshots", e);
        if !self.has_ban_snapshots().map_err(err)? {
            return Ok(HashSet::new());
        }
        let mut st = self
            .conn
            .prepare("SELECT room FROM ban_snapshots")
            .map_err(err)?;
        st.query_map([], |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect())
            .map_err(err)
    }

    /// Every ban-list snapshot, by room: `prior` is `{"banned": [client ids]}`, or `None`
    /// when the list could not be read.
    pub fn ban_snapshots(&self) -> Result<HashMap<String, Snapshot>, JournalError> {
        let has = self
            .has_ban_snapshots()
            .map_err(|e| JournalError::sqlite(&self.path, "read the ban snapshots", e))?;
        if !has {
            return Ok(HashMap::new());
        }
        self.read_snapshots("ban_snapshots", "read the ban snapshots", "ban snapshot")
    }

    /// Whether the journal has the `ban_snapshots` table: one written by a build from before
    /// ban snapshots has none until a run opens it.
    fn has_ban_snapshots(&self) -> rusqlite::Result<bool> {
        self.conn.query_row(
            "SELECT count(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name = 'ban_snapshots'",
            [],
            |r| r.get(0),
        )
    }

    /// What the journal records about the job (for `plan` and `status`).
    pub fn meta(&self) -> Result<JobMeta, JournalError> {
        let j = self.job()?;
        Ok(JobMeta {
            manifest_path: PathBuf::from(j.manifest_path),
            checksum: j.checksum,
            name: j.name,
            target: resume::recorded_target(&j.settings),
            settings: j.settings,
        })
    }

    /// The job record.
    pub fn job(&self) -> Result<JobInfo, JournalError> {
        let err = |e| JournalError::sqlite(&self.path, "read the job record", e);
        let version: i32 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(err)?;
        let (j, settings) = self
            .conn
            .query_row(
                "SELECT manifest_path, checksum, name, settings, tool_version, total_ops, \
                 created_at, started_at, ended_at FROM job WHERE id = 1",
                [],
                |r| {
                    Ok((
                        JobInfo {
                            manifest_path: r.get(0)?,
                            checksum: r.get(1)?,
                            name: r.get(2)?,
                            settings: serde_json::Value::Null,
                            tool_version: r.get(4)?,
                            total_ops: r.get::<_, i64>(5)? as u64,
                            created_at: r.get(6)?,
                            started_at: r.get(7)?,
                            ended_at: r.get(8)?,
                            schema_version: version,
                        },
                        r.get::<_, String>(3)?,
                    ))
                },
            )
            .map_err(err)?;
        let settings = serde_json::from_str(&settings)
            .map_err(|e| self.corrupt(format!("job settings: {e}")))?;
        Ok(JobInfo { settings, ..j })
    }

    /// Every run, oldest first.
    pub fn runs(&self) -> Result<Vec<RunInfo>, JournalError> {
        let err = |e| JournalError::sqlite(&self.path, "read the runs", e);
        let mut st = self
            .conn
            .prepare(
                "SELECT id, pid, tool_version, settings, retry_failed, started_at, \
                 last_commit_at, ended_at, exit_code, exit, ops_finalized, outcomes \
                 FROM runs ORDER BY id",
            )
            .map_err(err)?;
        let rows: Vec<(RunInfo, String)> = st
            .query_map([], |r| {
                Ok((
                    RunInfo {
                        id: r.get(0)?,
                        pid: r.get::<_, i64>(1)? as u32,
                        tool_version: r.get(2)?,
                        settings: serde_json::Value::Null,
                        retry_failed: r.get::<_, i64>(4)? != 0,
                        started_at: r.get(5)?,
                        last_commit_at: r.get(6)?,
                        ended_at: r.get(7)?,
                        exit_code: r.get::<_, Option<i64>>(8)?.map(|c| c as u8),
                        exit: r.get(9)?,
                        ops_finalized: r.get::<_, i64>(10)? as u64,
                        outcomes: r.get::<_, i64>(11)? as u64,
                    },
                    r.get::<_, String>(3)?,
                ))
            })
            .and_then(|rows| rows.collect())
            .map_err(err)?;
        rows.into_iter()
            .map(|(run, s)| {
                let settings = serde_json::from_str(&s)
                    .map_err(|e| self.corrupt(format!("settings of run {}: {e}", run.id)))?;
                Ok(RunInfo { settings, ..run })
            })
            .collect()
    }

    /// The pace each run recorded (JSON, see the runner's `PaceReport`) by run id; none for
    /// a journal whose runs never recorded one.
    pub fn run_paces(
        &self,
    ) -> Result<std::collections::HashMap<i64, serde_json::Value>, JournalError> {
        let err = |e| JournalError::sqlite(&self.path, "read the runs' paces", e);
        let exists: i64 = self
            .conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'run_pace'",
                [],
                |r| r.get(0),
            )
            .map_err(err)?;
        if exists == 0 {
            return Ok(Default::default());
        }
        let mut st = self
            .conn
            .prepare("SELECT run_id, pace FROM run_pace")
            .map_err(err)?;
        let rows: Vec<(i64, String)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|rows| rows.collect())
            .map_err(err)?;
        rows.into_iter()
            .map(|(id, text)| {
                let pace = serde_json::from_str(&text)
                    .map_err(|e| self.corrupt(format!("pace of run {id}: {e}")))?;
                Ok((id, pace))
            })
            .collect()
    }

    /// The exit status of the last run that ended, if any.
    pub fn last_exit(&self) -> Result<Option<crate::Exit>, JournalError> {
        let code: Option<Option<i64>> = self
            .conn
            .query_row(
                "SELECT exit_code FROM runs WHERE exit_code IS NOT NULL ORDER BY id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| JournalError::sqlite(&self.path, "read the runs", e))?;
        Ok(code.flatten().and_then(|c| {
            [
                crate::Exit::Success,
                crate::Exit::OpsFailed,
                crate::Exit::Invalid,
                crate::Exit::Aborted,
                crate::Exit::Stopped,
            ]
            .into_iter()
            .find(|e| i64::from(e.code()) == c)
        }))
    }

    /// The outcome a finished job is re-run with: `None` while ops are pending, else
    /// success (0) or, when some ops failed permanently, ops failed (1).
    pub fn recorded_outcome(&self) -> Result<Option<crate::Exit>, JournalError> {
        let c = self.counts()?;
        Ok((c.pending == 0).then_some(if c.failed > 0 {
            crate::Exit::OpsFailed
        } else {
            crate::Exit::Success
        }))
    }

    /// Total attempts over all ops, and retries (attempts beyond each op's first).
    pub(crate) fn attempt_totals(&self) -> Result<(u64, u64), JournalError> {
        self.conn
            .query_row(
                "SELECT COALESCE(SUM(attempts), 0), \
                 COALESCE(SUM(CASE WHEN attempts > 1 THEN attempts - 1 ELSE 0 END), 0) FROM ops",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )
            .map_err(|e| JournalError::sqlite(&self.path, "count the attempts", e))
    }

    /// Failed ops grouped by error code, most frequent first.
    /// The ops of each action the job holds, per state, in [`Action::ALL`] order (actions
    /// with no op left out). A done op with an error code was answered "already in state".
    pub fn counts_by_action(&self) -> Result<Vec<ActionCounts>, JournalError> {
        let err = |e| JournalError::sqlite(&self.path, "count the ops per action", e);
        let mut st = self
            .conn
            .prepare(
                "SELECT action, state, count(*), \
                 sum(state = 'done' AND error_code IS NOT NULL) \
                 FROM ops GROUP BY action, state",
            )
            .map_err(err)?;
        let mut rows = st.query([]).map_err(err)?;
        let mut out: Vec<ActionCounts> = Vec::new();
        while let Some(r) = rows.next().map_err(err)? {
            let action: String = r.get(0).map_err(err)?;
            let state: String = r.get(1).map_err(err)?;
            let n = r.get::<_, i64>(2).map_err(err)? as u64;
            let already = r.get::<_, Option<i64>>(3).map_err(err)?.unwrap_or(0) as u64;
            let action = Action::parse(&action)
                .ok_or_else(|| self.corrupt(format!("unknown action {action:?}")))?;
            let i = match out.iter().position(|c| c.action == action) {
                Some(i) => i,
                None => {
                    out.push(ActionCounts {
                        action,
                        counts: Counts::default(),
                        already: 0,
                    });
                    out.len() - 1
                }
            };
            let c = &mut out[i];
            c.already += already;
            match OpState::parse(&state) {
                Some(OpState::Pending) => c.counts.pending += n,
                Some(OpState::Done) => c.counts.done += n,
                Some(OpState::Failed) => c.counts.failed += n,
                Some(OpState::Skipped) => c.counts.skipped += n,
                None => return Err(self.corrupt(format!("unknown op state {state:?}"))),
            }
        }
        out.sort_by_key(|c| c.action.index());
        Ok(out)
    }

    pub(crate) fn failures_by_code(&self) -> Result<Vec<FailureGroup>, JournalError> {
        let err = |e| JournalError::sqlite(&self.path, "group the failures", e);
        let mut st = self
            .conn
            .prepare(
                "SELECT error_code, count(*), group_concat(DISTINCT http_status), max(message) \
                 FROM ops WHERE state = 'failed' GROUP BY error_code \
                 ORDER BY count(*) DESC, error_code",
            )
            .map_err(err)?;
        st.query_map([], |r| {
            let statuses: Option<String> = r.get(2)?;
            let mut http_statuses: Vec<u16> = statuses
                .unwrap_or_default()
                .split(',')
                .filter_map(|s| s.trim().parse().ok())
                .collect();
            http_statuses.sort_unstable();
            Ok(FailureGroup {
                error_code: r.get(0)?,
                count: r.get::<_, i64>(1)? as u64,
                http_statuses,
                example_message: r.get(3)?,
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(err)
    }

    /// The manifest files ops came from (`sources[0]` is the manifest).
    fn sources(&self) -> Result<Vec<String>, JournalError> {
        let mut st = self
            .conn
            .prepare("SELECT path FROM sources ORDER BY idx")
            .map_err(|e| JournalError::sqlite(&self.path, "read the sources", e))?;
        st.query_map([], |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| JournalError::sqlite(&self.path, "read the sources", e))
    }

    /// Calls `f` with every op (or only those in `state`), in manifest order, streaming.
    pub fn for_each_op<E: From<JournalError>>(
        &self,
        state: Option<OpState>,
        mut f: impl FnMut(OpRow) -> Result<(), E>,
    ) -> Result<(), E> {
        let sources = self.sources()?;
        let err = |e| JournalError::sqlite(&self.path, "read the ops", e);
        let mut st = self
            .conn
            .prepare(
                "SELECT seq, source_file, line, action, room, client, fields, state, attempts, \
                 http_status, rc, error_code, message, latency_ms, first_attempt_at, \
                 last_attempt_at FROM ops WHERE ?1 IS NULL OR state = ?1 ORDER BY seq",
            )
            .map_err(err)?;
        let mut rows = st.query([state.map(OpState::as_str)]).map_err(err)?;
        while let Some(r) = rows.next().map_err(err)? {
            let row = (|| -> Result<OpRow, JournalError> {
                let seq: i64 = r.get(0).map_err(err)?;
                let file_idx: i64 = r.get(1).map_err(err)?;
                let action: String = r.get(3).map_err(err)?;
                let op = parse_op(
                    &action,
                    r.get(4).map_err(err)?,
                    r.get(5).map_err(err)?,
                    r.get(6).map_err(err)?,
                )
                .map_err(|e| self.corrupt(format!("op {seq}: {e}")))?;
                let state: String = r.get(7).map_err(err)?;
                let state = OpState::parse(&state)
                    .ok_or_else(|| self.corrupt(format!("op {seq}: unknown state {state:?}")))?;
                Ok(OpRow {
                    seq: seq as u64,
                    file: usize::try_from(file_idx)
                        .ok()
                        .and_then(|i| sources.get(i).cloned())
                        .unwrap_or_default(),
                    line: r.get::<_, i64>(2).map_err(err)? as u32,
                    op,
                    state,
                    attempts: r.get::<_, i64>(8).map_err(err)? as u32,
                    http_status: opt_u16(r.get(9).map_err(err)?),
                    rc: r.get(10).map_err(err)?,
                    error_code: r.get(11).map_err(err)?,
                    message: r.get(12).map_err(err)?,
                    latency_ms: r.get::<_, Option<i64>>(13).map_err(err)?.map(|v| v as u64),
                    first_attempt_at: r.get(14).map_err(err)?,
                    last_attempt_at: r.get(15).map_err(err)?,
                })
            })()?;
            f(row)?;
        }
        Ok(())
    }

    /// Starts the single writer (a background thread that commits in groups) for this run.
    /// Records the start of this run (pid, settings, tool version) first.
    pub fn start_writer(self) -> Result<JournalWriter, JournalError> {
        let Journal {
            path,
            conn,
            lock,
            run_settings,
            retry_failed,
            ..
        } = self;
        let Some(lock) = lock else {
            return Err(JournalError::Other(format!(
                "journal {} was opened read-only; only `run` may write to it",
                path.display()
            )));
        };
        let run_id = writer::record_run_start(&conn, &path, &run_settings, retry_failed)?;
        writer::spawn(path, conn, lock, run_id)
    }
}

pub(super) fn parse_op(
    action: &str,
    room: String,
    client: Option<String>,
    fields: Option<String>,
) -> Result<Op, String> {
    let action = Action::parse(action).ok_or_else(|| format!("unknown action {action:?}"))?;
    let fields = match fields {
        Some(f) => Some(Box::new(
            serde_json::from_str::<RoomFields>(&f).map_err(|e| format!("bad fields: {e}"))?,
        )),
        None => None,
    };
    Ok(Op {
        action,
        room: room.into(),
        client: client.map(Into::into),
        fields,
    })
}

/// The settings JSON of `meta`, with its target as `base_url` when it does not say one.
fn settings_json(meta: &JobMeta) -> Result<String, JournalError> {
    let mut settings = meta.settings.clone();
    if let (Some(target), Some(s)) = (&meta.target, settings.as_object_mut()) {
        s.entry("base_url")
            .or_insert_with(|| serde_json::Value::String(target.clone()));
    }
    serde_json::to_string(&settings)
        .map_err(|e| JournalError::Other(format!("cannot encode the settings: {e}")))
}

fn opt_u16(v: Option<i64>) -> Option<u16> {
    v.and_then(|v| u16::try_from(v).ok())
}
