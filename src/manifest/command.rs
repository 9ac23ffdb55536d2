//! `validate` and `plan`: load a manifest and say what it holds, or what `run` would send
//! now given an existing journal. Neither sends a request nor writes a journal. The text is
//! rendered by pure functions ([`render_validate`], [`validate_json`], [`render_errors`],
//! [`render_plan`]) so it is tested without a terminal or a journal.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use std::collections::HashSet;

use super::lean::{Summary, summarize};
use super::{LoadOptions, Manifest, ManifestErrors, Window, load};
use crate::Exit;
use crate::api::Request;
use crate::cli::{ManifestArgs, PlanArgs, ValidateArgs};
use crate::journal::{Counts, Journal, JournalOp};
use crate::op::{Action, Credential, Op};

/// The journal `run` uses when `--journal` is not given: the manifest's path + `.journal`.
pub fn default_journal_path(manifest: &Path) -> PathBuf {
    let mut s = manifest.as_os_str().to_os_string();
    s.push(".journal");
    PathBuf::from(s)
}

fn load_args(a: &ManifestArgs) -> Result<Manifest, ManifestErrors> {
    load(&a.manifest, &LoadOptions { action: a.action })
}

/// Every error, one `error: file:line[:col]: message` line each (capped), then a count and
/// what to do.
pub fn render_errors(e: &ManifestErrors) -> String {
    let mut s = String::new();
    for line in e.to_string().lines() {
        let _ = writeln!(s, "error: {line}");
    }
    let n = e.total;
    let _ = writeln!(
        s,
        "{n} error{} found; the manifest is invalid and nothing was sent. Fix the lines \
         above and run `imkit-batch validate` again.",
        if n == 1 { "" } else { "s" }
    );
    s
}

fn counts_block(s: &mut String, counts: &[(Action, usize)]) {
    for (a, n) in counts {
        let _ = writeln!(s, "  {:<9} {n}", a.as_str());
    }
}

/// The human summary of a valid manifest.
pub fn render_validate(m: &Summary) -> String {
    let mut s = String::new();
    let _ = write!(s, "manifest: {} ({})", m.path.display(), m.format);
    if let Some(n) = &m.name {
        let _ = write!(s, ", name {n:?}");
    }
    let _ = writeln!(s);
    if m.sources.len() > 1 {
        let inc: Vec<String> = m.sources[1..]
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let _ = writeln!(s, "includes: {}", inc.join(", "));
    }
    let _ = writeln!(s, "valid: {} ops", m.ops);
    counts_block(&mut s, &m.counts);
    let _ = writeln!(s, "distinct rooms: {}", m.rooms);
    let _ = writeln!(s, "distinct clients: {}", m.clients);
    if let Some(w) = &m.window {
        let _ = writeln!(s, "window: {} to {}", w.start, w.end);
    }
    let st = &m.settings;
    let mut set = Vec::new();
    if let Some(r) = st.rate {
        set.push(format!("rate {r}"));
    }
    if let Some(c) = st.concurrency {
        set.push(format!("concurrency {c}"));
    }
    if let Some(b) = st.snapshot {
        set.push(format!("snapshot {b}"));
    }
    if let Some(n) = st.max_attempts {
        set.push(format!("max_attempts {n}"));
    }
    if let Some(t) = st.timeout {
        set.push(format!("timeout {}", humantime::format_duration(t)));
    }
    if !set.is_empty() {
        let _ = writeln!(s, "settings: {}", set.join(", "));
    }
    let _ = writeln!(s, "checksum: {}", m.checksum);
    if m.warnings.is_empty() {
        let _ = writeln!(s, "warnings: none");
    } else {
        let _ = writeln!(s, "warnings ({}):", m.warning_count());
        for w in &m.warnings {
            let _ = writeln!(s, "  {w}");
        }
    }
    s
}

