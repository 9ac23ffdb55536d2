//! What changed between the plan a journal holds and the ops a manifest means now, judged by
//! what the ops do rather than by the manifest's bytes: a comment, blank lines or moved rows
//! change nothing, an op added, removed or given other fields does.
//!
//! Ops are compared per target (a room for room ops, a client in a room for mute and
//! unmute): what a job leaves behind depends only on the order of the ops on each target,
//! so two plans mean the same when each target's ops are the same, in the same order.
//! Within a target the two sequences are aligned (longest common subsequence on what
//! differs between their common start and end); an op left over on one side only is
//! removed or added, and a removed and an added op with the same action on the same target
//! are one changed op.
//!
//! The alignment also says where a `--replan` puts the ops still to send: on a target that
//! gets added ops, its pending ops (kept and added) go after every op in the journal, in
//! manifest order, which keeps the manifest's order unless one of them comes before an op
//! of the target that is already final (`out_of_order`).

use std::collections::HashMap;

use super::OpState;
use crate::manifest::{Location, PlannedOp};
use crate::op::{Action, Op};

/// The most examples a refusal names.
const MAX_EXAMPLES: usize = 5;
/// The largest middle part (journal ops × manifest ops of one target) aligned exactly; past it,
/// equal ops are matched greedily in order.
const MAX_LCS_CELLS: usize = 1 << 22;

/// An op of the journal's plan, as recorded.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Recorded {
    pub(super) seq: u64,
    pub(super) op: Op,
    pub(super) state: OpState,
    /// Where it was imported from (`file` indexes the journal's sources).
    pub(super) source: Location,
}

/// How the manifest's ops line up with the journal's plan.
#[derive(Debug, Default, PartialEq)]
pub(super) struct PlanDiff {
    /// (index in the journal's plan, index in the manifest) of the ops in both.
    pub(super) matched: Vec<(usize, usize)>,
    /// Journal plan indices of the ops no longer in the manifest.
    pub(super) removed: Vec<usize>,
    /// Manifest indices of the ops not in the journal's plan.
    pub(super) added: Vec<usize>,
    /// How many (removed, added) pairs are one op whose fields changed.
    pub(super) changed: usize,
    /// Manifest indices, in order, of the ops a `--replan` puts after every op in the
    /// journal: the pending ops (kept and added) of each target that gets added ops.
    pub(super) to_place: Vec<usize>,
    /// The first op still to send that comes, on its target, before an op already final
    /// (manifest index of each): `--replan` would send it after, against the manifest.
    pub(super) out_of_order: Option<(usize, usize)>,
}

/// What an op acts on: its room, and for mute and unmute the client in it.
type Target<'a> = (&'a str, Option<&'a str>);

fn target(op: &Op) -> Target<'_> {
    (&op.room, op.client.as_deref())
}

impl PlanDiff {
    /// True when the manifest means the journal's plan.
    pub(super) fn is_same(&self) -> bool {
        self.removed.is_empty() && self.added.is_empty()
    }
}

/// Lines up `ops` (the manifest, in order) with `plan` (the journal's, in seq order).
pub(super) fn diff(plan: &[Recorded], ops: &[PlannedOp]) -> PlanDiff {
    let mut out = PlanDiff::default();
    if plan.len() == ops.len() && plan.iter().zip(ops).all(|(r, p)| r.op == p.op) {
        out.matched = (0..plan.len()).map(|i| (i, i)).collect();
        return out;
    }
    let mut targets: HashMap<Target<'_>, (Vec<usize>, Vec<usize>)> = HashMap::new();
    for (i, r) in plan.iter().enumerate() {
        targets.entry(target(&r.op)).or_default().0.push(i);
    }
    for (i, p) in ops.iter().enumerate() {
        targets.entry(target(&p.op)).or_default().1.push(i);
    }
    for (old, new) in targets.values() {
        let pairs = align(old, new, |a, b| plan[a].op == ops[b].op);
        out.note_target(plan, ops, old, new, &pairs);
    }
    out.matched.sort_unstable();
    out.removed.sort_unstable();
    out.added.sort_unstable();
    out.to_place.sort_unstable();
    out
}

