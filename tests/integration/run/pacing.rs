//! Pacing figures, not tests: `#[ignore]`d measurements of the achieved rate against the
//! sandbox's per-credential limit, against its latency, and against a precise 20 ms double.
//! They print `PACING ...` lines and assert nothing about time; `BENCHMARKS.md` holds the
//! figures and the command:
//!
//! cargo test --release --test integration pacing_ -- --ignored --nocapture --test-threads 1

use std::time::Duration;

use imkit_batch::op::Op;
use imkit_batch::sandbox::{self, SandboxConfig, SandboxHandle};

use super::{job, rate, run};
use crate::util::{api_credentials, sandbox_credentials};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn pacing_at_the_sandbox_rate_limit() {
    // (sandbox limit, --rate, seconds): equal rates, then asking for twice the limit. The
    // sandbox counts a fixed window per credential from its first request: 20/s crosses 29
    // window boundaries in 30 s; the documented 1000/min crosses one in 90 s.
    for (limit, ask, secs) in [
        ("20/s", "20/s", 30u64),
        ("1000/min", "1000/min", 90),
        ("20/s", "40/s", 15),
    ] {
        let rate: imkit_batch::units::Rate = limit.parse().unwrap();
        let n = (rate.per_second() * secs as f64) as usize;
        let ops: Vec<Op> = (0..n).map(|i| Op::freeze(format!("r-{i}"))).collect();
        let j = job(&ops);
        let mut cfg = SandboxConfig::new(sandbox_credentials());
        cfg.seed_from_ops(&ops);
        cfg.rate_limit = Some(rate);
        let sb = sandbox::spawn(cfg).await.unwrap();
        let t0 = std::time::Instant::now();
        let (exit, msg) = run(&j, &sb.base_url(), api_credentials(), |c| {
            c.rate = ask.parse().unwrap();
            c.concurrency = 8;
        })
        .await;
        let el = t0.elapsed().as_secs_f64();
        let req = sb.requests_total();
        let limited = sb.stats().rate_limited;
        println!(
            "PACING rate-limit {limit} (a fixed window of {} per credential), --rate {ask}: {n} ops in {el:.2}s = {:.2} ops/s \
             (target {:.2}/s, {:+.2}%); {req} requests, {limited} answered 429 ({:.2}%); exit {exit:?} {msg}",
            rate.count,
            n as f64 / el,
            rate.per_second(),
            100.0 * (n as f64 / el / rate.per_second() - 1.0),
            100.0 * limited as f64 / req as f64
        );
    }
}

/// The sandbox on a runtime of its own (one worker), so that the runner's runtime measured
/// here is not also the server's. Shut the runtime down with `shutdown_background`.
fn sandbox_on_own_runtime(cfg: SandboxConfig) -> (SandboxHandle, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let sb = std::thread::scope(|s| {
        s.spawn(|| rt.block_on(sandbox::spawn(cfg)).unwrap())
            .join()
            .unwrap()
    });
    (sb, rt)
}

