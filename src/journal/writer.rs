//! The single journal writer of a run: one dedicated thread owns the read-write connection
//! and commits outcomes in groups. It takes everything queued, applies it in one
//! transaction and commits (one fsync) as soon as the queue is empty, or after ~1000
//! messages / ~50 ms under a flood, so journaling never limits throughput. Snapshots,
//! flushes and the final record are acknowledged only after their commit.
//!
//! Crash safety: every group is one SQLite transaction, so after `kill -9` at any moment the
//! journal holds exactly the committed groups; an op recorded done was done. A write error
//! stops the writer: every later call returns [`JournalError::WriterStopped`] with the cause,
//! so the runner stops instead of sending ops whose outcomes cannot be recorded.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{CachedStatement, Connection, Transaction, params};
use tokio::sync::{Notify, oneshot};

use super::series::{self, GroupSeries};
use super::types::now_ms;
use super::undo::{self, UndoPlanRecord};
use super::{JournalError, OpRecord, OpState};
use crate::Exit;

/// The most messages applied in one transaction.
const MAX_GROUP: usize = 1000;
/// The longest time spent gathering one group.
const MAX_GROUP_TIME: Duration = Duration::from_millis(50);
/// Longest message kept (bytes); longer ones (say, a proxy's HTML page) are cut.
const MAX_MESSAGE: usize = 2000;

type Ack = oneshot::Sender<Result<(), String>>;

enum Msg {
    Record(OpRecord, i64),
    /// An outcome of an undo op (see [`JournalWriter::for_undo`]).
    UndoRecord(OpRecord, i64),
    /// The undo phase's plan, recorded whole.
    UndoPlan(Box<UndoPlanRecord>, i64, Ack),
    Snapshot {
        /// A room's ban list (`ban_snapshots`), not the room itself (`snapshots`).
        bans: bool,
        room: String,
        prior: Option<String>,
        at: i64,
        ack: Ack,
    },
    Flush(Ack),
    /// The run's pace per credential (JSON), kept in `run_pace`.
    Pace(String, Ack),
    Finish(Exit, Ack),
}

struct Shared {
    path: PathBuf,
    tx: Sender<Msg>,
    /// Why the writer stopped, once it has.
    stopped: Arc<Mutex<Option<String>>>,
    /// Outcomes queued so far (see [`Durability`]).
    queued: AtomicU64,
    durability: Arc<Durability>,
}

/// How far the writer has got: the outcomes committed so far, and a wake-up for the one
/// task that waits for them (the scheduler), sent after every commit and when the writer
/// stops. `notify_one` keeps a permit when nobody waits yet, so no commit is missed.
#[derive(Default)]
struct Durability {
    committed: AtomicU64,
    notify: Notify,
}

/// The handle through which the runner records outcomes. Cheap to clone.
#[derive(Clone)]
pub struct JournalWriter {
    inner: Arc<Shared>,
    /// Outcomes recorded through this handle are those of undo ops (`for_undo`).
    undo: bool,
}

/// Records the start of a run (pid, settings, tool version) in the journal `conn` holds,
/// and the job's start if this is its first run; returns the run's id.
pub(super) fn record_run_start(
    conn: &Connection,
    path: &Path,
    settings: &str,
    retry_failed: bool,
) -> Result<i64, JournalError> {
    let err = |e| JournalError::sqlite(path, "record the start of the run", e);
    series::create(conn).map_err(err)?;
    // A journal written before ban snapshots existed gets their (empty) table.
    conn.execute_batch(super::schema::BAN_SNAPSHOTS)
        .map_err(err)?;
    let now = now_ms();
    conn.execute(
        "INSERT INTO runs (pid, tool_version, settings, retry_failed, started_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            std::process::id(),
            env!("CARGO_PKG_VERSION"),
            settings,
            retry_failed,
            now
        ],
    )
    .map_err(err)?;
    let run_id = conn.last_insert_rowid();
    conn.execute(
        "UPDATE job SET started_at = COALESCE(started_at, ?1) WHERE id = 1",
        [now],
    )
    .map_err(err)?;
    Ok(run_id)
}

