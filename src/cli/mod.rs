//! The command line: clap definitions for every command of SPEC §3, logging set-up, and the
//! dispatch from a parsed command to the library. Raw flags become a validated job in
//! [`job`] (the second stage), so nothing past this module ever sees an unchecked flag.

pub mod job;
mod sandbox;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::Exit;
use crate::op::Action;
use crate::units::Rate;

const AFTER_HELP: &str = "\
Exit codes: 0 every op done; 1 finished, some ops failed permanently; 2 invalid manifest,
usage or configuration (nothing was sent); 3 aborted (credentials rejected, failure bound
passed, API host never reached); 4 stopped before the end (deadline, SIGINT/SIGTERM),
resumable.

Credentials come only from the environment (or --env-file): IMKIT_CLIENT_KEY and IMKIT_TOKEN
for room ops, IMKIT_API_KEY for mute and unmute.

Try it: imkit-batch run jobs/examples/maintenance-freeze.yaml --sandbox";

/// Bulk freeze, unfreeze, update rooms and mute/unmute clients on IMKIT from a CSV or YAML
/// manifest, with rate limiting, retries and a crash-safe journal that resumes where it stopped.
#[derive(Debug, Parser)]
#[command(name = "imkit-batch", version, after_help = AFTER_HELP, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    #[command(flatten)]
    pub global: GlobalArgs,
}

/// The help heading of the flags every command accepts.
const GLOBAL: &str = "Global options";

/// What `validate --help` adds: the formats in brief, and where they are described.
const VALIDATE_HELP: &str = "\
Manifests (README.md, section \"Manifests\"; jobs/examples/ has one of each kind):
  CSV   a header row, then one op per row. Columns, in any order: action, room, client,
        and the update fields name, cover, description, roomTags, webhook, botMode,
        extParams, opening, owner, managers, status. An empty cell is \"not given\";
        roomTags and managers are ;-separated, botMode true|false, opening and status 0|1.
        Without an action column, --action ACTION applies to every row.
  YAML  version: 1, optional name, window {start, end} and settings {rate, concurrency,
        snapshot, max_attempts, timeout}, and ops: each with an action, room/rooms,
        client/clients, rooms_file/clients_file (CSV files relative to the manifest) and,
        for update, set: {field: value}.

Exit codes: 0 valid, 2 invalid (every error is listed with file:line:column).";

/// Flags every command accepts.
#[derive(Debug, Args, Clone)]
pub struct GlobalArgs {
    /// More log output (-v: debug, -vv: trace). RUST_LOG, when set, wins.
    #[arg(short, long, action = clap::ArgAction::Count, global = true, help_heading = GLOBAL)]
    pub verbose: u8,

    /// Less output: warnings and errors only.
    #[arg(
        short,
        long,
        global = true,
        conflicts_with = "verbose",
        help_heading = GLOBAL
    )]
    pub quiet: bool,

    /// Log format on stderr: human text, or one JSON object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true, help_heading = GLOBAL)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse and check a manifest; print counts per action, distinct rooms and clients, and
    /// warnings. Sends nothing.
    #[command(after_help = VALIDATE_HELP)]
    Validate(ValidateArgs),
    /// Show what `run` would send now, taking an existing journal into account. Sends nothing.
    Plan(PlanArgs),
    /// Execute the job, or resume it from its journal.
    Run(Box<RunArgs>),
    /// Progress and outcome counts of a job, from its journal.
    Status(StatusArgs),
    /// One row per op with its outcome; --failed writes the failed ops as a manifest.
    Report(ReportArgs),
    /// Write the manifest that undoes what the job changed.
    Revert(RevertArgs),
    /// Serve a local IMKIT emulator for rehearsals and tests.
    Sandbox(Box<sandbox::SandboxArgs>),
}

/// Where the manifest is and how to read it.
#[derive(Debug, Args, Clone)]
pub struct ManifestArgs {
    /// The manifest: a CSV (.csv) or YAML (.yaml, .yml) file.
    #[arg(value_name = "MANIFEST")]
    pub manifest: PathBuf,

