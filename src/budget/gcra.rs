//! The generic cell rate algorithm (GCRA) that every ledger runs: one number per credential,
//! the theoretical arrival time (TAT) of the next request, an emission interval `T` (one
//! request per `T`) and a tolerance `tau = (burst - 1) * T`. A request at `now` is granted
//! when `now >= TAT - tau`, and the TAT then moves on by `T`; otherwise it is refused with
//! the wait until `TAT - tau`. Any window of length `W` then holds at most `W / T + burst`
//! grants, however many processes draw, as long as each draw reads and writes the TAT
//! atomically (the host ledger under a file lock, Redis in one script).
//!
//! Times are whole microseconds on the ledger's clock; this module is pure arithmetic, so
//! the in-process ledger, the host file and the Redis script agree (the Lua script in
//! `redis_ledger` is the same decision written again, step for step).

use std::time::Duration;

use crate::units::Rate;

/// A TAT further ahead of the clock than this (or than one draw can put it, if that is
/// more) is not one that any draw wrote: a clock stepped back, or a foreign value. It is
/// dropped as "no state" instead of stalling every run until the clock catches up.
pub const MAX_AHEAD: Duration = Duration::from_secs(10);

/// The pace of one ledger: an emission interval and a burst.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gcra {
    interval_us: u64,
    burst: u32,
}

/// What a ledger answers to one draw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Send now; `tat` is the new state to store.
    Grant { tat: u64 },
    /// Not before `wait_us` from now; the state is unchanged.
    Refuse { wait_us: u64 },
}

impl Gcra {
    /// One request per `interval` (at least 1 µs), at most `burst` (at least 1) back to back.
    pub fn new(interval: Duration, burst: u32) -> Gcra {
        let interval_us = u64::try_from(interval.as_micros()).unwrap_or(u64::MAX);
        Gcra {
            interval_us: interval_us.max(1),
            burst: burst.max(1),
        }
    }

    /// The pace for `rate`, `headroom` under it (0.01 = 1% slower), with a burst of at most
    /// `burst` but never more than the rate's own count.
    pub fn for_rate(rate: Rate, burst: u32, headroom: f64) -> Gcra {
        let interval = rate.interval().mul_f64(1.0 + headroom.max(0.0));
        Gcra::new(interval, burst.min(rate.count).max(1))
    }

    /// The emission interval `T`.
    pub fn interval(&self) -> Duration {
        Duration::from_micros(self.interval_us)
    }

    /// Requests that may go out back to back.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// The sustained pace, requests per second.
    pub fn per_second(&self) -> f64 {
        1e6 / self.interval_us as f64
    }

    pub(crate) fn interval_us(&self) -> u64 {
        self.interval_us
    }

    /// `tau`: how far the TAT may run ahead of the clock and still grant.
    pub(crate) fn tolerance_us(&self) -> u64 {
        self.interval_us.saturating_mul(u64::from(self.burst - 1))
    }

    /// The furthest ahead a stored TAT is believed (see [`MAX_AHEAD`]).
    pub(crate) fn ahead_limit_us(&self) -> u64 {
        let max_ahead = u64::try_from(MAX_AHEAD.as_micros()).unwrap_or(u64::MAX);
        self.tolerance_us()
            .saturating_add(self.interval_us)
            .max(max_ahead)
    }

    /// The TAT that holds every draw back until `wait_us` from `now` (a server's 429 hint,
    /// for the whole credential), if that is later than the stored one's; `None` to keep
    /// it. The wait is capped so that the state stays one that draws believe (see
    /// [`MAX_AHEAD`]).
    pub(crate) fn pause(&self, stored: Option<u64>, now: u64, wait_us: u64) -> Option<u64> {
        let tau = self.tolerance_us();
        let most = self.ahead_limit_us().saturating_sub(tau);
        let tat = now.saturating_add(wait_us.min(most)).saturating_add(tau);
        // A stored TAT further ahead than believed is no state (see `decide`): replaced too.
        let believed_ahead = |t: u64| t <= now.saturating_add(self.ahead_limit_us());
        stored
            .is_none_or(|t| t < tat || !believed_ahead(t))
            .then_some(tat)
    }

