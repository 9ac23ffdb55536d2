//! The runbooks of `jobs/runbooks/`, executed by bash from their first command to their last
//! against a sandbox, with the built binary as `BIN`, the test credentials in the
//! environment and a temporary `WORK_DIR`; each pause answered once the sandbox shows what
//! the step before it did. Then the sandbox's state: rooms frozen before a maintenance window
//! stay frozen and the others are active again; a migration's updates are all applied, the
//! failed ones by the re-run alone; a ban sweep's lift leaves exactly the bans from before.
//! The night-mode units are checked as files here (`systemd-analyze verify`, the crontab
//! line against the service); running the night is for a test with daily windows.
//! Skipped, with a message, where bash is missing.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use imkit_batch::op::Op;
use imkit_batch::sandbox::{DEFAULT_OWNER, OpKind, SandboxConfig};

use crate::util::{
    API_KEY, CLIENT_KEY, PROXY_VARS, Ran, Sandbox, TOKEN, repo_root, sandbox_config,
};

/// How long a runbook, or the step a test waits for, may take on a loaded machine (each
/// takes well under a few seconds).
const LIMIT: Duration = Duration::from_secs(60);

/// What a script prints when it stops for a manual step.
const PAUSE: &str = ">>> Press Enter to go on";

/// The rooms' owner's token for a lift, a non-admin user of the sandbox. It holds `5ecret`,
/// like the test credentials, so the scan of the scripts' output finds it too.
const OWNER_TOKEN: &str = "own-5ecret-0a11ce";

/// Whether bash runs here; if not, the test says so and is skipped.
fn have_bash(test: &str) -> bool {
    let ok = Command::new("bash")
        .args(["-c", "true"])
        .stdin(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipping {test}: bash not found");
    }
    ok
}

/// The ops of an example manifest of `jobs/examples/`.
fn example_ops(name: &str) -> Vec<Op> {
    let path = repo_root().join("jobs/examples").join(name);
    let m = imkit_batch::manifest::load(&path, &Default::default()).unwrap();
    m.ops.iter().map(|p| p.op.clone()).collect()
}

/// A runbook running under bash: its stdin held for the pauses, its output collected.
struct Script {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

/// Collects everything `pipe` gives, as it comes, so a test can wait for a line.
fn collect(mut pipe: impl std::io::Read + Send + 'static) -> (Arc<Mutex<String>>, JoinHandle<()>) {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    (text, reader)
}

impl Script {
    /// `bash jobs/runbooks/NAME` against `url`, with `work` as its WORK_DIR, a rehearsal
    /// (REHEARSAL=1) at a high rate, and `env` on top. Nothing of the caller's environment
    /// that the scripts or imkit-batch read is passed on (nor any proxy).
    fn start(name: &str, url: &str, work: &Path, env: &[(&str, &str)]) -> Script {
        let mut c = Command::new("bash");
        c.arg(repo_root().join("jobs/runbooks").join(name));
        for v in [
            "IMKIT_BASE_URL",
            "IMKIT_CLIENT_KEY",
            "IMKIT_TOKEN",
            "IMKIT_API_KEY",
            "IMKIT_OWNER_TOKEN",
            "BIN",
            "MANIFEST",
            "WORK_DIR",
            "RUN_FLAGS",
            "REHEARSAL",
            "RUST_LOG",
        ]
        .into_iter()
        .chain(PROXY_VARS)
        {
            c.env_remove(v);
        }
        c.env("BIN", env!("CARGO_BIN_EXE_imkit-batch"))
            .env("IMKIT_BASE_URL", url)
            .env("IMKIT_CLIENT_KEY", CLIENT_KEY)
            .env("IMKIT_TOKEN", TOKEN)
            .env("IMKIT_API_KEY", API_KEY)
            .env("WORK_DIR", work)
            .env("RUN_FLAGS", "--rate 20000/s --progress never")
            .env("REHEARSAL", "1")
            .envs(env.iter().copied())
            // Its own process group, so a script that overruns is stopped with its children.
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let stdin = child.stdin.take();
        let (stdout, out_reader) = collect(child.stdout.take().unwrap());
        let (stderr, err_reader) = collect(child.stderr.take().unwrap());
        Script {
            child,
            stdin,
            stdout,
            stderr,
            readers: vec![out_reader, err_reader],
        }
    }

