//! The last step of loading: identical ops collapse into their first occurrence (a warning
//! names the repeating lines) and conflicting ops on one target (freeze and unfreeze of a
//! room, mute and unmute or ban and unban of a pair, several updates of one field) are kept
//! in manifest order with a warning. A pair's mutes and its bans are two targets: a mute and
//! a ban of one client in one room neither repeat nor undo each other.
//!
//! Built for million-op manifests: it sorts a `Vec<u32>` of indices instead of hashing owned
//! keys, so the only extra memory is four bytes per op. It works on any [`ExpandOp`]: the
//! [`PlannedOp`]s `run` and `plan` load, or the compact [`super::lean::LeanOp`]s `validate`
//! counts with, so both see the same duplicates and conflicts.

use std::cmp::Ordering;
use std::path::PathBuf;

use super::{Location, PlannedOp, Warnings};
use crate::op::{Action, ActionKind, Field};

/// Lines listed in one conflict warning before "...".
const MAX_LINES_LISTED: usize = 6;

/// What [`finish`] needs to know of an op.
pub(crate) trait ExpandOp {
    /// What the ops' values are looked up in (nothing for full ops).
    type Ctx: ?Sized;
    fn action(&self) -> Action;
    fn room(&self) -> &str;
    fn client(&self) -> Option<&str>;
    fn source(&self) -> Location;
    /// True for an update that carries its fields.
    fn has_fields(&self) -> bool;
    /// The `status` an update sets.
    fn update_status(&self) -> Option<u8>;
    /// True when field `k` is given (updates only).
    fn field_given(&self, k: Field) -> bool;
    /// True when field `k` has the same value in both (both given).
    fn field_eq(&self, other: &Self, k: Field, ctx: &Self::Ctx) -> bool;
    /// A total order on ops, `Equal` exactly for identical ops.
    fn op_cmp(&self, other: &Self, ctx: &Self::Ctx) -> Ordering;

    /// As `Op`'s `Display`: `freeze room "a"`, `mute client "u" in room "a"`.
    fn describe_op(&self) -> String {
        match self.client() {
            Some(c) => format!("{} client {:?} in room {:?}", self.action(), c, self.room()),
            None => format!("{} room {:?}", self.action(), self.room()),
        }
    }
}

impl ExpandOp for PlannedOp {
    type Ctx = ();
    fn action(&self) -> Action {
        self.op.action
    }
    fn room(&self) -> &str {
        &self.op.room
    }
    fn client(&self) -> Option<&str> {
        self.op.client.as_deref()
    }
    fn source(&self) -> Location {
        self.source
    }
    fn has_fields(&self) -> bool {
        self.op.fields.is_some()
    }
    fn update_status(&self) -> Option<u8> {
        self.op.fields.as_ref().and_then(|f| f.status)
    }
    fn field_given(&self, k: Field) -> bool {
        self.op.fields.as_deref().is_some_and(|f| k.is_given(f))
    }
    fn field_eq(&self, other: &Self, k: Field, _: &()) -> bool {
        match (self.op.fields.as_deref(), other.op.fields.as_deref()) {
            (Some(a), Some(b)) => k.get(a) == k.get(b),
            _ => false,
        }
    }
    fn op_cmp(&self, other: &Self, _: &()) -> Ordering {
        self.op.cmp(&other.op)
    }
}

/// Removes duplicates and reports conflicts; `ops` must be in manifest order.
pub(crate) fn finish(
    ops: Vec<PlannedOp>,
    sources: &[PathBuf],
    warnings: &mut Warnings,
) -> Vec<PlannedOp> {
    finish_with(ops, &(), sources, warnings)
}

