//! The journal's time series: per run and per second, the requests answered, how many of
//! them were retries (an op's second attempt or later), the 429s among them, and the ops
//! that became done or failed. The writer thread adds each group's outcomes to it in the
//! group's own transaction (one upsert per second the group touched), so it is exactly as
//! durable as the outcomes; `report --format html` charts it and `--metrics-file` sums it.
//!
//! The table is created `IF NOT EXISTS` when a run starts: a journal from an older build
//! gains it on its next run, and reads of a journal without it find an empty series. The
//! requests and retries over a job's life need no series (the ops' attempt counts hold
//! them, for old journals too); the 429s do.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::{Journal, JournalError, OpRecord, OpState};

const CREATE: &str = "
CREATE TABLE IF NOT EXISTS run_series (
    run          INTEGER NOT NULL,
    second       INTEGER NOT NULL,
    requests     INTEGER NOT NULL DEFAULT 0,
    retries      INTEGER NOT NULL DEFAULT 0,
    rate_limited INTEGER NOT NULL DEFAULT 0,
    done         INTEGER NOT NULL DEFAULT 0,
    failed       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run, second)
) WITHOUT ROWID;
";

/// Creates the series table in a journal that lacks it (run start, read-write connection).
pub(super) fn create(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(CREATE)
}

/// The counts of one second (of one run).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Answered requests (snapshot reads not included).
    pub requests: u64,
    /// Of `requests`: attempts after an op's first.
    pub retries: u64,
    /// Of `requests`: answered 429.
    pub rate_limited: u64,
    /// Ops that became done.
    pub done: u64,
    /// Ops that failed permanently.
    pub failed: u64,
}

impl Counters {
    /// Adds one outcome.
    fn add(&mut self, r: &OpRecord) {
        if r.attempts > 0 {
            self.requests += 1;
        }
        if r.attempts > 1 {
            self.retries += 1;
        }
        if r.http_status == Some(429) {
            self.rate_limited += 1;
        }
        match r.state {
            Some(OpState::Done) => self.done += 1,
            Some(OpState::Failed) => self.failed += 1,
            _ => {}
        }
    }

    /// Adds `o` to these counts.
    pub(crate) fn merge(&mut self, o: &Counters) {
        self.requests += o.requests;
        self.retries += o.retries;
        self.rate_limited += o.rate_limited;
        self.done += o.done;
        self.failed += o.failed;
    }
}

/// One second of one run, as read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeriesPoint {
    pub run: i64,
    /// Unix seconds.
    pub second: i64,
    pub counts: Counters,
}

/// What one group of outcomes adds to the series, by second.
#[derive(Default)]
pub(super) struct GroupSeries {
    seconds: BTreeMap<i64, Counters>,
}

impl GroupSeries {
    /// Counts outcome `r`, recorded at `at_ms` (Unix milliseconds).
    pub(super) fn add(&mut self, r: &OpRecord, at_ms: i64) {
        self.seconds
            .entry(at_ms.div_euclid(1000))
            .or_default()
            .add(r);
    }

    /// Adds the group's counts to run `run_id`'s series, in the group's transaction.
    pub(super) fn write(&self, tx: &Transaction, run_id: i64) -> Result<(), String> {
        if self.seconds.is_empty() {
            return Ok(());
        }
        let mut st = tx
            .prepare_cached(
                "INSERT INTO run_series (run, second, requests, retries, rate_limited, done, failed) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                 ON CONFLICT (run, second) DO UPDATE SET \
                 requests = requests + excluded.requests, retries = retries + excluded.retries, \
                 rate_limited = rate_limited + excluded.rate_limited, \
                 done = done + excluded.done, failed = failed + excluded.failed",
            )
            .map_err(|e| format!("cannot record the time series: {e}"))?;
        for (second, c) in &self.seconds {
            st.execute(params![
                run_id,
                second,
                to_i64(c.requests),
                to_i64(c.retries),
                to_i64(c.rate_limited),
                to_i64(c.done),
                to_i64(c.failed)
            ])
            .map_err(|e| format!("cannot record the time series: {e}"))?;
        }
        Ok(())
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Journal {
    /// True when the journal has the series table (every run by this build creates it).
    fn has_series(&self) -> Result<bool, JournalError> {
        self.conn()
            .query_row(
                "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'run_series'",
                [],
                |_| Ok(()),
            )
            .optional()
            .map(|found| found.is_some())
            .map_err(|e| JournalError::sqlite(self.path(), "read the time series", e))
    }

    /// The whole series, by run then second; empty for a journal without one.
    pub(crate) fn series(&self) -> Result<Vec<SeriesPoint>, JournalError> {
        if !self.has_series()? {
            return Ok(Vec::new());
        }
        let err = |e| JournalError::sqlite(self.path(), "read the time series", e);
        let mut st = self
            .conn()
            .prepare(
                "SELECT run, second, requests, retries, rate_limited, done, failed \
                 FROM run_series ORDER BY run, second",
            )
            .map_err(err)?;
        st.query_map([], |r| {
            Ok(SeriesPoint {
                run: r.get(0)?,
                second: r.get(1)?,
                counts: Counters {
                    requests: to_u64(r.get(2)?),
                    retries: to_u64(r.get(3)?),
                    rate_limited: to_u64(r.get(4)?),
                    done: to_u64(r.get(5)?),
                    failed: to_u64(r.get(6)?),
                },
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(err)
    }

    /// The series summed over the job's life (every run of this journal).
    pub(crate) fn series_totals(&self) -> Result<Counters, JournalError> {
        let mut total = Counters::default();
        for p in self.series()? {
            total.merge(&p.counts);
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(attempts: u32, status: Option<u16>, state: Option<OpState>) -> OpRecord {
        OpRecord {
            attempts,
            http_status: status,
            state,
            ..OpRecord::default()
        }
    }

    /// Each outcome lands in the second it was recorded in, counted by kind.
    #[test]
    fn outcomes_are_counted_by_second_and_kind() {
        let mut g = GroupSeries::default();
        g.add(&rec(1, Some(200), Some(OpState::Done)), 10_999);
        g.add(&rec(1, Some(429), None), 10_000);
        g.add(&rec(2, Some(429), None), 11_000);
        g.add(&rec(3, Some(404), Some(OpState::Failed)), 11_500);
        let s: Vec<_> = g.seconds.into_iter().collect();
        assert_eq!(
            s,
            vec![
                (
                    10,
                    Counters {
                        requests: 2,
                        retries: 0,
                        rate_limited: 1,
                        done: 1,
                        failed: 0
                    }
                ),
                (
                    11,
                    Counters {
                        requests: 2,
                        retries: 2,
                        rate_limited: 1,
                        done: 0,
                        failed: 1
                    }
                ),
            ]
        );
    }
}
