//! The second stage of argument handling: raw `run` flags, manifest settings and the
//! environment become one checked [`Job`] for the runner, or an error that exits 2 before
//! any request.
//!
//! Split for testing: [`check_flags`] is pure (flags only), [`from_parts`] is pure (flags +
//! a loaded manifest + credentials), and [`from_args`] adds the file and environment access.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;

use super::GlobalArgs;
use super::run::RunArgs;
use crate::api::Credentials;
use crate::budget::BudgetLocation;
use crate::manifest::{LoadOptions, Manifest};
use crate::op::Credential;
use crate::runner::{Job, Target, default_journal_path};
use crate::units::{Rate, check_concurrency, check_max_attempts};
use crate::{Exit, ExitError};

/// The flags checked on their own (no manifest, no environment).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct CheckedFlags {
    base_url: Option<Url>,
    journal_path: PathBuf,
    until: Option<jiff::Timestamp>,
    budget: Option<BudgetLocation>,
}

/// Checks the flags that need no manifest; every problem is reported, not only the first.
pub(super) fn check_flags(args: &RunArgs) -> Result<CheckedFlags, Vec<String>> {
    let mut errors = Vec::new();
    let base_url = check_target(args, &mut errors);
    if let Some(c) = args.concurrency
        && let Err(e) = check_concurrency("--concurrency", c.into())
    {
        errors.push(e);
    }
    if let Some(r) = args.rate {
        check_rate(r, "--rate", &mut errors);
    }
    if let Some(n) = args.max_attempts
        && let Err(e) = check_max_attempts("--max-attempts", n.into())
    {
        errors.push(e);
    }
    if let Some(t) = args.timeout {
        check_timeout(t, "--timeout", &mut errors);
    }
    if let Some(d) = args.max_duration
        && d.is_zero()
    {
        errors.push("--max-duration must be longer than 0 (e.g. 45m)".into());
    }
    if let Some(r) = args.max_failure_ratio
        && !(r > 0.0 && r <= 1.0)
    {
        errors.push(format!(
            "--max-failure-ratio must be greater than 0 and at most 1 (e.g. 0.05 for 5%), not {r}"
        ));
    }
    let until = match &args.until {
        Some(s) => match s.trim().parse::<jiff::Timestamp>() {
            Ok(t) => Some(t),
            Err(e) => {
                errors.push(format!(
                    "--until {s:?} is not an RFC 3339 time with an offset (e.g. 2026-11-23T02:00:00+08:00): {e}"
                ));
                None
            }
        },
        None => None,
    };
    let journal_path = args
        .journal
        .clone()
        .unwrap_or_else(|| default_journal_path(&args.manifest.manifest));
    let budget = check_budget(args, &mut errors);
    if errors.is_empty() {
        Ok(CheckedFlags {
            base_url,
            journal_path,
            until,
            budget,
        })
    } else {
        Err(errors)
    }
}

/// The checked base URL, or none for `--sandbox`.
fn check_target(args: &RunArgs, errors: &mut Vec<String>) -> Option<Url> {
    match (&args.base_url, args.sandbox) {
        (Some(_), true) => {
            // Usually IMKIT_BASE_URL left in the environment: the sandbox brings its own URL.
            tracing::warn!("--sandbox: ignoring the base URL from --base-url / IMKIT_BASE_URL");
            None
        }
        (Some(u), false) => match check_base_url(u) {
            Ok(u) => Some(u),
            Err(e) => {
                errors.push(e);
                None
            }
        },
        (None, true) => None,
        (None, false) => {
            errors.push(
                "no API base URL: pass --base-url URL or set IMKIT_BASE_URL (or use --sandbox to rehearse locally)"
                    .into(),
            );
            None
        }
    }
}

