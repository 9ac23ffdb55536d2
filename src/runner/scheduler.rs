//! The scheduler: one loop that owns all delivery state. Ops sharing a lock key (a room, a
//! muted client, or a ban pair) form a chain that runs one at a time in manifest order;
//! chain heads wait in a ready queue per credential (lowest `seq` first) and run
//! concurrently up to `concurrency`. The credential of each op is the one it is sent with
//! ([`RunnerOptions::auth`]), so room ops and mutes on the API key share its one pace. Each
//! dispatched attempt is a task that waits for its credential's pace, optionally snapshots
//! the room (or its ban list, before a ban or unban), and sends; its result comes back to the loop, which
//! records it, schedules a retry (backoff with full jitter, or the server's hint), or stops
//! the job (401, failure bound, deadline, signal). O(n log n) in the number of ops.
//!
//! [`run`] drives a `Scheduler` (the loop's state) round by round: `dispatch` starts what may
//! go, `next_event` waits for a signal, the deadline, an answer or a wake-up time, and
//! `on_result` applies an answer. The chains and queues are `Queues`; what the attempt tasks
//! share with the loop (ops, pacers, the halt token) is `Shared`.
//!
//! Decisions:
//! - 401 on a credential: nothing more is dispatched at all (the job aborts with exit 3);
//!   requests already on the wire finish and their true outcome is recorded (an applied
//!   change is recorded as done). Requests of that credential waiting for their pace are not
//!   sent. The op answered 401 stays pending (the op is not at fault), as do all ops not
//!   finished, so a run with fixed credentials resumes them.
//! - A credential's rate budget lost mid-run (its Redis gone, its ledger file unusable):
//!   nothing more is dispatched (exit 4, resumable), never anything unpaced; requests on
//!   the wire finish and are recorded, the op whose draw failed stays pending.
//! - `max_attempts` is a budget per run: a resumed run gives a pending op a fresh budget;
//!   the attempts recorded in the journal are the total across runs.
//! - The failure ratio is failed / (done + failed) over this run, checked only once
//!   [`RunnerOptions::failure_ratio_min_sample`] ops have finished.
//! - Sent and not recorded is bounded: at most `concurrency` requests are on the wire, and
//!   those plus the answered ops whose outcome the journal has not committed yet stay under
//!   `2 × concurrency`, so a kill -9 at any moment leaves at most that many ops to be sent
//!   again, however slow the disk. Waiting for every commit before reusing a slot would make
//!   the bound `concurrency` but costs ~5% of throughput at 20 ms answers (measured), so
//!   answers overlap the journal's next group commit instead.
//! - At a stop (deadline, signal, abort) retries not yet sent are dropped: those ops stay
//!   pending. A second signal aborts the requests in flight; those ops stay pending too.
//! - A host that never answers: while no request of this run has reached the server (every
//!   one failed in DNS, connect or TLS), such failures are retried with the backoff as any
//!   transient one, but no op is failed for them: the first op to fail so
//!   [`UNREACHED_ATTEMPTS`] times stops the run (exit 3), every op still pending, with one
//!   warning, not one per attempt. Once the server has answered, or may have seen a request
//!   (a timeout or a reset after connecting), connect failures are transient as any other:
//!   a flaky network must not abort a job.
//! - Ban-list snapshots: bans of one room on different clients may run at once, so two of
//!   them may both read the room's list before either is recorded. The journal keeps the
//!   first, and that one was read before any change of the job: each op's change goes out
//!   only once its own read is recorded, so a read that could see a change started after a
//!   snapshot of the room was already on record.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::task::{JoinError, JoinSet};
use tokio::time::{Instant, Interval};
use tokio_util::sync::CancellationToken;

use crate::api::{Attempt, Outcome, Reach, Unreached};
use crate::budget::Budget;
use crate::journal::{JournalOp, OpRecord, OpState};
use crate::op::{Action, ActionKind, Auth, Credential, Op};
use crate::output::Progress;
use crate::runner::executor::{Executor, Recorder};
use crate::runner::forecast;
use crate::runner::pacing::{Pacer, gcra_for};
use crate::runner::retry::Backoff;
use crate::runner::summary::Stats;
use crate::units::Rate;

/// How a run delivers.
#[derive(Clone, Debug)]
pub struct RunnerOptions {
    pub concurrency: usize,
    /// Per credential.
    pub rate: Rate,
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub max_failures: Option<u64>,
    pub max_failure_ratio: Option<f64>,
    /// Ops that must have finished before the ratio is checked.
    pub failure_ratio_min_sample: u64,
    /// Do not dispatch before this instant (YAML window start); the label says until when.
    pub start_at: Option<(Instant, String)>,
    /// Stop dispatching at this instant; the label says which limit it is.
    pub deadline: Option<(Instant, String)>,
    pub snapshot: bool,
    /// Seed of the jitter; `None` seeds from the OS.
    pub seed: Option<u64>,
    /// The credential each kind of op is sent with, and so the pace it waits for.
    pub auth: Auth,
    /// The budget of each credential (client key and token, API key), opened at
    /// `pacing::gcra_for(rate)`; `None`: one of this process's own at `rate`.
    pub budgets: [Option<Budget>; 2],
}

impl RunnerOptions {
    /// These options with the credentials' shared rate budgets (opened by the caller).
    pub(crate) fn with_budgets(mut self, budgets: [Option<Budget>; 2]) -> RunnerOptions {
        self.budgets = budgets;
        self
    }
}

