//! Pacer tests with tokio's time paused and in-process budgets: the spacing, the 429 gate,
//! and limit discovery against the sandbox's own limiters (a fixed window per second, and
//! a token bucket), each answering a refused request with a whole-second hint as the
//! sandbox does. A simulated client sends one request at a time, answered after 2 ms.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::discovery::SETTLE;
use super::pacing::{Pacer, gcra_for};
use crate::budget::Budget;
use crate::op::Credential;
use crate::sandbox::limit::{Bucket, Limiter};
use crate::units::Rate;

fn rate(s: &str) -> Rate {
    s.parse().unwrap()
}

fn pacer(r: &str) -> Pacer {
    let r = rate(r);
    Pacer::new(Credential::ClientToken, r, Budget::in_process(gcra_for(r)))
}

#[tokio::test(start_paused = true)]
async fn spacing_follows_the_rate() {
    let p = pacer("10/s");
    let t0 = Instant::now();
    let mut starts = Vec::new();
    for _ in 0..11 {
        p.acquire().await.unwrap();
        starts.push(t0.elapsed());
    }
    // No head start: the first goes at once, then one every 101 ms (100 ms and the
    // headroom), so any one-second window from the first request holds 10, the rate.
    for (k, t) in starts.iter().enumerate() {
        let due = Duration::from_micros(101_000 * k as u64);
        assert!(
            *t >= due && *t <= due + Duration::from_millis(2),
            "request {k} at {t:?}, due at {due:?}"
        );
    }
    // A late caller catches up within the burst instead of losing the time.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let t1 = Instant::now();
    p.acquire().await.unwrap();
    p.acquire().await.unwrap();
    assert_eq!(t1.elapsed(), Duration::ZERO);
    p.acquire().await.unwrap();
    assert!(t1.elapsed() <= Duration::from_millis(100));
    let report = p.report().unwrap();
    assert_eq!(report.to_string(), "10/s (asked)");
}

#[tokio::test(start_paused = true)]
async fn a_429_closes_the_gate_for_its_hint() {
    let p = pacer("100/s");
    assert!(p.report().is_none(), "not used yet");
    let sent = Instant::now();
    p.acquire().await.unwrap();
    p.on_rate_limited(Duration::from_secs(2), sent);
    p.on_rate_limited(Duration::from_secs(1), sent);
    let t0 = Instant::now();
    p.acquire().await.unwrap();
    assert!(t0.elapsed() >= Duration::from_secs(2), "{:?}", t0.elapsed());
    assert!(p.paused_until().is_some());
}

/// The sandbox's limiter behind a switch (to change the limit mid-run).
struct Server(Mutex<Limiter>);

impl Server {
    fn new(limit: &str, burst: Option<u32>) -> Server {
        Server(Mutex::new(Limiter::new(rate(limit), burst)))
    }

    fn set(&self, limit: &str, burst: Option<u32>) {
        *self.0.lock().unwrap() = Limiter::new(rate(limit), burst);
    }

    /// Ok, or the hint of the 429: whole seconds, at least 1, as the sandbox answers.
    fn answer(&self, now: Instant) -> Result<(), Duration> {
        self.0
            .lock()
            .unwrap()
            .check(Bucket::ApiKey, now)
            .map_err(|wait| {
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                Duration::from_secs(secs.max(1))
            })
    }
}

/// Send times of what the server accepted and refused.
#[derive(Default)]
struct Log {
    accepted: Vec<Instant>,
    limited: Vec<Instant>,
}

