//! The journal and its commands: plan import, group-committed outcomes, resume, refusals
//! that send nothing (a changed manifest, a journal locked by a running job, damaged or
//! foreign files), `--fresh`, `--retry-failed`, and `status`, `report` and `revert` checked
//! field by field through the real binary, on journals written in process and after real
//! runs against the in-process sandbox.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use imkit_batch::Exit;
use imkit_batch::journal::{
    Counts, JobMeta, Journal, JournalError, OpRecord, OpState, OpenOptions, lock_path,
};
use imkit_batch::manifest::{Format, LoadOptions, Location, Manifest, PlannedOp, Settings, load};
use imkit_batch::op::{Action, Op, RoomFields};
use serde_json::json;

use crate::util::{
    self, Sandbox, bytes, exec, files_in, freeze_job, journal_of, revert_to, run_cmd,
};

const SUM_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const SUM_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn manifest(dir: &Path, checksum: &str, ops: Vec<Op>) -> Manifest {
    let path = dir.join("job.csv");
    Manifest {
        path: path.clone(),
        format: Format::Csv,
        name: Some("test-job".into()),
        checksum: checksum.into(),
        window: None,
        settings: Settings::default(),
        ops: ops
            .into_iter()
            .enumerate()
            .map(|(i, op)| PlannedOp {
                op,
                source: Location {
                    file: 0,
                    line: i as u32 + 2,
                },
            })
            .collect(),
        sources: vec![path],
        warnings: vec![],
    }
}

fn meta(m: &Manifest) -> JobMeta {
    JobMeta {
        manifest_path: m.path.clone(),
        checksum: m.checksum.clone(),
        name: m.name.clone(),
        settings: json!({"concurrency": 8, "rate": "800/min"}),
        target: None,
    }
}

fn freezes(n: usize) -> Vec<Op> {
    (0..n).map(|i| Op::freeze(format!("room-{i}"))).collect()
}

fn open(path: &Path, m: &Manifest, opts: OpenOptions) -> Result<Journal, JournalError> {
    Journal::open_for_run(path, m, &meta(m), opts)
}

fn done(seq: u64) -> OpRecord {
    OpRecord {
        seq,
        state: Some(OpState::Done),
        attempts: 1,
        http_status: Some(200),
        rc: Some(0),
        latency_ms: Some(12),
        ..Default::default()
    }
}

fn failed(seq: u64, status: u16, code: &str) -> OpRecord {
    OpRecord {
        seq,
        state: Some(OpState::Failed),
        attempts: 1,
        http_status: Some(status),
        rc: Some(i64::from(status)),
        error_code: Some(code.into()),
        message: Some(format!("{code} happened")),
        latency_ms: Some(30),
    }
}

#[tokio::test]
async fn new_journal_imports_the_plan_in_order_with_mode_0600() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.journal");
    let mut ops = freezes(3);
    let fields = RoomFields {
        name: Some("Help Desk".into()),
        managers: Some(vec!["m1".into(), "m2".into()]),
        ..Default::default()
    };
    ops.push(Op::update("help", fields.clone()));
    ops.push(Op::mute("u1", "room-0"));
    let m = manifest(dir.path(), SUM_A, ops.clone());
    let j = open(&path, &m, OpenOptions::default()).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "journal mode {mode:o}");
    let lmode = std::fs::metadata(lock_path(&path))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(lmode, 0o600);
    let pending = j.pending().unwrap();
    assert_eq!(pending.len(), 5);
    for (i, p) in pending.iter().enumerate() {
        assert_eq!(p.seq, i as u64);
        assert_eq!(p.op, ops[i]);
        assert_eq!(p.attempts, 0);
    }
    assert_eq!(
        j.counts().unwrap(),
        Counts {
            pending: 5,
            ..Default::default()
        }
    );
    let meta_back = j.meta().unwrap();
    assert_eq!(meta_back.checksum, SUM_A);
    assert_eq!(meta_back.name.as_deref(), Some("test-job"));
    assert_eq!(meta_back.manifest_path, m.path);
    assert_eq!(
        meta_back.settings,
        json!({"concurrency": 8, "rate": "800/min"})
    );
    assert!(j.snapshotted_rooms().unwrap().is_empty());
    // Every SQLite file of the journal is owner-only too.
    let w = j.start_writer().unwrap();
    w.record(done(0)).unwrap();
    w.flush().await.unwrap();
    for suffix in ["-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let mode = std::fs::metadata(PathBuf::from(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{suffix} mode {mode:o}");
    }
    w.finish(Exit::Stopped).await.unwrap();
}

#[tokio::test]
async fn outcomes_are_recorded_and_a_resume_sends_only_what_is_not_final() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.journal");
    let m = manifest(dir.path(), SUM_A, freezes(6));
    let w = open(&path, &m, OpenOptions::default())
        .unwrap()
        .start_writer()
        .unwrap();
    w.record(done(0)).unwrap();
    // An attempt that will be retried: the op stays pending, its attempt fields are kept.
    w.record(OpRecord {
        seq: 1,
        state: None,
        attempts: 2,
        http_status: Some(503),
        error_code: Some("UNAVAILABLE".into()),
        message: Some("try later".into()),
        latency_ms: Some(40),
        ..Default::default()
    })
    .unwrap();
    w.record(failed(2, 404, "ROOM_NOT_FOUND")).unwrap();
    w.record(OpRecord {
        seq: 3,
        state: Some(OpState::Skipped),
        ..Default::default()
    })
    .unwrap();
    w.record(done(5)).unwrap();
    w.finish(Exit::Stopped).await.unwrap();
    // A record after finish is refused with a reason.
    let j = open(&path, &m, OpenOptions::default()).unwrap();
    assert_eq!(
        j.counts().unwrap(),
        Counts {
            pending: 2,
            done: 2,
            failed: 1,
            skipped: 1
        }
    );
    let pending = j.pending().unwrap();
    assert_eq!(
        pending.iter().map(|p| p.seq).collect::<Vec<_>>(),
        vec![1, 4]
    );
    assert_eq!(pending[0].attempts, 2);
    assert_eq!(pending[0].op, Op::freeze("room-1"));
    assert_eq!(pending[1].attempts, 0);
    let mut rows = Vec::new();
    j.for_each_op(None, |r| -> Result<(), JournalError> {
        rows.push(r);
        Ok(())
    })
    .unwrap();
    assert_eq!(rows[1].http_status, Some(503));
    assert_eq!(rows[1].error_code.as_deref(), Some("UNAVAILABLE"));
    assert_eq!(rows[1].state, OpState::Pending);
    assert!(rows[1].first_attempt_at.is_some());
    assert_eq!(rows[2].rc, Some(404));
    assert_eq!(rows[2].message.as_deref(), Some("ROOM_NOT_FOUND happened"));
    assert_eq!(rows[3].attempts, 0);
    assert_eq!(rows[3].first_attempt_at, None);
    assert_eq!(j.last_exit().unwrap(), Some(Exit::Stopped));
    assert_eq!(j.recorded_outcome().unwrap(), None);
    let runs = j.runs().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].exit_code, Some(4));
    assert_eq!(runs[0].ops_finalized, 4);
    assert_eq!(runs[0].pid, std::process::id());
    drop(j);
}

#[tokio::test]
async fn writer_after_finish_refuses_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.journal");
    let m = manifest(dir.path(), SUM_A, freezes(2));
    let w = open(&path, &m, OpenOptions::default())
        .unwrap()
        .start_writer()
        .unwrap();
    let w2 = w.clone();
    w.finish(Exit::Stopped).await.unwrap();
    let err = w2.record(done(0)).unwrap_err();
    assert!(matches!(err, JournalError::WriterStopped { .. }), "{err}");
    assert!(w2.flush().await.is_err());
    // The lock was released by finish: a new run may open the journal at once.
    open(&path, &m, OpenOptions::default()).unwrap();
}

