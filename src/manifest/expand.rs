//! The last step of loading: identical ops collapse into their first occurrence (a warning
//! names the repeating lines) and conflicting ops on one target (freeze and unfreeze of a
//! room, mute and unmute of a pair, several updates of one field) are kept in manifest order
//! with a warning.
//!
//! Built for million-op manifests: it sorts a `Vec<u32>` of indices instead of hashing owned
//! keys, so the only extra memory is four bytes per op.

use std::cmp::Ordering;
use std::path::PathBuf;

use super::{Location, PlannedOp, Warnings};
use crate::op::{Action, Op, RoomFields};

/// Lines listed in one conflict warning before "...".
const MAX_LINES_LISTED: usize = 6;

/// Removes duplicates and reports conflicts; `ops` must be in manifest order.
pub(crate) fn finish(
    ops: Vec<PlannedOp>,
    sources: &[PathBuf],
    warnings: &mut Warnings,
) -> Vec<PlannedOp> {
    let n = ops.len();
    let Ok(_) = u32::try_from(n) else {
        return ops; // more than 4 billion ops cannot be read into memory anyway
    };
    let place = |l: Location| describe(sources, l);

    // Duplicates: sort indices by op, then by position; the first of each run is kept.
    let mut idx: Vec<u32> = (0..n as u32).collect();
    idx.sort_unstable_by(|&a, &b| ops[a as usize].op.cmp(&ops[b as usize].op).then(a.cmp(&b)));
    let mut keep = vec![true; n];
    let mut dups: Vec<(u32, u32)> = Vec::new();
    for w in idx.windows(2) {
        let (a, b) = (w[0] as usize, w[1] as usize);
        if ops[a].op == ops[b].op {
            keep[b] = false;
            // `a` may itself be a duplicate: report against the first of the run.
            let first = dups
                .last()
                .filter(|(d, _)| *d as usize == a)
                .map(|(_, f)| *f)
                .unwrap_or(a as u32);
            dups.push((b as u32, first));
        }
    }
    dups.sort_unstable();
    for (d, f) in &dups {
        warnings.push_with(|| {
            format!(
                "{} repeats {}: {} (runs once)",
                place(ops[*d as usize].source),
                place(ops[*f as usize].source),
                ops[*d as usize].op
            )
        });
    }

    // Conflicts: group the remaining ops by target, in manifest order within a group.
    idx.retain(|&i| keep[i as usize]);
    idx.sort_unstable_by(|&a, &b| {
        target_cmp(&ops[a as usize].op, &ops[b as usize].op).then(a.cmp(&b))
    });
    let mut found: Vec<(u32, String)> = Vec::new();
    let mut start = 0;
    while start < idx.len() {
        let mut end = start + 1;
        while end < idx.len()
            && target_cmp(&ops[idx[start] as usize].op, &ops[idx[end] as usize].op)
                == Ordering::Equal
        {
            end += 1;
        }
        if end - start > 1 {
            conflicts(&ops, &idx[start..end], &place, &mut found);
        }
        start = end;
    }
    found.sort_by_key(|(i, _)| *i);
    for (_, w) in found {
        warnings.push(w);
    }

    drop(idx);
    let mut out = ops;
    let mut k = keep.into_iter();
    out.retain(|_| k.next().unwrap_or(true));
    out
}

/// Compares the targets of two ops: a room for room ops, a (client, room) pair otherwise.
fn target_cmp(a: &Op, b: &Op) -> Ordering {
    (a.action.needs_client(), a.client.as_deref())
        .cmp(&(b.action.needs_client(), b.client.as_deref()))
        .then_with(|| a.room.cmp(&b.room))
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

fn list_lines(ops: &[PlannedOp], group: &[u32], place: &dyn Fn(Location) -> String) -> String {
    let mut parts: Vec<String> = group
        .iter()
        .take(MAX_LINES_LISTED)
        .map(|&i| {
            let p = &ops[i as usize];
            format!("{} ({})", p.op.action, place(p.source))
        })
        .collect();
    if group.len() > MAX_LINES_LISTED {
        parts.push(format!("and {} more", group.len() - MAX_LINES_LISTED));
    }
    parts.join(", ")
}

fn conflicts(
    ops: &[PlannedOp],
    group: &[u32],
    place: &dyn Fn(Location) -> String,
    found: &mut Vec<(u32, String)>,
) {
    let first = ops[group[0] as usize].op.clone();
    if first.action.needs_client() {
        let has = |a: Action| group.iter().any(|&i| ops[i as usize].op.action == a);
        if has(Action::Mute) && has(Action::Unmute) {
            found.push((
                group[0],
                format!(
                    "client {:?} in room {:?} is both muted and unmuted: {}; they run in \
                     manifest order, the last one wins",
                    first.client.as_deref().unwrap_or_default(),
                    first.room,
                    list_lines(ops, group, place)
                ),
            ));
        }
        return;
    }
    // Status writers: freeze (0), unfreeze (1), and updates that set `status`.
    let status_of = |o: &Op| match o.action {
        Action::Freeze => Some(0),
        Action::Unfreeze => Some(1),
        _ => o.fields.as_ref().and_then(|f| f.status),
    };
    let writers: Vec<u32> = group
        .iter()
        .copied()
        .filter(|&i| status_of(&ops[i as usize].op).is_some())
        .collect();
    let mut values: Vec<u8> = writers
        .iter()
        .filter_map(|&i| status_of(&ops[i as usize].op))
        .collect();
    values.sort_unstable();
    values.dedup();
    if values.len() > 1 {
        found.push((
            writers[0],
            format!(
                "room {:?} is both frozen and unfrozen: {}; they run in manifest order, the \
                 last one wins",
                first.room,
                list_lines(ops, &writers, place)
            ),
        ));
    }
    // Several updates setting the same field (status is covered above).
    let updates: Vec<(u32, Vec<&'static str>)> = group
        .iter()
        .filter_map(|&i| {
            let f: &RoomFields = ops[i as usize].op.fields.as_deref()?;
            Some((i, f.given()))
        })
        .collect();
    if updates.len() < 2 {
        return;
    }
    for name in RoomFields::NAMES {
        if name == "status" {
            continue;
        }
        let setters: Vec<u32> = updates
            .iter()
            .filter(|(_, g)| g.contains(&name))
            .map(|(i, _)| *i)
            .collect();
        if setters.len() > 1 {
            found.push((
                setters[0],
                format!(
                    "room {:?}: several updates set `{name}`: {}; they run in manifest \
                     order, the last one wins",
                    first.room,
                    list_lines(ops, &setters, place)
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn no_warning_for_distinct_targets() {
        let (ops, w) = run(vec![Op::freeze("a"), Op::unfreeze("b"), Op::mute("c", "a")]);
        assert_eq!(ops.len(), 3);
        assert!(w.is_empty());
    }
}
