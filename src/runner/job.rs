//! The job the runner is handed: a loaded manifest, its journal, where the requests go and
//! with which credentials, and the limits of delivery. [`Job::new`] gives what `run`
//! without flags would do (the manifest's `settings`, else the defaults below); the command
//! line then applies its flags and checks the result, and tests and library callers set the
//! fields they need directly. Also the translation of a job's limits into the scheduler's
//! [`RunnerOptions`] (deadlines, the window's start and the undo time as instants), for the
//! [`Schedule`] a run resolved.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use tokio::time::Instant;

use super::retry::Backoff;
use super::schedule::{Schedule, default_journal_template};
use super::scheduler::RunnerOptions;
use crate::api::Credentials;
use crate::budget::BudgetLocation;
use crate::manifest::Manifest;
use crate::op::{Action, ActionKind, Auth, Credential, RoomAuth};
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

/// The journal of a manifest when none is named: the manifest's path with `.journal`
/// appended, or `.sandbox.journal` for a rehearsal on the sandbox, so that the real run
/// never picks up (and calls complete) what only the sandbox saw.
pub(crate) fn default_journal_path(manifest: &Path, sandbox: bool) -> PathBuf {
    let mut s = manifest.as_os_str().to_owned();
    s.push(if sandbox {
        ".sandbox.journal"
    } else {
        ".journal"
    });
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
    /// The `--action` given for a CSV without an action column (recorded, so that a resume
    /// need not repeat it).
    pub action: Option<Action>,
    pub journal_path: PathBuf,
    pub target: Target,
    /// Never printed: `Secret` redacts itself.
    pub credentials: Credentials,
    /// The credential room ops and bans must use (`--room-auth`, `settings.room_auth`);
    /// `None` lets [`Job::auth`] pick one from the credentials that are set.
    pub room_auth: Option<RoomAuth>,
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
    /// Resume although the manifest's ops changed: what is done stays done, added and
    /// changed ops are sent, pending ops no longer in the manifest are skipped.
    pub replan: bool,
    /// Resume a job recorded against another base URL (the same service, another address).
    pub retarget: bool,
    pub progress: ProgressMode,
    pub log_format: LogFormat,
    /// Where the job's figures are written (Prometheus text format) at the end of the run.
    pub metrics_file: Option<PathBuf>,
    /// Retry timing. No flag sets it (the defaults suit the real API); library callers and
    /// tests against a local sandbox shorten it.
    pub backoff: Backoff,
    /// When the window has not opened yet (or the undo is not due yet), exit 4 at once
    /// instead of waiting.
    pub no_wait: bool,
    /// `--undo-at`: at this time, undo what the job changed (as `undo_at_end` does at the
    /// window's end).
    pub undo_at: Option<jiff::Timestamp>,
}

