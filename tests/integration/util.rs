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

/// Writes `ops` as a CSV manifest (`action,room,client,name,description`) at `path`.
pub fn write_csv_manifest(path: &std::path::Path, ops: &[imkit_batch::op::Op]) {
    let mut w = csv::Writer::from_path(path).unwrap();
    w.write_record(["action", "room", "client", "name", "description"])
        .unwrap();
    for op in ops {
        let f = op.fields.as_deref();
        w.write_record([
            op.action.as_str(),
            &op.room,
            op.client.as_deref().unwrap_or(""),
            f.and_then(|f| f.name.as_deref()).unwrap_or(""),
            f.and_then(|f| f.description.as_deref()).unwrap_or(""),
        ])
        .unwrap();
    }
    w.flush().unwrap();
}

/// Credentials as `run` would read them from the environment.
pub fn credentials(client_key: &str, token: &str, api_key: &str) -> imkit_batch::api::Credentials {
    let env = |k: &str| match k {
        "IMKIT_CLIENT_KEY" => Some(client_key.to_string()),
        "IMKIT_TOKEN" => Some(token.to_string()),
        "IMKIT_API_KEY" => Some(api_key.to_string()),
        _ => None,
    };
    imkit_batch::api::Credentials::from_sources(env, &Default::default()).unwrap()
}

/// The checked config of `imkit-batch run MANIFEST --base-url BASE ARGS...` with these
/// credentials, as the binary builds it (no progress bar unless ARGS asks for one).
pub fn job_config(
    manifest: &std::path::Path,
    base_url: &str,
    credentials: imkit_batch::api::Credentials,
    args: &[&str],
) -> imkit_batch::cli::job::JobConfig {
    use clap::Parser as _;
    use imkit_batch::cli::{Cli, Command, job};
    let mut argv = vec![
        "imkit-batch".to_string(),
        "run".into(),
        manifest.display().to_string(),
        "--base-url".into(),
        base_url.into(),
        "--progress".into(),
        "never".into(),
    ];
    argv.extend(args.iter().map(|s| s.to_string()));
    let cli = Cli::try_parse_from(argv).unwrap();
    let Command::Run(run) = cli.command else {
        unreachable!()
    };
    let flags = job::check_flags(&run).unwrap();
    let m = imkit_batch::manifest::load(manifest, &Default::default()).unwrap();
    job::JobConfig::from_parts(&run, &cli.global, flags, m, credentials).unwrap()
}

/// Every op row of a journal, in manifest order.
pub fn journal_rows(path: &std::path::Path) -> Vec<imkit_batch::journal::OpRow> {
    let j = imkit_batch::journal::Journal::open_read_only(path).unwrap();
    let mut rows = Vec::new();
    j.for_each_op::<imkit_batch::journal::JournalError>(None, |r| {
        rows.push(r);
        Ok(())
    })
    .unwrap();
    rows
}
