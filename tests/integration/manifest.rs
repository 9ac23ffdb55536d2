//! Manifests end to end: the bad-manifest corpus (each file with the message it must
//! produce), the good fixtures, `validate` and `plan` through the binary, and property tests
//! (random and mutated input never panics; CSV and YAML forms of one job give the same ops).

use std::path::{Path, PathBuf};

use imkit_batch::manifest::lean::{Summary, summarize};
use imkit_batch::manifest::{Format, LoadOptions, Manifest, ManifestErrors, load};
use imkit_batch::op::{Action, Op, RoomFields};
use predicates::prelude::*;
use proptest::prelude::*;

use crate::util;

fn manifests() -> PathBuf {
    util::repo_root().join("tests/manifests")
}

fn load_at(path: &Path, action: Option<Action>) -> Result<Manifest, ManifestErrors> {
    load(path, &LoadOptions { action })
}

/// Every manifest in `tests/manifests/bad/` must fail with every line of its `.expected`
/// file in the error text (a line `action=ACTION` passes `--action` instead), and every
/// error must name a line (> 0) unless the `.expected` file has a line `whole-file`: the
/// case is about the file as a whole (a flag that does not apply to it, say).
#[test]
fn bad_manifest_corpus() {
    let dir = manifests().join("bad");
    let mut checked = 0;
    let mut failures = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("csv" | "yaml" | "yml")
                )
        })
        .collect();
    entries.sort();
    for path in entries {
        let exp_path = PathBuf::from(format!("{}.expected", path.display()));
        let expected = std::fs::read_to_string(&exp_path)
            .unwrap_or_else(|_| panic!("{} has no .expected file", path.display()));
        let mut action = None;
        let mut whole_file = false;
        let mut wanted = Vec::new();
        for line in expected.lines().filter(|l| !l.trim().is_empty()) {
            match line.strip_prefix("action=") {
                Some(a) => action = Some(Action::parse(a.trim()).expect("valid action")),
                None if line.trim() == "whole-file" => whole_file = true,
                None => wanted.push(line),
            }
        }
        assert!(!wanted.is_empty(), "{} expects nothing", exp_path.display());
        match load_at(&path, action) {
            Ok(_) => failures.push(format!("{}: loaded without error", path.display())),
            Err(e) => {
                let text = e.to_string();
                for w in wanted {
                    if !text.contains(w) {
                        failures.push(format!("{}: expected {w:?} in:\n{text}", path.display()));
                    }
                }
                // Every error names a file and, unless the whole file is at fault, a line.
                for err in &e.errors {
                    assert!(!err.file.as_os_str().is_empty());
                    if !whole_file && err.line == 0 {
                        failures.push(format!(
                            "{}: error names no line (add `whole-file` to its .expected if \
                             that is right): {err}",
                            path.display()
                        ));
                    }
                }
            }
        }
        checked += 1;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(checked >= 30, "only {checked} bad manifests");
}

#[test]
fn spec_examples_load() {
    let csv = load_at(&manifests().join("good/spec-example.csv"), None).unwrap();
    assert_eq!(csv.format, Format::Csv);
    assert_eq!(csv.ops.len(), 3);
    assert!(csv.warnings.is_empty(), "{:?}", csv.warnings);

    let yaml = load_at(&manifests().join("good/spec-example.yaml"), None).unwrap();
    assert_eq!(yaml.format, Format::Yaml);
    assert_eq!(yaml.name.as_deref(), Some("maintenance-2026-11-22"));
    assert_eq!(yaml.ops.len(), 7);
    assert_eq!(yaml.sources.len(), 2);
    let w = yaml.window.clone().unwrap();
    let start = w.resolve(jiff::Timestamp::now()).unwrap().start;
    assert_eq!(start.to_string(), "2026-11-22T14:00:00Z");
    assert_eq!(yaml.settings.concurrency, Some(8));
    assert_eq!(yaml.counts()[0], (Action::Freeze, 4));
    assert_eq!(yaml.distinct_rooms(), 5);
    assert_eq!(yaml.distinct_clients(), 2);
    // The op from the rooms_file points at that file's line.
    let last = yaml.ops.last().unwrap();
    assert_eq!(&*last.op.room, "lobby-4");
    assert!(yaml.describe(last.source).ends_with("more-rooms.csv:3"));
}

#[test]
fn bom_crlf_comments_and_quotes() {
    let m = load_at(&manifests().join("good/bom-crlf.csv"), Some(Action::Freeze)).unwrap();
    let got: Vec<(&str, u32)> = m.ops.iter().map(|p| (&*p.op.room, p.source.line)).collect();
    assert_eq!(got, vec![("lobby-1", 4), ("lobby,2", 5)]);
}