impl Default for RunnerOptions {
    fn default() -> RunnerOptions {
        RunnerOptions {
            concurrency: super::DEFAULT_CONCURRENCY as usize,
            rate: super::DEFAULT_RATE,
            max_attempts: super::DEFAULT_MAX_ATTEMPTS,
            backoff: Backoff::default(),
            max_failures: None,
            max_failure_ratio: None,
            failure_ratio_min_sample: 20,
            start_at: None,
            deadline: None,
            snapshot: false,
            seed: None,
            auth: Auth::default(),
            budgets: [None, None],
        }
    }
}

/// What a run's journal already holds snapshots of (`--snapshot`): those are not read
/// again. From a set of rooms, the rooms alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshotted {
    /// Rooms read before their first change.
    pub rooms: HashSet<String>,
    /// Rooms whose ban list was read before their first ban or unban.
    pub bans: HashSet<String>,
}

impl From<HashSet<String>> for Snapshotted {
    fn from(rooms: HashSet<String>) -> Snapshotted {
        Snapshotted {
            rooms,
            bans: HashSet::new(),
        }
    }
}

impl Snapshotted {
    /// The set `kind` of op snapshots into: rooms for room ops, ban lists for bans; none for
    /// mutes (the API shows no mute state to read before one).
    fn of(&self, kind: ActionKind) -> Option<&HashSet<String>> {
        match kind {
            ActionKind::Room => Some(&self.rooms),
            ActionKind::Ban => Some(&self.bans),
            ActionKind::Mute => None,
        }
    }
}

/// Outside control of a run: `stop` (first SIGINT/SIGTERM) stops dispatching; `cancel`
/// (second signal) also aborts the requests in flight.
#[derive(Clone, Debug, Default)]
pub struct Controls {
    pub stop: CancellationToken,
    pub cancel: CancellationToken,
}

/// Why a run ended.
#[derive(Clone, Debug, PartialEq)]
pub enum StopReason {
    /// Every op of the run is final.
    Completed,
    /// 401: the credential was rejected.
    CredentialsRejected {
        credential: Credential,
        status: u16,
        code: Option<String>,
        message: Option<String>,
    },
    /// `--max-failures` / `--max-failure-ratio` passed.
    FailureBound(String),
    /// `--until`, `--max-duration` or the window's end (the label says which).
    Deadline(String),
    /// SIGINT/SIGTERM.
    Signal { cancelled_in_flight: bool },
    /// An outcome could not be recorded; nothing more is sent.
    Journal(String),
    /// No request of the run reached the server ([`UNREACHED_ATTEMPTS`]); the last failure.
    Unreachable(Unreached),
    /// The credential's rate budget (its ledger) failed mid-run: nothing more is sent
    /// rather than send unpaced.
    BudgetLost(String),
}

impl StopReason {
    /// How much a reason must be acted on: a later reason replaces an earlier one only when
    /// it ranks higher, so a 401 (or a journal that cannot be written) met while a deadline
    /// or a signal drains the ops in flight still ends the run with its exit 3 and the
    /// message naming the rejected credential, instead of a resumable exit 4.
    fn rank(&self) -> u8 {
        match self {
            StopReason::Completed => 0,
            StopReason::Deadline(_) | StopReason::Signal { .. } | StopReason::BudgetLost(_) => 1,
            StopReason::FailureBound(_) => 2,
            StopReason::CredentialsRejected { .. } | StopReason::Unreachable(_) => 3,
            StopReason::Journal(_) => 4,
        }
    }

    /// The message of a run stopped because nothing reached the server, `pending` ops left.
    pub(crate) fn unreachable_message(u: &Unreached, pending: u64) -> String {
        format!(
            "cannot reach {u}; nothing reached the server; {pending} ops stay pending; check --base-url / IMKIT_BASE_URL, DNS, the network, then run again"
        )
    }

    /// Whether `new` should replace `current` as the run's reason to stop.
    fn overrides(new: &StopReason, current: Option<&StopReason>) -> bool {
        current.is_none_or(|c| new.rank() > c.rank())
    }
}

/// The result of a run.
#[derive(Clone, Debug)]
pub struct RunReport {
    pub stop: StopReason,
    pub stats: Stats,
}

/// What an attempt recorded before its change, if anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Snap {
    /// No read (none wanted, or it did not get an answer to record).
    None,
    /// A read recorded with what it gave.
    Known,
    /// A read recorded as unknown: the server refused it (403, 404, ...).
    Unknown,
}

/// What one attempt task hands back to the scheduler.
enum TaskResult {
    Sent {
        attempt: Attempt,
        sent_at: Instant,
        snap: Snap,
    },
    /// Halted before sending: the op stays as it was.
    NotSent {
        snap: Snap,
    },
    Journal(String),
    /// The budget failed before sending: the op stays as it was, and the run stops.
    BudgetLost {
        error: String,
        snap: Snap,
    },
}

/// What woke the scheduler up.
enum Event {
    /// Second signal: abort the requests in flight.
    Cancel,
    /// First signal: stop dispatching.
    Stop,
    /// The deadline passed.
    Deadline,
    /// A task ended (`None` when none is left).
    Joined(Option<Result<(u32, TaskResult), JoinError>>),
    /// Time passed or the journal made progress: look again.
    Tick,
}

const NONE: u32 = u32::MAX;

