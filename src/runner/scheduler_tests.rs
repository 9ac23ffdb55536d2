//! Scheduler tests against a scripted fake executor, with tokio's time paused: deterministic
//! and instant however long the simulated waits.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::api::{Attempt, Outcome, Reach, Unreached, UnreachedKind};
use crate::journal::{JournalOp, OpState};
use crate::op::{Auth, Credential, Op};
use crate::output::Progress;
use crate::runner::scheduler::UNREACHED_ATTEMPTS;

type Script = Box<dyn Fn(&Op, u32) -> (Outcome, Duration) + Send + Sync>;

#[derive(Clone, Debug, PartialEq)]
enum Ev {
    Start(String, Instant),
    End(String, Instant),
    Read(String),
    ReadBans(String),
}

struct Fake {
    script: Script,
    tries: Mutex<HashMap<String, u32>>,
    events: Mutex<Vec<Ev>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    sends: AtomicUsize,
    sends_by_cred: [AtomicUsize; 2],
    /// Outcomes answered but not yet durable, counted with `in_flight` for `max_unsettled`.
    unrecorded: std::sync::OnceLock<Box<dyn Fn() -> usize + Send + Sync>>,
    /// The most ops sent and not yet durably recorded, seen at a send.
    max_unsettled: AtomicUsize,
}

fn done() -> Outcome {
    Outcome::Done {
        status: 200,
        already: None,
    }
}

/// The credential `op` goes out with when every credential is set.
fn cred(op: &Op) -> Credential {
    Auth::default().for_op(op)
}

fn transient(status: u16, hint: Option<Duration>) -> Outcome {
    Outcome::Transient {
        status: Some(status),
        code: Some("X".into()),
        reason: format!("HTTP {status}"),
        retry_after: hint,
    }
}

/// A connection refused: the request never reached the server (see [`reach_of`]).
fn refused() -> Outcome {
    Outcome::Transient {
        status: None,
        code: Some("CONNECT".into()),
        reason: "cannot reach 127.0.0.1:9: connection refused".into(),
        retry_after: None,
    }
}

/// A timeout after the request went out: it may have reached the server.
fn timed_out() -> Outcome {
    Outcome::Transient {
        status: None,
        code: Some("TIMEOUT".into()),
        reason: "request timed out".into(),
        retry_after: None,
    }
}

/// How far a scripted attempt got, as the client would say: an outcome with a status was
/// answered, [`refused`] never reached the server, anything else was sent without an answer.
fn reach_of(o: &Outcome) -> Reach {
    match o {
        Outcome::Transient {
            status: None, code, ..
        } if code.as_deref() == Some("CONNECT") => Reach::Unreached(Unreached {
            host: "127.0.0.1:9".into(),
            kind: UnreachedKind::Refused,
            detail: String::new(),
        }),
        o if o.status().is_some() => Reach::Answered,
        _ => Reach::NoAnswer,
    }
}

fn permanent(status: u16, code: &str) -> Outcome {
    Outcome::Permanent {
        status: Some(status),
        rc: Some(status as i64),
        code: Some(code.into()),
        message: Some("nope".into()),
    }
}

impl Fake {
    fn new(script: impl Fn(&Op, u32) -> (Outcome, Duration) + Send + Sync + 'static) -> Arc<Fake> {
        Arc::new(Fake {
            script: Box::new(script),
            tries: Mutex::default(),
            events: Mutex::default(),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            sends: AtomicUsize::new(0),
            sends_by_cred: [AtomicUsize::new(0), AtomicUsize::new(0)],
            unrecorded: std::sync::OnceLock::new(),
            max_unsettled: AtomicUsize::new(0),
        })
    }

    fn events(&self) -> Vec<Ev> {
        self.events.lock().unwrap().clone()
    }

    fn starts_of(&self, key: &str) -> Vec<Instant> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Ev::Start(k, t) if k == key => Some(t),
                _ => None,
            })
            .collect()
    }
}

fn key(op: &Op) -> String {
    op.to_string()
}

impl Executor for Fake {
    async fn send(&self, op: &Op, credential: Credential) -> Attempt {
        let n = {
            let mut t = self.tries.lock().unwrap();
            let e = t.entry(key(op)).or_default();
            *e += 1;
            *e
        };
        self.sends.fetch_add(1, Ordering::SeqCst);
        let c = match credential {
            Credential::ClientToken => 0,
            Credential::ApiKey => 1,
        };
        self.sends_by_cred[c].fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let unrecorded = self.unrecorded.get().map_or(0, |f| f());
        self.max_unsettled
            .fetch_max(now + unrecorded, Ordering::SeqCst);
        self.events
            .lock()
            .unwrap()
            .push(Ev::Start(key(op), Instant::now()));
        let (outcome, latency) = (self.script)(op, n);
        tokio::time::sleep(latency).await;
        self.events
            .lock()
            .unwrap()
            .push(Ev::End(key(op), Instant::now()));
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        let reach = reach_of(&outcome);
        Attempt {
            outcome,
            latency,
            reach,
        }
    }

    async fn read_room(&self, room: &str, _: Credential) -> Result<serde_json::Value, Attempt> {
        self.events.lock().unwrap().push(Ev::Read(room.to_string()));
        Ok(serde_json::json!({"_id": room, "status": 1}))
    }

    async fn read_bans(&self, room: &str, _: Credential) -> Result<serde_json::Value, Attempt> {
        self.events
            .lock()
            .unwrap()
            .push(Ev::ReadBans(room.to_string()));
        Ok(serde_json::json!({"data": []}))
    }
}

fn jops(ops: Vec<Op>) -> Vec<JournalOp> {
    ops.into_iter()
        .enumerate()
        .map(|(i, op)| JournalOp {
            seq: i as u64,
            op,
            attempts: 0,
        })
        .collect()
}

fn fast() -> RunnerOptions {
    RunnerOptions {
        rate: "1000/s".parse().unwrap(),
        seed: Some(42),
        ..RunnerOptions::default()
    }
}

async fn go(
    ops: Vec<Op>,
    fake: &Arc<Fake>,
    opts: RunnerOptions,
    controls: Controls,
) -> (RunReport, Arc<MemoryRecorder>) {
    let rec = Arc::new(MemoryRecorder::default());
    let mut progress = Progress::log_only(None);
    let report = run(
        jops(ops),
        fake.clone(),
        rec.clone(),
        opts,
        controls,
        HashSet::new(),
        &mut progress,
    )
    .await;
    (report, rec)
}