/// Which limit ends the main phase of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DeadlineKind {
    /// `--until` or `--max-duration`: the run stops there (exit 4).
    Limit,
    /// The window's end or the undo time: the undo (if any) follows.
    WindowEnd,
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
            action: None,
            journal_path: default_journal_template(&manifest, matches!(target, Target::Sandbox)),
            budget,
            target,
            credentials,
            room_auth: s.room_auth,
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
            replan: false,
            retarget: false,
            progress: ProgressMode::Auto,
            log_format: LogFormat::Text,
            metrics_file: None,
            backoff: Backoff::default(),
            no_wait: false,
            undo_at: None,
            manifest,
        }
    }

    /// The job's name in the metrics: the manifest's `name`, else its file name.
    pub(crate) fn label(&self) -> String {
        match &self.manifest.name {
            Some(n) => n.clone(),
            None => self
                .manifest
                .path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_else(|| self.manifest.path.display().to_string()),
        }
    }

    /// Which credential each kind of op is sent with: `room_auth` when given, else the
    /// client key and token when both are set, else the API key. The sandbox brings every
    /// credential.
    pub fn auth(&self) -> Auth {
        let token_set = match self.target {
            Target::Sandbox => true,
            Target::Remote { .. } => self.credentials.has(Credential::ClientToken),
        };
        Auth::resolve(self.room_auth, token_set)
    }

    /// The kinds of op the manifest holds (room ops, mutes, bans), each once.
    pub(crate) fn kinds(&self) -> Vec<ActionKind> {
        kinds_of(self.manifest.ops.iter().map(|p| p.op.action))
    }

    /// Where this job stands now: its window occurrence, undo time and journal (see
    /// [`super::schedule`]).
    pub fn schedule(&self) -> Schedule {
        super::schedule::resolve_at(
            &self.manifest,
            &self.journal_path,
            self.undo_at,
            crate::clock::now(),
        )
    }

    /// The effective settings of a run with `schedule`, for the journal and `status`. Holds
    /// no secret: the credentials appear by name (`client_token`, `api_key`), for each kind
    /// of op.
    pub(crate) fn settings_json(&self, schedule: &Schedule) -> serde_json::Value {
        let auth = self.auth();
        let kinds = self.kinds();
        let used = |k: ActionKind, action| kinds.contains(&k).then(|| auth.for_action(action));
        serde_json::json!({
            "base_url": match &self.target {
                Target::Remote { base_url } => serde_json::Value::String(base_url.to_string()),
                Target::Sandbox => serde_json::Value::String("sandbox".into()),
            },
            "action": self.action.map(Action::as_str),
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
            "room_auth": self.room_auth,
            "credentials": {
                "rooms": used(ActionKind::Room, crate::op::Action::Freeze),
                "mutes": used(ActionKind::Mute, crate::op::Action::Mute),
                "bans": used(ActionKind::Ban, crate::op::Action::Ban),
            },
            "window": schedule.window.map(|w| serde_json::json!({
                "start": w.start.to_string(), "end": w.end.to_string()
            })),
            "daily_window": self.manifest.window.as_ref()
                .filter(|w| w.daily().is_some())
                .map(crate::manifest::Window::to_json),
            "undo_at": schedule.undo_at.map(|t| t.to_string()),
            "no_wait": self.no_wait,
        })
    }

    /// The limits that end the main phase of a run with `schedule`, each with its label and
    /// kind: `--until`, `--max-duration`, the window's end and the undo time.
    fn deadlines(&self, schedule: &Schedule) -> Vec<(jiff::Timestamp, String, DeadlineKind)> {
        let mut v = Vec::new();
        if let Some(u) = self.until {
            v.push((u, format!("--until {u}"), DeadlineKind::Limit));
        }
        if let Some(d) = self.max_duration {
            let at = jiff::SignedDuration::try_from(d)
                .ok()
                .and_then(|d| schedule.now.checked_add(d).ok())
                .unwrap_or(jiff::Timestamp::MAX);
            let label = format!("--max-duration {}", humantime::format_duration(d));
            v.push((at, label, DeadlineKind::Limit));
        }
        if let Some(w) = schedule.window {
            let label = format!("the window's end ({})", w.end);
            v.push((w.end, label, DeadlineKind::WindowEnd));
        }
        if let (Some(t), Some(label)) = (schedule.undo_at, schedule.undo_label()) {
            v.push((t, label, DeadlineKind::WindowEnd));
        }
        v
    }

    /// The earliest limit of the main phase and its kind.
    pub(crate) fn deadline(
        &self,
        schedule: &Schedule,
    ) -> Option<(jiff::Timestamp, String, DeadlineKind)> {
        self.deadlines(schedule)
            .into_iter()
            .min_by_key(|(t, _, kind)| (*t, *kind == DeadlineKind::Limit))
    }

    /// The scheduler's options for the main phase of a run with `schedule`: the earliest of
    /// `until`, `max_duration`, the window's end and the undo time is the deadline; the
    /// window's start delays the first request.
    pub(crate) fn runner_options(&self, schedule: &Schedule) -> RunnerOptions {
        let now = Instant::now();
        let at = |ts: jiff::Timestamp| -> Instant {
            let d = ts.duration_since(schedule.now);
            if d.is_negative() {
                now
            } else {
                now + Duration::try_from(d).unwrap_or(Duration::ZERO)
            }
        };
        let deadline = self.deadline(schedule).map(|(t, label, _)| (at(t), label));
        let start_at = schedule
            .window
            .filter(|w| w.start > schedule.now)
            .map(|w| (at(w.start), format!("the window's start, {}", w.start)));
        RunnerOptions {
            start_at,
            deadline,
            snapshot: self.snapshot,
            ..self.delivery_options()
        }
    }

    /// The scheduler's options for the undo phase: the same delivery limits, no window, no
    /// deadline (the undo is what must happen after the end), no snapshot.
    pub(crate) fn undo_options(&self) -> RunnerOptions {
        RunnerOptions {
            snapshot: false,
            ..self.delivery_options()
        }
    }

    fn delivery_options(&self) -> RunnerOptions {
        RunnerOptions {
            concurrency: self.concurrency as usize,
            rate: self.rate,
            max_attempts: self.max_attempts,
            max_failures: self.max_failures,
            max_failure_ratio: self.max_failure_ratio,
            backoff: self.backoff,
            auth: self.auth(),
            ..RunnerOptions::default()
        }
    }
}