#[tokio::test]
async fn group_commits_are_visible_to_a_reader_and_survive_a_crash_copy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.journal");
    let n = 5000;
    let m = manifest(dir.path(), SUM_A, freezes(n));
    let w = open(&path, &m, OpenOptions::default())
        .unwrap()
        .start_writer()
        .unwrap();
    // Many records from several tasks at once, as the runner sends them.
    let mut tasks = Vec::new();
    for t in 0..4u64 {
        let w = w.clone();
        tasks.push(tokio::spawn(async move {
            for seq in (t..n as u64).step_by(4) {
                w.record(done(seq)).unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    w.record_snapshot("room-0", Some(json!({"status": 1})))
        .await
        .unwrap();
    // A snapshot is durable once record_snapshot resolves, before any flush.
    let early = Journal::open_read_only(&path).unwrap();
    assert!(early.snapshotted_rooms().unwrap().contains("room-0"));
    assert_eq!(
        early.snapshots().unwrap()["room-0"].prior,
        Some(json!({"status": 1}))
    );
    drop(early);
    w.flush().await.unwrap();
    // A second, read-only connection sees every record while the writer still runs.
    let reader = Journal::open_read_only(&path).unwrap();
    assert_eq!(
        reader.counts().unwrap(),
        Counts {
            done: n as u64,
            ..Default::default()
        }
    );
    assert!(reader.snapshotted_rooms().unwrap().contains("room-0"));
    let runs = reader.runs().unwrap();
    assert_eq!(runs[0].ended_at, None, "the run is still going");
    drop(reader);
    // The files as a kill -9 would leave them right now: the main file and its WAL.
    let crash = tempfile::tempdir().unwrap();
    let copy = crash.path().join("job.journal");
    std::fs::copy(&path, &copy).unwrap();
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let mut wal_copy = copy.as_os_str().to_owned();
    wal_copy.push("-wal");
    std::fs::copy(PathBuf::from(wal), PathBuf::from(wal_copy)).unwrap();
    let j = open(&copy, &m, OpenOptions::default()).unwrap();
    assert_eq!(j.counts().unwrap().done, n as u64);
    assert!(j.pending().unwrap().is_empty());
    drop(j);
    w.finish(Exit::Success).await.unwrap();
}

#[tokio::test]
async fn a_changed_manifest_is_refused_with_the_way_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.journal");
    let m = manifest(dir.path(), SUM_A, freezes(3));
    let w = open(&path, &m, OpenOptions::default())
        .unwrap()
        .start_writer()
        .unwrap();
    w.record(done(0)).unwrap();
    w.finish(Exit::Stopped).await.unwrap();
    let before = bytes(&path);
    // Other ops (one more): refused, saying what changed.
    let changed = manifest(dir.path(), SUM_B, freezes(4));
    let err = open(&path, &changed, OpenOptions::default())
        .err()
        .expect("refused");
    match &err {
        JournalError::ManifestChanged {
            added,
            removed,
            changed,
            examples,
            ..
        } => {
            assert_eq!((*added, *removed, *changed), (1, 0, 0));
            assert!(examples[0].contains("room-3"), "{examples:?}");
        }
        other => panic!("wrong error: {other}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("manifest changed"), "{msg}");
    assert!(msg.contains("--fresh") && msg.contains("--replan"), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert_eq!(err.exit(), Exit::Invalid);
    let as_exit = imkit_batch::ExitError::from(err);
    assert_eq!(as_exit.exit.code(), 2);
    assert_eq!(bytes(&path), before, "the journal was not touched");
    // Nor the directory: the read-only look's `-wal` and `-shm` are gone again.
    assert_eq!(files_in(dir.path()), ["job.journal", "job.journal.lock"]);
    // Same checksum but a plan of another size is refused too.
    let other_plan = manifest(dir.path(), SUM_A, freezes(4));
    assert!(matches!(
        open(&path, &other_plan, OpenOptions::default()),
        Err(JournalError::ManifestChanged { added: 1, .. })
    ));
    assert_eq!(bytes(&path), before);
    assert_eq!(files_in(dir.path()), ["job.journal", "job.journal.lock"]);
    // Other bytes meaning the same ops: resumed, the new checksum recorded.
    let same_ops = manifest(dir.path(), SUM_B, freezes(3));
    let j = open(&path, &same_ops, OpenOptions::default()).unwrap();
    assert_eq!(j.meta().unwrap().checksum, SUM_B);
    assert_eq!(j.counts().unwrap().done, 1);
    assert_eq!(j.pending().unwrap().len(), 2);
}

#[test]
fn a_changed_manifest_is_refused_and_fresh_keeps_the_old_journal() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, config) = freeze_job(dir.path(), "freeze.csv", 20);
    let sb = Sandbox::start(config);
    let journal = journal_of(&manifest);
    let run = |extra: &[&str]| {
        exec(run_cmd(
            &sb.url(),
            &manifest,
            &[&["--action", "freeze"], extra].concat(),
        ))
    };
    let first = run(&[]);
    assert_eq!(first.code, 0, "{first:?}");
    assert_eq!(sb.requests_total(), 20);

    // One row less: the manifest's ops no longer match the journal's.
    let text = std::fs::read_to_string(&manifest).unwrap();
    let text = text.replace("r-19\n", "");
    std::fs::write(&manifest, &text).unwrap();
    let journal_bytes = bytes(&journal);
    let files_before = files_in(dir.path());
    let refused = run(&[]);
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(
        refused.stderr.contains("manifest changed") && refused.stderr.contains("--fresh"),
        "{}",
        refused.stderr
    );
    assert_eq!(sb.requests_total(), 20, "a refused run sent something");
    assert_eq!(bytes(&journal), journal_bytes, "the journal was written to");
    assert_eq!(
        files_in(dir.path()),
        files_before,
        "the refused run left files beside the journal"
    );

    // --fresh: the old journal is renamed (kept whole), a new job runs every op of the new
    // manifest.
    let before = files_in(dir.path());
    let fresh = run(&["--fresh"]);
    assert_eq!(fresh.code, 0, "{fresh:?}");
    assert_eq!(sb.requests_total(), 39);
    let after = files_in(dir.path());
    let kept: Vec<&String> = after
        .iter()
        .filter(|f| f.starts_with("freeze.csv.journal.") && !f.ends_with(".lock"))
        .filter(|f| !f.ends_with("-wal") && !f.ends_with("-shm"))
        .filter(|f| !before.contains(f))
        .collect();
    assert_eq!(kept.len(), 1, "{before:?} -> {after:?}");
    let old = dir.path().join(kept[0]);
    assert_eq!(
        bytes(&old),
        journal_bytes,
        "the old journal was not kept as it was"
    );
    let old = Journal::open_read_only(&old).unwrap();
    assert_eq!(old.counts().unwrap().done, 20);
    let new = Journal::open_read_only(&journal).unwrap();
    assert_eq!(new.counts().unwrap().done, 19);
    assert_eq!(new.runs().unwrap().len(), 1);
    assert_ne!(new.meta().unwrap().checksum, old.meta().unwrap().checksum);

    // The new job is complete: re-running it sends nothing.
    let again = run(&[]);
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(sb.requests_total(), 39);
}

/// The journal files as a kill -9 of the run would leave them now (main file and WAL),
/// copied into `dir`.
fn crash_copy(path: &Path, dir: &Path) -> PathBuf {
    let copy = dir.join("job.journal");
    std::fs::copy(path, &copy).unwrap();
    let suffixed = |p: &Path, s: &str| {
        let mut o = p.as_os_str().to_owned();
        o.push(s);
        PathBuf::from(o)
    };
    std::fs::copy(suffixed(path, "-wal"), suffixed(&copy, "-wal")).unwrap();
    copy
}

/// `--fresh` on the journal of a killed run: the outcomes since the last checkpoint live in
/// its WAL, and they are folded into the main file before it is renamed, so the kept copy
/// is whole on its own (nothing beside it to lose when it is moved again).
#[tokio::test]
async fn fresh_after_a_kill_folds_the_wal_into_the_kept_copy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.journal");
    let m = manifest(dir.path(), SUM_A, freezes(50));
    let w = open(&path, &m, OpenOptions::default())
        .unwrap()
        .start_writer()
        .unwrap();
    for seq in 0..30 {
        w.record(done(seq)).unwrap();
    }
    w.flush().await.unwrap();
    let crash = tempfile::tempdir().unwrap();
    let copy = crash_copy(&path, crash.path());
    w.finish(Exit::Stopped).await.unwrap();
    let mut wal = copy.as_os_str().to_owned();
    wal.push("-wal");
    assert!(std::fs::metadata(&wal).unwrap().len() > 0, "no WAL to fold");

    let fresh = OpenOptions {
        fresh: true,
        retry_failed: false,
        replan: false,
        retarget: false,
    };
    let j = open(&copy, &manifest(crash.path(), SUM_B, freezes(5)), fresh).unwrap();
    assert_eq!(j.counts().unwrap().pending, 5);
    drop(j);
    let names = files_in(crash.path());
    let kept: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with("job.journal.") && !n.ends_with(".lock"))
        .collect();
    assert_eq!(
        kept.len(),
        1,
        "the kept journal has no companion: {names:?}"
    );
    // The renamed main file alone, elsewhere, holds every committed outcome.
    let alone = tempfile::tempdir().unwrap();
    let moved = alone.path().join("kept.journal");
    std::fs::copy(crash.path().join(kept[0]), &moved).unwrap();
    let old = Journal::open_read_only(&moved).unwrap();
    assert_eq!(
        old.counts().unwrap(),
        Counts {
            done: 30,
            pending: 20,
            ..Default::default()
        }
    );
    assert_eq!(old.meta().unwrap().checksum, SUM_A);
}

/// Waits until the millisecond clock has moved past now (journal times are milliseconds).
fn next_ms() {
    let t0 = jiff::Timestamp::now().as_millisecond();
    while jiff::Timestamp::now().as_millisecond() <= t0 {
        std::thread::yield_now();
    }
}

/// Opens for a run, waiting out the lock of a writer that is still shutting down.
fn open_when_free(path: &Path, m: &Manifest, meta: &JobMeta) -> Journal {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Journal::open_for_run(path, m, meta, OpenOptions::default()) {
            Ok(j) => return j,
            Err(JournalError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::yield_now()
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// `--snapshot` added on resume after a kill: run 2 (without --snapshot) died with the
/// freeze of `x` in flight (applied by the server, never recorded); run 3 (with
/// --snapshot) then read `x` already frozen and recorded that as its prior state. The
/// journal's runs table shows run 2 was killed without snapshots, so `revert` does not
/// trust that snapshot and lists `x` apart; the room read by run 1, before run 2, is
/// restored.
#[tokio::test]
async fn a_snapshot_taken_after_a_killed_run_without_snapshot_is_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.journal");
    let m = manifest(
        dir.path(),
        SUM_A,
        vec![Op::freeze("w"), Op::freeze("y"), Op::freeze("x")],
    );
    let with = |snapshot: bool| JobMeta {
        settings: json!({"concurrency": 8, "snapshot": snapshot}),
        ..meta(&m)
    };
    // Run 1, --snapshot: w read (active), frozen; stopped at a deadline.
    let w1 = open_when_free(&path, &m, &with(true))
        .start_writer()
        .unwrap();
    w1.record_snapshot("w", Some(json!({"_id": "w", "status": 1})))
        .await
        .unwrap();
    w1.record(done(0)).unwrap();
    w1.finish(Exit::Stopped).await.unwrap();
    next_ms();
    // Run 2, no --snapshot: y frozen and recorded; x's freeze in flight when it is killed
    // (the writer handle dropped without `finish`: no end recorded).
    let w2 = open_when_free(&path, &m, &with(false))
        .start_writer()
        .unwrap();
    w2.record(done(1)).unwrap();
    w2.flush().await.unwrap();
    drop(w2);
    next_ms();
    // Run 3, --snapshot: x read (frozen, by run 2's lost freeze), frozen again.
    let w3 = open_when_free(&path, &m, &with(true))
        .start_writer()
        .unwrap();
    w3.record_snapshot("x", Some(json!({"_id": "x", "status": 0})))
        .await
        .unwrap();
    w3.record(done(2)).unwrap();
    w3.finish(Exit::Success).await.unwrap();

    let j = Journal::open_read_only(&path).unwrap();
    let runs = j.runs().unwrap();
    assert_eq!(
        runs.iter().map(|r| r.exit_code).collect::<Vec<_>>(),
        [Some(4), None, Some(0)]
    );
    drop(j);
    let (text, stderr) = revert_of(&path, dir.path());
    let rows: Vec<&str> = text
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with('#'))
        .collect();
    assert_eq!(rows, ["unfreeze,w,,,,,,,,,,,,"], "{text}");
    let apart = |room: &str| {
        text.lines()
            .find(|l| l.starts_with("# seq ") && l.contains(&format!("room \"{room}\"")))
            .unwrap_or_else(|| panic!("{room} not listed apart: {text}"))
            .to_string()
    };
    assert!(
        apart("x").contains("after run #2 (without --snapshot) was killed"),
        "{text}"
    );
    assert!(apart("y").contains("no snapshot"), "{text}");
    assert!(stderr.contains("2 ops listed apart"), "{stderr}");
}

/// `report --failed` writes a CSV manifest: asking for it as JSON is a usage error (exit 2)
/// that says what to do, not a CSV printed in its place.
#[tokio::test]
async fn report_failed_as_json_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = finished_job(dir.path()).await;
    let dest = dir.path().join("failed.json");
    let out = util::bin()
        .args(["report", "--failed", "--format", "json", "-o"])
        .arg(&dest)
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--failed") && err.contains("--format json") && err.contains("CSV manifest"),
        "{err}"
    );
    assert!(!dest.exists(), "nothing is written");
    // --format csv with --failed is what --failed writes anyway: accepted.
    let out = util::bin()
        .args(["report", "--failed", "--format", "csv"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(HEADER));
}

#[tokio::test]
async fn fresh_renames_the_old_journal_and_never_deletes_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.journal");
    let m = manifest(dir.path(), SUM_A, freezes(3));
    let w = open(&path, &m, OpenOptions::default())
        .unwrap()
        .start_writer()
        .unwrap();
    w.record(done(0)).unwrap();
    w.record(done(1)).unwrap();
    w.finish(Exit::Stopped).await.unwrap();
    let old_bytes = bytes(&path);
    let changed = manifest(dir.path(), SUM_B, freezes(2));
    let fresh = OpenOptions {
        fresh: true,
        retry_failed: false,
        replan: false,
        retarget: false,
    };
    let j = open(&path, &changed, fresh).unwrap();
    assert_eq!(
        j.counts().unwrap(),
        Counts {
            pending: 2,
            ..Default::default()
        }
    );
    assert_eq!(j.meta().unwrap().checksum, SUM_B);
    drop(j);
    let names = files_in(dir.path());
    let kept: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with("job.journal.") && !n.ends_with(".lock") && !n.contains('-'))
        .collect();
    assert_eq!(kept.len(), 1, "one renamed journal in {names:?}");
    let kept = dir.path().join(kept[0]);
    assert_eq!(bytes(&kept), old_bytes, "renamed byte for byte");
    let old = Journal::open_read_only(&kept).unwrap();
    assert_eq!(old.counts().unwrap().done, 2);
    assert_eq!(old.meta().unwrap().checksum, SUM_A);
    // A second --fresh in the same second keeps both older journals.
    drop(old);
    open(&path, &changed, fresh).unwrap();
    let renamed = files_in(dir.path())
        .into_iter()
        .filter(|n| n.starts_with("job.journal.") && !n.ends_with(".lock") && !n.contains("-wal"))
        .filter(|n| !n.ends_with("-shm"))
        .count();
    assert_eq!(renamed, 2, "{:?}", files_in(dir.path()));
}

