//! The inverse of what a job actually changed (docs/behaviour.md §5), computed from the done ops and the
//! snapshots taken before each room's first change. Never guesses:
//!
//! - Room status: the first snapshot's `status` is compared with the status the job set
//!   last (freeze, unfreeze, or an update's `status`); when they differ the room is put back
//!   (a room frozen before the job stays frozen; one the job froze is unfrozen).
//! - Updated fields: each field the job set gets its snapshot value back, unless equal.
//! - Mute pairs (no snapshot exists for them): a pair the job muted is unmuted, a pair it
//!   unmuted is muted again; an unmute answered `ROOM_NOT_MUTED` changed nothing. With
//!   several ops on one pair, the state before the first is compared with the last. The API
//!   cannot tell whether a pair was muted before a mute (the mute answer shows the client's
//!   mute list after the change, and a mute of a muted pair succeeds too), so a pair whose
//!   first op is a mute is taken as not muted before, as docs/behaviour.md §5 has it ("pairs it muted are
//!   unmuted"): those unmutes are counted ([`RevertPlan::unmutes_assumed`]) so the manifest
//!   and the command can say that a pair muted before the job would be unmuted too. The
//!   unmute side needs no such assumption: `ROOM_NOT_MUTED` proves the prior state.
//! - Unknown prior state (no snapshot, a read that gave nothing, a snapshot without the
//!   field, one taken after the job had already sent a change to the room, or one taken after
//!   a run without `--snapshot` was killed while ops on the room were pending: a change that
//!   run had in flight, applied but never recorded, may show in it) and prior values a CSV
//!   manifest cannot express are listed apart, field by field with the reason, never
//!   emitted; the fields of the same update that can be restored still are. Each op lists a
//!   reason once.
//! - Ops sent but not recorded done whose last answer does not rule out that they were
//!   applied (a dropped connection, a timeout, a 5xx, or any retried op: the journal keeps
//!   only the last answer) are listed apart too, as is an unmute whose `ROOM_NOT_MUTED`
//!   came on a retry (the lost first answer may have been the unmute).
//! - Ban pairs need no assumption (see `bans`): the answers tell the prior state, so a pair
//!   the job banned is unbanned and one it unbanned is banned again, while a ban answered
//!   `USER_ALREADY_BLOCKED` (another moderator's) or an unban answered `BLOCK_NOT_FOUND`
//!   changed nothing. When such an answer may have been to the job's own earlier, unrecorded
//!   attempt, the room's ban list read before its first ban change (`--snapshot`) decides;
//!   without a usable one, the pair is listed apart.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::{OpRow, OpState, RunInfo, Snapshot};
// A field value, in a form that can be compared and written back.
use crate::op::FieldValue as Val;
use crate::op::{Action, ActionKind, Field, FieldKind, Op, RoomFields, validate_id};

mod bans;

/// An op whose effect cannot be reverted from what the journal knows.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Unknown {
    pub seq: u64,
    pub file: String,
    pub line: u32,
    pub op: Op,
    pub reason: String,
}

/// What `revert` writes: the ops that undo the job, in manifest order of the targets, and
/// those listed apart.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct RevertPlan {
    pub ops: Vec<Op>,
    pub unknown: Vec<Unknown>,
    /// Unmutes in `ops` written on the assumption that the pair was not muted before the job
    /// (its first op was a mute, and the API cannot show the state before one).
    pub unmutes_assumed: usize,
}