fn finals(rec: &MemoryRecorder) -> HashMap<u64, crate::journal::OpRecord> {
    rec.records()
        .into_iter()
        .filter(|r| r.state.is_some())
        .map(|r| (r.seq, r))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn same_key_ops_run_one_at_a_time_in_manifest_order() {
    // 20 rooms and 10 clients, 6 ops each, interleaved; latencies vary per op.
    let mut ops = Vec::new();
    for round in 0..6u32 {
        for r in 0..20 {
            let room = format!("room-{r}");
            ops.push(if round.is_multiple_of(2) {
                Op::freeze(room)
            } else {
                Op::unfreeze(room)
            });
        }
        for c in 0..10 {
            let client = format!("u-{c}");
            let room = format!("room-{round}");
            ops.push(if round.is_multiple_of(2) {
                Op::mute(client, room)
            } else {
                Op::unmute(client, room)
            });
        }
    }
    let fake = Fake::new(|op, _| {
        let ms = 5 + (op.room.len() * 7 + op.client.as_deref().map_or(0, str::len) * 13) % 40;
        (done(), Duration::from_millis(ms as u64))
    });
    let opts = RunnerOptions {
        concurrency: 6,
        ..fast()
    };
    let (report, rec) = go(ops.clone(), &fake, opts, Controls::default()).await;
    assert_eq!(report.stop, StopReason::Completed);
    assert_eq!(report.stats.done, ops.len() as u64);
    assert_eq!(finals(&rec).len(), ops.len());
    assert!(fake.max_in_flight.load(Ordering::SeqCst) <= 6);
    assert_eq!(
        fake.max_in_flight.load(Ordering::SeqCst),
        6,
        "the cap is used"
    );

    // Per lock key: intervals never overlap, and starts follow manifest order.
    let events = fake.events();
    let mut open: HashMap<String, usize> = HashMap::new();
    let mut order: HashMap<String, Vec<String>> = HashMap::new();
    let lock_of = |k: &str| -> String {
        let op = ops.iter().find(|o| key(o) == k).unwrap();
        format!("{:?}", op.lock_key())
    };
    for e in &events {
        match e {
            Ev::Start(k, _) => {
                let l = lock_of(k);
                let n = open.entry(l.clone()).or_default();
                *n += 1;
                assert_eq!(*n, 1, "two ops on {l} at once");
                order.entry(l).or_default().push(k.clone());
            }
            Ev::End(k, _) => *open.get_mut(&lock_of(k)).unwrap() -= 1,
            Ev::Read(_) | Ev::ReadBans(_) => {}
        }
    }
    for (l, started) in order {
        let expected: Vec<String> = ops
            .iter()
            .filter(|o| format!("{:?}", o.lock_key()) == l)
            .map(key)
            .collect();
        assert_eq!(started, expected, "order on {l}");
    }
}

#[tokio::test(start_paused = true)]
async fn transient_failures_are_retried_with_bounded_backoff() {
    let fake = Fake::new(|_, n| {
        if n <= 3 {
            (transient(503, None), Duration::from_millis(10))
        } else {
            (done(), Duration::from_millis(10))
        }
    });
    let opts = RunnerOptions {
        backoff: retry::Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        },
        ..fast()
    };
    let (report, rec) = go(
        vec![Op::freeze("a")],
        &fake,
        opts.clone(),
        Controls::default(),
    )
    .await;
    assert_eq!(report.stop, StopReason::Completed);
    assert_eq!(report.stats.retries, 3);
    assert_eq!(report.stats.attempts, 4);
    let recs = rec.records();
    assert_eq!(recs.len(), 4);
    assert!(
        recs[..3]
            .iter()
            .all(|r| r.state.is_none() && r.http_status == Some(503))
    );
    assert_eq!(recs[3].state, Some(OpState::Done));
    assert_eq!(recs[3].attempts, 4);
    // Gaps: at most latency + the backoff ceiling (+ one pacing interval).
    let starts = fake.starts_of("freeze room \"a\"");
    for (k, w) in starts.windows(2).enumerate() {
        let gap = w[1] - w[0];
        let max = Duration::from_millis(10)
            + opts.backoff.ceiling(k as u32 + 1)
            + Duration::from_millis(2);
        assert!(gap <= max, "gap {k}: {gap:?} > {max:?}");
        assert!(gap >= Duration::from_millis(10));
    }
}

#[tokio::test(start_paused = true)]
async fn attempts_run_out_and_the_last_answer_is_recorded() {
    let fake = Fake::new(|_, _| (transient(502, None), Duration::from_millis(1)));
    let opts = RunnerOptions {
        max_attempts: 4,
        ..fast()
    };
    let (report, rec) = go(
        vec![Op::freeze("a"), Op::freeze("b")],
        &fake,
        opts,
        Controls::default(),
    )
    .await;
    assert_eq!(report.stop, StopReason::Completed);
    assert_eq!(report.stats.failed, 2);
    assert_eq!(fake.sends.load(Ordering::SeqCst), 8);
    let f = finals(&rec);
    let r = &f[&0];
    assert_eq!(r.state, Some(OpState::Failed));
    assert_eq!(r.attempts, 4);
    assert_eq!(r.http_status, Some(502));
    assert!(
        r.message
            .as_deref()
            .unwrap()
            .contains("gave up after 4 attempts")
    );
}

#[tokio::test(start_paused = true)]
async fn a_429_pauses_every_request_on_that_credential_only() {
    let t0 = Instant::now();
    let first = Arc::new(AtomicUsize::new(0));
    let f2 = first.clone();
    let fake = Fake::new(move |op, _| {
        if cred(op) == Credential::ClientToken && f2.fetch_add(1, Ordering::SeqCst) == 0 {
            (
                transient(429, Some(Duration::from_secs(5))),
                Duration::from_millis(10),
            )
        } else {
            (done(), Duration::from_millis(10))
        }
    });
    let mut ops: Vec<Op> = (0..40).map(|i| Op::freeze(format!("r{i}"))).collect();
    ops.extend((0..40).map(|i| Op::mute(format!("u{i}"), "r")));
    let opts = RunnerOptions {
        concurrency: 4,
        rate: "20/s".parse().unwrap(),
        ..fast()
    };
    let (report, _) = go(ops, &fake, opts, Controls::default()).await;
    assert_eq!(report.stop, StopReason::Completed);
    assert_eq!(report.stats.rate_limited, 1);
    let events = fake.events();
    // The 429 answer arrived at t0+10ms; no room op started in (10ms, 5s+10ms) but the
    // in-flight ones that were already on the wire.
    let gate_end = t0 + Duration::from_secs(5) + Duration::from_millis(10);
    let room_starts_in_pause = events
        .iter()
        .filter(|e| matches!(e, Ev::Start(k, t) if k.starts_with("freeze") && *t > t0 + Duration::from_millis(10) && *t < gate_end))
        .count();
    assert_eq!(room_starts_in_pause, 0);
    let mute_starts_in_pause = events
        .iter()
        .filter(|e| matches!(e, Ev::Start(k, t) if k.starts_with("mute") && *t > t0 + Duration::from_millis(10) && *t < gate_end))
        .count();
    assert!(
        mute_starts_in_pause > 10,
        "the API key kept going: {mute_starts_in_pause}"
    );
}