#[tokio::test]
async fn retry_failed_puts_failed_ops_back_to_pending() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.journal");
    let m = manifest(dir.path(), SUM_A, freezes(4));
    let w = open(&path, &m, OpenOptions::default())
        .unwrap()
        .start_writer()
        .unwrap();
    w.record(done(0)).unwrap();
    w.record(failed(1, 403, "INSUFFICIENT_PERMISSIONS"))
        .unwrap();
    w.record(failed(3, 404, "ROOM_NOT_FOUND")).unwrap();
    w.record(done(2)).unwrap();
    w.finish(Exit::OpsFailed).await.unwrap();
    // Without the flag: a finished job, nothing pending.
    let j = open(&path, &m, OpenOptions::default()).unwrap();
    assert!(j.pending().unwrap().is_empty());
    assert_eq!(j.last_exit().unwrap(), Some(Exit::OpsFailed));
    assert_eq!(j.recorded_outcome().unwrap(), Some(Exit::OpsFailed));
    drop(j);
    let j = open(
        &path,
        &m,
        OpenOptions {
            fresh: false,
            retry_failed: true,
            replan: false,
            retarget: false,
        },
    )
    .unwrap();
    assert!(j.retry_failed());
    let pending = j.pending().unwrap();
    assert_eq!(
        pending
            .iter()
            .map(|p| (p.seq, p.attempts))
            .collect::<Vec<_>>(),
        vec![(1, 1), (3, 1)]
    );
    assert_eq!(
        j.counts().unwrap(),
        Counts {
            pending: 2,
            done: 2,
            ..Default::default()
        }
    );
    let w = j.start_writer().unwrap();
    w.record(done(1)).unwrap();
    w.record(done(3)).unwrap();
    w.finish(Exit::Success).await.unwrap();
    let r = Journal::open_read_only(&path).unwrap();
    assert_eq!(r.counts().unwrap().done, 4);
    assert!(r.job().unwrap().ended_at.is_some());
    let runs = r.runs().unwrap();
    assert_eq!(runs.len(), 2);
    assert!(runs[1].retry_failed);
}