impl Log {
    /// Accepted per 5 s, and 429s, for a failure's message.
    fn profile(&self, t0: Instant, to: u64) -> String {
        (0..to)
            .step_by(5)
            .map(|f| {
                let (a, b) = (t0 + secs(f), t0 + secs(f + 5));
                let lim = self.limited.iter().filter(|t| **t >= a && **t < b).count();
                format!("{f}:{:.1}{}", self.rate(t0, f, f + 5), "!".repeat(lim))
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Accepted requests per second sent in `[from, to)` after `t0`.
    fn rate(&self, t0: Instant, from: u64, to: u64) -> f64 {
        let (a, b) = (t0 + secs(from), t0 + secs(to));
        let n = self.accepted.iter().filter(|t| **t >= a && **t < b).count();
        n as f64 / (to - from) as f64
    }

    /// The share of requests sent in `[from, to)` that were answered 429.
    fn limited_share(&self, t0: Instant, from: u64, to: u64) -> f64 {
        let (a, b) = (t0 + secs(from), t0 + secs(to));
        let count = |v: &[Instant]| v.iter().filter(|t| **t >= a && **t < b).count();
        let limited = count(&self.limited);
        limited as f64 / (limited + count(&self.accepted)).max(1) as f64
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// One client sending through `pacer` to `server` until `until`, one request at a time.
async fn drive(pacer: &Pacer, server: &Server, until: Instant, log: &Mutex<Log>) {
    while Instant::now() < until {
        pacer.acquire().await.unwrap();
        let sent = Instant::now();
        let answer = server.answer(sent);
        tokio::time::sleep(Duration::from_millis(2)).await;
        match answer {
            Ok(()) => {
                pacer.on_answered(sent);
                log.lock().unwrap().accepted.push(sent);
            }
            Err(hint) => {
                pacer.on_rate_limited(hint, sent);
                log.lock().unwrap().limited.push(sent);
            }
        }
    }
}

/// Runs one client asking `asked` of `server` for `secs` seconds.
async fn simulate(asked: &str, server: &Server, seconds: u64) -> (Log, Pacer, Instant) {
    let p = pacer(asked);
    let log = Mutex::new(Log::default());
    let t0 = Instant::now();
    drive(&p, server, t0 + secs(seconds), &log).await;
    (log.into_inner().unwrap(), p, t0)
}

/// Asked twice the limit: over the first 15 s (300 requests' worth) at least 0.9 of the
/// limit with at most 3% answered 429, and after that never half a minute under 0.9.
async fn settles_under(burst: Option<u32>) {
    let server = Server::new("20/s", burst);
    let (log, p, t0) = simulate("40/s", &server, 180).await;
    let first = log.rate(t0, 0, 15);
    let share = log.limited_share(t0, 0, 15);
    assert!(first >= 18.0, "{first:.2}/s over the first 15 s");
    assert!(share <= 0.03, "{:.1}% 429s", share * 100.0);
    for from in (15..150).step_by(5) {
        let r = log.rate(t0, from, from + 30);
        assert!(r >= 18.0, "{r:.2}/s over {from}..{} s", from + 30);
    }
    let whole = log.limited_share(t0, 0, 180);
    assert!(whole <= 0.01, "{:.2}% 429s over 3 minutes", whole * 100.0);
    let report = p.report().unwrap();
    let line = report.to_string();
    assert!(
        line.starts_with(&format!("{:.1}/s (asked 40/s; discovered", p.pace())),
        "{line}"
    );
    let limit = report.limit_per_second.unwrap();
    assert!((19.0..=21.5).contains(&limit), "{line}");
}

#[tokio::test(start_paused = true)]
async fn asked_twice_a_fixed_windows_limit_it_settles_just_under_it() {
    settles_under(None).await;
}

#[tokio::test(start_paused = true)]
async fn asked_twice_a_token_buckets_limit_it_settles_just_under_it() {
    settles_under(Some(5)).await;
}

#[tokio::test(start_paused = true)]
async fn asked_three_or_four_times_the_limit_it_still_finds_it() {
    for (asked, burst) in [
        ("60/s", None),
        ("60/s", Some(5)),
        ("80/s", None),
        ("80/s", Some(5)),
    ] {
        let server = Server::new("20/s", burst);
        let (log, _, t0) = simulate(asked, &server, 120).await;
        let settled = log.rate(t0, 20, 120);
        assert!(
            settled >= 18.0,
            "{asked} {burst:?}: {settled:.2}/s after 20 s: {}",
            log.profile(t0, 120)
        );
        let share = log.limited_share(t0, 0, 120);
        assert!(
            share <= 0.02,
            "{asked} {burst:?}: {:.1}% 429s",
            share * 100.0
        );
    }
}

#[tokio::test(start_paused = true)]
async fn at_the_limit_nothing_is_refused_and_the_pace_is_the_asked_one() {
    for burst in [None, Some(5)] {
        let server = Server::new("20/s", burst);
        let (log, p, t0) = simulate("20/s", &server, 60).await;
        assert!(
            log.limited.is_empty(),
            "{burst:?}: {} 429s",
            log.limited.len()
        );
        let r = log.rate(t0, 0, 60);
        assert!(r >= 19.7, "{burst:?}: {r:.2}/s");
        assert_eq!(p.report().unwrap().to_string(), "20/s (asked)");
    }
}

#[tokio::test(start_paused = true)]
async fn after_a_limit_raise_the_pace_follows_it_up() {
    let server = Server::new("20/s", Some(5));
    let p = pacer("50/s");
    let log = Mutex::new(Log::default());
    let t0 = Instant::now();
    drive(&p, &server, t0 + secs(60), &log).await;
    // Settled near the old limit (a bucket's burst makes each measurement a little high,
    // so the pace nears it from above, 5% a 429).
    assert!((18.0..21.5).contains(&p.pace()), "{}", p.pace());
    server.set("40/s", Some(5));
    drive(&p, &server, t0 + secs(360), &log).await;
    let log = log.into_inner().unwrap();
    let r = log.rate(t0, 300, 360);
    assert!(r >= 36.0, "{r:.2}/s five minutes after the raise");
    let share = log.limited_share(t0, 60, 360);
    assert!(share <= 0.01, "{:.2}% 429s", share * 100.0);
}

#[tokio::test(start_paused = true)]
async fn after_a_limit_cut_it_settles_under_the_new_one() {
    for burst in [None, Some(5)] {
        let server = Server::new("20/s", burst);
        let p = pacer("40/s");
        let log = Mutex::new(Log::default());
        let t0 = Instant::now();
        drive(&p, &server, t0 + secs(60), &log).await;
        server.set("10/s", burst);
        drive(&p, &server, t0 + secs(180), &log).await;
        let log = log.into_inner().unwrap();
        for from in (90..150).step_by(10) {
            let r = log.rate(t0, from, from + 30);
            assert!(
                r >= 9.0,
                "{burst:?}: {r:.2}/s over {from}..{} s: {}",
                from + 30,
                log.profile(t0, 180)
            );
        }
        assert!(p.pace() <= 10.0 && p.pace() >= SETTLE * 9.5, "{}", p.pace());
    }
}

#[tokio::test(start_paused = true)]
async fn two_runs_on_one_budget_converge_on_the_limit_together() {
    for burst in [None, Some(5)] {
        let server = Server::new("20/s", burst);
        let r = rate("40/s");
        let budget = Budget::in_process(gcra_for(r));
        let a = Pacer::new(Credential::ClientToken, r, budget.clone());
        let b = Pacer::new(Credential::ClientToken, r, budget);
        let log = Mutex::new(Log::default());
        let t0 = Instant::now();
        let until = t0 + secs(120);
        tokio::join!(
            drive(&a, &server, until, &log),
            drive(&b, &server, until, &log)
        );
        let log = log.into_inner().unwrap();
        let together = log.rate(t0, 30, 120);
        assert!(
            together >= 18.0,
            "{burst:?}: {together:.2}/s together: {}",
            log.profile(t0, 120)
        );
        let share = log.limited_share(t0, 0, 120);
        assert!(share <= 0.03, "{burst:?}: {:.1}% 429s", share * 100.0);
    }
}

/// Real time: a host ledger broken mid-run fails the next draw, and nothing is granted.
#[tokio::test]
async fn a_budget_lost_mid_run_fails_the_draw() {
    let dir = tempfile::tempdir().unwrap();
    let r = rate("1000/s");
    let key = crate::budget::LedgerKey::new("https://x.test", &["sk_test_lost_ledger"]);
    let budget = Budget::on_host(dir.path(), &key, gcra_for(r)).unwrap();
    let ledger = std::path::PathBuf::from(budget.info().ledger);
    let p = Pacer::new(Credential::ApiKey, r, budget);
    p.acquire().await.unwrap();
    // The ledger's file becomes something no draw can open.
    std::fs::remove_file(&ledger).unwrap();
    std::fs::create_dir(&ledger).unwrap();
    let e = p.acquire().await.unwrap_err();
    assert_eq!(e.exit(), crate::Exit::Stopped);
    assert!(e.to_string().starts_with("lost the rate budget at "), "{e}");
}

#[tokio::test(start_paused = true)]
async fn a_few_429s_at_the_asked_pace_cost_only_their_hint() {
    let server = Server::new("1000/s", None);
    let p = pacer("20/s");
    let log = Mutex::new(Log::default());
    let t0 = Instant::now();
    for (k, until) in [10, 20, 30].into_iter().enumerate() {
        drive(&p, &server, t0 + secs(until), &log).await;
        let before = p.pace();
        p.on_rate_limited(secs(1), Instant::now());
        let t = Instant::now();
        p.acquire().await.unwrap();
        assert!(t.elapsed() >= secs(1), "the hint holds");
        if k < 2 {
            assert_eq!(
                p.pace(),
                before,
                "429 {k}: noise (a window's edge, a spike)"
            );
            assert_eq!(p.report().unwrap().to_string(), "20/s (asked)");
        } else {
            assert!(
                p.pace() < before * 0.96,
                "the third in a minute lowers the pace"
            );
        }
    }
}