#[tokio::test(start_paused = true)]
async fn repeated_429s_lower_the_pace_and_success_restores_it() {
    // Every 10th request is answered 429 without hint for the first 100 requests.
    let count = Arc::new(AtomicUsize::new(0));
    let c2 = count.clone();
    let fake = Fake::new(move |_, _| {
        let n = c2.fetch_add(1, Ordering::SeqCst);
        if n < 100 && n % 10 == 9 {
            (
                transient(429, Some(Duration::ZERO)),
                Duration::from_millis(1),
            )
        } else {
            (done(), Duration::from_millis(1))
        }
    });
    let ops: Vec<Op> = (0..3000).map(|i| Op::freeze(format!("r{i}"))).collect();
    let opts = RunnerOptions {
        concurrency: 1,
        rate: "100/s".parse().unwrap(),
        ..fast()
    };
    let t0 = Instant::now();
    let (report, _) = go(ops, &fake, opts, Controls::default()).await;
    assert_eq!(report.stop, StopReason::Completed);
    assert_eq!(report.stats.rate_limited, 10);
    // At full pace 3010 requests take ~30 s; 429s too close together to measure a limit
    // halve the pace (to 1/16 at most), which holds a while and then climbs back (at the
    // floor pace it would take 480 s).
    let e = t0.elapsed();
    assert!(e > Duration::from_secs(36), "{e:?}");
    assert!(e < Duration::from_secs(90), "{e:?}");
    assert_eq!(report.stats.paces[0].per_second, 100.0 / 1.01, "restored");
    let starts: Vec<Instant> = fake
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Ev::Start(_, t) => Some(t),
            _ => None,
        })
        .collect();
    let last_gap = starts[starts.len() - 1] - starts[starts.len() - 2];
    assert!(
        last_gap <= Duration::from_millis(12),
        "pace restored: {last_gap:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_401_stops_within_concurrency_requests_and_leaves_ops_pending() {
    let fake = Fake::new(|op, _| {
        (
            Outcome::CredentialsRejected {
                credential: cred(op),
                status: 401,
                code: Some("INVALID_TOKEN".into()),
                message: Some("Invalid or expired token".into()),
            },
            Duration::from_millis(20),
        )
    });
    let mut ops: Vec<Op> = (0..10_000).map(|i| Op::freeze(format!("r{i}"))).collect();
    ops.extend((0..100).map(|i| Op::mute(format!("u{i}"), "r")));
    let opts = RunnerOptions {
        concurrency: 8,
        ..fast()
    };
    let (report, rec) = go(ops, &fake, opts, Controls::default()).await;
    match &report.stop {
        StopReason::CredentialsRejected { credential, .. } => {
            assert_eq!(*credential, Credential::ClientToken)
        }
        s => panic!("{s:?}"),
    }
    let sends = fake.sends.load(Ordering::SeqCst);
    assert!(sends <= 8, "{sends} requests after a 401");
    assert_eq!(fake.sends_by_cred[1].load(Ordering::SeqCst), 0);
    assert!(rec.records().iter().all(|r| r.state.is_none()));
    assert_eq!(report.stats.pending(), 10_100);
}

#[tokio::test(start_paused = true)]
async fn a_401_on_one_credential_lets_requests_on_the_wire_finish_truthfully() {
    // Room ops take 50 ms; the API key is rejected after 10 ms. The room ops already sent
    // are recorded done (their change was applied); nothing new goes out on either credential.
    let fake = Fake::new(|op, _| match cred(op) {
        Credential::ApiKey => (
            Outcome::CredentialsRejected {
                credential: Credential::ApiKey,
                status: 401,
                code: Some("INVALID_API_KEY".into()),
                message: None,
            },
            Duration::from_millis(10),
        ),
        Credential::ClientToken => (done(), Duration::from_millis(50)),
    });
    let mut ops = Vec::new();
    for i in 0..100 {
        ops.push(Op::freeze(format!("r{i}")));
        ops.push(Op::mute(format!("u{i}"), "r"));
    }
    let opts = RunnerOptions {
        concurrency: 8,
        ..fast()
    };
    let (report, rec) = go(ops, &fake, opts, Controls::default()).await;
    assert!(matches!(
        report.stop,
        StopReason::CredentialsRejected {
            credential: Credential::ApiKey,
            ..
        }
    ));
    let sends = fake.sends.load(Ordering::SeqCst);
    assert!(sends <= 8, "{sends}");
    let done_rooms = rec
        .records()
        .iter()
        .filter(|r| r.state == Some(OpState::Done))
        .count();
    assert_eq!(done_rooms, fake.sends_by_cred[0].load(Ordering::SeqCst));
    assert!(done_rooms > 0);
    assert_eq!(report.stats.pending(), 200 - done_rooms as u64);
}

#[tokio::test(start_paused = true)]
async fn permanent_failures_are_recorded_and_the_job_goes_on() {
    let fake = Fake::new(|op, _| {
        if op.room.ends_with('3') {
            (permanent(404, "ROOM_NOT_FOUND"), Duration::from_millis(5))
        } else if op.room.ends_with('7') {
            (
                permanent(403, "INSUFFICIENT_PERMISSIONS"),
                Duration::from_millis(5),
            )
        } else {
            (done(), Duration::from_millis(5))
        }
    });
    // The same room twice: the second op runs after the first failed.
    let mut ops: Vec<Op> = (0..30).map(|i| Op::freeze(format!("r{i}"))).collect();
    ops.push(Op::unfreeze("r3"));
    let (report, rec) = go(ops, &fake, fast(), Controls::default()).await;
    assert_eq!(report.stop, StopReason::Completed);
    assert_eq!(report.stats.failed, 7);
    assert_eq!(report.stats.failures_by_code["ROOM_NOT_FOUND"], 4);
    assert_eq!(report.stats.failures_by_code["INSUFFICIENT_PERMISSIONS"], 3);
    let f = finals(&rec);
    assert_eq!(f.len(), 31);
    assert_eq!(f[&3].http_status, Some(404));
    assert_eq!(f[&3].rc, Some(404));
    assert_eq!(f[&3].error_code.as_deref(), Some("ROOM_NOT_FOUND"));
    assert_eq!(f[&30].state, Some(OpState::Failed));
}