    fn output(&self) -> String {
        format!(
            "--- stdout\n{}\n--- stderr\n{}",
            self.stdout.lock().unwrap(),
            self.stderr.lock().unwrap()
        )
    }

    /// Stops the whole process group of a script that overran, and fails the test.
    fn overran(&mut self, what: &str) -> ! {
        let _ = rustix::process::kill_process_group(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::KILL,
        );
        let _ = self.child.wait();
        panic!("timed out waiting for {what}\n{}", self.output());
    }

    /// Waits until the script has stopped at its `n`-th pause (counting from 1).
    fn wait_for_pause(&mut self, n: usize) {
        let deadline = Instant::now() + LIMIT;
        while self.stdout.lock().unwrap().matches(PAUSE).count() < n {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "the script ended ({status}) before pause {n}\n{}",
                    self.output()
                );
            }
            if Instant::now() > deadline {
                self.overran(&format!("pause {n}"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Answers a pause, as the operator's Enter.
    fn answer(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    /// Closes stdin (a pause not answered ends the script) and waits for the script's end.
    fn finish(mut self) -> Ran {
        drop(self.stdin.take());
        let deadline = Instant::now() + LIMIT;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                self.overran("the end of the script");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        for r in self.readers.drain(..) {
            r.join().unwrap();
        }
        let ran = Ran {
            code: status.code().unwrap_or(-1),
            stdout: std::mem::take(&mut *self.stdout.lock().unwrap()),
            stderr: std::mem::take(&mut *self.stderr.lock().unwrap()),
        };
        for text in [&ran.stdout, &ran.stderr] {
            assert!(
                !text.contains("5ecret"),
                "a credential in the output: {ran:?}"
            );
        }
        ran
    }
}

/// The rooms listed by the manifest a script wrote (`action,room,...` rows of `action`).
fn rows_of(manifest: &Path, action: &str) -> Vec<String> {
    let text = std::fs::read_to_string(manifest).unwrap();
    let prefix = format!("{action},");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|rest| rest.split(',').next().unwrap().to_owned())
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------
// maintenance-window.sh

/// The freeze with `--snapshot`, the pause for the maintenance (every room frozen), then the
/// revert's unfreeze: the rooms that were frozen before the window (seeded frozen, by no job
/// of this runbook) stay frozen and get no unfreeze; every other room is active again. Run a
/// second time with the same WORK_DIR, the script sends nothing.
#[test]
fn maintenance_window_unfreezes_exactly_the_rooms_it_froze() {
    if !have_bash("maintenance_window_unfreezes_exactly_the_rooms_it_froze") {
        return;
    }
    let ops = example_ops("maintenance-freeze.yaml");
    assert_eq!(ops.len(), 18);
    let mut c = sandbox_config();
    c.seed_from_ops(&ops);
    // Frozen for violations before the window. `imkit-batch sandbox` has no option for a
    // room that starts frozen (the runbooks' README freezes them with a job of their own);
    // the in-process seed does, and no journal of this runbook knows of these freezes.
    let frozen_before = ["lobby-newcomers", "region-jp-kanto", "region-au"];
    for r in frozen_before {
        c.rooms.get_mut(r).unwrap().status = 0;
    }
    let sb = Sandbox::start(c);
    let work = tempfile::tempdir().unwrap();

    let mut s = Script::start("maintenance-window.sh", &sb.url(), work.path(), &[]);
    s.wait_for_pause(1);
    for op in &ops {
        assert_eq!(
            sb.room_status(&op.room),
            Some(0),
            "{} during the window",
            op.room
        );
    }
    s.answer();
    let r = s.finish();
    assert_eq!(r.code, 0, "{r:?}");

    for op in &ops {
        let room = &*op.room;
        let path = format!("/rooms/{room}");
        let before = frozen_before.contains(&room);
        assert_eq!(
            sb.room_status(room),
            Some(if before { 0 } else { 1 }),
            "{room}"
        );
        assert_eq!(sb.op_counts(OpKind::Freeze, &path).applied, 1, "{room}");
        assert_eq!(sb.op_counts(OpKind::Get, &path).received, 1, "{room}");
        let unfreezes = sb.op_counts(OpKind::Unfreeze, &path);
        assert_eq!(unfreezes.received, u64::from(!before), "{room}");
        assert_eq!(unfreezes.applied, u64::from(!before), "{room}");
    }
    let unfrozen = rows_of(&work.path().join("unfreeze.csv"), "unfreeze");
    let expected: Vec<String> = ops
        .iter()
        .map(|o| o.room.to_string())
        .filter(|r| !frozen_before.contains(&r.as_str()))
        .collect();
    assert_eq!(sorted(unfrozen), sorted(expected));
    assert!(
        r.stdout
            .contains("checked: the freeze and the unfreeze are complete; rooms unfrozen: 15"),
        "{}",
        r.stdout
    );
    // The rehearsal's own view, from the control API.
    assert!(
        r.stdout.contains("  region-jp-kanto: frozen\n"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("  lobby-main: active\n"), "{}", r.stdout);

    // The header's promise: run again with the same WORK_DIR, every step is a no-op.
    let requests = sb.requests_total();
    let mut s = Script::start("maintenance-window.sh", &sb.url(), work.path(), &[]);
    s.wait_for_pause(1);
    s.answer();
    let r = s.finish();
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(sb.requests_total(), requests, "{r:?}");
}

// ---------------------------------------------------------------------------------------
// data-migration.sh

/// A sandbox on an address that outlives it: stopped and started again there with more
/// rooms, as an operator restarts `imkit-batch sandbox --listen ADDR` (the same base URL, so
/// the journal goes on). Its state is read through the control API, as a rehearsal would.
struct Restartable {
    rt: tokio::runtime::Runtime,
    addr: SocketAddr,
    running: Option<Running>,
    http: reqwest::Client,
}

type Running = (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
);

impl Restartable {
    fn start(config: SandboxConfig) -> Restartable {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let mut s = Restartable {
            rt,
            addr,
            running: None,
            http,
        };
        s.serve(listener, config);
        s
    }

    fn serve(&mut self, listener: tokio::net::TcpListener, config: SandboxConfig) {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = self
            .rt
            .spawn(imkit_batch::sandbox::run(listener, config, async {
                let _ = rx.await;
            }));
        self.running = Some((tx, task));
    }

    /// Stops the sandbox (in-flight answers finish) and serves `config` on the same address.
    fn restart(&mut self, config: SandboxConfig) {
        if let Some((tx, task)) = self.running.take() {
            let _ = tx.send(());
            self.rt.block_on(task).unwrap().unwrap();
        }
        // The old listener is closed; the port is rebound at once (tokio sets SO_REUSEADDR).
        let listener = self
            .rt
            .block_on(tokio::net::TcpListener::bind(self.addr))
            .unwrap();
        self.serve(listener, config);
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `GET /_sandbox/...`: the status and the JSON body.
    fn control(&self, path_and_query: &str) -> (u16, serde_json::Value) {
        let url = format!("{}/_sandbox/{path_and_query}", self.url());
        self.rt.block_on(async {
            let r = self.http.get(&url).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(serde_json::Value::Null))
        })
    }

    /// Received and applied updates of `room`.
    fn updates(&self, room: &str) -> (u64, u64) {
        let (status, v) = self.control(&format!("applied?kind=update&path=/rooms/{room}"));
        assert_eq!(status, 200, "{v}");
        (
            v["received"].as_u64().unwrap(),
            v["applied"].as_u64().unwrap(),
        )
    }

    /// Asserts that `room` holds every field the update `op` sends.
    fn assert_updated(&self, op: &Op) {
        let (status, room) = self.control(&format!("rooms/{}", op.room));
        assert_eq!(status, 200, "{}: {room}", op.room);
        let body = imkit_batch::api::request::Request::for_op(op).body.unwrap();
        for (field, value) in body.as_object().unwrap() {
            assert_eq!(&room[field], value, "{}: {field} in {room}", op.room);
        }
    }
}

impl Drop for Restartable {
    fn drop(&mut self) {
        if let Some((tx, task)) = self.running.take() {
            let _ = tx.send(());
            let _ = self.rt.block_on(task);
        }
    }
}

/// The migration against a sandbox without three of its rooms: the run's exit 1 is handled,
/// retry.csv lists exactly those three, and the script pauses; the sandbox is then restarted
/// on the same address with every room (the fix), and the re-run sends the three failed
/// updates and nothing else. Every update is applied in the end.
#[test]
fn data_migration_reruns_only_the_failed_updates_after_the_fix() {
    if !have_bash("data_migration_reruns_only_the_failed_updates_after_the_fix") {
        return;
    }
    let ops = example_ops("room-update.csv");
    assert_eq!(ops.len(), 10);
    let missing = ["support-vip", "support-legacy-3", "faq-bot"];
    let present: Vec<Op> = ops
        .iter()
        .filter(|o| !missing.contains(&&*o.room))
        .cloned()
        .collect();
    let mut before_fix = sandbox_config();
    before_fix.seed_from_ops(&present);
    let mut sb = Restartable::start(before_fix);
    let work = tempfile::tempdir().unwrap();

    let mut s = Script::start("data-migration.sh", &sb.url(), work.path(), &[]);
    s.wait_for_pause(1);
    for op in &present {
        sb.assert_updated(op);
        assert_eq!(sb.updates(&op.room), (1, 1), "{}", op.room);
    }
    for room in missing {
        assert_eq!(sb.control(&format!("rooms/{room}")).0, 404, "{room}");
        assert_eq!(sb.updates(room), (1, 0), "{room}: tried once, answered 404");
    }
    let retry = rows_of(&work.path().join("retry.csv"), "update");
    assert_eq!(
        sorted(retry),
        sorted(missing.iter().map(|r| r.to_string()).collect())
    );

    // The fix: the missing rooms now exist (a restarted sandbox starts afresh, so the rooms
    // updated before the restart are back to their seeds there, and must get nothing now).
    let mut after_fix = sandbox_config();
    after_fix.seed_from_ops(&ops);
    sb.restart(after_fix);
    s.answer();
    let r = s.finish();
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .contains("some updates failed permanently (exit 1, expected in this runbook)"),
        "{}",
        r.stdout
    );
    for op in &ops {
        let retried = missing.contains(&&*op.room);
        if retried {
            sb.assert_updated(op);
        }
        let n = u64::from(retried);
        assert_eq!(sb.updates(&op.room), (n, n), "{} after the fix", op.room);
    }
    assert!(
        r.stdout
            .contains("progress   10 of 10 ops final (100.0%): 10 done, 0 failed"),
        "{}",
        r.stdout
    );
    let report = std::fs::read_to_string(work.path().join("report.csv")).unwrap();
    assert_eq!(report.lines().filter(|l| l.contains(",done,")).count(), 10);
}

// ---------------------------------------------------------------------------------------
// ban-sweep.sh

/// The sandbox of the example sweep: its rooms, owned by [`DEFAULT_OWNER`], and fifty bans
/// from before it (by the rooms' owner): the swept account in two rooms, and 48 of other
/// accounts spread over all of them. Returns the config and those bans by room.
fn ban_sweep_sandbox(ops: &[Op]) -> (SandboxConfig, BTreeMap<String, Vec<String>>) {
    let mut c = sandbox_config();
    c.seed_from_ops(ops);
    let spam = ops[0].client.as_deref().unwrap();
    for room in ["announcements", "market-tickets"] {
        assert!(c.add_ban(room, spam));
    }
    for i in 0..48 {
        assert!(c.add_ban(&ops[i % ops.len()].room, format!("troll-{i}")));
    }
    assert_eq!(c.bans.values().map(Vec::len).sum::<usize>(), 50);
    let before = c.bans.clone();
    (c, before)
}

/// Every room of the sweep bans the swept account, beside the bans from before.
fn assert_swept(sb: &Sandbox, ops: &[Op], before: &BTreeMap<String, Vec<String>>) {
    for op in ops {
        let banned = sb.banned(&op.room).unwrap();
        let client = op.client.as_deref().unwrap();
        assert!(
            banned.iter().any(|c| c == client),
            "{}: {banned:?}",
            op.room
        );
        for b in before.get(&*op.room).into_iter().flatten() {
            assert!(banned.contains(b), "{}: {b} in {banned:?}", op.room);
        }
    }
}

/// Exactly the bans from before are left, and the lift sent no unban where the account was
/// banned before the sweep.
fn assert_lifted(sb: &Sandbox, ops: &[Op], before: &BTreeMap<String, Vec<String>>) {
    for op in ops {
        let room = &*op.room;
        let expected = before.get(room).cloned().unwrap_or_default();
        assert_eq!(sb.banned(room).unwrap(), expected, "{room}");
    }
    let client = ops[0].client.as_deref().unwrap();
    for room in ["announcements", "market-tickets"] {
        let path = format!("/blockStatus/room/{room}/{client}");
        assert_eq!(sb.op_counts(OpKind::Unban, &path).received, 0, "{room}");
    }
}

/// The sweep and its lift on a sandbox that lets the admin unban (`--admin-may-unban`): the
/// lift runs on the same credentials as the sweep, no owner token.
#[test]
fn ban_sweep_lift_on_a_sandbox_that_lets_the_admin_unban() {
    if !have_bash("ban_sweep_lift_on_a_sandbox_that_lets_the_admin_unban") {
        return;
    }
    let ops = example_ops("ban-sweep.yaml");
    assert_eq!(ops.len(), 14);
    let (mut c, before) = ban_sweep_sandbox(&ops);
    c.admin_may_unban = true;
    let sb = Sandbox::start(c);
    let work = tempfile::tempdir().unwrap();

    let mut s = Script::start("ban-sweep.sh", &sb.url(), work.path(), &[]);
    s.wait_for_pause(1);
    assert_swept(&sb, &ops, &before);
    s.answer();
    let r = s.finish();
    assert_eq!(r.code, 0, "{r:?}");
    assert_lifted(&sb, &ops, &before);
    assert_eq!(rows_of(&work.path().join("lift.csv"), "unban").len(), 12);
    assert!(
        r.stdout
            .contains("checked: the sweep is lifted; bans lifted: 12"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("  announcements: spam-4417 troll-2 troll-16 troll-30 troll-44\n"),
        "{}",
        r.stdout
    );
}

/// On a sandbox where only the rooms' owner may unban (the vendor's rule): the lift on the
/// admin's credentials is refused 403, handled (exit 1, lift-failed.csv) with every ban still
/// in place; run again with the owner's token (IMKIT_OWNER_TOKEN, a `--user` of the sandbox)
/// and the same WORK_DIR, the script lifts the sweep.
#[test]
fn ban_sweep_lift_refused_to_the_admin_then_done_with_the_owners_token() {
    if !have_bash("ban_sweep_lift_refused_to_the_admin_then_done_with_the_owners_token") {
        return;
    }
    let ops = example_ops("ban-sweep.yaml");
    let (mut c, before) = ban_sweep_sandbox(&ops);
    c.add_user(OWNER_TOKEN, DEFAULT_OWNER);
    let sb = Sandbox::start(c);
    let work = tempfile::tempdir().unwrap();

    let mut s = Script::start("ban-sweep.sh", &sb.url(), work.path(), &[]);
    s.wait_for_pause(1);
    s.answer();
    let r = s.finish();
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains("set IMKIT_OWNER_TOKEN and run this script again"),
        "{}",
        r.stderr
    );
    assert_eq!(
        rows_of(&work.path().join("lift-failed.csv"), "unban").len(),
        12
    );
    assert_swept(&sb, &ops, &before);

    let mut s = Script::start(
        "ban-sweep.sh",
        &sb.url(),
        work.path(),
        &[("IMKIT_OWNER_TOKEN", OWNER_TOKEN)],
    );
    s.wait_for_pause(1);
    s.answer();
    let r = s.finish();
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .contains("--retry-failed --rate 20000/s --progress never --room-auth token"),
        "{}",
        r.stdout
    );
    assert_lifted(&sb, &ops, &before);
    // The sweep was not sent again: one ban request per room in all.
    let client = ops[0].client.as_deref().unwrap();
    for op in &ops {
        let path = format!("/blockStatus/room/{}/{client}", op.room);
        assert_eq!(sb.op_counts(OpKind::Ban, &path).received, 1, "{}", op.room);
    }
}

// ---------------------------------------------------------------------------------------
// night-mode/: the files (the night itself runs in a test with daily windows)

fn night_mode(name: &str) -> PathBuf {
    repo_root().join("jobs/runbooks/night-mode").join(name)
}

/// `systemd-analyze verify` accepts the service and the timer (with `ExecStart` pointed at
/// the built binary, since it checks that the command exists, and no man page lookup).
#[test]
fn night_mode_systemd_units_verify() {
    let available = Command::new("systemd-analyze")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !available {
        eprintln!("skipping night_mode_systemd_units_verify: systemd-analyze not found");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let service = std::fs::read_to_string(night_mode("imkit-batch-night-mute.service")).unwrap();
    assert!(service.contains("ExecStart=/usr/local/bin/imkit-batch run "));
    let service = service.replace(
        "/usr/local/bin/imkit-batch",
        env!("CARGO_BIN_EXE_imkit-batch"),
    );
    let units = [
        ("imkit-batch-night-mute.service", service),
        (
            "imkit-batch-night-mute.timer",
            std::fs::read_to_string(night_mode("imkit-batch-night-mute.timer")).unwrap(),
        ),
    ];
    let mut paths = Vec::new();
    for (name, text) in units {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        paths.push(p);
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&paths)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The crontab line and the service run the same imkit-batch command (the cron one with the
/// env file the service gets from systemd), every five minutes, with no credential in
/// either file.
#[test]
fn night_mode_crontab_and_service_run_the_same_command() {
    let crontab = std::fs::read_to_string(night_mode("crontab")).unwrap();
    let lines: Vec<&str> = crontab
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let fields: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(fields[..5], ["*/5", "*", "*", "*", "*"]);
    assert!(!lines[0].contains('%'), "an unescaped % in {}", lines[0]);
    let bin = "/usr/local/bin/imkit-batch ";
    let cron_cmd = lines[0].split_once(bin).unwrap().1;
    let cron_cmd = cron_cmd.split_once(" >>").unwrap().0.replace('\'', "");
    let cron_cmd = cron_cmd.replace(" --env-file /etc/imkit-batch/imkit.env", "");

    let service = std::fs::read_to_string(night_mode("imkit-batch-night-mute.service")).unwrap();
    let exec = service
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    let service_cmd = exec.split_once(bin).unwrap().1;
    assert_eq!(cron_cmd, service_cmd);
    assert!(
        service_cmd.starts_with(
            "run /etc/imkit-batch/night-mute.yaml --journal night-mute.{date}.journal --no-wait"
        ),
        "{service_cmd}"
    );
    assert!(service.contains("EnvironmentFile=/etc/imkit-batch/imkit.env\n"));
    let timer = std::fs::read_to_string(night_mode("imkit-batch-night-mute.timer")).unwrap();
    assert!(timer.contains("OnCalendar=*-*-* *:00/5:00\n"), "{timer}");
    assert!(timer.contains("Persistent=true\n"), "{timer}");
    for text in [&crontab, &service, &timer] {
        for var in ["IMKIT_API_KEY=", "IMKIT_TOKEN=", "IMKIT_CLIENT_KEY="] {
            assert!(!text.contains(var), "{var} in a unit or the crontab");
        }
    }
    let manifest = std::fs::read_to_string(night_mode("night-mute.yaml")).unwrap();
    assert!(manifest.contains("undo_at_end: true"), "{manifest}");
}

/// The night itself: the service's own command (its `ExecStart`, with the built binary and a
/// copy of the manifest), run as the timer would every few minutes across two nights in
/// Europe/Berlin, its clock set by the `IMKIT_BATCH_NOW` test hook. Before the window:
/// nothing. In it: every pair muted, in the journal of that evening. Later the same night:
/// nothing more. After 07:00: the mutes undone at once, in the same journal. The next
/// evening: a new journal, mutes again. On the API key alone, as the env file has it.
#[test]
fn night_mode_service_mutes_at_night_and_undoes_in_the_morning_once_per_night() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("night-mute.yaml");
    std::fs::copy(night_mode("night-mute.yaml"), &manifest).unwrap();
    let m = imkit_batch::manifest::load(&manifest, &Default::default()).unwrap();
    let pairs: Vec<(String, String)> = m
        .ops
        .iter()
        .map(|p| {
            (
                p.op.client.as_deref().unwrap().to_string(),
                p.op.room.to_string(),
            )
        })
        .collect();
    let mut config = sandbox_config();
    config.seed_from_ops(m.ops.iter().map(|p| &p.op));
    let sb = Sandbox::start(config);

    let service = std::fs::read_to_string(night_mode("imkit-batch-night-mute.service")).unwrap();
    let exec = service
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    let argv: Vec<String> = exec
        .split_whitespace()
        .map(|a| {
            a.replace(
                "/usr/local/bin/imkit-batch",
                env!("CARGO_BIN_EXE_imkit-batch"),
            )
            .replace(
                "/etc/imkit-batch/night-mute.yaml",
                manifest.to_str().unwrap(),
            )
        })
        .collect();
    let tick = |now: &str| {
        let out = Command::new(&argv[0])
            .args(&argv[1..])
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("IMKIT_BASE_URL", sb.url())
            .env("IMKIT_API_KEY", API_KEY)
            .env("IMKIT_BATCH_NOW", now)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        crate::util::ran(out)
    };
    let journals = || {
        let mut v: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".journal"))
            .collect();
        v.sort();
        v
    };
    let muted = |client: &str, room: &str| {
        sb.muted_rooms(client)
            .unwrap_or_default()
            .iter()
            .any(|r| r == room)
    };

    // 21:00 in Berlin: the window has not opened; --no-wait exits 4 at once, nothing written.
    let r = tick("2026-11-22T21:00:00+01:00");
    assert_eq!(r.code, 4, "{r:?}");
    assert_eq!(sb.requests_total(), 0);
    assert!(journals().is_empty(), "{:?}", journals());

    // 22:00:01: the night's job: every pair muted; the undo is not due, so it exits 4.
    let r = tick("2026-11-22T22:00:01+01:00");
    assert_eq!(r.code, 4, "{r:?}");
    assert!(pairs.iter().all(|(c, room)| muted(c, room)), "{r:?}");
    assert_eq!(journals(), ["night-mute.2026-11-22.journal"]);
    let after_mutes = sb.requests_total();

    // 23:30, the next ticks of the night: nothing more is sent.
    let r = tick("2026-11-22T23:30:00+01:00");
    assert_eq!(r.code, 4, "{r:?}");
    assert_eq!(sb.requests_total(), after_mutes);

    // 07:00:30 the next morning: the night's changes are undone at once, in its journal.
    let r = tick("2026-11-23T07:00:30+01:00");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(pairs.iter().all(|(c, room)| !muted(c, room)), "{r:?}");
    assert_eq!(journals(), ["night-mute.2026-11-22.journal"]);
    let after_undo = sb.requests_total();

    // Later that morning: the next window has not opened; nothing sent, no new journal.
    let r = tick("2026-11-23T09:00:00+01:00");
    assert_eq!(r.code, 4, "{r:?}");
    assert_eq!(sb.requests_total(), after_undo);
    assert_eq!(journals(), ["night-mute.2026-11-22.journal"]);

    // The next evening: a new night, a new journal, the pairs muted again.
    let r = tick("2026-11-23T22:00:01+01:00");
    assert_eq!(r.code, 4, "{r:?}");
    assert!(pairs.iter().all(|(c, room)| muted(c, room)), "{r:?}");
    assert_eq!(
        journals(),
        [
            "night-mute.2026-11-22.journal",
            "night-mute.2026-11-23.journal"
        ]
    );
    assert!(
        !r.stderr.contains(API_KEY) && !r.stdout.contains(API_KEY),
        "the key printed"
    );
}
