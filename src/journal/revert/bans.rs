//! The revert of ban pairs. The answers tell the prior state, so no assumption is made: a
//! ban answered 200 means the pair was not banned before it (a ban that exists answers 409),
//! one answered `USER_ALREADY_BLOCKED` that it was; an unban answered 200 that it was, one
//! answered `BLOCK_NOT_FOUND` that it was not. With several ops on one pair, the state before
//! the first is compared with the state the last one leaves, and the pair is put back when
//! they differ: a pair the job banned is unbanned, one it unbanned is banned again, and a ban
//! another moderator made (answered 409) is never lifted.
//!
//! One answer does not tell: a "the state already holds" answer (409 on a ban, 404
//! `BLOCK_NOT_FOUND` on an unban) to a retry, or to an op first answered after a run that was
//! killed (or stopped with its requests in flight cancelled), may be the result of the job's
//! own earlier attempt whose answer was lost. Then the room's ban list read before its first
//! ban change (`--snapshot`) decides, if it was read before any ban op of the room could have
//! been sent; otherwise the pair is listed apart with the reason.

use std::collections::HashMap;

use serde_json::Value;

use super::{KilledRun, OpRow, PairWork, Planner, RoomWork, Snapshot};
use crate::op::{Action, Op};

/// What judging ban pairs needs beyond their own ops.
pub(super) struct Context<'a> {
    /// The ban lists read before each room's first ban or unban, by room.
    pub snapshots: &'a HashMap<String, Snapshot>,
    /// Per room, when its ban ops were attempted and settled.
    pub rooms: &'a HashMap<String, RoomWork>,
    /// Runs without `--snapshot` that may have left a change applied unrecorded.
    pub killed_without_snapshot: &'a [KilledRun],
    /// Every run that may have left a change applied unrecorded.
    pub interrupted: &'a [KilledRun],
}

/// True when `row` (done) was answered "the desired state already holds".
fn already(row: &OpRow) -> bool {
    row.op
        .action
        .already_answer()
        .is_some_and(|(_, code)| row.error_code.as_deref() == Some(code))
}

/// Why an "already" answer to `row` may be to the job's own earlier attempt, if it may.
fn maybe_own(row: &OpRow, interrupted: &[KilledRun]) -> Option<String> {
    let code = row.error_code.as_deref().unwrap_or_default();
    if row.attempts > 1 {
        return Some(format!(
            "{code} answered attempt {} of the {}, and an earlier attempt may have been the \
             one that {}",
            row.attempts,
            row.op.action,
            done_verb(row.op.action)
        ));
    }
    let first = row.first_attempt_at?;
    interrupted.iter().find(|k| k.ended_by < first).map(|k| {
        format!(
            "{code} answered the {} after run #{} {}, which may have sent it, its answer \
                 unrecorded",
            row.op.action, k.id, k.how
        )
    })
}

fn done_verb(a: Action) -> &'static str {
    match a {
        Action::Unban => "unbanned the pair",
        _ => "banned the pair",
    }
}

/// Whether `client` was banned in `room` before the job's first ban change there, from the
/// room's ban-list snapshot; or why the snapshot cannot tell.
fn banned_before(client: &str, room: &str, cx: &Context<'_>) -> Result<bool, String> {
    let w = cx.rooms.get(room);
    let banned = match cx.snapshots.get(room) {
        None => return Err("no snapshot of the room's ban list (run with --snapshot)".into()),
        Some(Snapshot { prior: None, .. }) => {
            return Err(
                "the room's ban list could not be read before the change (the vendor lets \
                 only the room's owner list bans)"
                    .into(),
            );
        }
        Some(Snapshot {
            prior: Some(p),
            taken_at,
        }) => {
            if w.and_then(|w| w.first_attempt_at)
                .is_some_and(|first| *taken_at > first)
            {
                return Err(
                    "the ban list was read after the job had already sent a ban or unban in \
                     the room"
                        .into(),
                );
            }
            let settled = w.map_or(i64::MAX, |w| w.settled_at);
            if let Some(k) = cx
                .killed_without_snapshot
                .iter()
                .find(|k| *taken_at >= k.started_at && settled > k.ended_by)
            {
                return Err(format!(
                    "the ban list was read after run #{} (without --snapshot) {} while bans in \
                     the room were pending",
                    k.id, k.how
                ));
            }
            p.get("banned").and_then(Value::as_array).ok_or_else(|| {
                "the ban-list snapshot is not a list of banned clients".to_string()
            })?
        }
    };
    Ok(banned.iter().any(|b| b.as_str() == Some(client)))
}

