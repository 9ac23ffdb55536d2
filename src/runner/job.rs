//! The job the runner is handed: a loaded manifest, its journal, where the requests go and
//! with which credentials, and the limits of delivery. [`Job::new`] gives what `run`
//! without flags would do (the manifest's `settings`, else the defaults below); the command
//! line then applies its flags and checks the result, and tests and library callers set the
//! fields they need directly. Also the translation of a job's limits into the scheduler's
//! [`RunnerOptions`] (deadlines and the window's start as instants).

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use tokio::time::Instant;

use super::retry::Backoff;
use super::scheduler::RunnerOptions;
use crate::api::Credentials;
use crate::budget::BudgetLocation;
use crate::manifest::Manifest;
use crate::output::{LogFormat, ProgressMode};
use crate::units::Rate;

/// Requests in flight at most, unless the flags or the manifest say otherwise.
pub(crate) const DEFAULT_CONCURRENCY: u32 = 8;
/// Requests per credential by default: 80% of the API's documented limit of 1000/min.
pub(crate) const DEFAULT_RATE: Rate = Rate {
    count: 800,
    per: Duration::from_secs(60),
};
/// Attempts per op before it counts as failed.
pub(crate) const DEFAULT_MAX_ATTEMPTS: u32 = 6;
/// Timeout of one request.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The journal of a manifest when none is named: the manifest's path + `.journal`.
pub(crate) fn default_journal_path(manifest: &Path) -> PathBuf {
    let mut s = manifest.as_os_str().to_owned();
    s.push(".journal");
    PathBuf::from(s)
}

/// Where requests go.
#[derive(Clone, Debug)]
pub enum Target {
    /// The real API at this base URL, with the job's credentials.
    Remote { base_url: Url },
    /// An in-process sandbox seeded from the manifest; it provides the URL and the
    /// credentials.
    Sandbox,
}

/// Everything a run needs. The command line builds it from checked flags; nothing here is
/// checked again.
#[derive(Debug)]
pub struct Job {
    pub manifest: Manifest,
    pub journal_path: PathBuf,
    pub target: Target,
    /// Never printed: `Secret` redacts itself.
    pub credentials: Credentials,
    pub concurrency: u32,
    /// Per credential.
    pub rate: Rate,
    /// Where each credential's rate budget is kept: on this host by default (every run on
    /// the host that uses the credential shares it), in Redis with `--budget`, in this
    /// process for the sandbox (which ignores this field: its credentials are its own).
    pub budget: BudgetLocation,
    pub max_attempts: u32,
    /// Of one request.
    pub timeout: Duration,
    /// Stop dispatching at this time.
    pub until: Option<jiff::Timestamp>,
    /// Stop dispatching after this long.
    pub max_duration: Option<Duration>,
    /// Abort once more than this many ops have failed permanently.
    pub max_failures: Option<u64>,
    /// Abort once the share of failed ops passes this (0..1).
    pub max_failure_ratio: Option<f64>,
    /// Read each room before its first change, so `revert` can restore it.
    pub snapshot: bool,
    /// Start a new job even if the journal exists (the old one is renamed).
    pub fresh: bool,
    /// Also re-attempt the ops that failed permanently in earlier runs.
    pub retry_failed: bool,
    pub progress: ProgressMode,
    pub log_format: LogFormat,
    /// Retry timing. No flag sets it (the defaults suit the real API); library callers and
    /// tests against a local sandbox shorten it.
    pub backoff: Backoff,
}

