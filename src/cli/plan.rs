//! `plan`: shows what `run` would send now, taking an existing journal into account. Sends
//! nothing and writes nothing. The plan itself is computed in [`crate::manifest::plan`];
//! this renders it, and the rendering is tested without a terminal or a journal.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use super::validate::{counts_block, render_errors};
use super::{ManifestArgs, SnapshotArgs, values};
use crate::api::{Credentials, Request};
use crate::journal::UndoPhase;
use crate::manifest::plan::{JournalState, JournalView, Plan, Planned, WindowState, plan};
use crate::manifest::{LoadOptions, Manifest};
use crate::op::{Auth, Credential, RoomAuth};
use crate::runner::Schedule;
use crate::runner::schedule::DATE_PLACEHOLDER;
use crate::{Exit, ExitError};

#[derive(Debug, Args)]
pub(super) struct PlanArgs {
    #[command(flatten)]
    manifest: ManifestArgs,

    /// The journal to take into account, `{date}` replaced as `run` does (default:
    /// MANIFEST.journal, or MANIFEST.{date}.journal for a daily window).
    #[arg(long, value_name = "PATH")]
    journal: Option<PathBuf>,

    /// As for `run`: the time the job's changes are undone (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = super::values::timestamp)]
    undo_at: Option<jiff::Timestamp>,

    /// How many requests to list.
    #[arg(long, default_value_t = 10, value_name = "N")]
    show: usize,

    /// As for `run`: list the room reads (GET /rooms/{id}) a run with --snapshot makes.
    #[command(flatten)]
    snapshot: SnapshotArgs,

    /// As for `run`: the credential of room ops and bans (token or api-key).
    #[arg(long, value_name = "WHICH", value_parser = values::room_auth())]
    room_auth: Option<RoomAuth>,

    /// As for `run`: read the credentials from this file too. Only whether each is set is
    /// used (to say which one each kind of op would use); no value is shown.
    #[arg(long, value_name = "FILE")]
    env_file: Option<PathBuf>,

    /// As for `run`: the plan of a run against the in-process sandbox, which brings every
    /// credential.
    #[arg(long)]
    sandbox: bool,
}

/// Prints the plan of the manifest; exit 2 when the manifest is invalid.
pub(super) fn run(args: &PlanArgs) -> anyhow::Result<Exit> {
    let a = &args.manifest;
    let m = match crate::manifest::load(&a.manifest, &LoadOptions { action: a.action }) {
        Ok(m) => m,
        Err(e) => {
            eprint!("{}", render_errors(&e));
            return Ok(Exit::Invalid);
        }
    };
    let template = args
        .journal
        .clone()
        .unwrap_or_else(|| crate::runner::default_journal_template(&m, args.sandbox));
    let schedule = crate::runner::resolve_schedule(&m, &template, args.undo_at);
    let path = schedule.journal_path.clone();
    let undo = schedule.undo_at.is_some();
    let snapshot = super::job::snapshot_for_undo(
        &m,
        args.snapshot.resolve(m.settings.snapshot),
        undo,
        args.snapshot.no_snapshot,
    );
    let view = if path.exists() {
        let view = JournalView::read(&path, &m, snapshot)
            .with_context(|| format!("cannot read the journal {}", path.display()))?;
        Some(view)
    } else {
        None
    };
    let room_auth = args.room_auth.or(m.settings.room_auth);
    let (auth, available) = if args.sandbox {
        (Auth::resolve(room_auth, true), None)
    } else {
        let c = crate::api::EnvSources::read(args.env_file.as_deref())
            .and_then(|s| s.credentials())
            .map_err(|e| ExitError::new(Exit::Invalid, e.to_string()))?;
        (
            Auth::resolve(room_auth, c.has(Credential::ClientToken)),
            Some(c),
        )
    };
    let options = PlanOptions {
        show: args.show,
        snapshot,
        auth,
        available,
        dated: template.to_string_lossy().contains(DATE_PLACEHOLDER),
        schedule,
    };
    print!("{}", render_plan(&m, view.as_ref(), &options));
    Ok(Exit::Success)
}