/// Attempts of one op that never reached the server, while none of the run has, before the
/// run stops (or fewer when `max_attempts` is lower). Three attempts of one op are spaced by
/// the backoff (ceilings 0.5 s then 1 s by default), a window that lets a blip pass (a
/// resolver or a load balancer restarting) and still stops a wrong `--base-url` within
/// seconds. Counting failures across ops instead would stop within milliseconds at a high
/// concurrency (the whole first wave fails at once) and take long at a low one; waiting for
/// all of `max_attempts` gains nothing, since a stop fails no op and a re-run resumes.
pub(crate) const UNREACHED_ATTEMPTS: u32 = 3;

/// Whether a request of this run has reached the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Contact {
    /// None has: each failed to connect (or was refused on our side).
    Never,
    /// One may have: it was sent and no answer came (a timeout, a reset).
    Possibly,
    /// The server answered one (any HTTP status).
    Answered,
}

impl Contact {
    /// The contact once `reach` is known too.
    fn after(self, reach: &Reach) -> Contact {
        let seen = match reach {
            Reach::Answered => Contact::Answered,
            Reach::NoAnswer => Contact::Possibly,
            Reach::Unreached(_) | Reach::NotSent => Contact::Never,
        };
        self.max(seen)
    }
}

fn cred_index(c: Credential) -> usize {
    match c {
        Credential::ClientToken => 0,
        Credential::ApiKey => 1,
    }
}

/// Runs `ops` (pending ops in manifest order) to the end, or to a stop.
pub async fn run<E: Executor, R: Recorder>(
    ops: Vec<JournalOp>,
    exec: Arc<E>,
    rec: Arc<R>,
    opts: RunnerOptions,
    controls: Controls,
    snapshotted: impl Into<Snapshotted>,
    progress: &mut Progress,
) -> RunReport {
    let mut scheduler = Scheduler::new(ops, exec, rec, opts, controls, snapshotted.into());
    scheduler.wait_for_window().await;
    scheduler.forecast_from_rate();
    loop {
        scheduler.release_due_retries();
        let unrecorded = scheduler.unrecorded();
        scheduler.dispatch(unrecorded);
        if scheduler.is_over() {
            break;
        }
        let event = scheduler.next_event(unrecorded).await;
        scheduler.on_event(event);
        scheduler.show_progress(progress);
        scheduler.forecast_from_measured();
    }
    scheduler.show_progress(progress);
    progress.finish();
    scheduler.into_report()
}

/// The order ops may go in: `next_in_chain[i]` is the next op with the same lock key as op
/// `i`; chain heads wait in `ready` (per credential, lowest index first) and retries in
/// `delayed` until their time.
struct Queues {
    next_in_chain: Vec<u32>,
    ready: [BinaryHeap<Reverse<u32>>; 2],
    delayed: BinaryHeap<Reverse<(Instant, u32)>>,
    /// Which ready queue (credential) each op waits in.
    auth: Auth,
}

impl Queues {
    /// Chains `ops` (sorted by `seq`) by lock key; the first op of each chain is ready, in
    /// the queue of the credential `auth` sends it with.
    fn new(ops: &[JournalOp], auth: Auth) -> Queues {
        let mut next_in_chain = vec![NONE; ops.len()];
        let mut ready: [BinaryHeap<Reverse<u32>>; 2] = [BinaryHeap::new(), BinaryHeap::new()];
        // Chains by sorting indices on (lock key, index): neighbours with one key are
        // consecutive ops of one chain, in manifest order. 4 bytes an op instead of a map
        // with a borrowed key per op (issue 15, memory).
        let mut order: Vec<u32> = (0..ops.len() as u32).collect();
        order.sort_unstable_by_key(|&i| (ops[i as usize].op.lock_key(), i));
        let mut prev: Option<u32> = None;
        for &i in &order {
            let op = &ops[i as usize].op;
            match prev {
                Some(p) if ops[p as usize].op.lock_key() == op.lock_key() => {
                    next_in_chain[p as usize] = i;
                }
                _ => ready[cred_index(auth.for_op(op))].push(Reverse(i)),
            }
            prev = Some(i);
        }
        Queues {
            next_in_chain,
            ready,
            delayed: BinaryHeap::new(),
            auth,
        }
    }

    fn make_ready(&mut self, ops: &[JournalOp], i: u32) {
        self.ready[cred_index(self.auth.for_op(&ops[i as usize].op))].push(Reverse(i));
    }

    /// Op `i` is final: the next op of its chain becomes ready.
    fn release_next(&mut self, ops: &[JournalOp], i: u32) {
        let next = self.next_in_chain[i as usize];
        if next != NONE {
            self.make_ready(ops, next);
        }
    }

    /// Retries whose time has come become ready again.
    fn release_due(&mut self, ops: &[JournalOp], now: Instant) {
        while let Some(Reverse((t, i))) = self.delayed.peek().copied() {
            if t > now {
                break;
            }
            self.delayed.pop();
            self.make_ready(ops, i);
        }
    }

    fn retry_at(&mut self, at: Instant, i: u32) {
        self.delayed.push(Reverse((at, i)));
    }

    fn is_idle(&self) -> bool {
        self.ready.iter().all(|h| h.is_empty()) && self.delayed.is_empty()
    }

    /// The lowest ready op over the credentials `open` lets through, and its credential.
    fn pick(&self, open: impl Fn(usize) -> bool) -> Option<(usize, u32)> {
        let mut pick: Option<(usize, u32)> = None;
        for (c, heap) in self.ready.iter().enumerate() {
            if !open(c) {
                continue;
            }
            if let Some(Reverse(i)) = heap.peek()
                && pick.is_none_or(|(_, j)| *i < j)
            {
                pick = Some((c, *i));
            }
        }
        pick
    }