/// The checked `--budget`, or none (the host's ledger; the sandbox's own with `--sandbox`).
fn check_budget(args: &RunArgs, errors: &mut Vec<String>) -> Option<BudgetLocation> {
    let given = args.budget.as_deref()?;
    match given.parse::<BudgetLocation>() {
        Ok(_) if args.sandbox => {
            tracing::warn!(
                "--sandbox: ignoring --budget (the sandbox's credentials are its own, so is their budget)"
            );
            None
        }
        Ok(b) => Some(b),
        Err(e) => {
            errors.push(e.to_string());
            None
        }
    }
}

fn check_rate(r: Rate, what: &str, errors: &mut Vec<String>) {
    if let Err(e) = crate::units::check_rate(what, r) {
        errors.push(e);
    }
}

fn check_timeout(t: Duration, what: &str, errors: &mut Vec<String>) {
    if let Err(e) = crate::units::check_timeout(what, t) {
        errors.push(e);
    }
}

/// An absolute http(s) URL; `https://` unless the host is a loopback address
/// (127.0.0.0/8, ::1, localhost). No user info, query or fragment.
fn check_base_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw.trim()).map_err(|e| {
        format!("--base-url / IMKIT_BASE_URL is not a valid URL ({e}); expected e.g. https://your-app.imkit.io")
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        // Do not echo the URL: it holds a credential.
        return Err("--base-url / IMKIT_BASE_URL must not contain a user name or password; credentials come only from IMKIT_CLIENT_KEY, IMKIT_TOKEN and IMKIT_API_KEY".into());
    }
    let host = url
        .host_str()
        .ok_or_else(|| format!("base URL {url} has no host"))?
        .to_string();
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("base URL {url} must not have a query or fragment"));
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if crate::api::client::is_loopback_host(&host) => Ok(url),
        "http" => Err(format!(
            "base URL {url} uses plain http: https:// is required unless the host is a loopback address (127.0.0.1, ::1, localhost)"
        )),
        s => Err(format!(
            "base URL {url} has scheme {s:?}: expected https://"
        )),
    }
}

/// The credentials the manifest's ops need, in a stable order.
fn needed_credentials(manifest: &Manifest) -> Vec<Credential> {
    let mut v: Vec<Credential> = manifest.ops.iter().map(|p| p.op.credential()).collect();
    v.sort();
    v.dedup();
    v
}

/// Checks flags, loads the manifest and the credentials; any problem exits 2.
pub(super) fn from_args(args: &RunArgs, global: &GlobalArgs) -> anyhow::Result<Job> {
    let flags = check_flags(args).map_err(invalid_list)?;
    let opts = LoadOptions {
        action: args.manifest.action,
    };
    let manifest = crate::manifest::load(&args.manifest.manifest, &opts).map_err(|e| {
        let msg = format!(
            "{} is not a valid manifest ({} error{}); nothing was sent:\n{e}\n\
             Fix the lines above and check with `imkit-batch validate`.",
            args.manifest.manifest.display(),
            e.total,
            if e.total == 1 { "" } else { "s" }
        );
        ExitError::new(Exit::Invalid, msg)
    })?;
    let credentials = if args.sandbox {
        Credentials::default()
    } else {
        Credentials::from_env(args.env_file.as_deref())
            .map_err(|e| ExitError::new(Exit::Invalid, e.to_string()))?
    };
    from_parts(args, global, flags, manifest, credentials)
}