#[tokio::test(start_paused = true)]
async fn failure_bounds_abort() {
    let script = |op: &Op, _| {
        if op.room.len().is_multiple_of(2) {
            (permanent(404, "ROOM_NOT_FOUND"), Duration::from_millis(5))
        } else {
            (done(), Duration::from_millis(5))
        }
    };
    let ops: Vec<Op> = (0..1000)
        .map(|i| Op::freeze("r".repeat(1 + i % 2) + &i.to_string()))
        .collect();
    let fake = Fake::new(script);
    let opts = RunnerOptions {
        max_failures: Some(5),
        concurrency: 4,
        ..fast()
    };
    let (report, _) = go(ops.clone(), &fake, opts, Controls::default()).await;
    assert!(
        matches!(report.stop, StopReason::FailureBound(ref m) if m.contains("--max-failures 5"))
    );
    assert!(report.stats.failed >= 6 && report.stats.failed <= 6 + 4);
    assert!(fake.sends.load(Ordering::SeqCst) < 40);

    let fake = Fake::new(script);
    let opts = RunnerOptions {
        max_failure_ratio: Some(0.3),
        failure_ratio_min_sample: 20,
        concurrency: 4,
        ..fast()
    };
    let (report, _) = go(ops, &fake, opts, Controls::default()).await;
    assert!(matches!(report.stop, StopReason::FailureBound(ref m) if m.contains("ratio")));
    let finished = report.stats.finished();
    assert!((20..=24).contains(&finished), "{finished}");
}

#[tokio::test(start_paused = true)]
async fn a_deadline_stops_dispatching_and_lets_in_flight_finish() {
    let fake = Fake::new(|_, _| (done(), Duration::from_secs(1)));
    let ops: Vec<Op> = (0..100).map(|i| Op::freeze(format!("r{i}"))).collect();
    let opts = RunnerOptions {
        concurrency: 4,
        deadline: Some((
            Instant::now() + Duration::from_millis(10_500),
            "--max-duration 10.5s".into(),
        )),
        ..fast()
    };
    let (report, rec) = go(ops.clone(), &fake, opts, Controls::default()).await;
    assert_eq!(
        report.stop,
        StopReason::Deadline("--max-duration 10.5s".into())
    );
    let sends = fake.sends.load(Ordering::SeqCst);
    assert_eq!(
        rec.records().len(),
        sends,
        "every request's outcome recorded"
    );
    assert!((40..=48).contains(&sends), "{sends}");
    assert_eq!(report.stats.pending(), 100 - sends as u64);

    // A deadline already past sends nothing.
    let fake = Fake::new(|_, _| (done(), Duration::from_secs(1)));
    let opts = RunnerOptions {
        deadline: Some((Instant::now(), "the window's end".into())),
        ..fast()
    };
    let (report, rec) = go(ops, &fake, opts, Controls::default()).await;
    assert!(matches!(report.stop, StopReason::Deadline(_)));
    assert_eq!(fake.sends.load(Ordering::SeqCst), 0);
    assert!(rec.records().is_empty());
}

#[tokio::test(start_paused = true)]
async fn window_start_is_awaited() {
    let fake = Fake::new(|_, _| (done(), Duration::from_millis(1)));
    let t0 = Instant::now();
    let opts = RunnerOptions {
        start_at: Some((t0 + Duration::from_secs(3600), "22:00".into())),
        ..fast()
    };
    let (report, _) = go(vec![Op::freeze("a")], &fake, opts, Controls::default()).await;
    assert_eq!(report.stop, StopReason::Completed);
    assert!(fake.starts_of("freeze room \"a\"")[0] >= t0 + Duration::from_secs(3600));
}

/// `--max-duration 1h` on a job whose window opens in 3 hours: stop at once, nothing sent,
/// rather than wait 3 hours to stop.
#[tokio::test(start_paused = true)]
async fn a_deadline_before_the_window_start_stops_at_once() {
    let fake = Fake::new(|_, _| (done(), Duration::from_millis(1)));
    let t0 = Instant::now();
    let opts = RunnerOptions {
        start_at: Some((t0 + Duration::from_secs(3 * 3600), "22:00".into())),
        deadline: Some((t0 + Duration::from_secs(3600), "--max-duration 1h".into())),
        ..fast()
    };
    let (report, rec) = go(vec![Op::freeze("a")], &fake, opts, Controls::default()).await;
    assert_eq!(
        report.stop,
        StopReason::Deadline("--max-duration 1h".into())
    );
    assert_eq!(Instant::now(), t0, "no wait");
    assert_eq!(fake.sends.load(Ordering::SeqCst), 0);
    assert!(rec.records().is_empty());
}

#[tokio::test(start_paused = true)]
async fn signals_drain_then_cancel() {
    let ops: Vec<Op> = (0..100).map(|i| Op::freeze(format!("r{i}"))).collect();
    // First signal: in-flight requests finish and are recorded.
    let fake = Fake::new(|_, _| (done(), Duration::from_secs(2)));
    let controls = Controls::default();
    let c2 = controls.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(4500)).await;
        c2.stop.cancel();
    });
    let opts = RunnerOptions {
        concurrency: 4,
        ..fast()
    };
    let (report, rec) = go(ops.clone(), &fake, opts.clone(), controls).await;
    assert_eq!(
        report.stop,
        StopReason::Signal {
            cancelled_in_flight: false
        }
    );
    assert_eq!(fake.sends.load(Ordering::SeqCst), 12);
    assert_eq!(rec.records().len(), 12);

    // Second signal: what is in flight is abandoned, its ops stay pending.
    let fake = Fake::new(|_, _| (done(), Duration::from_secs(60)));
    let controls = Controls::default();
    let c2 = controls.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        c2.stop.cancel();
        tokio::time::sleep(Duration::from_secs(1)).await;
        c2.cancel.cancel();
    });
    let t0 = Instant::now();
    let (report, rec) = go(ops, &fake, opts, controls).await;
    assert_eq!(
        report.stop,
        StopReason::Signal {
            cancelled_in_flight: true
        }
    );
    assert!(t0.elapsed() < Duration::from_secs(3));
    assert_eq!(fake.sends.load(Ordering::SeqCst), 4);
    assert!(rec.records().is_empty());
    assert_eq!(report.stats.pending(), 100);
}

