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
use crate::manifest::{LoadOptions, Manifest, WindowTimes};
use crate::op::{ActionKind, Credential};
use crate::runner::{Job, Target, default_journal_path};
use crate::units::{Rate, check_concurrency, check_max_attempts};
use crate::{Exit, ExitError};

/// The flags checked on their own (no manifest, no environment).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct CheckedFlags {
    base_url: Option<Url>,
    journal_path: PathBuf,
    until: Option<jiff::Timestamp>,
    undo_at: Option<jiff::Timestamp>,
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
    let until = check_time(args.until.as_deref(), "--until", &mut errors);
    let undo_at = check_time(args.undo_at.as_deref(), "--undo-at", &mut errors);
    let journal_path = args
        .journal
        .clone()
        .unwrap_or_else(|| default_journal_path(&args.manifest.manifest, args.sandbox));
    let budget = check_budget(args, &mut errors);
    if errors.is_empty() {
        Ok(CheckedFlags {
            base_url,
            journal_path,
            until,
            undo_at,
            budget,
        })
    } else {
        Err(errors)
    }
}

/// An RFC 3339 time given to `flag`, or an error.
fn check_time(
    given: Option<&str>,
    flag: &str,
    errors: &mut Vec<String>,
) -> Option<jiff::Timestamp> {
    let s = given?;
    match s.trim().parse::<jiff::Timestamp>() {
        Ok(t) => Some(t),
        Err(e) => {
            errors.push(format!(
                "{flag} {s:?} is not an RFC 3339 time with an offset (e.g. 2026-11-23T02:00:00+08:00): {e}"
            ));
            None
        }
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

/// The metrics file must be writable where it is asked for: its directory exists (checked
/// before any request, rather than found out at the end of the run).
fn check_metrics_dir(path: &std::path::Path) -> Result<(), String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    if path.is_dir() {
        return Err(format!(
            "--metrics-file {} is a directory: name the file to write (e.g. {}/imkit-batch.prom)",
            path.display(),
            path.display()
        ));
    }
    if dir.is_dir() {
        Ok(())
    } else {
        Err(format!(
            "--metrics-file {}: the directory {} does not exist (nothing was sent)",
            path.display(),
            dir.display()
        ))
    }
}

/// The environment variables the job's ops need and are not set, and what the message
/// about them adds: with room ops or bans that fall back to the API key for want of a full
/// client key and token, that setting both would do instead. Empty when nothing is missing.
fn missing_credentials(job: &Job) -> Option<String> {
    let auth = job.auth();
    let needed = auth.needed(job.manifest.ops.iter().map(|p| p.op.action));
    let missing = job.credentials.missing(needed);
    if missing.is_empty() {
        return None;
    }
    // Room ops and bans alone fall back to the API key for want of a full token: setting
    // both token variables would do too (with mutes, the API key is needed anyway).
    let kinds = job.kinds();
    let or_token = job.room_auth.is_none()
        && auth.rooms == Credential::ApiKey
        && !kinds.contains(&ActionKind::Mute);
    let or_token = if or_token {
        " (or both IMKIT_CLIENT_KEY and IMKIT_TOKEN, which room ops and bans use when set)"
    } else {
        ""
    };
    let uses = auth.describe(kinds).join("; ");
    Some(format!(
        "missing credentials for this manifest: set {} in the environment or in an \
         --env-file{or_token}; this job would send {uses} (nothing was sent)",
        missing.join(", ")
    ))
}

/// Checks flags, loads the manifest and the credentials; any problem exits 2.
pub(super) fn from_args(args: &RunArgs, global: &GlobalArgs) -> anyhow::Result<Job> {
    // The env file gives the credentials and, under the flag and the environment, the base
    // URL; the sandbox brings its own of both.
    let sources = if args.sandbox {
        None
    } else {
        let s = crate::api::EnvSources::read(args.env_file.as_deref())
            .map_err(|e| ExitError::new(Exit::Invalid, e.to_string()))?;
        Some(s)
    };
    let mut args = args.clone();
    if let Some(s) = &sources {
        args.base_url = s.base_url(args.base_url.take());
    }
    let args = &args;
    let flags = check_flags(args).map_err(invalid_list)?;
    if let Some(p) = &args.metrics_file {
        check_metrics_dir(p).map_err(|e| invalid_list(vec![e]))?;
    }
    let recorded = super::resume::recorded(&flags.journal_path, args.fresh);
    let action =
        super::resume::action(args.manifest.action, recorded.as_ref(), &flags.journal_path)?;
    let path = &args.manifest.manifest;
    let mut loaded = crate::manifest::load(path, &LoadOptions { action });
    let mut action = action;
    if loaded.is_err() && args.manifest.action.is_none() && action.is_some() {
        // The journal's --action is for a CSV without an action column: one that has one
        // now loads without it (its ops are then compared with the journal's as always).
        if let Ok(m) = crate::manifest::load(path, &LoadOptions { action: None }) {
            loaded = Ok(m);
            action = None;
        }
    }
    let manifest = loaded.map_err(|e| {
        let msg = format!(
            "{} is not a valid manifest ({} error{}); nothing was sent:\n{e}\n\
             Fix the lines above and check with `imkit-batch validate`.",
            args.manifest.manifest.display(),
            e.total,
            if e.total == 1 { "" } else { "s" }
        );
        ExitError::new(Exit::Invalid, msg)
    })?;
    let credentials = match &sources {
        None => Credentials::default(),
        Some(s) => s
            .credentials()
            .map_err(|e| ExitError::new(Exit::Invalid, e.to_string()))?,
    };
    let mut job = from_parts(args, global, flags, manifest, credentials)?;
    job.action = action;
    if let Some(r) = &recorded {
        super::resume::apply(&mut job, args, r);
    }
    Ok(job)
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
    if args.journal.is_some() {
        job.journal_path = flags.journal_path;
    }
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
    job.room_auth = args.room_auth.or(job.room_auth);
    job.fresh = args.fresh;
    job.retry_failed = args.retry_failed;
    job.replan = args.replan;
    job.retarget = args.retarget;
    job.progress = args.progress;
    job.log_format = global.log_format;
    job.metrics_file = args.metrics_file.clone();
    job.no_wait = args.no_wait;
    job.undo_at = flags.undo_at;
    let mut errors = check_undo(&mut job, args.snapshot.no_snapshot);
    errors.extend(check_job(&job));
    if errors.is_empty() {
        Ok(job)
    } else {
        Err(invalid_list(errors))
    }
}

/// `--undo-at` against the window (not with a daily window, after a single window's
/// start), and the snapshots an undo needs: with an undo, `--snapshot` is on for room ops
/// unless `--no-snapshot` or `snapshot: false` says otherwise (then rooms are not undone).
fn check_undo(job: &mut Job, no_snapshot_flag: bool) -> Vec<String> {
    let mut errors = Vec::new();
    let window = job.manifest.window.as_ref();
    if let Some(t) = job.undo_at {
        match window.map(|w| &w.times) {
            Some(WindowTimes::Daily(_)) => errors.push(
                "--undo-at is for a job without a daily window: a daily window undoes at its \
                 end with `undo_at_end: true`"
                    .into(),
            ),
            Some(WindowTimes::Once { start, .. }) if t <= *start => errors.push(format!(
                "--undo-at {t} is not after the window's start ({start}): nothing could be sent \
                 before the undo"
            )),
            _ => {}
        }
    }
    let undo = job.undo_at.is_some() || window.is_some_and(|w| w.undo_at_end);
    job.snapshot = snapshot_for_undo(&job.manifest, job.snapshot, undo, no_snapshot_flag);
    errors
}

/// Whether rooms are read first, given `snapshot` as the flags and settings say: an undo
/// (`undo`) turns it on for a manifest that changes rooms, unless `--no-snapshot`
/// (`no_snapshot_flag`) or `snapshot: false` turned it off (then room changes are listed
/// apart by the undo, with a warning). `plan` decides the same way.
pub(super) fn snapshot_for_undo(
    m: &Manifest,
    snapshot: bool,
    undo: bool,
    no_snapshot_flag: bool,
) -> bool {
    let changes_rooms = m.ops.iter().any(|p| p.op.action.changes_room());
    if snapshot || !undo || !changes_rooms {
        return snapshot;
    }
    if no_snapshot_flag || m.settings.snapshot == Some(false) {
        tracing::warn!(
            "the undo cannot restore rooms without --snapshot (their prior state is not \
             read): room changes will be listed apart, not undone"
        );
        return false;
    }
    true
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
    if matches!(job.target, Target::Remote { .. })
        && let Some(m) = missing_credentials(job)
    {
        errors.push(m);
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
    use crate::op::{Op, RoomAuth};
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
        assert_eq!(
            j.settings_json(&j.schedule())["budget"],
            "redis://10.0.0.5:6379/3"
        );
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
            room_auth: None,
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
        let s = c.settings_json(&c.schedule()).to_string();
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

    /// `--room-auth` wins over `settings.room_auth`, which wins over the credentials set.
    #[test]
    fn room_auth_flag_setting_and_default() {
        let all = creds(&["IMKIT_CLIENT_KEY", "IMKIT_TOKEN", "IMKIT_API_KEY"]);
        let with = |setting: Option<RoomAuth>, argv: &[&str]| {
            let mut full = vec!["--base-url", "https://x.io"];
            full.extend_from_slice(argv);
            let (a, g) = parse(&full);
            let settings = Settings {
                room_auth: setting,
                ..Settings::default()
            };
            let m = manifest(vec![Op::freeze("r")], settings);
            let job = from_parts(&a, &g, check_flags(&a).unwrap(), m, all.clone()).unwrap();
            (job.auth().rooms, job.settings_json(&job.schedule()))
        };
        assert_eq!(with(None, &[]).0, Credential::ClientToken);
        assert_eq!(with(Some(RoomAuth::ApiKey), &[]).0, Credential::ApiKey);
        let (rooms, settings) = with(Some(RoomAuth::ApiKey), &["--room-auth", "token"]);
        assert_eq!(rooms, Credential::ClientToken);
        assert_eq!(settings["room_auth"], "token");
        assert_eq!(settings["credentials"]["rooms"], "client_token");
        assert_eq!(settings["credentials"]["mutes"], serde_json::Value::Null);
        let (rooms, settings) = with(None, &["--room-auth", "api-key"]);
        assert_eq!(rooms, Credential::ApiKey);
        assert_eq!(settings["credentials"]["rooms"], "api_key");
        let e = Cli::try_parse_from(["imkit-batch", "run", "x.csv", "--room-auth", "apikey"]);
        let e = e.unwrap_err().to_string();
        assert!(e.contains("possible values: token, api-key"), "{e}");
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

        // A client key without its token: room ops fall back to the API key, so the API key
        // is all that is missing (the mutes need it anyway).
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
        assert!(t.contains("set IMKIT_API_KEY in the environment"), "{t}");
        assert!(!t.contains("or both"), "{t}");
        assert!(
            t.contains(
                "this job would send room ops: API key (IMKIT_API_KEY); mutes: API key \
                 (IMKIT_API_KEY)"
            ),
            "{t}"
        );
        // Without mutes, the token would do instead, and the message says so.
        let bans = manifest(vec![Op::ban("u", "r")], Settings::default());
        let e = from_parts(&a, &g, check_flags(&a).unwrap(), bans, creds(&[])).unwrap_err();
        let t = err_text(e);
        assert!(
            t.contains(
                "set IMKIT_API_KEY in the environment or in an --env-file (or both \
                 IMKIT_CLIENT_KEY and IMKIT_TOKEN, which room ops and bans use when set)"
            ),
            "{t}"
        );
        // The API key alone runs room ops, bans and mutes.
        let all = manifest(
            vec![Op::freeze("r"), Op::ban("u", "r"), Op::mute("u", "r")],
            Settings::default(),
        );
        let job = from_parts(
            &a,
            &g,
            check_flags(&a).unwrap(),
            all.clone(),
            creds(&["IMKIT_API_KEY"]),
        )
        .unwrap();
        assert_eq!(job.auth().rooms, Credential::ApiKey);
        // --room-auth token insists on the token, and names only what it lacks.
        let (t_args, t_g) = parse(&["--base-url", "https://x.io", "--room-auth", "token"]);
        let e = from_parts(
            &t_args,
            &t_g,
            check_flags(&t_args).unwrap(),
            all.clone(),
            creds(&["IMKIT_API_KEY", "IMKIT_CLIENT_KEY"]),
        )
        .unwrap_err();
        let t = err_text(e);
        assert!(t.contains("set IMKIT_TOKEN in the environment"), "{t}");
        assert!(!t.contains("or both"), "{t}");
        // A ban-only job with the token needs no API key.
        let bans = manifest(vec![Op::unban("u", "r")], Settings::default());
        let job = from_parts(
            &a,
            &g,
            check_flags(&a).unwrap(),
            bans,
            creds(&["IMKIT_CLIENT_KEY", "IMKIT_TOKEN"]),
        )
        .unwrap();
        assert_eq!(job.auth().rooms, Credential::ClientToken);

        // The sandbox brings its own credentials.
        let (a, g) = parse(&["--sandbox"]);
        assert!(from_parts(&a, &g, check_flags(&a).unwrap(), both, creds(&[])).is_ok());
    }

    /// `--undo-at` is refused with a daily window and before a single window's start; an
    /// undo turns the snapshot on for room ops unless it was turned off.
    #[test]
    fn undo_at_is_checked_and_an_undo_reads_rooms_first() {
        use crate::manifest::{Daily, Window, WindowTimes};
        let ts = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
        let creds = || creds(&["IMKIT_CLIENT_KEY", "IMKIT_TOKEN"]);
        let with = |window: Option<Window>, argv: &[&str]| {
            let mut full = vec!["--base-url", "https://x.io"];
            full.extend_from_slice(argv);
            let (a, g) = parse(&full);
            let m = Manifest {
                window,
                ..manifest(vec![Op::freeze("r")], Settings::default())
            };
            from_parts(&a, &g, check_flags(&a).unwrap(), m, creds())
        };
        let daily = Window {
            times: WindowTimes::Daily(Daily {
                start: jiff::civil::time(22, 0, 0, 0),
                end: jiff::civil::time(7, 0, 0, 0),
                zone: jiff::tz::TimeZone::UTC,
                zone_name: "UTC".into(),
            }),
            undo_at_end: false,
        };
        let at = ["--undo-at", "2026-11-23T02:00:00Z"];
        let e = err_text(with(Some(daily.clone()), &at).unwrap_err());
        assert!(
            e.contains("--undo-at is for a job without a daily window"),
            "{e}"
        );
        let once = |start: &str| Window {
            times: WindowTimes::Once {
                start: ts(start),
                end: ts("2026-11-23T06:00:00Z"),
            },
            undo_at_end: false,
        };
        let e = err_text(with(Some(once("2026-11-23T03:00:00Z")), &at).unwrap_err());
        assert!(e.contains("is not after the window's start"), "{e}");
        let j = with(Some(once("2026-11-23T01:00:00Z")), &at).unwrap();
        assert_eq!(j.undo_at, Some(ts("2026-11-23T02:00:00Z")));
        assert!(j.snapshot, "an undo of room ops reads the rooms first");
        let j = with(
            None,
            &["--undo-at", "2026-11-23T02:00:00Z", "--no-snapshot"],
        )
        .unwrap();
        assert!(!j.snapshot);
        assert!(!with(None, &[]).unwrap().snapshot);
        // A daily window with undo_at_end: the snapshot too, and the dated journal.
        let night = Window {
            undo_at_end: true,
            ..daily
        };
        let j = with(Some(night), &["--no-wait"]).unwrap();
        assert!(j.snapshot && j.no_wait);
        assert_eq!(j.journal_path, PathBuf::from("jobs/x.csv.{date}.journal"));
    }
}