impl PlanDiff {
    /// Records the alignment `pairs` of one target's journal ops `old` and manifest ops `new`.
    fn note_target(
        &mut self,
        plan: &[Recorded],
        ops: &[PlannedOp],
        old: &[usize],
        new: &[usize],
        pairs: &[(usize, usize)],
    ) {
        let mut in_old = vec![false; old.len()];
        // For each of `new`: the state of the journal op it matches (None: added).
        let mut state: Vec<Option<OpState>> = vec![None; new.len()];
        for &(a, b) in pairs {
            in_old[a] = true;
            state[b] = Some(plan[old[a]].state);
            self.matched.push((old[a], new[b]));
        }
        let removed: Vec<usize> = (0..old.len())
            .filter(|&a| !in_old[a])
            .map(|a| old[a])
            .collect();
        let added: Vec<usize> = (0..new.len())
            .filter(|&b| state[b].is_none())
            .map(|b| new[b])
            .collect();
        self.changed += count_changed(plan, ops, &removed, &added);
        if !added.is_empty() {
            self.place_pending(new, &state);
        }
        self.removed.extend(removed);
        self.added.extend(added);
    }

    /// For a target that gets added ops: its ops still to send go after every op in the
    /// journal; notes the first that comes, in the manifest, before an op already final.
    fn place_pending(&mut self, new: &[usize], state: &[Option<OpState>]) {
        let pending = |b: usize| !state[b].is_some_and(OpState::is_final);
        self.to_place
            .extend((0..new.len()).filter(|&b| pending(b)).map(|b| new[b]));
        let Some(last_final) = (0..new.len()).rev().find(|&b| !pending(b)) else {
            return;
        };
        if let Some(first) = (0..last_final).find(|&b| pending(b)) {
            let candidate = (new[first], new[last_final]);
            if self.out_of_order.is_none_or(|o| candidate < o) {
                self.out_of_order = Some(candidate);
            }
        }
    }
}

/// Pairs a removed and an added op with the same action (they share their target), in order.
fn count_changed(
    plan: &[Recorded],
    ops: &[PlannedOp],
    removed: &[usize],
    added: &[usize],
) -> usize {
    let mut left: Vec<&Op> = removed.iter().map(|&i| &plan[i].op).collect();
    let mut n = 0;
    for &i in added {
        let op = &ops[i].op;
        if let Some(k) = left.iter().position(|o| same_target(o, op)) {
            left.remove(k);
            n += 1;
        }
    }
    n
}

fn same_target(a: &Op, b: &Op) -> bool {
    a.action == b.action && target(a) == target(b)
}

/// The pairs (index in `old`, index in `new`) of an alignment of the two sequences, in
/// order: their common start and end, and a longest common subsequence of the rest.
fn align(old: &[usize], new: &[usize], eq: impl Fn(usize, usize) -> bool) -> Vec<(usize, usize)> {
    let same = |a: usize, b: usize| eq(old[a], new[b]);
    let mut start = 0;
    while start < old.len() && start < new.len() && same(start, start) {
        start += 1;
    }
    let mut end = 0;
    while end < old.len() - start
        && end < new.len() - start
        && same(old.len() - 1 - end, new.len() - 1 - end)
    {
        end += 1;
    }
    let mut pairs: Vec<(usize, usize)> = (0..start).map(|i| (i, i)).collect();
    let (n, m) = (old.len() - start - end, new.len() - start - end);
    let middle = if n.saturating_mul(m) <= MAX_LCS_CELLS {
        lcs(n, m, |a, b| same(start + a, start + b))
    } else {
        greedy(n, m, |a, b| same(start + a, start + b))
    };
    pairs.extend(middle.into_iter().map(|(a, b)| (start + a, start + b)));
    pairs.extend(
        (0..end)
            .rev()
            .map(|k| (old.len() - 1 - k, new.len() - 1 - k)),
    );
    pairs
}