#[tokio::test(start_paused = true)]
async fn a_stop_ends_waits_for_the_pace_at_once() {
    // The first answer closes the gate for 10 minutes; a signal 1 s later ends the run
    // without waiting for the gate: the waiting requests were never on the wire.
    let fake = Fake::new(|_, _| {
        (
            transient(429, Some(Duration::from_secs(600))),
            Duration::from_millis(5),
        )
    });
    let controls = Controls::default();
    let c2 = controls.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        c2.stop.cancel();
    });
    let ops: Vec<Op> = (0..50).map(|i| Op::freeze(format!("r{i}"))).collect();
    let t0 = Instant::now();
    let (report, rec) = go(
        ops,
        &fake,
        RunnerOptions {
            concurrency: 4,
            ..fast()
        },
        controls,
    )
    .await;
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert!(matches!(report.stop, StopReason::Signal { .. }));
    assert_eq!(report.stats.pending(), 50);
    assert!(rec.records().iter().all(|r| r.state.is_none()));
}

#[tokio::test(start_paused = true)]
async fn snapshots_precede_the_first_change_of_each_room_only() {
    let fake = Fake::new(|_, _| (done(), Duration::from_millis(1)));
    let ops = vec![
        Op::freeze("a"),
        Op::mute("u", "a"),
        Op::unfreeze("a"),
        Op::freeze("b"),
        Op::freeze("c"),
    ];
    let rec = Arc::new(MemoryRecorder::default());
    let mut progress = Progress::log_only(None);
    let already: HashSet<String> = ["c".to_string()].into();
    let opts = RunnerOptions {
        snapshot: true,
        concurrency: 1,
        ..fast()
    };
    let report = run(
        jops(ops),
        fake.clone(),
        rec.clone(),
        opts,
        Controls::default(),
        already,
        &mut progress,
    )
    .await;
    assert_eq!(report.stop, StopReason::Completed);
    assert_eq!(report.stats.snapshots, 2);
    let snaps = rec.snapshots();
    assert_eq!(
        snaps.iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>(),
        vec!["a", "b"]
    );
    assert_eq!(snaps[0].1.as_ref().unwrap()["status"], 1);
    let ev = fake.events();
    let read_a = ev.iter().position(|e| *e == Ev::Read("a".into())).unwrap();
    let first_change_a = ev
        .iter()
        .position(|e| matches!(e, Ev::Start(k, _) if k == "freeze room \"a\""))
        .unwrap();
    assert!(read_a < first_change_a);
}

#[tokio::test(start_paused = true)]
async fn unmute_already_in_state_counts_as_done() {
    let fake = Fake::new(|_, _| {
        (
            Outcome::Done {
                status: 400,
                already: Some("ROOM_NOT_MUTED"),
            },
            Duration::from_millis(1),
        )
    });
    let (report, rec) = go(
        vec![Op::unmute("u", "r")],
        &fake,
        fast(),
        Controls::default(),
    )
    .await;
    assert_eq!(report.stats.done, 1);
    assert_eq!(report.stats.already, 1);
    let r = &rec.records()[0];
    assert_eq!(r.state, Some(OpState::Done));
    assert_eq!(r.http_status, Some(400));
}

#[tokio::test(start_paused = true)]
async fn resumed_ops_count_attempts_across_runs() {
    let fake = Fake::new(|_, _| (done(), Duration::from_millis(1)));
    let rec = Arc::new(MemoryRecorder::default());
    let mut progress = Progress::log_only(None);
    let ops = vec![JournalOp {
        seq: 41,
        op: Op::freeze("a"),
        attempts: 3,
    }];
    let report = run(
        ops,
        fake.clone(),
        rec.clone(),
        fast(),
        Controls::default(),
        HashSet::new(),
        &mut progress,
    )
    .await;
    assert_eq!(report.stop, StopReason::Completed);
    let r = &rec.records()[0];
    assert_eq!((r.seq, r.attempts), (41, 4));
}

/// Answers every op at once; counts only (the scale test measures the scheduler, not a fake).
struct Instantly(AtomicUsize);

impl Executor for Instantly {
    async fn send(&self, _op: &Op, _: Credential) -> Attempt {
        self.0.fetch_add(1, Ordering::Relaxed);
        Attempt {
            outcome: done(),
            latency: Duration::from_micros(50),
            reach: Reach::Answered,
        }
    }

    async fn read_room(&self, _room: &str, _: Credential) -> Result<serde_json::Value, Attempt> {
        Ok(serde_json::Value::Null)
    }

    async fn read_bans(&self, _room: &str, _: Credential) -> Result<serde_json::Value, Attempt> {
        Ok(serde_json::Value::Null)
    }
}

async fn scale(n: usize) -> Duration {
    let exec = Arc::new(Instantly(AtomicUsize::new(0)));
    // Many ops share keys (chains of 4), the rest are distinct.
    let ops: Vec<Op> = (0..n)
        .map(|i| {
            if i.is_multiple_of(2) {
                Op::freeze(format!("r{}", i / 8))
            } else {
                Op::mute(format!("u{}", i / 8), format!("r{i}"))
            }
        })
        .collect();
    let opts = RunnerOptions {
        concurrency: 64,
        rate: crate::units::Rate {
            count: u32::MAX,
            per: Duration::from_secs(1),
        },
        ..fast()
    };
    let rec = Arc::new(MemoryRecorder::default());
    let mut progress = Progress::log_only(None);
    let wall = std::time::Instant::now();
    let report = run(
        jops(ops),
        exec.clone(),
        rec,
        opts,
        Controls::default(),
        HashSet::new(),
        &mut progress,
    )
    .await;
    let took = wall.elapsed();
    assert_eq!(report.stop, StopReason::Completed);
    assert_eq!(report.stats.done, n as u64);
    assert_eq!(exec.0.load(Ordering::Relaxed), n);
    took
}

// Real time here: paused time would park the runtime to advance the clock for every op.
#[tokio::test]
async fn two_hundred_thousand_ops_schedule_quickly() {
    let small = scale(20_000).await;
    let big = scale(200_000).await;
    eprintln!("scheduled 20,000 ops in {small:?}, 200,000 in {big:?} (wall clock, debug build)");
    // Linear, not quadratic: 10x the ops may not cost 30x the time.
    assert!(
        big < small * 30 + Duration::from_secs(1),
        "{small:?} vs {big:?}"
    );
    assert!(big < Duration::from_secs(60), "{big:?}");
}