    /// The decision at `now` for the stored TAT `stored` (`None`: no state, or unreadable).
    ///
    /// A ledger with no state, or idle for longer than one full burst, starts with its burst
    /// spent: the first request goes at once and the next ones one interval apart. The burst
    /// is credit for the lateness of the callers' timers, not a head start, so a server whose
    /// window opens with a run's first request sees the rate in it, not the rate and a burst.
    pub(crate) fn decide(&self, stored: Option<u64>, now: u64) -> Decision {
        let tau = self.tolerance_us();
        let believed = stored.filter(|&t| {
            t <= now.saturating_add(self.ahead_limit_us())
                && t.saturating_add(tau).saturating_add(self.interval_us) >= now
        });
        let tat = match believed {
            Some(t) => t.max(now),
            None => now.saturating_add(tau),
        };
        // A TAT under `tau` (a clock near its origin, a slower pace's long tolerance) was
        // allowed from the start.
        let allowed_at = tat.saturating_sub(tau);
        if now < allowed_at {
            Decision::Refuse {
                wait_us: allowed_at - now,
            }
        } else {
            Decision::Grant {
                tat: tat.saturating_add(self.interval_us),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Draws at `now`, storing a grant's TAT; returns the wait (0 when granted).
    fn draw(g: &Gcra, tat: &mut Option<u64>, now: u64) -> u64 {
        match g.decide(*tat, now) {
            Decision::Grant { tat: t } => {
                *tat = Some(t);
                0
            }
            Decision::Refuse { wait_us } => wait_us,
        }
    }

    #[test]
    fn a_fresh_ledger_spaces_requests_by_the_interval() {
        let g = Gcra::new(Duration::from_millis(100), 4);
        let mut tat = None;
        let t0 = 1_000_000_000;
        assert_eq!(draw(&g, &mut tat, t0), 0, "the first goes at once");
        assert_eq!(
            draw(&g, &mut tat, t0),
            100_000,
            "the next waits one interval"
        );
        assert_eq!(
            draw(&g, &mut tat, t0 + 40_000),
            60_000,
            "the wait is to the slot"
        );
        // Callers on time: one grant per interval, each refused draw just before it.
        for k in 1..20u64 {
            let slot = t0 + k * 100_000;
            assert_eq!(draw(&g, &mut tat, slot - 1), 1);
            assert_eq!(draw(&g, &mut tat, slot), 0, "slot {k}");
        }
    }

    #[test]
    fn lateness_is_credited_up_to_the_burst() {
        let g = Gcra::new(Duration::from_millis(100), 4);
        let mut tat = None;
        let t0 = 5_000_000;
        draw(&g, &mut tat, t0);
        // 250 ms late for the second slot (due at t0 + 100 ms): the slots due by then go at
        // once instead of being lost, and the next one keeps its time.
        let late = t0 + 350_000;
        let mut granted = 0;
        while draw(&g, &mut tat, late) == 0 {
            granted += 1;
        }
        assert_eq!(granted, 3, "the slots due at +100, +200 and +300 ms");
        assert_eq!(
            draw(&g, &mut tat, late),
            50_000,
            "the next is due at +400 ms"
        );
        // Lateness beyond the burst is not credited: late by 6 intervals, a burst of 4 goes.
        let later = t0 + 1_000_000;
        let mut granted = 0;
        while draw(&g, &mut tat, later) == 0 {
            granted += 1;
        }
        assert_eq!(granted, 4);
    }

    #[test]
    fn an_idle_ledger_starts_over_with_the_burst_spent() {
        let g = Gcra::new(Duration::from_millis(10), 4);
        let mut tat = Some(1_000_000);
        // Idle for far longer than a burst: one now, the next an interval later.
        let now = 9_000_000;
        assert_eq!(draw(&g, &mut tat, now), 0);
        assert_eq!(draw(&g, &mut tat, now), 10_000);
    }

    #[test]
    fn a_tat_too_far_ahead_is_no_state_and_stalls_nobody() {
        let g = Gcra::new(Duration::from_millis(50), 4);
        let now = 100_000_000;
        let mut tat = Some(now + 3_600_000_000);
        assert_eq!(draw(&g, &mut tat, now), 0);
        assert_eq!(tat, Some(now + g.tolerance_us() + g.interval_us()));
        // Ahead but within what a slower co-runner could write: believed, and waited for.
        let mut tat = Some(now + 2_000_000);
        assert_eq!(
            draw(&g, &mut tat, now),
            2_000_000 - g.tolerance_us(),
            "a believed TAT is waited for"
        );
    }

    #[test]
    fn any_window_holds_at_most_the_rate_and_the_burst() {
        let g = Gcra::new(Duration::from_millis(20), 4);
        let mut tat = None;
        let mut grants = Vec::new();
        // A greedy caller polling every 3 ms for 2 s.
        let mut now = 7_000_000u64;
        while now < 9_000_000 {
            if draw(&g, &mut tat, now) == 0 {
                grants.push(now);
            } else {
                now += 3_000;
            }
        }
        for (i, &t) in grants.iter().enumerate() {
            let in_window = grants[i..]
                .iter()
                .take_while(|&&u| u < t + 1_000_000)
                .count();
            assert!(in_window <= 50 + 4, "{in_window} grants in one second");
        }
        // And it is not slower than the rate either: 2 s at 50/s, one at the start.
        assert!((100..=101).contains(&grants.len()), "{}", grants.len());
    }

    #[test]
    fn a_pause_holds_every_draw_back_until_it_ends() {
        let g = Gcra::new(Duration::from_millis(50), 4);
        let mut tat = None;
        let now = 50_000_000;
        draw(&g, &mut tat, now);
        tat = g.pause(tat, now, 1_000_000).or(tat);
        assert_eq!(
            draw(&g, &mut tat, now + 10_000),
            990_000,
            "until the pause ends"
        );
        assert_eq!(draw(&g, &mut tat, now + 1_000_000), 0);
        // A shorter pause does not shorten a longer one; a far one is capped, still believed.
        assert_eq!(g.pause(tat, now + 1_000_000, 10), None);
        let far = g.pause(None, now, 3_600_000_000).unwrap();
        assert_eq!(far, now + MAX_AHEAD.as_micros() as u64);
        assert!(matches!(g.decide(Some(far), now), Decision::Refuse { .. }));
    }

    #[test]
    fn a_slower_pace_near_the_clocks_origin_is_granted() {
        // The in-process ledger's clock starts at 0: a TAT written at the fast pace is
        // below the slow pace's tolerance.
        let fast = Gcra::new(Duration::from_millis(10), 4);
        let slow = Gcra::new(Duration::from_secs(1), 4);
        let mut tat = None;
        assert_eq!(draw(&fast, &mut tat, 0), 0);
        assert_eq!(draw(&slow, &mut tat, 5_000), 0);
        assert_eq!(
            tat,
            Some(1_040_000),
            "the fast TAT (40 ms) and one slow interval"
        );
    }

    #[test]
    fn for_rate_applies_the_headroom_and_caps_the_burst() {
        let g = Gcra::for_rate("10/s".parse().unwrap(), 4, 0.01);
        assert_eq!(g.interval(), Duration::from_micros(101_000));
        assert_eq!(g.burst(), 4);
        let g = Gcra::for_rate("2/min".parse().unwrap(), 4, 0.0);
        assert_eq!(g.interval(), Duration::from_secs(30));
        assert_eq!(g.burst(), 2, "never more than the rate's own count");
        assert!((Gcra::new(Duration::from_millis(50), 1).per_second() - 20.0).abs() < 1e-9);
        assert_eq!(Gcra::new(Duration::ZERO, 0).burst(), 1);
        assert_eq!(Gcra::new(Duration::ZERO, 0).interval_us(), 1);
    }

    #[test]
    fn a_state_is_believed_until_a_burst_and_an_interval_past_its_tat() {
        // The Redis script's key expires after exactly this (`new - now + tau + interval`).
        let g = Gcra::new(Duration::from_millis(50), 4);
        let now = 1_000_000;
        let tat = now + 120_000;
        // Until then, the state is still believed (not reset) ...
        let later = tat + g.tolerance_us() + g.interval_us();
        assert_eq!(
            g.decide(Some(tat), later),
            Decision::Grant {
                tat: later + 50_000
            }
        );
        // ... and just after, it would be reset anyway.
        assert_eq!(
            g.decide(Some(tat), later + 1),
            Decision::Grant {
                tat: later + 1 + g.tolerance_us() + 50_000
            }
        );
    }
}
