//! The scheduler: one loop that owns all delivery state. Ops sharing a lock key (a room, or a
//! client) form a chain that runs one at a time in manifest order; chain heads wait in a
//! ready queue per credential (lowest `seq` first) and run concurrently up to
//! `concurrency`. Each dispatched attempt is a task that waits for its credential's pace,
//! optionally snapshots the room, and sends; its result comes back to the loop, which
//! records it, schedules a retry (backoff with full jitter, or the server's hint), or stops
//! the job (401, failure bound, deadline, signal). O(n log n) in the number of ops.
//!
//! Decisions:
//! - 401 on a credential: nothing more is dispatched at all (the job aborts with exit 3);
//!   requests already on the wire finish and their true outcome is recorded (an applied
//!   change is recorded as done). Requests of that credential waiting for their pace are not
//!   sent. The op answered 401 stays pending (the op is not at fault), as do all ops not
//!   finished, so a run with fixed credentials resumes them.
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

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::{Attempt, Outcome};
use crate::journal::{JournalOp, OpRecord, OpState};
use crate::op::{Action, Credential, LockKey};
use crate::output::Progress;
use crate::runner::executor::{Executor, Recorder};
use crate::runner::pacing::Pacer;
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
}

impl StopReason {
    /// How much a reason must be acted on: a later reason replaces an earlier one only when
    /// it ranks higher, so a 401 (or a journal that cannot be written) met while a deadline
    /// or a signal drains the ops in flight still ends the run with its exit 3 and the
    /// message naming the rejected credential, instead of a resumable exit 4.
    fn rank(&self) -> u8 {
        match self {
            StopReason::Completed => 0,
            StopReason::Deadline(_) | StopReason::Signal { .. } => 1,
            StopReason::FailureBound(_) => 2,
            StopReason::CredentialsRejected { .. } => 3,
            StopReason::Journal(_) => 4,
        }
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

enum TaskResult {
    Sent {
        attempt: Attempt,
        sent_at: Instant,
        snapshotted: bool,
    },
    /// Halted before sending: the op stays as it was.
    NotSent {
        snapshotted: bool,
    },
    Journal(String),
}

const NONE: u32 = u32::MAX;

fn cred_index(c: Credential) -> usize {
    match c {
        Credential::ClientToken => 0,
        Credential::ApiKey => 1,
    }
}

fn changes_room(a: Action) -> bool {
    matches!(a, Action::Freeze | Action::Unfreeze | Action::Update)
}

/// Runs `ops` (pending ops in manifest order) to the end, or to a stop.
pub async fn run<E: Executor, R: Recorder>(
    mut ops: Vec<JournalOp>,
    exec: Arc<E>,
    rec: Arc<R>,
    opts: RunnerOptions,
    controls: Controls,
    snapshotted: HashSet<String>,
    progress: &mut Progress,
) -> RunReport {
    ops.sort_by_key(|o| o.seq);
    let ops: Arc<Vec<JournalOp>> = Arc::new(ops);
    let mut started = Instant::now();
    let mut stats = Stats {
        total: ops.len() as u64,
        ..Default::default()
    };
    let mut snapshotted = snapshotted;

    // Chains: next_in_chain[i] is the next op with the same lock key.
    let mut next_in_chain = vec![NONE; ops.len()];
    let mut ready: [BinaryHeap<Reverse<u32>>; 2] = [BinaryHeap::new(), BinaryHeap::new()];
    {
        let mut last: HashMap<LockKey<'_>, u32> = HashMap::with_capacity(ops.len());
        for (i, o) in ops.iter().enumerate() {
            match last.insert(o.op.lock_key(), i as u32) {
                Some(prev) => next_in_chain[prev as usize] = i as u32,
                None => ready[cred_index(o.op.credential())].push(Reverse(i as u32)),
            }
        }
    }
    let mut attempts = vec![0u32; ops.len()];
    let mut delayed: BinaryHeap<Reverse<(Instant, u32)>> = BinaryHeap::new();
    let pacers: Arc<[Pacer; 2]> = Arc::new([Pacer::new(opts.rate), Pacer::new(opts.rate)]);
    let rejected: Arc<[AtomicBool; 2]> = Arc::new([AtomicBool::new(false), AtomicBool::new(false)]);
    let halt = CancellationToken::new();
    let mut rng = match opts.seed {
        Some(s) => StdRng::seed_from_u64(s),
        None => StdRng::from_os_rng(),
    };
    let concurrency = opts.concurrency.max(1);
    let mut tasks: JoinSet<(u32, TaskResult)> = JoinSet::new();
    let mut stop: Option<StopReason> = None;
    let mut cancelled = false;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);

    // The window's start: wait, interruptible by a signal; unless a deadline comes first,
    // then waiting would only end in a stop with nothing sent.
    let deadline_first = match (&opts.start_at, &opts.deadline) {
        (Some((start, _)), Some((end, _))) => end <= start,
        _ => false,
    };
    if let Some((at, label)) = &opts.start_at
        && *at > Instant::now()
        && !deadline_first
    {
        tracing::info!("waiting until {label} before sending anything (the job's window)");
        tokio::select! {
            _ = tokio::time::sleep_until(*at) => {}
            _ = controls.stop.cancelled() => {
                stop = Some(StopReason::Signal { cancelled_in_flight: false });
            }
        }
        // Elapsed time and ops/s count from the first request, not from the wait.
        started = Instant::now();
    }
    if stop.is_none()
        && let Some((at, label)) = &opts.deadline
        && (*at <= Instant::now() || deadline_first)
    {
        if deadline_first && *at > Instant::now() {
            let start = opts
                .start_at
                .as_ref()
                .map(|(_, l)| l.as_str())
                .unwrap_or_default();
            tracing::warn!("{label} comes before {start}: nothing is sent");
        } else {
            tracing::warn!("{label} has already passed: nothing is sent");
        }
        stop = Some(StopReason::Deadline(label.clone()));
    }

    loop {
        // Due retries become ready again.
        let now = Instant::now();
        while let Some(Reverse((t, i))) = delayed.peek().copied() {
            if t > now {
                break;
            }
            delayed.pop();
            ready[cred_index(ops[i as usize].op.credential())].push(Reverse(i));
        }

        // Answered ops whose outcome the journal has not committed yet would be sent again
        // after a kill, like the ones on the wire: together they stay under twice the
        // concurrency, however slow the disk (see the module's decisions).
        let unrecorded = match rec.not_durable() {
            Ok(n) => usize::try_from(n).unwrap_or(usize::MAX),
            Err(e) => {
                let reason = StopReason::Journal(e.to_string());
                if StopReason::overrides(&reason, stop.as_ref()) {
                    halt.cancel();
                    stop = Some(reason);
                }
                0
            }
        };
        let unrecorded_room = concurrency.saturating_mul(2);

        // Dispatch while there is room.
        while stop.is_none()
            && tasks.len() < concurrency
            && tasks.len().saturating_add(unrecorded) < unrecorded_room
        {
            let now = Instant::now();
            let mut pick: Option<(usize, u32)> = None;
            for (c, heap) in ready.iter().enumerate() {
                if rejected[c].load(Ordering::Relaxed) {
                    continue;
                }
                if pacers[c].paused_until().is_some_and(|t| t > now) {
                    continue;
                }
                if let Some(Reverse(i)) = heap.peek()
                    && pick.is_none_or(|(_, j)| *i < j)
                {
                    pick = Some((c, *i));
                }
            }
            let Some((c, i)) = pick else { break };
            ready[c].pop();
            let jop = &ops[i as usize];
            let want_snapshot = opts.snapshot
                && changes_room(jop.op.action)
                && !snapshotted.contains(&*jop.op.room);
            let (exec, rec, pacers, rejected, halt, ops) = (
                exec.clone(),
                rec.clone(),
                pacers.clone(),
                rejected.clone(),
                halt.clone(),
                ops.clone(),
            );
            tasks.spawn(async move {
                let op = &ops[i as usize].op;
                let r = attempt_task(
                    &*exec,
                    &*rec,
                    &pacers[c],
                    &rejected[c],
                    &halt,
                    op,
                    want_snapshot,
                )
                .await;
                (i, r)
            });
        }

        if tasks.is_empty() {
            let idle = ready.iter().all(|h| h.is_empty()) && delayed.is_empty();
            if stop.is_some() || idle {
                break;
            }
        }

        // The next time something becomes possible without an event.
        let mut wake: Option<Instant> = None;
        if stop.is_none() {
            if let Some(Reverse((t, _))) = delayed.peek() {
                wake = Some(*t);
            }
            for (c, heap) in ready.iter().enumerate() {
                if !heap.is_empty()
                    && let Some(t) = pacers[c].paused_until()
                    && t > Instant::now()
                {
                    wake = Some(wake.map_or(t, |w| w.min(t)));
                }
            }
        }
        let deadline = opts.deadline.as_ref().map(|(t, _)| *t);

        tokio::select! {
            biased;
            _ = controls.cancel.cancelled(), if !cancelled => {
                cancelled = true;
                tasks.abort_all();
                halt.cancel();
                tracing::warn!("second signal: cancelling the requests in flight; their ops stay pending");
                if matches!(stop, None | Some(StopReason::Signal { .. })) {
                    stop = Some(StopReason::Signal { cancelled_in_flight: true });
                }
            }
            _ = controls.stop.cancelled(), if stop.is_none() => {
                halt.cancel();
                tracing::warn!("signal received: no new requests; waiting for {} in flight (signal again to cancel them)", tasks.len());
                stop = Some(StopReason::Signal { cancelled_in_flight: false });
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() && stop.is_none() => {
                halt.cancel();
                let label = opts.deadline.as_ref().map(|(_, l)| l.clone()).unwrap_or_default();
                tracing::warn!("{label} reached: no new requests; waiting for {} in flight", tasks.len());
                stop = Some(StopReason::Deadline(label));
            }
            joined = tasks.join_next(), if !tasks.is_empty() => {
                // Take every result already there before dispatching again.
                let mut next = joined;
                while let Some(joined) = next {
                    // An aborted task (second signal) has no result: its op stays pending.
                    if let Ok((i, result)) = joined {
                        let outcome = handle_result(
                            i, result, &ops, &opts, &mut attempts, &mut stats, &mut snapshotted,
                            &pacers, &rejected, &mut delayed, &mut ready, &next_in_chain, &*rec,
                            &mut rng, stop.is_some(),
                        );
                        if let Some(reason) = outcome
                            && StopReason::overrides(&reason, stop.as_ref())
                        {
                            halt.cancel();
                            stop = Some(reason);
                        }
                    }
                    next = tasks.try_join_next();
                }
            }
            _ = rec.durable_progress(), if stop.is_none() && tasks.len().saturating_add(unrecorded) >= unrecorded_room => {}
            _ = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {}
            _ = tick.tick() => {}
        }
        stats.elapsed = started.elapsed();
        progress.update(&stats, stats.elapsed);
    }
    stats.elapsed = started.elapsed();
    progress.update(&stats, stats.elapsed);
    progress.finish();
    RunReport {
        stop: stop.unwrap_or(StopReason::Completed),
        stats,
    }
}

/// One attempt of one op, run as its own task.
async fn attempt_task<E: Executor, R: Recorder>(
    exec: &E,
    rec: &R,
    pacer: &Pacer,
    rejected: &AtomicBool,
    halt: &CancellationToken,
    op: &crate::op::Op,
    want_snapshot: bool,
) -> TaskResult {
    let halted = || halt.is_cancelled() || rejected.load(Ordering::Relaxed);
    let mut snapshotted = false;
    // Waiting for the pace is not being in flight: a stop ends the wait.
    let paced = || async {
        tokio::select! {
            _ = pacer.acquire() => true,
            _ = halt.cancelled() => false,
        }
    };
    if want_snapshot {
        if !paced().await || halted() {
            return TaskResult::NotSent { snapshotted };
        }
        let sent_at = Instant::now();
        let prior = match exec.read_room(&op.room).await {
            Ok(v) => Some(v),
            Err(a) => match a.outcome {
                // Cannot read now: this attempt ends here and is retried like a send.
                Outcome::Transient { .. } | Outcome::CredentialsRejected { .. } => {
                    return TaskResult::Sent {
                        attempt: a,
                        sent_at,
                        snapshotted,
                    };
                }
                // The room cannot be read (403/404/...): prior state unknown, recorded so.
                _ => None,
            },
        };
        if let Err(e) = rec.record_snapshot(&op.room, prior).await {
            return TaskResult::Journal(e.to_string());
        }
        snapshotted = true;
    }
    if !paced().await || halted() {
        return TaskResult::NotSent { snapshotted };
    }
    let sent_at = Instant::now();
    let attempt = exec.send(op).await;
    TaskResult::Sent {
        attempt,
        sent_at,
        snapshotted,
    }
}

/// Applies one attempt's result; returns a reason to stop when the job must stop.
#[allow(clippy::too_many_arguments)]
fn handle_result<R: Recorder>(
    i: u32,
    result: TaskResult,
    ops: &[JournalOp],
    opts: &RunnerOptions,
    attempts: &mut [u32],
    stats: &mut Stats,
    snapshotted: &mut HashSet<String>,
    pacers: &[Pacer; 2],
    rejected: &[AtomicBool; 2],
    delayed: &mut BinaryHeap<Reverse<(Instant, u32)>>,
    ready: &mut [BinaryHeap<Reverse<u32>>; 2],
    next_in_chain: &[u32],
    rec: &R,
    rng: &mut StdRng,
    stopping: bool,
) -> Option<StopReason> {
    let jop = &ops[i as usize];
    let (attempt, sent_at, snap) = match result {
        TaskResult::Journal(e) => return Some(StopReason::Journal(e)),
        TaskResult::NotSent { snapshotted: s } => {
            if s {
                snapshotted.insert(jop.op.room.to_string());
                stats.snapshots += 1;
            }
            return None;
        }
        TaskResult::Sent {
            attempt,
            sent_at,
            snapshotted: s,
        } => (attempt, sent_at, s),
    };
    if snap {
        snapshotted.insert(jop.op.room.to_string());
        stats.snapshots += 1;
    }
    let c = cred_index(jop.op.credential());
    attempts[i as usize] += 1;
    let n = attempts[i as usize];
    stats.attempts += 1;
    if attempt.latency > Duration::ZERO {
        stats
            .latencies_us
            .push(attempt.latency.as_micros().min(u64::MAX as u128) as u64);
    }
    let o = &attempt.outcome;
    let mut record = OpRecord {
        seq: jop.seq,
        state: None,
        attempts: jop.attempts.saturating_add(n),
        http_status: o.status(),
        rc: o.rc(),
        error_code: o.code().map(str::to_string),
        message: o.message().map(str::to_string),
        latency_ms: Some(attempt.latency.as_millis().min(u64::MAX as u128) as u64),
    };
    let release = |ready: &mut [BinaryHeap<Reverse<u32>>; 2]| {
        let next = next_in_chain[i as usize];
        if next != NONE {
            ready[cred_index(ops[next as usize].op.credential())].push(Reverse(next));
        }
    };
    let mut stop = None;
    match o {
        Outcome::Done {
            already_in_state, ..
        } => {
            record.state = Some(OpState::Done);
            if *already_in_state {
                record.message = Some("already in the desired state (ROOM_NOT_MUTED)".into());
                stats.already += 1;
            } else {
                record.rc = Some(0);
            }
            stats.done += 1;
            pacers[c].on_success();
            release(ready);
        }
        Outcome::Transient {
            status,
            retry_after,
            ..
        } => {
            let delay = opts.backoff.delay(n, *retry_after, rng);
            if *status == Some(429) {
                stats.rate_limited += 1;
                // Every 429 pauses the credential, the one on an op's last attempt too: the
                // server's hint holds for every request on it, not for this op alone.
                pacers[c].on_rate_limited(retry_after.unwrap_or(delay), sent_at);
            }
            if n >= opts.max_attempts {
                tracing::warn!(
                    seq = jop.seq,
                    "{} failed after {n} attempts: {}",
                    jop.op,
                    o.message().unwrap_or("transient failure")
                );
                record.state = Some(OpState::Failed);
                record.message = Some(format!(
                    "gave up after {n} attempts: {}",
                    o.message().unwrap_or("transient failure")
                ));
                stop = fail(stats, opts, o);
                release(ready);
            } else {
                stats.retries += 1;
                tracing::debug!(
                    seq = jop.seq,
                    attempt = n,
                    "{}: {}; retrying in {delay:?}",
                    jop.op,
                    o.message().unwrap_or("transient failure")
                );
                if !stopping {
                    delayed.push(Reverse((Instant::now() + delay, i)));
                }
            }
        }
        Outcome::CredentialsRejected {
            credential,
            status,
            code,
            message,
        } => {
            rejected[cred_index(*credential)].store(true, Ordering::Relaxed);
            stop = Some(StopReason::CredentialsRejected {
                credential: *credential,
                status: *status,
                code: code.clone(),
                message: message.clone(),
            });
        }
        Outcome::Permanent { .. } => {
            tracing::warn!(
                seq = jop.seq,
                status = o.status(),
                code = o.code(),
                "{} failed: {}",
                jop.op,
                o.message().unwrap_or("permanent failure")
            );
            record.state = Some(OpState::Failed);
            stop = fail(stats, opts, o);
            release(ready);
        }
    }
    if let Err(e) = rec.record(record) {
        return Some(StopReason::Journal(e.to_string()));
    }
    stop
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