/// The pure part: applies the flags over the manifest's settings and checks the result and
/// the credentials the manifest needs (all missing ones are named together).
pub(super) fn from_parts(
    args: &RunArgs,
    global: &GlobalArgs,
    flags: CheckedFlags,
    manifest: Manifest,
    credentials: Credentials,
) -> anyhow::Result<Job> {
    let target = match flags.base_url {
        Some(base_url) => Target::Remote { base_url },
        None => Target::Sandbox,
    };
    let mut job = Job::new(manifest, target, credentials);
    job.journal_path = flags.journal_path;
    job.concurrency = args.concurrency.unwrap_or(job.concurrency);
    job.rate = args.rate.unwrap_or(job.rate);
    if let Some(b) = flags.budget {
        job.budget = b;
    }
    job.max_attempts = args.max_attempts.unwrap_or(job.max_attempts);
    job.timeout = args.timeout.unwrap_or(job.timeout);
    job.until = flags.until;
    job.max_duration = args.max_duration;
    job.max_failures = args.max_failures;
    job.max_failure_ratio = args.max_failure_ratio;
    job.snapshot = args.snapshot.resolve(job.manifest.settings.snapshot);
    job.fresh = args.fresh;
    job.retry_failed = args.retry_failed;
    job.progress = args.progress;
    job.log_format = global.log_format;
    let errors = check_job(&job);
    if errors.is_empty() {
        Ok(job)
    } else {
        Err(invalid_list(errors))
    }
}

/// The merged limits and the credentials. The manifest loader already held `settings` to
/// the bounds; a Manifest built in code is checked here.
fn check_job(job: &Job) -> Vec<String> {
    let mut errors = Vec::new();
    if let Err(e) = check_concurrency("concurrency", job.concurrency.into()) {
        errors.push(e);
    }
    check_rate(job.rate, "rate", &mut errors);
    if let Err(e) = check_max_attempts("max_attempts", job.max_attempts.into()) {
        errors.push(e);
    }
    check_timeout(job.timeout, "timeout", &mut errors);
    if matches!(job.target, Target::Remote { .. }) {
        let missing = job.credentials.missing(needed_credentials(&job.manifest));
        if !missing.is_empty() {
            errors.push(format!(
                "missing credentials for this manifest: set {} in the environment or in an --env-file (nothing was sent)",
                missing.join(", ")
            ));
        }
    }
    errors
}