/// [`finish`] for any kind of op, its values looked up in `ctx`.
pub(crate) fn finish_with<T: ExpandOp>(
    ops: Vec<T>,
    ctx: &T::Ctx,
    sources: &[PathBuf],
    warnings: &mut Warnings,
) -> Vec<T> {
    let n = ops.len();
    let Ok(_) = u32::try_from(n) else {
        return ops; // more than 4 billion ops cannot be read into memory anyway
    };
    let place = |l: Location| describe(sources, l);

    // Candidates: ops identical to an earlier one (indices sorted by op, then position).
    let mut idx: Vec<u32> = (0..n as u32).collect();
    idx.sort_unstable_by(|&a, &b| {
        ops[a as usize]
            .op_cmp(&ops[b as usize], ctx)
            .then(a.cmp(&b))
    });
    let mut dups: Vec<(u32, u32)> = Vec::new();
    for w in idx.windows(2) {
        let (a, b) = (w[0] as usize, w[1] as usize);
        if ops[a].op_cmp(&ops[b], ctx) == Ordering::Equal {
            // `a` may itself repeat an earlier op: report against the first of the run.
            let first = dups
                .last()
                .filter(|(d, _)| *d as usize == a)
                .map(|(_, f)| *f)
                .unwrap_or(a as u32);
            dups.push((b as u32, first));
        }
    }
    let mut candidate = vec![false; n];
    for (d, _) in &dups {
        candidate[*d as usize] = true;
    }

    // Walk each target's ops in manifest order. A repeat is dropped only when the state it
    // sets is already what it sets: freeze, unfreeze, freeze keeps all three (the last
    // freeze matters), freeze, freeze drops the second.
    idx.sort_unstable_by(|&a, &b| target_cmp(&ops[a as usize], &ops[b as usize]).then(a.cmp(&b)));
    let mut keep = vec![true; n];
    let mut start = 0;
    while start < idx.len() {
        let end = group_end(&ops, &idx, start);
        let mut state = TargetState::default();
        for &j in &idx[start..end] {
            let j = j as usize;
            if candidate[j] && state.already(&ops, &ops[j], ctx) {
                keep[j] = false;
            } else {
                state.apply(j as u32, &ops[j]);
            }
        }
        start = end;
    }
    drop(candidate);
    dups.retain(|(d, _)| !keep[*d as usize]);
    dups.sort_unstable();
    for (d, f) in &dups {
        let (dup, first) = (&ops[*d as usize], &ops[*f as usize]);
        warnings.push_with(|| {
            if dup.source() == first.source() {
                // One place gave the op twice, e.g. a rooms_file named by two ops: "line 4
                // repeats line 4" would say nothing.
                format!(
                    "{} gives the same op twice: {} (runs once)",
                    place(dup.source()),
                    dup.describe_op()
                )
            } else {
                format!(
                    "{} repeats {}: {} (runs once)",
                    place(dup.source()),
                    place(first.source()),
                    dup.describe_op()
                )
            }
        });
    }

    // Conflicts: the kept ops, still grouped by target in manifest order.
    idx.retain(|&i| keep[i as usize]);
    // Each conflict is found as indices; only those under the warnings cap are formatted.
    let mut found: Vec<Conflict> = Vec::new();
    let mut start = 0;
    while start < idx.len() {
        let end = group_end(&ops, &idx, start);
        if end - start > 1 {
            conflicts(&ops, &idx[start..end], &mut found);
        }
        start = end;
    }
    found.sort_by_key(|c| c.first);
    for c in &found {
        warnings.push_with(|| c.message(&ops, &place));
    }
    drop(found);

    drop(idx);
    let mut out = ops;
    let mut k = keep.into_iter();
    out.retain(|_| k.next().unwrap_or(true));
    out
}

/// The end of the target group that starts at `idx[start]`.
fn group_end<T: ExpandOp>(ops: &[T], idx: &[u32], start: usize) -> usize {
    let first = &ops[idx[start] as usize];
    let mut end = start + 1;
    while end < idx.len() && target_cmp(first, &ops[idx[end] as usize]) == Ordering::Equal {
        end += 1;
    }
    end
}

