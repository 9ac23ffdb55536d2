//! `report`: one row per op with its outcome (CSV or JSON), one self-contained page for
//! people (HTML), or with `--failed` the failed ops as a CSV manifest `run` accepts.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::files::{open_journal, write_manifest, write_with};
use crate::Exit;
use crate::journal::report::{write_failed_manifest, write_report_csv, write_report_json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ReportFormat {
    Csv,
    Json,
    Html,
}

#[derive(Debug, Args)]
pub(super) struct ReportArgs {
    /// The job's journal.
    #[arg(value_name = "JOURNAL")]
    journal: PathBuf,

    /// Output format: csv and json (stable, one row per op), or html (one self-contained
    /// page for people: counts, charts over time, failures, runs).
    #[arg(long, value_enum, default_value_t = ReportFormat::Csv)]
    format: ReportFormat,

    /// Write the failed ops as a CSV manifest that `run` accepts, instead of the report.
    #[arg(long)]
    failed: bool,

    /// Write to FILE instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// Writes the report, or with `--failed` the failed ops as a manifest.
pub(super) fn report(args: &ReportArgs) -> anyhow::Result<Exit> {
    // `--format` defaults to csv, so json here was asked for: refuse it rather than quietly
    // writing the CSV manifest anyway.
    if args.failed && matches!(args.format, ReportFormat::Json) {
        return Err(crate::ExitError::new(
            Exit::Invalid,
            "--failed writes the failed ops as a CSV manifest (the input `run` takes), so it \
             cannot be combined with --format json: drop --format json, or drop --failed for the \
             JSON report of every op (filter it on \"state\": \"failed\")",
        )
        .into());
    }
    if args.failed && matches!(args.format, ReportFormat::Html) {
        return Err(crate::ExitError::new(
            Exit::Invalid,
            "--failed writes the failed ops as a CSV manifest (the input `run` takes), so it \
             cannot be combined with --format html: drop --format html, or drop --failed for the \
             page (it lists the failures by error code)",
        )
        .into());
    }
    let journal = open_journal(&args.journal)?;
    if args.failed {
        write_manifest(
            args.output.as_deref(),
            &args.journal,
            "failed ops written as a manifest",
            "failed ops cannot be written in a CSV manifest (listed as comments at its end)",
            |w| write_failed_manifest(&journal, w),
        )?;
        return Ok(Exit::Success);
    }
    write_with(args.output.as_deref(), &args.journal, |w| {
        match args.format {
            ReportFormat::Csv => write_report_csv(&journal, w),
            ReportFormat::Json => write_report_json(&journal, w),
            ReportFormat::Html => crate::observe::html::write_report_html(&journal, w),
        }
    })?;
    Ok(Exit::Success)
}
