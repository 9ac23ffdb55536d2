//! Run statistics and the final summary: counts per outcome, elapsed, ops/s, retries,
//! latency percentiles and failures grouped by error code. Never holds a credential.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

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
}