/// A longest common subsequence of two sequences of lengths `n` and `m`.
fn lcs(n: usize, m: usize, same: impl Fn(usize, usize) -> bool) -> Vec<(usize, usize)> {
    // len[a][b]: LCS of old[a..] and new[b..].
    let w = m + 1;
    let mut len = vec![0u32; (n + 1) * w];
    for a in (0..n).rev() {
        for b in (0..m).rev() {
            len[a * w + b] = if same(a, b) {
                len[(a + 1) * w + b + 1] + 1
            } else {
                len[(a + 1) * w + b].max(len[a * w + b + 1])
            };
        }
    }
    let (mut a, mut b, mut out) = (0, 0, Vec::new());
    while a < n && b < m {
        if same(a, b) {
            out.push((a, b));
            a += 1;
            b += 1;
        } else if len[(a + 1) * w + b] >= len[a * w + b + 1] {
            a += 1;
        } else {
            b += 1;
        }
    }
    out
}

/// A common subsequence found by matching each op of `new` to the next equal one of `old`.
fn greedy(n: usize, m: usize, same: impl Fn(usize, usize) -> bool) -> Vec<(usize, usize)> {
    let (mut a, mut out) = (0, Vec::new());
    for b in 0..m {
        if let Some(k) = (a..n).find(|&k| same(k, b)) {
            out.push((k, b));
            a = k + 1;
        }
    }
    out
}

/// Where a journal op and a manifest op come from, as `file:line`.
pub(super) struct Places<'a> {
    pub(super) journal: &'a dyn Fn(&Recorded) -> String,
    pub(super) manifest: &'a dyn Fn(&PlannedOp) -> String,
}

