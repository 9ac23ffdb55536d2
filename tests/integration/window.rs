//! Scheduled jobs through the binary against a sandbox: windows (before, inside, past,
//! crossing the end, crossing midnight in a time zone), `--no-wait`, the cannot-finish
//! warning, the undo phase (`undo_at_end`, `--undo-at`) with its resumption after `kill -9`
//! and after a signal, and the `{date}` journal of a daily window.
//!
//! Windows are computed from the real time (a few seconds long), or placed with the test
//! hook `IMKIT_BATCH_NOW`, which starts the binary's scheduling clock at a given instant
//! (it then runs at the real pace): that is how a test crosses midnight in Taipei, or sees
//! two nights, without waiting for them.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use imkit_batch::journal::{Journal, OpState};
use imkit_batch::sandbox::SandboxConfig;
use jiff::{SignedDuration, Timestamp};

use crate::util::{
    Sandbox, exec, files_in, imkit, journal_rows, poll_until, run_cmd, sandbox_config, write,
};

/// The test hook that starts the binary's scheduling clock at an instant.
const NOW: &str = "IMKIT_BATCH_NOW";

fn secs(n: i64) -> SignedDuration {
    SignedDuration::from_secs(n)
}

/// `t`, cut to the second (a window's times of day have no fractions).
fn whole(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap()
}

/// `t` as a UTC time of day, `HH:MM:SS`.
fn hms(t: Timestamp) -> String {
    t.strftime("%H:%M:%S").to_string()
}

/// A YAML manifest `name` in `dir` with this `window` block (indented lines) and `ops`.
fn manifest(dir: &Path, name: &str, window: &str, ops: &str) -> PathBuf {
    write(
        dir,
        name,
        &format!("version: 1\nname: {name}\nwindow:\n{window}ops:\n{ops}"),
    )
}

/// A sandbox with active rooms `active` and frozen rooms `frozen`, and clients `clients`.
fn sandbox(active: &[&str], frozen: &[&str], clients: &[&str]) -> Sandbox {
    let mut c: SandboxConfig = sandbox_config();
    for r in active.iter().chain(frozen) {
        c.add_room(*r, "owner-1", &[]);
    }
    for r in frozen {
        c.rooms.get_mut(r).unwrap().status = 0;
    }
    for u in clients {
        c.add_client(*u);
    }
    Sandbox::start(c)
}

/// A running binary whose stderr is collected line by line, so a test can wait for a
/// message before acting on the process.
struct Watched {
    child: Child,
    err: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl Watched {
    fn start(mut cmd: Command) -> Watched {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let sink = Arc::clone(&err);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Watched {
            child,
            err,
            reader: Some(reader),
        }
    }

    fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    /// Waits until stderr holds `what`.
    fn wait_for(&self, what: &str, limit: Duration) {
        poll_until(limit, what, || self.err.lock().unwrap().contains(what));
    }

    /// Waits for the process to end (within `limit`): its exit code and whole stderr.
    fn finish(mut self, limit: Duration) -> (Option<i32>, String) {
        let mut status = None;
        poll_until(limit, "the run to end", || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        (status.and_then(|s| s.code()), self.stderr())
    }
}

/// `run MANIFEST --base-url URL --progress never --rate RATE` (`run_cmd` sets a fast rate).
fn run_at_rate(url: &str, manifest: &Path, rate: &str) -> Command {
    let m = manifest.to_str().unwrap();
    imkit(&[
        "run",
        m,
        "--base-url",
        url,
        "--progress",
        "never",
        "--rate",
        rate,
    ])
}

/// The journal's undo phase.
fn undo_of(journal: &Path) -> Option<imkit_batch::journal::UndoPhase> {
    Journal::open_read_only(journal)
        .unwrap()
        .undo_phase()
        .unwrap()
}

/// Before a daily window opens, `run --no-wait` exits 4 at once saying when it opens, and
/// writes nothing; `run` waits for it and sends nothing before. Inside a window, `run`
/// starts at once.
#[test]
fn before_the_window_run_waits_or_no_wait_exits_4() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(&["a", "b", "c"], &[], &[]);
    let start = whole(Timestamp::now() + secs(3));
    let end = start + secs(120);
    let m = manifest(
        dir.path(),
        "later.yaml",
        &format!(
            "  start: \"{}\"\n  end: \"{}\"\n  timezone: UTC\n",
            hms(start),
            hms(end)
        ),
        "  - action: freeze\n    rooms: [a, b, c]\n",
    );
    let r = exec(run_cmd(&sb.url(), &m, &["--no-wait"]));
    assert_eq!(r.code, 4, "{r:?}");
    assert!(
        r.stderr.contains(&format!("opens at {start}")) && r.stderr.contains("--no-wait"),
        "{}",
        r.stderr
    );
    assert_eq!(sb.requests_total(), 0);
    assert_eq!(files_in(dir.path()), vec!["later.yaml"], "nothing written");

    let r = exec(run_cmd(&sb.url(), &m, &[]));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("waiting until the window's start"),
        "{}",
        r.stderr
    );
    let date = start.to_zoned(jiff::tz::TimeZone::UTC).date();
    let journal = dir.path().join(format!("later.yaml.{date}.journal"));
    let rows = journal_rows(&journal);
    assert_eq!(rows.len(), 3);
    for row in &rows {
        assert_eq!(row.state, OpState::Done);
        assert!(
            row.first_attempt_at.unwrap() >= start.as_millisecond(),
            "{row:?}"
        );
        assert_eq!(sb.room_status(&row.op.room), Some(0));
    }