/// The kinds of `actions`, each once, in [`ActionKind`] order.
pub(crate) fn kinds_of(actions: impl IntoIterator<Item = crate::op::Action>) -> Vec<ActionKind> {
    let mut kinds: Vec<ActionKind> = actions.into_iter().map(|a| a.kind()).collect();
    kinds.sort();
    kinds.dedup();
    kinds
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Format, Occurrence, Settings};

    fn job() -> Job {
        let manifest = Manifest {
            path: "x.csv".into(),
            format: Format::Yaml,
            name: None,
            checksum: "0".into(),
            window: None,
            settings: Settings::default(),
            ops: vec![],
            sources: vec![],
            warnings: vec![],
        };
        Job::new(manifest, Target::Sandbox, Credentials::default())
    }

    fn schedule(window: Option<Occurrence>, undo_at: Option<jiff::Timestamp>) -> Schedule {
        Schedule {
            now: jiff::Timestamp::now(),
            journal_path: "x.csv.journal".into(),
            window,
            undo_at,
            date: jiff::civil::date(2026, 11, 22),
            owed_undo: false,
        }
    }

    #[test]
    fn journal_path_appends() {
        assert_eq!(
            default_journal_path(Path::new("jobs/a.yaml"), false),
            PathBuf::from("jobs/a.yaml.journal")
        );
        assert_eq!(
            default_journal_path(Path::new("jobs/a.yaml"), true),
            PathBuf::from("jobs/a.yaml.sandbox.journal")
        );
        assert_eq!(job().journal_path, PathBuf::from("x.csv.sandbox.journal"));
    }

    #[test]
    fn the_earliest_limit_is_the_deadline_and_the_window_start_is_awaited() {
        let now = jiff::Timestamp::now();
        let hours = |n: i64| now + jiff::SignedDuration::from_hours(n);
        let mut j = job();
        j.until = Some(hours(1));
        j.max_duration = Some(Duration::from_secs(600));
        let o = j.runner_options(&schedule(None, None));
        let (at, label) = o.deadline.unwrap();
        assert!(label.starts_with("--max-duration"), "{label}");
        let left = at - Instant::now();
        assert!(left <= Duration::from_secs(600) && left > Duration::from_secs(590));
        assert!(o.start_at.is_none());

        let w = Occurrence {
            start: hours(2),
            end: hours(4),
            date: None,
        };
        let mut j = job();
        j.until = Some(hours(1));
        let o = j.runner_options(&schedule(Some(w), None));
        assert!(o.deadline.unwrap().1.starts_with("--until"));
        let (start, label) = o.start_at.unwrap();
        assert!(label.contains("window"));
        assert!(start - Instant::now() > Duration::from_secs(7100));

        let past = Occurrence {
            start: hours(-4),
            end: hours(-2),
            date: None,
        };
        let o = job().runner_options(&schedule(Some(past), None));
        let (at, label) = o.deadline.unwrap();
        assert!(at <= Instant::now() && label.contains("window"));
        assert!(o.start_at.is_none());
    }

    /// The undo time ends the main phase when it comes before the window's end; `--until`
    /// before both is a plain limit.
    #[test]
    fn the_undo_time_is_a_deadline_of_the_main_phase() {
        let now = jiff::Timestamp::now();
        let hours = |n: i64| now + jiff::SignedDuration::from_hours(n);
        let w = Occurrence {
            start: hours(-1),
            end: hours(3),
            date: None,
        };
        let mut j = job();
        let (t, label, kind) = j.deadline(&schedule(Some(w), Some(hours(2)))).unwrap();
        assert_eq!((t, kind), (hours(2), DeadlineKind::WindowEnd));
        assert!(label.starts_with("--undo-at"), "{label}");
        let (_, label, kind) = j.deadline(&schedule(Some(w), Some(hours(3)))).unwrap();
        assert_eq!(kind, DeadlineKind::WindowEnd);
        assert!(label.starts_with("the window's end"), "{label}");
        j.until = Some(hours(1));
        let (_, _, kind) = j.deadline(&schedule(Some(w), Some(hours(2)))).unwrap();
        assert_eq!(kind, DeadlineKind::Limit);
        let u = j.undo_options();
        assert!(u.deadline.is_none() && u.start_at.is_none() && !u.snapshot);
    }
}