#[test]
fn duplicates_and_conflicts_warn() {
    let m = load_at(&manifests().join("good/duplicates-and-conflicts.csv"), None).unwrap();
    assert_eq!(m.ops.len(), 7);
    let w = m.warnings.join("\n");
    assert!(
        w.contains("line 4 repeats line 2: freeze room \"lobby-1\""),
        "{w}"
    );
    assert!(
        w.contains("room \"lobby-2\" is both frozen and unfrozen"),
        "{w}"
    );
    assert!(
        w.contains("client \"u-1\" in room \"lobby-1\" is both muted and unmuted"),
        "{w}"
    );
    assert!(
        w.contains("room \"help\": several updates set `name`"),
        "{w}"
    );
}

/// `rooms: [a, a]` used to warn "line 3 repeats line 3" (every inline op carries its op's
/// line): the warning names each id's own line and column, and the op's line.
#[test]
fn inline_yaml_duplicates_name_their_own_place() {
    let dir = tempfile::tempdir().unwrap();
    let y = dir.path().join("job.yaml");
    std::fs::write(
        &y,
        "version: 1\nops:\n  - action: freeze\n    rooms: [a, a]\n  - action: freeze\n    \
         rooms_file: r.csv\n  - action: freeze\n    rooms_file: r.csv\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("r.csv"), "room\nb\n").unwrap();
    let m = load_at(&y, None).unwrap();
    let rooms: Vec<&str> = m.ops.iter().map(|p| &*p.op.room).collect();
    assert_eq!(rooms, vec!["a", "b"]);
    let d = dir.path().display().to_string();
    let w: Vec<String> = m.warnings.iter().map(|w| w.replace(&d, "D")).collect();
    assert_eq!(
        w,
        vec![
            "D/job.yaml:4:16 repeats D/job.yaml:4:13: room \"a\" is listed twice in the op at \
             D/job.yaml:3 (runs once)",
            "D/r.csv:2 gives the same op twice: freeze room \"b\" (runs once)",
        ]
    );
    assert!(w.iter().all(|w| !w.contains("line 3 repeats line 3")));
}

/// The checksum covers the manifest, its included files and `--action`.
#[test]
fn checksum_covers_includes_and_action() {
    let dir = tempfile::tempdir().unwrap();
    let y = dir.path().join("job.yaml");
    let r = dir.path().join("rooms.csv");
    std::fs::write(
        &y,
        "version: 1\nops:\n  - action: freeze\n    rooms_file: rooms.csv\n",
    )
    .unwrap();
    std::fs::write(&r, "room\na\n").unwrap();
    let c1 = load_at(&y, None).unwrap().checksum;
    std::fs::write(&r, "room\nb\n").unwrap();
    let c2 = load_at(&y, None).unwrap().checksum;
    assert_ne!(c1, c2);
    assert_eq!(c2, load_at(&y, None).unwrap().checksum);
    assert_eq!(c1.len(), 64);

    let c = dir.path().join("rooms-only.csv");
    std::fs::write(&c, "room\na\n").unwrap();
    let f = load_at(&c, Some(Action::Freeze)).unwrap().checksum;
    let u = load_at(&c, Some(Action::Unfreeze)).unwrap().checksum;
    assert_ne!(f, u);
}

#[test]
fn example_jobs_validate() {
    let dir = util::repo_root().join("jobs/examples");
    let mut n = 0;
    for f in [
        "maintenance-freeze.yaml",
        "night-mute.csv",
        "morning-unmute.csv",
        "room-update.csv",
        "ban-sweep.yaml",
    ] {
        let m = load_at(&dir.join(f), None).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(m.ops.len() >= 10, "{f}: {} ops", m.ops.len());
        assert!(m.warnings.is_empty(), "{f}: {:?}", m.warnings);
        n += 1;
    }
    assert_eq!(n, 5);
}

#[test]
fn validate_cli_valid_and_json() {
    let ex = util::repo_root().join("jobs/examples/night-mute.csv");
    util::bin()
        .arg("validate")
        .arg(&ex)
        .assert()
        .code(0)
        .stdout(predicate::str::contains("valid: 16 ops"))
        .stdout(predicate::str::contains("distinct clients: 14"));
    let out = util::bin()
        .args(["validate", "--json"])
        .arg(&ex)
        .assert()
        .code(0)
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["ops"], 16);
    assert_eq!(v["actions"]["mute"], 16);
    assert_eq!(v["rooms"], 4);
    assert_eq!(v["clients"], 14);
    assert_eq!(v["warnings"], serde_json::json!([]));
}

