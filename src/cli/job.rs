//! The second stage of argument handling: raw `run` flags, manifest settings and the
//! environment become one checked [`JobConfig`], or an error that exits 2 before any request.

use crate::cli::{GlobalArgs, RunArgs};

/// Everything `run` needs, checked.
#[derive(Debug)]
pub struct JobConfig {
    pub args: RunArgs,
}

impl JobConfig {
    pub fn from_args(args: &RunArgs, global: &GlobalArgs) -> anyhow::Result<JobConfig> {
        let _ = global;
        Ok(JobConfig { args: args.clone() })
    }
}