/// A recorder whose outcomes become durable only at its commits, every `every`, like the
/// journal's group commit on a slow disk.
struct SlowDisk {
    memory: MemoryRecorder,
    queued: AtomicUsize,
    committed: AtomicUsize,
    notify: tokio::sync::Notify,
}

impl SlowDisk {
    fn start(every: Duration) -> Arc<SlowDisk> {
        let disk = Arc::new(SlowDisk {
            memory: MemoryRecorder::default(),
            queued: AtomicUsize::new(0),
            committed: AtomicUsize::new(0),
            notify: tokio::sync::Notify::new(),
        });
        let weak = Arc::downgrade(&disk);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(d) = weak.upgrade() else { break };
                d.committed
                    .store(d.queued.load(Ordering::SeqCst), Ordering::SeqCst);
                d.notify.notify_one();
            }
        });
        disk
    }

    fn unrecorded(&self) -> usize {
        self.queued.load(Ordering::SeqCst) - self.committed.load(Ordering::SeqCst)
    }
}

impl Recorder for SlowDisk {
    fn record(&self, rec: crate::journal::OpRecord) -> Result<(), crate::journal::JournalError> {
        self.queued.fetch_add(1, Ordering::SeqCst);
        self.memory.record(rec)
    }

    fn not_durable(&self) -> Result<u64, crate::journal::JournalError> {
        Ok(self.unrecorded() as u64)
    }

    async fn durable_progress(&self) {
        self.notify.notified().await
    }

    async fn record_snapshot(
        &self,
        room: &str,
        prior: Option<serde_json::Value>,
    ) -> Result<(), crate::journal::JournalError> {
        self.memory.record_snapshot(room, prior).await
    }

    async fn record_ban_snapshot(
        &self,
        room: &str,
        prior: Option<serde_json::Value>,
    ) -> Result<(), crate::journal::JournalError> {
        self.memory.record_ban_snapshot(room, prior).await
    }
}

/// A kill -9 at any moment re-sends at most `2 × concurrency` ops, however slow the
/// journal's commits: answered ops not yet durable hold back new sends past that bound.
#[tokio::test(start_paused = true)]
async fn ops_sent_and_not_yet_durable_stay_under_twice_the_concurrency() {
    let disk = SlowDisk::start(Duration::from_millis(25));
    let fake = Fake::new(|_, _| (done(), Duration::from_millis(4)));
    let probe = disk.clone();
    assert!(
        fake.unrecorded
            .set(Box::new(move || probe.unrecorded()))
            .is_ok()
    );
    let ops: Vec<Op> = (0..300).map(|i| Op::freeze(format!("r{i}"))).collect();
    let opts = RunnerOptions {
        concurrency: 8,
        rate: "100000/s".parse().unwrap(),
        ..fast()
    };
    let mut progress = Progress::log_only(None);
    let report = run(
        jops(ops),
        fake.clone(),
        disk.clone(),
        opts,
        Controls::default(),
        HashSet::new(),
        &mut progress,
    )
    .await;
    assert_eq!(report.stop, StopReason::Completed);
    assert_eq!(report.stats.done, 300);
    assert_eq!(finals(&disk.memory).len(), 300);
    assert_eq!(fake.max_in_flight.load(Ordering::SeqCst), 8);
    assert_eq!(
        fake.max_unsettled.load(Ordering::SeqCst),
        16,
        "bound held, and reached with a disk this slow"
    );
}

#[tokio::test(start_paused = true)]
async fn a_429_on_an_ops_last_attempt_still_pauses_the_credential() {
    // With one attempt per op, the 429 ends its op as failed; its hint must still hold every
    // other request on that credential back (the server said so for all of them).
    let t0 = Instant::now();
    let first = Arc::new(AtomicUsize::new(0));
    let f2 = first.clone();
    let fake = Fake::new(move |_, _| {
        if f2.fetch_add(1, Ordering::SeqCst) == 0 {
            (
                transient(429, Some(Duration::from_secs(5))),
                Duration::from_millis(10),
            )
        } else {
            (done(), Duration::from_millis(10))
        }
    });
    let ops: Vec<Op> = (0..40).map(|i| Op::freeze(format!("r{i}"))).collect();
    let opts = RunnerOptions {
        concurrency: 4,
        max_attempts: 1,
        rate: "20/s".parse().unwrap(),
        ..fast()
    };
    let (report, rec) = go(ops, &fake, opts, Controls::default()).await;
    assert_eq!(report.stop, StopReason::Completed);
    assert_eq!(report.stats.rate_limited, 1);
    assert_eq!(report.stats.failed, 1);
    assert_eq!(report.stats.done, 39);
    assert_eq!(finals(&rec)[&0].state, Some(OpState::Failed));
    let gate_end = t0 + Duration::from_secs(5) + Duration::from_millis(10);
    let starts_in_pause = fake
        .events()
        .iter()
        .filter(|e| matches!(e, Ev::Start(_, t) if *t > t0 + Duration::from_millis(10) && *t < gate_end))
        .count();
    assert_eq!(starts_in_pause, 0, "requests sent inside the server's hint");
}

#[tokio::test(start_paused = true)]
async fn a_401_while_a_deadline_drains_still_ends_the_run_as_rejected() {
    // The deadline passes while four slow requests are on the wire; one of them comes back
    // 401. The run must end as credentials rejected (exit 3, the credential named), not as a
    // resumable deadline stop that would hide the bad token until the next run.
    let fake = Fake::new(|op, _| {
        if &*op.room == "r2" {
            (
                Outcome::CredentialsRejected {
                    credential: Credential::ClientToken,
                    status: 401,
                    code: Some("INVALID_TOKEN".into()),
                    message: Some("Invalid or expired token".into()),
                },
                Duration::from_secs(2),
            )
        } else {
            (done(), Duration::from_secs(2))
        }
    });
    let ops: Vec<Op> = (0..20).map(|i| Op::freeze(format!("r{i}"))).collect();
    let opts = RunnerOptions {
        concurrency: 4,
        deadline: Some((
            Instant::now() + Duration::from_millis(500),
            "--max-duration 500ms".into(),
        )),
        ..fast()
    };
    let (report, rec) = go(ops, &fake, opts, Controls::default()).await;
    match &report.stop {
        StopReason::CredentialsRejected { credential, .. } => {
            assert_eq!(*credential, Credential::ClientToken)
        }
        s => panic!("a 401 during the drain was hidden behind {s:?}"),
    }
    assert_eq!(fake.sends.load(Ordering::SeqCst), 4);
    // The three other requests on the wire are recorded with their truthful outcome.
    assert_eq!(report.stats.done, 3);
    assert_eq!(finals(&rec).len(), 3);
}