#[test]
fn validate_cli_invalid_exits_2_with_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.csv");
    std::fs::write(&p, "action,room\nfrz,a\nfreeze,\nfreeze,ok\n").unwrap();
    util::bin()
        .arg("validate")
        .arg(&p)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "m.csv:2:1: unknown action \"frz\"",
        ))
        .stderr(predicate::str::contains("m.csv:3:8: room: id is empty"))
        .stderr(predicate::str::contains("2 errors found"))
        .stdout(predicate::str::is_empty());
    // No journal is ever written by validate.
    assert!(!dir.path().join("m.csv.journal").exists());
    let out = util::bin()
        .args(["validate", "--json"])
        .arg(&p)
        .assert()
        .code(2)
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["error_count"], 2);
    assert_eq!(v["errors"][0]["line"], 2);
    assert_eq!(v["errors"][0]["column"], 1);
    assert_eq!(v["errors"][1]["column"], 8);
}

/// 5,000 duplicate rows: `validate` says "warnings (5000)", lists the first 100 and one
/// "... and 4900 more warnings" line; `--json` carries the same total.
#[test]
fn validate_cli_counts_every_warning() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("dups.csv");
    let mut text = String::from("action,room\n");
    for _ in 0..5_001 {
        text.push_str("freeze,lobby-1\n");
    }
    std::fs::write(&p, text).unwrap();
    let m = load_at(&p, None).unwrap();
    assert_eq!(m.ops.len(), 1);
    assert_eq!(m.warning_count(), 5_000);
    util::bin()
        .arg("validate")
        .arg(&p)
        .assert()
        .code(0)
        .stdout(predicate::str::contains(
            "warnings (5000):\n  line 3 repeats line 2",
        ))
        .stdout(predicate::str::contains("\n  ... and 4900 more warnings\n"));
    let out = util::bin()
        .args(["validate", "--json"])
        .arg(&p)
        .assert()
        .code(0)
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["warning_count"], 5000);
    assert_eq!(v["warnings"].as_array().unwrap().len(), 101);
}

#[test]
fn validate_cli_action_flag() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("rooms.csv");
    std::fs::write(&p, "room\na\nb\n").unwrap();
    util::bin()
        .arg("validate")
        .arg(&p)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("pass --action"));
    util::bin()
        .args(["validate", "--action", "freeze"])
        .arg(&p)
        .assert()
        .code(0)
        .stdout(predicate::str::contains("freeze    2"));
}

#[test]
fn plan_cli_lists_requests_and_sends_nothing() {
    let ex = util::repo_root().join("jobs/examples/room-update.csv");
    util::bin()
        .args(["plan", "--show", "2"])
        .arg(&ex)
        .assert()
        .code(0)
        .stdout(predicate::str::contains("to send: 10 requests"))
        .stdout(predicate::str::contains(
            "PUT /rooms/support-billing {\"botMode\":true,",
        ))
        .stdout(predicate::str::contains("... and 8 more"))
        .stdout(predicate::str::contains("nothing was sent"));
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.yaml");
    std::fs::write(&p, "version: 3\nops: []\n").unwrap();
    util::bin()
        .arg("plan")
        .arg(&p)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("bad.yaml:1:10: version 3"));
}

/// YAML settings `run` would refuse are refused by `validate`, at their line:column, and
/// `run` reports the same places (it used to exit 2 with "invalid configuration" lines
/// naming no file).
#[test]
fn out_of_range_settings_fail_validate_and_run_alike() {
    let dir = tempfile::tempdir().unwrap();
    let p = util::write(
        dir.path(),
        "job.yaml",
        "version: 1\nsettings:\n  rate: 1000000/s\n  concurrency: 5000\n  max_attempts: 500\n  \
         timeout: 5h\nops:\n  - action: freeze\n    room: a\n",
    );
    let places = [
        "job.yaml:3:9: settings.rate 1000000/s is above 100000 requests per second",
        "job.yaml:4:16: settings.concurrency must be a whole number between 1 and 1024, not 5000",
        "job.yaml:5:17: settings.max_attempts must be a whole number between 1 and 100, not 500",
        "job.yaml:6:12: settings.timeout must be between 1ms and 1h, not 5h",
    ];
    let v = util::exec(util::imkit(&["validate", p.to_str().unwrap()]));
    assert_eq!(v.code, 2, "{v:?}");
    let r = util::exec(util::imkit(&[
        "run",
        p.to_str().unwrap(),
        "--sandbox",
        "--progress",
        "never",
    ]));
    assert_eq!(r.code, 2, "{r:?}");
    for want in places {
        assert!(v.stderr.contains(want), "validate: {want}\n{}", v.stderr);
        assert!(r.stderr.contains(want), "run: {want}\n{}", r.stderr);
    }
    assert!(!r.stderr.contains("invalid configuration"), "{}", r.stderr);
    assert!(!util::journal_of(&p).exists());
    // The bounds themselves are accepted by both.
    let ok = util::write(
        dir.path(),
        "edge.yaml",
        "version: 1\nsettings:\n  rate: 100000/s\n  concurrency: 1024\n  max_attempts: 100\n  \
         timeout: 1h\nops:\n  - action: freeze\n    room: a\n",
    );
    let v = util::exec(util::imkit(&["validate", ok.to_str().unwrap()]));
    assert_eq!(v.code, 0, "{v:?}");
}