/// The fields `f` gives other than `status` (a freeze or unfreeze restores it), in the order
/// their reasons are listed: texts and ids, then lists, then `true`/`false` and `0`/`1`
/// values, each in field order.
fn given_fields(f: &RoomFields) -> Vec<(&'static str, Val)> {
    let mut out: Vec<(&'static str, Val)> = Field::ALL
        .into_iter()
        .filter(|k| *k != Field::Status)
        .filter_map(|k| k.get(f).map(|v| (k.name(), v.to_owned_value())))
        .collect();
    out.sort_by_key(|(_, v)| match v {
        Val::Text(_) => 0,
        Val::List(_) => 1,
        Val::Bool(_) => 2,
        Val::Flag(_) => 3,
    });
    out
}

/// An id from a prior value: a string, or an object with a string `_id`.
fn id_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("_id").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

/// The prior value of `field` from a room object: `Err(reason)` when it is missing or not
/// of the expected type.
fn prior_val(room: &serde_json::Map<String, Value>, field: &str) -> Result<Val, String> {
    let v = room
        .get(field)
        .ok_or_else(|| format!("prior `{field}` unknown: the snapshot has no `{field}`"))?;
    let bad = || format!("prior `{field}` unusable: the snapshot has {v} for it");
    let Some(k) = Field::parse(field) else {
        return Err(bad());
    };
    let items = || v.as_array().ok_or_else(bad);
    match k.kind() {
        FieldKind::Text => v.as_str().map(|s| Val::Text(s.to_owned())).ok_or_else(bad),
        FieldKind::Id => id_of(v).map(Val::Text).ok_or_else(bad),
        FieldKind::TextList => items()?
            .iter()
            .map(|i| i.as_str().map(str::to_owned))
            .collect::<Option<Vec<String>>>()
            .map(Val::List)
            .ok_or_else(bad),
        FieldKind::IdList => items()?
            .iter()
            .map(id_of)
            .collect::<Option<Vec<String>>>()
            .map(Val::List)
            .ok_or_else(bad),
        FieldKind::Bool => v.as_bool().map(Val::Bool).ok_or_else(bad),
        FieldKind::ZeroOne => match v.as_u64() {
            Some(n @ (0 | 1)) => Ok(Val::Flag(n as u8)),
            _ => Err(bad()),
        },
    }
}

/// Sets `field` to the prior value `v` in `f`; `Err(reason)` when `v` is not a value the
/// field can be written back with.
fn set_field(f: &mut RoomFields, field: &str, v: Val) -> Result<(), String> {
    let unexpected = |v: Val| format!("prior `{field}` has an unexpected type ({v:?})");
    let Some(k) = Field::parse(field) else {
        return Err(unexpected(v));
    };
    match (k.kind(), &v) {
        (FieldKind::Id, Val::Text(s)) => {
            validate_id(s).map_err(|e| format!("prior `{field}` {s:?} is not a valid id: {e}"))?
        }
        (FieldKind::IdList, Val::List(l)) => {
            for m in l {
                validate_id(m)
                    .map_err(|e| format!("prior `{field}` item {m:?} is not a valid id: {e}"))?;
            }
        }
        _ => {}
    }
    k.set(f, v).map_err(unexpected)
}

/// The room object in a snapshot: the `result` of a response envelope, or the object itself.
fn room_object(prior: &Value) -> Option<&serde_json::Map<String, Value>> {
    let obj = prior.as_object()?;
    match obj.get("result") {
        Some(Value::Object(inner)) if obj.contains_key("RC") || obj.contains_key("RM") => {
            Some(inner)
        }
        _ => Some(obj),
    }
}

/// A room as a snapshot shows it: a JSON object of its fields.
type RoomObject = serde_json::Map<String, Value>;

/// The done ops of a job by target, with what judging a room's snapshot needs.
#[derive(Default)]
struct Targets {
    rooms: HashMap<String, RoomWork>,
    /// Mute pairs, by (client, room).
    pairs: HashMap<(String, String), PairWork>,
    /// Ban pairs, by (client, room).
    ban_pairs: HashMap<(String, String), PairWork>,
    /// Per room, its ban ops (any state): what dating the room's ban-list snapshot needs.
    ban_rooms: HashMap<String, RoomWork>,
}

impl Targets {
    fn add(&mut self, row: OpRow) {
        if row.op.action.needs_client() {
            let bans = row.op.action.kind() == ActionKind::Ban;
            if bans {
                let w = self
                    .ban_rooms
                    .entry(row.op.room.to_string())
                    .or_insert_with(|| RoomWork {
                        settled_at: i64::MIN,
                        ..Default::default()
                    });
                w.note_attempts(&row);
            }
            if row.state != OpState::Done {
                return;
            }
            let key = (
                row.op.client.as_deref().unwrap_or_default().to_owned(),
                row.op.room.to_string(),
            );
            let pairs = if bans {
                &mut self.ban_pairs
            } else {
                &mut self.pairs
            };
            let w = pairs.entry(key).or_insert_with(|| PairWork {
                first_seq: row.seq,
                done: Vec::with_capacity(1),
            });
            w.done.push(row);
        } else {
            self.rooms
                .entry(row.op.room.to_string())
                .or_insert_with(|| RoomWork {
                    first_seq: u64::MAX,
                    settled_at: i64::MIN,
                    // Most rooms of a big job have one op: a first push would reserve room
                    // for four rows (~900 bytes), most of a 200,000-room revert's memory.
                    done: Vec::with_capacity(1),
                    ..Default::default()
                })
                .add(row);
        }
    }
}

#[derive(Default)]
struct RoomWork {
    first_seq: u64,
    /// Done ops on the room, in order.
    done: Vec<OpRow>,
    /// Earliest recorded attempt of any op on the room (any state).
    first_attempt_at: Option<i64>,
    /// The latest time an op on the room became final (`i64::MAX` while one is pending, or
    /// final without a recorded time): before it, some op on the room was still to be sent.
    settled_at: i64,
}

impl RoomWork {
    /// Takes in an op on the room, in manifest order (any state).
    fn add(&mut self, row: OpRow) {
        self.note_attempts(&row);
        if row.state == OpState::Done {
            self.first_seq = self.first_seq.min(row.seq);
            self.done.push(row);
        }
    }
}

impl RoomWork {
    /// Takes in when `row` was attempted and whether it is settled (any state).
    fn note_attempts(&mut self, row: &OpRow) {
        let settled = match (row.state, row.last_attempt_at) {
            (OpState::Pending, _) | (_, None) => i64::MAX,
            (_, Some(t)) => t,
        };
        self.settled_at = self.settled_at.max(settled);
        if row.attempts > 0
            && let Some(t) = row.first_attempt_at
        {
            self.first_attempt_at = Some(self.first_attempt_at.map_or(t, |f| f.min(t)));
        }
    }
}

/// A run without `--snapshot` that may have left requests applied but unrecorded: one
/// killed (no end recorded), or one stopped with exit 4 (a second Ctrl-C/SIGTERM cancels the
/// requests in flight, and the journal does not say whether that happened). A run that
/// ended otherwise let its requests in flight finish and recorded them.
struct KilledRun {
    id: i64,
    started_at: i64,
    /// Its last commit (or its start): the journal's state when it died.
    ended_by: i64,
    how: &'static str,
}

fn killed_runs_without_snapshot(runs: &[RunInfo]) -> Vec<KilledRun> {
    killed_runs(
        runs.iter()
            .filter(|r| r.settings.get("snapshot").and_then(Value::as_bool) != Some(true)),
    )
}

/// The runs (with or without `--snapshot`) that may have left requests applied but
/// unrecorded, as [`killed_runs_without_snapshot`] tells them.
fn killed_runs<'a>(runs: impl Iterator<Item = &'a RunInfo>) -> Vec<KilledRun> {
    runs.filter_map(|r| {
        let how = match r.exit_code {
            None => "was killed",
            Some(c) if c == crate::Exit::Stopped.code() => {
                "was stopped (a second signal cancels the requests in flight unrecorded)"
            }
            Some(_) => return None,
        };
        Some(KilledRun {
            id: r.id,
            started_at: r.started_at,
            ended_by: r.last_commit_at.unwrap_or(r.started_at).max(r.started_at),
            how,
        })
    })
    .collect()
}

