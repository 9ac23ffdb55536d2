//! `run`: executes a job, or resumes it from its journal. The flags become a checked
//! [`crate::runner::Job`] in [`super::job`]; SIGINT and SIGTERM stop it.

use std::path::PathBuf;

use clap::Args;

use super::{GlobalArgs, ManifestArgs, SnapshotArgs, job, signal, values};
use crate::Exit;
use crate::op::RoomAuth;
use crate::output::ProgressMode;
use crate::units::Rate;

/// Flags of `run`, as typed. [`super::job::from_args`] turns them into a checked job.
#[derive(Debug, Args, Clone)]
pub(super) struct RunArgs {
    #[command(flatten)]
    pub(super) manifest: ManifestArgs,

    /// API base URL; https:// unless the host is a loopback address. The flag wins over
    /// IMKIT_BASE_URL in the environment, which wins over the one in --env-file.
    #[arg(long, env = "IMKIT_BASE_URL", value_name = "URL")]
    pub(super) base_url: Option<String>,

    /// Read IMKIT_BASE_URL and the credentials (IMKIT_CLIENT_KEY, IMKIT_TOKEN,
    /// IMKIT_API_KEY) from this file too (KEY=VALUE lines). The environment wins over the
    /// file, and --base-url over both; when two set a variable, the one used is logged (by
    /// name, never its value).
    #[arg(long, value_name = "FILE")]
    pub(super) env_file: Option<PathBuf>,

    /// The job's journal; `{date}` in it becomes YYYY-MM-DD: the date the daily window
    /// opens (in its zone), else today's local date (default: MANIFEST.journal, or
    /// MANIFEST.{date}.journal for a daily window).
    #[arg(long, value_name = "PATH")]
    pub(super) journal: Option<PathBuf>,

    /// Requests in flight at most (default 8, or the manifest's settings).
    #[arg(long, value_name = "N")]
    pub(super) concurrency: Option<u32>,

    /// Requests per credential, e.g. 600/min or 10/s (default 800/min, 80% of the API limit).
    #[arg(long, value_name = "RATE")]
    pub(super) rate: Option<Rate>,

    /// Where each credential's rate budget is shared: redis://HOST:PORT/DB shares it with runs
    /// on other hosts. Default: every run on this host that uses the credential shares one
    /// (a ledger under $XDG_RUNTIME_DIR, else the temp dir); --sandbox keeps its own.
    #[arg(long, value_name = "URL")]
    pub(super) budget: Option<String>,

    /// Attempts per op before it counts as failed (default 6).
    #[arg(long, value_name = "N")]
    pub(super) max_attempts: Option<u32>,

    /// Timeout of one request (default 30s).
    #[arg(long, value_name = "DURATION", value_parser = crate::units::parse_duration)]
    pub(super) timeout: Option<std::time::Duration>,

    /// Stop dispatching at this time (RFC 3339, e.g. 2026-11-23T02:00:00+08:00); exit 4.
    #[arg(long, value_name = "TIME")]
    pub(super) until: Option<String>,

    /// When the window has not opened yet (or the undo is not due yet), exit 4 at once
    /// instead of waiting (for cron).
    #[arg(long)]
    pub(super) no_wait: bool,

    /// At this time (RFC 3339), undo what the job changed, in the same run (as the window's
    /// `undo_at_end`); for a job without a daily window. Turns --snapshot on for room ops
    /// unless --no-snapshot is given.
    #[arg(long, value_name = "TIME")]
    pub(super) undo_at: Option<String>,

    /// Stop dispatching after this long (e.g. 45m); exit 4.
    #[arg(long, value_name = "DURATION", value_parser = crate::units::parse_duration)]
    pub(super) max_duration: Option<std::time::Duration>,

    /// Abort (exit 3) once more than N ops have failed permanently.
    #[arg(long, value_name = "N")]
    pub(super) max_failures: Option<u64>,

    /// Abort (exit 3) once the share of permanently failed ops passes R (0..1), judged from
    /// the 20th finished op on (so the first failure of a run is not 100%).
    #[arg(long, value_name = "R")]
    pub(super) max_failure_ratio: Option<f64>,

    #[command(flatten)]
    pub(super) snapshot: SnapshotArgs,

    /// The credential of room ops and bans: token (IMKIT_CLIENT_KEY + IMKIT_TOKEN) or
    /// api-key (IMKIT_API_KEY). Default: the token when both its variables are set, else the
    /// API key (or the manifest's `settings.room_auth`). Mute and unmute always use the API
    /// key.
    #[arg(long, value_name = "WHICH", value_parser = values::room_auth())]
    pub(super) room_auth: Option<RoomAuth>,

    /// Start a new job even if the journal exists (the old one is renamed, never deleted).
    #[arg(long, conflicts_with = "retry_failed")]
    pub(super) fresh: bool,

    /// Resume and also re-attempt ops that failed permanently.
    #[arg(long)]
    pub(super) retry_failed: bool,

    /// Resume a job whose manifest's ops changed: ops done or failed stay as they are (nothing
    /// done is sent again), added and changed ops are sent, pending ops no longer in the
    /// manifest are skipped.
    #[arg(long, conflicts_with = "fresh")]
    pub(super) replan: bool,

    /// Resume a job recorded against another base URL, when this one is the same service
    /// under another address (never a sandbox job against an API, nor the other way round).
    #[arg(long, conflicts_with = "fresh")]
    pub(super) retarget: bool,

    /// Run against an in-process emulator seeded with every room and client of the manifest
    /// (a base URL from --base-url or IMKIT_BASE_URL is then ignored, with a warning).
    #[arg(long)]
    pub(super) sandbox: bool,

    /// At the end of every run, write the job's figures here in the Prometheus text format
    /// (atomically), e.g. for node_exporter's textfile collector.
    #[arg(long, value_name = "PATH")]
    pub(super) metrics_file: Option<PathBuf>,

    /// Live progress bar: auto (on a terminal only), always, never.
    #[arg(long, value_parser = values::progress_mode(), default_value = "auto")]
    pub(super) progress: ProgressMode,
}

/// Runs the job the flags describe until it ends or a signal stops it.
pub(super) fn run(args: &RunArgs, global: &GlobalArgs) -> anyhow::Result<Exit> {
    let job = job::from_args(args, global)?;
    super::runtime()?.block_on(crate::runner::run_job(job, signal::run_shutdown()))
}
