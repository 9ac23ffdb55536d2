//! The credential's rate budget through the binary: runs on one host share it (a ledger under
//! `$XDG_RUNTIME_DIR`), `--budget redis://...` shares it through a real `redis-server`, a
//! Redis unreachable at the start exits 2 with nothing sent or written, one lost mid-run
//! stops dispatching (exit 4) and the job resumes; and the pace a run settled on, and why,
//! in its summary and in `status`.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use imkit_batch::journal::OpState;

use crate::budget::{RedisServer, free_port};
use crate::util::{
    Ran, Sandbox, exec, freeze_job, imkit, journal_of, journal_rows, poll_until, ran, run_cmd,
    spawn,
};

/// `run` at `rate` with its ledgers under `runtime` (as `$XDG_RUNTIME_DIR`).
fn run_at(url: &str, manifest: &Path, runtime: &Path, rate: &str, extra: &[&str]) -> Child {
    let m = manifest.to_str().unwrap();
    let mut args = vec![
        "run",
        m,
        "--base-url",
        url,
        "--progress",
        "never",
        "--rate",
        rate,
    ];
    args.extend_from_slice(extra);
    let mut cmd = imkit(&args);
    cmd.env("XDG_RUNTIME_DIR", runtime);
    spawn(cmd)
}

fn finish(child: Child) -> Ran {
    ran(child.wait_with_output().unwrap())
}

/// The `pace` lines of a summary or of `status`.
fn pace_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("pace"))
        .map(str::to_string)
        .collect()
}

fn status_text(journal: &Path) -> String {
    let r = exec(imkit(&["status", journal.to_str().unwrap()]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    r.stdout
}

#[test]
fn two_runs_on_one_host_share_the_credentials_budget() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tempfile::tempdir().unwrap();
    let (a, mut config) = freeze_job(dir.path(), "a.csv", 60);
    for i in 0..60 {
        config.add_room(format!("r-{i}-b"), "owner-1", &[]);
    }
    let b_rooms: String = (0..60).map(|i| format!("r-{i}-b\n")).collect();
    let b = crate::util::write(dir.path(), "b.csv", &format!("room\n{b_rooms}"));
    let sb = Sandbox::start(config);
    let t0 = Instant::now();
    let (ra, rb) = (
        run_at(
            &sb.url(),
            &a,
            runtime.path(),
            "20/s",
            &["--action", "freeze"],
        ),
        run_at(
            &sb.url(),
            &b,
            runtime.path(),
            "20/s",
            &["--action", "freeze"],
        ),
    );
    let (ra, rb) = (finish(ra), finish(rb));
    let took = t0.elapsed();
    assert_eq!((ra.code, rb.code), (0, 0), "{}\n{}", ra.stderr, rb.stderr);
    // 120 requests at 20/s between them, not at 20/s each: at least 119 intervals of the
    // pace but the burst (a lower bound on time, which a loaded machine cannot break).
    assert!(took >= Duration::from_millis(5_700), "{took:?}");
    assert_eq!(sb.requests_total(), 120);
    let lines: Vec<String> = [&ra, &rb]
        .iter()
        .flat_map(|r| pace_lines(&r.stderr))
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l == "pace: 20/s (asked; shared with 1 other run on this host)"),
        "{lines:?}"
    );
    // The ledger is named by a hash: no secret in the runtime dir.
    let names = crate::util::files_in(&runtime.path().join("imkit-batch"));
    assert!(names.iter().all(|n| !n.contains("5ecret")), "{names:?}");
    // After the run, `status` says the same.
    let status = status_text(&journal_of(&a));
    assert_eq!(pace_lines(&status).len(), 1, "{status}");
}

#[test]
fn an_unreachable_redis_budget_exits_2_before_anything_is_sent_or_written() {
    let dir = tempfile::tempdir().unwrap();
    let (m, config) = freeze_job(dir.path(), "job.csv", 5);
    let sb = Sandbox::start(config);
    let port = free_port();
    let budget = format!("redis://:pw-NOT-SHOWN@127.0.0.1:{port}/0");
    let r = exec(run_cmd(
        &sb.url(),
        &m,
        &["--action", "freeze", "--budget", &budget],
    ));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "cannot reach the rate budget at redis://***@127.0.0.1:{port}/0: "
        )) && r.stderr.contains("nothing was sent"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("pw-NOT-SHOWN"), "{}", r.stderr);
    assert_eq!(sb.requests_total(), 0);
    assert!(!journal_of(&m).exists(), "no journal written");
    // A URL that is not one is refused with the other flags, also exit 2.
    let r = exec(run_cmd(&sb.url(), &m, &["--budget", "http://127.0.0.1/0"]));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("invalid --budget"), "{}", r.stderr);
}

