//! Whether a run can finish before its deadline (the window's end, `--until`, ...): at the
//! start from `--rate` (each credential sends its own ops at most at that pace), and then
//! from the pace measured so far. The scheduler warns once for each, with how many ops will
//! be left pending at the deadline.

use std::time::Duration;

use crate::units::Rate;

/// Ops finished and time passed before the measured pace is judged: enough that a slow
/// first answer or the pacer's start does not raise a false alarm.
const MIN_SAMPLE_OPS: u64 = 5;
const MIN_SAMPLE_TIME: Duration = Duration::from_secs(1);

/// What a forecast says: how long the ops left need at the pace, and how many will be left
/// at the deadline.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Shortfall {
    pub needed: Duration,
    pub left: u64,
}

/// Ops per second of `rate`.
fn per_sec(rate: Rate) -> f64 {
    let secs = rate.per.as_secs_f64();
    if secs > 0.0 {
        f64::from(rate.count) / secs
    } else {
        f64::INFINITY
    }
}

/// The forecast from `--rate`: on each credential, `(ops, requests)` (requests count the
/// room reads of `--snapshot` too) are sent at `rate` at most, with `time_left` before the
/// deadline. `None` when they fit.
pub(crate) fn from_rate(
    per_credential: &[(u64, u64)],
    rate: Rate,
    time_left: Duration,
) -> Option<Shortfall> {
    let pace = per_sec(rate);
    let mut needed = Duration::ZERO;
    let mut left = 0u64;
    for &(ops, requests) in per_credential {
        if requests == 0 {
            continue;
        }
        let secs = requests as f64 / pace;
        needed = needed.max(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX));
        let fit = (pace * time_left.as_secs_f64()).min(requests as f64);
        let ops_fit = (fit * ops as f64 / requests as f64).floor() as u64;
        left += ops.saturating_sub(ops_fit);
    }
    (left > 0).then_some(Shortfall { needed, left })
}

/// The forecast from the pace measured so far: `finished` ops in `elapsed`, `remaining`
/// still to finish with `time_left`. `None` while the sample is too small or when they fit.
pub(crate) fn from_measured(
    finished: u64,
    elapsed: Duration,
    remaining: u64,
    time_left: Duration,
) -> Option<Shortfall> {
    if finished < MIN_SAMPLE_OPS || elapsed < MIN_SAMPLE_TIME || remaining == 0 {
        return None;
    }
    let pace = finished as f64 / elapsed.as_secs_f64();
    let fit = (pace * time_left.as_secs_f64())
        .floor()
        .min(u64::MAX as f64) as u64;
    let left = remaining.saturating_sub(fit);
    let needed = Duration::try_from_secs_f64(remaining as f64 / pace).unwrap_or(Duration::MAX);
    (left > 0).then_some(Shortfall { needed, left })
}

/// A duration as the warnings print it: whole seconds, as humantime writes them.
pub(crate) fn show(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs().max(1))).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_alone_tells_what_cannot_fit() {
        let rate: Rate = "10/s".parse().unwrap();
        // 100 ops at 10/s need 10 s; 4 s leave 60 of them.
        let s = from_rate(&[(100, 100), (0, 0)], rate, Duration::from_secs(4)).unwrap();
        assert_eq!(s.left, 60);
        assert_eq!(s.needed, Duration::from_secs(10));
        assert_eq!(
            from_rate(&[(30, 30), (0, 0)], rate, Duration::from_secs(4)),
            None
        );
        // Each credential has its own pace: 30 + 30 fit in 3 s at 10/s each.
        assert_eq!(
            from_rate(&[(30, 30), (30, 30)], rate, Duration::from_secs(3)),
            None
        );
        let s = from_rate(&[(30, 30), (31, 31)], rate, Duration::from_secs(3)).unwrap();
        assert_eq!(s.left, 1);
        // A room read before each change doubles the requests: 40 ops need 8 s, 2 s fit 10.
        let s = from_rate(&[(40, 80), (0, 0)], rate, Duration::from_secs(2)).unwrap();
        assert_eq!((s.left, s.needed), (30, Duration::from_secs(8)));
    }

    #[test]
    fn the_measured_pace_needs_a_sample() {
        let s = Duration::from_secs;
        assert_eq!(from_measured(4, s(10), 100, s(1)), None);
        assert_eq!(
            from_measured(50, Duration::from_millis(500), 100, s(1)),
            None
        );
        // 10 ops in 2 s is 5/s: 100 left need 20 s, 3 s fit 15.
        let f = from_measured(10, s(2), 100, s(3)).unwrap();
        assert_eq!((f.left, f.needed), (85, s(20)));
        assert_eq!(from_measured(10, s(2), 15, s(3)), None);
        assert_eq!(show(Duration::from_millis(200)), "1s");
    }
}