    /// The action for every row of a CSV without an `action` column.
    #[arg(long, value_enum)]
    pub action: Option<Action>,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub manifest: ManifestArgs,

    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub manifest: ManifestArgs,

    /// The journal to take into account (default: MANIFEST.journal).
    #[arg(long, value_name = "PATH")]
    pub journal: Option<PathBuf>,

    /// How many requests to list.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub show: usize,

    /// As for `run`: list the room reads (GET /rooms/{id}) a run with --snapshot makes.
    #[command(flatten)]
    pub snapshot: SnapshotArgs,
}

/// Flags of `run`, as typed. [`job::JobConfig::from_args`] turns them into a checked job.
#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub manifest: ManifestArgs,

    /// API base URL; https:// unless the host is a loopback address. The flag wins over
    /// IMKIT_BASE_URL in the environment, which wins over the one in --env-file.
    #[arg(long, env = "IMKIT_BASE_URL", value_name = "URL")]
    pub base_url: Option<String>,

    /// Read IMKIT_BASE_URL and the credentials (IMKIT_CLIENT_KEY, IMKIT_TOKEN,
    /// IMKIT_API_KEY) from this file too (KEY=VALUE lines). The environment wins over the
    /// file, and --base-url over both; when two set a variable, the one used is logged (by
    /// name, never its value).
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<PathBuf>,

    /// The job's journal (default: MANIFEST.journal).
    #[arg(long, value_name = "PATH")]
    pub journal: Option<PathBuf>,

    /// Requests in flight at most (default 8, or the manifest's settings).
    #[arg(long, value_name = "N")]
    pub concurrency: Option<u32>,

    /// Requests per credential, e.g. 600/min or 10/s (default 800/min, 80% of the API limit).
    #[arg(long, value_name = "RATE")]
    pub rate: Option<Rate>,

    /// Attempts per op before it counts as failed (default 6).
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<u32>,

    /// Timeout of one request (default 30s).
    #[arg(long, value_name = "DURATION", value_parser = crate::units::parse_duration)]
    pub timeout: Option<std::time::Duration>,

    /// Stop dispatching at this time (RFC 3339, e.g. 2026-11-23T02:00:00+08:00); exit 4.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,

    /// Stop dispatching after this long (e.g. 45m); exit 4.
    #[arg(long, value_name = "DURATION", value_parser = crate::units::parse_duration)]
    pub max_duration: Option<std::time::Duration>,

    /// Abort (exit 3) once more than N ops have failed permanently.
    #[arg(long, value_name = "N")]
    pub max_failures: Option<u64>,

    /// Abort (exit 3) once the share of permanently failed ops passes R (0..1), judged from
    /// the 20th finished op on (so the first failure of a run is not 100%).
    #[arg(long, value_name = "R")]
    pub max_failure_ratio: Option<f64>,

    #[command(flatten)]
    pub snapshot: SnapshotArgs,

    /// Start a new job even if the journal exists (the old one is renamed, never deleted).
    #[arg(long, conflicts_with = "retry_failed")]
    pub fresh: bool,

    /// Resume and also re-attempt ops that failed permanently.
    #[arg(long)]
    pub retry_failed: bool,

    /// Run against an in-process emulator seeded with every room and client of the manifest
    /// (a base URL from --base-url or IMKIT_BASE_URL is then ignored, with a warning).
    #[arg(long)]
    pub sandbox: bool,

    /// Live progress bar: auto (on a terminal only), always, never.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
}

/// `--snapshot` / `--no-snapshot`, shared by `run` and `plan`.
#[derive(Debug, Args, Clone, Copy, Default)]
pub struct SnapshotArgs {
    /// Read each room (GET /rooms/{id}) before its first change, so `revert` can restore it.
    #[arg(long)]
    pub snapshot: bool,

