//! A journal is never stranded nor misused, through the real binary: a journal bound to its
//! target (a sandbox rehearsal never stands for the real run), a manifest judged by the ops
//! it means (a comment resumes; changed ops are refused with what changed, and `--replan`
//! goes on without sending again what is done), a full disk (the run stops, and resumes once
//! space is freed, on a small tmpfs the test mounts), a journal directory that does not exist
//! yet, a read-only place, and a manifest given where a journal is expected.

use std::collections::HashSet;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use imkit_batch::journal::{Journal, OpState};
use imkit_batch::op::{Op, RoomFields};

use crate::util::{
    Ran, Sandbox, exec, freeze_job, imkit, journal_of, journal_rows, run_cmd, sandbox_config,
    write, write_csv_manifest,
};

/// `run MANIFEST --sandbox` (in-process emulator) with the test's pace, and EXTRA.
fn run_sandbox(manifest: &Path, extra: &[&str]) -> Ran {
    let m = manifest.to_str().unwrap();
    let mut args = vec![
        "run",
        m,
        "--sandbox",
        "--progress",
        "never",
        "--rate",
        "20000/s",
    ];
    args.extend_from_slice(extra);
    exec(imkit(&args))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

// ---------------------------------------------------------------------------------------
// Case 1: a journal is bound to its target.

/// A rehearsal with `--sandbox` writes its own journal (`MANIFEST.sandbox.journal`), so the
/// real run that follows starts its own and sends every op. A real run pointed at the
/// rehearsal's journal is refused (exit 2, what happened and what to do), nothing sent, and
/// `--retarget` does not change that; `--fresh` in its place runs the job for real. And the
/// other way round.
#[test]
fn a_sandbox_rehearsal_never_stands_for_the_real_run() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, config) = freeze_job(dir.path(), "night.csv", 5);
    let sb = Sandbox::start(config);
    let freeze = ["--action", "freeze"];
    let rehearsal = run_sandbox(&manifest, &freeze);
    assert_eq!(rehearsal.code, 0, "{rehearsal:?}");
    let rehearsed = dir.path().join("night.csv.sandbox.journal");
    assert!(rehearsed.exists(), "the rehearsal's own journal");
    assert!(
        !journal_of(&manifest).exists(),
        "the real run's journal is untouched"
    );

    // The real run, as the README says it: its own journal, every op sent.
    let real = exec(run_cmd(&sb.url(), &manifest, &freeze));
    assert_eq!(real.code, 0, "{real:?}");
    assert_eq!(sb.requests_total(), 5);
    assert!(journal_of(&manifest).exists());

    // Pointed at the rehearsal's journal: refused, whatever --retarget says.
    let mut at_rehearsal = freeze.to_vec();
    at_rehearsal.extend(["--journal", s(&rehearsed)]);
    for extra in [
        &at_rehearsal[..],
        &[&at_rehearsal[..], &["--retarget"]].concat(),
    ] {
        let refused = exec(run_cmd(&sb.url(), &manifest, extra));
        assert_eq!(refused.code, 2, "{refused:?}");
        let want = format!(
            "journal {} recorded a run against the sandbox; it cannot be resumed against http://127.0.0.1",
            rehearsed.display()
        );
        assert!(refused.stderr.contains(&want), "{}", refused.stderr);
        assert!(
            refused.stderr.contains("Nothing was sent")
                && refused.stderr.contains("--journal PATH")
                && refused.stderr.contains("--fresh")
                && !refused.stderr.contains("--retarget"),
            "{}",
            refused.stderr
        );
        assert_eq!(sb.requests_total(), 5, "a refused run sent something");
    }

    // The real job's journal is not a rehearsal's either.
    let mut at_real = freeze.to_vec();
    let real_journal = journal_of(&manifest);
    at_real.extend(["--journal", s(&real_journal)]);
    let back = run_sandbox(&manifest, &at_real);
    assert_eq!(back.code, 2, "{back:?}");
    assert!(
        back.stderr
            .contains("recorded a run against http://127.0.0.1")
            && back
                .stderr
                .contains("it cannot be resumed against the sandbox"),
        "{}",
        back.stderr
    );

    // --fresh in the rehearsal's place: a new job, sent for real (the old journal kept).
    let fresh = exec(run_cmd(
        &sb.url(),
        &manifest,
        &[&at_rehearsal[..], &["--fresh"]].concat(),
    ));
    assert_eq!(fresh.code, 0, "{fresh:?}");
    assert_eq!(sb.requests_total(), 10);
}