    // Inside a window: no wait.
    let now = Timestamp::now();
    let open = manifest(
        dir.path(),
        "open.yaml",
        &format!(
            "  start: \"{}\"\n  end: \"{}\"\n  timezone: UTC\n",
            hms(now - secs(60)),
            hms(now + secs(3600))
        ),
        "  - action: unfreeze\n    rooms: [a]\n",
    );
    let r = exec(run_cmd(&sb.url(), &open, &["--no-wait"]));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!r.stderr.contains("waiting"), "{}", r.stderr);
    assert_eq!(sb.room_status("a"), Some(1));
}

/// A run still going at the window's end stops dispatching there (exit 4, the rest
/// pending); it warns at the start that `--rate` cannot fit the ops in the window, with how
/// many will be left.
#[test]
fn crossing_the_end_stops_dispatching_and_warns_from_the_rate() {
    let dir = tempfile::tempdir().unwrap();
    let rooms: Vec<String> = (0..40).map(|i| format!("r-{i}")).collect();
    let refs: Vec<&str> = rooms.iter().map(String::as_str).collect();
    let sb = sandbox(&refs, &[], &[]);
    let now = Timestamp::now();
    let end = now + secs(2);
    let m = manifest(
        dir.path(),
        "short.yaml",
        &format!("  start: {}\n  end: {end}\n", now - secs(1)),
        &format!("  - action: freeze\n    rooms: [{}]\n", refs.join(", ")),
    );
    let r = exec(run_at_rate(&sb.url(), &m, "10/s"));
    assert_eq!(r.code, 4, "{r:?}");
    assert!(
        r.stderr
            .contains("the job cannot finish before the window's end")
            && r.stderr.contains("at --rate 10/s the 40 ops need about 4s")
            && r.stderr.contains("ops will be left pending then"),
        "{}",
        r.stderr
    );
    let rows = journal_rows(&dir.path().join("short.yaml.journal"));
    let done = rows.iter().filter(|r| r.state == OpState::Done).count();
    assert!((5..40).contains(&done), "{done} done");
    for row in &rows {
        match row.state {
            OpState::Done => {
                assert_eq!(sb.room_status(&row.op.room), Some(0));
                // Sent before the end; only an answer in flight may come after it.
                assert!(row.last_attempt_at.unwrap() <= end.as_millisecond() + 1000);
            }
            OpState::Pending => {
                assert_eq!(row.attempts, 0, "{row:?}");
                assert_eq!(sb.room_status(&row.op.room), Some(1), "not sent");
            }
            s => panic!("{s:?}"),
        }
    }
}