/// At most [`MAX_EXAMPLES`] lines naming changed, added and removed ops with their places.
pub(super) fn examples(
    d: &PlanDiff,
    plan: &[Recorded],
    ops: &[PlannedOp],
    places: &Places<'_>,
) -> Vec<String> {
    // Removed ops by action and target, in order, to pair with the added ones.
    let mut removed: HashMap<(Action, Target<'_>), Vec<usize>> = HashMap::new();
    for &r in d.removed.iter().rev() {
        let op = &plan[r].op;
        removed.entry((op.action, target(op))).or_default().push(r);
    }
    let mut out = Vec::new();
    let mut added = Vec::new();
    for &i in &d.added {
        let op = &ops[i];
        let pair = removed
            .get_mut(&(op.op.action, target(&op.op)))
            .and_then(Vec::pop);
        match pair {
            Some(r) => {
                let r = &plan[r];
                out.push(format!(
                    "changed: {} ({}; was {}, {})",
                    op.op,
                    (places.manifest)(op),
                    (places.journal)(r),
                    r.state.as_str()
                ));
            }
            None => added.push(format!("added: {} ({})", op.op, (places.manifest)(op))),
        }
        if out.len() >= MAX_EXAMPLES {
            break;
        }
    }
    out.extend(added);
    let mut left: Vec<usize> = removed.into_values().flatten().collect();
    left.sort_unstable();
    out.extend(left.iter().take(MAX_EXAMPLES).map(|&r| {
        let r = &plan[r];
        format!(
            "removed: {} (was {}, {})",
            r.op,
            (places.journal)(r),
            r.state.as_str()
        )
    }));
    out.truncate(MAX_EXAMPLES);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::RoomFields;

    fn rec(ops: &[(Op, OpState)]) -> Vec<Recorded> {
        ops.iter()
            .enumerate()
            .map(|(i, (op, state))| Recorded {
                seq: i as u64,
                op: op.clone(),
                state: *state,
                source: Location {
                    file: 0,
                    line: i as u32 + 2,
                },
            })
            .collect()
    }

    fn planned(ops: &[Op]) -> Vec<PlannedOp> {
        ops.iter()
            .enumerate()
            .map(|(i, op)| PlannedOp {
                op: op.clone(),
                source: Location {
                    file: 0,
                    line: i as u32 + 2,
                },
            })
            .collect()
    }

    fn named(room: &str, name: &str) -> Op {
        Op::update(
            room,
            RoomFields {
                name: Some(name.into()),
                ..Default::default()
            },
        )
    }

    use OpState::{Done, Pending};

    #[test]
    fn the_same_ops_are_the_same_plan_even_moved_across_targets() {
        let plan = rec(&[(Op::freeze("a"), Done), (Op::freeze("b"), Pending)]);
        let d = diff(&plan, &planned(&[Op::freeze("a"), Op::freeze("b")]));
        assert!(d.is_same());
        assert_eq!(d.matched, [(0, 0), (1, 1)]);
        // Rows of two rooms swapped: each room's ops are the same.
        let d = diff(&plan, &planned(&[Op::freeze("b"), Op::freeze("a")]));
        assert!(d.is_same(), "{d:?}");
        assert_eq!(d.matched, [(0, 1), (1, 0)]);
    }

    #[test]
    fn added_removed_and_changed_ops_are_counted() {
        let plan = rec(&[
            (Op::freeze("a"), Done),
            (named("b", "old"), Pending),
            (Op::freeze("c"), Pending),
            (Op::unfreeze("a"), Pending),
        ]);
        let ops = planned(&[
            Op::freeze("a"),
            named("b", "new"),
            Op::unfreeze("a"),
            Op::freeze("d"),
        ]);
        let d = diff(&plan, &ops);
        assert_eq!(d.matched, [(0, 0), (3, 2)]);
        assert_eq!(d.removed, [1, 2]);
        assert_eq!(d.added, [1, 3]);
        assert_eq!(d.changed, 1);
        assert_eq!(d.out_of_order, None);
        let places = Places {
            journal: &|r: &Recorded| format!("old.csv:{}", r.source.line),
            manifest: &|p: &PlannedOp| format!("new.csv:{}", p.source.line),
        };
        let ex = examples(&d, &plan, &ops, &places);
        assert_eq!(
            ex,
            [
                "changed: update room \"b\" (new.csv:3; was old.csv:3, pending)",
                "added: freeze room \"d\" (new.csv:5)",
                "removed: freeze room \"c\" (was old.csv:4, pending)",
            ]
        );
    }

    #[test]
    fn an_op_added_before_a_final_op_of_its_target_is_out_of_order() {
        let plan = rec(&[
            (Op::freeze("a"), Done),
            (Op::freeze("z"), Pending),
            (Op::mute("c", "r1"), Done),
        ]);
        // unfreeze a before the done freeze a: it would run after it.
        let ops = planned(&[
            Op::unfreeze("a"),
            Op::freeze("a"),
            Op::freeze("z"),
            Op::mute("c", "r1"),
        ]);
        let d = diff(&plan, &ops);
        assert_eq!(d.added, [0]);
        assert_eq!(d.out_of_order, Some((0, 1)));
        // After it, before an op still pending, or on another target of one client: the
        // order holds. The pending ops of a target that gets ops are placed anew.
        let ops = planned(&[
            Op::mute("c", "r0"),
            Op::freeze("a"),
            Op::unfreeze("a"),
            Op::unfreeze("z"),
            Op::freeze("z"),
            Op::mute("c", "r1"),
        ]);
        let d = diff(&plan, &ops);
        assert_eq!(d.added, [0, 2, 3]);
        assert_eq!(d.out_of_order, None);
        assert_eq!(d.to_place, [0, 2, 3, 4]);
    }

    #[test]
    fn long_chains_align_on_their_common_ends() {
        let flip = |i: usize| {
            if i.is_multiple_of(2) {
                Op::freeze("a")
            } else {
                Op::unfreeze("a")
            }
        };
        let ops: Vec<Op> = (0..3000).map(flip).collect();
        let plan: Vec<(Op, OpState)> = ops.iter().map(|o| (o.clone(), Pending)).collect();
        let mut more = ops.clone();
        more.insert(1500, named("a", "extra"));
        let d = diff(&rec(&plan), &planned(&more));
        assert_eq!(d.added, [1500]);
        assert!(d.removed.is_empty());
        assert_eq!(d.matched.len(), 3000);
        // Too big to align exactly: still matched in order.
        let g = greedy(4, 3, |a, b| [1, 2, 3, 4][a] == [2, 9, 4][b]);
        assert_eq!(g, [(1, 0), (3, 2)]);
    }
}