/// A job recorded against one base URL is refused against another, with `--retarget`
/// offered; with it, the job resumes there (sending nothing done) and is bound to it.
#[test]
fn a_job_moves_to_another_address_only_with_retarget() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, config) = freeze_job(dir.path(), "freeze.csv", 4);
    let first = Sandbox::start(config.clone());
    let second = Sandbox::start(config);
    let run = |sb: &Sandbox, extra: &[&str]| {
        exec(run_cmd(
            &sb.url(),
            &manifest,
            &[&["--action", "freeze"], extra].concat(),
        ))
    };
    assert_eq!(run(&first, &[]).code, 0);
    let refused = run(&second, &[]);
    assert_eq!(refused.code, 2, "{refused:?}");
    let url = |sb: &Sandbox| format!("{}/", sb.url().trim_end_matches('/'));
    assert!(
        refused.stderr.contains(&format!(
            "recorded a run against {}; it cannot be resumed against {}",
            url(&first),
            url(&second)
        )) && refused.stderr.contains("run again with --retarget"),
        "{}",
        refused.stderr
    );
    let moved = run(&second, &["--retarget"]);
    assert_eq!(moved.code, 0, "{moved:?}");
    assert!(moved.stderr.contains("job already complete"), "{moved:?}");
    assert_eq!(second.requests_total(), 0);
    // Bound to the new address now.
    assert_eq!(run(&second, &[]).code, 0);
    assert_eq!(run(&first, &[]).code, 2);
    assert_eq!(first.requests_total(), 4);
}

// ---------------------------------------------------------------------------------------
// Case 4: what the manifest means, not its bytes.

/// A sandbox with rooms `r-0..r-n` that answers each request after `latency`.
fn slow_rooms(n: usize, latency: Duration) -> imkit_batch::sandbox::SandboxConfig {
    let mut c = sandbox_config();
    for i in 0..n {
        c.add_room(format!("r-{i}"), "owner-1", &[]);
    }
    c.latency = latency;
    c
}

fn freezes(range: std::ops::Range<usize>) -> Vec<Op> {
    range.map(|i| Op::freeze(format!("r-{i}"))).collect()
}

fn named(room: &str, name: &str) -> Op {
    Op::update(
        room,
        RoomFields {
            name: Some(name.into()),
            ..Default::default()
        },
    )
}

/// Runs `manifest` against `sb` one op at a time until a deadline stops it (exit 4), and
/// returns the ops recorded done and those still pending.
fn run_partly(sb: &Sandbox, manifest: &Path) -> (HashSet<Op>, HashSet<Op>) {
    let r = exec(run_cmd(
        &sb.url(),
        manifest,
        &["--concurrency", "1", "--max-duration", "1s"],
    ));
    assert_eq!(r.code, 4, "{r:?}");
    let rows = journal_rows(&journal_of(manifest));
    let of = |st: OpState| -> HashSet<Op> {
        rows.iter()
            .filter(|r| r.state == st)
            .map(|r| r.op.clone())
            .collect()
    };
    let (done, pending) = (of(OpState::Done), of(OpState::Pending));
    assert!(
        !done.is_empty() && pending.len() > 5,
        "{done:?} {pending:?}"
    );
    (done, pending)
}