/// The measured pace can show what `--rate` did not: slow answers (one at a time) leave ops
/// for after the end; the run warns once, as soon as the pace shows it.
#[test]
fn the_measured_pace_warns_once_that_ops_will_be_left() {
    let dir = tempfile::tempdir().unwrap();
    let rooms: Vec<String> = (0..40).map(|i| format!("r-{i}")).collect();
    let refs: Vec<&str> = rooms.iter().map(String::as_str).collect();
    let mut c = sandbox_config();
    for r in &refs {
        c.add_room(*r, "owner-1", &[]);
    }
    c.latency = Duration::from_millis(150);
    let sb = Sandbox::start(c);
    let now = Timestamp::now();
    let m = manifest(
        dir.path(),
        "slow.yaml",
        &format!("  start: {}\n  end: {}\n", now - secs(1), now + secs(3)),
        &format!("  - action: freeze\n    rooms: [{}]\n", refs.join(", ")),
    );
    let r = exec(run_cmd(&sb.url(), &m, &["--concurrency", "1"]));
    assert_eq!(r.code, 4, "{r:?}");
    assert!(!r.stderr.contains("cannot finish before"), "{}", r.stderr);
    assert_eq!(
        r.stderr.matches("at the pace measured so far").count(),
        1,
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("ops will be left pending then"),
        "{}",
        r.stderr
    );
}