#[derive(Default)]
struct PairWork {
    first_seq: u64,
    done: Vec<OpRow>,
}

/// Computes the revert of a job from all its ops (any state; only done ops are reverted) in
/// manifest order, its snapshots (of rooms, and of rooms' ban lists) and its runs (oldest
/// first).
pub(crate) fn revert_plan(
    ops: impl IntoIterator<Item = OpRow>,
    snapshots: &HashMap<String, Snapshot>,
    ban_snapshots: &HashMap<String, Snapshot>,
    runs: &[RunInfo],
) -> RevertPlan {
    let killed = killed_runs_without_snapshot(runs);
    let mut plan = Planner::default();
    let mut targets = Targets::default();
    for row in ops {
        if let Some(reason) = maybe_applied(&row) {
            plan.note(&row, reason);
        }
        targets.add(row);
    }
    for (room, w) in &targets.rooms {
        if w.done.is_empty() {
            continue;
        }
        let prior = prior_room(snapshots.get(room), w, &killed);
        plan.revert_room(room, w, &prior);
    }
    for ((client, room), w) in &targets.pairs {
        plan.revert_pair(client, room, w);
    }
    let bans = bans::Context {
        snapshots: ban_snapshots,
        rooms: &targets.ban_rooms,
        killed_without_snapshot: &killed,
        interrupted: &killed_runs(runs.iter()),
    };
    for ((client, room), w) in &targets.ban_pairs {
        plan.revert_ban_pair(client, room, w, &bans);
    }
    plan.finish()
}

/// The room object whose values `w`'s room is put back to, from its first snapshot; or why
/// it is not known.
fn prior_room<'a>(
    snap: Option<&'a Snapshot>,
    w: &RoomWork,
    killed: &[KilledRun],
) -> Result<&'a RoomObject, String> {
    // A run without --snapshot killed while this room still had ops to send, before the
    // snapshot was taken: what it had in flight may have been applied, unrecorded.
    let killed_before = |taken_at: i64| {
        killed
            .iter()
            .find(|k| taken_at >= k.started_at && w.settled_at > k.ended_by)
    };
    match snap {
        None => Err("prior state unknown: no snapshot of the room (run with --snapshot)".into()),
        Some(Snapshot { prior: None, .. }) => {
            Err("prior state unknown: reading the room before the change gave nothing usable".into())
        }
        Some(Snapshot {
            prior: Some(p),
            taken_at,
        }) => match (room_object(p), w.first_attempt_at) {
            (_, Some(first)) if *taken_at > first => Err(
                "prior state unknown: the snapshot was taken after the job had already sent a change to the room".into(),
            ),
            _ if killed_before(*taken_at).is_some() => {
                let k = killed_before(*taken_at);
                Err(format!(
                    "prior state unknown: the snapshot was taken after run #{} (without --snapshot) {} while ops on the room were pending, so a change it had in flight may already show in it",
                    k.map_or(0, |k| k.id),
                    k.map_or("", |k| k.how)
                ))
            }
            (None, _) => Err("prior state unknown: the snapshot is not a room object".into()),
            (Some(o), _) => Ok(o),
        },
    }
}

/// The revert being built: ops per target, keyed by the target's first done op so that
/// they merge in manifest order, and the ops listed apart with their reasons.
#[derive(Default)]
struct Planner {
    out: BTreeMap<u64, Vec<Op>>,
    unknown: BTreeMap<u64, (OpRow, Vec<String>)>,
    unmutes_assumed: usize,
}

impl Planner {
    /// Lists `row` apart for `reason` (each reason once per op).
    fn note(&mut self, row: &OpRow, reason: String) {
        let reasons = &mut self
            .unknown
            .entry(row.seq)
            .or_insert_with(|| (row.clone(), Vec::new()))
            .1;
        if !reasons.contains(&reason) {
            reasons.push(reason);
        }
    }