/// A comment, blank lines and another order of rows change the manifest's bytes, not its
/// ops: the job resumes (the new checksum and lines recorded) and sends only what is left.
#[test]
fn a_comment_or_moved_rows_resume_and_nothing_done_is_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let sb = Sandbox::start(slow_rooms(40, Duration::from_millis(100)));
    let manifest = dir.path().join("job.csv");
    write_csv_manifest(&manifest, &freezes(0..40));
    let (done, _) = run_partly(&sb, &manifest);
    let sum_before = Journal::open_read_only(&journal_of(&manifest))
        .unwrap()
        .meta()
        .unwrap()
        .checksum;

    // A comment on top, a blank line, and the last two rows swapped.
    let text = std::fs::read_to_string(&manifest).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let n = lines.len();
    lines.swap(n - 1, n - 2);
    let edited = format!("# reviewed by ops\n{}\n\n", lines.join("\n"));
    std::fs::write(&manifest, edited).unwrap();

    let resumed = exec(run_cmd(&sb.url(), &manifest, &[]));
    assert_eq!(resumed.code, 0, "{resumed:?}");
    assert!(
        resumed
            .stderr
            .contains("the manifest's bytes changed since the job started, but not its ops"),
        "{}",
        resumed.stderr
    );
    // Every op sent once: those done before the edit were not sent again.
    for op in &freezes(0..40) {
        let again = if done.contains(op) { " again" } else { "" };
        assert_eq!(sb.applied_op(op), 1, "{op} sent{again}");
    }
    let j = Journal::open_read_only(&journal_of(&manifest)).unwrap();
    assert_ne!(j.meta().unwrap().checksum, sum_before);
    // The lines recorded are the new ones: r-0 moved from line 2 to 3, r-38 from 40 to 42,
    // r-39 from 41 to 41.
    let rows = journal_rows(&journal_of(&manifest));
    let line_of = |room: &str| rows.iter().find(|r| &*r.op.room == room).unwrap().line;
    assert_eq!(line_of("r-0"), 3);
    assert_eq!(line_of("r-38"), 42);
    assert_eq!(line_of("r-39"), 41);
}

/// Ops added, removed and changed: refused (exit 2) with counts and examples naming lines,
/// nothing sent; `--replan` goes on: nothing done is sent again, the added and changed ops
/// are sent, the pending op no longer in the manifest is skipped with the reason.
#[test]
fn changed_ops_are_refused_with_what_changed_and_replan_sends_only_what_is_new() {
    let dir = tempfile::tempdir().unwrap();
    let sb = Sandbox::start(slow_rooms(45, Duration::from_millis(100)));
    let manifest = dir.path().join("job.csv");
    let mut ops = freezes(0..40);
    ops.push(named("r-40", "Old name"));
    write_csv_manifest(&manifest, &ops);
    let (done, pending) = run_partly(&sb, &manifest);
    assert!(pending.contains(&Op::freeze("r-39")) && pending.contains(&ops[40]));
    let sent = sb.requests_total();

    // r-39 removed, r-40's new name, r-41 and r-42 added.
    let mut new_ops = freezes(0..39);
    new_ops.push(named("r-40", "New name"));
    new_ops.extend(freezes(41..43));
    write_csv_manifest(&manifest, &new_ops);
    let refused = exec(run_cmd(&sb.url(), &manifest, &[]));
    assert_eq!(refused.code, 2, "{refused:?}");
    let m = manifest.display();
    for want in [
        "the manifest changed since this job started".to_string(),
        "(2 added, 1 removed, 1 changed)".into(),
        format!("changed: update room \"r-40\" ({m}:41; was {m}:42, pending)"),
        format!("added: freeze room \"r-41\" ({m}:42)"),
        format!("removed: freeze room \"r-39\" (was {m}:41, pending)"),
        "run again with --replan".into(),
        "--fresh".into(),
    ] {
        assert!(refused.stderr.contains(&want), "{want}\n{}", refused.stderr);
    }
    assert_eq!(sb.requests_total(), sent, "a refused run sent something");

    let replanned = exec(run_cmd(&sb.url(), &manifest, &["--replan"]));
    assert_eq!(replanned.code, 0, "{replanned:?}");
    assert!(
        replanned
            .stderr
            .contains("--replan: 2 ops added and 1 changed"),
        "{}",
        replanned.stderr
    );
    for op in &done {
        assert_eq!(sb.applied_op(op), 1, "{op} was sent again");
    }
    assert_eq!(
        sb.applied_op(&Op::freeze("r-39")),
        0,
        "a removed op was sent"
    );
    for op in freezes(41..43) {
        assert_eq!(sb.applied_op(&op), 1);
    }
    assert_eq!(sb.room("r-40").unwrap()["name"], "New name");
    let rows = journal_rows(&journal_of(&manifest));
    let skipped: Vec<_> = rows
        .iter()
        .filter(|r| r.state == OpState::Skipped)
        .collect();
    assert_eq!(skipped.len(), 2, "{skipped:#?}");
    assert!(skipped.iter().all(|r| {
        r.message
            .as_deref()
            .is_some_and(|m| m.contains("no longer in the manifest"))
    }));
    assert_eq!(rows.iter().filter(|r| r.state == OpState::Done).count(), 42);

    // Complete now: a plain run sends nothing; status reads the replanned journal.
    let sent = sb.requests_total();
    let again = exec(run_cmd(&sb.url(), &manifest, &[]));
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(sb.requests_total(), sent);
    let st = exec(imkit(&["status", s(&journal_of(&manifest)), "--json"]));
    assert_eq!(st.code, 0, "{st:?}");
    let v: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(v["schema_version"], 2);
    assert_eq!(v["counts"]["skipped"], 2, "{v}");
}