#[test]
fn retry_failed_completes_a_404_once_the_room_exists_and_report_failed_is_a_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, config) = freeze_job(dir.path(), "freeze.csv", 12);
    // The last room is missing at the first sandbox: its freeze fails with 404.
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push_str("ghost-room\n");
    std::fs::write(&manifest, &text).unwrap();
    let journal = journal_of(&manifest);
    let sb = Sandbox::start(config.clone());
    let run = |url: &str, extra: &[&str]| {
        exec(run_cmd(
            url,
            &manifest,
            &[&["--action", "freeze"], extra].concat(),
        ))
    };
    let first = run(&sb.url(), &[]);
    assert_eq!(first.code, 1, "{first:?}");
    assert_eq!(sb.requests_total(), 13);

    // status --json of the finished job, field by field.
    let st = exec(util::imkit(&[
        "status",
        journal.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(st.code, 0, "{st:?}");
    let v: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    let m = load(
        &manifest,
        &LoadOptions {
            action: Some(Action::Freeze),
        },
    )
    .unwrap();
    assert_eq!(v["state"], "complete");
    assert_eq!(v["total"], 13);
    assert_eq!(
        v["counts"],
        serde_json::json!({"pending": 0, "done": 12, "failed": 1, "skipped": 0})
    );
    assert_eq!(v["progress_percent"], 100.0);
    assert_eq!(v["attempts"], 13);
    assert_eq!(v["retries"], 0);
    assert!(v["running_pid"].is_null());
    assert_eq!(
        v["last_exit"],
        serde_json::json!({"code": 1, "name": "ops_failed"})
    );
    assert_eq!(v["job"]["checksum"], m.checksum.as_str());
    assert_eq!(v["job"]["manifest"], manifest.to_str().unwrap());
    assert_eq!(v["job"]["tool_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        v["job"]["settings"]["base_url"]
            .as_str()
            .unwrap()
            .trim_end_matches('/'),
        sb.url()
    );
    for t in ["created_at", "started_at", "ended_at"] {
        let s = v["job"][t].as_str().unwrap_or_else(|| panic!("{t}: {v}"));
        assert!(s.parse::<jiff::Timestamp>().is_ok(), "{t}: {s}");
    }
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["exit_code"], 1);
    assert_eq!(runs[0]["ops_finalized"], 13);
    let f = v["failures_by_code"].as_array().unwrap();
    assert_eq!(f.len(), 1, "{v}");
    assert_eq!(f[0]["count"], 1);
    assert_eq!(f[0]["http_statuses"], serde_json::json!([404]));
    assert!(f[0]["error_code"].is_string(), "{v}");
    let text = serde_json::to_string(&v).unwrap();
    for secret in [util::CLIENT_KEY, util::TOKEN, util::API_KEY] {
        assert!(!text.contains(secret));
    }

    // report --failed: a manifest that validate and run accept.
    let failed = dir.path().join("failed.csv");
    let r = exec(util::imkit(&[
        "report",
        journal.to_str().unwrap(),
        "--failed",
        "-o",
        failed.to_str().unwrap(),
    ]));
    assert_eq!(r.code, 0, "{r:?}");
    let ok = exec(util::imkit(&["validate", failed.to_str().unwrap()]));
    assert_eq!(
        ok.code,
        0,
        "{ok:?}\n{}",
        std::fs::read_to_string(&failed).unwrap()
    );
    let fm = load(&failed, &LoadOptions::default()).unwrap();
    assert_eq!(
        fm.ops.iter().map(|p| p.op.clone()).collect::<Vec<_>>(),
        vec![Op::freeze("ghost-room")]
    );

    // A plain re-run of the finished job sends nothing and exits with its outcome.
    let again = run(&sb.url(), &[]);
    assert_eq!(again.code, 1, "{again:?}");
    assert_eq!(sb.requests_total(), 13);
    drop(sb);

    // The room now exists (a sandbox that has it): --retry-failed sends only that op.
    let mut config = config;
    config.add_room("ghost-room", "owner-1", &[]);
    let sb2 = Sandbox::start(config.clone());
    let retry = run(&sb2.url(), &["--retry-failed", "--retarget"]);
    assert_eq!(retry.code, 0, "{retry:?}");
    assert_eq!(sb2.requests_total(), 1);
    assert_eq!(sb2.applied_op(&Op::freeze("ghost-room")), 1);
    assert_eq!(sb2.room_status("ghost-room"), Some(0));
    let j = Journal::open_read_only(&journal).unwrap();
    let c = j.counts().unwrap();
    assert_eq!((c.done, c.failed, c.pending), (13, 0, 0));
    assert_eq!(j.last_exit().unwrap(), Some(imkit_batch::Exit::Success));
    drop(j);
    let again = run(&sb2.url(), &[]);
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(sb2.requests_total(), 1);

    // The failed-ops manifest runs as a job of its own.
    let sb3 = Sandbox::start(config);
    let r = exec(run_cmd(&sb3.url(), &failed, &[]));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(sb3.requests_total(), 1);
    assert_eq!(sb3.room_status("ghost-room"), Some(0));
}

#[tokio::test]
async fn a_locked_journal_is_refused_and_still_readable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.journal");
    let m = manifest(dir.path(), SUM_A, freezes(3));
    let first = open(&path, &m, OpenOptions::default()).unwrap();
    let err = open(&path, &m, OpenOptions::default())
        .err()
        .expect("second run refused");
    match &err {
        JournalError::Locked { pid, .. } => assert_eq!(*pid, Some(std::process::id())),
        other => panic!("wrong error: {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("is in use by another imkit-batch run"),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("pid {}", std::process::id())),
        "{msg}"
    );
    assert_eq!(err.exit(), Exit::Invalid);
    // --fresh must not move a journal a run is using.
    let fresh = OpenOptions {
        fresh: true,
        retry_failed: false,
        replan: false,
        retarget: false,
    };
    assert!(matches!(
        open(&path, &m, fresh),
        Err(JournalError::Locked { .. })
    ));
    // Status during a run.
    let w = first.start_writer().unwrap();
    w.record(done(0)).unwrap();
    w.flush().await.unwrap();
    let out = util::bin()
        .args(["status", "--json"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["state"], "running");
    assert_eq!(s["running_pid"], std::process::id());
    assert_eq!(s["counts"]["done"], 1);
    w.finish(Exit::Stopped).await.unwrap();
    open(&path, &m, OpenOptions::default()).unwrap();
}

#[test]
fn a_journal_locked_by_a_running_job_is_refused_and_nothing_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, mut config) = freeze_job(dir.path(), "freeze.csv", 50);
    // Slow answers keep the first run going for seconds.
    config.latency = Duration::from_millis(200);
    let slow = Sandbox::start(config.clone());
    config.latency = Duration::ZERO;
    let other = Sandbox::start(config);
    let journal = journal_of(&manifest);
    let mut first = util::spawn(run_cmd(
        &slow.url(),
        &manifest,
        &["--action", "freeze", "--concurrency", "1"],
    ));
    util::poll_until(Duration::from_secs(30), "the first run to send", || {
        slow.requests_total() >= 1
    });
    // The second run points at another sandbox: anything it sent would show there.
    let second = exec(run_cmd(&other.url(), &manifest, &["--action", "freeze"]));
    assert_eq!(second.code, 2, "{second:?}");
    assert!(
        second.stderr.contains("in use by another imkit-batch run")
            && second.stderr.contains(&format!("pid {}", first.id())),
        "{}",
        second.stderr
    );
    assert_eq!(other.requests_total(), 0, "the refused run sent something");
    // status still reads it, and says it is running.
    let st = exec(util::imkit(&[
        "status",
        journal.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(st.code, 0, "{st:?}");
    let v: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(v["state"], "running");
    assert_eq!(v["running_pid"], first.id());
    first.kill().unwrap();
    first.wait().unwrap();
    // Once the first run is gone, the job resumes from the other sandbox.
    let resumed = exec(run_cmd(
        &other.url(),
        &manifest,
        &["--action", "freeze", "--retarget"],
    ));
    assert_eq!(resumed.code, 0, "{resumed:?}");
    let done_at_slow = slow.stats().applied_total;
    assert!(other.requests_total() >= 50 - done_at_slow);
}

fn assert_refused_untouched(path: &Path, m: &Manifest, expect: &str) {
    let before = bytes(path);
    let err = open(path, m, OpenOptions::default())
        .err()
        .expect("damaged journal refused");
    let msg = err.to_string();
    assert!(
        matches!(err, JournalError::Corrupt { .. }),
        "wrong error: {msg}"
    );
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains(expect), "{msg}");
    assert!(msg.contains("--fresh"), "{msg}");
    assert_eq!(bytes(path), before, "the file was not touched");
    let ro = Journal::open_read_only(path)
        .err()
        .expect("read-only open refused too");
    assert!(matches!(ro, JournalError::Corrupt { .. }), "{ro}");
    assert_eq!(bytes(path), before, "the file was not touched");
    let out = util::bin().arg("status").arg(path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("damaged or not an imkit-batch journal"),
        "{stderr}"
    );
    assert_eq!(bytes(path), before, "the file was not touched");
}

#[tokio::test]
async fn a_truncated_journal_is_reported_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.journal");
    let m = manifest(dir.path(), SUM_A, freezes(20_000));
    let w = open(&path, &m, OpenOptions::default())
        .unwrap()
        .start_writer()
        .unwrap();
    for seq in 0..100 {
        w.record(done(seq)).unwrap();
    }
    w.finish(Exit::Stopped).await.unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(len > 100_000, "journal of {len} bytes");
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len / 2).unwrap();
    drop(f);
    assert_refused_untouched(&path, &m, "truncated");
}

/// A damaged journal is reported (exit 2, the way out named), its bytes unchanged, and
/// nothing is sent; `status` reports it too.
fn assert_damaged_refused(sb: &Sandbox, manifest: &Path, journal: &Path, expect: &str) {
    let before = bytes(journal);
    let sent = sb.requests_total();
    let files = files_in(journal.parent().unwrap());
    let r = exec(run_cmd(&sb.url(), manifest, &["--action", "freeze"]));
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("damaged") && r.stderr.contains(expect) && r.stderr.contains("--fresh"),
        "{}",
        r.stderr
    );
    let st = exec(util::imkit(&["status", journal.to_str().unwrap()]));
    assert_eq!(st.code, 2, "{st:?}");
    assert!(st.stderr.contains("damaged"), "{}", st.stderr);
    assert_eq!(sb.requests_total(), sent, "a refused run sent something");
    assert_eq!(bytes(journal), before, "the damaged journal was written to");
    // SQLite's read-only look may leave its (empty) `-wal` and `-shm` beside it; nothing else.
    let sqlite_files = |v: Vec<String>| -> Vec<String> {
        v.into_iter()
            .filter(|f| !f.ends_with("-wal") && !f.ends_with("-shm"))
            .collect()
    };
    assert_eq!(
        sqlite_files(files_in(journal.parent().unwrap())),
        sqlite_files(files)
    );
    let mut wal = journal.as_os_str().to_owned();
    wal.push("-wal");
    assert!(std::fs::metadata(&wal).map_or(0, |m| m.len()) == 0);
}