/// The median time of one `GET /rooms/r-0`, one request at a time.
async fn median_answer_time(client: &imkit_batch::api::ApiClient) -> f64 {
    let mut rtt: Vec<Duration> = Vec::new();
    for _ in 0..101 {
        let t = std::time::Instant::now();
        client.get_room("r-0").await.unwrap();
        rtt.push(t.elapsed());
    }
    rtt.sort();
    rtt[50].as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn pacing_unlimited_with_20ms_latency() {
    for conc in [8usize, 32] {
        let expect = conc as f64 / 0.020;
        let n = (expect * 8.0) as usize;
        let ops: Vec<Op> = (0..n).map(|i| Op::freeze(format!("r-{i}"))).collect();
        let j = job(&ops);
        let mut cfg = SandboxConfig::new(sandbox_credentials());
        cfg.seed_from_ops(&ops);
        cfg.latency = Duration::from_millis(20);
        let (sb, rt) = sandbox_on_own_runtime(cfg);
        // What one answer really takes (the server's 20 ms sleep rounds up to the timer's
        // millisecond ticks), one request at a time.
        let client = imkit_batch::api::ApiClient::new(
            &sb.base_url().parse().unwrap(),
            api_credentials(),
            Default::default(),
        )
        .unwrap();
        let rtt50 = median_answer_time(&client).await;
        // The same without the sandbox's sleep: what HTTP itself costs here.
        let (sb0, rt0) = sandbox_on_own_runtime(SandboxConfig {
            latency: Duration::ZERO,
            ..sb.config().clone()
        });
        let client0 = imkit_batch::api::ApiClient::new(
            &sb0.base_url().parse().unwrap(),
            api_credentials(),
            Default::default(),
        )
        .unwrap();
        let http50 = median_answer_time(&client0).await;
        drop(sb0);
        rt0.shutdown_background();
        let t0 = std::time::Instant::now();
        let (exit, msg) = run(&j, &sb.base_url(), api_credentials(), |c| {
            c.rate = rate("100000/s");
            c.concurrency = conc as u32;
        })
        .await;
        let el = t0.elapsed().as_secs_f64();
        let got = n as f64 / el;
        println!(
            "PACING no limit, latency 20ms, concurrency {conc}: {n} ops in {el:.2}s = {got:.1} ops/s \
             (target {expect:.0}/s: {:+.2}%); one answer alone takes {:.2}ms (p50; {:.2}ms \
             without the sandbox's sleep), so concurrency/answer time = {:.0}/s: {:+.2}%; \
             exit {exit:?} {msg}",
            100.0 * (got / expect - 1.0),
            rtt50 * 1000.0,
            http50 * 1000.0,
            conc as f64 / rtt50,
            100.0 * (got / (conc as f64 / rtt50) - 1.0),
        );
        drop(sb);
        rt.shutdown_background();
    }
}

/// A double that answers every request `{"RC":0}` after 20 ms measured by a thread sleep
/// (tokio's timer rounds a 20 ms sleep up to its millisecond ticks; a thread sleep is
/// precise to tens of microseconds), on a runtime of its own.
fn precise_double() -> (String, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(256)
        .enable_all()
        .build()
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    async fn answer() -> ([(&'static str, &'static str); 1], &'static str) {
        tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(20)))
            .await
            .unwrap();
        (
            [("content-type", "application/json")],
            r#"{"RC":0,"RM":"OK","result":{}}"#,
        )
    }
    let app = axum::Router::new().fallback(answer);
    rt.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), rt)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn pacing_unlimited_against_a_precise_20ms_double() {
    let (base, rt) = precise_double();
    for conc in [8usize, 32] {
        let expect = conc as f64 / 0.020;
        let n = (expect * 8.0) as usize;
        let ops: Vec<Op> = (0..n).map(|i| Op::freeze(format!("r-{i}"))).collect();
        let j = job(&ops);
        let client = imkit_batch::api::ApiClient::new(
            &base.parse().unwrap(),
            api_credentials(),
            Default::default(),
        )
        .unwrap();
        let rtt50 = median_answer_time(&client).await;
        let t0 = std::time::Instant::now();
        let (exit, msg) = run(&j, &base, api_credentials(), |c| {
            c.rate = rate("100000/s");
            c.concurrency = conc as u32;
        })
        .await;
        let el = t0.elapsed().as_secs_f64();
        let got = n as f64 / el;
        println!(
            "PACING precise 20ms double, concurrency {conc}: {n} ops in {el:.2}s = {got:.1} ops/s \
             (target {expect:.0}/s: {:+.2}%); one answer alone {:.2}ms; exit {exit:?} {msg}",
            100.0 * (got / expect - 1.0),
            rtt50 * 1000.0,
        );
    }
    rt.shutdown_background();
}