/// `--replan` refuses to send an added op after an op of its room that the manifest puts
/// after it and that is already done (it would undo the manifest's intent).
#[test]
fn replan_refuses_an_added_op_that_would_run_after_a_later_one() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, config) = freeze_job(dir.path(), "freeze.csv", 3);
    let sb = Sandbox::start(config);
    let first = exec(run_cmd(&sb.url(), &manifest, &["--action", "freeze"]));
    assert_eq!(first.code, 0, "{first:?}");
    let csv = dir.path().join("freeze.csv");
    write_csv_manifest(
        &csv,
        &[
            Op::unfreeze("r-0"),
            Op::freeze("r-0"),
            Op::freeze("r-1"),
            Op::freeze("r-2"),
        ],
    );
    let r = exec(run_cmd(&sb.url(), &csv, &["--replan"]));
    assert_eq!(r.code, 2, "{r:?}");
    let m = csv.display();
    assert!(
        r.stderr.contains(&format!(
            "--replan cannot keep the manifest's order: unfreeze room \"r-0\" ({m}:2) comes \
             before freeze room \"r-0\" ({m}:3), which journal"
        )) && r.stderr.contains("records as done"),
        "{}",
        r.stderr
    );
    assert_eq!(sb.requests_total(), 3);
}

// ---------------------------------------------------------------------------------------
// Case 7: faults never strand a journal.

/// A tmpfs mounted for one test, unmounted when dropped (also when the test fails).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs with `options` at `dir`; `None` (the test is skipped, with a message)
    /// where that cannot be done (not root, no mount).
    fn mount(dir: &Path, options: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .output();
        match st {
            Ok(o) if o.status.success() => Some(Tmpfs {
                dir: dir.to_path_buf(),
            }),
            other => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs at {} (needs root): {other:?}",
                    dir.display()
                );
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// Fills the file system of `dir` with a file, then gives `leave` bytes back; returns the
/// file, whose removal frees the space.
fn fill_leaving(dir: &Path, leave: u64) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0xA5u8; 64 * 1024];
    loop {
        match f.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
            Err(e) => panic!("filling {}: {e}", dir.display()),
        }
    }
    let len = f.metadata().unwrap().len();
    f.set_len(len.saturating_sub(leave)).unwrap();
    path
}

/// The journal's main file is shorter than its header says (a checkpoint cut short).
fn header_ahead(journal: &Path) -> bool {
    let b = std::fs::read(journal).unwrap();
    let page = u64::from(u16::from_be_bytes([b[16], b[17]]));
    let pages = u64::from(u32::from_be_bytes([b[28], b[29], b[30], b[31]]));
    (b.len() as u64) < page * pages
}