impl Planner {
    /// A ban pair: its state before the first op vs. after the last.
    pub(super) fn revert_ban_pair(
        &mut self,
        client: &str,
        room: &str,
        w: &PairWork,
        cx: &Context<'_>,
    ) {
        let (Some(first), Some(last)) = (w.done.first(), w.done.last()) else {
            return;
        };
        let prior_banned = if already(first) {
            match maybe_own(first, cx.interrupted) {
                // 409 on a ban: banned before; 404 BLOCK_NOT_FOUND on an unban: not banned.
                None => first.op.action == Action::Ban,
                Some(why) => match banned_before(client, room, cx) {
                    Ok(banned) => banned,
                    Err(reason) => {
                        self.note(first, format!("prior state unknown: {why}; {reason}"));
                        return;
                    }
                },
            }
        } else {
            // A ban that landed: not banned before; an unban that landed: banned.
            first.op.action == Action::Unban
        };
        let final_banned = last.op.action == Action::Ban;
        if prior_banned != final_banned {
            let op = if prior_banned {
                Op::ban(client, room)
            } else {
                Op::unban(client, room)
            };
            self.out.entry(w.first_seq).or_default().push(op);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::json;

    use super::super::{RevertPlan, revert_plan};
    use crate::journal::{OpRow, OpState, RunInfo, Snapshot};
    use crate::op::Op;

    /// Op `seq`, done at its first attempt with 200, answered at time `1000 + seq`.
    fn done(seq: u64, op: Op) -> OpRow {
        OpRow {
            seq,
            file: "sweep.csv".into(),
            line: seq as u32 + 2,
            op,
            state: OpState::Done,
            attempts: 1,
            http_status: Some(200),
            rc: Some(0),
            error_code: None,
            message: None,
            latency_ms: Some(5),
            first_attempt_at: Some(1_000 + seq as i64),
            last_attempt_at: Some(1_000 + seq as i64),
        }
    }

    /// Op `seq` done with the "already" answer of its action, at attempt `attempts`.
    fn already(seq: u64, op: Op, attempts: u32) -> OpRow {
        let (status, code) = op.action.already_answer().unwrap();
        OpRow {
            attempts,
            http_status: Some(status),
            rc: None,
            error_code: Some(code.into()),
            ..done(seq, op)
        }
    }

    fn plan(rows: Vec<OpRow>, bans: &[(&str, Option<serde_json::Value>, i64)]) -> RevertPlan {
        plan_with_runs(rows, bans, &[])
    }

    fn plan_with_runs(
        rows: Vec<OpRow>,
        bans: &[(&str, Option<serde_json::Value>, i64)],
        runs: &[RunInfo],
    ) -> RevertPlan {
        let bans: HashMap<String, Snapshot> = bans
            .iter()
            .map(|(r, p, t)| {
                let s = Snapshot {
                    prior: p.clone(),
                    taken_at: *t,
                };
                (r.to_string(), s)
            })
            .collect();
        revert_plan(rows, &HashMap::new(), &bans, runs)
    }

    #[test]
    fn only_what_the_job_changed_is_put_back() {
        let p = plan(
            vec![
                done(0, Op::ban("spam", "a")),
                already(1, Op::ban("spam", "b"), 1),
                done(2, Op::unban("old", "c")),
                already(3, Op::unban("old", "d"), 1),
            ],
            &[],
        );
        assert_eq!(p.ops, [Op::unban("spam", "a"), Op::ban("old", "c")]);
        assert!(p.unknown.is_empty() && p.unmutes_assumed == 0, "{p:?}");
    }

    /// Several ops on one pair: the state before the first against the state after the last.
    #[test]
    fn a_pair_is_judged_from_its_first_and_last_op() {
        let p = plan(
            vec![
                done(0, Op::ban("u", "a")),
                done(1, Op::unban("u", "a")),
                done(2, Op::unban("v", "a")),
                done(3, Op::ban("v", "a")),
                already(4, Op::ban("w", "a"), 1),
                done(5, Op::unban("w", "a")),
                done(6, Op::ban("w", "a")),
            ],
            &[],
        );
        // u: not banned before, not after; v: banned before and after; w: banned before
        // (someone else's ban), not after the unban, banned again at the end.
        assert_eq!(p, RevertPlan::default());
        let p = plan(
            vec![
                already(0, Op::ban("w", "a"), 1),
                done(1, Op::unban("w", "a")),
            ],
            &[],
        );
        assert_eq!(p.ops, [Op::ban("w", "a")]);
    }

    /// A mute and a ban of one pair are two targets.
    #[test]
    fn mutes_and_bans_of_one_pair_are_apart() {
        let p = plan(
            vec![done(0, Op::mute("u", "a")), done(1, Op::ban("u", "a"))],
            &[],
        );
        let mut ops = p.ops.clone();
        ops.sort();
        assert_eq!(ops, [Op::unmute("u", "a"), Op::unban("u", "a")]);
        assert_eq!(p.unmutes_assumed, 1);
    }

    /// A 409 on a retry may answer the job's own first attempt: the ban list read before
    /// the room's first ban change decides, or the pair is listed apart.
    #[test]
    fn an_already_answer_to_a_retry_needs_the_ban_list() {
        let rows = || vec![already(0, Op::ban("spam", "a"), 3)];
        let p = plan(rows(), &[]);
        assert!(p.ops.is_empty());
        assert_eq!(p.unknown.len(), 1);
        let reason = &p.unknown[0].reason;
        assert!(
            reason.starts_with(
                "prior state unknown: USER_ALREADY_BLOCKED answered attempt 3 of the ban, and \
                 an earlier attempt may have been the one that banned the pair; no snapshot of \
                 the room's ban list (run with --snapshot)"
            ),
            "{reason}"
        );
        // Read before, without the client: the job's ban. With it: someone else's.
        let p = plan(rows(), &[("a", Some(json!({"banned": ["x"]})), 900)]);
        assert_eq!((p.ops, p.unknown.len()), (vec![Op::unban("spam", "a")], 0));
        let p = plan(rows(), &[("a", Some(json!({"banned": ["spam"]})), 900)]);
        assert_eq!(p, RevertPlan::default());
        // Unreadable (403: owner only), or read after the room's first ban was answered.
        let p = plan(rows(), &[("a", None, 900)]);
        assert!(p.unknown[0].reason.contains("could not be read"), "{p:?}");
        let late = vec![
            done(0, Op::ban("x", "a")),
            already(1, Op::ban("spam", "a"), 2),
        ];
        let p = plan(late, &[("a", Some(json!({"banned": []})), 1_000_500)]);
        assert_eq!(p.ops, [Op::unban("x", "a")]);
        assert!(
            p.unknown[0]
                .reason
                .contains("read after the job had already sent a ban or unban in the room"),
            "{p:?}"
        );
        // The same for an unban whose BLOCK_NOT_FOUND came on a retry.
        let p = plan(
            vec![already(0, Op::unban("u", "a"), 2)],
            &[("a", Some(json!({"banned": ["u"]})), 900)],
        );
        assert_eq!(p.ops, [Op::ban("u", "a")]);
    }

    /// After a run killed mid-job, a 409 at the first recorded attempt may still answer the
    /// killed run's unrecorded send.
    #[test]
    fn an_already_answer_after_a_killed_run_needs_the_ban_list() {
        let killed = RunInfo {
            id: 1,
            pid: 7,
            tool_version: "0".into(),
            settings: json!({"snapshot": true}),
            retry_failed: false,
            started_at: 500,
            last_commit_at: Some(600),
            ended_at: None,
            exit_code: None,
            exit: None,
            ops_finalized: 0,
            outcomes: 0,
        };
        let rows = || vec![already(0, Op::ban("spam", "a"), 1)];
        let p = plan_with_runs(rows(), &[], std::slice::from_ref(&killed));
        assert!(
            p.unknown[0]
                .reason
                .contains("answered the ban after run #1 was killed, which may have sent it"),
            "{p:?}"
        );
        // The killed run had --snapshot, and read the list before sending: it decides.
        let p = plan_with_runs(
            rows(),
            &[("a", Some(json!({"banned": []})), 550)],
            &[killed],
        );
        assert_eq!((p.ops, p.unknown.len()), (vec![Op::unban("spam", "a")], 0));
    }

    /// A ban sent and not recorded done may have been applied: listed apart, not reverted.
    #[test]
    fn a_ban_that_may_have_been_applied_is_listed_apart() {
        let lost = OpRow {
            state: OpState::Failed,
            attempts: 6,
            http_status: Some(503),
            rc: None,
            ..done(0, Op::ban("spam", "a"))
        };
        let refused = OpRow {
            state: OpState::Failed,
            http_status: Some(404),
            error_code: Some("ROOM_OR_USER_NOT_FOUND".into()),
            ..done(1, Op::ban("spam", "gone"))
        };
        let p = plan(vec![lost, refused], &[]);
        assert!(p.ops.is_empty());
        assert_eq!(p.unknown.len(), 1);
        assert!(
            p.unknown[0].reason.starts_with("may have been applied"),
            "{p:?}"
        );
    }
}
