//! Manifests: CSV and YAML parsing, validation with file:line:column errors, and expansion
//! into the ordered, de-duplicated list of [`Op`]s a job runs (docs/behaviour.md §1–§2).
//!
//! Untrusted input: every error names the file and line, all errors are collected (up to a
//! cap), and an invalid manifest yields no ops at all. The format-specific readers live in
//! [`csv`] (streamed, for million-row files) and [`yaml`] (budgeted, so an alias bomb is
//! refused); both hand raw ops to [`expand`], which removes duplicates and flags conflicts.
//! `validate` goes through [`lean`], which keeps a CSV's ops compact (field values as
//! hashes) and says exactly what [`load`] would.

pub(crate) mod csv;
mod expand;
pub mod lean;
pub(crate) mod plan;
pub mod window;
mod yaml;

pub use window::{Daily, Occurrence, Window, WindowTimes};

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::op::{Action, Op};
use crate::units::Rate;

/// How to read a manifest.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// The action for every row of a CSV without an `action` column (`--action`).
    pub action: Option<Action>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Csv,
    Yaml,
}

impl Format {
    /// The format of `path`, from its extension: `.yaml`/`.yml` are YAML, anything else CSV.
    pub(crate) fn of(path: &Path) -> Format {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref()
        {
            Some("yaml" | "yml") => Format::Yaml,
            _ => Format::Csv,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Yaml => "yaml",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an op came from: `sources[file]`, 1-based `line`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    pub file: u32,
    pub line: u32,
}

/// An op and the manifest line it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedOp {
    pub op: Op,
    pub source: Location,
}

/// The YAML `settings`; command-line flags win over these.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Settings {
    pub rate: Option<Rate>,
    pub concurrency: Option<u32>,
    pub snapshot: Option<bool>,
    pub max_attempts: Option<u32>,
    pub timeout: Option<std::time::Duration>,
    /// `room_auth: token | api-key`, as `--room-auth`.
    pub room_auth: Option<crate::op::RoomAuth>,
    /// Where the credentials' rate budgets are shared (`--budget`): `redis://HOST:PORT/DB`.
    pub budget: Option<crate::budget::BudgetLocation>,
}

/// A validated manifest, expanded into ops.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub path: PathBuf,
    pub format: Format,
    pub name: Option<String>,
    /// Hex SHA-256 over the manifest's bytes, those of every file it includes (with their
    /// names as written) and the `--action` given for a CSV without an action column.
    pub checksum: String,
    pub window: Option<Window>,
    pub settings: Settings,
    /// Ops in manifest order, duplicates removed.
    pub ops: Vec<PlannedOp>,
    /// `sources[0]` is the manifest; then each `rooms_file`/`clients_file` it names.
    pub sources: Vec<PathBuf>,
    /// Duplicates and conflicts, each naming lines; capped at [`MAX_WARNINGS`] entries plus a
    /// final "... and N more warnings" entry. [`Manifest::warning_count`] is how many there
    /// are in all.
    pub warnings: Vec<String>,
}

impl Manifest {
    /// A CSV-like manifest built in code, one op per line from line 2 (as under a header), for
    /// tests and library callers; its checksum is the SHA-256 of the ops themselves.
    pub fn from_ops(path: impl Into<PathBuf>, ops: Vec<Op>) -> Manifest {
        let path = path.into();
        let mut h = Sha256::new();
        for op in &ops {
            h.update(serde_json::to_vec(op).unwrap_or_default());
            h.update(b"\n");
        }
        Manifest {
            sources: vec![path.clone()],
            path,
            format: Format::Csv,
            name: None,
            checksum: hex::encode(h.finalize()),
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
            warnings: Vec::new(),
        }
    }

    /// `file:line` of an op's source, for messages.
    pub fn describe(&self, loc: Location) -> String {
        let file = self
            .sources
            .get(loc.file as usize)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "?".into());
        format!("{file}:{}", loc.line)
    }

    /// How many warnings the manifest has in all: the stored ones plus those that only the
    /// final "... and N more warnings" entry counts (that entry is not a warning itself).
    pub fn warning_count(&self) -> usize {
        count_warnings(&self.warnings)
    }

    /// Ops per action, in [`Action::ALL`] order.
    pub fn counts(&self) -> [(Action, usize); Action::COUNT] {
        count_actions(self.ops.iter().map(|p| p.op.action))
    }

    /// How many distinct rooms the ops touch (mute and unmute rooms included).
    pub fn distinct_rooms(&self) -> usize {
        count_distinct(&self.ops, |p| Some(&p.op.room))
    }

    /// How many distinct clients the ops touch.
    pub fn distinct_clients(&self) -> usize {
        count_distinct(&self.ops, |p| p.op.client.as_deref())
    }
}

