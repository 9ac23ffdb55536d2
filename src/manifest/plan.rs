//! What `run` would send now (docs/behaviour.md §3), as a value: the window compared with the time, an
//! existing journal taken into account (only its pending ops; a complete job sends nothing;
//! a journal of another manifest would be refused), the snapshot reads of `--snapshot` (a
//! room before its first change, a room's ban list before its first ban or unban), and the
//! requests in the order they are dispatched. `plan` prints it; nothing here sends or
//! writes anything.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::{Manifest, Occurrence};
use crate::journal::{Counts, Journal, JournalError, JournalOp, UndoPhase};
use crate::op::{Action, ActionKind, Auth, Credential, Op};

/// What a plan knows about an existing journal.
#[derive(Clone, Debug, Default)]
pub struct JournalView {
    pub path: PathBuf,
    /// The manifest checksum the journal was written for.
    pub checksum: String,
    /// The manifest's ops are not those the journal holds (a change of bytes alone, such
    /// as a comment, leaves them the same: `run` resumes).
    pub ops_changed: bool,
    /// Ops not yet final, in manifest order.
    pub pending: Vec<JournalOp>,
    /// Ops per state.
    pub counts: Counts,
    /// Rooms already read by an earlier `--snapshot` run (not read again).
    pub snapshotted: HashSet<String>,
    /// Rooms whose ban list an earlier `--snapshot` run read (not read again).
    pub snapshotted_bans: HashSet<String>,
    /// The job's undo phase, once planned.
    pub undo: Option<UndoPhase>,
}

impl JournalView {
    /// Reads the journal at `path` (read-only); the rooms it snapshotted only when
    /// `snapshot` is on.
    pub fn read(
        path: &Path,
        manifest: &Manifest,
        snapshot: bool,
    ) -> Result<JournalView, JournalError> {
        let j = Journal::open_read_only(path)?;
        let meta = j.meta()?;
        let ops_changed = !crate::journal::same_ops(&j, manifest)?;
        let pending = j.pending()?;
        let counts = j.counts()?;
        let (snapshotted, snapshotted_bans) = if snapshot {
            (j.snapshotted_rooms()?, j.snapshotted_ban_rooms()?)
        } else {
            (HashSet::new(), HashSet::new())
        };
        Ok(JournalView {
            path: path.to_path_buf(),
            checksum: meta.checksum,
            ops_changed,
            pending,
            counts,
            snapshotted,
            snapshotted_bans,
            undo: j.undo_phase()?,
        })
    }
}