#[test]
fn a_truncated_or_corrupt_journal_is_reported_untouched_and_nothing_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, config) = freeze_job(dir.path(), "freeze.csv", 300);
    let sb = Sandbox::start(config);
    let journal = journal_of(&manifest);
    let r = exec(run_cmd(&sb.url(), &manifest, &["--action", "freeze"]));
    assert_eq!(r.code, 0, "{r:?}");
    let good = bytes(&journal);
    assert!(good.len() > 4 * 4096, "{}", good.len());

    // Truncated: the file ends half-way.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&journal)
        .unwrap();
    f.set_len(good.len() as u64 / 2).unwrap();
    drop(f);
    assert_damaged_refused(&sb, &manifest, &journal, "truncated");

    // Corrupt: a page in the middle overwritten.
    let mut bad = good.clone();
    let page = u16::from_be_bytes([good[16], good[17]]) as usize;
    for b in &mut bad[2 * page..2 * page + 512] {
        *b = 0xA5;
    }
    std::fs::write(&journal, &bad).unwrap();
    assert_damaged_refused(&sb, &manifest, &journal, "");

    // Restored, it resumes as if nothing happened: complete, nothing sent.
    std::fs::write(&journal, &good).unwrap();
    let sent = sb.requests_total();
    let r = exec(run_cmd(&sb.url(), &manifest, &["--action", "freeze"]));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(sb.requests_total(), sent);
}

#[test]
fn garbage_and_foreign_files_are_reported_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let m = manifest(dir.path(), SUM_A, freezes(2));
    let garbage = dir.path().join("garbage.journal");
    let noise: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&garbage, &noise).unwrap();
    assert_refused_untouched(&garbage, &m, "not a SQLite database");
    let foreign = dir.path().join("foreign.journal");
    {
        let c = rusqlite::Connection::open(&foreign).unwrap();
        c.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
    }
    assert_refused_untouched(&foreign, &m, "another application");
    // A SQLite header whose pages were overwritten.
    let torn = dir.path().join("torn.journal");
    let mut head = b"SQLite format 3\0".to_vec();
    head.extend_from_slice(&noise[..4080]);
    std::fs::write(&torn, &head).unwrap();
    let before = bytes(&torn);
    assert!(matches!(
        open(&torn, &m, OpenOptions::default()),
        Err(JournalError::Corrupt { .. })
    ));
    assert_eq!(bytes(&torn), before);
}

#[test]
fn a_leftover_wal_without_its_journal_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.journal");
    let m = manifest(dir.path(), SUM_A, freezes(2));
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::write(PathBuf::from(&wal), b"old wal").unwrap();
    let err = open(&path, &m, OpenOptions::default()).err().unwrap();
    assert!(matches!(err, JournalError::Orphan { .. }), "{err}");
    assert!(!path.exists(), "no journal was created");
    assert_eq!(std::fs::read(PathBuf::from(&wal)).unwrap(), b"old wal");
    // An empty WAL and a stale -shm (what a reader leaves) are inert: a new job starts.
    std::fs::write(PathBuf::from(&wal), b"").unwrap();
    let mut shm = path.as_os_str().to_owned();
    shm.push("-shm");
    std::fs::write(PathBuf::from(&shm), vec![0u8; 32768]).unwrap();
    let j = open(&path, &m, OpenOptions::default()).unwrap();
    assert_eq!(j.counts().unwrap().pending, 2);
}

/// What a kill during the first run's plan import leaves: an empty file (SQLite writes the
/// database at commit) and its rollback journal; or, killed earlier, the empty file alone.
/// Nothing was sent with it: the next run keeps it (renamed) and imports the plan again.
#[test]
fn an_interrupted_import_is_kept_aside_and_the_plan_imported_again() {
    for with_rollback in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job.journal");
        let m = manifest(dir.path(), SUM_A, freezes(2));
        std::fs::write(&path, b"").unwrap();
        let mut rollback = path.as_os_str().to_owned();
        rollback.push("-journal");
        if with_rollback {
            std::fs::write(PathBuf::from(&rollback), b"hot journal").unwrap();
        }
        // status says what it is, and changes nothing.
        let st = util::bin().arg("status").arg(&path).output().unwrap();
        assert_eq!(st.status.code(), Some(2));
        let err = String::from_utf8_lossy(&st.stderr);
        assert!(
            err.contains(if with_rollback {
                "import was interrupted"
            } else {
                "empty"
            }),
            "{err}"
        );
        let j = open(&path, &m, OpenOptions::default()).unwrap();
        assert_eq!(j.counts().unwrap().pending, 2);
        assert!(!PathBuf::from(&rollback).exists());
        let files = files_in(dir.path());
        let kept: Vec<&String> = files
            .iter()
            .filter(|n| n.starts_with("job.journal.") && !n.ends_with(".lock"))
            .collect();
        let want = if with_rollback { 2 } else { 1 };
        assert_eq!(kept.len(), want, "{files:?}");
        if with_rollback {
            let hot = kept.iter().find(|n| n.ends_with("-journal")).unwrap();
            assert_eq!(bytes(&dir.path().join(hot)), b"hot journal");
        }
    }
}

/// Killed after the import committed but before the switch to WAL: the journal is complete
/// but in rollback mode; resuming switches it (or `status` would wait on every commit).
#[tokio::test]
async fn a_journal_left_in_rollback_mode_is_resumed_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.journal");
    let m = manifest(dir.path(), SUM_A, freezes(3));
    drop(open(&path, &m, OpenOptions::default()).unwrap());
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        let mode: String = c
            .pragma_update_and_check(None, "journal_mode", "DELETE", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "delete");
    }
    let j = open(&path, &m, OpenOptions::default()).unwrap();
    assert_eq!(j.pending().unwrap().len(), 3);
    let w = j.start_writer().unwrap();
    w.record(done(0)).unwrap();
    w.finish(Exit::Stopped).await.unwrap();
    let c = rusqlite::Connection::open(&path).unwrap();
    let mode: String = c
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

/// Killed after its last outcome was committed but before it recorded its end: the next
/// `run` finds nothing to send and gives the job the end time of its last attempt.
#[tokio::test]
async fn a_job_finished_by_a_killed_run_gets_its_end_time_on_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.journal");
    let m = manifest(dir.path(), SUM_A, freezes(3));
    let w = open(&path, &m, OpenOptions::default())
        .unwrap()
        .start_writer()
        .unwrap();
    for seq in 0..3 {
        w.record(done(seq)).unwrap();
    }
    w.flush().await.unwrap();
    // The process dies here: no `finish`.
    drop(w);
    util::poll_until(
        std::time::Duration::from_secs(10),
        "the lock to be released",
        || imkit_batch::journal::running_pid(&path).is_none(),
    );
    let ro = Journal::open_read_only(&path).unwrap();
    assert_eq!(ro.job().unwrap().ended_at, None);
    drop(ro);
    let j = open(&path, &m, OpenOptions::default()).unwrap();
    assert!(j.pending().unwrap().is_empty());
    let job = j.job().unwrap();
    let last = job.ended_at.expect("an end time");
    assert!(last >= job.started_at.unwrap());
    assert_eq!(j.runs().unwrap().len(), 1);
}

