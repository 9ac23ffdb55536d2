//! `validate`: loads a manifest and says what it holds (counts per action, distinct rooms
//! and clients, window, settings, warnings), or lists every error. Sends nothing. The text
//! is rendered by pure functions, tested without a terminal.

use std::fmt::Write as _;

use clap::Args;

use super::ManifestArgs;
use crate::Exit;
use crate::manifest::lean::{Summary, summarize};
use crate::manifest::{LoadOptions, ManifestErrors};
use crate::op::Action;

/// What `validate --help` adds: the formats in brief, and where they are described.
pub(super) const HELP: &str = "\
Manifests (README.md, section \"Manifests\"; jobs/examples/ has one of each kind):
  CSV   a header row, then one op per row. Columns, in any order: action, room, client,
        and the update fields name, cover, description, roomTags, webhook, botMode,
        extParams, opening, owner, managers, status. An empty cell is \"not given\";
        roomTags and managers are ;-separated, botMode true|false, opening and status 0|1.
        Without an action column, --action ACTION applies to every row.
  YAML  version: 1, optional name, window {start, end, timezone, undo_at_end} (RFC 3339
        times, or times of day HH:MM in an IANA timezone for a daily window), settings
        {rate, concurrency, snapshot, max_attempts, timeout, room_auth}, and ops: each with an action,
        room/rooms, client/clients, rooms_file/clients_file (CSV files relative to the
        manifest) and, for update, set: {field: value}.

Exit codes: 0 valid, 2 invalid (every error is listed with file:line:column).";

#[derive(Debug, Args)]
pub(super) struct ValidateArgs {
    #[command(flatten)]
    manifest: ManifestArgs,

    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Every error, one `error: file:line[:col]: message` line each (capped), then a count and
/// what to do.
pub(super) fn render_errors(e: &ManifestErrors) -> String {
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

pub(super) fn counts_block(s: &mut String, counts: &[(Action, usize)]) {
    for (a, n) in counts {
        let _ = writeln!(s, "  {:<9} {n}", a.as_str());
    }
}

/// The human summary of a valid manifest.
fn render_validate(m: &Summary) -> String {
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
        let undo = if w.undo_at_end {
            "; at its end, the job's changes are undone"
        } else {
            ""
        };
        let _ = writeln!(s, "window: {}{undo}", w.describe());
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
    if let Some(a) = st.room_auth {
        set.push(format!("room_auth {a}"));
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
fn validate_json(m: &Summary) -> serde_json::Value {
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
fn errors_json(e: &ManifestErrors) -> serde_json::Value {
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

/// Checks the manifest and prints what it holds; exit 2 when it is invalid.
pub(super) fn validate(args: &ValidateArgs) -> anyhow::Result<Exit> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Manifest;
    use crate::op::Op;
    use std::path::Path;

    fn manifest(ops: Vec<Op>) -> Manifest {
        Manifest {
            checksum: "abcdef0123456789".into(),
            ..Manifest::from_ops("m.csv", ops)
        }
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
