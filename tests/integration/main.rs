//! The one integration-test binary, one module per topic:
//! - `manifest`: CSV and YAML manifests and their validation; `validate` and `plan` through
//!   the binary; property tests.
//! - `sandbox`: the emulator against the vendor's pages (docs/api.md): answers, permissions,
//!   faults, the rate limit, the control API, the `sandbox` command.
//! - `api_client`: the HTTP client, and the scheduler driving it, against small doubles.
//! - `run`: jobs against the sandbox: what a job delivers (`run::delivery`), the binary's
//!   signals, exit codes and output (`run::binary`), pacing figures (`run::pacing`).
//! - `journal`: the journal and its commands (`status`, `report`, `revert`), refusals,
//!   `--fresh`, `--retry-failed`.
//! - `crash`: `kill -9` at seeded moments, then resume.
//! - `observe`: what a job leaves behind: the `--metrics-file`, `report --format html`.
//!
//! Shared helpers (paths, the binary, the one credential set, a sandbox on its own runtime)
//! live in `util`.

mod api_client;
mod crash;
mod journal;
mod manifest;
mod observe;
mod run;
mod sandbox;
mod util;