/// What `plan` is asked, besides the manifest and the journal.
#[derive(Clone, Debug)]
struct PlanOptions {
    /// How many requests to list.
    show: usize,
    /// Whether `run` would read rooms first (`--snapshot`, `--no-snapshot`, settings).
    snapshot: bool,
    /// The credential each kind of op would be sent with.
    auth: Auth,
    /// The credentials set (never shown; only whether each is set matters), or `None` for
    /// the sandbox, which brings them all.
    available: Option<Credentials>,
    /// The journal path had `{date}` in it.
    dated: bool,
    /// Where `run` would stand now (outside tests): the window occurrence, the undo time and
    /// the journal.
    schedule: Schedule,
}

/// The text of `plan`: the journal and the window as `run` would find them, then (unless
/// nothing would be sent) counts per action, the snapshot reads, the credential of each kind
/// of op (and those missing) and the first `show` requests in dispatch order; the
/// manifest's warnings last.
fn render_plan(m: &Manifest, journal: Option<&JournalView>, o: &PlanOptions) -> String {
    let sc = &o.schedule;
    let p = plan(m, journal, o.snapshot, sc.window, sc.now);
    let mut s = String::new();
    let _ = write!(s, "plan for {} ({})", m.path.display(), m.format);
    if let Some(n) = &m.name {
        let _ = write!(s, ", name {n:?}");
    }
    let _ = writeln!(s);
    let undo = journal.and_then(|j| j.undo.as_ref());
    let undo_owed = undo.map_or(sc.undo_at.is_some(), |u| u.counts.pending > 0);
    render_journal(&mut s, m, &p.journal, o, undo_owed);
    let complete = matches!(p.journal, JournalState::Complete { .. });
    if !complete {
        render_window(&mut s, m, &p, sc);
    }
    if !complete && !matches!(p.window, WindowState::Closed(_)) {
        render_counts(&mut s, &p);
        render_credentials(&mut s, &p, o);
        render_first(&mut s, m, &p, o.show);
    }
    render_undo(&mut s, sc, undo);
    for w in &m.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    let _ = writeln!(s, "nothing was sent.");
    s
}