/// Starts the writer thread of run `run_id`, which owns `conn` and the run `lock` from now on.
pub(super) fn spawn(
    path: PathBuf,
    conn: Connection,
    lock: File,
    run_id: i64,
) -> Result<JournalWriter, JournalError> {
    let (tx, rx) = mpsc::channel();
    let stopped = Arc::new(Mutex::new(None));
    let durability = Arc::new(Durability::default());
    let mut thread = Thread {
        path: path.clone(),
        conn: Some(conn),
        lock: Some(lock),
        run_id,
        stopped: stopped.clone(),
        durability: durability.clone(),
    };
    std::thread::Builder::new()
        .name("journal-writer".into())
        .spawn(move || thread.run(rx))
        .map_err(|e| JournalError::io(&path, "start the writer thread", e))?;
    Ok(JournalWriter {
        inner: Arc::new(Shared {
            path,
            tx,
            stopped,
            queued: AtomicU64::new(0),
            durability,
        }),
        undo: false,
    })
}

impl JournalWriter {
    fn stopped_error(&self) -> JournalError {
        let reason = self
            .inner
            .stopped
            .lock()
            .ok()
            .and_then(|s| s.clone())
            .unwrap_or_else(|| "this run's journal was already finished".into());
        JournalError::WriterStopped {
            path: self.inner.path.clone(),
            reason,
        }
    }

    fn is_stopped(&self) -> bool {
        self.inner
            .stopped
            .lock()
            .map(|s| s.is_some())
            .unwrap_or(true)
    }

    fn send(&self, msg: Msg) -> Result<(), JournalError> {
        if self.is_stopped() {
            return Err(self.stopped_error());
        }
        self.inner.tx.send(msg).map_err(|_| self.stopped_error())
    }

    async fn acked(&self, make: impl FnOnce(Ack) -> Msg) -> Result<(), JournalError> {
        let (ack, done) = oneshot::channel();
        self.send(make(ack))?;
        match done.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(JournalError::WriterStopped {
                path: self.inner.path.clone(),
                reason,
            }),
            Err(_) => Err(self.stopped_error()),
        }
    }

    /// Queues an outcome; it is durable at the next group commit (see [`flush`](Self::flush)).
    /// A record whose `state` is `None` updates only the attempt fields; the op stays pending.
    pub fn record(&self, rec: OpRecord) -> Result<(), JournalError> {
        // Counted before it is sent, so the writer can never have committed more than this.
        self.inner.queued.fetch_add(1, Ordering::SeqCst);
        let msg = if self.undo {
            Msg::UndoRecord(rec, now_ms())
        } else {
            Msg::Record(rec, now_ms())
        };
        let sent = self.send(msg);
        if sent.is_err() {
            self.inner.queued.fetch_sub(1, Ordering::SeqCst);
        }
        sent
    }

    /// How many outcomes passed to [`record`](Self::record) are not committed yet; an error
    /// once the writer has stopped (nothing more can be recorded).
    pub(crate) fn not_durable(&self) -> Result<u64, JournalError> {
        if self.is_stopped() {
            return Err(self.stopped_error());
        }
        let committed = self.inner.durability.committed.load(Ordering::SeqCst);
        Ok(self
            .inner
            .queued
            .load(Ordering::SeqCst)
            .saturating_sub(committed))
    }

    /// Resolves after the next group commit (or at once if one happened since the last
    /// call), or when the writer stops: then [`not_durable`](Self::not_durable) has news.
    /// Meant for one waiter at a time.
    pub(crate) async fn durable_progress(&self) {
        self.inner.durability.notify.notified().await;
    }

    /// Records the prior state of `room` read before its first change (`None` when the read
    /// returned nothing usable); resolves once it is durable, so the change may go out.
    /// `prior` is the room object (`result` of `GET /rooms/{id}`; the whole response body is
    /// accepted too). Only the first snapshot of a room is kept.
    pub async fn record_snapshot(
        &self,
        room: &str,
        prior: Option<serde_json::Value>,
    ) -> Result<(), JournalError> {
        let prior = prior.map(|v| slim_snapshot(v).to_string());
        let at = now_ms();
        let room = room.to_owned();
        self.acked(|ack| Msg::Snapshot {
            bans: false,
            room,
            prior,
            at,
            ack,
        })
        .await
    }

    /// Records the ban list of `room` read before its first ban or unban (`None` when the
    /// read was refused or gave nothing usable: the list is unknown); resolves once it is
    /// durable. `prior` is the `result` of `GET /blockStatus/room/{room}` (the whole body is
    /// accepted too); only the banned clients' ids are kept. Only the first of a room is kept.
    pub async fn record_ban_snapshot(
        &self,
        room: &str,
        prior: Option<serde_json::Value>,
    ) -> Result<(), JournalError> {
        let prior = prior.and_then(slim_ban_list).map(|v| v.to_string());
        let at = now_ms();
        let room = room.to_owned();
        self.acked(|ack| Msg::Snapshot {
            bans: true,
            room,
            prior,
            at,
            ack,
        })
        .await
    }

    /// A handle on the same writer whose [`record`](Self::record) records outcomes of the
    /// undo phase's ops (planned by [`record_undo_plan`](Self::record_undo_plan)).
    pub(crate) fn for_undo(&self) -> JournalWriter {
        JournalWriter {
            inner: Arc::clone(&self.inner),
            undo: true,
        }
    }

    /// Records the undo phase's plan (its ops, those listed apart) in one transaction;
    /// resolves once it is durable. A plan already recorded is kept.
    pub(crate) async fn record_undo_plan(&self, plan: UndoPlanRecord) -> Result<(), JournalError> {
        let at = now_ms();
        self.acked(|ack| Msg::UndoPlan(Box::new(plan), at, ack))
            .await
    }

    /// Records the pace the run settled on per credential (`pace` is JSON), once committed.
    pub async fn record_pace(&self, pace: String) -> Result<(), JournalError> {
        self.acked(|ack| Msg::Pace(pace, ack)).await
    }

    /// Resolves once everything queued so far is durable.
    pub async fn flush(&self) -> Result<(), JournalError> {
        self.acked(Msg::Flush).await
    }

    /// Records the end of this run and its exit status, commits and closes (releasing the
    /// lock).
    pub async fn finish(self, exit: Exit) -> Result<(), JournalError> {
        self.acked(|ack| Msg::Finish(exit, ack)).await
    }
}