/// The stable `validate --json` object of a valid manifest.
pub fn validate_json(m: &Summary) -> serde_json::Value {
    let actions: serde_json::Map<String, serde_json::Value> = m
        .counts
        .iter()
        .map(|(a, n)| (a.as_str().to_string(), serde_json::json!(n)))
        .collect();
    serde_json::json!({
        "valid": true,
        "manifest": m.path.display().to_string(),
        "format": m.format.as_str(),
        "name": m.name,
        "checksum": m.checksum,
        "ops": m.ops,
        "actions": actions,
        "rooms": m.rooms,
        "clients": m.clients,
        "warnings": m.warnings,
        "warning_count": m.warning_count(),
    })
}

/// The `validate --json` object of an invalid manifest.
pub fn errors_json(e: &ManifestErrors) -> serde_json::Value {
    let errors: Vec<serde_json::Value> = e
        .errors
        .iter()
        .map(|e| {
            serde_json::json!({
                "file": e.file.display().to_string(),
                "line": e.line,
                "column": e.column,
                "message": e.message,
            })
        })
        .collect();
    serde_json::json!({"valid": false, "error_count": e.total, "errors": errors})
}

pub fn validate(args: &ValidateArgs) -> anyhow::Result<Exit> {
    // The same checks and output as `load`, without holding every update's field values.
    let a = &args.manifest;
    match summarize(&a.manifest, &LoadOptions { action: a.action }) {
        Ok(m) => {
            if args.json {
                println!("{}", validate_json(&m));
            } else {
                print!("{}", render_validate(&m));
            }
            Ok(Exit::Success)
        }
        Err(e) => {
            if args.json {
                println!("{}", errors_json(&e));
            }
            eprint!("{}", render_errors(&e));
            Ok(Exit::Invalid)
        }
    }
}

/// What `plan` knows about an existing journal.
#[derive(Clone, Debug, Default)]
pub struct JournalView {
    pub path: PathBuf,
    /// The manifest checksum the journal was written for.
    pub checksum: String,
    /// Ops not yet final, in manifest order.
    pub pending: Vec<JournalOp>,
    /// Ops per state.
    pub counts: Counts,
    /// Rooms already read by an earlier `--snapshot` run (not read again).
    pub snapshotted: HashSet<String>,
}

/// What `plan` is asked, besides the manifest and the journal.
#[derive(Clone, Copy, Debug)]
pub struct PlanOptions {
    /// How many requests to list.
    pub show: usize,
    /// Whether `run` would read rooms first (`--snapshot`, `--no-snapshot`, settings).
    pub snapshot: bool,
    /// The time the plan is for (now, outside tests): the YAML window is compared with it.
    pub now: jiff::Timestamp,
}

/// Where `now` stands against the window.
enum WindowState {
    None,
    NotYet(Window),
    Open(Window),
    Closed(Window),
}

fn window_state(w: Option<Window>, now: jiff::Timestamp) -> WindowState {
    match w {
        None => WindowState::None,
        Some(w) if now < w.start => WindowState::NotYet(w),
        Some(w) if now >= w.end => WindowState::Closed(w),
        Some(w) => WindowState::Open(w),
    }
}

