//! Run statistics and the final summary: counts per outcome, elapsed, ops/s, retries,
//! latency percentiles, failures grouped by error code, and the pace each credential
//! settled on and why ([`PaceReport`], also what the journal keeps for `status`). Never
//! holds a credential.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::budget::BudgetScope;
use crate::op::Credential;
use crate::units::Rate;

/// What a credential's pace is based on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaceBasis {
    /// `--rate`: the server never asked for less.
    Asked,
    /// The server's 429s showed a lower limit, measured.
    Discovered,
    /// 429s lowered the pace before a limit could be measured.
    Lowered,
}

/// The pace a run settled on for one credential, and why. Holds no secret: the ledger is a
/// file named by a hash, or a Redis URL without its password.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PaceReport {
    pub credential: Credential,
    /// `--rate`.
    pub asked: Rate,
    /// Requests per second at the end of the run (for the asked pace, `--rate` less the
    /// runner's 1% headroom).
    pub per_second: f64,
    pub basis: PaceBasis,
    /// Requests per second: the server's limit as discovered, or for a lowered pace, the
    /// pace the server last answered 429 at.
    pub limit_per_second: Option<f64>,
    /// Who shares the credential's budget.
    pub scope: BudgetScope,
    /// The ledger: a file path or a redacted Redis URL; empty in process.
    pub ledger: String,
    /// The most other runs seen drawing from the same host ledger.
    pub other_runs: u32,
}

impl fmt::Display for PaceReport {
    /// `19.0/s (asked 40/s; discovered: the server answered 429 above ~20.0/s)`, or
    /// `20/s (asked; shared with 2 other runs on this host)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.basis {
            PaceBasis::Asked => write!(f, "{} (asked", self.asked)?,
            PaceBasis::Discovered => write!(
                f,
                "{:.1}/s (asked {}; discovered: the server answered 429 above ~{:.1}/s",
                self.per_second,
                self.asked,
                self.limit_per_second.unwrap_or(self.per_second)
            )?,
            PaceBasis::Lowered => write!(
                f,
                "{:.1}/s (asked {}; lowered: the server answered 429 at {:.1}/s, not at this pace",
                self.per_second,
                self.asked,
                self.limit_per_second.unwrap_or(self.per_second)
            )?,
        }
        match (self.scope, self.other_runs) {
            (BudgetScope::Host, 0) | (BudgetScope::Process, _) => {}
            (BudgetScope::Host, 1) => f.write_str("; shared with 1 other run on this host")?,
            (BudgetScope::Host, n) => write!(f, "; shared with {n} other runs on this host")?,
            (BudgetScope::Redis, _) => write!(f, "; shared through {}", self.ledger)?,
        }
        f.write_str(")")
    }
}

impl PaceReport {
    /// The summary's and `status`'s lines: `pace: ...`, with the credential named when the
    /// run used both.
    pub fn lines(paces: &[PaceReport]) -> Vec<String> {
        paces
            .iter()
            .map(|p| {
                if paces.len() > 1 {
                    let who = match p.credential {
                        Credential::ClientToken => "client key and token",
                        Credential::ApiKey => "API key",
                    };
                    format!("pace ({who}): {p}")
                } else {
                    format!("pace: {p}")
                }
            })
            .collect()
    }
}

/// What one run did (not the whole job's history: see the journal's counts for that).
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Ops this run set out to do.
    pub total: u64,
    pub done: u64,
    /// Of `done`: already in the desired state (an unmute answered `ROOM_NOT_MUTED`, a ban
    /// `USER_ALREADY_BLOCKED`, an unban `BLOCK_NOT_FOUND`).
    pub already: u64,
    /// `already` by the code of the answer.
    pub already_by_code: BTreeMap<String, u64>,
    pub failed: u64,
    /// Requests sent (changes; snapshot reads not included).
    pub attempts: u64,
    /// Attempts that will be retried.
    pub retries: u64,
    /// 429 answers.
    pub rate_limited: u64,
    /// Reads recorded before a first change (rooms and ban lists).
    pub snapshots: u64,
    /// Of `snapshots`: refused by the server (403, 404, ...), so recorded as unknown.
    pub snapshots_unknown: u64,
    /// Unbans refused 403 (the vendor documents unban as room-owner only).
    pub unbans_refused: u64,
    /// Latency of every answered attempt, in microseconds.
    pub latencies_us: Vec<u64>,
    /// Permanent failures by error code (or `HTTP <status>` when the answer had none).
    pub failures_by_code: BTreeMap<String, u64>,
    pub elapsed: Duration,
    /// The pace of each credential the run used.
    pub paces: Vec<PaceReport>,
}