/// The journal's file system fills during a run: the run stops (exit 3) saying so; the
/// journal is readable as it is; once space is freed the job resumes and completes, and no
/// op recorded done is sent again.
#[test]
fn a_full_disk_stops_the_run_and_the_job_resumes_once_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mnt) = Tmpfs::mount(&dir.path().join("mnt"), "size=16m") else {
        return;
    };
    let (manifest, config) = freeze_job(dir.path(), "freeze.csv", 10_000);
    let sb = Sandbox::start(config);
    let journal = mnt.dir.join("job.journal");
    let filler = fill_leaving(&mnt.dir, 800 * 1024);
    let args = ["--action", "freeze", "--journal", s(&journal)];

    let full = exec(run_cmd(&sb.url(), &manifest, &args));
    assert_eq!(full.code, 3, "{full:?}");
    assert!(
        full.stderr.contains(
            "the disk holding the journal is full (free space there before running again"
        ),
        "{}",
        full.stderr
    );
    eprintln!(
        "main file behind its header after the full disk: {}",
        header_ahead(&journal)
    );
    // Readable as it is (no "damaged"), every committed outcome in it.
    let st = exec(imkit(&["status", s(&journal)]));
    assert_eq!(st.code, 0, "{st:?}");
    let done: Vec<Op> = journal_rows(&journal)
        .into_iter()
        .filter(|r| r.state == OpState::Done)
        .map(|r| r.op)
        .collect();
    assert!(!done.is_empty() && done.len() < 10_000, "{}", done.len());

    std::fs::remove_file(&filler).unwrap();
    let resumed = exec(run_cmd(&sb.url(), &manifest, &args));
    assert_eq!(resumed.code, 0, "{resumed:?}");
    for op in &done {
        assert_eq!(sb.applied_op(op), 1, "{op}, recorded done, was sent again");
    }
    let rows = journal_rows(&journal);
    assert_eq!(rows.len(), 10_000);
    assert!(rows.iter().all(|r| r.state == OpState::Done));
    drop(mnt);
}

/// A main file shorter than its header says, with no WAL to hold the missing pages, is
/// still refused as truncated (and left as it is).
#[test]
fn a_truncated_journal_without_its_pages_in_a_wal_is_still_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, config) = freeze_job(dir.path(), "freeze.csv", 300);
    let sb = Sandbox::start(config);
    assert_eq!(
        exec(run_cmd(&sb.url(), &manifest, &["--action", "freeze"])).code,
        0
    );
    let journal = journal_of(&manifest);
    let len = std::fs::metadata(&journal).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&journal)
        .unwrap();
    f.set_len(len - 8192).unwrap();
    drop(f);
    assert!(header_ahead(&journal));
    let st = exec(imkit(&["status", s(&journal)]));
    assert_eq!(st.code, 2, "{st:?}");
    assert!(
        st.stderr.contains("damaged") && st.stderr.contains("the file is truncated"),
        "{}",
        st.stderr
    );
}

/// A journal directory that does not exist yet is created (0700), the journal in it 0600.
#[test]
fn a_missing_journal_directory_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, config) = freeze_job(dir.path(), "freeze.csv", 3);
    let sb = Sandbox::start(config);
    let journal = dir.path().join("journals/2026/night.journal");
    let r = exec(run_cmd(
        &sb.url(),
        &manifest,
        &["--action", "freeze", "--journal", s(&journal)],
    ));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(sb.requests_total(), 3);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.path().join("journals")), 0o700);
    assert_eq!(mode(&dir.path().join("journals/2026")), 0o700);
    assert_eq!(mode(&journal), 0o600);
}

/// A journal on a read-only file system, or in a directory this user cannot write: refused
/// (exit 2) before anything is sent, naming the path and what to do.
#[test]
fn an_unwritable_place_for_the_journal_is_refused_before_anything_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, config) = freeze_job(dir.path(), "freeze.csv", 3);
    let sb = Sandbox::start(config);
    let refused = |journal: &Path, why: &str| {
        let r = exec(run_cmd(
            &sb.url(),
            &manifest,
            &["--action", "freeze", "--journal", s(journal)],
        ));
        assert_eq!(r.code, 2, "{r:?}");
        let parent = journal.parent().unwrap().display();
        for want in [
            format!("cannot write the journal {}: {why}", journal.display()),
            "Nothing was sent".into(),
            format!("give another path with --journal PATH, or make {parent} writable"),
        ] {
            assert!(r.stderr.contains(&want), "{want}\n{}", r.stderr);
        }
        assert_eq!(sb.requests_total(), 0);
    };
    if let Some(ro) = Tmpfs::mount(&dir.path().join("ro"), "size=1m,ro") {
        refused(&ro.dir.join("job.journal"), "Read-only file system");
    }
    // Permissions do not stop root: that half needs another user.
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o500)).unwrap();
    if std::fs::write(locked.join("probe"), b"").is_ok() {
        eprintln!("SKIPPED: an unwritable directory cannot be tested as root");
    } else {
        refused(&locked.join("job.journal"), "Permission denied");
    }
}