#[test]
fn status_of_a_missing_journal_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = util::bin()
        .arg("status")
        .arg(dir.path().join("nope.journal"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no journal at"));
}

/// A small finished job with every kind of outcome, for the command tests.
async fn finished_job(dir: &Path) -> PathBuf {
    let path = dir.join("job.journal");
    let ops = vec![
        Op::freeze("lobby-1"),
        Op::freeze("lobby,2"),
        Op::update(
            "help",
            RoomFields {
                name: Some("Help \"Desk\"".into()),
                room_tags: Some(vec!["a".into(), "b".into()]),
                bot_mode: Some(true),
                opening: Some(0),
                ..Default::default()
            },
        ),
        Op::mute("u-1", "lobby-1"),
        Op::unmute("u-2", "lobby-1"),
        Op::freeze("gone"),
    ];
    let m = manifest(dir, SUM_A, ops);
    let w = open(&path, &m, OpenOptions::default())
        .unwrap()
        .start_writer()
        .unwrap();
    w.record(done(0)).unwrap();
    w.record(OpRecord {
        attempts: 3,
        ..done(1)
    })
    .unwrap();
    w.record(failed(2, 403, "INSUFFICIENT_PERMISSIONS"))
        .unwrap();
    w.record(done(3)).unwrap();
    w.record(failed(4, 404, "CLIENT_NOT_FOUND")).unwrap();
    w.record(failed(5, 404, "ROOM_NOT_FOUND")).unwrap();
    w.finish(Exit::OpsFailed).await.unwrap();
    path
}

#[tokio::test]
async fn status_json_and_text_show_counts_progress_runs_and_failures() {
    let dir = tempfile::tempdir().unwrap();
    let path = finished_job(dir.path()).await;
    let out = util::bin()
        .args(["status", "--json"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["journal"], path.display().to_string());
    assert_eq!(s["schema_version"], 1);
    assert_eq!(s["state"], "complete");
    assert_eq!(s["running_pid"], serde_json::Value::Null);
    assert_eq!(s["total"], 6);
    assert_eq!(
        s["counts"],
        json!({"pending": 0, "done": 3, "failed": 3, "skipped": 0})
    );
    assert_eq!(s["progress_percent"], 100.0);
    assert_eq!(s["attempts"], 8);
    assert_eq!(s["retries"], 2);
    assert_eq!(s["job"]["name"], "test-job");
    assert_eq!(s["job"]["checksum"], SUM_A);
    assert_eq!(s["job"]["tool_version"], env!("CARGO_PKG_VERSION"));
    assert!(s["job"]["started_at"].is_string());
    assert!(s["job"]["ended_at"].is_string());
    assert_eq!(s["runs"].as_array().unwrap().len(), 1);
    assert_eq!(s["runs"][0]["exit_code"], 1);
    assert_eq!(s["runs"][0]["exit"], "ops_failed");
    assert_eq!(s["runs"][0]["ops_finalized"], 6);
    assert_eq!(s["last_exit"], json!({"code": 1, "name": "ops_failed"}));
    let groups = s["failures_by_code"].as_array().unwrap();
    assert_eq!(groups.len(), 3);
    let by_code: HashMap<&str, (&serde_json::Value, &serde_json::Value)> = groups
        .iter()
        .map(|g| {
            (
                g["error_code"].as_str().unwrap(),
                (&g["count"], &g["http_statuses"]),
            )
        })
        .collect();
    assert_eq!(by_code["ROOM_NOT_FOUND"], (&json!(1), &json!([404])));
    assert_eq!(
        by_code["INSUFFICIENT_PERMISSIONS"],
        (&json!(1), &json!([403]))
    );
    assert_eq!(by_code["CLIENT_NOT_FOUND"], (&json!(1), &json!([404])));

    let out = util::bin().arg("status").arg(&path).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("state      complete"), "{text}");
    assert!(
        text.contains("6 of 6 ops final (100.0%): 3 done, 3 failed, 0 skipped, 0 pending"),
        "{text}"
    );
    assert!(text.contains("attempts   8 (2 retries)"), "{text}");
    assert!(text.contains("last exit 1 (ops_failed)"), "{text}");
    assert!(text.contains("ROOM_NOT_FOUND (HTTP 404)"), "{text}");
}

#[tokio::test]
async fn report_csv_and_json_have_one_row_per_op() {
    let dir = tempfile::tempdir().unwrap();
    let path = finished_job(dir.path()).await;
    let out_csv = dir.path().join("report.csv");
    let out = util::bin()
        .arg("report")
        .arg(&path)
        .arg("-o")
        .arg(&out_csv)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut rd = csv::Reader::from_path(&out_csv).unwrap();
    let header: Vec<String> = rd.headers().unwrap().iter().map(str::to_owned).collect();
    assert_eq!(
        header,
        imkit_batch::journal::report::REPORT_COLUMNS.to_vec()
    );
    let rows: Vec<csv::StringRecord> = rd.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 6);
    let col = |r: &csv::StringRecord, name: &str| -> String {
        r[header.iter().position(|h| h == name).unwrap()].to_owned()
    };
    assert_eq!(col(&rows[0], "seq"), "0");
    assert_eq!(col(&rows[0], "line"), "2");
    assert_eq!(
        col(&rows[0], "file"),
        dir.path().join("job.csv").display().to_string()
    );
    assert_eq!(col(&rows[0], "action"), "freeze");
    assert_eq!(col(&rows[0], "room"), "lobby-1");
    assert_eq!(col(&rows[0], "state"), "done");
    assert_eq!(col(&rows[0], "http_status"), "200");
    assert_eq!(col(&rows[0], "rc"), "0");
    assert_eq!(col(&rows[0], "latency_ms"), "12");
    assert!(col(&rows[0], "first_attempt_at").ends_with('Z'));
    assert_eq!(col(&rows[1], "room"), "lobby,2");
    assert_eq!(col(&rows[1], "attempts"), "3");
    let fields: serde_json::Value = serde_json::from_str(&col(&rows[2], "fields")).unwrap();
    assert_eq!(
        fields,
        json!({"name": "Help \"Desk\"", "roomTags": ["a", "b"], "botMode": true, "opening": 0})
    );
    assert_eq!(col(&rows[2], "state"), "failed");
    assert_eq!(col(&rows[2], "error_code"), "INSUFFICIENT_PERMISSIONS");
    assert_eq!(
        col(&rows[2], "message"),
        "INSUFFICIENT_PERMISSIONS happened"
    );
    assert_eq!(col(&rows[2], "rc"), "403");
    assert_eq!(col(&rows[3], "client"), "u-1");
    assert_eq!(col(&rows[3], "action"), "mute");
    assert_eq!(col(&rows[0], "client"), "");
    assert_eq!(col(&rows[0], "fields"), "");

    let out = util::bin()
        .args(["report", "--format", "json"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let a = v.as_array().unwrap();
    assert_eq!(a.len(), 6);
    assert_eq!(a[0]["seq"], 0);
    assert_eq!(a[0]["state"], "done");
    assert_eq!(a[0]["client"], serde_json::Value::Null);
    assert_eq!(a[2]["fields"]["roomTags"], json!(["a", "b"]));
    assert_eq!(a[4]["action"], "unmute");
    assert_eq!(a[4]["client"], "u-2");
    assert_eq!(a[4]["http_status"], 404);
    assert_eq!(a[4]["error_code"], "CLIENT_NOT_FOUND");
    assert_eq!(a[5]["latency_ms"], 30);

    // Never over the journal itself.
    let out = util::bin()
        .arg("report")
        .arg(&path)
        .arg("-o")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    Journal::open_read_only(&path).unwrap();
}

#[tokio::test]
async fn report_failed_is_a_manifest_of_the_failed_ops() {
    let dir = tempfile::tempdir().unwrap();
    let path = finished_job(dir.path()).await;
    let dest = dir.path().join("failed.csv");
    let out = util::bin()
        .args(["report", "--failed"])
        .arg(&path)
        .arg("-o")
        .arg(&dest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("3 failed ops written"));
    let text = std::fs::read_to_string(&dest).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        vec![
            "action,room,client,name,cover,description,roomTags,webhook,botMode,extParams,opening,owner,managers,status",
            "update,help,,\"Help \"\"Desk\"\"\",,,a;b,,true,,0,,,",
            "unmute,lobby-1,u-2,,,,,,,,,,,",
            "freeze,gone,,,,,,,,,,,,",
        ]
    );
}

/// Runs `revert` through the binary; returns (manifest text, stderr).
fn revert_of(path: &Path, dir: &Path) -> (String, String) {
    let dest = dir.join("revert.csv");
    let out = util::bin()
        .arg("revert")
        .arg(path)
        .arg("-o")
        .arg(&dest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        std::fs::read_to_string(&dest).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

const HEADER: &str = "action,room,client,name,cover,description,roomTags,webhook,botMode,extParams,opening,owner,managers,status";

#[tokio::test]
async fn revert_of_a_maintenance_freeze_keeps_rooms_frozen_before_the_job_frozen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.journal");
    // r-active: active before -> unfrozen by the revert.
    // r-violation: frozen before (a violation) -> stays frozen.
    // r-nostatus: the room read omitted `status` -> unknown, listed apart.
    // r-nosnap: no snapshot -> unknown, listed apart.
    // r-failed: the freeze failed -> nothing changed, nothing to revert.
    // r-envelope: snapshot stored as the whole response body -> unfrozen.
    let rooms = [
        "r-active",
        "r-violation",
        "r-nostatus",
        "r-nosnap",
        "r-failed",
        "r-envelope",
    ];
    let m = manifest(
        dir.path(),
        SUM_A,
        rooms.iter().map(|r| Op::freeze(*r)).collect(),
    );
    let w = open(&path, &m, OpenOptions::default())
        .unwrap()
        .start_writer()
        .unwrap();
    w.record_snapshot(
        "r-active",
        Some(json!({"_id": "r-active", "name": "A", "status": 1})),
    )
    .await
    .unwrap();
    w.record_snapshot(
        "r-violation",
        Some(json!({"_id": "r-violation", "status": 0})),
    )
    .await
    .unwrap();
    w.record_snapshot(
        "r-nostatus",
        Some(json!({"_id": "r-nostatus", "name": "N"})),
    )
    .await
    .unwrap();
    w.record_snapshot("r-failed", Some(json!({"status": 1})))
        .await
        .unwrap();
    w.record_snapshot(
        "r-envelope",
        Some(json!({"RC": 0, "RM": "OK", "result": {"_id": "r-envelope", "status": 1}})),
    )
    .await
    .unwrap();
    for seq in [0, 1, 2, 3, 5] {
        w.record(done(seq)).unwrap();
    }
    w.record(failed(4, 403, "INSUFFICIENT_PERMISSIONS"))
        .unwrap();
    w.finish(Exit::OpsFailed).await.unwrap();

    let (text, stderr) = revert_of(&path, dir.path());
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], HEADER);
    let data: Vec<&str> = lines[1..]
        .iter()
        .copied()
        .filter(|l| !l.starts_with('#'))
        .collect();
    assert_eq!(
        data,
        vec![
            "unfreeze,r-active,,,,,,,,,,,,",
            "unfreeze,r-envelope,,,,,,,,,,,,"
        ]
    );
    assert!(!text.contains("r-violation"), "{text}");
    assert!(!text.contains("r-failed"), "{text}");
    // The unknown ones come last, as comments, with a count; the same on stderr.
    let comments: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with('#'))
        .collect();
    assert_eq!(comments.len(), 3, "{text}");
    assert!(comments[0].starts_with("# 2 ops listed apart"), "{text}");
    assert!(
        comments[1].contains("seq 2") && comments[1].contains("r-nostatus"),
        "{text}"
    );
    assert!(comments[1].contains("no `status`"), "{text}");
    assert!(
        comments[2].contains("seq 3") && comments[2].contains("r-nosnap"),
        "{text}"
    );
    assert!(comments[2].contains("no snapshot"), "{text}");
    let last_data = lines.iter().rposition(|l| !l.starts_with('#')).unwrap();
    let first_comment = lines.iter().position(|l| l.starts_with('#')).unwrap();
    assert!(last_data < first_comment, "comments at the end: {text}");
    assert!(stderr.contains("2 revert ops written"), "{stderr}");
    assert!(stderr.contains("2 ops listed apart"), "{stderr}");
    assert!(stderr.contains("r-nosnap"), "{stderr}");

    // The report shows each room's prior state on its op (JSON, and CSV's last column).
    let out = util::bin()
        .args(["report", "--format", "json"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let prior = |room: &str| rows.iter().find(|r| r["room"] == room).unwrap()["prior"].clone();
    assert_eq!(
        prior("r-active"),
        json!({"_id": "r-active", "name": "A", "status": 1})
    );
    assert_eq!(
        prior("r-violation"),
        json!({"_id": "r-violation", "status": 0})
    );
    assert_eq!(
        prior("r-envelope"),
        json!({"_id": "r-envelope", "status": 1})
    );
    assert_eq!(prior("r-nosnap"), serde_json::Value::Null);
    let out = util::bin().arg("report").arg(&path).output().unwrap();
    let csv = String::from_utf8(out.stdout).unwrap();
    let mut r = csv::Reader::from_reader(csv.as_bytes());
    assert_eq!(r.headers().unwrap().iter().next_back(), Some("prior"));
    let violation = r
        .records()
        .map(Result::unwrap)
        .find(|rec| &rec[4] == "r-violation")
        .unwrap();
    let cell: serde_json::Value =
        serde_json::from_str(violation.iter().next_back().unwrap()).unwrap();
    assert_eq!(cell, json!({"_id": "r-violation", "status": 0}));
}

/// Data rows of a CSV manifest (not the header, comments or blank lines).
fn data_rows(csv: &str) -> Vec<&str> {
    csv.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect()
}

#[test]
fn revert_of_a_maintenance_freeze_run_on_the_sandbox_undoes_only_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, mut config) = freeze_job(dir.path(), "maintenance.csv", 10);
    // Rooms frozen earlier for violations.
    for i in [0, 4, 7] {
        config.rooms.get_mut(&format!("r-{i}")).unwrap().status = 0;
    }
    let sb = Sandbox::start(config.clone());
    let journal = journal_of(&manifest);
    let r = exec(run_cmd(
        &sb.url(),
        &manifest,
        &["--action", "freeze", "--snapshot"],
    ));
    assert_eq!(r.code, 0, "{r:?}");
    assert!((0..10).all(|i| sb.room_status(&format!("r-{i}")) == Some(0)));
    // One read per room before its change, then the change.
    assert_eq!(sb.stats().requests["GET /rooms/{id}"], 10);

    let undo = dir.path().join("undo.csv");
    let (text, stderr) = revert_to(&journal, &undo);
    assert!(stderr.contains("7 revert ops written"), "{stderr}");
    let m = load(&undo, &LoadOptions::default()).unwrap();
    let want: Vec<Op> = [1, 2, 3, 5, 6, 8, 9]
        .iter()
        .map(|i| Op::unfreeze(format!("r-{i}")))
        .collect();
    assert_eq!(
        m.ops.into_iter().map(|p| p.op).collect::<Vec<_>>(),
        want,
        "{text}"
    );

    // The undo manifest runs against the same platform: the job's freezes are undone, the
    // rooms frozen before stay frozen.
    let base = sb.requests_total();
    let r = exec(run_cmd(&sb.url(), &undo, &[]));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(sb.requests_total() - base, 7);
    for i in 0..10 {
        let want = if [0, 4, 7].contains(&i) { 0 } else { 1 };
        assert_eq!(sb.room_status(&format!("r-{i}")), Some(want), "r-{i}");
    }
    // Each of those rooms was changed once by the job and not by the undo.
    for i in [0, 4, 7] {
        assert_eq!(sb.applied_op(&Op::freeze(format!("r-{i}"))), 1);
    }

    // Without --snapshot the prior state is unknown: every op listed apart, none emitted.
    let sb = Sandbox::start(config.clone());
    let nosnap = dir.path().join("nosnap.csv");
    std::fs::copy(&manifest, &nosnap).unwrap();
    let r = exec(run_cmd(&sb.url(), &nosnap, &["--action", "freeze"]));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(sb.stats().requests["GET /rooms/{id}"], 0);
    let (text, stderr) = revert_to(&journal_of(&nosnap), &dir.path().join("undo2.csv"));
    assert!(data_rows(&text).is_empty(), "{text}");
    assert!(stderr.contains("0 revert ops written"), "{stderr}");
    assert!(stderr.contains("10 ops listed apart"), "{stderr}");
    for i in 0..10 {
        let line = format!("freeze room \"r-{i}\"");
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(&line) && l.contains("snapshot")),
            "{line} not listed apart with its reason: {stderr}"
        );
    }
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("# seq ") && l.contains("no snapshot"))
            .count(),
        10,
        "{text}"
    );

    // A platform whose room reads leave out `status`: the prior status is unknown.
    config.get_room_omits_status = true;
    let sb = Sandbox::start(config);
    let blind = dir.path().join("blind.csv");
    std::fs::copy(&manifest, &blind).unwrap();
    let r = exec(run_cmd(
        &sb.url(),
        &blind,
        &["--action", "freeze", "--snapshot"],
    ));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(sb.stats().requests["GET /rooms/{id}"], 10);
    let (text, stderr) = revert_to(&journal_of(&blind), &dir.path().join("undo3.csv"));
    assert!(data_rows(&text).is_empty(), "{text}");
    assert!(stderr.contains("10 ops listed apart"), "{stderr}");
    assert_eq!(
        stderr.lines().filter(|l| l.contains("`status`")).count(),
        10,
        "{stderr}"
    );
}

