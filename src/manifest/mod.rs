//! Manifests: CSV and YAML parsing, validation with file:line:column errors, and expansion
//! into the ordered, de-duplicated list of [`Op`]s a job runs (SPEC §1–§2).
//!
//! Untrusted input: every error names the file and line, all errors are collected (up to a
//! cap), and an invalid manifest yields no ops at all.

pub mod command;

use std::path::{Path, PathBuf};

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

/// The YAML `window`: no op is dispatched before `start` or after `end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub start: jiff::Timestamp,
    pub end: jiff::Timestamp,
}

/// The YAML `settings`; command-line flags win over these.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Settings {
    pub rate: Option<Rate>,
    pub concurrency: Option<u32>,
    pub snapshot: Option<bool>,
    pub max_attempts: Option<u32>,
    pub timeout: Option<std::time::Duration>,
}

/// A validated manifest, expanded into ops.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub path: PathBuf,
    pub format: Format,
    pub name: Option<String>,
    /// Hex SHA-256 over the manifest's bytes and those of every file it includes.
    pub checksum: String,
    pub window: Option<Window>,
    pub settings: Settings,
    /// Ops in manifest order, duplicates removed.
    pub ops: Vec<PlannedOp>,
    /// `sources[0]` is the manifest; then each `rooms_file`/`clients_file` it names.
    pub sources: Vec<PathBuf>,
    pub warnings: Vec<String>,
}

/// Reads, validates and expands a manifest.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<Manifest, ManifestErrors> {
    let _ = (path, opts);
    unimplemented!("manifest::load")
}

/// Every problem found in a manifest, each naming file, line and (where it helps) column.
#[derive(Debug, thiserror::Error)]
#[error("invalid manifest")]
pub struct ManifestErrors {
    pub errors: Vec<String>,
}