/// A window whose end cuts the main phase short, with `undo_at_end`: dispatching stops at
/// the end, the undo follows at once and unfreezes exactly the rooms the job froze (rooms
/// frozen before it stay frozen); exit 4, since some ops were never sent.
#[test]
fn crossing_the_end_with_undo_at_end_undoes_what_was_done() {
    let dir = tempfile::tempdir().unwrap();
    let active: Vec<String> = (0..30).map(|i| format!("r-{i}")).collect();
    let mut all: Vec<&str> = vec!["f-0", "f-1"];
    all.extend(active.iter().map(String::as_str));
    let refs: Vec<&str> = active.iter().map(String::as_str).collect();
    let sb = sandbox(&refs, &["f-0", "f-1"], &[]);
    let now = Timestamp::now();
    let m = manifest(
        dir.path(),
        "maint.yaml",
        &format!(
            "  start: {}\n  end: {}\n  undo_at_end: true\n",
            now - secs(1),
            now + secs(2)
        ),
        &format!("  - action: freeze\n    rooms: [{}]\n", all.join(", ")),
    );
    let r = exec(run_at_rate(&sb.url(), &m, "10/s"));
    assert_eq!(r.code, 4, "{r:?}");
    assert!(
        r.stderr.contains("main phase stopped at its end"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("undo complete;"), "{}", r.stderr);
    let journal = dir.path().join("maint.yaml.journal");
    let rows = journal_rows(&journal);
    let froze: Vec<&str> = rows
        .iter()
        .filter(|r| r.state == OpState::Done && r.op.room.starts_with("r-"))
        .map(|r| &*r.op.room)
        .collect();
    assert!(!froze.is_empty() && froze.len() < 30, "{}", froze.len());
    let undo = undo_of(&journal).expect("an undo phase");
    assert_eq!(undo.total as usize, froze.len());
    assert_eq!(undo.counts.done, undo.total);
    for r in &refs {
        assert_eq!(sb.room_status(r), Some(1), "{r} is active again");
    }
    for r in ["f-0", "f-1"] {
        assert_eq!(sb.room_status(r), Some(0), "{r} was frozen before the job");
    }
    // Run again: nothing more to send, the same outcome.
    let before = sb.requests_total();
    let r = exec(run_cmd(&sb.url(), &m, &[]));
    assert_eq!(r.code, 4, "{r:?}");
    assert!(r.stderr.contains("job already complete"), "{}", r.stderr);
    assert_eq!(sb.requests_total(), before);
}

/// A night window crossing midnight in Taipei (the clock hook starts the binary at 23:59:58
/// local): the mutes go out before midnight, the undo after it at the window's end, and the
/// journal is named by the evening the window opened.
#[test]
fn a_window_crossing_midnight_in_a_time_zone() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(&["lobby-1", "lobby-2"], &[], &["u-1", "u-2"]);
    let m = manifest(
        dir.path(),
        "night.yaml",
        "  start: \"23:59:59\"\n  end: \"00:00:02\"\n  timezone: Asia/Taipei\n  undo_at_end: true\n",
        "  - action: mute\n    clients: [u-1, u-2]\n    rooms: [lobby-1, lobby-2]\n",
    );
    let mut cmd = run_cmd(&sb.url(), &m, &[]);
    cmd.env(NOW, "2026-11-22T23:59:58+08:00");
    let r = exec(cmd);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("waiting until the window's start"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("waiting until the window's end (2026-11-22T16:00:02Z)"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("undo complete: both halves of the job are done")
    );
    assert_eq!(
        files_in(dir.path())
            .into_iter()
            .filter(|f| f.ends_with(".journal"))
            .collect::<Vec<_>>(),
        vec!["night.yaml.2026-11-22.journal"]
    );
    for u in ["u-1", "u-2"] {
        assert_eq!(sb.muted_rooms(u), Some(vec![]), "{u} unmuted at the end");
    }
    let log = sb.log(100);
    let at = |kind: &str| -> Vec<u64> {
        log.iter()
            .filter(|e| format!("{:?}", e.kind).eq_ignore_ascii_case(kind))
            .map(|e| e.at_ms)
            .collect()
    };
    let (mutes, unmutes) = (at("mute"), at("unmute"));
    assert_eq!((mutes.len(), unmutes.len()), (4, 4), "{log:?}");
    // The mutes went out at 23:59:59 local, the unmutes at 00:00:02: three seconds later.
    let gap = unmutes.iter().min().unwrap() - mutes.iter().max().unwrap();
    assert!(
        gap >= 2000,
        "{gap} ms between the last mute and the first unmute"
    );

    // After midnight, `plan` and `status --manifest` resolve to the evening it opened.
    let mut plan = imkit(&["plan", m.to_str().unwrap()]);
    plan.env(NOW, "2026-11-23T00:00:01+08:00");
    let p = exec(plan);
    assert_eq!(p.code, 0, "{p:?}");
    assert!(
        p.stdout.contains("night.yaml.2026-11-22.journal"),
        "{}",
        p.stdout
    );
    let mut status = imkit(&["status", "--manifest", m.to_str().unwrap()]);
    status.env(NOW, "2026-11-23T00:00:01+08:00");
    let s = exec(status);
    assert_eq!(s.code, 0, "{s:?}");
    assert!(s.stdout.contains("state      complete"), "{}", s.stdout);
    assert!(
        s.stdout
            .contains("progress   main phase 4 of 4 ops final (100.0%): 4 done"),
        "{}",
        s.stdout
    );
    assert!(
        s.stdout
            .contains("undo       4 of 4 ops final (100.0%): 4 done, 0 failed, 0 pending"),
        "{}",
        s.stdout
    );
}

/// One maintenance job killed (`kill -9`) while it waits for the undo, at two restarts:
/// started again before the end, it waits and undoes; started after the end, it undoes at
/// once. Either way exactly the rooms it froze are unfrozen, rooms frozen before the job stay
/// frozen, and a further run sends nothing.
#[test]
fn killed_while_waiting_for_the_undo_it_resumes() {
    for restart_after_end in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let sb = sandbox(&["r-0", "r-1", "r-2", "r-3"], &["f-0", "f-1"], &[]);
        let now = Timestamp::now();
        let end = whole(now + secs(600));
        let m = manifest(
            dir.path(),
            "maint.yaml",
            &format!(
                "  start: {}\n  end: {end}\n  undo_at_end: true\n",
                now - secs(5)
            ),
            "  - action: freeze\n    rooms: [r-0, f-0, r-1, r-2, f-1, r-3]\n",
        );
        let w = Watched::start(run_cmd(&sb.url(), &m, &[]));
        w.wait_for("waiting until the window's end", Duration::from_secs(30));
        let mut child = w.child;
        child.kill().unwrap();
        child.wait().unwrap();
        for r in ["r-0", "r-1", "r-2", "r-3", "f-0", "f-1"] {
            assert_eq!(sb.room_status(r), Some(0), "{r} frozen by the main phase");
        }
        let journal = dir.path().join("maint.yaml.journal");
        assert_eq!(undo_of(&journal), None, "killed before the undo");

        // Restart: 1 s before the end (it waits, then undoes), or an hour after it.
        let restart_at = if restart_after_end {
            end + secs(3600)
        } else {
            end - secs(1)
        };
        let mut cmd = run_cmd(&sb.url(), &m, &[]);
        cmd.env(NOW, restart_at.to_string());
        let r = exec(cmd);
        assert_eq!(r.code, 0, "{r:?}");
        assert_eq!(
            r.stderr.contains("waiting until the window's end"),
            !restart_after_end,
            "{}",
            r.stderr
        );
        assert!(
            r.stderr.contains("both halves of the job are done"),
            "{}",
            r.stderr
        );
        for r in ["r-0", "r-1", "r-2", "r-3"] {
            assert_eq!(
                sb.room_status(r),
                Some(1),
                "{r}: frozen by the job, unfrozen"
            );
        }
        for r in ["f-0", "f-1"] {
            assert_eq!(
                sb.room_status(r),
                Some(0),
                "{r}: frozen before the job, stays"
            );
        }
        let undo = undo_of(&journal).unwrap();
        assert_eq!((undo.total, undo.counts.done), (4, 4));
        let before = sb.requests_total();
        let mut again = run_cmd(&sb.url(), &m, &[]);
        again.env(NOW, (end + secs(7200)).to_string());
        let r = exec(again);
        assert_eq!(r.code, 0, "{r:?}");
        assert!(r.stderr.contains("job already complete"), "{}", r.stderr);
        assert_eq!(sb.requests_total(), before);
    }
}