    fn take(&mut self, c: usize) {
        self.ready[c].pop();
    }

    fn has_ready(&self, c: usize) -> bool {
        !self.ready[c].is_empty()
    }

    /// When the earliest retry is due.
    fn next_retry(&self) -> Option<Instant> {
        self.delayed.peek().map(|Reverse((t, _))| *t)
    }
}

/// What the scheduler shares with its attempt tasks.
struct Shared<E, R> {
    ops: Vec<JournalOp>,
    exec: Arc<E>,
    rec: Arc<R>,
    /// Per credential.
    pacers: [Pacer; 2],
    /// Per credential: answered 401, nothing more goes out on it.
    rejected: [AtomicBool; 2],
    /// Cancelled at a stop: attempts waiting for their pace are not sent.
    halt: CancellationToken,
    /// The credential each kind of op is sent with.
    auth: Auth,
}

impl<E, R> Shared<E, R> {
    /// The ready queue and pacer (the credential) of op `i`.
    fn cred_of(&self, i: u32) -> usize {
        cred_index(self.auth.for_op(&self.ops[i as usize].op))
    }
}

impl<E: Executor, R: Recorder> Shared<E, R> {
    /// One attempt of op `i` on credential `c`, run as its own task.
    async fn attempt(&self, c: usize, i: u32, want_snapshot: bool) -> TaskResult {
        let op = &self.ops[i as usize].op;
        let (pacer, rejected, halt) = (&self.pacers[c], &self.rejected[c], &self.halt);
        let halted = || halt.is_cancelled() || rejected.load(Ordering::Relaxed);
        let mut snap = Snap::None;
        // Waiting for the pace is not being in flight: a stop ends the wait.
        let paced = || async {
            tokio::select! {
                r = pacer.acquire() => Some(r),
                _ = halt.cancelled() => None,
            }
        };
        let not_sent = |paced: Option<Result<(), crate::budget::BudgetError>>, snap| match paced {
            Some(Ok(())) if !halted() => None,
            Some(Err(e)) => Some(TaskResult::BudgetLost {
                error: e.to_string(),
                snap,
            }),
            _ => Some(TaskResult::NotSent { snap }),
        };
        if want_snapshot {
            if let Some(r) = not_sent(paced().await, snap) {
                return r;
            }
            let sent_at = Instant::now();
            snap = match self.snapshot(op).await {
                Ok(snap) => snap,
                Err(NoSnapshot::Unanswered(attempt)) => {
                    return TaskResult::Sent {
                        attempt,
                        sent_at,
                        snap,
                    };
                }
                Err(NoSnapshot::Journal(e)) => return TaskResult::Journal(e),
            };
        }
        if let Some(r) = not_sent(paced().await, snap) {
            return r;
        }
        let sent_at = Instant::now();
        let attempt = self.exec.send(op, self.auth.for_op(op)).await;
        TaskResult::Sent {
            attempt,
            sent_at,
            snap,
        }
    }

    /// Reads what `op` is about to change (its room, or the room's ban list) and records
    /// it.
    async fn snapshot(&self, op: &Op) -> Result<Snap, NoSnapshot> {
        let credential = self.auth.for_op(op);
        let read = match op.action.kind() {
            ActionKind::Ban => self.exec.read_bans(&op.room, credential).await,
            _ => self.exec.read_room(&op.room, credential).await,
        };
        let prior = match read {
            Ok(v) => Some(v),
            Err(a) => match a.outcome {
                Outcome::Transient { .. } | Outcome::CredentialsRejected { .. } => {
                    return Err(NoSnapshot::Unanswered(a));
                }
                // Refused (403/404/...): the prior state is unknown, and recorded so; the
                // op goes on (a ban list is readable by the room's owner only).
                _ => None,
            },
        };
        let snap = if prior.is_some() {
            Snap::Known
        } else {
            Snap::Unknown
        };
        let recorded = match op.action.kind() {
            ActionKind::Ban => self.rec.record_ban_snapshot(&op.room, prior).await,
            _ => self.rec.record_snapshot(&op.room, prior).await,
        };
        recorded
            .map(|()| snap)
            .map_err(|e| NoSnapshot::Journal(e.to_string()))
    }
}

/// Why an attempt's snapshot was not recorded.
enum NoSnapshot {
    /// The read got no answer to record (transient, or the credential was rejected): the
    /// attempt ends there and is retried like a send.
    Unanswered(Attempt),
    /// The journal could not record it.
    Journal(String),
}

/// The one loop's state: what may go next, what is in flight, why the run stops, and what
/// it did so far.
struct Scheduler<E, R> {
    shared: Arc<Shared<E, R>>,
    opts: RunnerOptions,
    controls: Controls,
    /// At least 1.
    concurrency: usize,
    queues: Queues,
    /// Per op: attempts in this run.
    attempts: Vec<u32>,
    rng: StdRng,
    tasks: JoinSet<(u32, TaskResult)>,
    stop: Option<StopReason>,
    /// The second signal came: the tasks were aborted.
    cancelled: bool,
    /// Wakes the loop every second, for the progress display.
    tick: Interval,
    stats: Stats,
    /// Rooms (and ban lists) whose prior state the journal holds.
    snapshotted: Snapshotted,
    started: Instant,
    /// Whether a request of this run has reached the server.
    contact: Contact,
    /// The warning that the server cannot be reached was printed.
    unreached_warned: bool,
    /// The warning that the measured pace cannot finish before the deadline was given.
    warned_measured: bool,
}