    /// Puts `room` back to `prior`: its status, then the fields the job set.
    fn revert_room(&mut self, room: &str, w: &RoomWork, prior: &Result<&RoomObject, String>) {
        let status_op = self.status_revert(room, w, prior);
        let update = self.fields_revert(room, w, prior);
        // Unfreeze before restoring fields; freeze after.
        let mut ops = Vec::new();
        match status_op {
            Some(s) if s.action == Action::Unfreeze => {
                ops.push(s);
                ops.extend(update);
            }
            Some(s) => {
                ops.extend(update);
                ops.push(s);
            }
            None => ops.extend(update),
        }
        if !ops.is_empty() {
            self.out.entry(w.first_seq).or_default().extend(ops);
        }
    }

    /// Status: what the job set last vs. the first snapshot.
    fn status_revert(
        &mut self,
        room: &str,
        w: &RoomWork,
        prior: &Result<&RoomObject, String>,
    ) -> Option<Op> {
        let status_ops: Vec<(&OpRow, u8)> = w
            .done
            .iter()
            .filter_map(|r| match r.op.action {
                Action::Freeze => Some((r, 0)),
                Action::Unfreeze => Some((r, 1)),
                Action::Update => r.op.fields.as_ref().and_then(|f| f.status).map(|s| (r, s)),
                _ => None,
            })
            .collect();
        let (_, last) = status_ops.last()?;
        match prior.clone().and_then(|o| prior_val(o, "status")) {
            Ok(Val::Flag(prior)) if prior != *last => Some(if prior == 0 {
                Op::freeze(room)
            } else {
                Op::unfreeze(room)
            }),
            Ok(_) => None,
            Err(reason) => {
                for (r, _) in &status_ops {
                    self.note(r, reason.clone());
                }
                None
            }
        }
    }

