//! `revert`: writes the manifest that undoes what the job changed, and says on stderr what
//! it could not cover.

use std::path::PathBuf;

use clap::Args;

use super::files::{open_journal, write_manifest};
use crate::Exit;
use crate::journal::report::{unban_note, unmute_assumption_note, write_revert_manifest};
use crate::journal::running_pid;

#[derive(Debug, Args)]
pub(super) struct RevertArgs {
    /// The job's journal.
    #[arg(value_name = "JOURNAL")]
    journal: PathBuf,

    /// Write the undo manifest to FILE instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// Writes the undo manifest, warning first when the job is not finished.
pub(super) fn revert(args: &RevertArgs) -> anyhow::Result<Exit> {
    let journal = open_journal(&args.journal)?;
    let counts = journal.counts().map_err(crate::ExitError::from)?;
    if let Some(pid) = running_pid(&args.journal) {
        eprintln!(
            "warning: a run{} is still driving this job; the revert covers only what is done so far",
            pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
        );
    } else if counts.pending > 0 {
        eprintln!(
            "warning: the job is not finished ({} ops pending); the revert covers only what is done so far, \
             and ops in flight when it stopped may have been applied without being recorded: \
             run the job to its end before reverting it",
            counts.pending
        );
    }
    if let Some(u) = journal.undo_phase().map_err(crate::ExitError::from)? {
        eprintln!(
            "warning: this job has an undo phase ({} of {} undo ops done): it already applies this \
             inverse itself; running the manifest below too would apply it again",
            u.counts.done, u.total
        );
    }
    let mut assumed = 0;
    let mut unbans = 0;
    write_manifest(
        args.output.as_deref(),
        &args.journal,
        "revert ops written",
        "ops listed apart (prior state unknown, not reverted; also as comments at the end of the manifest)",
        |w| {
            let r = write_revert_manifest(&journal, w)?;
            assumed = r.unmutes_assumed;
            unbans = r.unbans;
            Ok((r.written, r.apart))
        },
    )?;
    if assumed > 0 {
        eprintln!("note: {}", unmute_assumption_note(assumed));
    }
    if unbans > 0 {
        eprintln!("note: {}", unban_note(unbans));
    }
    Ok(Exit::Success)
}