/// `status`, `report` and `revert` given a manifest (CSV or YAML) or another text file say
/// what it is and where the journal is, not "damaged".
#[test]
fn a_manifest_given_for_a_journal_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, config) = freeze_job(dir.path(), "freeze.csv", 2);
    let sb = Sandbox::start(config);
    assert_eq!(
        exec(run_cmd(&sb.url(), &manifest, &["--action", "freeze"])).code,
        0
    );
    let yaml = write(
        dir.path(),
        "later.yaml",
        "version: 1\nname: later\nops:\n  - action: freeze\n    rooms: [r-0]\n",
    );
    let notes = write(
        dir.path(),
        "notes.journal",
        "remember the maintenance window\n",
    );
    let out = dir.path().join("undo.csv");
    for cmd in [
        vec!["status"],
        vec!["report"],
        vec!["revert", "-o", s(&out)],
    ] {
        let run = |file: &Path| {
            let mut args = cmd.clone();
            args.insert(1, s(file));
            let r = exec(imkit(&args));
            assert_eq!(r.code, 2, "{args:?}: {r:?}");
            assert!(!r.stderr.contains("damaged"), "{args:?}: {}", r.stderr);
            r.stderr
        };
        let e = run(&manifest);
        let want = format!(
            "{} looks like a manifest, not a journal; the journal of this manifest is {}",
            manifest.display(),
            journal_of(&manifest).display()
        );
        assert!(e.contains(&want), "{e}");
        let e = run(&yaml);
        assert!(
            e.contains("looks like a manifest, not a journal")
                && e.contains("there is none there yet"),
            "{e}"
        );
        let e = run(&notes);
        assert!(e.contains("is a text file, not a journal"), "{e}");
    }
    assert!(!out.exists());
}

/// What `--replan` records, through the library: an op done or failed that the manifest no
/// longer has stays as it is but leaves the plan (so `--retry-failed` does not send it), a
/// pending one is skipped, the new ops are pending after the rest; the journal moves to
/// schema version 2 and then resumes with that manifest as it is.
#[tokio::test]
async fn replan_keeps_final_ops_and_retry_failed_leaves_removed_ones_alone() {
    use imkit_batch::Exit;
    use imkit_batch::journal::{JobMeta, JournalError, OpRecord, OpenOptions};
    use imkit_batch::manifest::Manifest;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.journal");
    let ops = |rooms: &[&str]| rooms.iter().map(|r| Op::freeze(*r)).collect::<Vec<_>>();
    let m1 = Manifest::from_ops(dir.path().join("job.csv"), ops(&["a", "b", "c", "e"]));
    let meta = |m: &Manifest| JobMeta {
        manifest_path: m.path.clone(),
        checksum: m.checksum.clone(),
        name: None,
        settings: serde_json::json!({}),
        target: Some("https://api.example".into()),
    };
    let open = |m: &Manifest, opts: OpenOptions| Journal::open_for_run(&path, m, &meta(m), opts);
    let w = open(&m1, OpenOptions::default())
        .unwrap()
        .start_writer()
        .unwrap();
    let outcome = |seq, state| OpRecord {
        seq,
        state: Some(state),
        attempts: 1,
        http_status: Some(if state == OpState::Done { 200 } else { 404 }),
        ..Default::default()
    };
    w.record(outcome(0, OpState::Done)).unwrap();
    w.record(outcome(1, OpState::Failed)).unwrap();
    w.finish(Exit::Stopped).await.unwrap();

    // b (failed) and e (pending) removed, d added.
    let m2 = Manifest::from_ops(dir.path().join("job.csv"), ops(&["a", "c", "d"]));
    let err = open(&m2, OpenOptions::default()).err().unwrap();
    assert!(
        matches!(
            err,
            JournalError::ManifestChanged {
                added: 1,
                removed: 2,
                changed: 0,
                ..
            }
        ),
        "{err}"
    );
    let replan = OpenOptions {
        replan: true,
        ..Default::default()
    };
    let j = open(&m2, replan).unwrap();
    let pending: Vec<String> = j
        .pending()
        .unwrap()
        .iter()
        .map(|o| o.op.room.to_string())
        .collect();
    assert_eq!(pending, ["c", "d"]);
    assert_eq!(j.job().unwrap().schema_version, 2);
    drop(j);
    let retry = OpenOptions {
        retry_failed: true,
        ..Default::default()
    };
    let j = open(&m2, retry).unwrap();
    let c = j.counts().unwrap();
    assert_eq!(
        (c.done, c.failed, c.skipped, c.pending),
        (1, 1, 1, 2),
        "{c:?}"
    );
    assert_eq!(j.job().unwrap().total_ops, 5);
    drop(j);
    let rows = journal_rows(&path);
    let e = rows.iter().find(|r| &*r.op.room == "e").unwrap();
    assert_eq!(e.state, OpState::Skipped);
    // The old manifest is now a change of its own.
    assert!(matches!(
        open(&m1, OpenOptions::default()),
        Err(JournalError::ManifestChanged { .. })
    ));
}