/// What the journal means for the run.
#[derive(Clone, Copy, Debug)]
pub enum JournalState<'a> {
    /// No journal yet: `run` starts a new job.
    None,
    /// Written for other ops (its manifest's checksum): `run` would refuse it; the plan is
    /// that of a fresh run.
    OtherManifest { path: &'a Path, checksum: &'a str },
    /// Nothing pending: `run` would send nothing.
    Complete { path: &'a Path, counts: Counts },
    /// Some ops already final: `run` resumes with the rest.
    Resuming { path: &'a Path, pending: usize },
}

/// Where the time of the plan stands against the window occurrence `run` would work in.
#[derive(Clone, Copy, Debug)]
pub enum WindowState {
    None,
    NotYet(Occurrence),
    Open(Occurrence),
    Closed(Occurrence),
}

impl WindowState {
    fn of(w: Option<Occurrence>, now: jiff::Timestamp) -> WindowState {
        match w {
            None => WindowState::None,
            Some(w) if now < w.start => WindowState::NotYet(w),
            Some(w) if now >= w.end => WindowState::Closed(w),
            Some(w) => WindowState::Open(w),
        }
    }
}

/// One request `run` would send, with the manifest position (`seq`) of its op: a snapshot
/// read before a room's first change, one of a room's ban list before its first ban or
/// unban, or the op.
#[derive(Clone, Copy, Debug)]
pub enum Planned<'a> {
    Read { room: &'a str, seq: u64 },
    ReadBans { room: &'a str, seq: u64 },
    Op { seq: u64, op: &'a Op },
}

/// What `run` would do now.
#[derive(Clone, Debug)]
pub struct Plan<'a> {
    pub journal: JournalState<'a>,
    pub window: WindowState,
    /// The ops still to run, with their manifest position, in manifest order.
    pub todo: Vec<(u64, &'a Op)>,
    /// Whether rooms are read before their first change.
    pub snapshot: bool,
    /// Rooms read by an earlier run, not read again.
    pub snapshotted_earlier: usize,
    /// Ban lists read by an earlier run, not read again.
    pub ban_lists_earlier: usize,
    /// The requests in dispatch order; none when nothing would be sent.
    pub requests: Vec<Planned<'a>>,
}

impl Plan<'_> {
    /// How many room reads the requests hold.
    pub fn reads(&self) -> usize {
        self.requests
            .iter()
            .filter(|r| matches!(r, Planned::Read { .. }))
            .count()
    }

    /// How many ban-list reads the requests hold.
    pub fn ban_list_reads(&self) -> usize {
        self.requests
            .iter()
            .filter(|r| matches!(r, Planned::ReadBans { .. }))
            .count()
    }

    /// Whether any op still to run is a ban or an unban.
    pub fn changes_bans(&self) -> bool {
        self.todo
            .iter()
            .any(|(_, op)| op.action.kind() == ActionKind::Ban)
    }

    /// The ops still to run per action, every action listed.
    pub fn per_action(&self) -> Vec<(Action, usize)> {
        Action::ALL
            .into_iter()
            .map(|a| (a, self.todo.iter().filter(|(_, op)| op.action == a).count()))
            .collect()
    }

    /// Whether any op still to run changes a room (freeze, unfreeze, update).
    pub fn changes_rooms(&self) -> bool {
        self.todo.iter().any(|(_, op)| op.action.changes_room())
    }

    /// The credentials the ops still to run are sent with under `auth`, in a stable order.
    pub fn credentials(&self, auth: Auth) -> Vec<Credential> {
        auth.needed(self.todo.iter().map(|(_, o)| o.action))
    }

    /// The kinds of op still to run (room ops, mutes, bans), each once.
    pub fn kinds(&self) -> Vec<ActionKind> {
        let mut kinds: Vec<ActionKind> = self.todo.iter().map(|(_, o)| o.action.kind()).collect();
        kinds.sort();
        kinds.dedup();
        kinds
    }
}

/// The plan of `m` at `now`, given its journal if it has one; `snapshot` says whether `run`
/// would read rooms first (`--snapshot`, `--no-snapshot`, settings), `window` the occurrence
/// of the manifest's window `run` would work in (see [`crate::runner::Schedule`]).
pub fn plan<'a>(
    m: &'a Manifest,
    journal: Option<&'a JournalView>,
    snapshot: bool,
    window: Option<Occurrence>,
    now: jiff::Timestamp,
) -> Plan<'a> {
    let all = || -> Vec<(u64, &'a Op)> {
        m.ops
            .iter()
            .enumerate()
            .map(|(i, p)| (i as u64, &p.op))
            .collect()
    };
    let none = HashSet::new();
    let (state, todo, snapshotted) = match journal {
        None => (JournalState::None, all(), (&none, &none)),
        Some(j) if j.ops_changed => {
            let state = JournalState::OtherManifest {
                path: &j.path,
                checksum: &j.checksum,
            };
            (state, all(), (&none, &none))
        }
        Some(j) if j.pending.is_empty() => {
            let state = JournalState::Complete {
                path: &j.path,
                counts: j.counts,
            };
            (state, Vec::new(), (&none, &none))
        }
        Some(j) => {
            let state = JournalState::Resuming {
                path: &j.path,
                pending: j.pending.len(),
            };
            let todo = j.pending.iter().map(|p| (p.seq, &p.op)).collect();
            (state, todo, (&j.snapshotted, &j.snapshotted_bans))
        }
    };
    let window = WindowState::of(window, now);
    let sends = !matches!(state, JournalState::Complete { .. })
        && !matches!(window, WindowState::Closed(_));
    let requests = if sends {
        requests(&todo, snapshot, snapshotted)
    } else {
        Vec::new()
    };
    Plan {
        journal: state,
        window,
        snapshotted_earlier: snapshotted.0.len(),
        ban_lists_earlier: snapshotted.1.len(),
        todo,
        snapshot,
        requests,
    }
}

/// The requests in dispatch order: with `snapshot`, a room's read comes right before its
/// first change, and its ban list's right before its first ban or unban (mute and unmute
/// read nothing), unless an earlier run read it.
fn requests<'a>(
    todo: &[(u64, &'a Op)],
    snapshot: bool,
    (rooms_read, bans_read): (&HashSet<String>, &HashSet<String>),
) -> Vec<Planned<'a>> {
    let mut read: HashSet<&str> = HashSet::new();
    let mut read_bans: HashSet<&str> = HashSet::new();
    let mut requests = Vec::with_capacity(todo.len());
    for &(seq, op) in todo {
        let room = &*op.room;
        if snapshot {
            match op.action.kind() {
                ActionKind::Room if !rooms_read.contains(room) && read.insert(room) => {
                    requests.push(Planned::Read { room, seq });
                }
                ActionKind::Ban if !bans_read.contains(room) && read_bans.insert(room) => {
                    requests.push(Planned::ReadBans { room, seq });
                }
                _ => {}
            }
        }
        requests.push(Planned::Op { seq, op });
    }
    requests
}
