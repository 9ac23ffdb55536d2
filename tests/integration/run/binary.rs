//! `imkit-batch run` as a process, where exit codes, signals and printed output are the
//! point: SIGINT once and twice, no credential in any output or file, log lines beside the
//! progress bar, `-q --log-format json`, a proxy in the environment, the example jobs,
//! windows and `--until`, and the flags refused before anything is sent.

use std::path::Path;
use std::time::Duration;

use imkit_batch::journal::{OpRow, OpState};
use imkit_batch::op::Op;
use imkit_batch::sandbox::{self, SandboxConfig};

use super::{by_state, faulty, job};
use crate::util::{API_KEY, CLIENT_KEY, TOKEN, journal_rows, sandbox_credentials};

fn binary_run(manifest: &Path, base: &str, token: &str, args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("imkit-batch"));
    c.arg("run")
        .arg(manifest)
        .args(["--base-url", base])
        .args(args)
        .env_remove("IMKIT_BASE_URL")
        .env_remove("RUST_LOG")
        .env("IMKIT_CLIENT_KEY", CLIENT_KEY)
        .env("IMKIT_TOKEN", token)
        .env("IMKIT_API_KEY", API_KEY)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for v in crate::util::PROXY_VARS {
        c.env_remove(v);
    }
    c
}

/// Waits for a child with a deadline (polling; never blocks the runtime that serves the
/// sandbox), and returns its output.
async fn wait_output(mut child: std::process::Child, limit: Duration) -> std::process::Output {
    let deadline = tokio::time::Instant::now() + limit;
    // Drain the pipes on threads so a chatty child never blocks on a full pipe.
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut so, &mut v).unwrap();
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut se, &mut v).unwrap();
        v
    });
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the run did not end within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    std::process::Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

