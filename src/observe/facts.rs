//! The figures of the HTML report, gathered from a journal: what `status` shows, plus one
//! pass over the ops for the outcome counts per action, the failures by error code with a
//! few examples each and the latency of every answered op, and the journal's time series.
//! All of it is put on one time axis of equal bins (the [`Timeline`]); stretches with
//! nothing recorded longer than [`GAP`] seconds (between runs, say) are cut out of it.

use std::collections::{BTreeMap, BTreeSet};

use crate::journal::status::{StatusReport, status_report};
use crate::journal::{
    Counters, Counts, JobInfo, Journal, JournalError, OpRow, OpState, RunInfo, SeriesPoint,
};
use crate::op::Action;

/// A stretch without any record longer than this (seconds) is cut out of the time axis.
pub(super) const GAP: i64 = 600;
/// The most bins the time axis is split into.
const MAX_BINS: i64 = 120;
/// Examples shown per error code.
pub(super) const EXAMPLES: usize = 5;

/// Everything the page shows.
pub(super) struct Facts {
    pub(super) status: StatusReport,
    /// The job record, with its times in Unix milliseconds.
    pub(super) job: JobInfo,
    /// Every run, oldest first, with its times in Unix milliseconds.
    pub(super) runs: Vec<RunInfo>,
    pub(super) by_action: BTreeMap<Action, Counts>,
    pub(super) failures: Vec<FailureFacts>,
    /// Per run id, its series summed; absent for a run whose outcomes were not recorded in
    /// the series (a build before it).
    pub(super) run_series: BTreeMap<i64, Counters>,
    /// The series summed over the job, if any run recorded one.
    pub(super) series_total: Option<Counters>,
    /// Median and 95th percentile of the ops' last answered attempt, in ms.
    pub(super) latency: Option<(u64, u64)>,
    pub(super) timeline: Timeline,
}

/// The failed ops sharing an error code.
pub(super) struct FailureFacts {
    /// `None`: answers without an error code (a network error, a non-JSON body).
    pub(super) code: Option<String>,
    pub(super) count: u64,
    pub(super) statuses: BTreeSet<u16>,
    pub(super) examples: Vec<OpRow>,
}

/// One bin of the time axis.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Bin {
    /// Unix seconds.
    pub(super) start: i64,
    /// Which stretch of the axis it is in (a cut gap starts a new one).
    pub(super) segment: usize,
    pub(super) counts: Counters,
    /// Latency percentiles (ms) of the ops whose last answer fell in the bin.
    pub(super) p50_ms: Option<u64>,
    pub(super) p95_ms: Option<u64>,
}

/// The job's time, cut into bins of equal width.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Timeline {
    /// Seconds per bin.
    pub(super) bin_s: i64,
    pub(super) bins: Vec<Bin>,
    /// Per segment after the first: the seconds left out before it.
    pub(super) gaps: Vec<i64>,
    /// False when the journal has no series (a job run by a build before it): the
    /// requests, retries and 429s over time are then unknown, and ops finished come from
    /// the ops' last attempt times.
    pub(super) has_series: bool,
}

/// What one pass over the ops collects.
#[derive(Default)]
struct OpScan {
    by_action: BTreeMap<Action, Counts>,
    failures: BTreeMap<Option<String>, FailureFacts>,
    /// (Unix ms of the last answer, latency ms) of every answered op.
    latencies: Vec<(i64, u64)>,
    /// Unix ms of the last answer and the final state, of every finished op.
    finished: Vec<(i64, OpState)>,
}

impl OpScan {
    fn add(&mut self, row: OpRow) {
        let c = self.by_action.entry(row.op.action).or_default();
        match row.state {
            OpState::Pending => c.pending += 1,
            OpState::Done => c.done += 1,
            OpState::Failed => c.failed += 1,
            OpState::Skipped => c.skipped += 1,
        }
        if let (Some(at), Some(ms)) = (row.last_attempt_at, row.latency_ms) {
            self.latencies.push((at, ms));
        }
        if let (Some(at), OpState::Done | OpState::Failed) = (row.last_attempt_at, row.state) {
            self.finished.push((at, row.state));
        }
        if row.state == OpState::Failed {
            let g = self
                .failures
                .entry(row.error_code.clone())
                .or_insert_with(|| FailureFacts {
                    code: row.error_code.clone(),
                    count: 0,
                    statuses: BTreeSet::new(),
                    examples: Vec::new(),
                });
            g.count += 1;
            g.statuses.extend(row.http_status);
            if g.examples.len() < EXAMPLES {
                g.examples.push(row);
            }
        }
    }
}