/// "3h 12m" from `now` to `t`: days, hours and minutes (cut to the minute), or seconds
/// under a minute.
fn until(now: jiff::Timestamp, t: jiff::Timestamp) -> String {
    let secs = t.as_second().saturating_sub(now.as_second()).max(0);
    if secs < 60 {
        return format!("{secs}s");
    }
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3_600, secs % 3_600 / 60);
    [(d, "d"), (h, "h"), (m, "m")]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, u)| format!("{n}{u}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One request `run` would send: a snapshot read before a room's first change, or an op.
enum Planned<'a> {
    Read(&'a str, Option<u64>),
    Op(Option<u64>, &'a Op),
}

/// What `run` would send now (SPEC §3): the window compared with `now`, a journal taken
/// into account (only its pending ops; a complete job sends nothing; a journal for another
/// manifest is refused), the snapshot reads of `--snapshot`, counts per action and the first
/// `show` requests in the order they are dispatched.
pub fn render_plan(m: &Manifest, journal: Option<&JournalView>, o: &PlanOptions) -> String {
    let mut s = String::new();
    let _ = write!(s, "plan for {} ({})", m.path.display(), m.format);
    if let Some(n) = &m.name {
        let _ = write!(s, ", name {n:?}");
    }
    let _ = writeln!(s);
    let all: Vec<(Option<u64>, &Op)> = m
        .ops
        .iter()
        .enumerate()
        .map(|(i, p)| (Some(i as u64), &p.op))
        .collect();
    let no_rooms = HashSet::new();
    let (todo, snapshotted): (Vec<(Option<u64>, &Op)>, &HashSet<String>) = match journal {
        None => {
            let _ = writeln!(s, "journal: none yet; `run` starts a new job");
            (all, &no_rooms)
        }
        Some(j) if j.checksum != m.checksum => {
            let _ = writeln!(
                s,
                "WARNING: the journal {} was written for a different manifest (checksum {} \
                 there, {} now): `run` would refuse to resume it and exit 2. Use `run --fresh` \
                 to start a new job (the old journal is kept, renamed). The plan below is that \
                 of a fresh run.",
                j.path.display(),
                short(&j.checksum),
                short(&m.checksum)
            );
            (all, &no_rooms)
        }
        Some(j) if j.pending.is_empty() => {
            let c = j.counts;
            let exit = if c.failed > 0 {
                Exit::OpsFailed
            } else {
                Exit::Success
            };
            let _ = writeln!(
                s,
                "journal: {}: the job is complete ({} done, {} failed, {} skipped)",
                j.path.display(),
                c.done,
                c.failed,
                c.skipped
            );
            let _ = writeln!(
                s,
                "`run` would send nothing and exit {} ({}); `run --fresh` starts the job \
                 again{}",
                exit.code(),
                if exit == Exit::Success {
                    "every op done"
                } else {
                    "finished, some ops failed permanently"
                },
                if c.failed > 0 {
                    ", `run --retry-failed` re-attempts the failed ops"
                } else {
                    ""
                }
            );
            let _ = writeln!(s, "to send: 0 requests");
            warnings_block(&mut s, m);
            let _ = writeln!(s, "nothing was sent.");
            return s;
        }
        Some(j) => {
            let _ = writeln!(
                s,
                "journal: {}: {} of {} ops already final; resuming sends the rest",
                j.path.display(),
                m.ops.len().saturating_sub(j.pending.len()),
                m.ops.len()
            );
            (
                j.pending.iter().map(|p| (Some(p.seq), &p.op)).collect(),
                &j.snapshotted,
            )
        }
    };
    match window_state(m.window, o.now) {
        WindowState::None => {}
        WindowState::NotYet(w) => {
            let _ = writeln!(
                s,
                "window: {} to {}; it opens in {}: `run` would wait until {} before sending \
                 anything, and stop at {} (exit 4, resumable) if not finished",
                w.start,
                w.end,
                until(o.now, w.start),
                w.start,
                w.end
            );
        }
        WindowState::Open(w) => {
            let _ = writeln!(
                s,
                "window: {} to {}; open now (closes in {}): `run` would start at once and \
                 stop at {} (exit 4, resumable) if not finished",
                w.start,
                w.end,
                until(o.now, w.end),
                w.end
            );
        }
        WindowState::Closed(w) => {
            let _ = writeln!(
                s,
                "window: {} to {}; it closed at {}: `run` would send nothing and exit 4. To \
                 run this job, move or remove its `window` (a changed manifest is a new job: \
                 `run --fresh` if it has a journal)",
                w.start, w.end, w.end
            );
            let _ = writeln!(s, "to send: 0 requests (the window has closed)");
            let _ = writeln!(s, "ops waiting for a window: {}", todo.len());
            warnings_block(&mut s, m);
            let _ = writeln!(s, "nothing was sent.");
            return s;
        }
    }
    // The requests in dispatch order: with --snapshot, a room's read comes right before
    // its first change (mute and unmute change no room).
    let mut read: HashSet<&str> = HashSet::new();
    let mut requests: Vec<Planned<'_>> = Vec::with_capacity(todo.len());
    for (seq, op) in &todo {
        if o.snapshot
            && changes_room(op.action)
            && !snapshotted.contains(&*op.room)
            && read.insert(&op.room)
        {
            requests.push(Planned::Read(&op.room, *seq));
        }
        requests.push(Planned::Op(*seq, op));
    }
    let reads = read.len();
    let mut counts = [0usize; 5];
    for (_, op) in &todo {
        if let Some(i) = Action::ALL.iter().position(|a| *a == op.action) {
            counts[i] += 1;
        }
    }
    let _ = writeln!(s, "to send: {} requests", requests.len());
    let per: Vec<(Action, usize)> = Action::ALL.into_iter().zip(counts).collect();
    counts_block(&mut s, &per);
    if o.snapshot {
        let _ = writeln!(
            s,
            "  {:<9} {reads} (GET /rooms/{{id}}, one per room before its first change{})",
            "snapshot",
            if snapshotted.is_empty() {
                String::new()
            } else {
                format!("; {} rooms read by an earlier run", snapshotted.len())
            }
        );
    } else if todo.iter().any(|(_, op)| changes_room(op.action)) {
        let _ = writeln!(
            s,
            "snapshot: off (no room is read first, so `revert` cannot restore prior values; \
             --snapshot or `settings.snapshot: true` turns it on)"
        );
    }
    let mut creds: Vec<Credential> = todo.iter().map(|(_, o)| o.credential()).collect();
    creds.sort();
    creds.dedup();
    if !creds.is_empty() {
        let c: Vec<&str> = creds.iter().map(|c| c.describe()).collect();
        let _ = writeln!(s, "credentials needed: {}", c.join("; "));
    }
    let place = |seq: Option<u64>, op: &Op| {
        seq.and_then(|i| m.ops.get(i as usize))
            .filter(|p| &p.op == op)
            .map(|p| m.describe(p.source))
    };
    if !requests.is_empty() && o.show > 0 {
        let _ = writeln!(s, "first {} requests:", o.show.min(requests.len()));
        for r in requests.iter().take(o.show) {
            match r {
                Planned::Op(seq, op) => {
                    let at = place(*seq, op)
                        .map(|p| format!("  ({p})"))
                        .unwrap_or_default();
                    let _ = writeln!(s, "  {}{at}", Request::for_op(op));
                }
                Planned::Read(room, seq) => {
                    let at = seq
                        .and_then(|i| m.ops.get(i as usize))
                        .map(|p| format!("  (snapshot, before {})", m.describe(p.source)))
                        .unwrap_or_else(|| "  (snapshot)".into());
                    let _ = writeln!(s, "  {}{at}", Request::get_room(room));
                }
            }
        }
        if requests.len() > o.show {
            let _ = writeln!(s, "  ... and {} more", requests.len() - o.show);
        }
    }
    warnings_block(&mut s, m);
    let _ = writeln!(s, "nothing was sent.");
    s
}

fn changes_room(a: Action) -> bool {
    matches!(a, Action::Freeze | Action::Unfreeze | Action::Update)
}

fn warnings_block(s: &mut String, m: &Manifest) {
    for w in &m.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
}

fn short(c: &str) -> &str {
    c.get(..12).unwrap_or(c)
}

pub fn plan(args: &PlanArgs) -> anyhow::Result<Exit> {
    let m = match load_args(&args.manifest) {
        Ok(m) => m,
        Err(e) => {
            eprint!("{}", render_errors(&e));
            return Ok(Exit::Invalid);
        }
    };
    let path = args
        .journal
        .clone()
        .unwrap_or_else(|| default_journal_path(&args.manifest.manifest));
    let snapshot = args.snapshot.resolve(m.settings.snapshot);
    let view = if path.exists() {
        let what = || format!("cannot read the journal {}", path.display());
        let j = Journal::open_read_only(&path).with_context(what)?;
        let meta = j.meta().with_context(what)?;
        let pending = j.pending().with_context(what)?;
        let counts = j.counts().with_context(what)?;
        let snapshotted = if snapshot {
            j.snapshotted_rooms().with_context(what)?
        } else {
            HashSet::new()
        };
        Some(JournalView {
            path,
            checksum: meta.checksum,
            pending,
            counts,
            snapshotted,
        })
    } else {
        None
    };
    let options = PlanOptions {
        show: args.show,
        snapshot,
        now: jiff::Timestamp::now(),
    };
    print!("{}", render_plan(&m, view.as_ref(), &options));
    Ok(Exit::Success)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::RoomFields;

    fn manifest(ops: Vec<Op>) -> Manifest {
        Manifest {
            checksum: "abcdef0123456789".into(),
            ..Manifest::from_ops("m.csv", ops)
        }
    }

    fn ts(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    /// A fixed "now", far from every window boundary used below.
    fn opts(show: usize, snapshot: bool) -> PlanOptions {
        PlanOptions {
            show,
            snapshot,
            now: ts("2026-11-22T12:00:00Z"),
        }
    }

    fn plan(m: &Manifest, j: Option<&JournalView>, show: usize) -> String {
        render_plan(m, j, &opts(show, false))
    }

    #[test]
    fn journal_path_appends() {
        assert_eq!(
            default_journal_path(Path::new("jobs/a.yaml")),
            PathBuf::from("jobs/a.yaml.journal")
        );
    }

    #[test]
    fn plan_without_journal_lists_everything() {
        let m = manifest(vec![Op::freeze("a/1"), Op::mute("u", "a"), Op::freeze("b")]);
        let s = plan(&m, None, 2);
        assert!(s.contains("to send: 3 requests"), "{s}");
        assert!(s.contains("  freeze    2\n"), "{s}");
        assert!(s.contains("  mute      1\n"), "{s}");
        assert!(
            s.contains("  PUT /rooms/a%2F1 {\"status\":0}  (m.csv:2)"),
            "{s}"
        );
        assert!(
            s.contains("  POST /admin/clients/u/mute/a  (m.csv:3)"),
            "{s}"
        );
        assert!(s.contains("... and 1 more"), "{s}");
        assert!(s.contains("IMKIT_API_KEY"), "{s}");
    }

    #[test]
    fn plan_with_journal_shows_only_pending() {
        let m = manifest(vec![Op::freeze("a"), Op::freeze("b"), Op::unfreeze("c")]);
        let j = JournalView {
            path: "m.csv.journal".into(),
            checksum: m.checksum.clone(),
            pending: vec![JournalOp {
                seq: 2,
                op: Op::unfreeze("c"),
                attempts: 1,
            }],
            counts: Counts {
                pending: 1,
                done: 2,
                ..Counts::default()
            },
            ..JournalView::default()
        };
        let s = plan(&m, Some(&j), 10);
        assert!(s.contains("2 of 3 ops already final"), "{s}");
        assert!(s.contains("to send: 1 requests"), "{s}");
        assert!(s.contains("PUT /rooms/c {\"status\":1}  (m.csv:4)"), "{s}");
        assert!(!s.contains("/rooms/a "), "{s}");
    }

    #[test]
    fn plan_warns_on_checksum_mismatch() {
        let m = manifest(vec![Op::freeze("a")]);
        let j = JournalView {
            path: "m.csv.journal".into(),
            checksum: "ffff".into(),
            ..JournalView::default()
        };
        let s = plan(&m, Some(&j), 10);
        assert!(s.contains("would refuse"), "{s}");
        assert!(s.contains("--fresh"), "{s}");
        assert!(s.contains("to send: 1 requests"), "{s}");
    }

    fn windowed(start: &str, end: &str) -> Manifest {
        Manifest {
            window: Some(Window {
                start: ts(start),
                end: ts(end),
            }),
            ..manifest(vec![Op::freeze("a"), Op::freeze("b")])
        }
    }

    /// Before the window opens, `run` would wait for it; the plan says until when, and
    /// still lists what will be sent then.
    #[test]
    fn plan_before_the_window_says_run_would_wait() {
        let m = windowed("2026-11-22T22:00:00+08:00", "2026-11-23T02:00:00+08:00");
        let s = plan(&m, None, 10);
        assert!(
            s.contains("it opens in 2h: `run` would wait until 2026-11-22T14:00:00Z"),
            "{s}"
        );
        assert!(s.contains("to send: 2 requests"), "{s}");
        assert!(s.contains("PUT /rooms/a {\"status\":0}"), "{s}");
    }

    /// After the window's end, `run` sends nothing and exits 4: the plan says so and
    /// counts no request.
    #[test]
    fn plan_after_the_window_says_nothing_would_be_sent() {
        let m = windowed("2026-11-20T22:00:00Z", "2026-11-21T02:00:00Z");
        let s = plan(&m, None, 10);
        assert!(
            s.contains("it closed at 2026-11-21T02:00:00Z: `run` would send nothing and exit 4"),
            "{s}"
        );
        assert!(
            s.contains("to send: 0 requests (the window has closed)"),
            "{s}"
        );
        assert!(s.contains("ops waiting for a window: 2"), "{s}");
        assert!(!s.contains("PUT /rooms/"), "{s}");
    }

    #[test]
    fn time_until_is_short() {
        let now = ts("2026-11-22T12:00:00Z");
        let at = |s: &str| until(now, ts(s));
        assert_eq!(at("2026-11-22T12:00:42Z"), "42s");
        assert_eq!(at("2026-11-22T12:05:59Z"), "5m");
        assert_eq!(at("2026-11-22T14:00:00Z"), "2h");
        assert_eq!(at("2026-11-25T13:30:00Z"), "3d 1h 30m");
        assert_eq!(at("2099-11-22T12:00:00Z"), "26663d");
        assert_eq!(at("2026-11-22T11:00:00Z"), "0s");
    }

    #[test]
    fn plan_inside_the_window_says_it_is_open() {
        let m = windowed("2026-11-22T11:00:00Z", "2026-11-22T15:30:00Z");
        let s = plan(&m, None, 10);
        assert!(s.contains("open now (closes in 3h 30m)"), "{s}");
        assert!(s.contains("to send: 2 requests"), "{s}");
    }

    /// With snapshot on, each room is read once, right before its first change; mute and
    /// unmute read nothing; rooms an earlier run read are not read again.
    #[test]
    fn plan_lists_snapshot_reads() {
        let f = RoomFields {
            name: Some("N".into()),
            ..RoomFields::default()
        };
        let m = manifest(vec![
            Op::freeze("a"),
            Op::mute("u", "b"),
            Op::update("a", f),
            Op::unfreeze("c/1"),
        ]);
        let s = render_plan(&m, None, &opts(10, true));
        assert!(s.contains("to send: 6 requests"), "{s}");
        assert!(
            s.contains("  snapshot  2 (GET /rooms/{id}, one per room before its first change)"),
            "{s}"
        );
        let listed: Vec<&str> = s
            .lines()
            .skip_while(|l| !l.starts_with("first "))
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .collect();
        assert_eq!(
            listed,
            vec![
                "  GET /rooms/a  (snapshot, before m.csv:2)",
                "  PUT /rooms/a {\"status\":0}  (m.csv:2)",
                "  POST /admin/clients/u/mute/b  (m.csv:3)",
                "  PUT /rooms/a {\"name\":\"N\"}  (m.csv:4)",
                "  GET /rooms/c%2F1  (snapshot, before m.csv:5)",
                "  PUT /rooms/c%2F1 {\"status\":1}  (m.csv:5)",
            ]
        );
        // Off: no reads, and the plan says what that means for revert.
        let s = render_plan(&m, None, &opts(10, false));
        assert!(s.contains("to send: 4 requests"), "{s}");
        assert!(!s.contains("GET /rooms"), "{s}");
        assert!(s.contains("snapshot: off"), "{s}");
        // Resuming: a room read by an earlier run is not read again.
        let j = JournalView {
            path: "m.csv.journal".into(),
            checksum: m.checksum.clone(),
            pending: vec![
                JournalOp {
                    seq: 2,
                    op: m.ops[2].op.clone(),
                    attempts: 0,
                },
                JournalOp {
                    seq: 3,
                    op: m.ops[3].op.clone(),
                    attempts: 0,
                },
            ],
            counts: Counts {
                pending: 2,
                done: 2,
                ..Counts::default()
            },
            snapshotted: ["a".to_string()].into_iter().collect(),
        };
        let s = render_plan(&m, Some(&j), &opts(10, true));
        assert!(s.contains("to send: 3 requests"), "{s}");
        assert!(s.contains("  snapshot  1 ("), "{s}");
        assert!(!s.contains("GET /rooms/a "), "{s}");
        assert!(s.contains("GET /rooms/c%2F1"), "{s}");
    }

    /// A finished journal: the job is complete, a re-run sends nothing and exits with the
    /// recorded outcome (0, or 1 when some ops failed).
    #[test]
    fn plan_of_a_complete_job() {
        let m = windowed("2026-11-20T22:00:00Z", "2026-11-21T02:00:00Z");
        let mut j = JournalView {
            path: "m.csv.journal".into(),
            checksum: m.checksum.clone(),
            counts: Counts {
                done: 2,
                ..Counts::default()
            },
            ..JournalView::default()
        };
        let s = plan(&m, Some(&j), 10);
        assert!(
            s.contains("the job is complete (2 done, 0 failed, 0 skipped)"),
            "{s}"
        );
        assert!(
            s.contains("`run` would send nothing and exit 0 (every op done)"),
            "{s}"
        );
        assert!(s.contains("to send: 0 requests"), "{s}");
        // Complete wins over a closed window, as in `run`.
        assert!(!s.contains("exit 4"), "{s}");
        j.counts = Counts {
            done: 1,
            failed: 1,
            ..Counts::default()
        };
        let s = plan(&m, Some(&j), 10);
        assert!(
            s.contains("exit 1 (finished, some ops failed permanently)"),
            "{s}"
        );
        assert!(s.contains("--retry-failed"), "{s}");
    }

    #[test]
    fn validate_outputs() {
        let mut m = manifest(vec![
            Op::freeze("a"),
            Op::mute("u", "a"),
            Op::mute("v", "b"),
        ]);
        m.warnings
            .push("line 9 repeats line 2: freeze room \"a\" (runs once)".into());
        let s = render_validate(&Summary::of(&m));
        assert!(s.contains("valid: 3 ops"), "{s}");
        assert!(s.contains("distinct rooms: 2"), "{s}");
        assert!(s.contains("distinct clients: 2"), "{s}");
        assert!(s.contains("warnings (1):\n  line 9 repeats line 2"), "{s}");
        let j = validate_json(&Summary::of(&m));
        assert_eq!(j["valid"], true);
        assert_eq!(j["ops"], 3);
        assert_eq!(j["actions"]["mute"], 2);
        assert_eq!(j["actions"]["unmute"], 0);
        assert_eq!(j["rooms"], 2);
        assert_eq!(j["clients"], 2);
        assert_eq!(j["warnings"].as_array().unwrap().len(), 1);
        assert_eq!(j["warning_count"], 1);
    }

    /// Past the cap, the header counts every warning, not the stored entries plus the
    /// "... and N more" line (5,000 duplicates used to show as "warnings (101)").
    #[test]
    fn validate_counts_every_warning() {
        let mut w = crate::manifest::Warnings::default();
        for i in 0..5_000 {
            w.push(format!(
                "line {} repeats line 2: freeze room \"a\" (runs once)",
                i + 3
            ));
        }
        let m = Manifest {
            warnings: w.finish(),
            ..manifest(vec![Op::freeze("a")])
        };
        let s = render_validate(&Summary::of(&m));
        assert!(
            s.contains("warnings (5000):\n  line 3 repeats line 2"),
            "{s}"
        );
        assert!(s.ends_with("  ... and 4900 more warnings\n"), "{s}");
        let j = validate_json(&Summary::of(&m));
        assert_eq!(j["warning_count"], 5000);
        assert_eq!(j["warnings"].as_array().unwrap().len(), 101);
    }

    #[test]
    fn errors_render_with_count() {
        let mut e = ManifestErrors::default();
        e.at(Path::new("m.csv"), 3, None, "room: id is empty");
        e.at(Path::new("m.csv"), 4, Some(2), "x");
        let s = render_errors(&e);
        assert!(s.starts_with("error: m.csv:3: room: id is empty\nerror: m.csv:4:2: x\n"));
        assert!(s.contains("2 errors found"), "{s}");
        assert_eq!(errors_json(&e)["errors"][1]["column"], 2);
    }
}