/// The journal line(s); for a complete job, also what `run` would do and that it would send
/// nothing (unless its undo is still owed).
fn render_journal(
    s: &mut String,
    m: &Manifest,
    journal: &JournalState<'_>,
    o: &PlanOptions,
    undo_owed: bool,
) {
    let sc = &o.schedule;
    match *journal {
        JournalState::None => {
            let _ = writeln!(
                s,
                "journal: {}: none yet; `run` starts a new job",
                sc.journal_path.display()
            );
        }
        JournalState::Complete { path, counts: c } if undo_owed => {
            let _ = writeln!(
                s,
                "journal: {}: the main phase is complete ({} done, {} failed, {} skipped)",
                path.display(),
                c.done,
                c.failed,
                c.skipped
            );
        }
        JournalState::OtherManifest { path, checksum } => {
            let _ = writeln!(
                s,
                "WARNING: the journal {} holds other ops than this manifest means (it was \
                 written for checksum {}, the manifest is {} now): `run` would refuse to resume \
                 it, exit 2 and say what changed. `run --replan` goes on without sending again \
                 what is done; `run --fresh` starts a new job (the old journal is kept, \
                 renamed). The plan below is that of a fresh run.",
                path.display(),
                short(checksum),
                short(&m.checksum)
            );
        }
        JournalState::Complete { path, counts: c } => {
            let exit = if c.failed > 0 {
                Exit::OpsFailed
            } else {
                Exit::Success
            };
            let _ = writeln!(
                s,
                "journal: {}: the job is complete ({} done, {} failed, {} skipped)",
                path.display(),
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
        }
        JournalState::Resuming { path, pending } => {
            let _ = writeln!(
                s,
                "journal: {}: {} of {} ops already final; resuming sends the rest",
                path.display(),
                m.ops.len().saturating_sub(pending),
                m.ops.len()
            );
        }
    }
    if o.dated {
        let from = match m.window.as_ref().and_then(|w| w.daily()) {
            Some(d) => format!("the date this window opens, in {}", d.zone_name),
            None => "the local date now".into(),
        };
        let _ = writeln!(s, "  ({{date}} is {}: {from})", sc.date);
    }
}

/// The undo line: when `run` undoes what the job changed, or how far the undo has got.
fn render_undo(s: &mut String, sc: &Schedule, undo: Option<&UndoPhase>) {
    match (undo, sc.undo_at) {
        (Some(u), _) if u.counts.pending == 0 => {
            let _ = writeln!(
                s,
                "undo: done ({} done, {} failed, {} listed apart as not undoable)",
                u.counts.done,
                u.counts.failed,
                u.apart.len()
            );
        }
        (Some(u), _) => {
            let _ = writeln!(
                s,
                "undo: planned; {} of {} undo ops still to send: `run` sends them at once",
                u.counts.pending, u.total
            );
        }
        (None, Some(t)) => {
            let label = sc.undo_label().unwrap_or_default();
            if sc.now >= t {
                let _ = writeln!(
                    s,
                    "undo: due since {label}: `run` undoes at once what the job changed (the \
                     ops `imkit-batch revert` would write)"
                );
            } else {
                let _ = writeln!(
                    s,
                    "undo: at {label}, in {}: `run` waits for it, then undoes what the job \
                     changed (the ops `imkit-batch revert` would write)",
                    until(sc.now, t)
                );
            }
        }
        (None, None) => {}
    }
}

/// The window line; once it has closed, also that nothing would be sent.
fn render_window(s: &mut String, m: &Manifest, p: &Plan<'_>, sc: &Schedule) {
    let now = sc.now;
    if let (Some(w), Some(o)) = (m.window.as_ref().filter(|w| w.daily().is_some()), sc.window) {
        let which = if sc.owed_undo {
            "an earlier one whose undo is still owed"
        } else {
            "the one open now, else the next"
        };
        let date = o.date.map(|d| format!(" of {d}")).unwrap_or_default();
        let _ = writeln!(
            s,
            "window: {}; `run` works in the one{date} ({which})",
            w.describe()
        );
    }
    match p.window {
        WindowState::None => {}
        WindowState::NotYet(w) => {
            let _ = writeln!(
                s,
                "window: {} to {}; it opens in {}: `run` would wait until {} before sending \
                 anything, and stop at {} (exit 4, resumable) if not finished",
                w.start,
                w.end,
                until(now, w.start),
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
                until(now, w.end),
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
            let _ = writeln!(s, "ops waiting for a window: {}", p.todo.len());
        }
    }
}

/// What would be sent: counts and snapshot reads.
fn render_counts(s: &mut String, p: &Plan<'_>) {
    let _ = writeln!(s, "to send: {} requests", p.requests.len());
    counts_block(s, &p.per_action());
    let earlier = |n: usize, what: &str| {
        if n == 0 {
            String::new()
        } else {
            format!("; {n} {what} read by an earlier run")
        }
    };
    if p.snapshot {
        if p.changes_rooms() || !p.changes_bans() {
            let _ = writeln!(
                s,
                "  {:<9} {} (GET /rooms/{{id}}, one per room before its first change{})",
                "snapshot",
                p.reads(),
                earlier(p.snapshotted_earlier, "rooms")
            );
        }
        if p.changes_bans() {
            let _ = writeln!(
                s,
                "  {:<9} {} (GET /blockStatus/room/{{id}}, one per room before its first ban \
                 or unban{})",
                "ban lists",
                p.ban_list_reads(),
                earlier(p.ban_lists_earlier, "ban lists")
            );
        }
    } else if p.changes_rooms() {
        let _ = writeln!(
            s,
            "snapshot: off (no room is read first, so `revert` cannot restore prior values; \
             --snapshot or `settings.snapshot: true` turns it on)"
        );
    }
}

/// Which credential each kind of op still to run would be sent with (names only), and those
/// of them not set, which `run` would refuse to start without.
fn render_credentials(s: &mut String, p: &Plan<'_>, o: &PlanOptions) {
    for line in o.auth.describe(p.kinds()) {
        let _ = writeln!(s, "credentials: {line}");
    }
    if let Some(c) = &o.available {
        let missing = c.missing(p.credentials(o.auth));
        if !missing.is_empty() {
            let _ = writeln!(
                s,
                "missing credentials: {} not set: `run` would refuse to start (exit 2)",
                missing.join(", ")
            );
        }
    }
}

/// The first `show` requests in dispatch order.
fn render_first(s: &mut String, m: &Manifest, p: &Plan<'_>, show: usize) {
    if p.requests.is_empty() || show == 0 {
        return;
    }
    let _ = writeln!(s, "first {} requests:", show.min(p.requests.len()));
    for r in p.requests.iter().take(show) {
        let _ = writeln!(s, "  {}", request_line(m, r));
    }
    if p.requests.len() > show {
        let _ = writeln!(s, "  ... and {} more", p.requests.len() - show);
    }
}

/// A request as listed: method, path and body, then where its op is in the manifest.
fn request_line(m: &Manifest, r: &Planned<'_>) -> String {
    match *r {
        Planned::Op { seq, op } => {
            let at = m
                .ops
                .get(seq as usize)
                .filter(|p| &p.op == op)
                .map(|p| format!("  ({})", m.describe(p.source)))
                .unwrap_or_default();
            format!("{}{at}", Request::for_op(op))
        }
        Planned::Read { room, seq } | Planned::ReadBans { room, seq } => {
            let at = m
                .ops
                .get(seq as usize)
                .map(|p| format!("  (snapshot, before {})", m.describe(p.source)))
                .unwrap_or_else(|| "  (snapshot)".into());
            let read = match *r {
                Planned::ReadBans { .. } => Request::get_bans(room),
                _ => Request::get_room(room),
            };
            format!("{read}{at}")
        }
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

/// The first 12 hex digits of a checksum.
fn short(c: &str) -> &str {
    c.get(..12).unwrap_or(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Counts, JournalOp};
    use crate::manifest::{Window, WindowTimes};
    use crate::op::{Op, RoomFields};

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
    fn opts(m: &Manifest, show: usize, snapshot: bool) -> PlanOptions {
        let schedule = crate::runner::schedule::resolve_at(
            m,
            std::path::Path::new("m.csv.journal"),
            None,
            ts("2026-11-22T12:00:00Z"),
        );
        PlanOptions {
            show,
            snapshot,
            auth: Auth::default(),
            available: None,
            dated: false,
            schedule,
        }
    }

    fn plan(m: &Manifest, j: Option<&JournalView>, show: usize) -> String {
        render_plan(m, j, &opts(m, show, false))
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
    fn plan_warns_when_the_ops_changed() {
        let m = manifest(vec![Op::freeze("a")]);
        let j = JournalView {
            path: "m.csv.journal".into(),
            checksum: "ffff".into(),
            ops_changed: true,
            ..JournalView::default()
        };
        let s = plan(&m, Some(&j), 10);
        assert!(s.contains("would refuse"), "{s}");
        assert!(s.contains("--replan") && s.contains("--fresh"), "{s}");
        assert!(s.contains("to send: 1 requests"), "{s}");
    }

    /// Other bytes, the same ops (a comment added): `run` resumes, so `plan` says so.
    #[test]
    fn plan_of_other_bytes_with_the_same_ops_resumes() {
        let m = manifest(vec![Op::freeze("a"), Op::freeze("b")]);
        let j = JournalView {
            path: "m.csv.journal".into(),
            checksum: "ffff".into(),
            pending: vec![JournalOp {
                seq: 1,
                op: Op::freeze("b"),
                attempts: 0,
            }],
            ..JournalView::default()
        };
        let s = plan(&m, Some(&j), 10);
        assert!(!s.contains("WARNING"), "{s}");
        assert!(s.contains("to send: 1 requests"), "{s}");
    }

    fn windowed(start: &str, end: &str) -> Manifest {
        Manifest {
            window: Some(Window {
                times: WindowTimes::Once {
                    start: ts(start),
                    end: ts(end),
                },
                undo_at_end: false,
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
        let s = render_plan(&m, None, &opts(&m, 10, true));
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
        let s = render_plan(&m, None, &opts(&m, 10, false));
        assert!(s.contains("to send: 4 requests"), "{s}");
        assert!(!s.contains("GET /rooms"), "{s}");
        assert!(s.contains("snapshot: off"), "{s}");
        // Resuming: a room read by an earlier run is not read again.
        let j = JournalView {
            path: "m.csv.journal".into(),
            checksum: m.checksum.clone(),
            ops_changed: false,
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
            ..JournalView::default()
        };
        let s = render_plan(&m, Some(&j), &opts(&m, 10, true));
        assert!(s.contains("to send: 3 requests"), "{s}");
        assert!(s.contains("  snapshot  1 ("), "{s}");
        assert!(!s.contains("GET /rooms/a "), "{s}");
        assert!(s.contains("GET /rooms/c%2F1"), "{s}");
    }

    /// Bans: with snapshots, one ban-list read per room before its first ban or unban (none
    /// for mutes, the room reads apart); the credential lines follow the plan's `Auth`, and
    /// the variables not set are named.
    #[test]
    fn plan_of_bans_reads_ban_lists_and_names_credentials() {
        let m = manifest(vec![
            Op::ban("u", "a"),
            Op::unban("v", "a"),
            Op::mute("u", "a"),
            Op::ban("u", "b/1"),
        ]);
        let mut o = opts(&m, 10, true);
        o.auth = Auth::resolve(None, false);
        o.available = Some(Credentials::default());
        let s = render_plan(&m, None, &o);
        assert!(s.contains("to send: 6 requests"), "{s}");
        assert!(
            s.contains("  ban lists 2 (GET /blockStatus/room/{id}, one per room before its first ban or unban)"),
            "{s}"
        );
        assert!(!s.contains("  snapshot  "), "{s}");
        assert!(
            s.contains(
                "credentials: bans: API key (IMKIT_API_KEY)\ncredentials: mutes: API key (IMKIT_API_KEY)\n"
            ),
            "{s}"
        );
        assert!(
            s.contains(
                "missing credentials: IMKIT_API_KEY not set: `run` would refuse to start (exit 2)"
            ),
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
                "  GET /blockStatus/room/a  (snapshot, before m.csv:2)",
                "  POST /blockStatus/room/a/u  (m.csv:2)",
                "  DELETE /blockStatus/room/a/v  (m.csv:3)",
                "  POST /admin/clients/u/mute/a  (m.csv:4)",
                "  GET /blockStatus/room/b%2F1  (snapshot, before m.csv:5)",
                "  POST /blockStatus/room/b%2F1/u  (m.csv:5)",
            ]
        );
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

    /// A daily window: the plan names the occurrence `run` works in and the dated journal;
    /// with an undo, when it comes, or how far it has got.
    #[test]
    fn plan_of_a_daily_window_with_an_undo() {
        let zone = jiff::tz::TimeZone::get("Asia/Taipei").unwrap();
        let m = Manifest {
            window: Some(Window {
                times: WindowTimes::Daily(crate::manifest::Daily {
                    start: jiff::civil::time(22, 0, 0, 0),
                    end: jiff::civil::time(7, 0, 0, 0),
                    zone,
                    zone_name: "Asia/Taipei".into(),
                }),
                undo_at_end: true,
            }),
            ..manifest(vec![Op::mute("u", "r")])
        };
        let template = crate::runner::default_journal_template(&m, false);
        // 12:00 UTC is 20:00 in Taipei: the window opens in 2 hours.
        let schedule =
            crate::runner::schedule::resolve_at(&m, &template, None, ts("2026-11-22T12:00:00Z"));
        let o = PlanOptions {
            show: 10,
            snapshot: false,
            auth: Auth::default(),
            available: None,
            dated: true,
            schedule,
        };
        let s = render_plan(&m, None, &o);
        assert!(
            s.contains("journal: m.csv.2026-11-22.journal: none yet")
                && s.contains("({date} is 2026-11-22: the date this window opens, in Asia/Taipei)")
                && s.contains(
                    "window: 22:00-07:00 Asia/Taipei, daily; `run` works in the one of 2026-11-22"
                )
                && s.contains("it opens in 2h: `run` would wait until 2026-11-22T14:00:00Z")
                && s.contains(
                    "undo: at the window's end (2026-11-22T23:00:00Z), in 11h: `run` waits for it"
                ),
            "{s}"
        );
        // The main phase done, the undo planned and half sent.
        let j = JournalView {
            path: "m.csv.2026-11-22.journal".into(),
            checksum: m.checksum.clone(),
            counts: Counts {
                done: 1,
                ..Counts::default()
            },
            undo: Some(UndoPhase {
                planned_at: 0,
                due_at: None,
                total: 2,
                counts: Counts {
                    pending: 1,
                    done: 1,
                    ..Counts::default()
                },
                apart: vec![],
                unmutes_assumed: 1,
                ended_at: None,
            }),
            ..JournalView::default()
        };
        let s = render_plan(&m, Some(&j), &o);
        assert!(
            s.contains("the main phase is complete (1 done, 0 failed, 0 skipped)")
                && s.contains("undo: planned; 1 of 2 undo ops still to send")
                && !s.contains("would send nothing"),
            "{s}"
        );
    }
}