struct Thread {
    path: PathBuf,
    conn: Option<Connection>,
    lock: Option<File>,
    run_id: i64,
    stopped: Arc<Mutex<Option<String>>>,
    durability: Arc<Durability>,
}

impl Thread {
    fn run(&mut self, rx: Receiver<Msg>) {
        loop {
            let Ok(first) = rx.recv() else {
                // Every handle was dropped without `finish` (the run ended abnormally):
                // what was committed stays, the run simply has no end recorded.
                break;
            };
            let mut group = vec![first];
            let started = Instant::now();
            let mut finishing = matches!(group[0], Msg::Finish(..));
            while !finishing && group.len() < MAX_GROUP && started.elapsed() < MAX_GROUP_TIME {
                match rx.try_recv() {
                    Ok(m) => {
                        finishing = matches!(m, Msg::Finish(..));
                        group.push(m);
                    }
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            let result = self.commit(&group);
            let failed = result.is_err();
            if let Err(e) = &result {
                tracing::error!(journal = %self.path.display(), error = %e, "journal write failed; the run must stop");
                if let Ok(mut s) = self.stopped.lock() {
                    *s = Some(e.clone());
                }
            }
            if finishing && !failed {
                // Close the connection (checkpoint) and release the lock before answering,
                // so a `run` started right after `finish` finds the journal free.
                if let Some(conn) = self.conn.take()
                    && let Err((_, e)) = conn.close()
                {
                    tracing::warn!(journal = %self.path.display(), error = %e, "closing the journal");
                }
                self.lock.take();
                if let Ok(mut s) = self.stopped.lock() {
                    *s = Some("this run's journal was already finished".into());
                }
            }
            if !failed {
                let records = group
                    .iter()
                    .filter(|m| matches!(m, Msg::Record(..) | Msg::UndoRecord(..)))
                    .count();
                self.durability
                    .committed
                    .fetch_add(records as u64, Ordering::SeqCst);
            }
            self.durability.notify.notify_one();
            for m in group {
                let ack = match m {
                    Msg::Record(..) | Msg::UndoRecord(..) => continue,
                    Msg::Snapshot { ack, .. }
                    | Msg::Flush(ack)
                    | Msg::Pace(_, ack)
                    | Msg::Finish(_, ack)
                    | Msg::UndoPlan(_, _, ack) => ack,
                };
                let _ = ack.send(result.clone());
            }
            if failed || finishing {
                break;
            }
        }
        // Anything still queued is answered by the dropped receiver.
    }

    /// Applies `group` in one transaction and commits it (one fsync).
    fn commit(&mut self, group: &[Msg]) -> Result<(), String> {
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| "the journal is closed".to_string())?;
        let tx = conn
            .transaction()
            .map_err(|e| format!("cannot start a transaction: {}", describe(&e)))?;
        let tally = apply(&tx, group)?;
        record_progress(&tx, self.run_id, &tally)?;
        tally.series.write(&tx, self.run_id)?;
        tx.commit()
            .map_err(|e| format!("cannot commit: {}", describe(&e)))
    }
}

/// What one group did, for the run's record.
#[derive(Default)]
struct Tally {
    /// Ops that reached a final state.
    finalized: i64,
    /// Outcomes recorded (final or not).
    outcomes: i64,
    /// The end of the run, when the group holds it.
    finish: Option<Exit>,
    /// The group's outcomes by second, for the time series.
    series: GroupSeries,
    /// The run's pace, when the group holds it.
    pace: Option<String>,
}

/// Applies the outcomes and snapshots of `group` in `tx`.
fn apply(tx: &Transaction, group: &[Msg]) -> Result<Tally, String> {
    let mut st = Statements::prepare(tx).map_err(|e| e.to_string())?;
    let mut tally = Tally::default();
    for m in group {
        match m {
            Msg::Record(r, at) => {
                if r.state.is_some_and(OpState::is_final) {
                    tally.finalized += 1;
                }
                st.record(r, *at)?;
                tally.series.add(r, *at);
                tally.outcomes += 1;
            }
            Msg::Snapshot {
                bans,
                room,
                prior,
                at,
                ..
            } => {
                let statement = if *bans {
                    &mut st.ban_snapshot
                } else {
                    &mut st.snapshot
                };
                statement.execute(params![room, prior, at]).map_err(|e| {
                    format!("cannot record the snapshot of {room:?}: {}", describe(&e))
                })?;
            }
            Msg::UndoRecord(r, at) => {
                if r.state.is_some_and(OpState::is_final) {
                    tally.finalized += 1;
                }
                undo::record(tx, r, r.message.as_deref().map(clip), *at)?;
                tally.outcomes += 1;
            }
            Msg::UndoPlan(plan, at, _) => undo::insert_plan(tx, plan, *at)?,
            Msg::Flush(_) => {}
            Msg::Pace(json, _) => tally.pace = Some(json.clone()),
            Msg::Finish(exit, _) => tally.finish = Some(*exit),
        }
    }
    Ok(tally)
}

/// Records how far the run got (its last commit, its counts) and, when the group ends it,
/// the end of the run and of the job.
fn record_progress(tx: &Transaction, run_id: i64, tally: &Tally) -> Result<(), String> {
    let now = now_ms();
    tx.execute(
        "UPDATE runs SET last_commit_at = ?2, ops_finalized = ops_finalized + ?3, \
         outcomes = outcomes + ?4 WHERE id = ?1",
        params![run_id, now, tally.finalized, tally.outcomes],
    )
    .map_err(|e| format!("cannot record the run's progress: {}", describe(&e)))?;
    if let Some(pace) = &tally.pace {
        // A table of its own, made by the first run that records a pace: a journal written
        // before it existed reads the same (no schema version change).
        tx.execute_batch(super::schema::RUN_PACE)
            .and_then(|()| {
                tx.execute(
                    "INSERT OR REPLACE INTO run_pace (run_id, pace) VALUES (?1, ?2)",
                    params![run_id, pace],
                )
            })
            .map_err(|e| format!("cannot record the run's pace: {}", describe(&e)))?;
    }
    if let Some(exit) = tally.finish {
        tx.execute(
            "UPDATE runs SET ended_at = ?2, exit_code = ?3, exit = ?4 WHERE id = ?1",
            params![run_id, now, exit.code(), exit_name(exit)],
        )
        .map_err(|e| format!("cannot record the end of the run: {}", describe(&e)))?;
        tx.execute(
            "UPDATE job SET ended_at = CASE \
             WHEN EXISTS (SELECT 1 FROM ops WHERE state = 'pending') THEN NULL ELSE ?1 END \
             WHERE id = 1",
            [now],
        )
        .map_err(|e| format!("cannot record the end of the job: {}", describe(&e)))?;
        undo::record_end(tx, now)?;
    }
    Ok(())
}

/// A write error as the run's message gives it: a full disk says what to do.
fn describe(e: &rusqlite::Error) -> String {
    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
        "the disk holding the journal is full (free space there before running again; every \
         outcome committed so far is kept)"
            .into()
    } else {
        e.to_string()
    }
}