#[tokio::test]
async fn revert_restores_updated_fields_and_mute_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.journal");
    let ops = vec![
        // Two updates of one room: the first snapshot is compared with the last values.
        Op::update(
            "help",
            RoomFields {
                name: Some("Interim".into()),
                description: Some("new".into()),
                ..Default::default()
            },
        ),
        Op::update(
            "help",
            RoomFields {
                name: Some("Help Desk".into()),
                managers: Some(vec!["m9".into()]),
                opening: Some(0),
                webhook: Some("https://hook".into()),
                ..Default::default()
            },
        ),
        // Unfrozen by the job, frozen before: frozen again, after the fields.
        Op::unfreeze("help"),
        Op::mute("u-1", "lobby"),
        Op::unmute("u-2", "lobby"),
        Op::unmute("u-3", "lobby"),
        Op::mute("u-4", "lobby"),
        Op::unmute("u-4", "lobby"),
    ];
    let m = manifest(dir.path(), SUM_A, ops);
    let w = open(&path, &m, OpenOptions::default())
        .unwrap()
        .start_writer()
        .unwrap();
    w.record_snapshot(
        "help",
        Some(json!({
            "_id": "help",
            "name": "Old; Name",
            "description": "new",
            "managers": [{"_id": "m1"}, "m2"],
            "opening": 1,
            "status": 0
        })),
    )
    .await
    .unwrap();
    for seq in 0..8 {
        w.record(done(seq)).unwrap();
    }
    // u-3 was not muted: its unmute changed nothing.
    w.record(OpRecord {
        http_status: Some(400),
        rc: None,
        error_code: Some("ROOM_NOT_MUTED".into()),
        ..done(5)
    })
    .unwrap();
    w.finish(Exit::Success).await.unwrap();

    let (text, stderr) = revert_of(&path, dir.path());
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], HEADER);
    assert_eq!(
        lines[1..]
            .iter()
            .copied()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>(),
        vec![
            // description was set to what it already was: not touched.
            "update,help,,Old; Name,,,,,,,1,,m1;m2,",
            "freeze,help,,,,,,,,,,,,",
            "unmute,lobby,u-1,,,,,,,,,,,",
            "mute,lobby,u-2,,,,,,,,,,,",
        ]
    );
    // webhook: the snapshot lacks it -> listed apart, never guessed.
    let comments: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with('#'))
        .collect();
    assert_eq!(comments.len(), 3, "{text}");
    // The unmute of u-1 rests on an assumption the API cannot check: said in the manifest
    // and on stderr.
    assert!(
        comments[0].starts_with(
            "# 1 unmute op(s) undo mutes of this job assuming the pair was not muted before it"
        ) && comments[0].contains("cannot show a pair's mute state before a mute"),
        "{text}"
    );
    assert!(
        stderr.contains("note: 1 unmute op(s)")
            && stderr.contains("muted before the job is unmuted too"),
        "{stderr}"
    );
    assert!(comments[1].starts_with("# 1 ops listed apart"), "{text}");
    assert!(
        comments[2].contains("seq 1") && comments[2].contains("webhook"),
        "{text}"
    );
    assert!(stderr.contains("1 ops listed apart"), "{stderr}");

    // The revert manifest parses as CSV with the manifest columns.
    let mut rd = csv::ReaderBuilder::new()
        .comment(Some(b'#'))
        .from_reader(text.as_bytes());
    assert_eq!(
        rd.headers().unwrap().iter().collect::<Vec<_>>().join(","),
        HEADER
    );
    assert_eq!(rd.records().count(), 4);
}

