//! `imkit-batch`: a job runner that changes thousands of IMKIT chat rooms at once.
//!
//! Data flows one way: [`manifest`] parses and validates a CSV or YAML file into [`op::Op`]s,
//! the [`journal`] records them, the [`runner`] schedules them through the [`api`] client and
//! writes every outcome back to the journal, printing progress and its summary through
//! [`output`]; `observe` turns a journal into what monitoring and people read afterwards
//! (the metrics file, the HTML report). The [`sandbox`] is a local emulator of the IMKIT endpoints used by demos and
//! tests. [`cli`] is the command line over all of it, and the only module that knows clap:
//! it turns flags into the plain typed values the modules below take (a [`runner::Job`], a
//! journal path, a manifest's load options), prints what they return and picks exit codes.

pub mod api;
pub mod budget;
pub mod cli;
mod clock;
pub mod journal;
pub mod manifest;
mod observe;
pub mod op;
pub mod output;
pub mod runner;
pub mod sandbox;
mod sync;
pub mod units;

use std::process::ExitCode;

/// The process exit status of docs/behaviour.md §3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Exit {
    /// 0: every op done.
    Success,
    /// 1: finished, some ops failed permanently.
    OpsFailed,
    /// 2: invalid manifest, usage or configuration; nothing was sent.
    Invalid,
    /// 3: aborted (credentials rejected, failure bound passed, API host never reached).
    Aborted,
    /// 4: stopped before the end (deadline, signal); resumable.
    Stopped,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::OpsFailed => 1,
            Exit::Invalid => 2,
            Exit::Aborted => 3,
            Exit::Stopped => 4,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e.code())
    }
}

/// An error that ends the process with a given exit status. Anywhere in an `anyhow` chain it
/// sets the exit code; errors without one exit 2 (usage, configuration, invalid input).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ExitError {
    pub exit: Exit,
    pub message: String,
}

impl ExitError {
    pub fn new(exit: Exit, message: impl Into<String>) -> ExitError {
        ExitError {
            exit,
            message: message.into(),
        }
    }
}

/// The exit status for an error returned by a command.
pub fn exit_for_error(err: &anyhow::Error) -> Exit {
    err.chain()
        .find_map(|e| e.downcast_ref::<ExitError>().map(|e| e.exit))
        .unwrap_or(Exit::Invalid)
}