fn invalid_list(errors: Vec<String>) -> anyhow::Error {
    let msg = if errors.len() == 1 {
        errors.into_iter().next().unwrap_or_default()
    } else {
        format!("invalid configuration:\n  {}", errors.join("\n  "))
    };
    ExitError::new(Exit::Invalid, msg).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use crate::manifest::Settings;
    use crate::op::Op;
    use clap::Parser;

    fn parse(argv: &[&str]) -> (RunArgs, GlobalArgs) {
        let mut full = vec!["imkit-batch", "run", "jobs/x.csv"];
        full.extend_from_slice(argv);
        let cli = Cli::try_parse_from(full).unwrap();
        match cli.command {
            Command::Run(a) => (*a, cli.global),
            _ => unreachable!(),
        }
    }

    fn manifest(ops: Vec<Op>, settings: Settings) -> Manifest {
        Manifest {
            settings,
            ..Manifest::from_ops("jobs/x.csv", ops)
        }
    }

    fn creds(vars: &[&str]) -> Credentials {
        let env = |k: &str| vars.contains(&k).then(|| format!("secret-{k}"));
        Credentials::from_sources(env, &Default::default()).unwrap()
    }

    fn err_text(e: anyhow::Error) -> String {
        assert_eq!(crate::exit_for_error(&e), Exit::Invalid);
        format!("{e:#}")
    }

    #[test]
    fn https_is_required_unless_loopback() {
        for ok in [
            "https://your-app.imkit.io",
            "https://example.com/api/",
            "http://127.0.0.1:8787",
            "http://127.5.6.7",
            "http://[::1]:9000",
            "http://localhost:1234",
            "http://LOCALHOST",
        ] {
            assert!(check_base_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://example.com",
            "http://10.0.0.1",
            "http://128.0.0.1",
            "http://[::2]",
            "http://localhost.example.com",
            "ftp://127.0.0.1",
            "example.com",
            "https://example.com/?a=1",
        ] {
            assert!(check_base_url(bad).is_err(), "{bad}");
        }
        let e = check_base_url("https://user:hunter2@example.com").unwrap_err();
        assert!(!e.contains("hunter2"));
        assert!(
            check_base_url("http://example.com")
                .unwrap_err()
                .contains("https://")
        );
    }

    #[test]
    fn flag_ranges_are_checked_together() {
        let (a, _) = parse(&[
            "--base-url",
            "https://x.io",
            "--concurrency",
            "0",
            "--max-attempts",
            "0",
            "--max-failure-ratio",
            "1.5",
            "--until",
            "tomorrow",
            "--timeout",
            "0s",
        ]);
        let errs = check_flags(&a).unwrap_err();
        assert_eq!(errs.len(), 5, "{errs:#?}");
        assert!(errs.iter().any(|e| e.contains("--until")));
        let (a, _) = parse(&["--base-url", "https://x.io", "--max-failure-ratio", "1"]);
        assert!(check_flags(&a).is_ok());
        let (a, _) = parse(&["--max-failure-ratio", "0"]);
        assert!(check_flags(&a).is_err());
        // --budget is checked with the rest, and never echoes a password.
        let (a, _) = parse(&[
            "--base-url",
            "https://x.io",
            "--concurrency",
            "0",
            "--budget",
            "rediss://:pw-1@h/0",
        ]);
        let errs = check_flags(&a).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:#?}");
        assert!(
            errs[1].starts_with("invalid --budget ") && !errs[1].contains("pw-1"),
            "{errs:?}"
        );
    }

    #[test]
    fn the_budget_is_the_hosts_unless_redis_is_named_and_the_sandboxs_own() {
        let job_of = |argv: &[&str]| {
            let (a, g) = parse(argv);
            let m = manifest(vec![Op::freeze("r")], Settings::default());
            from_parts(
                &a,
                &g,
                check_flags(&a).unwrap(),
                m,
                creds(&["IMKIT_CLIENT_KEY", "IMKIT_TOKEN"]),
            )
            .unwrap()
        };
        let j = job_of(&["--base-url", "https://x.io"]);
        assert_eq!(j.budget, BudgetLocation::Host { dir: None });
        let j = job_of(&[
            "--base-url",
            "https://x.io",
            "--budget",
            "redis://10.0.0.5:6379/3",
        ]);
        assert_eq!(
            j.budget,
            BudgetLocation::Redis("redis://10.0.0.5:6379/3".into())
        );
        assert_eq!(j.settings_json()["budget"], "redis://10.0.0.5:6379/3");
        let j = job_of(&["--sandbox", "--budget", "redis://10.0.0.5:6379/3"]);
        assert_eq!(j.budget, BudgetLocation::Process);
    }

    #[test]
    fn defaults_journal_path_and_until() {
        let (a, _) = parse(&[
            "--base-url",
            "https://x.io",
            "--until",
            "2026-11-23T02:00:00+08:00",
        ]);
        let f = check_flags(&a).unwrap();
        assert_eq!(f.journal_path, PathBuf::from("jobs/x.csv.journal"));
        assert_eq!(f.until.unwrap().to_string(), "2026-11-22T18:00:00Z");
        // No base URL and no sandbox is an error naming both ways out.
        let (a, _) = parse(&[]);
        let e = check_flags(&a).unwrap_err().join("\n");
        assert!(e.contains("IMKIT_BASE_URL") && e.contains("--sandbox"));
        // --sandbox needs none, and ignores one left in the environment.
        let (a, _) = parse(&["--sandbox"]);
        assert!(check_flags(&a).unwrap().base_url.is_none());
        let (a, _) = parse(&["--sandbox", "--base-url", "https://x.io"]);
        assert!(check_flags(&a).unwrap().base_url.is_none());
    }

    #[test]
    fn flags_win_over_manifest_settings() {
        let (a, g) = parse(&["--base-url", "https://x.io", "--concurrency", "3"]);
        let settings = Settings {
            rate: Some("600/min".parse().unwrap()),
            concurrency: Some(16),
            snapshot: Some(true),
            max_attempts: None,
            timeout: Some(Duration::from_secs(5)),
            budget: Some(BudgetLocation::Redis("redis://10.0.0.9:6379/1".into())),
        };
        let m = manifest(vec![Op::freeze("r")], settings);
        let c = from_parts(
            &a,
            &g,
            check_flags(&a).unwrap(),
            m,
            creds(&["IMKIT_CLIENT_KEY", "IMKIT_TOKEN"]),
        )
        .unwrap();
        assert_eq!(c.concurrency, 3);
        assert_eq!(c.rate, Rate::per_minute(600));
        assert_eq!(c.max_attempts, crate::runner::DEFAULT_MAX_ATTEMPTS);
        assert_eq!(c.timeout, Duration::from_secs(5));
        assert_eq!(
            c.budget,
            BudgetLocation::Redis("redis://10.0.0.9:6379/1".into())
        );
        assert!(c.snapshot);
        let s = c.settings_json().to_string();
        assert!(!s.contains("secret-"), "{s}");
        assert!(!format!("{c:?}").contains("secret-"));
    }

    /// `settings.snapshot: true` can be turned off from the command line (flags win), and
    /// `--snapshot` turns it on over `snapshot: false`.
    #[test]
    fn snapshot_flags_win_over_the_manifest() {
        let creds = || creds(&["IMKIT_CLIENT_KEY", "IMKIT_TOKEN"]);
        let with = |setting: Option<bool>, argv: &[&str]| {
            let mut full = vec!["--base-url", "https://x.io"];
            full.extend_from_slice(argv);
            let (a, g) = parse(&full);
            let settings = Settings {
                snapshot: setting,
                ..Settings::default()
            };
            let m = manifest(vec![Op::freeze("r")], settings);
            from_parts(&a, &g, check_flags(&a).unwrap(), m, creds())
                .unwrap()
                .snapshot
        };
        assert!(with(Some(true), &[]));
        assert!(!with(Some(true), &["--no-snapshot"]));
        assert!(with(Some(false), &["--snapshot"]));
        assert!(!with(None, &[]));
        assert!(with(None, &["--snapshot"]));
        assert!(!with(None, &["--no-snapshot"]));
        let both =
            Cli::try_parse_from(["imkit-batch", "run", "x.csv", "--snapshot", "--no-snapshot"]);
        let e = both.unwrap_err().to_string();
        assert!(e.contains("cannot be used with"), "{e}");
    }

    #[test]
    fn missing_credentials_name_only_the_needed_vars() {
        let (a, g) = parse(&["--base-url", "https://x.io"]);
        let mute_only = manifest(vec![Op::mute("u", "r")], Settings::default());
        let e = from_parts(&a, &g, check_flags(&a).unwrap(), mute_only, creds(&[])).unwrap_err();
        let t = err_text(e);
        assert!(t.contains("IMKIT_API_KEY"), "{t}");
        assert!(
            !t.contains("IMKIT_TOKEN") && !t.contains("IMKIT_CLIENT_KEY"),
            "{t}"
        );

        let both = manifest(
            vec![Op::freeze("r"), Op::unmute("u", "r")],
            Settings::default(),
        );
        let e = from_parts(
            &a,
            &g,
            check_flags(&a).unwrap(),
            both.clone(),
            creds(&["IMKIT_CLIENT_KEY"]),
        )
        .unwrap_err();
        let t = err_text(e);
        assert!(t.contains("IMKIT_TOKEN, IMKIT_API_KEY"), "{t}");
        assert!(!t.contains("IMKIT_CLIENT_KEY,"), "{t}");

        // The sandbox brings its own credentials.
        let (a, g) = parse(&["--sandbox"]);
        assert!(from_parts(&a, &g, check_flags(&a).unwrap(), both, creds(&[])).is_ok());
    }
}
