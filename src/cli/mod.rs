//! The command line: clap definitions for every command of docs/behaviour.md §3, logging set-up, and the
//! dispatch from a parsed command to its handler, one file per command (`validate`,
//! `plan`, `run`, `status`, `report`, `revert`, `sandbox`, and `completions` and `man`,
//! which print the shell completion scripts and the man page made from these definitions). A handler turns its flags into the
//! plain values the library takes, prints what comes back and picks the exit code. Raw `run`
//! flags become a checked [`crate::runner::Job`] in `job` (the second stage), so nothing
//! past this module ever sees an unchecked flag; `signal` turns SIGINT/SIGTERM into the
//! run's shutdown, and `values` parses the flags that take one of a few words.

mod completions;
mod files;
mod job;
mod man;
mod plan;
mod report;
mod resume;
mod revert;
mod run;
mod sandbox;
mod signal;
mod status;
mod validate;
pub(crate) mod values;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::Exit;
use crate::op::Action;
use crate::output::LogFormat;

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
struct Cli {
    #[command(subcommand)]
    command: Command,

    #[command(flatten)]
    global: GlobalArgs,
}

/// The help heading of the flags every command accepts.
const GLOBAL: &str = "Global options";

/// Flags every command accepts.
#[derive(Debug, Args, Clone)]
struct GlobalArgs {
    /// More log output (-v: debug, -vv: trace). RUST_LOG, when set, wins.
    #[arg(short, long, action = clap::ArgAction::Count, global = true, help_heading = GLOBAL)]
    verbose: u8,

    /// Less output: warnings and errors only.
    #[arg(
        short,
        long,
        global = true,
        conflicts_with = "verbose",
        help_heading = GLOBAL
    )]
    quiet: bool,

    /// Log format on stderr: human text, or one JSON object per line.
    #[arg(
        long,
        value_parser = values::log_format(),
        default_value = "text",
        global = true,
        help_heading = GLOBAL
    )]
    log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Parse and check a manifest; print counts per action, distinct rooms and clients, and
    /// warnings. Sends nothing.
    #[command(after_help = validate::HELP)]
    Validate(validate::ValidateArgs),
    /// Show what `run` would send now, taking an existing journal into account. Sends nothing.
    Plan(plan::PlanArgs),
    /// Execute the job, or resume it from its journal.
    Run(Box<run::RunArgs>),
    /// Progress and outcome counts of a job, from its journal.
    Status(status::StatusArgs),
    /// One row per op with its outcome; --failed writes the failed ops as a manifest.
    Report(report::ReportArgs),
    /// Write the manifest that undoes what the job changed.
    Revert(revert::RevertArgs),
    /// Serve a local IMKIT emulator for rehearsals and tests.
    Sandbox(Box<sandbox::SandboxArgs>),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::CompletionsArgs),
    /// Print the man page (roff), generated from the same definitions as --help.
    Man(man::ManArgs),
}

/// Where the manifest is and how to read it.
#[derive(Debug, Args, Clone)]
struct ManifestArgs {
    /// The manifest: a CSV (.csv) or YAML (.yaml, .yml) file.
    #[arg(value_name = "MANIFEST")]
    manifest: PathBuf,

    /// The action for every row of a CSV without an `action` column.
    #[arg(long, value_parser = values::action())]
    action: Option<Action>,
}

/// `--snapshot` / `--no-snapshot`, shared by `run` and `plan`.
#[derive(Debug, Args, Clone, Copy, Default)]
struct SnapshotArgs {
    /// Read each room (GET /rooms/{id}) before its first change, so `revert` can restore it.
    #[arg(long)]
    snapshot: bool,

    /// Do not read rooms first, even if the manifest's settings say `snapshot: true`.
    #[arg(long, conflicts_with = "snapshot")]
    no_snapshot: bool,
}

impl SnapshotArgs {
    /// Whether rooms are read before their first change: a flag wins over the manifest's
    /// `settings.snapshot` (docs/behaviour.md §2: command-line flags win); off by default.
    fn resolve(self, setting: Option<bool>) -> bool {
        if self.no_snapshot {
            false
        } else {
            self.snapshot || setting.unwrap_or(false)
        }
    }
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
                    crate::output::json_event(
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
fn dispatch(cli: Cli) -> anyhow::Result<Exit> {
    match cli.command {
        Command::Validate(args) => validate::validate(&args),
        Command::Plan(args) => plan::run(&args),
        Command::Run(args) => run::run(&args, &cli.global),
        Command::Status(args) => status::status(&args),
        Command::Report(args) => report::report(&args),
        Command::Revert(args) => revert::revert(&args),
        Command::Sandbox(args) => runtime()?.block_on(sandbox::command(*args)),
        Command::Completions(args) => completions::completions(&args),
        Command::Man(args) => man::man(&args),
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
        .with_writer(crate::output::LogWriter)
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
