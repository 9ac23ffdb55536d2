//! Crash safety: the real binary against an in-process sandbox, killed with SIGKILL at
//! seeded moments (requests on the wire, outcomes not yet committed, the plan import, a
//! flaky network) and run again: every op applied, none recorded done sent again, re-sends
//! bounded by what was in flight; snapshots and `--fresh` survive the kills, and neither the
//! journal nor its WAL ever holds a credential.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use imkit_batch::api::Request;
use imkit_batch::journal::{Journal, OpState};
use imkit_batch::manifest::{LoadOptions, load};
use imkit_batch::op::{Action, Op};
use imkit_batch::sandbox::SandboxConfig;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::util::{
    self, Sandbox, bytes, exec, files_in, freeze_job, journal_of, revert_to, run_cmd, write,
};

/// `METHOD /path` of the request that carries `op`: the sandbox's key for it.
fn key_of(op: &Op) -> String {
    let r = Request::for_op(op);
    format!("{} {}", r.method.as_str(), r.path)
}

/// Request keys of the ops the journal records in `state`.
fn keys_in(journal: &Path, state: OpState) -> HashSet<String> {
    let j = Journal::open_read_only(journal).unwrap();
    let mut out = HashSet::new();
    j.for_each_op(
        Some(state),
        |row| -> Result<(), imkit_batch::journal::JournalError> {
            out.insert(key_of(&row.op));
            Ok(())
        },
    )
    .unwrap();
    out
}

/// Changing requests in the sandbox's log with a sequence number above `after`, by key.
fn sent_after(sb: &Sandbox, after: u64) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for e in sb.log(usize::MAX) {
        if e.seq > after && !e.request.starts_with("GET ") {
            *m.entry(e.request).or_default() += 1;
        }
    }
    m
}

/// Why the tests that measure what a kill left in flight cannot run on this system.
const NO_PROC_NET_TCP: &str = "the kernel's socket table (/proc/net/tcp) cannot be read here, \
    and without it nothing tells when the sandbox has finished with a killed run's requests";

/// Sockets of the sandbox on `port` that can still hand it a request, from the kernel's
/// table (`None` where it cannot be read): ESTABLISHED (served, or still in the accept
/// queue) and CLOSE_WAIT (the client closed it, the sandbox has not yet). A socket the client
/// reset leaves the table at once, but a client resets only a socket holding an answer it
/// had not read, and then the sandbox has logged every request of that connection (it logs
/// before it answers, and a client sends the next request only after reading the answer).
fn sandbox_side_connections(port: u16) -> Option<usize> {
    const ESTABLISHED: &str = "01";
    const CLOSE_WAIT: &str = "08";
    let mut open = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            if table.ends_with('6') {
                continue;
            }
            return None;
        };
        // "sl local_address rem_address st ...", the port in hex after the last colon.
        for line in text.lines().skip(1) {
            let mut fields = line.split_whitespace().skip(1);
            let (Some(local), Some(_), Some(state)) = (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let local_port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && (state == ESTABLISHED || state == CLOSE_WAIT) {
                open += 1;
            }
        }
    }
    Some(open)
}

/// Waits until the sandbox has closed its side of every connection made to it (the test runs
/// one client at a time, so after a kill these are the killed run's). Only then are its
/// request count and log final: `child.wait()` returning means the kernel has closed the dead
/// process's sockets, not that the sandbox has noticed. Requests the process wrote may still
/// sit unread in a socket or the accept queue, or be serving their latency; the sandbox
/// counts and logs them when it gets to them, which on a loaded machine can be after the
/// test has taken its reading. An answer logged then lands in the next run's log range and
/// its op, still pending, is sent again there: "an op answered twice in one run".
fn wait_until_the_sandbox_closed_every_connection(sb: &Sandbox) {
    let port = sb.addr().port();
    util::poll_until(
        Duration::from_secs(30),
        "the sandbox to close the killed run's connections",
        || sandbox_side_connections(port) == Some(0),
    );
}

