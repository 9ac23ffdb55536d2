//! The rate budget of a credential, shared by every run that uses it: "may I send one
//! request on this credential now, and if not, when?". A [`Budget`] answers from a ledger
//! that holds one GCRA state (see [`Gcra`]) per credential:
//!
//! - in this process only ([`Budget::in_process`]), on tokio's clock, so tests with paused
//!   time stay deterministic;
//! - on this host ([`Budget::on_host`]): a file per credential in a private directory under
//!   `$XDG_RUNTIME_DIR` (else the temp dir), named by a hash of the credential and locked
//!   with `flock` for each draw, so two jobs started together on one key send no more than
//!   the rate between them;
//! - in Redis ([`Budget::redis`], `--budget redis://HOST:PORT/DB`): the same GCRA in one
//!   atomic script on the server's clock, for runs on several hosts.
//!
//! The runs on a ledger also leave each other one note: the server limit the last of them
//! measured ([`Budget::publish_limit`], [`Budget::shared_limit`]), so that every run on a
//! credential draws at the same pace once one has found the server allows less than the
//! rate.
//!
//! A ledger that cannot be reached at the start is [`BudgetError::Unreachable`] (exit 2,
//! nothing was sent); one lost mid-run is [`BudgetError::Lost`] (exit 4: stop dispatching,
//! never go on unpaced). The host and Redis ledgers run on real time: do not use them under
//! tokio's paused clock.

mod gcra;
mod host;
mod key;
mod redis_ledger;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use gcra::{Gcra, MAX_AHEAD};
pub use host::{LOCK_PATIENCE, NOTE_TTL, default_dir};
pub use key::LedgerKey;
pub use redis_ledger::REDIS_TIMEOUT;

use crate::{Exit, ExitError};
use gcra::Decision;
use host::{HostLedger, Presence};
use key::redact_url;
use redis_ledger::RedisLedger;

/// Where a credential's budget is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BudgetLocation {
    /// In this process only.
    Process,
    /// On this host, in `dir` ([`default_dir`] when `None`).
    Host { dir: Option<PathBuf> },
    /// In Redis at this `redis://` URL, shared by every host that names it.
    Redis(String),
}

impl FromStr for BudgetLocation {
    type Err = BudgetError;

    /// Parses `--budget`: `redis://HOST:PORT/DB` (the host's ledger is the default, and
    /// needs no flag).
    fn from_str(s: &str) -> Result<BudgetLocation, BudgetError> {
        let invalid = |reason: String| BudgetError::InvalidUrl {
            given: redact_url(s),
            reason,
        };
        if s.starts_with("rediss://") {
            return Err(invalid(
                "TLS (rediss://) is not supported; expected redis://HOST:PORT/DB".into(),
            ));
        }
        if !s.starts_with("redis://") {
            return Err(invalid("expected redis://HOST:PORT/DB".into()));
        }
        RedisLedger::check_url(s).map_err(|e| invalid(e.to_string()))?;
        Ok(BudgetLocation::Redis(s.to_string()))
    }
}

impl fmt::Display for BudgetLocation {
    /// `process`, `host` (or `host:DIR`), or the Redis URL without its password: for the
    /// journal's settings and messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BudgetLocation::Process => f.write_str("process"),
            BudgetLocation::Host { dir: None } => f.write_str("host"),
            BudgetLocation::Host { dir: Some(d) } => write!(f, "host:{}", d.display()),
            BudgetLocation::Redis(url) => f.write_str(&redact_url(url)),
        }
    }
}

/// The answer to one draw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Draw {
    /// One request may go out now (and has been counted).
    Granted,
    /// Nothing was counted; ask again after this long.
    Wait(Duration),
}

/// A server limit that a run on the ledger measured and left for the others.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SharedLimit {
    /// Requests per second.
    pub per_second: f64,
    /// Who left it (a number of the leaver's choosing, see [`Budget::publish_limit`]) ...
    pub by: u64,
    /// ... and how many it had left before.
    pub seq: u64,
}

impl SharedLimit {
    fn parse(note: &str) -> Option<SharedLimit> {
        let mut parts = note.split(' ');
        let limit = SharedLimit {
            per_second: parts.next()?.parse().ok()?,
            by: parts.next()?.parse().ok()?,
            seq: parts.next()?.parse().ok()?,
        };
        (parts.next().is_none() && limit.per_second.is_finite() && limit.per_second > 0.0)
            .then_some(limit)
    }
}