/// A host nothing of the run reaches: the run stops after the first op's
/// [`UNREACHED_ATTEMPTS`], no op failed nor recorded final, every op pending.
#[tokio::test(start_paused = true)]
async fn a_host_never_reached_stops_the_run_with_every_op_pending() {
    let fake = Fake::new(|_, _| (refused(), Duration::from_millis(1)));
    let ops: Vec<Op> = (0..20).map(|i| Op::freeze(format!("r-{i}"))).collect();
    let opts = RunnerOptions {
        concurrency: 4,
        ..fast()
    };
    let started = Instant::now();
    let (report, rec) = go(ops, &fake, opts.clone(), Controls::default()).await;
    match &report.stop {
        StopReason::Unreachable(u) => {
            assert_eq!(u.host, "127.0.0.1:9");
            assert_eq!(u.kind, UnreachedKind::Refused);
        }
        s => panic!("{s:?}"),
    }
    assert_eq!(report.stats.failed, 0);
    assert_eq!(report.stats.pending(), 20);
    assert!(finals(&rec).is_empty(), "{:?}", rec.records());
    // Each failed attempt is still recorded (attempts and message), with the op pending.
    assert!(rec.records().iter().all(|r| r.state.is_none()));
    // The first op to fail so UNREACHED_ATTEMPTS times stopped it (whichever its backoff
    // let go first).
    let most = fake.tries.lock().unwrap().values().copied().max();
    assert_eq!(most, Some(UNREACHED_ATTEMPTS));
    // Three attempts of one op, spaced by the backoff: at most its two ceilings.
    let bound = opts.backoff.ceiling(1) + opts.backoff.ceiling(2) + Duration::from_millis(50);
    assert!(started.elapsed() <= bound, "{:?}", started.elapsed());
    let msg = StopReason::unreachable_message(
        match &report.stop {
            StopReason::Unreachable(u) => u,
            _ => unreachable!(),
        },
        report.stats.pending(),
    );
    assert!(
        msg.contains("cannot reach 127.0.0.1:9: connection refused")
            && msg.contains("nothing reached the server; 20 ops stay pending")
            && msg.contains("--base-url / IMKIT_BASE_URL"),
        "{msg}"
    );
}

/// With `--max-attempts` under the bound, the op's last attempt stops the run instead of
/// failing the op.
#[tokio::test(start_paused = true)]
async fn an_unreached_last_attempt_stops_instead_of_failing() {
    let fake = Fake::new(|_, _| (refused(), Duration::from_millis(1)));
    let opts = RunnerOptions {
        max_attempts: 1,
        concurrency: 1,
        ..fast()
    };
    let (report, rec) = go(
        vec![Op::freeze("a"), Op::freeze("b")],
        &fake,
        opts,
        Controls::default(),
    )
    .await;
    assert!(
        matches!(report.stop, StopReason::Unreachable(_)),
        "{report:?}"
    );
    assert_eq!((report.stats.failed, report.stats.pending()), (0, 2));
    assert!(finals(&rec).is_empty());
    assert_eq!(fake.sends.load(Ordering::SeqCst), 1);
}

/// Once the server has answered, connect failures are transient as any other: retried, and
/// an op whose attempts all fail so is failed; the run is not stopped.
#[tokio::test(start_paused = true)]
async fn once_answered_connect_failures_are_transient() {
    let fake = Fake::new(|op, n| match (&*op.room, n) {
        ("a", _) => (done(), Duration::from_millis(1)),
        // Refused more often than the bound, then answered.
        ("b", n) if n <= 4 => (refused(), Duration::from_millis(5)),
        ("b", _) => (done(), Duration::from_millis(1)),
        _ => (refused(), Duration::from_millis(5)),
    });
    let opts = RunnerOptions {
        max_attempts: 6,
        ..fast()
    };
    let (report, rec) = go(
        vec![Op::freeze("a"), Op::freeze("b"), Op::freeze("c")],
        &fake,
        opts,
        Controls::default(),
    )
    .await;
    assert_eq!(report.stop, StopReason::Completed);
    assert_eq!((report.stats.done, report.stats.failed), (2, 1));
    let f = finals(&rec);
    assert_eq!(f[&1].state, Some(OpState::Done));
    assert_eq!(f[&1].attempts, 5);
    assert_eq!(f[&2].state, Some(OpState::Failed));
    assert_eq!(f[&2].attempts, 6);
}

/// A request that may have reached the server (sent, then timed out) means the host is
/// there: later connect failures are transient as any other.
#[tokio::test(start_paused = true)]
async fn a_request_that_may_have_arrived_disables_the_early_stop() {
    let fake = Fake::new(|_, n| match n {
        1 => (timed_out(), Duration::from_millis(1)),
        _ => (refused(), Duration::from_millis(1)),
    });
    let opts = RunnerOptions {
        max_attempts: 4,
        concurrency: 1,
        ..fast()
    };
    let (report, _) = go(vec![Op::freeze("a")], &fake, opts, Controls::default()).await;
    assert_eq!(report.stop, StopReason::Completed);
    assert_eq!(report.stats.failed, 1);
    assert_eq!(fake.sends.load(Ordering::SeqCst), 4);
}