/// How many warnings `warnings` (as [`Warnings::finish`] left them) stand for.
fn count_warnings(warnings: &[String]) -> usize {
    match warnings.split_last() {
        Some((last, kept)) if kept.len() == MAX_WARNINGS => more_warnings(last)
            .map(|n| kept.len().saturating_add(n))
            .unwrap_or(warnings.len()),
        _ => warnings.len(),
    }
}

/// Ops per action, in [`Action::ALL`] order.
fn count_actions(actions: impl Iterator<Item = Action>) -> [(Action, usize); Action::COUNT] {
    let mut out = Action::ALL.map(|a| (a, 0));
    for a in actions {
        out[a.index()].1 += 1;
    }
    out
}

/// How many distinct values `key` gives over `ops`. Sorts four-byte indices rather than
/// sixteen-byte string references: on a million-op manifest this runs at the memory peak.
fn count_distinct<T>(ops: &[T], key: impl Fn(&T) -> Option<&str>) -> usize {
    let Ok(n) = u32::try_from(ops.len()) else {
        let mut v: Vec<&str> = ops.iter().filter_map(&key).collect();
        v.sort_unstable();
        v.dedup();
        return v.len();
    };
    let mut idx: Vec<u32> = (0..n)
        .filter(|&i| key(&ops[i as usize]).is_some())
        .collect();
    let k = |i: &u32| key(&ops[*i as usize]);
    idx.sort_unstable_by(|a, b| k(a).cmp(&k(b)));
    idx.dedup_by(|a, b| k(a) == k(b));
    idx.len()
}

/// Errors kept in memory at most; further ones are only counted.
pub(crate) const MAX_STORED_ERRORS: usize = 1000;
/// Errors shown by [`ManifestErrors`]'s `Display`.
pub(crate) const MAX_SHOWN_ERRORS: usize = 50;
/// Warnings kept; further ones are summarised in one final entry.
pub(crate) const MAX_WARNINGS: usize = 100;