/// A mixed job: freezes, updates, mutes and unmutes (of pairs muted at start), interleaved,
/// every op with its own request; and a sandbox seeded with what it names.
fn mixed_job(dir: &Path, n: usize) -> (std::path::PathBuf, SandboxConfig, Vec<Op>) {
    let mut csv = String::from("action,room,client,name\n");
    for i in 0..n {
        match i % 5 {
            0 => writeln!(csv, "freeze,f-{i},,").unwrap(),
            1 => writeln!(csv, "ban,b-{i},e-{i},").unwrap(),
            2 => writeln!(csv, "update,u-{i},,Renamed {i}").unwrap(),
            3 => writeln!(csv, "mute,m-{i},c-{i},").unwrap(),
            _ => writeln!(csv, "unmute,n-{i},d-{i},").unwrap(),
        }
    }
    let path = write(dir, "night.csv", &csv);
    let m = load(&path, &LoadOptions::default()).unwrap();
    let ops: Vec<Op> = m.ops.into_iter().map(|p| p.op).collect();
    let mut c = util::sandbox_config();
    c.seed_from_ops(&ops);
    for op in &ops {
        if op.action == Action::Unmute {
            c.add_mute(&**op.client.as_ref().unwrap(), &*op.room);
        }
    }
    (path, c, ops)
}

/// What one kill left behind, measured from the sandbox and the journal right after it.
struct Kill {
    /// Ops the journal recorded done at the kill, and the sandbox's last log entry then.
    done: HashSet<String>,
    last_seq: u64,
    /// Requests of the killed run the sandbox received and had not answered (they were on
    /// the wire when the process died).
    unanswered: u64,
    /// Requests of the killed run the sandbox answered whose op the journal had not
    /// recorded done (the outcome was not durable yet, or the answer never read).
    uncommitted: HashSet<String>,
}