impl<E: Executor, R: Recorder> Scheduler<E, R> {
    fn new(
        mut ops: Vec<JournalOp>,
        exec: Arc<E>,
        rec: Arc<R>,
        opts: RunnerOptions,
        controls: Controls,
        snapshotted: Snapshotted,
    ) -> Self {
        ops.sort_by_key(|o| o.seq);
        let started = Instant::now();
        let stats = Stats {
            total: ops.len() as u64,
            ..Default::default()
        };
        let queues = Queues::new(&ops, opts.auth);
        let attempts = vec![0u32; ops.len()];
        let shared = Arc::new(Shared {
            ops,
            exec,
            rec,
            pacers: [Credential::ClientToken, Credential::ApiKey].map(|c| {
                let budget = opts.budgets[cred_index(c)].clone();
                let budget = budget.unwrap_or_else(|| Budget::in_process(gcra_for(opts.rate)));
                Pacer::new(c, opts.rate, budget)
            }),
            rejected: [AtomicBool::new(false), AtomicBool::new(false)],
            halt: CancellationToken::new(),
            auth: opts.auth,
        });
        let rng = match opts.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_os_rng(),
        };
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        Scheduler {
            shared,
            concurrency: opts.concurrency.max(1),
            opts,
            controls,
            queues,
            attempts,
            rng,
            tasks: JoinSet::new(),
            stop: None,
            cancelled: false,
            tick,
            stats,
            snapshotted,
            started,
            contact: Contact::Never,
            unreached_warned: false,
            warned_measured: false,
        }
    }

    /// The time left before the deadline, and its label, unless the run is stopping.
    fn time_left(&self) -> Option<(Duration, &str)> {
        let (at, label) = self.opts.deadline.as_ref()?;
        if self.stop.is_some() {
            return None;
        }
        Some((at.saturating_duration_since(Instant::now()), label.as_str()))
    }

    /// At the start: warns when `--rate` alone cannot send every op before the deadline.
    fn forecast_from_rate(&self) {
        let Some((left, label)) = self.time_left() else {
            return;
        };
        let mut per_credential = [(0u64, 0u64); 2];
        let mut read = HashSet::new();
        let mut reads = 0u64;
        for (i, o) in self.shared.ops.iter().enumerate() {
            let c = &mut per_credential[self.shared.cred_of(i as u32)];
            c.0 += 1;
            c.1 += 1;
            if self.opts.snapshot
                && o.op.action.changes_room()
                && !self.snapshotted.rooms.contains(&*o.op.room)
                && read.insert(&*o.op.room)
            {
                c.1 += 1;
                reads += 1;
            }
        }
        if let Some(f) = forecast::from_rate(&per_credential, self.opts.rate, left) {
            let with_reads = match reads {
                0 => String::new(),
                n => format!(" and their {n} room reads"),
            };
            tracing::warn!(
                ops_left = f.left,
                "the job cannot finish before {label}, {} away: at --rate {} the {} ops{with_reads} \
                 need about {}; about {} ops will be left pending then (run again to resume them)",
                forecast::show(left),
                self.opts.rate,
                self.shared.ops.len(),
                forecast::show(f.needed),
                f.left
            );
        }
    }

    /// Once the pace measured so far shows that the ops left cannot finish before the
    /// deadline: warns, once.
    fn forecast_from_measured(&mut self) {
        if self.warned_measured {
            return;
        }
        let Some((left, label)) = self.time_left() else {
            return;
        };
        let st = &self.stats;
        let elapsed = self.started.elapsed();
        if let Some(f) = forecast::from_measured(st.finished(), elapsed, st.pending(), left) {
            tracing::warn!(
                ops_left = f.left,
                "at the pace measured so far ({:.1} ops/s) the {} ops still to send need about \
                 {}, but {label} is {} away: about {} ops will be left pending then",
                st.finished() as f64 / elapsed.as_secs_f64().max(1e-3),
                st.pending(),
                forecast::show(f.needed),
                forecast::show(left),
                f.left
            );
            self.warned_measured = true;
        }
    }

    /// The window's start: wait, interruptible by a signal; unless a deadline comes first,
    /// then waiting would only end in a stop with nothing sent.
    async fn wait_for_window(&mut self) {
        let deadline_first = match (&self.opts.start_at, &self.opts.deadline) {
            (Some((start, _)), Some((end, _))) => end <= start,
            _ => false,
        };
        if let Some((at, label)) = &self.opts.start_at
            && *at > Instant::now()
            && !deadline_first
        {
            tracing::info!("waiting until {label} before sending anything (the job's window)");
            tokio::select! {
                _ = tokio::time::sleep_until(*at) => {}
                _ = self.controls.stop.cancelled() => {
                    self.stop = Some(StopReason::Signal { cancelled_in_flight: false });
                }
            }
            // Elapsed time and ops/s count from the first request, not from the wait.
            self.started = Instant::now();
        }
        if self.stop.is_none()
            && let Some((at, label)) = &self.opts.deadline
            && (*at <= Instant::now() || deadline_first)
        {
            if deadline_first && *at > Instant::now() {
                let start = self
                    .opts
                    .start_at
                    .as_ref()
                    .map(|(_, l)| l.as_str())
                    .unwrap_or_default();
                tracing::warn!("{label} comes before {start}: nothing is sent");
            } else {
                tracing::warn!("{label} has already passed: nothing is sent");
            }
            self.stop = Some(StopReason::Deadline(label.clone()));
        }
    }

    /// Makes `reason` the run's reason to stop when it ranks higher than the current one.
    fn stop_with(&mut self, reason: StopReason) {
        if StopReason::overrides(&reason, self.stop.as_ref()) {
            self.shared.halt.cancel();
            self.stop = Some(reason);
        }
    }

    /// Due retries become ready again.
    fn release_due_retries(&mut self) {
        self.queues.release_due(&self.shared.ops, Instant::now());
    }

    /// Answered ops whose outcome the journal has not committed yet. They would be sent
    /// again after a kill, like the ones on the wire: together they stay under
    /// [`Self::unrecorded_room`], however slow the disk (see the module's decisions).
    fn unrecorded(&mut self) -> usize {
        match self.shared.rec.not_durable() {
            Ok(n) => usize::try_from(n).unwrap_or(usize::MAX),
            Err(e) => {
                self.stop_with(StopReason::Journal(e.to_string()));
                0
            }
        }
    }

    /// The bound on requests in flight plus outcomes not durable yet.
    fn unrecorded_room(&self) -> usize {
        self.concurrency.saturating_mul(2)
    }

    /// Starts attempts while there is room: no stop, fewer than `concurrency` in flight, and
    /// the in flight and unrecorded together under [`Self::unrecorded_room`].
    fn dispatch(&mut self, unrecorded: usize) {
        while self.stop.is_none()
            && self.tasks.len() < self.concurrency
            && self.tasks.len().saturating_add(unrecorded) < self.unrecorded_room()
        {
            let now = Instant::now();
            let shared = &self.shared;
            let open = |c: usize| {
                !shared.rejected[c].load(Ordering::Relaxed)
                    && shared.pacers[c].paused_until().is_none_or(|t| t <= now)
            };
            let Some((c, i)) = self.queues.pick(open) else {
                break;
            };
            self.queues.take(c);
            self.spawn_attempt(c, i);
        }
    }

    fn spawn_attempt(&mut self, c: usize, i: u32) {
        let op = &self.shared.ops[i as usize].op;
        let want_snapshot = self.opts.snapshot
            && self
                .snapshotted
                .of(op.action.kind())
                .is_some_and(|read| !read.contains(&*op.room));
        let shared = Arc::clone(&self.shared);
        self.tasks.spawn(async move {
            let r = shared.attempt(c, i, want_snapshot).await;
            (i, r)
        });
    }

    /// Nothing in flight, and a stop or nothing left to do.
    fn is_over(&self) -> bool {
        self.tasks.is_empty() && (self.stop.is_some() || self.queues.is_idle())
    }

    /// The next time something becomes possible without an event: a retry's time, or the
    /// end of a 429 pause of a credential with ops ready.
    fn next_wake(&self) -> Option<Instant> {
        if self.stop.is_some() {
            return None;
        }
        let mut wake = self.queues.next_retry();
        for (c, pacer) in self.shared.pacers.iter().enumerate() {
            if self.queues.has_ready(c)
                && let Some(t) = pacer.paused_until()
                && t > Instant::now()
            {
                wake = Some(wake.map_or(t, |w| w.min(t)));
            }
        }
        wake
    }

    /// Waits for the next thing to act on: a signal, the deadline, a task's end, the
    /// journal's progress (when it holds dispatching back), a wake-up time or the tick.
    async fn next_event(&mut self, unrecorded: usize) -> Event {
        let wake = self.next_wake();
        let deadline = self.opts.deadline.as_ref().map(|(t, _)| *t);
        let stopping = self.stop.is_some();
        let cancelled = self.cancelled;
        let has_tasks = !self.tasks.is_empty();
        let journal_behind =
            !stopping && self.tasks.len().saturating_add(unrecorded) >= self.unrecorded_room();
        let rec = &self.shared.rec;
        tokio::select! {
            biased;
            _ = self.controls.cancel.cancelled(), if !cancelled => Event::Cancel,
            _ = self.controls.stop.cancelled(), if !stopping => Event::Stop,
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() && !stopping => Event::Deadline,
            joined = self.tasks.join_next(), if has_tasks => Event::Joined(joined),
            _ = rec.durable_progress(), if journal_behind => Event::Tick,
            _ = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => Event::Tick,
            _ = self.tick.tick() => Event::Tick,
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Cancel => {
                self.cancelled = true;
                self.tasks.abort_all();
                self.shared.halt.cancel();
                tracing::warn!(
                    "second signal: cancelling the requests in flight; their ops stay pending"
                );
                if matches!(self.stop, None | Some(StopReason::Signal { .. })) {
                    self.stop = Some(StopReason::Signal {
                        cancelled_in_flight: true,
                    });
                }
            }
            Event::Stop => {
                self.shared.halt.cancel();
                tracing::warn!(
                    "signal received: no new requests; waiting for {} in flight (signal again to cancel them)",
                    self.tasks.len()
                );
                self.stop = Some(StopReason::Signal {
                    cancelled_in_flight: false,
                });
            }
            Event::Deadline => {
                self.shared.halt.cancel();
                let label = self
                    .opts
                    .deadline
                    .as_ref()
                    .map(|(_, l)| l.clone())
                    .unwrap_or_default();
                tracing::warn!(
                    "{label} reached: no new requests; waiting for {} in flight",
                    self.tasks.len()
                );
                self.stop = Some(StopReason::Deadline(label));
            }
            Event::Joined(joined) => self.on_joined(joined),
            Event::Tick => {}
        }
    }

    /// Takes every result already there before dispatching again.
    fn on_joined(&mut self, first: Option<Result<(u32, TaskResult), JoinError>>) {
        let mut next = first;
        while let Some(joined) = next {
            // An aborted task (second signal) has no result: its op stays pending.
            if let Ok((i, result)) = joined
                && let Some(reason) = self.on_result(i, result)
            {
                self.stop_with(reason);
            }
            next = self.tasks.try_join_next();
        }
    }

    /// Applies one attempt's result; returns a reason to stop when the job must stop.
    fn on_result(&mut self, i: u32, result: TaskResult) -> Option<StopReason> {
        let (attempt, sent_at, snap) = match result {
            TaskResult::Journal(e) => return Some(StopReason::Journal(e)),
            TaskResult::NotSent { snap } => {
                self.note_snapshot(i, snap);
                return None;
            }
            TaskResult::BudgetLost { error, snap } => {
                self.note_snapshot(i, snap);
                return Some(StopReason::BudgetLost(error));
            }
            TaskResult::Sent {
                attempt,
                sent_at,
                snap,
            } => (attempt, sent_at, snap),
        };
        self.note_snapshot(i, snap);
        self.on_answer(i, &attempt, sent_at)
    }

    /// Op `i`'s room (or its ban list) is snapshotted now, when `snap` says a read was
    /// recorded: no later op reads it again.
    fn note_snapshot(&mut self, i: u32, snap: Snap) {
        if snap == Snap::None {
            return;
        }
        let op = &self.shared.ops[i as usize].op;
        let set = match op.action.kind() {
            ActionKind::Ban => &mut self.snapshotted.bans,
            _ => &mut self.snapshotted.rooms,
        };
        // Bans of one room on different clients may both have read its list: count it once.
        if set.insert(op.room.to_string()) {
            self.stats.snapshots += 1;
            if snap == Snap::Unknown {
                self.stats.snapshots_unknown += 1;
            }
        }
    }

    /// Counts an answered attempt, acts on its outcome and records it.
    fn on_answer(&mut self, i: u32, attempt: &Attempt, sent_at: Instant) -> Option<StopReason> {
        self.attempts[i as usize] += 1;
        let n = self.attempts[i as usize];
        self.stats.attempts += 1;
        if attempt.latency > Duration::ZERO {
            self.stats
                .latencies_us
                .push(attempt.latency.as_micros().min(u64::MAX as u128) as u64);
        }
        let mut record = answer_record(&self.shared.ops[i as usize], n, attempt);
        self.contact = self.contact.after(&attempt.reach);
        let o = &attempt.outcome;
        if o.status().is_some_and(|s| s != 429) {
            // What the server answered, and did not refuse, paces the credential.
            self.shared.pacers[self.shared.cred_of(i)].on_answered(sent_at);
        }
        let stop = match (o, &attempt.reach) {
            (Outcome::Transient { .. }, Reach::Unreached(u)) if self.contact == Contact::Never => {
                self.on_unreached(i, n, u)
            }
            _ => self.on_outcome(i, n, o, sent_at, &mut record),
        };
        if let Err(e) = self.shared.rec.record(record) {
            return Some(StopReason::Journal(e.to_string()));
        }
        stop
    }

    /// Acts on the outcome of attempt `n` of op `i`, filling its `record`.
    fn on_outcome(
        &mut self,
        i: u32,
        n: u32,
        o: &Outcome,
        sent_at: Instant,
        record: &mut OpRecord,
    ) -> Option<StopReason> {
        match o {
            Outcome::Done { already, .. } => {
                self.on_done(i, *already, record);
                None
            }
            Outcome::Transient {
                status,
                retry_after,
                ..
            } => {
                let retry = Retry {
                    n,
                    status: *status,
                    hint: *retry_after,
                    sent_at,
                };
                self.on_transient(i, o, retry, record)
            }
            Outcome::CredentialsRejected {
                credential,
                status,
                code,
                message,
            } => {
                // Nothing more goes out on that credential; the op stays pending.
                self.shared.rejected[cred_index(*credential)].store(true, Ordering::Relaxed);
                Some(StopReason::CredentialsRejected {
                    credential: *credential,
                    status: *status,
                    code: code.clone(),
                    message: message.clone(),
                })
            }
            Outcome::Permanent { .. } => self.on_permanent(i, o, record),
        }
    }

    /// A done op; `already` is the code of an answer that said the desired state held.
    fn on_done(&mut self, i: u32, already: Option<&str>, record: &mut OpRecord) {
        record.state = Some(OpState::Done);
        match already {
            Some(code) => {
                record.message = Some(format!("already in the desired state ({code})"));
                self.stats.already += 1;
                *self
                    .stats
                    .already_by_code
                    .entry(code.to_owned())
                    .or_default() += 1;
            }
            None => record.rc = Some(0),
        }
        self.stats.done += 1;
        self.queues.release_next(&self.shared.ops, i);
    }

    /// A transient answer: retried after the backoff (or the server's hint), unless it was
    /// the op's last attempt; a 429 also pauses the credential.
    fn on_transient(
        &mut self,
        i: u32,
        o: &Outcome,
        retry: Retry,
        record: &mut OpRecord,
    ) -> Option<StopReason> {
        let Retry {
            n,
            status,
            hint,
            sent_at,
        } = retry;
        let shared = Arc::clone(&self.shared);
        let jop = &shared.ops[i as usize];
        let delay = self.opts.backoff.delay(n, hint, &mut self.rng);
        if status == Some(429) {
            self.stats.rate_limited += 1;
            // Every 429 pauses the credential, the one on an op's last attempt too: the
            // server's hint holds for every request on it, not for this op alone.
            shared.pacers[shared.cred_of(i)].on_rate_limited(hint.unwrap_or(delay), sent_at);
        }
        let why = o.message().unwrap_or("transient failure");
        if n >= self.opts.max_attempts {
            tracing::warn!(seq = jop.seq, "{} failed after {n} attempts: {why}", jop.op);
            record.state = Some(OpState::Failed);
            record.message = Some(format!("gave up after {n} attempts: {why}"));
            let stop = fail(&mut self.stats, &self.opts, o);
            self.queues.release_next(&shared.ops, i);
            stop
        } else {
            self.stats.retries += 1;
            tracing::debug!(
                seq = jop.seq,
                attempt = n,
                "{}: {why}; retrying in {delay:?}",
                jop.op,
            );
            if self.stop.is_none() {
                self.queues.retry_at(Instant::now() + delay, i);
            }
            None
        }
    }

    /// Attempt `n` of op `i` never reached the server, and no request of the run has: retried
    /// after the backoff, never failed; the op's [`UNREACHED_ATTEMPTS`]-th (or last) such
    /// attempt stops the run. One warning says so, at the first.
    fn on_unreached(&mut self, i: u32, n: u32, u: &Unreached) -> Option<StopReason> {
        if !self.unreached_warned {
            self.unreached_warned = true;
            tracing::warn!(
                "cannot reach {u}; no request has reached the server yet: retrying a few times before stopping"
            );
        }
        if n >= UNREACHED_ATTEMPTS.min(self.opts.max_attempts) {
            return Some(StopReason::Unreachable(u.clone()));
        }
        let delay = self.opts.backoff.delay(n, None, &mut self.rng);
        let jop = &self.shared.ops[i as usize];
        tracing::debug!(
            seq = jop.seq,
            attempt = n,
            "{}: cannot reach {u}; retrying in {delay:?}",
            jop.op
        );
        if self.stop.is_none() {
            self.stats.retries += 1;
            self.queues.retry_at(Instant::now() + delay, i);
        }
        None
    }

    fn on_permanent(&mut self, i: u32, o: &Outcome, record: &mut OpRecord) -> Option<StopReason> {
        let jop = &self.shared.ops[i as usize];
        tracing::warn!(
            seq = jop.seq,
            status = o.status(),
            code = o.code(),
            "{} failed: {}",
            jop.op,
            o.message().unwrap_or("permanent failure")
        );
        if jop.op.action == Action::Unban && o.status() == Some(403) {
            self.stats.unbans_refused += 1;
        }
        record.state = Some(OpState::Failed);
        let stop = fail(&mut self.stats, &self.opts, o);
        self.queues.release_next(&self.shared.ops, i);
        stop
    }

    fn show_progress(&mut self, progress: &mut Progress) {
        self.stats.elapsed = self.started.elapsed();
        progress.update(&self.stats, self.stats.elapsed);
    }

    fn into_report(mut self) -> RunReport {
        self.stats.paces = self
            .shared
            .pacers
            .iter()
            .filter_map(Pacer::report)
            .collect();
        RunReport {
            stop: self.stop.unwrap_or(StopReason::Completed),
            stats: self.stats,
        }
    }
}