/// One problem in a manifest, at `file:line[:column]`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ManifestError {
    /// The file as the user named it (the manifest, or an included file).
    pub file: PathBuf,
    /// 1-based; 0 when the problem is the file as a whole (e.g. it cannot be read).
    pub line: u32,
    /// 1-based, where it helps.
    pub column: Option<u32>,
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
            if let Some(c) = self.column {
                write!(f, ":{c}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in a manifest, each naming file, line and (where it helps) column.
/// `Display` lists the first [`MAX_SHOWN_ERRORS`], one per line, then how many more there are.
#[derive(Clone, Debug, Default, PartialEq, Eq, thiserror::Error)]
pub struct ManifestErrors {
    /// The first [`MAX_STORED_ERRORS`] errors, in the order found.
    pub errors: Vec<ManifestError>,
    /// All errors found, including those not stored.
    pub total: usize,
}

impl ManifestErrors {
    fn push(&mut self, e: ManifestError) {
        self.total += 1;
        if self.errors.len() < MAX_STORED_ERRORS {
            self.errors.push(e);
        }
    }

    /// Records an error at `file:line[:column]`.
    pub(crate) fn at(
        &mut self,
        file: &Path,
        line: u32,
        column: Option<u32>,
        message: impl Into<String>,
    ) {
        self.push(ManifestError {
            file: file.to_path_buf(),
            line,
            column,
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    fn single(file: &Path, line: u32, message: impl Into<String>) -> ManifestErrors {
        let mut e = ManifestErrors::default();
        e.at(file, line, None, message);
        e
    }
}

impl fmt::Display for ManifestErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().take(MAX_SHOWN_ERRORS).enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        let shown = self.errors.len().min(MAX_SHOWN_ERRORS);
        if self.total > shown {
            write!(f, "\n... and {} more errors", self.total - shown)?;
        }
        Ok(())
    }
}

/// Warnings, capped at [`MAX_WARNINGS`] stored entries.
#[derive(Debug, Default)]
pub(crate) struct Warnings {
    pub list: Vec<String>,
    pub total: usize,
}

impl Warnings {
    pub fn push(&mut self, w: String) {
        self.push_with(|| w);
    }

    /// Counts a warning, formatting it only when it will be kept.
    pub fn push_with(&mut self, w: impl FnOnce() -> String) {
        self.total += 1;
        if self.list.len() < MAX_WARNINGS {
            self.list.push(w());
        }
    }

    pub fn finish(mut self) -> Vec<String> {
        if self.total > self.list.len() {
            let more = self.total - self.list.len();
            self.list.push(format!(
                "{MORE_WARNINGS_PREFIX}{more}{MORE_WARNINGS_SUFFIX}"
            ));
        }
        self.list
    }
}

/// The final entry [`Warnings::finish`] adds past the cap: prefix, count, suffix.
const MORE_WARNINGS_PREFIX: &str = "... and ";
const MORE_WARNINGS_SUFFIX: &str = " more warnings";

/// N of a "... and N more warnings" entry. No real warning has this shape: each starts with
/// a place ("line 4", "file:line") or the manifest's path followed by ": ".
fn more_warnings(entry: &str) -> Option<usize> {
    entry
        .strip_prefix(MORE_WARNINGS_PREFIX)?
        .strip_suffix(MORE_WARNINGS_SUFFIX)?
        .parse()
        .ok()
}

/// Largest manifest or included file read, in bytes (a guard against a wrong path such as a
/// disk image; a 1,000,000-row CSV is about 20 MB).
pub(crate) const MAX_FILE_BYTES: u64 = 1 << 30;

/// Reads, validates and expands a manifest.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<Manifest, ManifestErrors> {
    let format = Format::of(path);
    let mut hasher = Sha256::new();
    let parsed = match format {
        Format::Csv => csv::load_csv(path, opts, &mut hasher)?,
        Format::Yaml => {
            if opts.action.is_some() {
                return Err(ManifestErrors::single(
                    path,
                    0,
                    "--action applies only to a CSV without an `action` column; a YAML \
                     manifest names the action of each op: drop --action",
                ));
            }
            yaml::load_yaml(path, &mut hasher)?
        }
    };
    if let Some(a) = opts.action {
        hash_part(&mut hasher, b"--action", a.as_str().as_bytes());
    }
    let checksum = hex::encode(hasher.finalize());
    let mut warnings = parsed.warnings;
    let ops = expand::finish(parsed.ops, &parsed.sources, &mut warnings);
    if ops.is_empty() {
        warnings.push(format!(
            "{}: the manifest has no ops: nothing to do",
            path.display()
        ));
    }
    Ok(Manifest {
        path: path.to_path_buf(),
        format,
        name: parsed.name,
        checksum,
        window: parsed.window,
        settings: parsed.settings,
        ops,
        sources: parsed.sources,
        warnings: warnings.finish(),
    })
}

/// What a format reader hands to [`load`].
pub(crate) struct Parsed {
    pub name: Option<String>,
    pub window: Option<Window>,
    pub settings: Settings,
    pub ops: Vec<PlannedOp>,
    pub sources: Vec<PathBuf>,
    /// Warnings the reader found itself (e.g. an id listed twice in one YAML op, which only
    /// the reader can place by column); [`expand`] adds its own after these.
    pub warnings: Warnings,
}

/// Feeds one named part into the checksum, length-prefixed so parts cannot run together.
pub(crate) fn hash_part(h: &mut Sha256, name: &[u8], bytes: &[u8]) {
    h.update((name.len() as u64).to_le_bytes());
    h.update(name);
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

/// Reads a whole file (bounded by [`MAX_FILE_BYTES`]), with an error that names it.
pub(crate) fn read_file(path: &Path, shown: &Path) -> Result<Vec<u8>, String> {
    let f =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", shown.display()))?;
    let mut buf = Vec::new();
    f.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read {}: {e}", shown.display()))?;
    if buf.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "{} is larger than {} MiB: is this the right file?",
            shown.display(),
            MAX_FILE_BYTES >> 20
        ));
    }
    Ok(buf)
}

