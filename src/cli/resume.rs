//! What a resumed job keeps from its journal. The journal records the effective settings
//! of every run (never a credential); a bare `run MANIFEST` on an existing journal goes on
//! as the job was started: the `--action` of a CSV without an action column, `--snapshot`,
//! and the pace (`--concurrency`, `--rate`, `--max-attempts`, `--timeout`) unless a flag or
//! the manifest's `settings` says otherwise. Deadlines and failure bounds are for one run
//! and are not kept. An override that weakens what the job was started with is refused
//! (another `--action`: another job) or warned about (`--no-snapshot`: `revert` can no
//! longer restore what changes from now on).

use std::path::Path;
use std::time::Duration;

use super::run::RunArgs;
use crate::journal::Journal;
use crate::op::Action;
use crate::runner::Job;
use crate::units::Rate;
use crate::{Exit, ExitError};

/// The settings the journal's last run was started with.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Recorded {
    action: Option<Action>,
    snapshot: bool,
    concurrency: Option<u32>,
    rate: Option<Rate>,
    max_attempts: Option<u32>,
    timeout: Option<Duration>,
}

/// The recorded settings of the journal at `path`, when `run` would resume it (it exists
/// and `--fresh` was not given). A journal that cannot be read gives none: opening it for
/// the run then says what is wrong with it.
pub(super) fn recorded(path: &Path, fresh: bool) -> Option<Recorded> {
    if fresh || !path.is_file() {
        return None;
    }
    let journal = Journal::open_read_only(path).ok()?;
    let settings = match journal.runs().ok()?.pop() {
        Some(run) => run.settings,
        None => journal.meta().ok()?.settings,
    };
    Some(from_settings(&settings))
}

fn from_settings(s: &serde_json::Value) -> Recorded {
    let text = |k: &str| s.get(k).and_then(|v| v.as_str());
    let number = |k: &str| {
        s.get(k)
            .and_then(serde_json::Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
    };
    Recorded {
        action: text("action").and_then(Action::parse),
        snapshot: s.get("snapshot").and_then(|v| v.as_bool()).unwrap_or(false),
        concurrency: number("concurrency"),
        rate: text("rate").and_then(|r| r.parse().ok()),
        max_attempts: number("max_attempts"),
        timeout: text("timeout").and_then(|t| crate::units::parse_duration(t).ok()),
    }
}

/// The `--action` for loading the manifest: the flag, else the one the job was started
/// with. A different one is another job: refused, nothing sent.
pub(super) fn action(
    flag: Option<Action>,
    recorded: Option<&Recorded>,
    journal: &Path,
) -> Result<Option<Action>, ExitError> {
    let kept = recorded.and_then(|r| r.action);
    match (flag, kept) {
        (Some(f), Some(k)) if f != k => Err(ExitError::new(
            Exit::Invalid,
            format!(
                "journal {} records a job started with --action {k}; --action {f} would be \
                 another job. Nothing was sent. Drop --action to resume it, or give the new \
                 job its own journal with --journal PATH (or --fresh to start it in this \
                 one's place; the old journal is kept, renamed)",
                journal.display()
            ),
        )),
        (Some(f), _) => Ok(Some(f)),
        (None, k) => Ok(k),
    }
}

/// Applies what the job was started with where neither a flag nor the manifest's settings
/// say otherwise, and says so (names and values, no secret is among them).
pub(super) fn apply(job: &mut Job, args: &RunArgs, recorded: &Recorded) {
    let s = job.manifest.settings.clone();
    let mut kept = Vec::new();
    if let Some(a) = recorded.action
        && args.manifest.action.is_none()
        && job.action == Some(a)
    {
        kept.push(format!("--action {a}"));
    }
    if recorded.snapshot && !job.snapshot {
        if args.snapshot.no_snapshot {
            tracing::warn!(
                "this job was started with --snapshot; --no-snapshot turns it off for this \
                 run: rooms changed from now on have no prior state, and `revert` will list \
                 their ops apart instead of restoring them"
            );
        } else {
            job.snapshot = true;
            kept.push("--snapshot".into());
        }
    }
    // A recorded value is kept where neither a flag nor the manifest sets it, and said only
    // where it differs from what this run would otherwise use (the defaults go unsaid).
    let free = |flag: bool, setting: bool| !flag && !setting;
    if let Some(c) = recorded.concurrency
        && free(args.concurrency.is_some(), s.concurrency.is_some())
        && c != job.concurrency
    {
        job.concurrency = c;
        kept.push(format!("--concurrency {c}"));
    }
    if let Some(r) = recorded.rate
        && free(args.rate.is_some(), s.rate.is_some())
        && r != job.rate
    {
        job.rate = r;
        kept.push(format!("--rate {r}"));
    }
    if let Some(n) = recorded.max_attempts
        && free(args.max_attempts.is_some(), s.max_attempts.is_some())
        && n != job.max_attempts
    {
        job.max_attempts = n;
        kept.push(format!("--max-attempts {n}"));
    }
    if let Some(t) = recorded.timeout
        && free(args.timeout.is_some(), s.timeout.is_some())
        && t != job.timeout
    {
        job.timeout = t;
        kept.push(format!("--timeout {}", humantime::format_duration(t)));
    }
    if !kept.is_empty() {
        tracing::info!(
            "resuming as the job was started: {} (from the journal; a flag overrides any of them)",
            kept.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_settings_are_read_back() {
        let r = from_settings(&serde_json::json!({
            "base_url": "sandbox", "action": "freeze", "snapshot": true, "concurrency": 4,
            "rate": "600/min", "max_attempts": 3, "timeout": "5s", "max_failures": 7
        }));
        assert_eq!(
            r,
            Recorded {
                action: Some(Action::Freeze),
                snapshot: true,
                concurrency: Some(4),
                rate: Some("600/min".parse().unwrap()),
                max_attempts: Some(3),
                timeout: Some(Duration::from_secs(5)),
            }
        );
        // A journal from before settings were kept: nothing to keep.
        assert_eq!(from_settings(&serde_json::json!({})), Recorded::default());
    }

    #[test]
    fn another_action_is_another_job() {
        let r = Recorded {
            action: Some(Action::Freeze),
            ..Recorded::default()
        };
        let j = Path::new("x.csv.journal");
        assert_eq!(action(None, Some(&r), j).unwrap(), Some(Action::Freeze));
        assert_eq!(
            action(Some(Action::Freeze), Some(&r), j).unwrap(),
            Some(Action::Freeze)
        );
        assert_eq!(
            action(Some(Action::Unfreeze), None, j).unwrap(),
            Some(Action::Unfreeze)
        );
        let e = action(Some(Action::Unfreeze), Some(&r), j).unwrap_err();
        assert_eq!(e.exit, Exit::Invalid);
        assert!(
            e.message.contains("started with --action freeze"),
            "{}",
            e.message
        );
    }
}