/// Who shares a budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetScope {
    /// This process alone.
    Process,
    /// Every run on this host that uses the credential.
    Host,
    /// Every run, on any host, that names the same Redis.
    Redis,
}

/// What `status` and the summary say about a budget.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct BudgetInfo {
    /// The pace this run draws at, requests per second.
    pub per_second: f64,
    /// Requests that may go out back to back.
    pub burst: u32,
    pub scope: BudgetScope,
    /// The ledger: a file path (named by the credential's hash) or a redacted Redis URL;
    /// empty in process.
    pub ledger: String,
}

impl BudgetInfo {
    /// Whether other runs draw from the same budget.
    pub fn shared(&self) -> bool {
        self.scope != BudgetScope::Process
    }
}

impl fmt::Display for BudgetInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.4}/s, burst {}", self.per_second, self.burst)?;
        match self.scope {
            BudgetScope::Process => f.write_str(", this run only"),
            BudgetScope::Host => write!(f, ", shared on this host ({})", self.ledger),
            BudgetScope::Redis => write!(f, ", shared through {}", self.ledger),
        }
    }
}

/// Why a budget cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    /// `--budget` is not a URL this tool can use (exit 2).
    #[error("invalid --budget {given}: {reason}")]
    InvalidUrl { given: String, reason: String },
    /// The ledger cannot be reached or opened at the start (exit 2).
    #[error("cannot reach the rate budget at {ledger}: {reason}; nothing was sent")]
    Unreachable { ledger: String, reason: String },
    /// The ledger failed mid-run (exit 4): stop dispatching, never go on unpaced.
    #[error(
        "lost the rate budget at {ledger}: {reason}; stopped dispatching rather than send unpaced"
    )]
    Lost { ledger: String, reason: String },
}

impl BudgetError {
    /// The exit status this error ends a run with.
    pub fn exit(&self) -> Exit {
        match self {
            BudgetError::InvalidUrl { .. } | BudgetError::Unreachable { .. } => Exit::Invalid,
            BudgetError::Lost { .. } => Exit::Stopped,
        }
    }
}

impl From<BudgetError> for ExitError {
    fn from(e: BudgetError) -> ExitError {
        ExitError::new(e.exit(), e.to_string())
    }
}

/// One credential's budget. Clones share the ledger (and the turn, see [`Budget::acquire`]).
#[derive(Clone)]
pub struct Budget {
    inner: Arc<Inner>,
}

struct Inner {
    ledger: Ledger,
    gcra: Gcra,
    /// One task of this process at a time waits for the ledger, so a process with many
    /// tasks asks once per slot, not once per task.
    turn: tokio::sync::Mutex<()>,
    /// This run's mark beside a host ledger, once it has joined (see [`Budget::join`]).
    presence: Mutex<Option<Arc<Presence>>>,
    /// How many notes this budget left.
    published: AtomicU64,
}

enum Ledger {
    Process(ProcessLedger),
    Host(Arc<HostLedger>),
    Redis { ledger: RedisLedger, shown: String },
}

/// The in-process ledger: the TAT in microseconds since `base`, on tokio's clock, and the
/// note.
struct ProcessLedger {
    base: tokio::time::Instant,
    tat: Mutex<Option<u64>>,
    note: Mutex<Option<String>>,
}

/// A number to tell one run's notes from others', across processes and hosts: the time,
/// the process and a count, hashed.
pub fn new_publisher() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut h = std::hash::DefaultHasher::new();
    let who = (
        nanos,
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
    );
    std::hash::Hash::hash(&who, &mut h);
    std::hash::Hasher::finish(&h)
}

impl fmt::Debug for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Budget").field(&self.info()).finish()
    }
}

impl Budget {
    fn with(ledger: Ledger, gcra: Gcra) -> Budget {
        Budget {
            inner: Arc::new(Inner {
                ledger,
                gcra,
                turn: tokio::sync::Mutex::new(()),
                presence: Mutex::new(None),
                published: AtomicU64::new(0),
            }),
        }
    }

    /// A budget of this process only.
    pub fn in_process(gcra: Gcra) -> Budget {
        Budget::with(
            Ledger::Process(ProcessLedger {
                base: tokio::time::Instant::now(),
                tat: Mutex::new(None),
                note: Mutex::new(None),
            }),
            gcra,
        )
    }