/// The closest name in `candidates` to `given` (case, `_`, `-` and spaces ignored, edit
/// distance up to 2), for "did you mean" hints.
pub(crate) fn suggest<'a>(given: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let norm = |s: &str| -> String {
        s.chars()
            .filter(|c| *c != '_' && *c != '-' && *c != ' ')
            .flat_map(char::to_lowercase)
            .collect()
    };
    let g = norm(given);
    if g.is_empty() || g.chars().count() > 64 {
        return None;
    }
    candidates
        .iter()
        .map(|c| (strsim::levenshtein(&g, &norm(c)), *c))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// " (did you mean `x`?)" or "".
pub(crate) fn did_you_mean(given: &str, candidates: &[&str]) -> String {
    suggest(given, candidates)
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default()
}

/// The message for an unknown action.
pub(crate) fn unknown_action(given: &str) -> String {
    let names: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
    format!(
        "unknown action {given:?}{}; expected one of: {}",
        did_you_mean(given, &names),
        names.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_catch_typos_only() {
        let cols = ["room", "client", "roomTags", "botMode"];
        assert_eq!(suggest("rooom", &cols), Some("room"));
        assert_eq!(suggest("room_tags", &cols), Some("roomTags"));
        assert_eq!(suggest("bot-mode", &cols), Some("botMode"));
        assert_eq!(suggest("wholly-different", &cols), None);
        assert_eq!(suggest("", &cols), None);
    }

    #[test]
    fn errors_display_capped() {
        let mut e = ManifestErrors::default();
        for i in 0..1200 {
            e.at(Path::new("m.csv"), i + 1, None, "bad");
        }
        assert_eq!(e.errors.len(), MAX_STORED_ERRORS);
        assert_eq!(e.total, 1200);
        let s = e.to_string();
        assert_eq!(s.lines().count(), MAX_SHOWN_ERRORS + 1);
        assert!(s.starts_with("m.csv:1: bad\nm.csv:2: bad"));
        assert!(s.ends_with("... and 1150 more errors"), "{s}");
    }

    #[test]
    fn error_display_has_column_when_known() {
        let e = ManifestError {
            file: "a.yaml".into(),
            line: 3,
            column: Some(5),
            message: "x".into(),
        };
        assert_eq!(e.to_string(), "a.yaml:3:5: x");
        let e = ManifestError {
            line: 0,
            column: None,
            ..e
        };
        assert_eq!(e.to_string(), "a.yaml: x");
    }

    #[test]
    fn warnings_capped() {
        let mut w = Warnings::default();
        for i in 0..150 {
            w.push(format!("w{i}"));
        }
        let v = w.finish();
        assert_eq!(v.len(), MAX_WARNINGS + 1);
        assert_eq!(v.last().unwrap(), "... and 50 more warnings");
        let m = Manifest {
            warnings: v,
            ..Manifest::from_ops("m.csv", vec![])
        };
        assert_eq!(m.warning_count(), 150);
    }

    #[test]
    fn warning_count_below_and_at_the_cap() {
        let count = |n: usize| {
            let mut w = Warnings::default();
            for i in 0..n {
                w.push(format!("line {i} repeats line 1"));
            }
            Manifest {
                warnings: w.finish(),
                ..Manifest::from_ops("m.csv", vec![])
            }
            .warning_count()
        };
        for n in [0, 1, 99, 100, 101, 5_000] {
            assert_eq!(count(n), n);
        }
        // Only the entry after MAX_WARNINGS kept ones is the summary.
        let m = Manifest {
            warnings: vec!["... and 7 more warnings".into()],
            ..Manifest::from_ops("m.csv", vec![])
        };
        assert_eq!(m.warning_count(), 1);
    }

    #[test]
    fn distinct_rooms_and_clients() {
        let m = Manifest::from_ops(
            "m.csv",
            vec![
                Op::freeze("b"),
                Op::mute("u", "a"),
                Op::freeze("a"),
                Op::unmute("v", "c"),
                Op::mute("u", "b"),
            ],
        );
        assert_eq!(m.distinct_rooms(), 3);
        assert_eq!(m.distinct_clients(), 2);
        assert_eq!(Manifest::from_ops("m.csv", vec![]).distinct_rooms(), 0);
    }

    #[test]
    fn format_from_extension() {
        assert_eq!(Format::of(Path::new("a.YML")), Format::Yaml);
        assert_eq!(Format::of(Path::new("a.yaml")), Format::Yaml);
        assert_eq!(Format::of(Path::new("a.csv")), Format::Csv);
        assert_eq!(Format::of(Path::new("rooms")), Format::Csv);
    }
}