/// The journal's record of attempt `n` (in this run) of `jop`, before its outcome decides the
/// op's state.
fn answer_record(jop: &JournalOp, n: u32, attempt: &Attempt) -> OpRecord {
    let o = &attempt.outcome;
    OpRecord {
        seq: jop.seq,
        state: None,
        attempts: jop.attempts.saturating_add(n),
        http_status: o.status(),
        rc: o.rc(),
        error_code: o.code().map(str::to_string),
        message: o.message().map(str::to_string),
        latency_ms: Some(attempt.latency.as_millis().min(u64::MAX as u128) as u64),
    }
}

/// A transient answer to attempt `n` of an op.
struct Retry {
    n: u32,
    status: Option<u16>,
    /// The server's wait hint.
    hint: Option<Duration>,
    sent_at: Instant,
}

/// Counts a permanent failure; returns the failure bound passed, if any.
fn fail(stats: &mut Stats, opts: &RunnerOptions, o: &Outcome) -> Option<StopReason> {
    stats.failed += 1;
    let key = match (o.code(), o.status()) {
        (Some(c), _) => c.to_string(),
        (None, Some(s)) => format!("HTTP {s}"),
        (None, None) => "UNKNOWN".to_string(),
    };
    *stats.failures_by_code.entry(key).or_default() += 1;
    if let Some(max) = opts.max_failures
        && stats.failed > max
    {
        return Some(StopReason::FailureBound(format!(
            "{} ops failed permanently, more than --max-failures {max}",
            stats.failed
        )));
    }
    if let Some(r) = opts.max_failure_ratio {
        let finished = stats.finished();
        if finished >= opts.failure_ratio_min_sample.max(1)
            && stats.failed as f64 / finished as f64 > r
        {
            return Some(StopReason::FailureBound(format!(
                "{} of {finished} finished ops failed permanently ({:.1}%), more than --max-failure-ratio {r}",
                stats.failed,
                100.0 * stats.failed as f64 / finished as f64
            )));
        }
    }
    None
}