/// The update fields other than `status`, in [`Field::ALL`] order. `status` is the room
/// status that freeze and unfreeze set too, so it is followed with them.
fn plain_fields() -> impl Iterator<Item = Field> {
    Field::ALL.into_iter().filter(|k| *k != Field::Status)
}

/// What the kept ops so far set on one target.
#[derive(Default)]
struct TargetState {
    /// Room status: 0 after freeze, 1 after unfreeze (or an update setting it).
    status: Option<u8>,
    /// Mute or unmute (ban or unban), for a (client, room) pair.
    pair: Option<Action>,
    /// The last kept update that set each plain field, by [`Field::index`].
    fields: [Option<u32>; Field::COUNT],
}

impl TargetState {
    /// True when `op` would change nothing the kept ops have not already set.
    fn already<T: ExpandOp>(&self, ops: &[T], op: &T, ctx: &T::Ctx) -> bool {
        match op.action() {
            Action::Freeze => self.status == Some(0),
            Action::Unfreeze => self.status == Some(1),
            Action::Mute | Action::Unmute | Action::Ban | Action::Unban => {
                self.pair == Some(op.action())
            }
            Action::Update => {
                if !op.has_fields() {
                    return false;
                }
                let status = op.update_status();
                if status.is_some() && self.status != status {
                    return false;
                }
                plain_fields().filter(|&k| op.field_given(k)).all(|k| {
                    self.fields[k.index()]
                        .map(|i| &ops[i as usize])
                        .is_some_and(|prev| prev.has_fields() && prev.field_eq(op, k, ctx))
                })
            }
        }
    }

    fn apply<T: ExpandOp>(&mut self, j: u32, op: &T) {
        match op.action() {
            Action::Freeze => self.status = Some(0),
            Action::Unfreeze => self.status = Some(1),
            Action::Mute | Action::Unmute | Action::Ban | Action::Unban => {
                self.pair = Some(op.action())
            }
            Action::Update => {
                if op.has_fields() {
                    if let Some(s) = op.update_status() {
                        self.status = Some(s);
                    }
                    for k in plain_fields().filter(|&k| op.field_given(k)) {
                        self.fields[k.index()] = Some(j);
                    }
                }
            }
        }
    }
}

/// Compares the targets of two ops: a room for room ops, a (client, room) pair of the same
/// kind (mute or ban) otherwise.
fn target_cmp<T: ExpandOp>(a: &T, b: &T) -> Ordering {
    (a.action().kind(), a.client())
        .cmp(&(b.action().kind(), b.client()))
        .then_with(|| a.room().cmp(b.room()))
}

fn describe(sources: &[PathBuf], l: Location) -> String {
    if sources.len() <= 1 {
        format!("line {}", l.line)
    } else {
        let f = sources
            .get(l.file as usize)
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        format!("{f}:{}", l.line)
    }
}

/// The ops a conflict warning lists: the first [`MAX_LINES_LISTED`], and how many more.
fn listed(group: &[u32]) -> (Vec<u32>, usize) {
    let shown = group.iter().take(MAX_LINES_LISTED).copied().collect();
    (shown, group.len().saturating_sub(MAX_LINES_LISTED))
}

/// What conflicts on one target.
enum ConflictKind {
    /// A (client, room) pair both muted and unmuted.
    MuteUnmute,
    /// A (client, room) pair both banned and unbanned.
    BanUnban,
    /// A room both frozen and unfrozen (freeze, unfreeze, or an update setting `status`).
    Status,
    /// Several updates of a room set this field.
    Field(Field),
}

/// A conflict found, kept as op indices until its warning is known to be shown.
struct Conflict {
    /// The first op involved (warnings are ordered by it).
    first: u32,
    kind: ConflictKind,
    /// The ops listed, and how many more there are.
    lines: Vec<u32>,
    more: usize,
}

