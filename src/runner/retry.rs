//! Retry timing: exponential backoff with full jitter (a random wait in
//! `[0, min(cap, base * 2^(n-1))]` after the n-th attempt), raised to the server's hint when
//! that is larger. The only retry layer of the tool (docs/behaviour.md §4).

use std::time::Duration;

use rand::Rng;

/// Backoff parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The ceiling of the wait after attempt `n` (1-based).
    pub(crate) fn ceiling(&self, n: u32) -> Duration {
        let exp = n.saturating_sub(1).min(30);
        self.base.saturating_mul(1u32 << exp).min(self.cap)
    }

    /// The wait after attempt `n`: full jitter, or the server's `hint` when larger.
    pub fn delay(&self, n: u32, hint: Option<Duration>, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(n);
        let jitter = if ceiling.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_nanos(
                rng.random_range(0..=ceiling.as_nanos().min(u64::MAX as u128) as u64),
            )
        };
        match hint {
            Some(h) if h > jitter => h,
            _ => jitter,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn full_jitter_stays_in_bounds_and_spreads() {
        let b = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(2),
        };
        assert_eq!(b.ceiling(1), Duration::from_millis(100));
        assert_eq!(b.ceiling(3), Duration::from_millis(400));
        assert_eq!(b.ceiling(10), Duration::from_secs(2));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(2));
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for n in 1..8 {
            let ds: Vec<Duration> = (0..200).map(|_| b.delay(n, None, &mut rng)).collect();
            assert!(ds.iter().all(|d| *d <= b.ceiling(n)));
            let min = ds.iter().min().unwrap();
            let max = ds.iter().max().unwrap();
            assert!(
                *min < b.ceiling(n) / 4 && *max > b.ceiling(n) * 3 / 4,
                "n={n}"
            );
        }
        // The server's hint wins when larger, never shortens the wait below jitter.
        assert_eq!(
            b.delay(1, Some(Duration::from_secs(60)), &mut rng),
            Duration::from_secs(60)
        );
        assert!(b.delay(9, Some(Duration::ZERO), &mut rng) <= b.ceiling(9));
    }
}