impl Job {
    /// The job `run MANIFEST` without flags would run: the manifest's settings where it has
    /// them, else the defaults; the journal next to the manifest; a progress bar on a
    /// terminal and text on stderr.
    pub fn new(manifest: Manifest, target: Target, credentials: Credentials) -> Job {
        let s = &manifest.settings;
        let budget = match target {
            Target::Remote { .. } => s
                .budget
                .clone()
                .unwrap_or(BudgetLocation::Host { dir: None }),
            Target::Sandbox => BudgetLocation::Process,
        };
        Job {
            journal_path: default_journal_path(&manifest.path),
            budget,
            target,
            credentials,
            concurrency: s.concurrency.unwrap_or(DEFAULT_CONCURRENCY),
            rate: s.rate.unwrap_or(DEFAULT_RATE),
            max_attempts: s.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS),
            timeout: s.timeout.unwrap_or(DEFAULT_TIMEOUT),
            until: None,
            max_duration: None,
            max_failures: None,
            max_failure_ratio: None,
            snapshot: s.snapshot.unwrap_or(false),
            fresh: false,
            retry_failed: false,
            progress: ProgressMode::Auto,
            log_format: LogFormat::Text,
            backoff: Backoff::default(),
            manifest,
        }
    }

    /// The effective settings, for the journal and `status`. Holds no secret.
    pub(crate) fn settings_json(&self) -> serde_json::Value {
        serde_json::json!({
            "base_url": match &self.target {
                Target::Remote { base_url } => serde_json::Value::String(base_url.to_string()),
                Target::Sandbox => serde_json::Value::String("sandbox".into()),
            },
            "concurrency": self.concurrency,
            "rate": self.rate.to_string(),
            "budget": self.budget.to_string(),
            "max_attempts": self.max_attempts,
            "timeout": humantime::format_duration(self.timeout).to_string(),
            "until": self.until.map(|t| t.to_string()),
            "max_duration": self.max_duration.map(|d| humantime::format_duration(d).to_string()),
            "max_failures": self.max_failures,
            "max_failure_ratio": self.max_failure_ratio,
            "snapshot": self.snapshot,
            "retry_failed": self.retry_failed,
            "window": self.manifest.window.map(|w| serde_json::json!({
                "start": w.start.to_string(), "end": w.end.to_string()
            })),
        })
    }

    /// The scheduler's options: the earliest of `until`, `max_duration` and the window's end
    /// is the deadline; the window's start delays the first request.
    pub(crate) fn runner_options(&self) -> RunnerOptions {
        let now_ts = jiff::Timestamp::now();
        let now = Instant::now();
        let at = |ts: jiff::Timestamp| -> Instant {
            let d = ts.duration_since(now_ts);
            if d.is_negative() {
                now
            } else {
                now + Duration::try_from(d).unwrap_or(Duration::ZERO)
            }
        };
        let mut deadline: Option<(Instant, String)> = None;
        let mut earliest = |t: Instant, label: String| {
            if deadline.as_ref().is_none_or(|(d, _)| t < *d) {
                deadline = Some((t, label));
            }
        };
        if let Some(u) = self.until {
            earliest(at(u), format!("--until {u}"));
        }
        if let Some(d) = self.max_duration {
            earliest(
                now + d,
                format!("--max-duration {}", humantime::format_duration(d)),
            );
        }
        let mut start_at = None;
        if let Some(w) = self.manifest.window {
            earliest(at(w.end), format!("the window's end ({})", w.end));
            if w.start > now_ts {
                start_at = Some((at(w.start), format!("the window's start, {}", w.start)));
            }
        }
        RunnerOptions {
            concurrency: self.concurrency as usize,
            rate: self.rate,
            max_attempts: self.max_attempts,
            max_failures: self.max_failures,
            max_failure_ratio: self.max_failure_ratio,
            start_at,
            deadline,
            snapshot: self.snapshot,
            backoff: self.backoff,
            ..RunnerOptions::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Format, Settings, Window};

    fn job(window: Option<Window>) -> Job {
        let manifest = Manifest {
            path: "x.csv".into(),
            format: Format::Yaml,
            name: None,
            checksum: "0".into(),
            window,
            settings: Settings::default(),
            ops: vec![],
            sources: vec![],
            warnings: vec![],
        };
        Job::new(manifest, Target::Sandbox, Credentials::default())
    }

    #[test]
    fn journal_path_appends() {
        assert_eq!(
            default_journal_path(Path::new("jobs/a.yaml")),
            PathBuf::from("jobs/a.yaml.journal")
        );
        assert_eq!(job(None).journal_path, PathBuf::from("x.csv.journal"));
    }

    #[test]
    fn the_earliest_limit_is_the_deadline_and_the_window_start_is_awaited() {
        let now = jiff::Timestamp::now();
        let in_1h = now + jiff::SignedDuration::from_hours(1);
        let mut j = job(None);
        j.until = Some(in_1h);
        j.max_duration = Some(Duration::from_secs(600));
        let o = j.runner_options();
        let (at, label) = o.deadline.unwrap();
        assert!(label.starts_with("--max-duration"), "{label}");
        let left = at - Instant::now();
        assert!(left <= Duration::from_secs(600) && left > Duration::from_secs(590));
        assert!(o.start_at.is_none());

        let w = Window {
            start: now + jiff::SignedDuration::from_hours(2),
            end: now + jiff::SignedDuration::from_hours(4),
        };
        let mut j = job(Some(w));
        j.until = Some(in_1h);
        let o = j.runner_options();
        assert!(o.deadline.unwrap().1.starts_with("--until"));
        let (start, label) = o.start_at.unwrap();
        assert!(label.contains("window"));
        assert!(start - Instant::now() > Duration::from_secs(7100));

        let past = Window {
            start: now - jiff::SignedDuration::from_hours(4),
            end: now - jiff::SignedDuration::from_hours(2),
        };
        let o = job(Some(past)).runner_options();
        let (at, label) = o.deadline.unwrap();
        assert!(at <= Instant::now() && label.contains("window"));
        assert!(o.start_at.is_none());
    }
}