// ---------------------------------------------------------------------------------------
// Case 3: settings stick.

/// A job started with `--action freeze --snapshot --concurrency 2` and stopped part way
/// resumes with a bare `run MANIFEST`: the action need not be retyped, every room is still
/// read before its change (so `revert` can restore all of them), the pace is the one it was
/// started with, and the run says what it kept. Another `--action` is refused as another
/// job; `--no-snapshot` is warned about.
#[test]
fn a_resumed_job_keeps_the_settings_it_was_started_with() {
    const ROOMS: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let (manifest, mut config) = freeze_job(dir.path(), "rooms.csv", ROOMS);
    config.latency = Duration::from_millis(20);
    let sb = Sandbox::start(config);
    let first = exec(run_cmd(
        &sb.url(),
        &manifest,
        &[
            "--action",
            "freeze",
            "--snapshot",
            "--concurrency",
            "2",
            "--max-duration",
            "300ms",
        ],
    ));
    assert_eq!(first.code, 4, "{first:?}");
    let done_first = sb.stats().applied_total;
    assert!(
        done_first > 0 && (done_first as usize) < ROOMS,
        "{done_first}"
    );

    let refused = exec(run_cmd(&sb.url(), &manifest, &["--action", "unfreeze"]));
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(
        refused.stderr.contains(
            "records a job started with --action freeze; --action unfreeze would be another job"
        ),
        "{}",
        refused.stderr
    );
    assert_eq!(
        sb.stats().applied_total,
        done_first,
        "a refused run sent something"
    );

    let resumed = exec(run_cmd(&sb.url(), &manifest, &[]));
    assert_eq!(resumed.code, 0, "{resumed:?}");
    assert!(
        resumed.stderr.contains(
            "resuming as the job was started: --action freeze, --snapshot, --concurrency 2"
        ),
        "{}",
        resumed.stderr
    );
    assert_eq!(sb.stats().applied_total, ROOMS as u64);
    let snaps = Journal::open_read_only(&journal_of(&manifest))
        .unwrap()
        .snapshots()
        .unwrap();
    assert_eq!(snaps.len(), ROOMS, "every room read before its change");
}

/// `--no-snapshot` on the resume of a job started with `--snapshot` warns that `revert`
/// will not restore what changes from then on; the run goes on.
#[test]
fn turning_the_snapshot_off_on_a_resume_is_warned_about() {
    const ROOMS: usize = 30;
    let dir = tempfile::tempdir().unwrap();
    let (manifest, mut config) = freeze_job(dir.path(), "rooms.csv", ROOMS);
    config.latency = Duration::from_millis(20);
    let sb = Sandbox::start(config);
    let first = exec(run_cmd(
        &sb.url(),
        &manifest,
        &[
            "--action",
            "freeze",
            "--snapshot",
            "--concurrency",
            "1",
            "--max-duration",
            "200ms",
        ],
    ));
    assert_eq!(first.code, 4, "{first:?}");
    let off = exec(run_cmd(&sb.url(), &manifest, &["--no-snapshot"]));
    assert_eq!(off.code, 0, "{off:?}");
    assert!(
        off.stderr.contains(
            "this job was started with --snapshot; --no-snapshot turns it off for this run"
        ),
        "{}",
        off.stderr
    );
    let snaps = Journal::open_read_only(&journal_of(&manifest))
        .unwrap()
        .snapshots()
        .unwrap();
    assert!(
        snaps.len() < ROOMS,
        "no room read after the flag: {}",
        snaps.len()
    );
}