/// Gathers the page's figures from `journal`.
pub(super) fn gather(journal: &Journal) -> Result<Facts, JournalError> {
    let status = status_report(journal)?;
    let mut scan = OpScan::default();
    journal.for_each_op(None, |row| {
        scan.add(row);
        Ok::<(), JournalError>(())
    })?;
    let series = journal.series()?;
    let mut run_series: BTreeMap<i64, Counters> = BTreeMap::new();
    for p in &series {
        run_series.entry(p.run).or_default().merge(&p.counts);
    }
    let series_total = (!series.is_empty()).then(|| {
        let mut t = Counters::default();
        run_series.values().for_each(|c| t.merge(c));
        t
    });
    let mut failures: Vec<FailureFacts> = scan.failures.into_values().collect();
    failures.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.code.cmp(&b.code)));
    let mut all: Vec<u64> = scan.latencies.iter().map(|&(_, ms)| ms).collect();
    let latency = percentiles(&mut all);
    Ok(Facts {
        status,
        job: journal.job()?,
        runs: journal.runs()?,
        by_action: scan.by_action,
        failures,
        run_series,
        series_total,
        latency,
        timeline: timeline(&series, &scan.finished, &scan.latencies),
    })
}

/// Median and 95th percentile (nearest rank) of `v`, sorted in place.
fn percentiles(v: &mut [u64]) -> Option<(u64, u64)> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let at = |p: f64| {
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    };
    Some((at(50.0), at(95.0)))
}

/// The per-second counts: the series when the journal has one, else the ops that
/// finished, by the second of their last answer.
fn per_second(series: &[SeriesPoint], finished: &[(i64, OpState)]) -> BTreeMap<i64, Counters> {
    let mut by: BTreeMap<i64, Counters> = BTreeMap::new();
    if series.is_empty() {
        for &(ms, state) in finished {
            let c = by.entry(ms.div_euclid(1000)).or_default();
            match state {
                OpState::Done => c.done += 1,
                _ => c.failed += 1,
            }
        }
    } else {
        for p in series {
            by.entry(p.second).or_default().merge(&p.counts);
        }
    }
    by
}

/// A bin width for `span` seconds in at most about [`MAX_BINS`] bins, rounded up to a
/// width people read easily.
fn bin_width(span: i64) -> i64 {
    const NICE: [i64; 16] = [
        1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400,
    ];
    let want = (span + MAX_BINS - 1) / MAX_BINS;
    NICE.into_iter().find(|&w| w >= want).unwrap_or(want.max(1))
}

/// The stretches of time with records: (first second, last second), split where nothing
/// was recorded for longer than [`GAP`].
fn segments(active: &BTreeSet<i64>) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = Vec::new();
    for &s in active {
        match out.last_mut() {
            Some((_, end)) if s - *end <= GAP => *end = s,
            _ => out.push((s, s)),
        }
    }
    out
}

