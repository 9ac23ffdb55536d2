//! What `run` would send now (SPEC §3), as a value: the window compared with the time, an
//! existing journal taken into account (only its pending ops; a complete job sends nothing;
//! a journal of another manifest would be refused), the snapshot reads of `--snapshot`, and
//! the requests in the order they are dispatched. `plan` prints it; nothing here sends or
//! writes anything.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::{Manifest, Occurrence};
use crate::journal::{Counts, Journal, JournalError, JournalOp, UndoPhase};
use crate::op::{Action, Credential, Op};

/// What a plan knows about an existing journal.
#[derive(Clone, Debug, Default)]
pub struct JournalView {
    pub path: PathBuf,
    /// The manifest checksum the journal was written for.
    pub checksum: String,
    /// Ops not yet final, in manifest order.
    pub pending: Vec<JournalOp>,
    /// Ops per state.
    pub counts: Counts,
    /// Rooms already read by an earlier `--snapshot` run (not read again).
    pub snapshotted: HashSet<String>,
    /// The job's undo phase, once planned.
    pub undo: Option<UndoPhase>,
}

impl JournalView {
    /// Reads the journal at `path` (read-only); the rooms it snapshotted only when
    /// `snapshot` is on.
    pub fn read(path: &Path, snapshot: bool) -> Result<JournalView, JournalError> {
        let j = Journal::open_read_only(path)?;
        let meta = j.meta()?;
        let pending = j.pending()?;
        let counts = j.counts()?;
        let snapshotted = if snapshot {
            j.snapshotted_rooms()?
        } else {
            HashSet::new()
        };
        Ok(JournalView {
            path: path.to_path_buf(),
            checksum: meta.checksum,
            pending,
            counts,
            snapshotted,
            undo: j.undo_phase()?,
        })
    }
}

/// What the journal means for the run.
#[derive(Clone, Copy, Debug)]
pub enum JournalState<'a> {
    /// No journal yet: `run` starts a new job.
    None,
    /// Written for another manifest (its checksum): `run` would refuse it; the plan is that
    /// of a fresh run.
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
/// read before a room's first change, or the op.
#[derive(Clone, Copy, Debug)]
pub enum Planned<'a> {
    Read { room: &'a str, seq: u64 },
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
    /// The requests in dispatch order; none when nothing would be sent.
    pub requests: Vec<Planned<'a>>,
}

impl Plan<'_> {
    /// How many snapshot reads the requests hold.
    pub fn reads(&self) -> usize {
        self.requests
            .iter()
            .filter(|r| matches!(r, Planned::Read { .. }))
            .count()
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

    /// The credentials the ops still to run are sent with, in a stable order.
    pub fn credentials(&self) -> Vec<Credential> {
        let mut creds: Vec<Credential> = self.todo.iter().map(|(_, o)| o.credential()).collect();
        creds.sort();
        creds.dedup();
        creds
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
    let no_rooms = HashSet::new();
    let (state, todo, snapshotted) = match journal {
        None => (JournalState::None, all(), &no_rooms),
        Some(j) if j.checksum != m.checksum => {
            let state = JournalState::OtherManifest {
                path: &j.path,
                checksum: &j.checksum,
            };
            (state, all(), &no_rooms)
        }
        Some(j) if j.pending.is_empty() => {
            let state = JournalState::Complete {
                path: &j.path,
                counts: j.counts,
            };
            (state, Vec::new(), &no_rooms)
        }
        Some(j) => {
            let state = JournalState::Resuming {
                path: &j.path,
                pending: j.pending.len(),
            };
            let todo = j.pending.iter().map(|p| (p.seq, &p.op)).collect();
            (state, todo, &j.snapshotted)
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
        snapshotted_earlier: snapshotted.len(),
        todo,
        snapshot,
        requests,
    }
}

/// The requests in dispatch order: with `snapshot`, a room's read comes right before its
/// first change (mute and unmute change no room), unless an earlier run read it.
fn requests<'a>(
    todo: &[(u64, &'a Op)],
    snapshot: bool,
    snapshotted: &HashSet<String>,
) -> Vec<Planned<'a>> {
    let mut read: HashSet<&str> = HashSet::new();
    let mut requests = Vec::with_capacity(todo.len());
    for &(seq, op) in todo {
        if snapshot
            && op.action.changes_room()
            && !snapshotted.contains(&*op.room)
            && read.insert(&op.room)
        {
            requests.push(Planned::Read {
                room: &op.room,
                seq,
            });
        }
        requests.push(Planned::Op { seq, op });
    }
    requests
}