/// The statements a group is applied with, prepared once per connection (cached).
struct Statements<'c> {
    /// An outcome with a state: the op's state and last answer.
    outcome: CachedStatement<'c>,
    /// An outcome without a state: the last answer of an op that stays pending.
    attempt: CachedStatement<'c>,
    snapshot: CachedStatement<'c>,
    ban_snapshot: CachedStatement<'c>,
}

impl<'c> Statements<'c> {
    fn prepare(tx: &'c Transaction) -> rusqlite::Result<Statements<'c>> {
        Ok(Statements {
            outcome: tx.prepare_cached(
                "UPDATE ops SET state = ?2, attempts = ?3, http_status = ?4, rc = ?5, \
                 error_code = ?6, message = ?7, latency_ms = ?8, \
                 first_attempt_at = CASE WHEN ?3 > 0 THEN COALESCE(first_attempt_at, ?9) \
                                    ELSE first_attempt_at END, \
                 last_attempt_at = CASE WHEN ?3 > 0 THEN ?9 ELSE last_attempt_at END \
                 WHERE seq = ?1",
            )?,
            attempt: tx.prepare_cached(
                "UPDATE ops SET attempts = ?2, http_status = ?3, rc = ?4, error_code = ?5, \
                 message = ?6, latency_ms = ?7, \
                 first_attempt_at = COALESCE(first_attempt_at, ?8), last_attempt_at = ?8 \
                 WHERE seq = ?1 AND state = 'pending'",
            )?,
            snapshot: tx.prepare_cached(
                "INSERT INTO snapshots (room, prior, taken_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (room) DO NOTHING",
            )?,
            ban_snapshot: tx.prepare_cached(
                "INSERT INTO ban_snapshots (room, prior, taken_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (room) DO NOTHING",
            )?,
        })
    }

    /// Records outcome `r`, queued at `at`.
    fn record(&mut self, r: &OpRecord, at: i64) -> Result<(), String> {
        let message = r.message.as_deref().map(clip);
        let seq = i64::try_from(r.seq).unwrap_or(i64::MAX);
        let latency = r.latency_ms.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
        let n = match r.state {
            Some(state) => self.outcome.execute(params![
                seq,
                state.as_str(),
                r.attempts,
                r.http_status,
                r.rc,
                r.error_code,
                message,
                latency,
                at
            ]),
            None => self.attempt.execute(params![
                seq,
                r.attempts,
                r.http_status,
                r.rc,
                r.error_code,
                message,
                latency,
                at
            ]),
        }
        .map_err(|e| format!("cannot record op {}: {}", r.seq, describe(&e)))?;
        if n == 0 && r.state.is_some() {
            tracing::warn!(seq = r.seq, "outcome for an op the journal does not hold");
        }
        Ok(())
    }
}

/// What a snapshot keeps of a room read: the room object (unwrapped from a response
/// envelope) reduced to `_id` and the fields an update can set, which is all `revert` needs.
/// Member lists and last messages can be large and are personal data: they are not kept.
fn slim_snapshot(v: serde_json::Value) -> serde_json::Value {
    let serde_json::Value::Object(mut obj) = v else {
        return v;
    };
    if (obj.contains_key("RC") || obj.contains_key("RM"))
        && let Some(serde_json::Value::Object(inner)) = obj.remove("result")
    {
        obj = inner;
    }
    obj.retain(|k, _| k == "_id" || crate::op::RoomFields::NAMES.contains(&k.as_str()));
    serde_json::Value::Object(obj)
}

/// What a ban snapshot keeps of a room's ban list: `{"banned": [ids]}`, the banned clients'
/// ids in the list's order (from each record's `blockee`, a user object or an id), which is
/// all `revert` needs; names and avatars are personal data and are not kept. `None` when
/// the answer is not a ban list (`result.data`, or `data`, an array of records with ids).
fn slim_ban_list(v: serde_json::Value) -> Option<serde_json::Value> {
    use serde_json::Value;
    let data = match &v {
        Value::Object(o) => match o.get("result") {
            Some(Value::Object(r)) => r.get("data"),
            _ => o.get("data"),
        },
        _ => None,
    };
    let id = |b: &Value| match b {
        Value::String(s) => Some(Value::String(s.clone())),
        Value::Object(u) => u
            .get("id")
            .or_else(|| u.get("_id"))
            .and_then(Value::as_str)
            .map(|s| Value::String(s.to_owned())),
        _ => None,
    };
    let banned = data?
        .as_array()?
        .iter()
        .map(|rec| rec.get("blockee").and_then(id))
        .collect::<Option<Vec<Value>>>()?;
    Some(serde_json::json!({ "banned": banned }))
}

/// The stable name of an exit status, as stored and shown by `status`.
fn exit_name(exit: Exit) -> &'static str {
    match exit {
        Exit::Success => "success",
        Exit::OpsFailed => "ops_failed",
        Exit::Invalid => "invalid",
        Exit::Aborted => "aborted",
        Exit::Stopped => "stopped",
    }
}