#[test]
fn a_redis_budget_lost_mid_run_stops_dispatching_and_the_job_resumes() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let runtime = tempfile::tempdir().unwrap();
    let (m, config) = freeze_job(dir.path(), "job.csv", 300);
    let sb = Sandbox::start(config);
    let url = redis.url();
    let child = run_at(
        &sb.url(),
        &m,
        runtime.path(),
        "50/s",
        &["--action", "freeze", "--budget", &url],
    );
    poll_until(Duration::from_secs(30), "20 requests", || {
        sb.requests_total() >= 20
    });
    redis.kill();
    let killed_at = sb.requests_total();
    let r = finish(child);
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(
        r.stderr
            .contains(&format!("lost the rate budget at {url}: "))
            && r.stderr
                .contains("stopped dispatching rather than send unpaced"),
        "{}",
        r.stderr
    );
    // Nothing went out unpaced: after the loss, at most what was already on the wire or
    // granted (the concurrency, 8) reached the sandbox.
    let sent = sb.requests_total();
    assert!(sent <= killed_at + 8, "{killed_at} then {sent}");
    let rows = journal_rows(&journal_of(&m));
    let done = rows.iter().filter(|r| r.state == OpState::Done).count();
    assert!(
        done < 300 && done as u64 <= sent,
        "{done} done of {sent} sent"
    );
    // With Redis back (a new one), the run resumes and finishes; nothing is frozen twice.
    let Some(again) = RedisServer::start() else {
        return;
    };
    let child = run_at(
        &sb.url(),
        &m,
        runtime.path(),
        "1000/s",
        &["--action", "freeze", "--budget", &again.url()],
    );
    let r = finish(child);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        pace_lines(&r.stderr),
        [format!(
            "pace: 1000/s (asked; shared through {})",
            again.url()
        )]
    );
    let rows = journal_rows(&journal_of(&m));
    assert!(rows.iter().all(|r| r.state == OpState::Done));
    let status = status_text(&journal_of(&m));
    assert!(status.contains("exit 4 (stopped)"), "{status}");
    assert!(
        status.contains(&format!(
            "pace: 1000/s (asked; shared through {})",
            again.url()
        )),
        "{status}"
    );
}

#[test]
fn asked_twice_the_servers_limit_the_run_says_what_it_discovered() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tempfile::tempdir().unwrap();
    let (m, mut config) = freeze_job(dir.path(), "job.csv", 120);
    config.rate_limit = Some("20/s".parse().unwrap());
    config.rate_limit_burst = Some(5);
    let sb = Sandbox::start(config);
    let r = finish(run_at(
        &sb.url(),
        &m,
        runtime.path(),
        "40/s",
        &["--action", "freeze"],
    ));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines = pace_lines(&r.stderr);
    assert_eq!(lines.len(), 1, "{}", r.stderr);
    let line = &lines[0];
    // 120 requests: too few, as a rule, to measure past the first 429s, which come too
    // early to tell the server's rate from its burst and halve the pace (once, or on a
    // loaded machine twice).
    assert!(
        line.starts_with("pace: ")
            && (line.contains("/s (asked 40/s; discovered: the server answered 429 above ~")
                || line.contains("/s (asked 40/s; lowered: the server answered 429 at ")),
        "{line}"
    );
    let pace: f64 = line["pace: ".len()..line.find("/s").unwrap()]
        .parse()
        .unwrap();
    assert!(pace > 0.0 && pace <= 21.0, "{line}");
    assert!(sb.stats().rate_limited <= 6, "{}", sb.stats().rate_limited);
    let status = status_text(&journal_of(&m));
    assert_eq!(pace_lines(&status), lines, "{status}");
    // The sandbox of `run --sandbox` is the run's own: its budget too.
    let r = exec(imkit(&[
        "run",
        m.to_str().unwrap(),
        "--sandbox",
        "--action",
        "freeze",
        "--fresh",
        "--progress",
        "never",
        "--rate",
        "2000/s",
    ]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(pace_lines(&r.stderr), ["pace: 2000/s (asked)"]);
}