impl Conflict {
    fn message<T: ExpandOp>(&self, ops: &[T], place: &dyn Fn(Location) -> String) -> String {
        let mut parts: Vec<String> = self
            .lines
            .iter()
            .map(|&i| {
                let p = &ops[i as usize];
                format!("{} ({})", p.action(), place(p.source()))
            })
            .collect();
        if self.more > 0 {
            parts.push(format!("and {} more", self.more));
        }
        let list = parts.join(", ");
        let first = &ops[self.first as usize];
        match self.kind {
            ConflictKind::MuteUnmute => format!(
                "client {:?} in room {:?} is both muted and unmuted: {list}; they run in \
                 manifest order, the last one wins",
                first.client().unwrap_or_default(),
                first.room(),
            ),
            ConflictKind::BanUnban => format!(
                "client {:?} in room {:?} is both banned and unbanned: {list}; they run in \
                 manifest order, the last one wins",
                first.client().unwrap_or_default(),
                first.room(),
            ),
            ConflictKind::Status => format!(
                "room {:?} is both frozen and unfrozen: {list}; they run in manifest order, the \
                 last one wins",
                first.room(),
            ),
            ConflictKind::Field(k) => format!(
                "room {:?}: several updates set `{}`: {list}; they run in manifest order, the \
                 last one wins",
                first.room(),
                k.name(),
            ),
        }
    }
}