impl Stats {
    pub(crate) fn finished(&self) -> u64 {
        self.done + self.failed
    }

    pub(crate) fn pending(&self) -> u64 {
        self.total.saturating_sub(self.finished())
    }

    pub(crate) fn ops_per_sec(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.finished() as f64 / s
        } else {
            0.0
        }
    }

    /// Latency percentile `p` in 0..=100 (nearest rank), if any attempt was answered.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        let mut v = self.latencies_us.clone();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        let i = rank.clamp(1, v.len()) - 1;
        Some(Duration::from_micros(v[i]))
    }

    /// The human summary printed at the end of a run.
    pub(crate) fn render(&self, headline: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{headline}");
        let already = if self.already_by_code.is_empty() {
            String::new()
        } else {
            let by: Vec<String> = self
                .already_by_code
                .iter()
                .map(|(c, n)| format!("{c} x{n}"))
                .collect();
            format!(": {}", by.join(", "))
        };
        let _ = writeln!(
            s,
            "  ops: {} done ({} already in state{already}), {} failed, {} pending, of {} this run",
            self.done,
            self.already,
            self.failed,
            self.pending(),
            self.total
        );
        let _ = writeln!(
            s,
            "  elapsed {:.1}s, {:.1} ops/s, {} requests, {} retries, {} rate-limited (429){}",
            self.elapsed.as_secs_f64(),
            self.ops_per_sec(),
            self.attempts,
            self.retries,
            self.rate_limited,
            match (self.snapshots, self.snapshots_unknown) {
                (0, _) => String::new(),
                (n, 0) => format!(", {n} rooms snapshotted"),
                (n, u) => format!(", {n} rooms snapshotted ({u} unreadable: prior state unknown)"),
            }
        );
        let ms = |d: Option<Duration>| {
            d.map(|d| format!("{:.1}ms", d.as_secs_f64() * 1000.0))
                .unwrap_or_else(|| "-".into())
        };
        let _ = writeln!(
            s,
            "  latency p50 {}, p95 {}, p99 {}",
            ms(self.percentile(50.0)),
            ms(self.percentile(95.0)),
            ms(self.percentile(99.0))
        );
        if !self.failures_by_code.is_empty() {
            let mut by: Vec<_> = self.failures_by_code.iter().collect();
            by.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            let list: Vec<String> = by.iter().map(|(c, n)| format!("{c} x{n}")).collect();
            let _ = writeln!(s, "  failures by code: {}", list.join(", "));
        }
        if self.unbans_refused > 0 {
            let _ = writeln!(
                s,
                "  note: {} unbans refused 403: {}",
                self.unbans_refused,
                crate::api::UNBAN_OWNER_ONLY
            );
        }
        for line in PaceReport::lines(&self.paces) {
            let _ = writeln!(s, "  {line}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_render() {
        let mut st = Stats {
            total: 10,
            done: 7,
            failed: 2,
            elapsed: Duration::from_secs(3),
            latencies_us: (1..=100).map(|i| i * 1000).collect(),
            ..Default::default()
        };
        st.failures_by_code.insert("ROOM_NOT_FOUND".into(), 2);
        assert_eq!(st.percentile(50.0), Some(Duration::from_millis(50)));
        assert_eq!(st.percentile(99.0), Some(Duration::from_millis(99)));
        assert_eq!(st.percentile(100.0), Some(Duration::from_millis(100)));
        let r = st.render("run stopped");
        assert!(r.contains("7 done"));
        assert!(r.contains("1 pending"));
        assert!(r.contains("3.0 ops/s"));
        assert!(r.contains("ROOM_NOT_FOUND x2"));
        assert!(r.contains("p95 95.0ms"));
        assert_eq!(Stats::default().percentile(50.0), None);
        assert!(r.contains("(0 already in state)"), "{r}");
        assert!(!r.contains("note:"), "{r}");
        assert!(!r.contains("pace"), "no pace without a credential used");
    }

    /// What a ban sweep's summary says: the answers that found the ban in place, by code,
    /// and a note on unbans refused 403.
    #[test]
    fn already_by_code_and_the_unban_note() {
        let mut st = Stats {
            total: 500,
            done: 500,
            already: 50,
            unbans_refused: 3,
            snapshots: 4,
            snapshots_unknown: 4,
            ..Default::default()
        };
        st.already_by_code.insert("USER_ALREADY_BLOCKED".into(), 50);
        let r = st.render("run complete");
        assert!(
            r.contains("500 done (50 already in state: USER_ALREADY_BLOCKED x50), 0 failed"),
            "{r}"
        );
        assert!(
            r.contains("4 rooms snapshotted (4 unreadable: prior state unknown)"),
            "{r}"
        );
        assert!(
            r.contains("note: 3 unbans refused 403: the vendor documents unban as room-owner only"),
            "{r}"
        );
    }

    fn pace(basis: PaceBasis, scope: BudgetScope) -> PaceReport {
        PaceReport {
            credential: Credential::ClientToken,
            asked: "40/s".parse().unwrap(),
            per_second: 19.04,
            basis,
            limit_per_second: match basis {
                PaceBasis::Discovered => Some(20.04),
                PaceBasis::Lowered => Some(39.6),
                PaceBasis::Asked => None,
            },
            scope,
            ledger: match scope {
                BudgetScope::Redis => "redis://***@10.0.0.5:6379/2".into(),
                BudgetScope::Host => "/run/user/1000/imkit-batch/0f3a.budget".into(),
                BudgetScope::Process => String::new(),
            },
            other_runs: 0,
        }
    }

    #[test]
    fn pace_lines_say_the_pace_and_why() {
        let d = pace(PaceBasis::Discovered, BudgetScope::Host);
        assert_eq!(
            PaceReport::lines(std::slice::from_ref(&d)),
            ["pace: 19.0/s (asked 40/s; discovered: the server answered 429 above ~20.0/s)"]
        );
        let mut a = pace(PaceBasis::Asked, BudgetScope::Host);
        assert_eq!(a.to_string(), "40/s (asked)");
        a.other_runs = 2;
        assert_eq!(
            a.to_string(),
            "40/s (asked; shared with 2 other runs on this host)"
        );
        a.other_runs = 1;
        assert!(a.to_string().ends_with("with 1 other run on this host)"));
        let r = pace(PaceBasis::Asked, BudgetScope::Redis);
        assert_eq!(
            r.to_string(),
            "40/s (asked; shared through redis://***@10.0.0.5:6379/2)"
        );
        let l = pace(PaceBasis::Lowered, BudgetScope::Process);
        assert_eq!(
            l.to_string(),
            "19.0/s (asked 40/s; lowered: the server answered 429 at 39.6/s, not at this pace)"
        );
        let mut m = pace(PaceBasis::Asked, BudgetScope::Process);
        m.credential = Credential::ApiKey;
        let both = PaceReport::lines(&[d.clone(), m]);
        assert!(
            both[0].starts_with("pace (client key and token): 19.0/s"),
            "{both:?}"
        );
        assert_eq!(both[1], "pace (API key): 40/s (asked)");
        // What the journal keeps reads back the same.
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<PaceReport>(&json).unwrap(), d);
        let st = Stats {
            paces: vec![d],
            ..Default::default()
        };
        assert!(
            st.render("x")
                .contains("\n  pace: 19.0/s (asked 40/s; discovered")
        );
    }
}