/// Puts the per-second counts and the latencies on the binned time axis.
fn timeline(
    series: &[SeriesPoint],
    finished: &[(i64, OpState)],
    latencies: &[(i64, u64)],
) -> Timeline {
    let counts = per_second(series, finished);
    let mut active: BTreeSet<i64> = counts.keys().copied().collect();
    active.extend(latencies.iter().map(|&(ms, _)| ms.div_euclid(1000)));
    let segs = segments(&active);
    let span: i64 = segs.iter().map(|(a, b)| b - a + 1).sum();
    let bin_s = bin_width(span.max(1));
    let mut bins = Vec::new();
    let mut index = BTreeMap::new();
    for (segment, &(first, last)) in segs.iter().enumerate() {
        let mut start = first.div_euclid(bin_s) * bin_s;
        while start <= last {
            index.insert(start, bins.len());
            bins.push(Bin {
                start,
                segment,
                ..Bin::default()
            });
            start += bin_s;
        }
    }
    let slot = |second: i64| index.get(&(second.div_euclid(bin_s) * bin_s)).copied();
    for (second, c) in &counts {
        if let Some(i) = slot(*second) {
            bins[i].counts.merge(c);
        }
    }
    let mut lat: Vec<Vec<u64>> = vec![Vec::new(); bins.len()];
    for &(ms, v) in latencies {
        if let Some(i) = slot(ms.div_euclid(1000)) {
            lat[i].push(v);
        }
    }
    for (b, mut l) in bins.iter_mut().zip(lat) {
        if let Some((p50, p95)) = percentiles(&mut l) {
            b.p50_ms = Some(p50);
            b.p95_ms = Some(p95);
        }
    }
    let gaps = segs.windows(2).map(|w| w[1].0 - w[0].1 - 1).collect();
    Timeline {
        bin_s,
        bins,
        gaps,
        has_series: !series.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(run: i64, second: i64, requests: u64, done: u64) -> SeriesPoint {
        SeriesPoint {
            run,
            second,
            counts: Counters {
                requests,
                done,
                ..Counters::default()
            },
        }
    }

    #[test]
    fn bin_widths_are_round_and_keep_the_bins_few() {
        assert_eq!(bin_width(1), 1);
        assert_eq!(bin_width(120), 1);
        assert_eq!(bin_width(121), 2);
        assert_eq!(bin_width(500), 5);
        assert_eq!(bin_width(3600), 30);
        assert_eq!(bin_width(10 * 3600), 300);
    }

    /// Two runs an hour apart: two segments, the hour cut out, counts and latencies in the
    /// bins they fall in.
    #[test]
    fn a_long_pause_between_runs_is_cut_out_of_the_axis() {
        let series = vec![
            point(1, 1000, 3, 3),
            point(1, 1001, 2, 1),
            point(2, 4600, 4, 4),
        ];
        let latencies = vec![(1_000_500, 10), (1_000_900, 30), (4_600_100, 7)];
        let t = timeline(&series, &[], &latencies);
        assert_eq!(t.bin_s, 1);
        assert_eq!(t.gaps, vec![4600 - 1001 - 1]);
        let starts: Vec<_> = t.bins.iter().map(|b| (b.start, b.segment)).collect();
        assert_eq!(starts, vec![(1000, 0), (1001, 0), (4600, 1)]);
        assert_eq!(t.bins[0].counts.requests, 3);
        assert_eq!(t.bins[1].counts.done, 1);
        assert_eq!((t.bins[0].p50_ms, t.bins[0].p95_ms), (Some(10), Some(30)));
        assert_eq!(t.bins[1].p50_ms, None);
        assert_eq!(t.bins[2].p50_ms, Some(7));
        assert!(t.has_series);
    }

    /// Without a series (an older journal), the ops' last answers give the ops finished.
    #[test]
    fn without_a_series_finished_ops_come_from_the_ops() {
        let finished = vec![
            (5_000, OpState::Done),
            (5_400, OpState::Failed),
            (9_000, OpState::Done),
        ];
        let t = timeline(&[], &finished, &[]);
        assert!(!t.has_series);
        let done: u64 = t.bins.iter().map(|b| b.counts.done).sum();
        let failed: u64 = t.bins.iter().map(|b| b.counts.failed).sum();
        assert_eq!((done, failed), (2, 1));
        assert_eq!(t.bins.len(), 5, "{:?}", t.bins);
        assert!(t.bins.iter().all(|b| b.counts.requests == 0));
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut v: Vec<u64> = (1..=100).rev().collect();
        assert_eq!(percentiles(&mut v), Some((50, 95)));
        assert_eq!(percentiles(&mut []), None);
        assert_eq!(percentiles(&mut [7]), Some((7, 7)));
    }
}
