//! The server-side rate limit (`--rate-limit N/PERIOD`): a fixed window of `N` requests per
//! `PERIOD` per credential, as the documented "Maximum 1000 requests per minute" reads. A
//! bucket's window opens with its first request; within it at most `N` pass; the rest are
//! refused until the window has passed, and the next request opens a new one. Never more than
//! `N` in one window (a token bucket with a burst of `N` lets through up to twice that in the
//! first period).
//!
//! The clock is a parameter (tokio's `Instant`, so paused time applies too): tests drive it
//! without sleeping.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::sync::lock;
use crate::units::Rate;

/// Whose budget a request spends. Holds a token only in memory, never in logs or answers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Bucket {
    /// `IM-API-KEY` (mute endpoints; room and ban endpoints under `api_key_on_rooms`).
    ApiKey,
    /// `IM-CLIENT-KEY` + this `IM-Authorization` token.
    Token(String),
}

#[derive(Clone, Copy, Debug)]
struct Window {
    start: Instant,
    used: u32,
}

/// Fixed windows per bucket.
#[derive(Debug)]
pub(crate) struct FixedWindow {
    count: u32,
    period: Duration,
    windows: Mutex<HashMap<Bucket, Window>>,
}

impl FixedWindow {
    pub fn new(rate: Rate) -> FixedWindow {
        FixedWindow {
            count: rate.count,
            period: rate.per,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Spends one request of `bucket`'s window at `now`, or says how long until its window
    /// resets.
    pub fn check(&self, bucket: Bucket, now: Instant) -> Result<(), Duration> {
        let mut w = lock(&self.windows);
        let win = w.entry(bucket).or_insert(Window {
            start: now,
            used: 0,
        });
        if now.saturating_duration_since(win.start) >= self.period {
            *win = Window {
                start: now,
                used: 0,
            };
        }
        if win.used < self.count {
            win.used += 1;
            Ok(())
        } else {
            Err((win.start + self.period).saturating_duration_since(now))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_n_per_window_then_the_next_window_opens() {
        let l = FixedWindow::new("60/min".parse().unwrap());
        let t0 = Instant::now();
        let mut passed = 0;
        // 10 s of requests every 100 ms: only the window's 60 pass.
        for i in 0..100u64 {
            if l.check(Bucket::ApiKey, t0 + Duration::from_millis(100 * i))
                .is_ok()
            {
                passed += 1;
            }
        }
        assert_eq!(passed, 60);
        // Refused until the window ends, with the time left.
        let wait = l
            .check(Bucket::ApiKey, t0 + Duration::from_secs(45))
            .unwrap_err();
        assert_eq!(wait, Duration::from_secs(15));
        let wait = l
            .check(Bucket::ApiKey, t0 + Duration::from_millis(59_999))
            .unwrap_err();
        assert_eq!(wait, Duration::from_millis(1));
        // At the window's end a new one opens, with a whole budget again.
        let t1 = t0 + Duration::from_secs(60);
        for i in 0..60 {
            assert!(l.check(Bucket::ApiKey, t1).is_ok(), "request {i}");
        }
        assert_eq!(
            l.check(Bucket::ApiKey, t1).unwrap_err(),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn buckets_are_separate() {
        let l = FixedWindow::new("2/s".parse().unwrap());
        let t = Instant::now();
        let tok = |s: &str| Bucket::Token(s.to_owned());
        assert!(l.check(Bucket::ApiKey, t).is_ok());
        assert!(l.check(Bucket::ApiKey, t).is_ok());
        assert!(l.check(Bucket::ApiKey, t).is_err());
        assert!(l.check(tok("a"), t).is_ok());
        assert!(l.check(tok("a"), t).is_ok());
        assert!(l.check(tok("a"), t).is_err());
        assert!(l.check(tok("b"), t).is_ok());
    }
}
