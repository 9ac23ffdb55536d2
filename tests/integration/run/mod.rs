//! `run` against the in-process sandbox, and against a few small doubles where the sandbox
//! (which follows the vendor's pages) cannot give the answer a test needs: what a job
//! delivers ([`delivery`]), what the binary does with signals, exit codes, logs and its
//! environment ([`binary`]), ban jobs and the credentials of each kind of op ([`bans`]),
//! the rate budget shared by runs on one host or through Redis and the pace a run settles
//! on ([`shared`]), and pacing figures ([`pacing`], `#[ignore]`d measurements).
//! The helpers here write a job's manifest from ops and run it through the library entry
//! point `runner::run_job`, as the binary would.

mod bans;
mod binary;
mod delivery;
mod pacing;
mod shared;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use imkit_batch::Exit;
use imkit_batch::journal::{OpRow, OpState};
use imkit_batch::op::Op;
use imkit_batch::runner::Shutdown;
use imkit_batch::runner::retry::Backoff;
use imkit_batch::sandbox::{FaultRates, SandboxConfig};
use imkit_batch::units::Rate;

use crate::util::{job_config, sandbox_credentials, write_csv_manifest};

/// Short retry timing for a local sandbox (the defaults are for the real API).
const FAST: Backoff = Backoff {
    base: Duration::from_millis(1),
    cap: Duration::from_millis(20),
};

/// A sandbox seeded from `ops`, its faults drawn from `seed` at these rates: 5xx, 429,
/// drop before applying, drop after applying. Injected 429s hint 0 s (honoured, but short
/// for a fast test).
fn faulty(
    ops: &[Op],
    [server_error, too_many_requests, drop_before, drop_after]: [f64; 4],
    seed: u64,
) -> SandboxConfig {
    let mut cfg = SandboxConfig::new(sandbox_credentials());
    cfg.seed_from_ops(ops);
    cfg.faults = FaultRates {
        server_error,
        too_many_requests,
        drop_before,
        drop_after,
        slow: 0.0,
    };
    cfg.fault_retry_after_secs = 0;
    cfg.fault_seed = seed;
    cfg
}

struct Job {
    _dir: tempfile::TempDir,
    manifest: PathBuf,
    journal: PathBuf,
}

fn job(ops: &[Op]) -> Job {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("job.csv");
    write_csv_manifest(&manifest, ops);
    let journal = dir.path().join("job.csv.journal");
    Job {
        _dir: dir,
        manifest,
        journal,
    }
}

/// A `--rate` value.
fn rate(s: &str) -> Rate {
    s.parse().unwrap()
}

/// Runs the job through the library entry point, with what `set` changes in the job `run`
/// would run without flags; returns the exit status and, for an error exit, its message.
async fn run(
    j: &Job,
    base: &str,
    creds: imkit_batch::api::Credentials,
    set: impl FnOnce(&mut imkit_batch::runner::Job),
) -> (Exit, String) {
    let mut config = job_config(&j.manifest, base, creds);
    config.backoff = FAST;
    set(&mut config);
    match imkit_batch::runner::run_job(config, Shutdown::never()).await {
        Ok(exit) => (exit, String::new()),
        Err(e) => (imkit_batch::exit_for_error(&e), format!("{e:#}")),
    }
}

fn by_state(rows: &[OpRow]) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for r in rows {
        let k = match r.state {
            OpState::Pending => "pending",
            OpState::Done => "done",
            OpState::Failed => "failed",
            OpState::Skipped => "skipped",
        };
        *m.entry(k).or_default() += 1;
    }
    m
}
