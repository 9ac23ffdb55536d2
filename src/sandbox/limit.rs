//! The server-side rate limit per credential, in one of two shapes ([`Limiter`]); the vendor
//! documents "Maximum 1000 requests per minute" and not the algorithm behind it, so a runbook
//! can be rehearsed against both:
//!
//! - `--rate-limit N/PERIOD` alone: a fixed window ([`FixedWindow`]) of `N` requests per
//!   `PERIOD`, as the documented sentence reads. A bucket's window opens with its first
//!   request; within it at most `N` pass; the rest are refused until the window has passed,
//!   and the next request opens a new one. Never more than `N` in one window.
//! - with `--rate-limit-burst B`: a token bucket ([`TokenBucket`]) that holds `B` requests
//!   and refills at `N/PERIOD`: `B` may go back to back, then one per `PERIOD / N`.
//!
//! Either answers a refused request with the time until one would pass (the handler rounds
//! it up to whole seconds, at least 1, as `Retry-After` and `retryAfter` are). The clock is a
//! parameter (tokio's `Instant`, so paused time applies too): tests drive it without
//! sleeping.

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

/// The limit of a sandbox: one of the two shapes, each per [`Bucket`].
#[derive(Debug)]
pub(crate) enum Limiter {
    Fixed(FixedWindow),
    Bucket(TokenBucket),
}

impl Limiter {
    /// A fixed window of `rate`, or with `burst`, a token bucket of `burst` refilled at `rate`.
    pub fn new(rate: Rate, burst: Option<u32>) -> Limiter {
        match burst {
            None => Limiter::Fixed(FixedWindow::new(rate)),
            Some(b) => Limiter::Bucket(TokenBucket::new(rate, b)),
        }
    }

    /// Spends one request of `bucket` at `now`, or says how long until one would pass.
    pub fn check(&self, bucket: Bucket, now: Instant) -> Result<(), Duration> {
        match self {
            Limiter::Fixed(w) => w.check(bucket, now),
            Limiter::Bucket(b) => b.check(bucket, now),
        }
    }
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

/// Token buckets per credential, kept as the time the bucket is next empty-and-refilled
/// (a GCRA's theoretical arrival time): a request at `now` passes when the bucket's `tat`
/// is at most `(capacity - 1)` refill intervals ahead of `now`, and moves it on by one
/// interval. A bucket first seen is full.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    /// Time to refill one request.
    interval: Duration,
    /// How far ahead of the clock `tat` may be and still let a request through.
    tolerance: Duration,
    tats: Mutex<HashMap<Bucket, Instant>>,
}

impl TokenBucket {
    /// `capacity` (at least 1) requests at once, refilled at `rate`.
    pub fn new(rate: Rate, capacity: u32) -> TokenBucket {
        let interval = rate.interval().max(Duration::from_nanos(1));
        TokenBucket {
            interval,
            tolerance: interval.saturating_mul(capacity.max(1) - 1),
            tats: Mutex::new(HashMap::new()),
        }
    }

    /// Spends one request of `bucket` at `now`, or says how long until its bucket holds one.
    pub fn check(&self, bucket: Bucket, now: Instant) -> Result<(), Duration> {
        let mut tats = lock(&self.tats);
        let tat = tats.entry(bucket).or_insert(now);
        let due = (*tat).max(now);
        let ahead = due.saturating_duration_since(now);
        if ahead > self.tolerance {
            return Err(ahead - self.tolerance);
        }
        *tat = due + self.interval;
        Ok(())
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

    #[test]
    fn a_token_bucket_lets_its_capacity_through_then_refills_at_the_rate() {
        let l = TokenBucket::new("20/s".parse().unwrap(), 5);
        let t0 = Instant::now();
        // Full at first: 5 back to back, then the next only after one refill (50 ms).
        for i in 0..5 {
            assert!(l.check(Bucket::ApiKey, t0).is_ok(), "request {i}");
        }
        assert_eq!(
            l.check(Bucket::ApiKey, t0).unwrap_err(),
            Duration::from_millis(50)
        );
        assert_eq!(
            l.check(Bucket::ApiKey, t0 + Duration::from_millis(30))
                .unwrap_err(),
            Duration::from_millis(20)
        );
        assert!(
            l.check(Bucket::ApiKey, t0 + Duration::from_millis(50))
                .is_ok()
        );
        // Asked 40/s for 10 s: the capacity and then the rate, 20/s, pass.
        let passed = (1..=400u64)
            .filter(|i| {
                l.check(Bucket::ApiKey, t0 + Duration::from_millis(50 + 25 * i))
                    .is_ok()
            })
            .count();
        assert_eq!(passed, 200, "20/s over 10 s");
        // Idle for long, it is full again, never fuller.
        let later = t0 + Duration::from_secs(60);
        let burst = (0..10)
            .filter(|_| l.check(Bucket::ApiKey, later).is_ok())
            .count();
        assert_eq!(burst, 5);
        // Buckets are per credential.
        assert!(l.check(Bucket::Token("a".into()), later).is_ok());
    }

    #[test]
    fn the_limiter_is_a_fixed_window_unless_a_burst_is_given() {
        let rate: Rate = "2/s".parse().unwrap();
        let t = Instant::now();
        let fixed = Limiter::new(rate, None);
        assert!(matches!(fixed, Limiter::Fixed(_)));
        let bucket = Limiter::new(rate, Some(1));
        assert!(bucket.check(Bucket::ApiKey, t).is_ok());
        assert_eq!(
            bucket.check(Bucket::ApiKey, t).unwrap_err(),
            Duration::from_millis(500)
        );
        assert!(fixed.check(Bucket::ApiKey, t).is_ok());
        assert!(fixed.check(Bucket::ApiKey, t).is_ok());
        assert_eq!(
            fixed.check(Bucket::ApiKey, t).unwrap_err(),
            Duration::from_secs(1)
        );
    }
}