/// An op with `rooms: []`, `clients: []` or a rooms_file with only its header expands to
/// nothing: each is a warning naming its line, not silence.
#[test]
fn empty_expansions_warn_per_op() {
    let dir = tempfile::tempdir().unwrap();
    util::write(dir.path(), "none.csv", "room\n");
    let p = util::write(
        dir.path(),
        "job.yaml",
        "version: 1\nops:\n  - action: freeze\n    rooms: []\n  - action: mute\n    rooms: \
         [a]\n    clients: []\n  - action: unfreeze\n    rooms_file: none.csv\n  - action: \
         freeze\n    room: b\n",
    );
    let m = load_at(&p, None).unwrap();
    assert_eq!(m.ops.len(), 1);
    let d = dir.path().display().to_string();
    let w: Vec<String> = m.warnings.iter().map(|w| w.replace(&d, "D")).collect();
    assert_eq!(
        w,
        vec![
            "D/job.yaml:3: this op expands to no ops (it names no room: its rooms list is \
             empty): nothing is sent for it",
            "D/job.yaml:5: this op expands to no ops (it names no client: its clients list is \
             empty): nothing is sent for it",
            "D/job.yaml:8: this op expands to no ops (it names no room: none.csv has no rows \
             below its header): nothing is sent for it",
        ]
    );
    // Without included files, places are plain line numbers.
    let p = util::write(
        dir.path(),
        "inline.yaml",
        "version: 1\nops:\n  - action: freeze\n    rooms: []\n",
    );
    let m = load_at(&p, None).unwrap();
    assert_eq!(
        m.warnings[0],
        "line 3: this op expands to no ops (it names no room: its rooms list is empty): \
         nothing is sent for it"
    );
    assert!(m.warnings[1].ends_with("the manifest has no ops: nothing to do"));
}

fn plan_of(p: &Path, extra: &[&str]) -> util::Ran {
    let mut args = vec!["plan", p.to_str().unwrap()];
    args.extend_from_slice(extra);
    util::exec(util::imkit(&args))
}