/// Bans lock the (client, room) pair: one client's sweep over many rooms runs at the full
/// concurrency, while that client's mutes still go one at a time (one mute array).
#[tokio::test(start_paused = true)]
async fn a_ban_sweep_of_one_client_runs_concurrently_its_mutes_do_not() {
    let fake = Fake::new(|_, _| (done(), Duration::from_millis(20)));
    let sweep: Vec<Op> = (0..64).map(|i| Op::ban("spam", format!("r{i}"))).collect();
    let opts = RunnerOptions {
        concurrency: 8,
        ..fast()
    };
    let (report, _) = go(sweep, &fake, opts.clone(), Controls::default()).await;
    assert_eq!(report.stop, StopReason::Completed);
    assert_eq!(fake.max_in_flight.load(Ordering::SeqCst), 8);

    let fake = Fake::new(|_, _| (done(), Duration::from_millis(20)));
    let mutes: Vec<Op> = (0..16).map(|i| Op::mute("spam", format!("r{i}"))).collect();
    let (report, _) = go(mutes, &fake, opts.clone(), Controls::default()).await;
    assert_eq!(report.stop, StopReason::Completed);
    assert_eq!(fake.max_in_flight.load(Ordering::SeqCst), 1);

    // Ops on one ban pair keep their order and never overlap.
    let fake = Fake::new(|op, _| {
        let ms = if op.action == crate::op::Action::Ban {
            30
        } else {
            1
        };
        (done(), Duration::from_millis(ms))
    });
    let pair = vec![
        Op::ban("u", "r"),
        Op::unban("u", "r"),
        Op::ban("u", "r"),
        Op::ban("v", "r"),
    ];
    let (report, _) = go(pair, &fake, opts, Controls::default()).await;
    assert_eq!(report.stop, StopReason::Completed);
    let starts: Vec<String> = fake
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Ev::Start(k, _) if k.contains("\"u\"") => Some(k),
            _ => None,
        })
        .collect();
    assert_eq!(
        starts,
        [
            "ban client \"u\" in room \"r\"",
            "unban client \"u\" in room \"r\"",
            "ban client \"u\" in room \"r\"",
        ]
    );
    assert_eq!(fake.max_in_flight.load(Ordering::SeqCst), 2);
}

/// With the API key for room ops (no token), every op goes out on it and waits for its
/// one pace: 40 room ops and 40 mutes at 20/s take as long as 80 requests on one credential.
#[tokio::test(start_paused = true)]
async fn room_ops_and_mutes_on_the_api_key_share_its_one_pace() {
    let mut ops = Vec::new();
    for i in 0..40 {
        ops.push(Op::freeze(format!("r{i}")));
        ops.push(Op::mute(format!("u{i}"), "r"));
    }
    let run_with = |auth: Auth| {
        let ops = ops.clone();
        async move {
            let fake = Fake::new(|_, _| (done(), Duration::from_millis(1)));
            let opts = RunnerOptions {
                concurrency: 8,
                rate: "20/s".parse().unwrap(),
                auth,
                ..fast()
            };
            let t0 = Instant::now();
            let (report, _) = go(ops, &fake, opts, Controls::default()).await;
            assert_eq!(report.stop, StopReason::Completed);
            let by_cred = [0, 1].map(|c| fake.sends_by_cred[c].load(Ordering::SeqCst));
            (t0.elapsed(), by_cred)
        }
    };
    let key_only = Auth::resolve(None, false);
    let (one_pace, by_cred) = run_with(key_only).await;
    assert_eq!(by_cred, [0, 80]);
    let (two_paces, by_cred) = run_with(Auth::default()).await;
    assert_eq!(by_cred, [40, 40]);
    // 80 requests at 20/s (less the burst and the 1% headroom) on one credential, against
    // 40 on each of two.
    assert!(one_pace >= Duration::from_millis(3700), "{one_pace:?}");
    assert!(two_paces <= Duration::from_millis(2100), "{two_paces:?}");
}

/// Before a room's first ban or unban, `--snapshot` reads its ban list (once per room, with
/// the bans' credential) and records it with the ban recorder; mutes read nothing; a
/// refused read is recorded as unknown and the ban goes on.
#[tokio::test(start_paused = true)]
async fn ban_lists_are_read_once_per_room_before_its_first_ban() {
    struct Refusing(Arc<Fake>);
    impl Executor for Refusing {
        async fn send(&self, op: &Op, c: Credential) -> Attempt {
            self.0.send(op, c).await
        }
        async fn read_room(&self, room: &str, c: Credential) -> Result<serde_json::Value, Attempt> {
            self.0.read_room(room, c).await
        }
        async fn read_bans(&self, room: &str, c: Credential) -> Result<serde_json::Value, Attempt> {
            if room == "closed" {
                return Err(Attempt {
                    outcome: permanent(403, "INSUFFICIENT_PERMISSIONS"),
                    latency: Duration::from_millis(1),
                    reach: Reach::Answered,
                });
            }
            self.0.read_bans(room, c).await
        }
    }
    let fake = Fake::new(|op, _| match op.action {
        crate::op::Action::Ban if &*op.room == "b" => (
            Outcome::Done {
                status: 409,
                already: Some("USER_ALREADY_BLOCKED"),
            },
            Duration::from_millis(1),
        ),
        _ => (done(), Duration::from_millis(1)),
    });
    let exec = Arc::new(Refusing(fake.clone()));
    let ops = vec![
        Op::ban("u", "a"),
        Op::mute("u", "a"),
        Op::unban("v", "a"),
        Op::ban("u", "b"),
        Op::ban("u", "closed"),
        Op::freeze("a"),
    ];
    let rec = Arc::new(MemoryRecorder::default());
    let opts = RunnerOptions {
        snapshot: true,
        concurrency: 1,
        ..fast()
    };
    let report = run(
        jops(ops),
        exec,
        rec.clone(),
        opts,
        Controls::default(),
        HashSet::new(),
        &mut Progress::log_only(None),
    )
    .await;
    assert_eq!(report.stop, StopReason::Completed);
    assert_eq!(report.stats.done, 6);
    assert_eq!(
        (report.stats.snapshots, report.stats.snapshots_unknown),
        (4, 1)
    );
    let bans: Vec<(String, bool)> = rec
        .ban_snapshots()
        .into_iter()
        .map(|(r, p)| (r, p.is_some()))
        .collect();
    assert_eq!(
        bans,
        [
            ("a".to_string(), true),
            ("b".to_string(), true),
            ("closed".to_string(), false)
        ]
    );
    let rooms: Vec<String> = rec.snapshots().into_iter().map(|(r, _)| r).collect();
    assert_eq!(rooms, ["a"]);
    let ev = fake.events();
    let read = ev
        .iter()
        .position(|e| *e == Ev::ReadBans("a".into()))
        .unwrap();
    let first_ban = ev
        .iter()
        .position(|e| matches!(e, Ev::Start(k, _) if k == "ban client \"u\" in room \"a\""))
        .unwrap();
    assert!(read < first_ban);
    // The 409 is done, recorded as already in state with its code.
    let b = &finals(&rec)[&3];
    assert_eq!(b.state, Some(OpState::Done));
    assert_eq!(b.error_code.as_deref(), Some("USER_ALREADY_BLOCKED"));
    assert_eq!(
        b.message.as_deref(),
        Some("already in the desired state (USER_ALREADY_BLOCKED)")
    );
    assert_eq!(report.stats.already_by_code["USER_ALREADY_BLOCKED"], 1);
}
