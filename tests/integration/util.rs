//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::path::PathBuf;

/// The repository root (for `jobs/` and `tests/` fixtures).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The built `imkit-batch` binary, as an assert_cmd command.
pub fn bin() -> assert_cmd::Command {
    assert_cmd::Command::cargo_bin("imkit-batch").expect("binary built by cargo")
}