/// `--undo-at` for a job without a window: `--no-wait` exits 4 once the main phase is done
/// (and again at once, recording no run), a SIGTERM while waiting exits 4, and a run after
/// the undo time undoes at once. `status` shows both halves; `report` lists the undo ops
/// after the main ones, with a `phase` column.
#[test]
fn undo_at_with_no_wait_a_signal_status_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(&["lobby-1"], &[], &["u-1", "u-2"]);
    let m = write(
        dir.path(),
        "mute.csv",
        "action,room,client\nmute,lobby-1,u-1\nmute,lobby-1,u-2\n",
    );
    let undo_at = whole(Timestamp::now() + secs(600)).to_string();
    let flags = ["--undo-at", undo_at.as_str()];
    let no_wait = [flags[0], flags[1], "--no-wait"];
    let r = exec(run_cmd(&sb.url(), &m, &no_wait));
    assert_eq!(r.code, 4, "{r:?}");
    assert!(
        r.stderr.contains(&format!(
            "--no-wait: the undo is due at --undo-at {undo_at}"
        )),
        "{}",
        r.stderr
    );
    assert_eq!(sb.muted_rooms("u-1"), Some(vec!["lobby-1".to_string()]));
    let journal = dir.path().join("mute.csv.journal");
    let runs = || {
        Journal::open_read_only(&journal)
            .unwrap()
            .runs()
            .unwrap()
            .len()
    };
    assert_eq!(runs(), 1);
    let r = exec(run_cmd(&sb.url(), &m, &no_wait));
    assert_eq!(r.code, 4, "{r:?}");
    assert!(
        r.stderr.contains("main phase is over and its undo is due"),
        "{}",
        r.stderr
    );
    assert_eq!(
        runs(),
        1,
        "a --no-wait run that can do nothing records nothing"
    );

    let w = Watched::start(run_cmd(&sb.url(), &m, &flags));
    w.wait_for("waiting until --undo-at", Duration::from_secs(30));
    let killed = Command::new("kill")
        .args(["-TERM", &w.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let (code, err) = w.finish(Duration::from_secs(20));
    assert_eq!(code, Some(4), "{err}");
    assert!(
        err.contains("signal received while waiting for the undo"),
        "{err}"
    );
    assert_eq!(undo_of(&journal), None);

    let mut cmd = run_cmd(&sb.url(), &m, &flags);
    let after: Timestamp = undo_at.parse().unwrap();
    cmd.env(NOW, (after + secs(1)).to_string());
    let r = exec(cmd);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(sb.muted_rooms("u-1"), Some(vec![]));
    assert_eq!(sb.muted_rooms("u-2"), Some(vec![]));

    let s = exec(imkit(&["status", journal.to_str().unwrap()]));
    assert!(
        s.stdout
            .contains("progress   main phase 2 of 2 ops final (100.0%): 2 done")
            && s.stdout
                .contains("undo       2 of 2 ops final (100.0%): 2 done")
            && s.stdout.contains("state      complete"),
        "{}",
        s.stdout
    );
    let j = exec(imkit(&["status", "--json", journal.to_str().unwrap()]));
    let v: serde_json::Value = serde_json::from_str(&j.stdout).unwrap();
    assert_eq!(v["undo"]["state"], "complete");
    assert_eq!(v["undo"]["counts"]["done"], 2);
    assert_eq!(v["undo"]["unmutes_assumed"], 2);
    assert_eq!(
        v["counts"]["done"], 2,
        "the main phase's counts are as before"
    );

    let csv = exec(imkit(&["report", journal.to_str().unwrap()]));
    let lines: Vec<&str> = csv.stdout.lines().collect();
    assert!(lines[0].ends_with(",prior,phase"), "{}", lines[0]);
    assert_eq!(lines.len(), 5, "{}", csv.stdout);
    assert!(
        lines[1].starts_with("0,") && lines[1].ends_with(",main"),
        "{}",
        lines[1]
    );
    assert!(lines[3].contains(",unmute,lobby-1,u-1,") && lines[3].ends_with(",undo"));
    let json = exec(imkit(&[
        "report",
        "--format",
        "json",
        journal.to_str().unwrap(),
    ]));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json.stdout).unwrap();
    let phases: Vec<&str> = rows.iter().map(|r| r["phase"].as_str().unwrap()).collect();
    assert_eq!(phases, vec!["main", "main", "undo", "undo"]);
}

