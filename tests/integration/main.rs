//! The one integration-test binary, one module per topic:
//! - `manifest`: CSV and YAML manifests and their validation; `validate` and `plan` through
//!   the binary; property tests.
//! - `sandbox`: the emulator against the vendor's pages (docs/api.md): answers, permissions,
//!   faults, the rate limit, the control API, the `sandbox` command.
//! - `sandbox_bans`: the emulator's ban endpoints, the API key on room and ban endpoints.
//! - `api_client`: the HTTP client, and the scheduler driving it, against small doubles.
//! - `run`: jobs against the sandbox: what a job delivers (`run::delivery`), the binary's
//!   signals, exit codes and output (`run::binary`), pacing figures (`run::pacing`).
//! - `journal`: the journal and its commands (`status`, `report`, `revert`), refusals,
//!   `--fresh`, `--retry-failed`.
//! - `journal_safety`: a journal bound to its target, resumed by what the manifest means
//!   (`--replan`), and never stranded by a full disk, a missing directory, a read-only place
//!   or a manifest given for it.
//! - `crash`: `kill -9` at seeded moments, then resume.
//! - `budget`: the shared rate ledger, in process, on the host (files) and in a real Redis.
//! - `env_file`: `run --env-file`: the base URL and credentials it gives, precedence, no value
//!   printed.
//! - `unreachable`: a host no request reaches (DNS, refused, TLS) stops the run early with
//!   every op pending; a server that answered and then fails to connect does not.
//! - `observe`: what a job leaves behind: the `--metrics-file`, `report --format html`.
//! - `runbooks`: the runbooks of `jobs/runbooks/`, run against the sandbox first command to
//!   last; the night-mode service across two nights.
//! - `window`: scheduled jobs: windows, daily windows across midnight, `--no-wait`, the
//!   cannot-finish warning, the undo phase and its resumption, a `{date}` journal per night.
//!
//! Shared helpers (paths, the binary, the one credential set, a sandbox on its own runtime)
//! live in `util`.

// The 100-line rule (`[lints]` in Cargo.toml) is for src/: a scenario test (kill, resume,
// check every op) reads best as one story, so the tests are exempt.
#![allow(clippy::too_many_lines)]

mod api_client;
mod budget;
mod crash;
mod env_file;
mod journal;
mod journal_safety;
mod manifest;
mod observe;
mod run;
mod runbooks;
mod sandbox;
mod sandbox_bans;
mod unreachable;
mod util;
mod window;