    /// The host budget of `key` in `dir` ([`default_dir`] in a real run).
    pub fn on_host(dir: &Path, key: &LedgerKey, gcra: Gcra) -> Result<Budget, BudgetError> {
        let ledger = HostLedger::open(dir, key).map_err(|e| BudgetError::Unreachable {
            ledger: dir.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Budget::with(Ledger::Host(Arc::new(ledger)), gcra))
    }

    /// The Redis budget of `key` at `url`, connected (within [`REDIS_TIMEOUT`]) and checked.
    pub async fn redis(url: &str, key: &LedgerKey, gcra: Gcra) -> Result<Budget, BudgetError> {
        let shown = redact_url(url);
        if let Err(e) = RedisLedger::check_url(url) {
            return Err(BudgetError::InvalidUrl {
                given: shown,
                reason: e.to_string(),
            });
        }
        let ledger =
            RedisLedger::connect(url, key)
                .await
                .map_err(|e| BudgetError::Unreachable {
                    ledger: shown.clone(),
                    reason: e.to_string(),
                })?;
        Ok(Budget::with(Ledger::Redis { ledger, shown }, gcra))
    }

    /// The budget of `key` at `location`.
    pub async fn open(
        location: &BudgetLocation,
        key: &LedgerKey,
        gcra: Gcra,
    ) -> Result<Budget, BudgetError> {
        match location {
            BudgetLocation::Process => Ok(Budget::in_process(gcra)),
            BudgetLocation::Host { dir: Some(dir) } => Budget::on_host(dir, key, gcra),
            BudgetLocation::Host { dir: None } => Budget::on_host(&default_dir(), key, gcra),
            BudgetLocation::Redis(url) => Budget::redis(url, key, gcra).await,
        }
    }

    /// The pace this budget draws at.
    pub fn gcra(&self) -> Gcra {
        self.inner.gcra
    }

    /// The pace and who shares it, for `status` and the summary.
    pub fn info(&self) -> BudgetInfo {
        let (scope, ledger) = match &self.inner.ledger {
            Ledger::Process(_) => (BudgetScope::Process, String::new()),
            Ledger::Host(h) => (BudgetScope::Host, h.path().display().to_string()),
            Ledger::Redis { shown, .. } => (BudgetScope::Redis, shown.clone()),
        };
        BudgetInfo {
            per_second: self.inner.gcra.per_second(),
            burst: self.inner.gcra.burst(),
            scope,
            ledger,
        }
    }

    /// Marks this run as one of those drawing from a host budget, for as long as the budget
    /// lives, so [`Budget::peers`] in other runs counts it. Best effort (a mark that cannot
    /// be made only leaves the count short); nothing to do for other budgets.
    pub fn join(&self) {
        let Ledger::Host(h) = &self.inner.ledger else {
            return;
        };
        let mut presence = self
            .inner
            .presence
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if presence.is_none() {
            match h.join() {
                Ok(p) => *presence = Some(Arc::new(p)),
                Err(e) => tracing::debug!(error = %e, "cannot mark this run beside the budget"),
            }
        }
    }

    /// How many other runs that joined a host budget draw from it now; `None` for other
    /// budgets, or before [`Budget::join`].
    pub async fn peers(&self) -> Option<u32> {
        let Ledger::Host(h) = &self.inner.ledger else {
            return None;
        };
        let me = self
            .inner
            .presence
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        let h = Arc::clone(h);
        tokio::task::spawn_blocking(move || h.peers_blocking(&me).ok())
            .await
            .ok()
            .flatten()
    }

    /// Holds every draw from the ledger, by any run, back for `wait` (at most about
    /// [`MAX_AHEAD`]): a server's 429 hint is the credential's, not one run's. Best effort, as
    /// the hint also holds this run back by itself; a ledger that fails fails the next draw.
    pub async fn pause(&self, gcra: &Gcra, wait: Duration) {
        let paused = match &self.inner.ledger {
            Ledger::Process(p) => {
                p.pause(gcra, wait);
                Ok(())
            }
            Ledger::Host(h) => {
                let (h, g) = (Arc::clone(h), *gcra);
                tokio::task::spawn_blocking(move || h.pause_blocking(&g, wait))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
            }
            Ledger::Redis { ledger, .. } => {
                ledger.pause(gcra, wait).await.map_err(|e| e.to_string())
            }
        };
        if let Err(e) = paused {
            tracing::debug!(error = %e, "cannot hold the budget's other runs back");
        }
    }

    /// Leaves the other runs on the ledger the server limit that `by` (a run's number, see
    /// [`new_publisher`]) measured, requests per second. Best effort: a note that cannot be
    /// left only leaves the others to find the limit themselves (a ledger that fails fails
    /// the next draw anyway).
    pub async fn publish_limit(&self, per_second: f64, by: u64) {
        let seq = self.inner.published.fetch_add(1, Ordering::Relaxed) + 1;
        let note = format!("{per_second:.3} {by} {seq}");
        let written = match &self.inner.ledger {
            Ledger::Process(p) => {
                *p.note.lock().unwrap_or_else(|e| e.into_inner()) = Some(note);
                Ok(())
            }
            Ledger::Host(h) => {
                let h = Arc::clone(h);
                tokio::task::spawn_blocking(move || h.put_note_blocking(&note))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
            }
            Ledger::Redis { ledger, .. } => ledger
                .put_note(&note, NOTE_TTL)
                .await
                .map_err(|e| e.to_string()),
        };
        if let Err(e) = written {
            tracing::debug!(error = %e, "cannot leave the discovered limit beside the budget");
        }
    }

    /// The last limit a run on the ledger left (this one included), if any and recent.
    pub async fn shared_limit(&self) -> Option<SharedLimit> {
        let note = match &self.inner.ledger {
            Ledger::Process(p) => p.note.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            Ledger::Host(h) => {
                let h = Arc::clone(h);
                tokio::task::spawn_blocking(move || h.note_blocking())
                    .await
                    .ok()
                    .flatten()
            }
            Ledger::Redis { ledger, .. } => ledger.note().await.ok().flatten(),
        };
        SharedLimit::parse(&note?)
    }

    /// One draw at the budget's own pace.
    pub async fn draw(&self) -> Result<Draw, BudgetError> {
        self.draw_with(&self.inner.gcra).await
    }

    /// One draw at `gcra`'s pace (a run that has slowed down spends more of the shared
    /// budget per request).
    pub async fn draw_with(&self, gcra: &Gcra) -> Result<Draw, BudgetError> {
        let decision = match &self.inner.ledger {
            Ledger::Process(p) => p.draw(gcra),
            Ledger::Host(h) => {
                let (task_h, g) = (Arc::clone(h), *gcra);
                let result = tokio::task::spawn_blocking(move || task_h.draw_blocking(&g)).await;
                match result
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
                {
                    Ok(d) => d,
                    Err(reason) => {
                        return Err(BudgetError::Lost {
                            ledger: h.path().display().to_string(),
                            reason,
                        });
                    }
                }
            }
            Ledger::Redis { ledger, shown } => {
                ledger.draw(gcra).await.map_err(|e| BudgetError::Lost {
                    ledger: shown.clone(),
                    reason: e.to_string(),
                })?
            }
        };
        Ok(match decision {
            Decision::Grant { .. } => Draw::Granted,
            Decision::Refuse { wait_us } => Draw::Wait(Duration::from_micros(wait_us)),
        })
    }

    /// Waits until one request may go out, at the budget's own pace.
    pub async fn acquire(&self) -> Result<(), BudgetError> {
        self.acquire_with(&self.inner.gcra).await
    }

    /// Waits until one request may go out at `gcra`'s pace. Cancel-safe: dropping the
    /// future before it returns has counted nothing.
    pub async fn acquire_with(&self, gcra: &Gcra) -> Result<(), BudgetError> {
        let _turn = self.inner.turn.lock().await;
        loop {
            match self.draw_with(gcra).await? {
                Draw::Granted => return Ok(()),
                Draw::Wait(d) => tokio::time::sleep(d).await,
            }
        }
    }
}

impl ProcessLedger {
    fn now_us(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn pause(&self, gcra: &Gcra, wait: Duration) {
        let now = self.now_us();
        let mut tat = self.tat.lock().unwrap_or_else(|e| e.into_inner());
        let wait_us = u64::try_from(wait.as_micros()).unwrap_or(u64::MAX);
        if let Some(t) = gcra.pause(*tat, now, wait_us) {
            *tat = Some(t);
        }
    }

    fn draw(&self, gcra: &Gcra) -> Decision {
        let now = u64::try_from(self.base.elapsed().as_micros()).unwrap_or(u64::MAX);
        // A poisoned lock only means a panic elsewhere mid-update; the state is one number.
        let mut tat = self.tat.lock().unwrap_or_else(|e| e.into_inner());
        let decision = gcra.decide(*tat, now);
        if let Decision::Grant { tat: t } = decision {
            *tat = Some(t);
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_in_process_budget_paces_on_tokio_time() {
        let b = Budget::in_process(Gcra::new(Duration::from_millis(100), 4));
        let t0 = tokio::time::Instant::now();
        for k in 0..5u32 {
            b.acquire().await.unwrap();
            assert_eq!(t0.elapsed(), Duration::from_millis(100) * k);
        }
        // A clone is the same budget.
        let c = b.clone();
        assert_eq!(
            c.draw().await.unwrap(),
            Draw::Wait(Duration::from_millis(100))
        );
        let info = b.info();
        assert!(!info.shared());
        assert_eq!(info.to_string(), "10.0000/s, burst 4, this run only");
    }

    #[tokio::test(start_paused = true)]
    async fn runs_on_a_budget_read_the_limit_one_of_them_left() {
        let a = Budget::in_process(Gcra::new(Duration::from_millis(100), 4));
        let b = a.clone();
        assert_eq!(b.shared_limit().await, None);
        let me = new_publisher();
        assert_ne!(me, new_publisher());
        a.publish_limit(19.25, me).await;
        let l = b.shared_limit().await.unwrap();
        assert_eq!((l.per_second, l.by, l.seq), (19.25, me, 1));
        a.publish_limit(18.0, me).await;
        assert_eq!(b.shared_limit().await.unwrap().seq, 2);
        let other = Budget::in_process(Gcra::new(Duration::from_millis(100), 4));
        assert_eq!(other.shared_limit().await, None, "another ledger");
        for bad in ["", "x 1 2", "-1 1 2", "1 2", "1 2 3 4", "inf 1 1"] {
            assert_eq!(SharedLimit::parse(bad), None, "{bad:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_acquire_counts_nothing() {
        let b = Budget::in_process(Gcra::new(Duration::from_millis(100), 1));
        b.acquire().await.unwrap();
        let waited = tokio::time::timeout(Duration::from_millis(50), b.acquire()).await;
        assert!(waited.is_err(), "still waiting for the slot at 100 ms");
        let t = tokio::time::Instant::now();
        b.acquire().await.unwrap();
        assert_eq!(
            t.elapsed(),
            Duration::from_millis(50),
            "the slot was not taken"
        );
    }

    #[test]
    fn budget_urls_are_redis_only_and_never_echo_a_password() {
        assert_eq!(
            "redis://127.0.0.1:6379/2"
                .parse::<BudgetLocation>()
                .unwrap(),
            BudgetLocation::Redis("redis://127.0.0.1:6379/2".into())
        );
        assert_eq!(
            BudgetLocation::Redis("redis://:pw@h:6379/2".into()).to_string(),
            "redis://***@h:6379/2"
        );
        assert_eq!(BudgetLocation::Host { dir: None }.to_string(), "host");
        assert_eq!(BudgetLocation::Process.to_string(), "process");
        for bad in [
            "rediss://:pw-secret@h:6380/0",
            "http://:pw-secret@h/0",
            "redis://:pw-secret@h:6379/notadb",
            "/run/user/1000",
        ] {
            let e = bad.parse::<BudgetLocation>().unwrap_err();
            assert!(
                !BudgetLocation::Redis(bad.into())
                    .to_string()
                    .contains("pw-secret")
            );
            let msg = e.to_string();
            assert!(msg.starts_with("invalid --budget "), "{msg}");
            assert!(!msg.contains("pw-secret"), "{msg}");
            assert_eq!(e.exit(), Exit::Invalid);
        }
    }

    #[test]
    fn errors_map_to_exit_codes() {
        let lost = BudgetError::Lost {
            ledger: "redis://h:1/0".into(),
            reason: "broken pipe".into(),
        };
        let e = ExitError::from(lost);
        assert_eq!(e.exit, Exit::Stopped);
        assert!(e.message.contains("stopped dispatching"), "{}", e.message);
        let unreachable = BudgetError::Unreachable {
            ledger: "redis://h:1/0".into(),
            reason: "refused".into(),
        };
        assert_eq!(unreachable.exit(), Exit::Invalid);
        assert_eq!(
            unreachable.to_string(),
            "cannot reach the rate budget at redis://h:1/0: refused; nothing was sent"
        );
    }
}