fn conflicts<T: ExpandOp>(ops: &[T], group: &[u32], found: &mut Vec<Conflict>) {
    let first = &ops[group[0] as usize];
    let pair = match first.action().kind() {
        ActionKind::Mute => Some((Action::Mute, Action::Unmute, ConflictKind::MuteUnmute)),
        ActionKind::Ban => Some((Action::Ban, Action::Unban, ConflictKind::BanUnban)),
        ActionKind::Room => None,
    };
    if let Some((on, off, kind)) = pair {
        let has = |a: Action| group.iter().any(|&i| ops[i as usize].action() == a);
        if has(on) && has(off) {
            let (lines, more) = listed(group);
            found.push(Conflict {
                first: group[0],
                kind,
                lines,
                more,
            });
        }
        return;
    }
    // Status writers: freeze (0), unfreeze (1), and updates that set `status`.
    let status_of = |o: &T| match o.action() {
        Action::Freeze => Some(0),
        Action::Unfreeze => Some(1),
        _ => o.update_status(),
    };
    let writers: Vec<u32> = group
        .iter()
        .copied()
        .filter(|&i| status_of(&ops[i as usize]).is_some())
        .collect();
    let mut values: Vec<u8> = writers
        .iter()
        .filter_map(|&i| status_of(&ops[i as usize]))
        .collect();
    values.sort_unstable();
    values.dedup();
    if values.len() > 1 {
        let (lines, more) = listed(&writers);
        found.push(Conflict {
            first: writers[0],
            kind: ConflictKind::Status,
            lines,
            more,
        });
    }
    // Several updates setting the same field (status is covered above).
    let updates: Vec<u32> = group
        .iter()
        .copied()
        .filter(|&i| ops[i as usize].has_fields())
        .collect();
    if updates.len() < 2 {
        return;
    }
    for k in plain_fields() {
        let setters: Vec<u32> = updates
            .iter()
            .copied()
            .filter(|&i| ops[i as usize].field_given(k))
            .collect();
        if setters.len() > 1 {
            let (lines, more) = listed(&setters);
            found.push(Conflict {
                first: setters[0],
                kind: ConflictKind::Field(k),
                lines,
                more,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::{Op, RoomFields};

    fn planned(ops: Vec<Op>) -> Vec<PlannedOp> {
        ops.into_iter()
            .enumerate()
            .map(|(i, op)| PlannedOp {
                op,
                source: Location {
                    file: 0,
                    line: i as u32 + 2,
                },
            })
            .collect()
    }

    fn run(ops: Vec<Op>) -> (Vec<PlannedOp>, Vec<String>) {
        let mut w = Warnings::default();
        let out = finish(planned(ops), &[PathBuf::from("m.csv")], &mut w);
        (out, w.finish())
    }

    #[test]
    fn duplicates_run_once_with_a_warning_naming_lines() {
        let (ops, w) = run(vec![
            Op::freeze("a"),
            Op::freeze("b"),
            Op::freeze("a"),
            Op::freeze("a"),
        ]);
        let rooms: Vec<_> = ops.iter().map(|p| (&*p.op.room, p.source.line)).collect();
        assert_eq!(rooms, vec![("a", 2), ("b", 3)]);
        assert_eq!(
            w,
            vec![
                "line 4 repeats line 2: freeze room \"a\" (runs once)",
                "line 5 repeats line 2: freeze room \"a\" (runs once)",
            ]
        );
    }

    #[test]
    fn conflicts_are_kept_in_order_with_a_warning() {
        let name = |n: &str| RoomFields {
            name: Some(n.into()),
            ..Default::default()
        };
        let (ops, w) = run(vec![
            Op::freeze("a"),
            Op::mute("c", "a"),
            Op::unfreeze("a"),
            Op::unmute("c", "a"),
            Op::update("b", name("x")),
            Op::update("b", name("y")),
            Op::mute("c", "b"),
        ]);
        assert_eq!(ops.len(), 7);
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w[0].starts_with(
            "room \"a\" is both frozen and unfrozen: freeze (line 2), unfreeze (line 4)"
        ));
        assert!(w[1].starts_with(
            "client \"c\" in room \"a\" is both muted and unmuted: mute (line 3), unmute (line 5)"
        ));
        assert!(w[2].starts_with(
            "room \"b\": several updates set `name`: update (line 6), update (line 7)"
        ));
    }

    #[test]
    fn a_repeat_after_a_conflicting_op_is_kept() {
        // mute, unmute, mute: the last mute decides the outcome, so it must run.
        let (ops, w) = run(vec![
            Op::mute("c", "a"),
            Op::unmute("c", "a"),
            Op::mute("c", "a"),
            Op::freeze("r"),
            Op::unfreeze("r"),
            Op::freeze("r"),
            Op::freeze("r"),
        ]);
        let lines: Vec<u32> = ops.iter().map(|p| p.source.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 5, 6, 7]);
        assert!(
            w[0].starts_with("line 8 repeats line 5: freeze room \"r\""),
            "{w:?}"
        );
        assert!(
            w.iter()
                .any(|w| w.contains("mute (line 2), unmute (line 3), mute (line 4)"))
        );
    }

    /// Bans follow the rules of mutes on their own pairs: a repeat runs once, ban then
    /// unban of one pair is a conflict that keeps both in order, and a mute and a ban of
    /// the same pair are different targets.
    #[test]
    fn bans_dedupe_and_conflict_per_pair_apart_from_mutes() {
        let (ops, w) = run(vec![
            Op::ban("c", "a"),
            Op::ban("c", "a"),
            Op::mute("c", "a"),
            Op::unban("c", "a"),
            Op::unmute("c", "b"),
            Op::ban("c", "b"),
            Op::ban("d", "a"),
        ]);
        let kept: Vec<(String, u32)> = ops
            .iter()
            .map(|p| (p.op.to_string(), p.source.line))
            .collect();
        assert_eq!(
            kept,
            [
                ("ban client \"c\" in room \"a\"".to_string(), 2),
                ("mute client \"c\" in room \"a\"".to_string(), 4),
                ("unban client \"c\" in room \"a\"".to_string(), 5),
                ("unmute client \"c\" in room \"b\"".to_string(), 6),
                ("ban client \"c\" in room \"b\"".to_string(), 7),
                ("ban client \"d\" in room \"a\"".to_string(), 8),
            ]
        );
        assert_eq!(
            w,
            [
                "line 3 repeats line 2: ban client \"c\" in room \"a\" (runs once)",
                "client \"c\" in room \"a\" is both banned and unbanned: ban (line 2), unban \
                 (line 5); they run in manifest order, the last one wins",
            ]
        );
        // ban, unban, ban: the last ban decides, so it runs.
        let (ops, _) = run(vec![
            Op::ban("c", "a"),
            Op::unban("c", "a"),
            Op::ban("c", "a"),
        ]);
        assert_eq!(ops.len(), 3);
    }

    #[test]
    fn a_repeated_update_is_dropped_only_if_nothing_changed_its_fields() {
        let f = |name: &str| RoomFields {
            name: Some(name.into()),
            ..Default::default()
        };
        let (ops, _) = run(vec![
            Op::update("r", f("A")),
            Op::update("r", f("B")),
            Op::update("r", f("A")),
            Op::update("s", f("A")),
            Op::freeze("s"),
            Op::update("s", f("A")),
        ]);
        let lines: Vec<u32> = ops.iter().map(|p| p.source.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 5, 6]);
    }

    /// Two ops naming the same rooms_file give the same op from the same line: the warning
    /// says so instead of "r.csv:2 repeats r.csv:2".
    #[test]
    fn a_repeat_from_the_same_place_says_so() {
        let at = Location { file: 1, line: 2 };
        let ops = vec![
            PlannedOp {
                op: Op::freeze("a"),
                source: at,
            },
            PlannedOp {
                op: Op::freeze("a"),
                source: at,
            },
        ];
        let mut w = Warnings::default();
        let sources = [PathBuf::from("m.yaml"), PathBuf::from("r.csv")];
        let out = finish(ops, &sources, &mut w);
        assert_eq!(out.len(), 1);
        assert_eq!(
            w.finish(),
            vec!["r.csv:2 gives the same op twice: freeze room \"a\" (runs once)"]
        );
    }

    /// Past the warnings cap, conflicts are counted but not formatted; the kept ones are
    /// the first in manifest order, each listing its first lines and how many more.
    #[test]
    fn conflict_warnings_are_capped_and_counted() {
        let mut ops = Vec::new();
        for r in 0..150 {
            ops.push(Op::freeze(format!("r{r}")));
            ops.push(Op::unfreeze(format!("r{r}")));
        }
        for _ in 0..8 {
            ops.push(Op::mute("c", "x"));
            ops.push(Op::unmute("c", "x"));
        }
        let (out, w) = run(ops);
        assert_eq!(out.len(), 316);
        assert_eq!(w.len(), crate::manifest::MAX_WARNINGS + 1);
        assert!(
            w[0].starts_with(
                "room \"r0\" is both frozen and unfrozen: freeze (line 2), unfreeze (line 3)"
            ),
            "{}",
            w[0]
        );
        assert!(w[99].starts_with("room \"r99\""), "{}", w[99]);
        assert_eq!(w[100], "... and 51 more warnings");
        // A long conflict lists six places and counts the rest.
        let mut ops = Vec::new();
        for _ in 0..5 {
            ops.push(Op::mute("c", "x"));
            ops.push(Op::unmute("c", "x"));
        }
        let (_, w) = run(ops);
        assert_eq!(
            w,
            vec![
                "client \"c\" in room \"x\" is both muted and unmuted: mute (line 2), unmute \
                 (line 3), mute (line 4), unmute (line 5), mute (line 6), unmute (line 7), and 4 \
                 more; they run in manifest order, the last one wins"
            ]
        );
    }

    #[test]
    fn no_warning_for_distinct_targets() {
        let (ops, w) = run(vec![Op::freeze("a"), Op::unfreeze("b"), Op::mute("c", "a")]);
        assert_eq!(ops.len(), 3);
        assert!(w.is_empty());
    }
}
