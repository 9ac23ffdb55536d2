//! `validate` and `plan`: load a manifest and say what it holds, or what `run` would send
//! now given an existing journal. Neither sends a request nor writes a journal. The text is
//! rendered by pure functions ([`render_validate`], [`validate_json`], [`render_errors`],
//! [`render_plan`]) so it is tested without a terminal or a journal.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::{LoadOptions, Manifest, ManifestErrors, load};
use crate::Exit;
use crate::api::Request;
use crate::cli::{ManifestArgs, PlanArgs, ValidateArgs};
use crate::journal::{Journal, JournalOp};
use crate::op::{Action, Credential};

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
pub fn render_validate(m: &Manifest) -> String {
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
    let _ = writeln!(s, "valid: {} ops", m.ops.len());
    counts_block(&mut s, &m.counts());
    let _ = writeln!(s, "distinct rooms: {}", m.distinct_rooms());
    let _ = writeln!(s, "distinct clients: {}", m.distinct_clients());
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
pub fn validate_json(m: &Manifest) -> serde_json::Value {
    let actions: serde_json::Map<String, serde_json::Value> = m
        .counts()
        .iter()
        .map(|(a, n)| (a.as_str().to_string(), serde_json::json!(n)))
        .collect();
    serde_json::json!({
        "valid": true,
        "manifest": m.path.display().to_string(),
        "format": m.format.as_str(),
        "name": m.name,
        "checksum": m.checksum,
        "ops": m.ops.len(),
        "actions": actions,
        "rooms": m.distinct_rooms(),
        "clients": m.distinct_clients(),
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
    match load_args(&args.manifest) {
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
#[derive(Clone, Debug)]
pub struct JournalView {
    pub path: PathBuf,
    /// The manifest checksum the journal was written for.
    pub checksum: String,
    /// Ops not yet final, in manifest order.
    pub pending: Vec<JournalOp>,
}

/// What `run` would send now: counts per action and the first `show` requests. With a
/// journal for this manifest, only its pending ops; with a journal for another manifest,
/// a warning that `run` would refuse, and the plan of a `--fresh` run.
pub fn render_plan(m: &Manifest, journal: Option<&JournalView>, show: usize) -> String {
    let mut s = String::new();
    let _ = write!(s, "plan for {} ({})", m.path.display(), m.format);
    if let Some(n) = &m.name {
        let _ = write!(s, ", name {n:?}");
    }
    let _ = writeln!(s);
    if let Some(w) = &m.window {
        let _ = writeln!(
            s,
            "window: {} to {} (nothing is sent outside it)",
            w.start, w.end
        );
    }
    let all: Vec<(Option<u64>, &crate::op::Op)> = m
        .ops
        .iter()
        .enumerate()
        .map(|(i, p)| (Some(i as u64), &p.op))
        .collect();
    let todo: Vec<(Option<u64>, &crate::op::Op)> = match journal {
        None => {
            let _ = writeln!(s, "journal: none yet; `run` starts a new job");
            all
        }
        Some(j) if j.checksum != m.checksum => {
            let _ = writeln!(
                s,
                "WARNING: the journal {} was written for a different manifest (checksum {} \
                 there, {} now): `run` would refuse to resume it. Use `run --fresh` to start a \
                 new job (the old journal is kept, renamed). The plan below is that of a fresh \
                 run.",
                j.path.display(),
                short(&j.checksum),
                short(&m.checksum)
            );
            all
        }
        Some(j) => {
            let _ = writeln!(
                s,
                "journal: {}: {} of {} ops already final; resuming sends the rest",
                j.path.display(),
                m.ops.len().saturating_sub(j.pending.len()),
                m.ops.len()
            );
            j.pending.iter().map(|p| (Some(p.seq), &p.op)).collect()
        }
    };
    let mut counts = [0usize; 5];
    for (_, op) in &todo {
        if let Some(i) = Action::ALL.iter().position(|a| *a == op.action) {
            counts[i] += 1;
        }
    }
    let _ = writeln!(s, "to send: {} requests", todo.len());
    let per: Vec<(Action, usize)> = Action::ALL.into_iter().zip(counts).collect();
    counts_block(&mut s, &per);
    let mut creds: Vec<Credential> = todo.iter().map(|(_, o)| o.credential()).collect();
    creds.sort();
    creds.dedup();
    if !creds.is_empty() {
        let c: Vec<&str> = creds.iter().map(|c| c.describe()).collect();
        let _ = writeln!(s, "credentials needed: {}", c.join("; "));
    }
    if !todo.is_empty() && show > 0 {
        let _ = writeln!(s, "first {} requests:", show.min(todo.len()));
        for (seq, op) in todo.iter().take(show) {
            let place = seq
                .and_then(|i| m.ops.get(i as usize))
                .filter(|p| &p.op == *op)
                .map(|p| format!("  ({})", m.describe(p.source)))
                .unwrap_or_default();
            let _ = writeln!(s, "  {}{place}", Request::for_op(op));
        }
        if todo.len() > show {
            let _ = writeln!(s, "  ... and {} more", todo.len() - show);
        }
    }
    for w in &m.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    let _ = writeln!(s, "nothing was sent.");
    s
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
    let view = if path.exists() {
        let j = Journal::open_read_only(&path)
            .with_context(|| format!("cannot read the journal {}", path.display()))?;
        let meta = j
            .meta()
            .with_context(|| format!("cannot read the journal {}", path.display()))?;
        let pending = j
            .pending()
            .with_context(|| format!("cannot read the journal {}", path.display()))?;
        Some(JournalView {
            path,
            checksum: meta.checksum,
            pending,
        })
    } else {
        None
    };
    print!("{}", render_plan(&m, view.as_ref(), args.show));
    Ok(Exit::Success)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::Op;

    fn manifest(ops: Vec<Op>) -> Manifest {
        Manifest {
            checksum: "abcdef0123456789".into(),
            ..Manifest::from_ops("m.csv", ops)
        }
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
        let s = render_plan(&m, None, 2);
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
        };
        let s = render_plan(&m, Some(&j), 10);
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
            pending: vec![],
        };
        let s = render_plan(&m, Some(&j), 10);
        assert!(s.contains("would refuse"), "{s}");
        assert!(s.contains("--fresh"), "{s}");
        assert!(s.contains("to send: 1 requests"), "{s}");
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
        let s = render_validate(&m);
        assert!(s.contains("valid: 3 ops"), "{s}");
        assert!(s.contains("distinct rooms: 2"), "{s}");
        assert!(s.contains("distinct clients: 2"), "{s}");
        assert!(s.contains("warnings (1):\n  line 9 repeats line 2"), "{s}");
        let j = validate_json(&m);
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
        let s = render_validate(&m);
        assert!(
            s.contains("warnings (5000):\n  line 3 repeats line 2"),
            "{s}"
        );
        assert!(s.ends_with("  ... and 4900 more warnings\n"), "{s}");
        let j = validate_json(&m);
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
