//! Pacing per credential: a governor rate limiter at `--rate` (less [`HEADROOM`]), a gate that
//! a 429 closes until the server's hint has passed (every request on that credential waits),
//! and an adaptive factor (AIMD): a lone 429 only closes the gate, a repeated one (before
//! [`RESTORE_AFTER`] successes have passed since the last) halves the pace, and sustained
//! success restores it step by step. Time is tokio's, so tests with paused time are
//! deterministic.

use std::ops::Add;
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::{Clock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::Instant;

use crate::units::Rate;

/// Requests that may go out back to back on one credential.
pub(crate) const BURST: u32 = 4;
/// How far under `--rate` the pacer stays. A server that counts the same rate in fixed
/// windows sees every window's last request and the next window's first one spaced by
/// exactly one interval, and a request the network delays less than the one that opened the
/// window (the first pays for the TCP and TLS handshakes) arrives a moment early: a 429
/// whose whole-second hint stops the credential for a second or more. 1% is 0.6 s a minute
/// at the documented 1000/min, more than a handshake; 10 ms a second at 20/s.
pub(crate) const HEADROOM: f64 = 0.01;
/// Slowest pace the adaptive factor goes down to: 1/16 of `--rate`.
pub(crate) const MIN_FACTOR: f64 = 1.0 / 16.0;
/// Successes (on one credential) after which the pace goes one step back up.
pub(crate) const RESTORE_AFTER: u32 = 20;
/// How much one step restores (additive increase).
pub(crate) const RESTORE_STEP: f64 = 0.125;

/// governor's clock over tokio's time (so `tokio::time::pause` applies).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct TokioInstant(Instant);

impl Add<Nanos> for TokioInstant {
    type Output = TokioInstant;
    fn add(self, n: Nanos) -> TokioInstant {
        TokioInstant(self.0 + Duration::from(n))
    }
}

impl Reference for TokioInstant {
    fn duration_since(&self, earlier: Self) -> Nanos {
        self.0.saturating_duration_since(earlier.0).into()
    }
    fn saturating_sub(&self, d: Nanos) -> Self {
        self.0
            .checked_sub(Duration::from(d))
            .map(TokioInstant)
            .unwrap_or(*self)
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct TokioClock;

impl Clock for TokioClock {
    type Instant = TokioInstant;
    fn now(&self) -> TokioInstant {
        TokioInstant(Instant::now())
    }
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<TokioInstant>>;

#[derive(Debug)]
struct PaceState {
    paused_until: Option<Instant>,
    factor: f64,
    /// Successes since the last 429 (or the last restore step).
    successes: u32,
    /// A 429 came within the last [`RESTORE_AFTER`] successes: the next one lowers the pace.
    struck: bool,
    last_decrease: Option<Instant>,
    next_slot: Instant,
}

/// The pace of one credential.
pub(crate) struct Pacer {
    limiter: Limiter,
    interval: Duration,
    state: Mutex<PaceState>,
}

impl Pacer {
    /// Spacing at `rate` with a burst of at most [`BURST`] requests: enough to absorb the
    /// timer's millisecond lateness (with burst 1 every late wake-up is lost for good and the
    /// achieved rate drifts below `--rate`), small enough that a server-side window never
    /// sees more than `rate * window + BURST`.
    ///
    /// The burst is credit for lateness, not a head start: a new pacer starts with it spent,
    /// so the first requests go one interval apart. A server whose window opens with the
    /// run's first request (a fixed window per credential) then sees exactly `rate` in it,
    /// not `rate + BURST - 1` and a 429 whose hint could be the rest of the minute.
    pub(crate) fn new(rate: Rate) -> Pacer {
        let interval = rate
            .interval()
            .mul_f64(1.0 + HEADROOM)
            .max(Duration::from_nanos(1));
        let burst = std::num::NonZeroU32::new(rate.count.clamp(1, BURST))
            .unwrap_or(std::num::NonZeroU32::MIN);
        let quota = Quota::with_period(interval)
            .unwrap_or_else(|| Quota::per_second(std::num::NonZeroU32::MIN))
            .allow_burst(burst);
        let limiter = RateLimiter::direct_with_clock(quota, TokioClock);
        if let Some(head_start) = std::num::NonZeroU32::new(burst.get() - 1) {
            // Within capacity by construction; a refusal would only leave the head start.
            let _ = limiter.check_n(head_start);
        }
        Pacer {
            limiter,
            interval,
            state: Mutex::new(PaceState {
                paused_until: None,
                factor: 1.0,
                successes: 0,
                struck: false,
                last_decrease: None,
                next_slot: Instant::now(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PaceState> {
        crate::sync::lock(&self.state)
    }

    /// Waits until one request may go out on this credential.
    pub(crate) async fn acquire(&self) {
        loop {
            let paused = self.paused_until();
            if let Some(t) = paused
                && t > Instant::now()
            {
                tokio::time::sleep_until(t).await;
                continue;
            }
            if let Err(not_until) = self.limiter.check() {
                tokio::time::sleep(not_until.wait_time_from(TokioClock.now())).await;
                continue;
            }
            let slot = {
                let mut st = self.lock();
                if st.factor < 1.0 {
                    let now = Instant::now();
                    let slot = st.next_slot.max(now);
                    st.next_slot = slot + self.interval.div_f64(st.factor);
                    Some(slot)
                } else {
                    None
                }
            };
            if let Some(slot) = slot {
                tokio::time::sleep_until(slot).await;
            }
            // A 429 may have closed the gate while this request waited for its turn.
            match self.paused_until() {
                Some(t) if t > Instant::now() => continue,
                _ => return,
            }
        }
    }

    /// Until when the gate is closed, if it is.
    pub(crate) fn paused_until(&self) -> Option<Instant> {
        self.lock().paused_until
    }

    /// A 429 answered a request sent at `sent_at`: close the gate for `wait`; when 429s repeat,
    /// lower the pace, once per burst (429s to requests sent before the last decision do not
    /// count again). A lone 429 (a window's edge, another client's spike) costs the wait only.
    pub(crate) fn on_rate_limited(&self, wait: Duration, sent_at: Instant) {
        let now = Instant::now();
        let mut st = self.lock();
        let until = now + wait;
        st.paused_until = Some(st.paused_until.map_or(until, |p| p.max(until)));
        if st.last_decrease.is_none_or(|d| sent_at > d) {
            if st.struck {
                st.factor = (st.factor / 2.0).max(MIN_FACTOR);
                st.next_slot = st.next_slot.max(until);
            }
            st.struck = true;
            st.last_decrease = Some(now);
            st.successes = 0;
        }
    }

    /// A request on this credential succeeded.
    pub(crate) fn on_success(&self) {
        let mut st = self.lock();
        if st.factor < 1.0 || st.struck {
            st.successes += 1;
            if st.successes >= RESTORE_AFTER {
                st.successes = 0;
                st.struck = false;
                st.factor = (st.factor + RESTORE_STEP).min(1.0);
            }
        }
    }

    /// The current adaptive factor (1.0 = full `--rate`), for the tests.
    #[cfg(test)]
    fn factor(&self) -> f64 {
        self.lock().factor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn spacing_follows_the_rate() {
        let p = Pacer::new("10/s".parse().unwrap());
        let t0 = Instant::now();
        let mut starts = Vec::new();
        for _ in 0..11 {
            p.acquire().await;
            starts.push(t0.elapsed());
        }
        // No head start: the first goes at once, then one every 101 ms (100 ms and the
        // headroom), so any one-second window from the first request holds 10, the rate.
        for (k, t) in starts.iter().enumerate() {
            let due = Duration::from_micros(101_000 * k as u64);
            assert!(
                *t >= due && *t <= due + Duration::from_millis(2),
                "request {k} at {t:?}, due at {due:?}"
            );
        }
        // A late caller catches up within the burst instead of losing the time.
        tokio::time::sleep(Duration::from_millis(250)).await;
        let t1 = Instant::now();
        p.acquire().await;
        p.acquire().await;
        assert_eq!(t1.elapsed(), Duration::ZERO);
        p.acquire().await;
        assert!(t1.elapsed() <= Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_429_closes_the_gate_and_repeated_ones_halve_once_per_burst() {
        let p = Pacer::new("100/s".parse().unwrap());
        let sent = Instant::now();
        p.acquire().await;
        p.on_rate_limited(Duration::from_secs(2), sent);
        p.on_rate_limited(Duration::from_secs(1), sent);
        assert_eq!(p.factor(), 1.0, "a lone burst of 429s only closes the gate");
        let t0 = Instant::now();
        p.acquire().await;
        assert!(t0.elapsed() >= Duration::from_secs(2));
        // A 429 to a request sent after that one, before RESTORE_AFTER successes: repeated.
        let sent = Instant::now();
        p.on_rate_limited(Duration::from_secs(1), sent);
        p.on_rate_limited(Duration::from_secs(1), sent);
        assert_eq!(p.factor(), 0.5, "two 429s of the same burst halve once");
        p.acquire().await;
        // After the gate: spacing is 20 ms (half of 100/s) and the headroom.
        let t1 = Instant::now();
        p.acquire().await;
        p.acquire().await;
        let e = t1.elapsed();
        assert!(
            e >= Duration::from_millis(20) && e <= Duration::from_millis(45),
            "{e:?}"
        );
        // A 429 to a request sent after the decrease halves again.
        p.on_rate_limited(Duration::ZERO, Instant::now());
        assert_eq!(p.factor(), 0.25);
        for _ in 0..RESTORE_AFTER {
            p.on_success();
        }
        assert_eq!(p.factor(), 0.25 + RESTORE_STEP);
        for _ in 0..(RESTORE_AFTER * 10) {
            p.on_success();
        }
        assert_eq!(p.factor(), 1.0);
        // Restored, and RESTORE_AFTER successes since the last 429: the next is lone again.
        tokio::time::advance(Duration::from_millis(1)).await;
        p.on_rate_limited(Duration::ZERO, Instant::now());
        assert_eq!(p.factor(), 1.0);
        // Fewer than RESTORE_AFTER successes before the next: repeated, halved.
        for _ in 0..(RESTORE_AFTER - 1) {
            p.on_success();
        }
        tokio::time::advance(Duration::from_millis(1)).await;
        p.on_rate_limited(Duration::ZERO, Instant::now());
        assert_eq!(p.factor(), 0.5);
    }
}