/// A daily window with its default `{date}` journal, run as cron would at several times of
/// two nights (the clock hook): one night gives one journal (its morning end resolves to the
/// evening it began, and a finished journal sends nothing), the next night a new journal;
/// between nights `--no-wait` exits 4 and writes nothing.
#[test]
fn a_dated_journal_per_night() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(&["a", "b"], &[], &[]);
    let m = manifest(
        dir.path(),
        "night.yaml",
        "  start: \"22:00\"\n  end: \"07:00\"\n  timezone: Asia/Taipei\n",
        "  - action: freeze\n    rooms: [a, b]\n",
    );
    let run_at = |now: &str, extra: &[&str]| {
        let mut c = run_cmd(&sb.url(), &m, extra);
        c.env(NOW, now);
        exec(c)
    };
    let journals = || -> Vec<String> {
        files_in(dir.path())
            .into_iter()
            .filter(|f| f.ends_with(".journal"))
            .collect()
    };
    let r = run_at("2026-11-22T22:30:00+08:00", &["--no-wait"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(journals(), vec!["night.yaml.2026-11-22.journal"]);
    let sent = sb.requests_total();
    assert_eq!(sent, 2);

    let r = run_at("2026-11-23T06:59:00+08:00", &["--no-wait"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("job already complete"), "{}", r.stderr);
    assert_eq!(sb.requests_total(), sent, "one night, one job");

    let r = run_at("2026-11-23T12:00:00+08:00", &["--no-wait"]);
    assert_eq!(r.code, 4, "{r:?}");
    assert!(
        r.stderr.contains("opens at 2026-11-23T14:00:00Z"),
        "{}",
        r.stderr
    );
    assert_eq!(journals().len(), 1, "nothing written between nights");

    let r = run_at("2026-11-23T22:01:00+08:00", &["--no-wait"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        journals(),
        vec![
            "night.yaml.2026-11-22.journal",
            "night.yaml.2026-11-23.journal"
        ]
    );
    assert_eq!(sb.requests_total(), sent + 2, "the next night, a new job");

    // `plan` names the journal it would use; an explicit `{date}` path resolves the same.
    let mut plan = imkit(&["plan", m.to_str().unwrap()]);
    plan.env(NOW, "2026-11-24T03:00:00+08:00");
    let p = exec(plan);
    assert!(
        p.stdout
            .contains("night.yaml.2026-11-23.journal: the job is complete")
            && p.stdout
                .contains("({date} is 2026-11-23: the date this window opens, in Asia/Taipei)"),
        "{}",
        p.stdout
    );
    let custom = dir.path().join("n-{date}.journal");
    let r = run_at(
        "2026-11-24T23:00:00+08:00",
        &["--journal", custom.to_str().unwrap()],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(dir.path().join("n-2026-11-24.journal").exists());
}