/// `plan` compares the YAML window with the current time, as `run` does: a window long
/// past sends nothing (exit 4 for run), one far in the future makes run wait.
#[test]
fn plan_cli_compares_the_window_with_now() {
    let dir = tempfile::tempdir().unwrap();
    let job = |name: &str, start: &str, end: &str| {
        util::write(
            dir.path(),
            name,
            &format!(
                "version: 1\nwindow:\n  start: {start}\n  end: {end}\nops:\n  - action: \
                 freeze\n    rooms: [a, b]\n"
            ),
        )
    };
    let past = job("past.yaml", "2020-01-01T22:00:00Z", "2020-01-02T02:00:00Z");
    let r = plan_of(&past, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .contains("it closed at 2020-01-02T02:00:00Z: `run` would send nothing and exit 4"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("to send: 0 requests"), "{}", r.stdout);
    assert!(!r.stdout.contains("PUT /rooms"), "{}", r.stdout);
    // And run does what plan said.
    let run = util::exec(util::imkit(&[
        "run",
        past.to_str().unwrap(),
        "--sandbox",
        "--progress",
        "never",
    ]));
    assert_eq!(run.code, 4, "{run:?}");

    let future = job(
        "future.yaml",
        "2099-01-01T22:00:00Z",
        "2099-01-02T02:00:00Z",
    );
    let r = plan_of(&future, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .contains("`run` would wait until 2099-01-01T22:00:00Z before sending anything"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("to send: 2 requests"), "{}", r.stdout);

    let open = job("open.yaml", "2020-01-01T00:00:00Z", "2099-01-01T00:00:00Z");
    let r = plan_of(&open, &[]);
    assert!(r.stdout.contains("; open now (closes in "), "{}", r.stdout);
}

/// With snapshot on (the manifest's settings or --snapshot), plan lists the GET reads run
/// makes, one per room before its first change; --no-snapshot turns a setting off.
#[test]
fn plan_cli_lists_snapshot_reads() {
    let dir = tempfile::tempdir().unwrap();
    let with_setting = util::write(
        dir.path(),
        "snap.yaml",
        "version: 1\nsettings:\n  snapshot: true\nops:\n  - action: freeze\n    rooms: [a, \
         b]\n  - action: unfreeze\n    room: a\n  - action: mute\n    client: u\n    room: \
         a\n",
    );
    let r = plan_of(&with_setting, &[]);
    assert!(r.stdout.contains("to send: 6 requests"), "{}", r.stdout);
    assert!(
        r.stdout.contains("  snapshot  2 (GET /rooms/{id}"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("  GET /rooms/a  (snapshot, before "),
        "{}",
        r.stdout
    );
    let r = plan_of(&with_setting, &["--no-snapshot"]);
    assert!(r.stdout.contains("to send: 4 requests"), "{}", r.stdout);
    assert!(!r.stdout.contains("GET /rooms"), "{}", r.stdout);
    assert!(r.stdout.contains("snapshot: off"), "{}", r.stdout);
    let plain = util::write(dir.path(), "plain.csv", "action,room\nfreeze,a\nfreeze,b\n");
    let r = plan_of(&plain, &[]);
    assert!(!r.stdout.contains("GET /rooms"), "{}", r.stdout);
    let r = plan_of(&plain, &["--snapshot"]);
    assert!(r.stdout.contains("to send: 4 requests"), "{}", r.stdout);
    let r = plan_of(&plain, &["--snapshot", "--no-snapshot"]);
    assert_eq!(r.code, 2, "{r:?}");
}

/// After a run completes, plan says the job is complete and what a re-run exits with.
#[test]
fn plan_cli_of_a_finished_job() {
    let dir = tempfile::tempdir().unwrap();
    let p = util::write(dir.path(), "job.csv", "action,room\nfreeze,a\nfreeze,b\n");
    let run = util::exec(util::imkit(&[
        "run",
        p.to_str().unwrap(),
        "--sandbox",
        "--progress",
        "never",
        "--rate",
        "20000/s",
    ]));
    assert_eq!(run.code, 0, "{run:?}");
    // The rehearsal's own journal (a real run would start a new one: `plan` says so without
    // --journal).
    let fresh = plan_of(&p, &[]);
    assert!(
        fresh.stdout.contains("journal: none yet"),
        "{}",
        fresh.stdout
    );
    let rehearsal = dir.path().join("job.csv.sandbox.journal");
    let r = plan_of(&p, &["--journal", rehearsal.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .contains("the job is complete (2 done, 0 failed, 0 skipped)"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("`run` would send nothing and exit 0 (every op done)"),
        "{}",
        r.stdout
    );
    // And a re-run does exit 0.
    let again = util::exec(util::imkit(&[
        "run",
        p.to_str().unwrap(),
        "--sandbox",
        "--progress",
        "never",
    ]));
    assert_eq!(again.code, 0, "{again:?}");
}

// ---------------------------------------------------------------------------------------
// Property tests.

fn load_bytes(dir: &Path, name: &str, bytes: &[u8], action: Option<Action>) {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    // Must return, Ok or Err, never panic.
    let _ = load_at(&p, action);
}

const SEED_CSV: &str = "action,room,client,name,roomTags,opening,botMode\nfreeze,lobby-1,,,,,\n\
mute,lobby-1,u-1,,,,\nupdate,help,,Help,a;b,1,true\n";

fn seed_yaml() -> String {
    std::fs::read_to_string(manifests().join("good/spec-example.yaml")).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let dir = tempfile::tempdir().unwrap();
        load_bytes(dir.path(), "r.csv", &bytes, None);
        load_bytes(dir.path(), "r2.csv", &bytes, Some(Action::Mute));
        load_bytes(dir.path(), "r.yaml", &bytes, None);
    }

    #[test]
    fn mutated_manifests_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<u8>()), 1..8),
        yaml in any::<bool>(),
    ) {
        let mut bytes = if yaml { seed_yaml().into_bytes() } else { SEED_CSV.as_bytes().to_vec() };
        for (at, kind, b) in edits {
            if bytes.is_empty() { break; }
            let i = at.index(bytes.len());
            // Bias the replacement bytes towards ones that matter to the formats.
            let b = b",;:#\"'\n\r -[]{}&*!|>\x00\xff"[b as usize % 21];
            match kind {
                0 => bytes[i] = b,
                1 => bytes.insert(i, b),
                _ => { bytes.remove(i); }
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        std::fs::write(dir.join("more-rooms.csv"), "room\nlobby-3\n").unwrap();
        load_bytes(dir, if yaml { "m.yaml" } else { "m.csv" }, &bytes, None);
    }

    /// `validate` keeps a CSV's ops in compact form (field values as hashes): it must say
    /// exactly what a full load says, duplicates and conflicts included. The rows are drawn
    /// from a few generated ops, so repeats, conflicts and repeated updates abound.
    #[test]
    fn validate_summary_equals_the_full_load(
        pool in prop_oneof![job_strategy(), small_job_strategy()],
        picks in proptest::collection::vec(any::<prop::sample::Index>(), 1..40),
        action_flag in any::<bool>(),
    ) {
        let job: Vec<JobOp> = picks.iter().map(|i| pool[i.index(pool.len())].clone()).collect();
        let (csv, _, _) = render_job(&job);
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("job.csv");
        std::fs::write(&c, &csv).unwrap();
        let full = load_at(&c, None).map(|m| Summary::of(&m));
        let lean = summarize(&c, &LoadOptions { action: None });
        prop_assert_eq!(lean, full, "CSV:\n{}", csv);
        // And with --action over a file without an action column (errors included).
        let action = if action_flag { Action::Freeze } else { Action::Update };
        let mut rooms_only = String::from("room,name\n");
        for op in &job {
            for r in &op.rooms {
                let name = op.fields.name.clone().unwrap_or_default();
                let mut w = csv::Writer::from_writer(Vec::new());
                w.write_record([r.as_str(), name.as_str()]).unwrap();
                rooms_only.push_str(&String::from_utf8(w.into_inner().unwrap()).unwrap());
            }
        }
        std::fs::write(&c, &rooms_only).unwrap();
        let full = load_at(&c, Some(action)).map(|m| Summary::of(&m));
        let lean = summarize(&c, &LoadOptions { action: Some(action) });
        prop_assert_eq!(lean, full, "CSV:\n{}", rooms_only);
    }

    #[test]
    fn csv_and_yaml_forms_expand_to_the_same_ops(job in job_strategy()) {
        let dir = tempfile::tempdir().unwrap();
        let (csv, yaml, files) = render_job(&job);
        for (name, text) in &files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let c = dir.path().join("job.csv");
        let y = dir.path().join("job.yaml");
        std::fs::write(&c, &csv).unwrap();
        std::fs::write(&y, &yaml).unwrap();
        let from_csv = load_at(&c, None).map_err(|e| format!("{e}\n{csv}"));
        let from_yaml = load_at(&y, None).map_err(|e| format!("{e}\n{yaml}"));
        let ops = |m: Manifest| m.ops.into_iter().map(|p| p.op).collect::<Vec<Op>>();
        let (a, b) = (ops(from_csv.unwrap()), ops(from_yaml.unwrap()));
        prop_assert_eq!(a, b, "YAML:\n{}", yaml);
    }
}

/// Ops on two rooms and two clients whose fields take two values each: repeated updates
/// of one room with other updates between them, the case where a repeat is dropped only if
/// no op in between set its fields to other values.
fn small_job_strategy() -> impl Strategy<Value = Vec<JobOp>> {
    let two = |a: &'static str, b: &'static str| {
        proptest::option::of(prop_oneof![Just(a.to_string()), Just(b.to_string())])
    };
    let fields = (
        (
            two("A", "B"),
            two("x", "y"),
            two("o-1", "o-2"),
            two("w", "v"),
        ),
        proptest::option::of(prop_oneof![
            Just(vec!["t".to_string()]),
            Just(vec!["t".to_string(), "u".to_string()]),
        ]),
        proptest::option::of(any::<bool>()),
        (proptest::option::of(0u8..2), proptest::option::of(0u8..2)),
    )
        .prop_filter_map(
            "update needs a field",
            |((name, description, owner, ext_params), tags, bot, (opening, status))| {
                let f = RoomFields {
                    name,
                    description,
                    owner,
                    ext_params,
                    room_tags: tags,
                    bot_mode: bot,
                    opening,
                    status,
                    ..RoomFields::default()
                };
                (!f.is_empty()).then_some(f)
            },
        );
    let op = (0usize..5, 0usize..2, 0usize..2, fields).prop_map(|(a, r, c, fields)| {
        let action = Action::ALL[a];
        JobOp {
            action,
            rooms: vec![format!("r{r}")],
            clients: if action.needs_client() {
                vec![format!("c{c}")]
            } else {
                vec![]
            },
            room_style: ListStyle::List,
            client_style: ListStyle::List,
            fields: if action == Action::Update {
                fields
            } else {
                RoomFields::default()
            },
        }
    });
    proptest::collection::vec(op, 1..8)
}

/// How a YAML op names its rooms (or clients): every key the format has for them.
#[derive(Debug, Clone, Copy)]
enum ListStyle {
    /// `rooms: [a, b]`
    List,
    /// `room: a` (and `rooms: [b, ...]` for the rest)
    One,
    /// `rooms_file: f.csv`
    File,
    /// `rooms: [a]` and `rooms_file: f.csv` for the rest
    ListAndFile,
}

/// One YAML op of a generated job.
#[derive(Debug, Clone)]
struct JobOp {
    action: Action,
    rooms: Vec<String>,
    clients: Vec<String>,
    room_style: ListStyle,
    client_style: ListStyle,
    fields: RoomFields,
}

fn id_strategy() -> impl Strategy<Value = String> {
    // Small alphabet so duplicates and conflicts happen; odd characters included. Ids with
    // edge spaces are errors in both formats (see `edge_space_ids_are_errors_in_both`).
    prop_oneof![
        "(lobby|room|u)-[0-3]",
        "[a-z0-9./?%#;, 房-]{1,6}"
            .prop_filter("valid ids", |s| { imkit_batch::op::validate_id(s).is_ok() }),
    ]
}

/// An id for a `;`-separated list cell (managers): no `;`.
fn list_id_strategy() -> impl Strategy<Value = String> {
    id_strategy().prop_filter("no ';' in a list item", |s| !s.contains(';'))
}

fn text_strategy() -> impl Strategy<Value = String> {
    // YAML keeps a text value's edge spaces while a CSV cell is trimmed (README, Manifests):
    // the forms agree only on values without them.
    "[A-Za-z0-9 ,;:\"'#&*·-]{1,12}".prop_filter("no edge spaces", |s| s.trim() == s)
}

fn style_strategy() -> impl Strategy<Value = ListStyle> {
    prop_oneof![
        Just(ListStyle::List),
        Just(ListStyle::One),
        Just(ListStyle::File),
        Just(ListStyle::ListAndFile),
    ]
}

fn fields_strategy() -> impl Strategy<Value = RoomFields> {
    let text = || proptest::option::of(text_strategy());
    let zero_one = || proptest::option::of(0u8..2);
    (
        (text(), text(), text(), text(), text()),
        proptest::option::of(proptest::collection::vec("[a-z]{1,5}", 1..3)),
        proptest::option::of(any::<bool>()),
        (zero_one(), zero_one()),
        proptest::option::of(id_strategy()),
        proptest::option::of(proptest::collection::vec(list_id_strategy(), 1..3)),
    )
        .prop_filter_map(
            "update needs a field",
            |(
                (name, cover, description, webhook, ext_params),
                tags,
                bot,
                (opening, status),
                owner,
                managers,
            )| {
                let f = RoomFields {
                    name,
                    cover,
                    description,
                    room_tags: tags,
                    webhook,
                    bot_mode: bot,
                    ext_params,
                    opening,
                    owner,
                    managers,
                    status,
                };
                (!f.is_empty()).then_some(f)
            },
        )
}

fn job_strategy() -> impl Strategy<Value = Vec<JobOp>> {
    let op = (
        0usize..5,
        proptest::collection::vec(id_strategy(), 1..4),
        proptest::collection::vec(id_strategy(), 1..3),
        (style_strategy(), style_strategy()),
        fields_strategy(),
    )
        .prop_map(|(a, rooms, clients, (room_style, client_style), fields)| {
            let action = Action::ALL[a];
            JobOp {
                action,
                rooms,
                clients: if action.needs_client() {
                    clients
                } else {
                    vec![]
                },
                room_style,
                client_style,
                fields: if action == Action::Update {
                    fields
                } else {
                    RoomFields::default()
                },
            }
        });
    proptest::collection::vec(op, 1..8)
}

/// The YAML keys naming `ids` in `style`, and the included file it needs (name, text).
fn yaml_ids(
    singular: &str,
    ids: &[String],
    style: ListStyle,
    file: String,
    out: &mut String,
    files: &mut Vec<(String, String)>,
) {
    let q = |s: &str| serde_json::to_string(s).unwrap();
    let list = |v: &[String]| v.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ");
    let mut id_file = |v: &[String], out: &mut String| {
        let mut w = csv::WriterBuilder::new()
            .quote_style(csv::QuoteStyle::Always)
            .from_writer(Vec::new());
        w.write_record([singular]).unwrap();
        for id in v {
            w.write_record([id]).unwrap();
        }
        files.push((
            file.clone(),
            String::from_utf8(w.into_inner().unwrap()).unwrap(),
        ));
        out.push_str(&format!("    {singular}s_file: {}\n", q(&file)));
    };
    match style {
        ListStyle::List => out.push_str(&format!("    {singular}s: [{}]\n", list(ids))),
        ListStyle::One => {
            out.push_str(&format!("    {singular}: {}\n", q(&ids[0])));
            if ids.len() > 1 {
                out.push_str(&format!("    {singular}s: [{}]\n", list(&ids[1..])));
            }
        }
        ListStyle::File => id_file(ids, out),
        ListStyle::ListAndFile => {
            out.push_str(&format!("    {singular}s: [{}]\n", list(&ids[..1])));
            id_file(&ids[1..], out);
        }
    }
}

/// The same job as a CSV (one row per expanded op, clients outer, every column) and as
/// YAML (rooms and clients named by every key the format has), plus the YAML's included
/// files.
fn render_job(job: &[JobOp]) -> (String, String, Vec<(String, String)>) {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["action", "room", "client"];
    header.extend(RoomFields::NAMES);
    w.write_record(&header).unwrap();
    let q = |s: &str| serde_json::to_string(s).unwrap();
    let list = |v: &[String]| v.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ");
    let mut y = String::from("version: 1\nops:\n");
    let mut files = Vec::new();
    for (n, op) in job.iter().enumerate() {
        let f = &op.fields;
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        let join = |v: &Option<Vec<String>>| v.as_ref().map(|t| t.join(";")).unwrap_or_default();
        let num = |v: Option<u8>| v.map(|o| o.to_string()).unwrap_or_default();
        let cells = |room: &str, client: &str| {
            vec![
                op.action.as_str().to_string(),
                room.to_string(),
                client.to_string(),
                text(&f.name),
                text(&f.cover),
                text(&f.description),
                join(&f.room_tags),
                text(&f.webhook),
                f.bot_mode.map(|b| b.to_string()).unwrap_or_default(),
                text(&f.ext_params),
                num(f.opening),
                text(&f.owner),
                join(&f.managers),
                num(f.status),
            ]
        };
        if op.action.needs_client() {
            for c in &op.clients {
                for r in &op.rooms {
                    w.write_record(cells(r, c)).unwrap();
                }
            }
        } else {
            for r in &op.rooms {
                w.write_record(cells(r, "")).unwrap();
            }
        }
        y.push_str(&format!("  - action: {}\n", op.action));
        let (rooms_file, clients_file) = (format!("rooms-{n}.csv"), format!("clients-{n}.csv"));
        yaml_ids(
            "room",
            &op.rooms,
            op.room_style,
            rooms_file,
            &mut y,
            &mut files,
        );
        if !op.clients.is_empty() {
            yaml_ids(
                "client",
                &op.clients,
                op.client_style,
                clients_file,
                &mut y,
                &mut files,
            );
        }
        if op.action == Action::Update {
            y.push_str("    set:\n");
            for (key, v) in [
                ("name", &f.name),
                ("cover", &f.cover),
                ("description", &f.description),
                ("webhook", &f.webhook),
                ("extParams", &f.ext_params),
                ("owner", &f.owner),
            ] {
                if let Some(v) = v {
                    y.push_str(&format!("      {key}: {}\n", q(v)));
                }
            }
            for (key, v) in [("roomTags", &f.room_tags), ("managers", &f.managers)] {
                if let Some(v) = v {
                    y.push_str(&format!("      {key}: [{}]\n", list(v)));
                }
            }
            if let Some(v) = f.bot_mode {
                y.push_str(&format!("      botMode: {v}\n"));
            }
            for (key, v) in [("opening", f.opening), ("status", f.status)] {
                if let Some(v) = v {
                    y.push_str(&format!("      {key}: {v}\n"));
                }
            }
        }
    }
    let csv = String::from_utf8(w.into_inner().unwrap()).unwrap();
    (csv, y, files)
}

/// An id with edge spaces is an error in a YAML list and in a quoted CSV cell alike would
/// be trimmed: YAML refuses it (naming its place) rather than sending `%20lobby-1%20`.
#[test]
fn edge_space_ids_are_errors_in_both() {
    let dir = tempfile::tempdir().unwrap();
    let y = util::write(
        dir.path(),
        "job.yaml",
        "version: 1\nops:\n  - action: mute\n    client: \"u-1 \"\n    rooms: [\" lobby-1\"]\n",
    );
    let e = load_at(&y, None).unwrap_err().to_string();
    assert!(
        e.contains("job.yaml:4:13: client: id \"u-1 \" begins or ends with a space"),
        "{e}"
    );
    assert!(
        e.contains("job.yaml:5:13: room: id \" lobby-1\" begins or ends with a space"),
        "{e}"
    );
    // The CSV cell is trimmed (quoted or not), so the same job names `lobby-1`.
    let c = util::write(
        dir.path(),
        "job.csv",
        "action,room,client\nmute,\" lobby-1\", u-1 \n",
    );
    let m = load_at(&c, None).unwrap();
    assert_eq!(m.ops[0].op, Op::mute("u-1", "lobby-1"));
}