    /// Other fields: each field the job set, its last value vs. the snapshot's.
    fn fields_revert(
        &mut self,
        room: &str,
        w: &RoomWork,
        prior: &Result<&RoomObject, String>,
    ) -> Option<Op> {
        let mut last_set: Vec<(&'static str, Val, Vec<&OpRow>)> = Vec::new();
        for r in &w.done {
            let Some(f) = r.op.fields.as_deref() else {
                continue;
            };
            for (name, v) in given_fields(f) {
                match last_set.iter_mut().find(|(n, ..)| *n == name) {
                    Some(entry) => {
                        entry.1 = v;
                        entry.2.push(r);
                    }
                    None => last_set.push((name, v, vec![r])),
                }
            }
        }
        let mut restore = RoomFields::default();
        for (name, last, rows) in &last_set {
            let prior = prior.clone().and_then(|o| prior_val(o, name));
            let outcome = prior.and_then(|p| {
                if &p == last {
                    return Ok(());
                }
                // A CSV manifest cannot write every value: check each field on its own, so
                // one that cannot be written back does not hold back the others.
                let mut one = RoomFields::default();
                set_field(&mut one, name, p.clone())?;
                super::csvout::row(&Op::update(room, one))
                    .map_err(|reason| format!("prior `{name}` cannot be written back: {reason}"))?;
                set_field(&mut restore, name, p)
            });
            if let Err(reason) = outcome {
                for r in rows {
                    self.note(r, reason.clone());
                }
            }
        }
        (!restore.is_empty()).then(|| Op::update(room, restore))
    }

    /// A mute pair: its state before the first op vs. after the last.
    fn revert_pair(&mut self, client: &str, room: &str, w: &PairWork) {
        let (Some(first), Some(last)) = (w.done.first(), w.done.last()) else {
            return;
        };
        let unchanged = |r: &OpRow| {
            r.op.action == Action::Unmute && r.error_code.as_deref() == Some("ROOM_NOT_MUTED")
        };
        // An unmute answered ROOM_NOT_MUTED on a retry: the attempt before may have been
        // the one that unmuted the pair (its answer lost), so the prior state is unknown.
        if unchanged(first) && first.attempts > 1 {
            self.note(
                first,
                format!(
                    "prior state unknown: ROOM_NOT_MUTED answered attempt {} of the unmute, \
                     and an earlier attempt may have unmuted the pair",
                    first.attempts
                ),
            );
            return;
        }
        // Muted before the job? A mute means it was not (docs/behaviour.md §5); an unmute that landed
        // means it was; an unmute answered ROOM_NOT_MUTED means it was not.
        let prior_muted = first.op.action == Action::Unmute && !unchanged(first);
        let final_muted = last.op.action == Action::Mute;
        if prior_muted != final_muted {
            let op = if prior_muted {
                Op::mute(client, room)
            } else {
                if first.op.action == Action::Mute {
                    self.unmutes_assumed += 1;
                }
                Op::unmute(client, room)
            };
            self.out.entry(w.first_seq).or_default().push(op);
        }
    }

    fn finish(self) -> RevertPlan {
        RevertPlan {
            unmutes_assumed: self.unmutes_assumed,
            ops: self.out.into_values().flatten().collect(),
            unknown: self
                .unknown
                .into_values()
                .map(|(row, reasons)| Unknown {
                    seq: row.seq,
                    file: row.file,
                    line: row.line,
                    op: row.op,
                    reason: reasons.join("; "),
                })
                .collect(),
        }
    }
}

/// Why an op not recorded done may still have changed its target: it was sent, and its
/// last answer does not rule that out. One attempt answered 4xx did not apply (the server
/// refused the request); anything else may have (a connection dropped after the server
/// applied the change, a timeout, a 5xx) and the journal keeps only the last answer of each
/// op, so earlier attempts of a retried op are unknown too.
fn maybe_applied(row: &OpRow) -> Option<String> {
    if row.state == OpState::Done || row.attempts == 0 {
        return None;
    }
    // The server answered and said no: a 4xx, or a 200 whose envelope carries an error RC.
    let refused = match row.http_status {
        Some(s) if (400..500).contains(&s) => true,
        Some(s) if (200..300).contains(&s) => row.rc.is_some_and(|rc| rc != 0),
        _ => false,
    };
    if row.attempts == 1 && refused {
        return None;
    }
    let last = match (row.http_status, row.error_code.as_deref()) {
        (Some(s), Some(c)) => format!("HTTP {s} {c}"),
        (Some(s), None) => format!("HTTP {s}"),
        (None, Some(c)) => c.to_string(),
        (None, None) => "no answer".to_string(),
    };
    Some(format!(
        "may have been applied: sent {} time(s), not recorded done (last: {last}); \
         check the target's state before reverting it",
        row.attempts
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::OpState;
    use serde_json::json;

    fn row(seq: u64, op: Op, state: OpState) -> OpRow {
        OpRow {
            seq,
            file: "job.csv".into(),
            line: seq as u32 + 2,
            op,
            state,
            attempts: u32::from(state != OpState::Pending),
            http_status: Some(200),
            rc: Some(0),
            error_code: None,
            message: None,
            latency_ms: Some(5),
            first_attempt_at: Some(1_000 + seq as i64),
            last_attempt_at: Some(1_000 + seq as i64),
        }
    }

    /// The fields an update restores, in the order their reasons are listed.
    #[test]
    fn given_fields_list_texts_then_lists_then_flags() {
        let f = RoomFields {
            name: Some("n".into()),
            cover: Some("c".into()),
            description: Some("d".into()),
            room_tags: Some(vec!["t".into()]),
            webhook: Some("w".into()),
            bot_mode: Some(true),
            ext_params: Some("e".into()),
            opening: Some(1),
            owner: Some("o".into()),
            managers: Some(vec!["m".into()]),
            status: Some(0),
        };
        let names: Vec<&str> = given_fields(&f).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "name",
                "cover",
                "description",
                "webhook",
                "extParams",
                "owner",
                "roomTags",
                "managers",
                "botMode",
                "opening"
            ]
        );
        let room = json!({"owner": {"_id": "o"}, "managers": ["a", {"_id": "b"}], "opening": 1.0});
        let room = room.as_object().unwrap();
        assert_eq!(prior_val(room, "owner"), Ok(Val::Text("o".into())));
        assert_eq!(
            prior_val(room, "managers"),
            Ok(Val::List(vec!["a".into(), "b".into()]))
        );
        assert!(prior_val(room, "opening").unwrap_err().contains("unusable"));
        assert!(prior_val(room, "name").unwrap_err().contains("unknown"));
        let mut g = RoomFields::default();
        assert!(
            set_field(&mut g, "owner", Val::List(vec![]))
                .unwrap_err()
                .contains("unexpected type")
        );
        assert!(
            set_field(&mut g, "managers", Val::List(vec!["..".into()]))
                .unwrap_err()
                .contains("not a valid id")
        );
    }

    fn snaps(list: &[(&str, Option<serde_json::Value>, i64)]) -> HashMap<String, Snapshot> {
        list.iter()
            .map(|(r, p, t)| {
                (
                    r.to_string(),
                    Snapshot {
                        prior: p.clone(),
                        taken_at: *t,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn freeze_then_unfreeze_of_an_active_room_needs_nothing() {
        let plan = revert_plan(
            [
                row(0, Op::freeze("r"), OpState::Done),
                row(1, Op::unfreeze("r"), OpState::Done),
            ],
            &snaps(&[("r", Some(json!({"status": 1})), 10)]),
            &HashMap::new(),
            &[],
        );
        assert_eq!(plan, RevertPlan::default());
    }

    #[test]
    fn the_last_status_set_is_compared_with_the_first_snapshot() {
        // Frozen before; the job unfroze, then froze, then unfroze it: freeze it back.
        let plan = revert_plan(
            [
                row(0, Op::unfreeze("r"), OpState::Done),
                row(1, Op::freeze("r"), OpState::Done),
                row(2, Op::unfreeze("r"), OpState::Done),
            ],
            &snaps(&[("r", Some(json!({"status": 0})), 10)]),
            &HashMap::new(),
            &[],
        );
        assert_eq!(plan.ops, vec![Op::freeze("r")]);
        assert!(plan.unknown.is_empty());
    }

    #[test]
    fn an_update_status_counts_as_a_status_change() {
        let f = RoomFields {
            status: Some(0),
            ..Default::default()
        };
        let plan = revert_plan(
            [row(0, Op::update("r", f), OpState::Done)],
            &snaps(&[("r", Some(json!({"status": 1})), 10)]),
            &HashMap::new(),
            &[],
        );
        assert_eq!(plan.ops, vec![Op::unfreeze("r")]);
    }

    #[test]
    fn failed_and_pending_ops_are_not_reverted() {
        let refused = |seq, op, status: u16, rc: i64, code: &str| OpRow {
            http_status: Some(status),
            rc: Some(rc),
            error_code: Some(code.into()),
            ..row(seq, op, OpState::Failed)
        };
        let plan = revert_plan(
            [
                refused(0, Op::freeze("a"), 404, 404, "ROOM_NOT_FOUND"),
                row(1, Op::freeze("b"), OpState::Pending),
                refused(2, Op::mute("c", "a"), 403, 403, "INSUFFICIENT_PERMISSIONS"),
                refused(3, Op::freeze("d"), 200, 7, "SOMETHING"),
            ],
            &HashMap::new(),
            &HashMap::new(),
            &[],
        );
        assert_eq!(plan, RevertPlan::default());
    }

    /// Never guessed: an op sent but not recorded done, whose last answer does not rule out
    /// that it was applied, is listed apart; so is an unmute whose ROOM_NOT_MUTED came on a
    /// retry (the lost first answer may have been the unmute).
    #[test]
    fn ops_that_may_have_been_applied_are_listed_apart() {
        let sent = |seq, op, state, attempts, status: Option<u16>, code: Option<&str>| OpRow {
            attempts,
            http_status: status,
            rc: None,
            error_code: code.map(str::to_owned),
            ..row(seq, op, state)
        };
        let plan = revert_plan(
            [
                sent(0, Op::freeze("a"), OpState::Failed, 6, Some(503), None),
                sent(
                    1,
                    Op::freeze("b"),
                    OpState::Failed,
                    1,
                    None,
                    Some("TIMEOUT"),
                ),
                sent(2, Op::mute("c", "a"), OpState::Pending, 2, Some(429), None),
                // A retried op whose last answer is a 404: an earlier attempt is unknown.
                sent(
                    3,
                    Op::freeze("d"),
                    OpState::Failed,
                    3,
                    Some(404),
                    Some("ROOM_NOT_FOUND"),
                ),
                sent(
                    4,
                    Op::unmute("e", "a"),
                    OpState::Done,
                    2,
                    Some(400),
                    Some("ROOM_NOT_MUTED"),
                ),
                sent(
                    5,
                    Op::unmute("f", "a"),
                    OpState::Done,
                    1,
                    Some(400),
                    Some("ROOM_NOT_MUTED"),
                ),
            ],
            &HashMap::new(),
            &HashMap::new(),
            &[],
        );
        assert!(plan.ops.is_empty(), "{:?}", plan.ops);
        let listed: Vec<(u64, &str)> = plan
            .unknown
            .iter()
            .map(|u| (u.seq, u.reason.as_str()))
            .collect();
        assert_eq!(listed.len(), 5, "{listed:#?}");
        for (seq, last) in [
            (0, "HTTP 503"),
            (1, "TIMEOUT"),
            (2, "HTTP 429"),
            (3, "HTTP 404 ROOM_NOT_FOUND"),
        ] {
            let (_, reason) = listed.iter().find(|(s, _)| *s == seq).unwrap();
            assert!(reason.starts_with("may have been applied"), "{reason}");
            assert!(reason.contains(&format!("(last: {last})")), "{reason}");
        }
        let (_, reason) = listed.iter().find(|(s, _)| *s == 4).unwrap();
        assert!(
            reason.contains("ROOM_NOT_MUTED answered attempt 2"),
            "{reason}"
        );
    }

    #[test]
    fn unknown_prior_states_are_listed_with_their_reason() {
        let plan = revert_plan(
            [
                row(0, Op::freeze("none"), OpState::Done),
                row(1, Op::freeze("nothing"), OpState::Done),
                row(2, Op::freeze("odd"), OpState::Done),
                row(3, Op::freeze("late"), OpState::Done),
                row(4, Op::freeze("weird"), OpState::Done),
            ],
            &snaps(&[
                ("nothing", None, 10),
                ("odd", Some(json!({"status": "frozen"})), 10),
                ("late", Some(json!({"status": 1})), 5_000),
                ("weird", Some(json!([1, 2])), 10),
            ]),
            &HashMap::new(),
            &[],
        );
        assert!(plan.ops.is_empty());
        let reasons: Vec<(u64, &str)> = plan
            .unknown
            .iter()
            .map(|u| (u.seq, u.reason.as_str()))
            .collect();
        assert_eq!(reasons.len(), 5);
        assert!(reasons[0].1.contains("no snapshot"));
        assert!(reasons[1].1.contains("gave nothing usable"));
        assert!(reasons[2].1.contains("unusable"));
        assert!(
            reasons[3]
                .1
                .contains("after the job had already sent a change")
        );
        assert!(reasons[4].1.contains("not a room object"));
        assert_eq!(plan.unknown[0].op, Op::freeze("none"));
        assert_eq!(plan.unknown[0].line, 2);
    }

    #[test]
    fn prior_values_a_csv_cannot_hold_are_listed_apart() {
        let f = RoomFields {
            description: Some("new".into()),
            room_tags: Some(vec!["x".into()]),
            ..Default::default()
        };
        let plan = revert_plan(
            [row(0, Op::update("r", f), OpState::Done)],
            &snaps(&[("r", Some(json!({"description": "", "roomTags": []})), 10)]),
            &HashMap::new(),
            &[],
        );
        assert!(plan.ops.is_empty(), "{:?}", plan.ops);
        assert_eq!(plan.unknown.len(), 1);
        assert!(
            plan.unknown[0].reason.contains("cannot be written back"),
            "{}",
            plan.unknown[0].reason
        );
    }

    #[test]
    fn owner_and_managers_may_come_as_objects() {
        let f = RoomFields {
            owner: Some("new-owner".into()),
            managers: Some(vec!["x".into()]),
            bot_mode: Some(true),
            ..Default::default()
        };
        let plan = revert_plan(
            [row(0, Op::update("r", f), OpState::Done)],
            &snaps(&[(
                "r",
                Some(
                    json!({"owner": {"_id": "old"}, "managers": [{"_id": "m"}], "botMode": false}),
                ),
                10,
            )]),
            &HashMap::new(),
            &[],
        );
        assert_eq!(
            plan.ops,
            vec![Op::update(
                "r",
                RoomFields {
                    owner: Some("old".into()),
                    managers: Some(vec!["m".into()]),
                    bot_mode: Some(false),
                    ..Default::default()
                }
            )]
        );
    }

    #[test]
    fn mute_pairs_are_inverted_by_first_and_last_op() {
        let mut not_muted = row(2, Op::unmute("c3", "r"), OpState::Done);
        not_muted.http_status = Some(400);
        not_muted.error_code = Some("ROOM_NOT_MUTED".into());
        let plan = revert_plan(
            [
                row(0, Op::mute("c1", "r"), OpState::Done),
                row(1, Op::unmute("c2", "r"), OpState::Done),
                not_muted,
                row(3, Op::unmute("c4", "r"), OpState::Done),
                row(4, Op::mute("c4", "r"), OpState::Done),
            ],
            &HashMap::new(),
            &HashMap::new(),
            &[],
        );
        assert_eq!(
            plan.ops,
            vec![Op::unmute("c1", "r"), Op::mute("c2", "r")],
            "c3 was not muted; c4 ends as it began (muted)"
        );
        assert!(plan.unknown.is_empty());
        // c1's unmute rests on docs/behaviour.md §5's assumption (not muted before the mute); c2's mute
        // does not (its unmute landed, so it was muted).
        assert_eq!(plan.unmutes_assumed, 1);
    }

    /// The audit's example: prior values a CSV manifest cannot keep are listed apart field
    /// by field (each reason once, naming its field), and the other fields of the same
    /// update are still restored.
    #[test]
    fn unwritable_prior_values_are_listed_apart_field_by_field() {
        let f = RoomFields {
            name: Some("New name".into()),
            description: Some("new".into()),
            room_tags: Some(vec!["new".into()]),
            opening: Some(0),
            ..Default::default()
        };
        let again = RoomFields {
            name: Some("Newer name".into()),
            ..Default::default()
        };
        let plan = revert_plan(
            [
                row(0, Op::update("r", f), OpState::Done),
                row(1, Op::update("r", again), OpState::Done),
            ],
            &snaps(&[(
                "r",
                Some(json!({
                    "name": "  Old name  ",
                    "description": "   ",
                    "roomTags": [" vip "],
                    "opening": 1
                })),
                10,
            )]),
            &HashMap::new(),
            &[],
        );
        assert_eq!(
            plan.ops,
            vec![Op::update(
                "r",
                RoomFields {
                    opening: Some(1),
                    ..Default::default()
                }
            )]
        );
        assert_eq!(plan.unknown.len(), 2, "{:#?}", plan.unknown);
        let reasons = |seq| -> Vec<&str> {
            let u = plan.unknown.iter().find(|u| u.seq == seq).unwrap();
            u.reason.split("; prior").collect()
        };
        let first = reasons(0);
        assert_eq!(first.len(), 3, "{first:?}");
        for field in ["`name`", "`description`", "`roomTags`"] {
            let n = first.iter().filter(|r| r.contains(field)).count();
            assert!(n >= 1, "{field} not named: {first:?}");
        }
        assert!(first.iter().all(|r| r.contains("cannot be written back")));
        // The second update set only the name: its reason is the name's, once.
        let second = reasons(1);
        assert_eq!(second.len(), 1, "{second:?}");
        assert!(second[0].contains("`name`") && second[0].contains("\"  Old name  \""));
    }

    /// Several fields with the same unknown prior state give one reason, not one per field.
    #[test]
    fn a_reason_is_given_once_per_op() {
        let f = RoomFields {
            name: Some("n".into()),
            description: Some("d".into()),
            status: Some(0),
            ..Default::default()
        };
        let plan = revert_plan(
            [row(0, Op::update("r", f), OpState::Done)],
            &HashMap::new(),
            &HashMap::new(),
            &[],
        );
        assert_eq!(plan.unknown.len(), 1);
        assert_eq!(
            plan.unknown[0].reason,
            "prior state unknown: no snapshot of the room (run with --snapshot)"
        );
    }

    fn run_info(
        id: i64,
        snapshot: bool,
        started: i64,
        last_commit: i64,
        exit: Option<u8>,
    ) -> RunInfo {
        RunInfo {
            id,
            pid: 100 + id as u32,
            tool_version: "0".into(),
            settings: json!({"concurrency": 8, "snapshot": snapshot}),
            retry_failed: false,
            started_at: started,
            last_commit_at: Some(last_commit),
            ended_at: exit.map(|_| last_commit),
            exit_code: exit,
            exit: exit.map(|c| format!("exit {c}")),
            ops_finalized: 0,
            outcomes: 0,
        }
    }

    /// `--snapshot` added on resume: run 1 (no snapshot) was killed while the freeze of `x`
    /// was in flight (applied, never recorded); run 2 read `x` already frozen. That
    /// snapshot is not trusted; one taken before run 1, or after a run that ended normally,
    /// or of a room whose ops were all final when run 1 died, is.
    #[test]
    fn snapshots_after_a_killed_run_without_snapshot_are_not_trusted() {
        let at = |seq: u64, t: i64, state| OpRow {
            first_attempt_at: Some(t),
            last_attempt_at: Some(t),
            ..row(seq, Op::freeze(["x", "w", "y", "v"][seq as usize]), state)
        };
        let ops = || {
            [
                // x: sent by run 1 (unrecorded), re-sent and done by run 2 at 3000.
                at(0, 3_000, OpState::Done),
                // w: done by run 0 (with --snapshot) at 500.
                at(1, 500, OpState::Done),
                // y: done by run 1 at 1_500, before it died; read again by run 2.
                at(2, 1_500, OpState::Done),
                // v: done by run 2 at 3_100.
                at(3, 3_100, OpState::Done),
            ]
        };
        let snapshots = snaps(&[
            ("x", Some(json!({"status": 0})), 2_900),
            ("w", Some(json!({"status": 1})), 400),
            ("y", Some(json!({"status": 1})), 2_950),
            ("v", Some(json!({"status": 1})), 3_050),
        ]);
        let killed = [
            run_info(1, true, 0, 900, Some(4)),
            run_info(2, false, 1_000, 1_600, None),
            run_info(3, true, 2_800, 3_200, Some(0)),
        ];
        let plan = revert_plan(ops(), &snapshots, &HashMap::new(), &killed);
        assert!(plan.unknown.iter().any(|u| {
            u.reason
                .contains("run #2 (without --snapshot) was killed while")
        }));
        // w: read before run 2; y: final before run 2 died (its later read is a re-read of
        // what the job set, but the first-attempt rule already dates it).
        assert_eq!(plan.ops, vec![Op::unfreeze("w")], "{:#?}", plan.unknown);
        let reason = |seq| {
            plan.unknown
                .iter()
                .find(|u| u.seq == seq)
                .map(|u| u.reason.clone())
                .unwrap_or_default()
        };
        for seq in [0, 3] {
            assert!(
                reason(seq).contains("after run #2 (without --snapshot) was killed"),
                "{seq}: {:#?}",
                plan.unknown
            );
        }
        assert!(reason(2).contains("after the job had already sent a change"));
        // Stopped with exit 4 instead: a second signal may have cancelled its requests in
        // flight without recording them, and the journal cannot tell.
        let stopped = [
            run_info(1, true, 0, 900, Some(4)),
            run_info(2, false, 1_000, 1_600, Some(4)),
            run_info(3, true, 2_800, 3_200, Some(0)),
        ];
        let plan = revert_plan(ops(), &snapshots, &HashMap::new(), &stopped);
        assert_eq!(plan.ops, vec![Op::unfreeze("w")]);
        assert!(plan.unknown.iter().any(|u| u.seq == 0 && u.reason.contains("run #2 (without --snapshot) was stopped")));
        // The same runs, but run 2 ended otherwise (aborted: its requests in flight were
        // answered and recorded), or ran with --snapshot: x's and v's snapshots are trusted.
        for runs in [
            [
                run_info(1, true, 0, 900, Some(4)),
                run_info(2, false, 1_000, 1_600, Some(3)),
                run_info(3, true, 2_800, 3_200, Some(0)),
            ],
            [
                run_info(1, true, 0, 900, Some(4)),
                run_info(2, true, 1_000, 1_600, None),
                run_info(3, true, 2_800, 3_200, Some(0)),
            ],
        ] {
            let plan = revert_plan(ops(), &snapshots, &HashMap::new(), &runs);
            assert_eq!(
                plan.ops,
                vec![Op::unfreeze("w"), Op::unfreeze("v")],
                "{:#?}",
                plan.unknown
            );
            assert_eq!(plan.unknown.len(), 1, "{:#?}", plan.unknown);
            assert!(
                plan.unknown[0]
                    .reason
                    .contains("after the job had already sent")
            );
        }
    }
}