async fn poll_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_drains_exits_4_and_a_second_run_completes() {
    let ops: Vec<Op> = (0..200).map(|i| Op::freeze(format!("r-{i}"))).collect();
    let j = job(&ops);
    let mut cfg = SandboxConfig::new(sandbox_credentials());
    cfg.seed_from_ops(&ops);
    cfg.latency = Duration::from_millis(50);
    let sb = sandbox::spawn(cfg).await.unwrap();
    let base = sb.base_url();

    let child = binary_run(
        &j.manifest,
        &base,
        TOKEN,
        &["--rate", "40/s", "--concurrency", "4", "--snapshot"],
    )
    .spawn()
    .unwrap();
    let pid = child.id();
    poll_until("some requests", Duration::from_secs(20), || {
        sb.stats().applied_total >= 10
    })
    .await;
    let killed = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = wait_output(child, Duration::from_secs(20)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("stopped by signal"), "{stderr}");
    assert!(stderr.contains("ops pending"), "{stderr}");

    // In-flight requests were let finish and recorded: every applied change is done, and
    // every op recorded done was applied.
    let rows = journal_rows(&j.journal);
    let done: Vec<&OpRow> = rows.iter().filter(|r| r.state == OpState::Done).collect();
    assert!(
        !done.is_empty() && done.len() < ops.len(),
        "{:?}",
        by_state(&rows)
    );
    assert_eq!(done.len() as u64, sb.stats().applied_total);
    for r in &rows {
        let applied = sb.applied_op(&r.op);
        match r.state {
            OpState::Done => assert_eq!(applied, 1, "{}", r.op),
            OpState::Pending => assert_eq!(applied, 0, "{}", r.op),
            s => panic!("{s:?}"),
        }
    }

    // A second run sends only what is pending and completes.
    let out = wait_output(
        binary_run(&j.manifest, &base, TOKEN, &["--rate", "1000/s"])
            .spawn()
            .unwrap(),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for op in &ops {
        assert_eq!(sb.applied_op(op), 1, "{op}");
    }
    assert!(
        journal_rows(&j.journal)
            .iter()
            .all(|r| r.state == OpState::Done)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credential_reaches_output_or_journal() {
    const BAD_TOKEN: &str = "tok-revoked-Xw4Jr8Yt2Nq6";
    let secrets = [CLIENT_KEY, TOKEN, API_KEY, BAD_TOKEN];
    let mut ops: Vec<Op> = (0..60).map(|i| Op::freeze(format!("r-{i}"))).collect();
    ops.extend((0..60).map(|i| Op::mute(format!("u-{i}"), format!("r-{i}"))));
    ops.push(Op::freeze("missing-room"));
    let j = job(&ops);
    let cfg = faulty(&ops[..120], [0.15, 0.1, 0.05, 0.05], 9);
    let sb = sandbox::spawn(cfg).await.unwrap();
    let base = sb.base_url();
    let common = ["--rate", "5000/s", "--max-attempts", "12", "-vv"];

    // A revoked token: 401, exit 3 (JSON logs, most verbose).
    let mut args = common.to_vec();
    args.extend(["--log-format", "json"]);
    let first = wait_output(
        binary_run(&j.manifest, &base, BAD_TOKEN, &args)
            .spawn()
            .unwrap(),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        first.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    // The good token through faults (text logs, and again JSON after --retry-failed).
    let second = wait_output(
        binary_run(&j.manifest, &base, TOKEN, &common)
            .spawn()
            .unwrap(),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(
        second.status.code(),
        Some(1),
        "missing-room fails: {}",
        String::from_utf8_lossy(&second.stderr)
    );
    args.push("--retry-failed");
    let third = wait_output(
        binary_run(&j.manifest, &base, TOKEN, &args)
            .spawn()
            .unwrap(),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(third.status.code(), Some(1));
    assert!(sb.faults_total() > 20, "faults met: {}", sb.faults_total());

    let mut texts = Vec::new();
    for o in [&first, &second, &third] {
        texts.push(String::from_utf8_lossy(&o.stdout).into_owned());
        texts.push(String::from_utf8_lossy(&o.stderr).into_owned());
    }
    let first_err = &texts[1];
    assert!(first_err.contains("IMKIT_TOKEN"), "{first_err}");
    assert!(
        texts[3].contains("DEBUG") || texts[3].contains("TRACE"),
        "-vv logs at debug: {}",
        texts[3]
    );
    for t in &texts {
        for s in secrets {
            assert!(!t.contains(s), "a credential was printed:\n{t}");
        }
    }
    let dir = j.journal.parent().unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        let bytes = std::fs::read(&p).unwrap();
        for s in secrets {
            assert!(
                !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                "{s} found in {}",
                p.display()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_never_land_inside_the_progress_bar() {
    // Slow enough that the bar (redrawn twice a second off a terminal) is on screen when the
    // failures are logged.
    let ops: Vec<Op> = (0..24).map(|i| Op::freeze(format!("r-{i}"))).collect();
    let mut all = ops.clone();
    all.extend((0..6).map(|i| Op::freeze(format!("missing-{i}"))));
    let j = job(&all);
    let mut cfg = SandboxConfig::new(sandbox_credentials());
    cfg.seed_from_ops(&ops);
    cfg.latency = Duration::from_millis(60);
    let sb = sandbox::spawn(cfg).await.unwrap();
    let out = wait_output(
        binary_run(
            &j.manifest,
            &sb.base_url(),
            TOKEN,
            &[
                "--progress",
                "always",
                "--log-format",
                "json",
                "--concurrency",
                "1",
            ],
        )
        .spawn()
        .unwrap(),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ops"), "the bar was drawn: {err:?}");
    // Each log line starts a line of its own on screen: after the last carriage return or
    // line clear before it, nothing of the bar is left on that line.
    let mut logged = 0;
    for line in err.split('\n') {
        let Some(at) = line.find("{\"timestamp\"") else {
            continue;
        };
        logged += 1;
        let shown = line[..at]
            .rsplit(['\r'])
            .next()
            .unwrap_or("")
            .rsplit("\x1b[2K")
            .next()
            .unwrap_or("");
        let shown = shown.trim_start_matches(|c: char| {
            c == '\x1b' || c.is_ascii_digit() || "[ABCDJK;".contains(c)
        });
        assert!(shown.is_empty(), "log line drawn after {shown:?}: {line:?}");
    }
    assert!(logged >= 6, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigint_cancels_the_requests_in_flight() {
    use std::io::BufRead as _;
    let ops: Vec<Op> = (0..20).map(|i| Op::freeze(format!("r-{i}"))).collect();
    let j = job(&ops);
    let mut cfg = SandboxConfig::new(sandbox_credentials());
    cfg.seed_from_ops(&ops);
    cfg.latency = Duration::from_secs(5);
    let sb = sandbox::spawn(cfg).await.unwrap();
    let mut child = binary_run(&j.manifest, &sb.base_url(), TOKEN, &["--concurrency", "4"])
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let mut lines: Vec<String> = Vec::new();
    let wait_line = async |what: &str, lines: &mut Vec<String>| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            while let Ok(l) = rx.try_recv() {
                lines.push(l);
            }
            if lines.iter().any(|l| l.contains(what)) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {what:?} in {lines:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    poll_until("4 requests in flight", Duration::from_secs(20), || {
        sb.requests_total() >= 4
    })
    .await;
    let kill = |pid: &str| {
        assert!(
            std::process::Command::new("kill")
                .args(["-INT", pid])
                .status()
                .unwrap()
                .success()
        )
    };
    kill(&pid);
    wait_line("signal received", &mut lines).await;
    let t0 = std::time::Instant::now();
    kill(&pid);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(4),
            "in-flight requests not cancelled"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    reader.join().unwrap();
    while let Ok(l) = rx.try_recv() {
        lines.push(l);
    }
    let text = lines.join("\n");
    assert_eq!(status.code(), Some(4), "{text}");
    assert!(text.contains("requests in flight cancelled"), "{text}");
    assert_eq!(
        sb.requests_total(),
        4,
        "nothing dispatched after the first signal"
    );
    let rows = journal_rows(&j.journal);
    assert!(
        rows.iter().all(|r| r.state == OpState::Pending),
        "{:?}",
        by_state(&rows)
    );
    drop(sb);
}

/// `-q --log-format json` (a cron job feeding a log collector): warnings and the summary
/// only, every stderr line one JSON object, the summary's counts and failures by code true.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_json_logs_still_end_with_the_summary() {
    let mut ops: Vec<Op> = (0..30).map(|i| Op::freeze(format!("r-{i}"))).collect();
    let mut cfg = SandboxConfig::new(sandbox_credentials());
    cfg.seed_from_ops(&ops);
    ops.push(Op::freeze("no-such-room"));
    let j = job(&ops);
    let sb = sandbox::spawn(cfg).await.unwrap();
    let out = wait_output(
        binary_run(
            &j.manifest,
            &sb.base_url(),
            TOKEN,
            &["-q", "--log-format", "json", "--progress", "never"],
        )
        .spawn()
        .unwrap(),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l["level"] != "INFO" || l["summary"] == true),
        "-q shows no info events: {err}"
    );
    let summary: Vec<_> = lines.iter().filter(|l| l["summary"] == true).collect();
    assert_eq!(summary.len(), 1, "{err}");
    let s = summary[0];
    assert_eq!(s["total"], 31);
    assert_eq!(s["done"], 30);
    assert_eq!(s["failed"], 1);
    assert_eq!(s["pending"], 0);
    assert_eq!(s["failures_by_code"]["ROOM_NOT_FOUND"], 1);
    assert!(s["message"].as_str().unwrap().contains("failed"), "{s}");

    // Run again: the job is complete, said in one JSON line; and an error is one too.
    let json_lines = |args: &[&str]| {
        let out = binary_run(&j.manifest, &sb.base_url(), TOKEN, args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let lines: Vec<serde_json::Value> = err
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
            .collect();
        (out.status.code(), lines)
    };
    let (code, lines) = json_lines(&["-q", "--log-format", "json"]);
    assert_eq!(code, Some(1), "the recorded outcome");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["already_complete"], true);
    assert_eq!(lines[0]["done"], 30);
    assert_eq!(lines[0]["failed"], 1);
    let (code, lines) = json_lines(&["--log-format", "json", "--concurrency", "0"]);
    assert_eq!(code, Some(2));
    let last = lines.last().unwrap();
    assert_eq!(last["level"], "ERROR");
    assert_eq!(last["exit_code"], 2);
    assert!(
        last["message"].as_str().unwrap().contains("concurrency"),
        "{last}"
    );
    sb.shutdown().await.unwrap();
}

/// A proxy set in the environment (common on corporate machines) is never used for a
/// loopback API: plain-http credentials would leave the machine through it, and `--sandbox`
/// would be unreachable. A listener stands in for the proxy and must see no connection.
#[test]
fn a_proxy_in_the_environment_is_never_used_for_a_loopback_api() {
    use crate::util::{PROXY_VARS, Sandbox, exec, imkit, run_cmd, sandbox_config, write};
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    proxy.set_nonblocking(true).unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    let with_proxy = |mut c: std::process::Command| {
        for v in PROXY_VARS
            .iter()
            .filter(|v| !v.eq_ignore_ascii_case("no_proxy"))
        {
            c.env(v, &proxy_url);
        }
        c
    };
    let dir = tempfile::tempdir().unwrap();
    let m = write(
        dir.path(),
        "m.csv",
        "action,room,client\nfreeze,r1,\nmute,r2,c1\n",
    );

    let ops: Vec<Op> = imkit_batch::manifest::load(&m, &Default::default())
        .unwrap()
        .ops
        .into_iter()
        .map(|p| p.op)
        .collect();
    let mut cfg = sandbox_config();
    cfg.seed_from_ops(&ops);
    let sb = Sandbox::start(cfg);
    // A short timeout and one attempt: through the stand-in proxy the run fails fast.
    let quick = ["--timeout", "3s", "--max-attempts", "1"];
    let r = exec(with_proxy(run_cmd(&sb.url(), &m, &quick)));
    assert_eq!(r.code, 0, "{}", r.stderr);
    for op in &ops {
        assert_eq!(sb.applied_op(op), 1, "{op}");
    }

    let m2 = write(
        dir.path(),
        "m2.csv",
        "action,room\nfreeze,r1\nunfreeze,r1\n",
    );
    let r = exec(with_proxy(imkit(&[
        "run",
        m2.to_str().unwrap(),
        "--sandbox",
        "--progress",
        "never",
        "--timeout",
        "3s",
        "--max-attempts",
        "1",
    ])));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        matches!(proxy.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "a request went through the proxy"
    );
}

/// Every example job runs to exit 0 with `run --sandbox` (the README's first
/// command), whatever today's date, and running it again sends nothing and exits 0.
#[test]
fn every_example_job_runs_on_the_sandbox_and_a_rerun_sends_nothing() {
    let src = crate::util::repo_root().join("jobs/examples");
    let dir = tempfile::tempdir().unwrap();
    let mut jobs = Vec::new();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        // Only what the repository ships: a journal left by the README's `run ... --sandbox`
        // (or its lock) belongs to that rehearsal, not to this test.
        if name.contains(".journal") {
            continue;
        }
        std::fs::copy(&p, dir.path().join(&name)).unwrap();
        // maintenance-rooms.csv and ban-sweep-rooms.csv are the rooms_files of
        // maintenance-freeze.yaml and ban-sweep.yaml, not jobs.
        let rooms_file = ["maintenance-rooms.csv", "ban-sweep-rooms.csv"].contains(&&*name);
        if (name.ends_with(".csv") || name.ends_with(".yaml")) && !rooms_file {
            jobs.push(name);
        }
    }
    jobs.sort();
    assert_eq!(
        jobs,
        [
            "ban-sweep.yaml",
            "maintenance-freeze.yaml",
            "morning-unmute.csv",
            "night-mute.csv",
            "room-update.csv"
        ]
    );
    let run = |job: &str| {
        let mut c = crate::util::bin();
        c.current_dir(dir.path()).args([
            "run",
            job,
            "--sandbox",
            "--progress",
            "never",
            "--rate",
            "100/s",
        ]);
        for v in [
            "IMKIT_BASE_URL",
            "IMKIT_CLIENT_KEY",
            "IMKIT_TOKEN",
            "IMKIT_API_KEY",
            "RUST_LOG",
        ]
        .into_iter()
        .chain(crate::util::PROXY_VARS)
        {
            c.env_remove(v);
        }
        c.output().unwrap()
    };
    for job in &jobs {
        let first = run(job);
        let err = String::from_utf8_lossy(&first.stderr);
        assert_eq!(first.status.code(), Some(0), "{job}: {err}");
        assert!(err.contains("run complete: every op done"), "{job}: {err}");
        let rows = journal_rows(&dir.path().join(format!("{job}.sandbox.journal")));
        assert!(!rows.is_empty());
        assert!(rows.iter().all(|r| r.state == OpState::Done), "{job}");
        let again = run(job);
        let err = String::from_utf8_lossy(&again.stderr);
        assert_eq!(again.status.code(), Some(0), "{job} again: {err}");
        assert!(err.contains("already complete"), "{job} again: {err}");
        assert_eq!(
            journal_rows(&dir.path().join(format!("{job}.sandbox.journal"))),
            rows,
            "{job}"
        );
    }
}

/// The README's first command (`run jobs/examples/maintenance-freeze.yaml --sandbox`) leaves
/// nothing git would pick up, however often it runs (`--fresh` included): its journal, the
/// journal's companions, its lock and the copies `--fresh` sets aside are all ignored by the
/// repository's `.gitignore`; so the README's two setup commands work in either order on a
/// clone. Run in a scratch repository holding a copy of `.gitignore` and `jobs/`.
#[test]
fn the_readme_rehearsal_leaves_nothing_for_git() {
    let git = |dir: &Path, args: &[&str]| {
        std::process::Command::new("git")
            .current_dir(dir)
            .args(args)
            .output()
    };
    let dir = tempfile::tempdir().unwrap();
    if git(dir.path(), &["init", "-q"]).is_err() {
        println!("skipped: git is not installed");
        return;
    }
    let root = crate::util::repo_root();
    std::fs::copy(root.join(".gitignore"), dir.path().join(".gitignore")).unwrap();
    let examples = dir.path().join("jobs/examples");
    std::fs::create_dir_all(&examples).unwrap();
    for e in std::fs::read_dir(root.join("jobs/examples")).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if !name.contains(".journal") {
            std::fs::copy(&p, examples.join(&name)).unwrap();
        }
    }
    let status = || {
        let out = git(
            dir.path(),
            &["status", "--porcelain", "--untracked-files=all"],
        )
        .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let before = status();
    for extra in [&[][..], &[], &["--fresh"]] {
        let mut c = crate::util::bin();
        c.current_dir(dir.path()).args([
            "run",
            "jobs/examples/maintenance-freeze.yaml",
            "--sandbox",
            "--progress",
            "never",
            "--rate",
            "1000/s",
        ]);
        c.args(extra);
        for v in [
            "IMKIT_BASE_URL",
            "IMKIT_CLIENT_KEY",
            "IMKIT_TOKEN",
            "IMKIT_API_KEY",
        ] {
            c.env_remove(v);
        }
        let out = c.output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{extra:?}: {out:?}");
    }
    let left: Vec<String> = std::fs::read_dir(&examples)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".journal"))
        .collect();
    assert!(
        left.iter().any(|n| n.ends_with(".sandbox.journal"))
            && left.iter().any(|n| n.contains(".sandbox.journal.")),
        "the rehearsal's journal and the copy --fresh set aside: {left:?}"
    );
    assert_eq!(status(), before, "files git would pick up: {left:?}");
}

/// A YAML `window` through the binary: past its end, `run` sends nothing and exits 4 saying
/// so (the ops stay pending, resumable in a later window); with a window open now, it runs.
#[test]
fn windows_and_until_decide_when_the_binary_sends() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = |name: &str, start: &str, end: &str| {
        let p = dir.path().join(name);
        std::fs::write(
            &p,
            format!(
                "version: 1\nwindow:\n  start: {start}\n  end: {end}\nops:\n  - action: freeze\n    rooms: [a, b, c]\n"
            ),
        )
        .unwrap();
        p
    };
    let run = |manifest: &Path| {
        let mut c = crate::util::bin();
        c.arg("run")
            .arg(manifest)
            .args(["--sandbox", "--progress", "never"]);
        for v in [
            "IMKIT_BASE_URL",
            "IMKIT_CLIENT_KEY",
            "IMKIT_TOKEN",
            "IMKIT_API_KEY",
            "RUST_LOG",
        ]
        .into_iter()
        .chain(crate::util::PROXY_VARS)
        {
            c.env_remove(v);
        }
        c.output().unwrap()
    };
    let past = yaml("past.yaml", "2020-01-01T22:00:00Z", "2020-01-02T02:00:00Z");
    let out = run(&past);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("has already passed: nothing is sent"), "{err}");
    let rows = journal_rows(&dir.path().join("past.yaml.sandbox.journal"));
    assert_eq!(rows.len(), 3);
    assert!(
        rows.iter()
            .all(|r| r.state == OpState::Pending && r.attempts == 0)
    );

    let now = jiff::Timestamp::now();
    let open = yaml(
        "open.yaml",
        &(now - jiff::SignedDuration::from_secs(60)).to_string(),
        &(now + jiff::SignedDuration::from_secs(3600)).to_string(),
    );
    let out = run(&open);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A window opening in 1.5 s: run says until when it waits, and sends nothing before.
    let now = jiff::Timestamp::now();
    let start = now + jiff::SignedDuration::from_millis(1500);
    let start = start.round(jiff::Unit::Millisecond).unwrap();
    let later = yaml(
        "later.yaml",
        &start.to_string(),
        &(now + jiff::SignedDuration::from_secs(3600)).to_string(),
    );
    let out = run(&later);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains(&format!("waiting until the window's start, {start}")),
        "{err}"
    );
    let rows = journal_rows(&dir.path().join("later.yaml.sandbox.journal"));
    assert_eq!(rows.len(), 3);
    for r in &rows {
        assert_eq!(r.state, OpState::Done);
        let first = r.first_attempt_at.expect("sent");
        assert!(
            first >= start.as_millisecond(),
            "sent at {first} ms, before the window's start {}",
            start.as_millisecond()
        );
    }

    // --until in the past, no window: nothing is sent, exit 4, every op pending.
    let csv = dir.path().join("rooms.csv");
    std::fs::write(&csv, "room\na\nb\n").unwrap();
    let mut c = crate::util::bin();
    c.arg("run").arg(&csv).args([
        "--action",
        "freeze",
        "--sandbox",
        "--progress",
        "never",
        "--until",
        "2020-01-01T00:00:00Z",
    ]);
    for v in crate::util::PROXY_VARS {
        c.env_remove(v);
    }
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("--until 2020-01-01T00:00:00Z"), "{err}");
    let rows = journal_rows(&dir.path().join("rooms.csv.sandbox.journal"));
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter()
            .all(|r| r.state == OpState::Pending && r.attempts == 0)
    );
}

#[test]
fn run_refuses_plain_http_to_a_remote_host_before_anything_else() {
    let out = crate::util::bin()
        .args([
            "run",
            "does-not-matter.csv",
            "--base-url",
            "http://api.example.com",
        ])
        .env_remove("IMKIT_BASE_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("https://") && err.contains("loopback"),
        "{err}"
    );

    let out = crate::util::bin()
        .args([
            "run",
            "x.csv",
            "--concurrency",
            "0",
            "--max-failure-ratio",
            "2",
        ])
        .env_remove("IMKIT_BASE_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--concurrency")
            && err.contains("--max-failure-ratio")
            && err.contains("IMKIT_BASE_URL"),
        "{err}"
    );
}