    /// Do not read rooms first, even if the manifest's settings say `snapshot: true`.
    #[arg(long, conflicts_with = "snapshot")]
    pub no_snapshot: bool,
}

impl SnapshotArgs {
    /// Whether rooms are read before their first change: a flag wins over the manifest's
    /// `settings.snapshot` (SPEC §2: command-line flags win); off by default.
    pub fn resolve(self, setting: Option<bool>) -> bool {
        if self.no_snapshot {
            false
        } else {
            self.snapshot || setting.unwrap_or(false)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The job's journal.
    #[arg(value_name = "JOURNAL")]
    pub journal: PathBuf,

    /// Print JSON (a stable format for scripts).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Csv,
    Json,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The job's journal.
    #[arg(value_name = "JOURNAL")]
    pub journal: PathBuf,

    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Csv)]
    pub format: ReportFormat,

    /// Write the failed ops as a CSV manifest that `run` accepts, instead of the report.
    #[arg(long)]
    pub failed: bool,

    /// Write to FILE instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RevertArgs {
    /// The job's journal.
    #[arg(value_name = "JOURNAL")]
    pub journal: PathBuf,

    /// Write the undo manifest to FILE instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Parses the process arguments, runs the command and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.global);
    let format = cli.global.log_format;
    let result = dispatch(cli);
    match result {
        Ok(exit) => exit.into(),
        Err(err) => {
            let exit = crate::exit_for_error(&err);
            match format {
                LogFormat::Text => eprintln!("error: {err:#}"),
                // stderr stays one JSON object per line.
                LogFormat::Json => eprintln!(
                    "{}",
                    crate::runner::progress::json_event(
                        "ERROR",
                        &format!("{err:#}"),
                        serde_json::json!({ "exit_code": exit.code() }),
                    )
                ),
            }
            exit.into()
        }
    }
}

/// Runs one parsed command.
pub fn dispatch(cli: Cli) -> anyhow::Result<Exit> {
    match cli.command {
        Command::Validate(args) => crate::manifest::command::validate(&args),
        Command::Plan(args) => crate::manifest::command::plan(&args),
        Command::Run(args) => {
            let config = job::JobConfig::from_args(&args, &cli.global)?;
            runtime()?.block_on(crate::runner::run_job(config))
        }
        Command::Status(args) => crate::journal::command::status(&args),
        Command::Report(args) => crate::journal::command::report(&args),
        Command::Revert(args) => crate::journal::command::revert(&args),
        Command::Sandbox(args) => runtime()?.block_on(sandbox::command(*args)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context as _;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Logs go to stderr, filtered by `RUST_LOG` when set, else by -v/-q.
fn init_logging(g: &GlobalArgs) {
    use tracing_subscriber::EnvFilter;
    let default = match (g.quiet, g.verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(crate::runner::progress::LogWriter)
        .with_target(false);
    let _ = match g.log_format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn help(args: &[&str]) -> String {
        let mut argv = vec!["imkit-batch"];
        argv.extend_from_slice(args);
        argv.push("--help");
        Cli::try_parse_from(argv).unwrap_err().to_string()
    }

    /// -v, -q and --log-format are under their own heading, on every command's help.
    #[test]
    fn global_options_have_a_heading() {
        for cmd in [&[][..], &["validate"], &["run"], &["plan"]] {
            let h = help(cmd);
            let at = h
                .find("Global options:")
                .unwrap_or_else(|| panic!("{cmd:?}: {h}"));
            let global = &h[at..];
            for flag in ["--verbose", "--quiet", "--log-format"] {
                assert!(global.contains(flag), "{cmd:?}: {flag} in {h}");
            }
        }
    }

    #[test]
    fn validate_help_points_to_the_format() {
        let h = help(&["validate"]);
        assert!(h.contains("README.md, section \"Manifests\""), "{h}");
        for col in crate::manifest::csv::COLUMNS {
            assert!(h.contains(col), "{col}: {h}");
        }
        assert!(h.contains("rooms_file"), "{h}");
    }
}