fn clip(s: &str) -> &str {
    if s.len() <= MAX_MESSAGE {
        return s;
    }
    let mut end = MAX_MESSAGE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn snapshots_keep_only_what_revert_needs() {
        let body = json!({"RC": 0, "RM": "OK", "result": {
            "_id": "r", "name": "N", "status": 0, "managers": ["m"],
            "members": [{"_id": "u"}], "lastMessage": {"message": "hi"}}});
        assert_eq!(
            slim_snapshot(body),
            json!({"_id": "r", "name": "N", "status": 0, "managers": ["m"]})
        );
        assert_eq!(
            slim_snapshot(json!({"_id": "r", "members": []})),
            json!({"_id": "r"})
        );
        assert_eq!(slim_snapshot(json!("odd")), json!("odd"));
    }

    #[test]
    fn ban_snapshots_keep_only_the_banned_ids() {
        let user = |id: &str| json!({"_id": id, "id": id, "nickname": "N", "avatarUrl": "a"});
        let rec = |id: &str| {
            json!({"blockee": user(id), "blocker": user("o"),
                                    "room": {"_id": "r"}, "createdAt": "t"})
        };
        let list = json!({"data": [rec("ccc"), rec("ddd")]});
        let want = json!({"banned": ["ccc", "ddd"]});
        assert_eq!(slim_ban_list(list.clone()), Some(want.clone()));
        let body = json!({"RC": 0, "RM": "OK", "result": list});
        assert_eq!(slim_ban_list(body), Some(want));
        assert_eq!(
            slim_ban_list(json!({"data": []})),
            Some(json!({"banned": []}))
        );
        // Not a ban list: unknown, not "nobody banned".
        assert_eq!(slim_ban_list(json!({"result": {}})), None);
        assert_eq!(slim_ban_list(json!({"data": [{"blocker": "o"}]})), None);
        assert_eq!(slim_ban_list(json!("odd")), None);
    }

    #[test]
    fn long_messages_are_clipped_on_a_char_boundary() {
        let s = "é".repeat(MAX_MESSAGE);
        let c = clip(&s);
        assert!(c.len() <= MAX_MESSAGE && c.len() >= MAX_MESSAGE - 1);
        assert_eq!(clip("short"), "short");
    }

    #[test]
    fn the_writer_handle_can_be_shared_across_tasks() {
        fn send_sync<T: Send + Sync + Clone>() {}
        fn send<T: Send>() {}
        send_sync::<JournalWriter>();
        send::<crate::journal::Journal>();
    }
}