#[tokio::test]
async fn a_snapshot_taken_after_the_job_changed_the_room_is_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.journal");
    let m = manifest(
        dir.path(),
        SUM_A,
        vec![Op::freeze("late"), Op::freeze("late2")],
    );
    let w = open(&path, &m, OpenOptions::default())
        .unwrap()
        .start_writer()
        .unwrap();
    // A first run changed the room without --snapshot...
    w.record(done(0)).unwrap();
    w.flush().await.unwrap();
    // ...and a later snapshot reads the job's own state. Wait for the clock to move on.
    let t0 = jiff::Timestamp::now().as_millisecond();
    while jiff::Timestamp::now().as_millisecond() <= t0 {
        std::thread::yield_now();
    }
    w.record_snapshot("late", Some(json!({"status": 0})))
        .await
        .unwrap();
    w.record(done(1)).unwrap();
    w.finish(Exit::Success).await.unwrap();
    let (text, _) = revert_of(&path, dir.path());
    assert!(
        text.contains("snapshot was taken after the job had already sent a change"),
        "{text}"
    );
}

#[test]
fn status_while_a_run_creates_the_journal_says_it_is_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.journal");
    // A run holds the lock and has created the file, but the import is not committed yet.
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path(&path))
        .unwrap();
    lock.lock().unwrap();
    std::fs::write(&path, b"").unwrap();
    let err = Journal::open_read_only(&path).err().unwrap();
    assert!(matches!(err, JournalError::Locked { .. }), "{err}");
    drop(lock);
    let err = Journal::open_read_only(&path).err().unwrap();
    assert!(matches!(err, JournalError::Corrupt { .. }), "{err}");
}

/// Reading a journal leaves the directory as it was: no `-wal`/`-shm` left behind by
/// `status`, `report` or `revert`, and the journal's bytes unchanged.
#[tokio::test]
async fn read_only_commands_leave_no_files_and_change_no_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = finished_job(dir.path()).await;
    let before = files_in(dir.path());
    assert_eq!(before, ["job.journal", "job.journal.lock"]);
    let content = bytes(&path);
    let p = path.to_str().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let o = |name: &str| out.join(name).to_str().unwrap().to_string();
    for args in [
        vec!["status".to_string(), p.into()],
        vec!["status".into(), p.into(), "--json".into()],
        vec!["report".into(), p.into(), "-o".into(), o("r.csv")],
        vec![
            "report".into(),
            p.into(),
            "--failed".into(),
            "-o".into(),
            o("f.csv"),
        ],
        vec!["revert".into(), p.into(), "-o".into(), o("undo.csv")],
    ] {
        let r = util::bin().args(&args).output().unwrap();
        assert!(r.status.code().is_some_and(|c| c <= 1), "{args:?}: {r:?}");
        assert_eq!(
            files_in(dir.path()),
            [&before[..], &["out".to_string()]].concat(),
            "after {args:?}"
        );
    }
    assert_eq!(bytes(&path), content);
}

/// Never guessed (docs/behaviour.md §5): a mute that gave up after dropped connections may
/// have been applied, so revert lists it apart rather than ignore it; a mute refused with a
/// 404 on its only attempt changed nothing and is not mentioned; a done mute is unmuted.
#[tokio::test]
async fn revert_lists_apart_ops_that_may_have_been_applied() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.journal");
    let m = manifest(
        dir.path(),
        SUM_A,
        vec![
            Op::mute("u-1", "lobby"),
            Op::mute("u-2", "lobby"),
            Op::mute("u-3", "lobby"),
        ],
    );
    let w = open(&path, &m, OpenOptions::default())
        .unwrap()
        .start_writer()
        .unwrap();
    w.record(done(0)).unwrap();
    w.record(OpRecord {
        seq: 1,
        state: Some(OpState::Failed),
        attempts: 6,
        http_status: None,
        error_code: Some("CONNECTION".into()),
        message: Some("gave up after 6 attempts: connection closed before an answer".into()),
        ..Default::default()
    })
    .unwrap();
    w.record(failed(2, 404, "CLIENT_NOT_FOUND")).unwrap();
    w.finish(Exit::OpsFailed).await.unwrap();
    let (manifest, stderr) = revert_of(&path, dir.path());
    let ops: Vec<&str> = manifest.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(ops, [HEADER, "unmute,lobby,u-1,,,,,,,,,,,"], "{manifest}");
    let comments: Vec<&str> = manifest.lines().filter(|l| l.starts_with('#')).collect();
    let apart: Vec<&&str> = comments.iter().filter(|l| l.contains("seq ")).collect();
    assert_eq!(apart.len(), 1, "{manifest}");
    assert!(apart[0].contains("seq 1 "), "{}", apart[0]);
    assert!(apart[0].contains("may have been applied"), "{}", apart[0]);
    assert!(apart[0].contains("(last: CONNECTION)"), "{}", apart[0]);
    assert!(!manifest.contains("u-3"), "{manifest}");
    assert!(stderr.contains("1 ops listed apart"), "{stderr}");
}

/// A big job run without `--snapshot` leaves every op out of its revert: stderr names the
/// first 20 and counts the rest; the manifest's closing comments keep all of them.
#[tokio::test]
async fn revert_names_a_few_ops_left_apart_on_stderr_and_all_in_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.journal");
    let m = manifest(
        dir.path(),
        SUM_A,
        (0..25).map(|i| Op::freeze(format!("r-{i}"))).collect(),
    );
    let w = open(&path, &m, OpenOptions::default())
        .unwrap()
        .start_writer()
        .unwrap();
    for seq in 0..25 {
        w.record(done(seq)).unwrap();
    }
    w.finish(Exit::Success).await.unwrap();

    let (text, stderr) = revert_of(&path, dir.path());
    let listed: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("# ") && l.contains("no snapshot"))
        .collect();
    assert_eq!(listed.len(), 25, "{text}");
    assert!(stderr.contains("25 ops listed apart"), "{stderr}");
    let named = stderr.lines().filter(|l| l.contains("no snapshot")).count();
    assert_eq!(named, 20, "{stderr}");
    assert!(
        stderr.contains("... and 5 more, every one of them in the manifest's closing comments"),
        "{stderr}"
    );
    for i in 0..20 {
        assert!(
            stderr.contains(&format!("\"r-{i}\"")),
            "r-{i} not named: {stderr}"
        );
    }
}