/// Kill -9 at seeded moments, re-run after each, then finish: every op applied, nothing the
/// journal recorded done is sent again, re-sends bounded by the ops in flight at the kills,
/// and a last `run` sends nothing.
///
/// Half the kills land right after the N-th request of the run arrives (so requests are on
/// the wire), half at a seeded time offset after the run's first request (anywhere in the
/// send/answer/commit cycle). What was in flight at each kill is measured from the sandbox's
/// side (received but unanswered, answered but not recorded done), not from the re-sends it
/// is checked against: each answered request is matched, key by key, with the kills at which
/// its op was answered and not recorded.
#[test]
fn kill_9_at_random_moments_then_resume_sends_each_op_once() {
    if sandbox_side_connections(0).is_none() {
        eprintln!("skipped: {NO_PROC_NET_TCP}");
        return;
    }
    const OPS: usize = 1500;
    const CONCURRENCY: u64 = 8;
    const KILLS: usize = 6;
    let dir = tempfile::tempdir().unwrap();
    let (manifest, mut config, ops) = mixed_job(dir.path(), OPS);
    config.latency = Duration::from_millis(3);
    let sb = Sandbox::start(config);
    let journal = journal_of(&manifest);
    let run = || run_cmd(&sb.url(), &manifest, &["--concurrency", "8"]);
    let mut rng = StdRng::seed_from_u64(0xdead_beef);
    let mut kills: Vec<Kill> = Vec::new();
    let mut done_before: HashSet<String> = HashSet::new();
    for k in 0..KILLS {
        let base = sb.requests_total();
        let seq_before = sb.last_seq();
        let mut child = util::spawn(run());
        let alive = |child: &mut std::process::Child| {
            if let Ok(Some(st)) = child.try_wait() {
                panic!("run {k} ended ({st}) before its kill");
            }
        };
        if k % 2 == 0 {
            let wait_for = rng.random_range(40..200u64);
            util::poll_until(Duration::from_secs(30), "requests before the kill", || {
                alive(&mut child);
                sb.requests_total() >= base + wait_for
            });
        } else {
            util::poll_until(Duration::from_secs(30), "the run's first request", || {
                alive(&mut child);
                sb.requests_total() > base
            });
            // Not a wait for a condition: this picks the moment of the kill.
            std::thread::sleep(Duration::from_micros(rng.random_range(0..40_000)));
            alive(&mut child);
        }
        child.kill().unwrap();
        let st = child.wait().unwrap();
        assert!(!st.success(), "killed run exited {st}");
        // The sandbox counts a request on arrival and logs it when it answers; one still
        // waiting for its answer when the connection closed is dropped unanswered and
        // unapplied. The process being gone does not make those readings final: see
        // `wait_until_the_sandbox_closed_every_connection`.
        wait_until_the_sandbox_closed_every_connection(&sb);
        let done = keys_in(&journal, OpState::Done);
        assert!(
            keys_in(&journal, OpState::Failed).is_empty(),
            "no op can fail here"
        );
        let received = sb.requests_total() - base;
        let answered: Vec<_> = sb
            .log(usize::MAX)
            .into_iter()
            .filter(|e| e.seq > seq_before)
            .collect();
        let last_seq = answered.last().map_or(seq_before, |e| e.seq);
        let answered_keys: HashSet<String> = answered.iter().map(|e| e.request.clone()).collect();
        assert_eq!(
            answered_keys.len(),
            answered.len(),
            "run {k}: an op answered twice in one run (nothing is retried here)"
        );
        // Nothing the journal recorded done at an earlier kill was sent after it.
        for (i, prev) in kills.iter().enumerate() {
            assert!(prev.done.is_subset(&done), "done ops lost after kill {k}");
            let again: Vec<_> = sent_after(&sb, prev.last_seq)
                .into_keys()
                .filter(|key| prev.done.contains(key))
                .collect();
            assert!(
                again.is_empty(),
                "recorded done before kill {i}, sent again after it: {again:?}"
            );
        }
        // The journal records done only what the server answered in this run.
        let newly: HashSet<String> = done.difference(&done_before).cloned().collect();
        let unrecorded: Vec<_> = newly.difference(&answered_keys).collect();
        assert!(
            unrecorded.is_empty(),
            "run {k}: recorded done without an answer: {unrecorded:?}"
        );
        let unanswered = received
            .checked_sub(answered.len() as u64)
            .expect("more answers than requests");
        let uncommitted: HashSet<String> = answered_keys.difference(&newly).cloned().collect();
        eprintln!(
            "kill {k}: {received} requests, {} answered, {} recorded done; in flight: {unanswered} unanswered + {} answered, not recorded",
            answered.len(),
            newly.len(),
            uncommitted.len()
        );
        // At most CONCURRENCY requests on the wire; those plus the answered ones whose outcome
        // is not durable stay under twice the concurrency (the runner's documented bound).
        assert!(
            unanswered <= CONCURRENCY,
            "kill {k}: {unanswered} requests on the wire, concurrency {CONCURRENCY}"
        );
        assert!(
            unanswered + uncommitted.len() as u64 <= 2 * CONCURRENCY,
            "kill {k}: {unanswered} unanswered + {} uncommitted, concurrency {CONCURRENCY}",
            uncommitted.len()
        );
        done_before = done.clone();
        kills.push(Kill {
            done,
            last_seq,
            unanswered,
            uncommitted,
        });
    }
    let in_flight: Vec<u64> = kills
        .iter()
        .map(|k| k.unanswered + k.uncommitted.len() as u64)
        .collect();
    assert!(
        in_flight.iter().any(|&n| n > 0),
        "no kill landed with an op in flight: {in_flight:?}"
    );

    // A journal left by kill -9 reads fine, and says the job is incomplete.
    let st = exec(util::imkit(&[
        "status",
        journal.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(st.code, 0, "{st:?}");
    let v: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(v["state"], "incomplete", "{v}");
    assert_eq!(v["counts"]["done"], done_before.len());
    assert_eq!(v["runs"].as_array().unwrap().len(), KILLS);
    assert!(
        v["runs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["exit_code"].is_null())
    );

    // Finish the job: exactly the ops not recorded done are sent, once each.
    let base = sb.requests_total();
    let fin = exec(run());
    assert_eq!(fin.code, 0, "{fin:?}");
    assert_eq!(sb.requests_total() - base, (OPS - done_before.len()) as u64);
    for (i, prev) in kills.iter().enumerate() {
        let again: Vec<_> = sent_after(&sb, prev.last_seq)
            .into_keys()
            .filter(|key| prev.done.contains(key))
            .collect();
        assert!(
            again.is_empty(),
            "recorded done before kill {i}, sent again after it: {again:?}"
        );
    }

    // Every op applied; the extra sends are the requests in flight at the kills.
    let resends = sb.requests_total() - OPS as u64;
    let in_flight_total: u64 = in_flight.iter().sum();
    eprintln!(
        "re-sends: {resends}; in flight at the {KILLS} kills: {in_flight:?} (concurrency {CONCURRENCY})"
    );
    assert_eq!(resends, in_flight_total);
    assert!(resends <= 2 * CONCURRENCY * KILLS as u64);
    let sends = sent_after(&sb, 0);
    assert_eq!(sends.len(), OPS, "requests to keys outside the job");
    for op in &ops {
        let key = key_of(op);
        let n = sends.get(&key).copied().unwrap_or(0);
        // Answered once when it was recorded done, and once more for each kill at which it
        // had been answered without being recorded; never otherwise.
        let uncommitted_at = kills
            .iter()
            .filter(|k| k.uncommitted.contains(&key))
            .count() as u64;
        assert_eq!(
            n,
            1 + uncommitted_at,
            "{key}: answered {n} times, answered-not-recorded at {uncommitted_at} kills"
        );
        // A PUT or a mute applies each time it is answered; an unmute or a ban only the
        // first time (sent again, a ban answers 409 USER_ALREADY_BLOCKED: done, unchanged).
        let applied = sb.applied_op(op);
        match op.action {
            Action::Unmute | Action::Ban => assert_eq!(applied, 1, "{key}"),
            _ => assert_eq!(applied, n, "{key}"),
        }
    }

    // The final state of every target.
    for op in &ops {
        let (room, client) = (&*op.room, op.client.as_deref());
        match op.action {
            Action::Freeze => assert_eq!(sb.room_status(room), Some(0), "{room}"),
            Action::Update => {
                let want = format!("Renamed {}", &room[2..]);
                assert_eq!(sb.room(room).unwrap()["name"], want.as_str());
            }
            Action::Mute => {
                assert_eq!(
                    sb.muted_rooms(client.unwrap()).unwrap(),
                    vec![room.to_string()]
                )
            }
            Action::Unmute => assert!(sb.muted_rooms(client.unwrap()).unwrap().is_empty()),
            Action::Ban => assert_eq!(sb.banned(room), Some(vec![client.unwrap().to_string()])),
            Action::Unfreeze | Action::Unban => unreachable!(),
        }
    }
    let j = Journal::open_read_only(&journal).unwrap();
    let c = j.counts().unwrap();
    assert_eq!((c.done, c.pending, c.failed), (OPS as u64, 0, 0));
    drop(j);

    // A last run sends nothing and exits with the recorded outcome.
    let before = sb.requests_total();
    let again = exec(run());
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stderr.contains("nothing to send"), "{}", again.stderr);
    assert_eq!(sb.requests_total(), before);
}

/// A maintenance freeze with --snapshot killed mid-run twice, then finished: the snapshots
/// taken before each change survive the kills, so the revert is exact (rooms frozen before
/// the job stay frozen) even for rooms whose freeze was in flight at a kill.
#[test]
fn revert_after_kills_with_snapshot_is_exact() {
    const ROOMS: usize = 400;
    let dir = tempfile::tempdir().unwrap();
    let (manifest, mut config) = freeze_job(dir.path(), "maintenance.csv", ROOMS);
    let frozen_before: HashSet<usize> = (0..ROOMS).filter(|i| i % 7 == 3).collect();
    for i in &frozen_before {
        config.rooms.get_mut(&format!("r-{i}")).unwrap().status = 0;
    }
    config.latency = Duration::from_millis(2);
    let sb = Sandbox::start(config);
    let journal = journal_of(&manifest);
    let run = || {
        run_cmd(
            &sb.url(),
            &manifest,
            &["--action", "freeze", "--snapshot", "--concurrency", "8"],
        )
    };
    let mut rng = StdRng::seed_from_u64(7);
    for k in 0..2 {
        let base = sb.requests_total();
        // Each room costs a read and a change.
        let wait_for = rng.random_range(60..300u64);
        let mut child = util::spawn(run());
        util::poll_until(Duration::from_secs(30), "requests before the kill", || {
            if let Ok(Some(st)) = child.try_wait() {
                panic!("run {k} ended ({st}) before its kill");
            }
            sb.requests_total() >= base + wait_for
        });
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let r = exec(run());
    assert_eq!(r.code, 0, "{r:?}");
    assert!((0..ROOMS).all(|i| sb.room_status(&format!("r-{i}")) == Some(0)));
    // No room was read after the job had changed it (a read then would record the job's
    // own freeze as the prior state): at most one read per room completed, before its first
    // change, except reads whose snapshot the kill cut off before the change went out.
    let mut changed: HashSet<String> = HashSet::new();
    for e in sb.log(usize::MAX) {
        let room = e.request.rsplit('/').next().unwrap().to_string();
        if e.request.starts_with("PUT ") && e.applied {
            changed.insert(room);
        } else if e.request.starts_with("GET ") {
            assert!(!changed.contains(&room), "{room} read after it was changed");
        }
    }

    let undo = dir.path().join("undo.csv");
    let (text, stderr) = revert_to(&journal, &undo);
    let m = load(&undo, &LoadOptions::default()).unwrap();
    let want: Vec<Op> = (0..ROOMS)
        .filter(|i| !frozen_before.contains(i))
        .map(|i| Op::unfreeze(format!("r-{i}")))
        .collect();
    assert_eq!(
        m.ops.into_iter().map(|p| p.op).collect::<Vec<_>>(),
        want,
        "{stderr}\n{text}"
    );
    assert!(!stderr.contains("listed apart"), "{stderr}");
    let r = exec(run_cmd(&sb.url(), &undo, &[]));
    assert_eq!(r.code, 0, "{r:?}");
    for i in 0..ROOMS {
        let want = if frozen_before.contains(&i) { 0 } else { 1 };
        assert_eq!(sb.room_status(&format!("r-{i}")), Some(want), "r-{i}");
    }
}

/// Killed while importing the plan (the first thing a new job does, before any request):
/// the next `run` keeps the torn file aside and starts the job, it does not refuse it.
#[test]
fn a_run_killed_during_its_plan_import_starts_over_on_the_next_run() {
    const ROWS: usize = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::with_capacity(ROWS * 12);
    csv.push_str("room\n");
    for i in 0..ROWS {
        writeln!(csv, "room-{i:06}").unwrap();
    }
    let manifest = write(dir.path(), "night.csv", &csv);
    let journal = journal_of(&manifest);
    let mut rollback = journal.as_os_str().to_owned();
    rollback.push("-journal");
    let rollback = std::path::PathBuf::from(rollback);
    let sb = Sandbox::start(util::sandbox_config());
    let mut child = util::spawn(run_cmd(&sb.url(), &manifest, &["--action", "freeze"]));
    util::poll_until(Duration::from_secs(60), "the plan import to start", || {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("the run ended ({st}) before its kill");
        }
        rollback.exists()
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        rollback.exists(),
        "the kill did not land mid-import: {:?}",
        files_in(dir.path())
    );
    let torn = bytes(&journal);
    let hot = bytes(&rollback);

    // The next run starts the job (a deadline already passed stops it before any request).
    let r = exec(run_cmd(
        &sb.url(),
        &manifest,
        &["--action", "freeze", "--max-duration", "1ms"],
    ));
    assert_eq!(r.code, 4, "{r:?}");
    assert!(r.stderr.contains("was never completed"), "{}", r.stderr);
    assert_eq!(sb.requests_total(), 0);
    let j = Journal::open_read_only(&journal).unwrap();
    assert_eq!(j.counts().unwrap().pending, ROWS as u64);
    drop(j);
    // The torn file and its rollback journal are kept, renamed, byte for byte.
    let files = files_in(dir.path());
    let kept: Vec<&String> = files
        .iter()
        .filter(|f| f.starts_with("night.csv.journal.") && !f.ends_with(".lock"))
        .filter(|f| !f.ends_with("-wal") && !f.ends_with("-shm"))
        .collect();
    assert_eq!(kept.len(), 2, "{files:?}");
    for f in kept {
        let want = if f.ends_with("-journal") { &hot } else { &torn };
        assert_eq!(&bytes(&dir.path().join(f)), want, "{f}");
    }
}

/// The same with a flaky network (5xx, connections dropped before and after the change):
/// retries and kills together never re-send an op the journal recorded done, and the job
/// ends with every op applied.
#[test]
fn kill_9_on_a_flaky_network_never_resends_a_done_op() {
    if sandbox_side_connections(0).is_none() {
        eprintln!("skipped: {NO_PROC_NET_TCP}");
        return;
    }
    const OPS: usize = 600;
    let dir = tempfile::tempdir().unwrap();
    let (manifest, mut config, ops) = mixed_job(dir.path(), OPS);
    config.latency = Duration::from_millis(2);
    config.fault_seed = 42;
    config.faults.server_error = 0.05;
    config.faults.drop_before = 0.02;
    config.faults.drop_after = 0.03;
    let sb = Sandbox::start(config);
    let journal = journal_of(&manifest);
    let run = || run_cmd(&sb.url(), &manifest, &["--concurrency", "8"]);
    let mut rng = StdRng::seed_from_u64(99);
    let mut kills: Vec<(HashSet<String>, u64)> = Vec::new();
    for k in 0..3 {
        let base = sb.requests_total();
        let wait_for = rng.random_range(40..150u64);
        let mut child = util::spawn(run());
        util::poll_until(Duration::from_secs(30), "requests before the kill", || {
            if let Ok(Some(st)) = child.try_wait() {
                panic!("run {k} ended ({st}) before its kill");
            }
            sb.requests_total() >= base + wait_for
        });
        child.kill().unwrap();
        child.wait().unwrap();
        wait_until_the_sandbox_closed_every_connection(&sb);
        kills.push((keys_in(&journal, OpState::Done), sb.last_seq()));
    }
    let fin = exec(run());
    assert_eq!(fin.code, 0, "{fin:?}");
    assert!(sb.faults_total() > 0);
    for (i, (done_then, seq_then)) in kills.iter().enumerate() {
        let again: Vec<_> = sent_after(&sb, *seq_then)
            .into_keys()
            .filter(|key| done_then.contains(key))
            .collect();
        assert!(
            again.is_empty(),
            "recorded done before kill {i}, sent again after it: {again:?}"
        );
    }
    for op in &ops {
        let (room, client) = (&*op.room, op.client.as_deref());
        match op.action {
            Action::Freeze => assert_eq!(sb.room_status(room), Some(0), "{room}"),
            Action::Update => {
                let want = format!("Renamed {}", &room[2..]);
                assert_eq!(sb.room(room).unwrap()["name"], want.as_str());
            }
            Action::Mute => {
                assert_eq!(
                    sb.muted_rooms(client.unwrap()).unwrap(),
                    vec![room.to_string()]
                )
            }
            Action::Unmute => assert!(sb.muted_rooms(client.unwrap()).unwrap().is_empty()),
            Action::Ban => assert_eq!(sb.banned(room), Some(vec![client.unwrap().to_string()])),
            Action::Unfreeze | Action::Unban => unreachable!(),
        }
        assert!(sb.applied_op(op) >= 1, "{op} never applied");
    }
    let st = exec(util::imkit(&[
        "status",
        journal.to_str().unwrap(),
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(v["counts"]["done"], OPS);
    assert!(v["retries"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["runs"].as_array().unwrap().len(), 4);
    let before = sb.requests_total();
    let again = exec(run());
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(sb.requests_total(), before);
}

/// `--fresh` after a kill: the old journal is renamed with its WAL (the outcomes committed
/// since the last checkpoint live there), so the kept copy still holds every done op.
#[test]
fn fresh_after_a_kill_keeps_the_old_journal_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, mut config) = freeze_job(dir.path(), "freeze.csv", 600);
    config.latency = Duration::from_millis(2);
    let sb = Sandbox::start(config);
    let journal = journal_of(&manifest);
    let mut child = util::spawn(run_cmd(
        &sb.url(),
        &manifest,
        &["--action", "freeze", "--concurrency", "4"],
    ));
    util::poll_until(Duration::from_secs(30), "requests before the kill", || {
        sb.requests_total() >= 150
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let mut wal = journal.as_os_str().to_owned();
    wal.push("-wal");
    assert!(
        std::fs::metadata(&wal).unwrap().len() > 0,
        "no WAL after the kill"
    );
    let done = keys_in(&journal, OpState::Done);
    assert!(!done.is_empty() && done.len() < 600);

    let r = exec(run_cmd(
        &sb.url(),
        &manifest,
        &["--action", "freeze", "--fresh"],
    ));
    assert_eq!(r.code, 0, "{r:?}");
    let files = files_in(dir.path());
    let kept: Vec<&String> = files
        .iter()
        .filter(|f| f.starts_with("freeze.csv.journal.") && !f.ends_with(".lock"))
        .filter(|f| !f.ends_with("-wal") && !f.ends_with("-shm"))
        .collect();
    assert_eq!(kept.len(), 1, "{files:?}");
    // The WAL was folded into the kept file before the rename: nothing beside it.
    assert!(
        !files
            .iter()
            .any(|f| f.starts_with(kept[0].as_str()) && f != kept[0]),
        "{files:?}"
    );
    assert_eq!(keys_in(&dir.path().join(kept[0]), OpState::Done), done);
    let j = Journal::open_read_only(&journal).unwrap();
    assert_eq!(j.counts().unwrap().done, 600);
}

/// No credential reaches the journal (docs/behaviour.md §5, §6): after runs against a flaky
/// sandbox (error answers, dropped connections, 429s, snapshots, mutes), one killed so the WAL
/// holds uncheckpointed pages, the bytes of the journal, its `-wal` and `-shm` hold none of
/// the three secrets nor any part of them; nor do `status`, `report` and `revert`.
#[test]
fn no_credential_is_ever_written_to_the_journal_or_its_wal() {
    const OPS: usize = 500;
    let dir = tempfile::tempdir().unwrap();
    let (manifest, mut config, _) = mixed_job(dir.path(), OPS);
    config.latency = Duration::from_millis(2);
    config.fault_seed = 7;
    config.faults.server_error = 0.05;
    // Each 429 pauses the credential for its 1 s hint: a few are enough.
    config.faults.too_many_requests = 0.004;
    config.faults.drop_after = 0.02;
    let sb = Sandbox::start(config);
    let journal = journal_of(&manifest);
    let run = || {
        run_cmd(
            &sb.url(),
            &manifest,
            &["--concurrency", "8", "--snapshot", "--max-attempts", "2"],
        )
    };
    // What would give a secret away: each whole, and the part all three share.
    let secrets = [util::CLIENT_KEY, util::TOKEN, util::API_KEY, "5ecret"];
    let companions = |suffix: &str| {
        let mut p = journal.as_os_str().to_owned();
        p.push(suffix);
        std::path::PathBuf::from(p)
    };
    let holds = |data: &[u8], s: &str| data.windows(s.len()).any(|w| w == s.as_bytes());
    let scan = |what: &str, data: &[u8]| {
        for s in secrets {
            assert!(!holds(data, s), "{what} holds {s:?}");
        }
    };
    // The scan finds a secret where there is one.
    assert!(holds(format!("a{}b", util::TOKEN).as_bytes(), util::TOKEN));
    let scan_files = || -> u64 {
        let mut wal_len = 0;
        for suffix in ["", "-wal", "-shm"] {
            let p = companions(suffix);
            if let Ok(data) = std::fs::read(&p) {
                if suffix == "-wal" {
                    wal_len = data.len() as u64;
                }
                scan(&p.display().to_string(), &data);
            }
        }
        wal_len
    };
    let mut child = util::spawn(run());
    util::poll_until(Duration::from_secs(30), "requests before the kill", || {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("the run ended ({st}) before its kill");
        }
        sb.requests_total() >= 300
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let wal_len = scan_files();
    assert!(wal_len > 0, "the kill left no WAL to scan");
    // The job run to its end (some ops fail for good after their 2 attempts).
    let fin = exec(run());
    assert!(fin.code == 0 || fin.code == 1, "{fin:?}");
    assert!(sb.faults_total() > 0);
    scan_files();
    scan(
        "the run's output",
        format!("{}{}", fin.stdout, fin.stderr).as_bytes(),
    );
    let j = Journal::open_read_only(&journal).unwrap();
    assert!(j.counts().unwrap().done > 0);
    assert!(!j.snapshots().unwrap().is_empty());
    drop(j);
    let p = journal.to_str().unwrap();
    for args in [
        vec!["status", p, "--json"],
        vec!["report", p, "--format", "json"],
        vec!["report", p],
        vec!["report", p, "--failed"],
        vec!["revert", p],
    ] {
        let r = exec(util::imkit(&args));
        assert_eq!(r.code, 0, "{args:?}: {r:?}");
        scan(
            &format!("{args:?}"),
            format!("{}{}", r.stdout, r.stderr).as_bytes(),
        );
    }
}
