//! Seeded fault decisions. Each decision is a pure function of (seed, method, canonical path,
//! how many times this same request was seen before), hashed with SHA-256, never a shared
//! random stream: a job replays the same faults whatever the interleaving of its requests.

use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::config::FaultRates;

/// What happens to one request besides its normal handling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// 429 with `Retry-After` and the RC envelope.
    TooManyWithHeader,
    /// 429 with the documented flat body `{"error":"RATE_LIMIT_EXCEEDED",...,"retryAfter":N}`.
    TooManyFlat,
    /// 500 with a JSON envelope.
    Status500,
    /// 502 with a proxy's HTML page.
    Status502,
    /// 503 with a proxy's HTML page.
    Status503,
    /// Connection closed before the change is applied.
    DropBefore,
    /// Change applied, then the connection closed without an answer.
    DropAfter,
    /// Change applied, answer held back.
    Slow,
}

impl Fault {
    pub const ALL: [Fault; 8] = [
        Fault::TooManyWithHeader,
        Fault::TooManyFlat,
        Fault::Status500,
        Fault::Status502,
        Fault::Status503,
        Fault::DropBefore,
        Fault::DropAfter,
        Fault::Slow,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Fault::TooManyWithHeader => "429_retry_after_header",
            Fault::TooManyFlat => "429_flat_body",
            Fault::Status500 => "500",
            Fault::Status502 => "502",
            Fault::Status503 => "503",
            Fault::DropBefore => "drop_before",
            Fault::DropAfter => "drop_after",
            Fault::Slow => "slow",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// The decision for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Draw {
    pub fault: Option<Fault>,
    /// Extra latency in `0..=jitter`.
    pub jitter: Duration,
}

/// Decides the fault and jitter of the `n`-th (0-based) sighting of `method path`.
pub(crate) fn draw(
    seed: u64,
    method: &str,
    path: &str,
    n: u64,
    rates: &FaultRates,
    jitter: Duration,
) -> Draw {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(method.as_bytes());
    h.update([0]);
    h.update(path.as_bytes());
    h.update([0]);
    h.update(n.to_le_bytes());
    let d = h.finalize();
    let word = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&d[i * 8..i * 8 + 8]);
        u64::from_le_bytes(b)
    };
    let pick = unit(word(0));
    let variant = word(2);
    let mut edge = 0.0;
    let mut hit = |rate: f64| {
        edge += rate;
        rate > 0.0 && pick < edge
    };
    let fault = if hit(rates.too_many_requests) {
        Some(if variant % 2 == 0 {
            Fault::TooManyWithHeader
        } else {
            Fault::TooManyFlat
        })
    } else if hit(rates.server_error) {
        Some(match variant % 3 {
            0 => Fault::Status500,
            1 => Fault::Status502,
            _ => Fault::Status503,
        })
    } else if hit(rates.drop_before) {
        Some(Fault::DropBefore)
    } else if hit(rates.drop_after) {
        Some(Fault::DropAfter)
    } else if hit(rates.slow) {
        Some(Fault::Slow)
    } else {
        None
    };
    let jitter = if jitter.is_zero() {
        Duration::ZERO
    } else {
        jitter.mul_f64(unit(word(1)))
    };
    Draw { fault, jitter }
}

/// A uniform number in `[0, 1)` from 64 random bits.
fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_are_pure_and_seeded() {
        let rates = FaultRates {
            server_error: 0.5,
            ..Default::default()
        };
        let j = Duration::from_millis(10);
        let a: Vec<_> = (0..64)
            .map(|n| draw(7, "PUT", "/rooms/a", n, &rates, j))
            .collect();
        let b: Vec<_> = (0..64)
            .map(|n| draw(7, "PUT", "/rooms/a", n, &rates, j))
            .collect();
        let c: Vec<_> = (0..64)
            .map(|n| draw(8, "PUT", "/rooms/a", n, &rates, j))
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.iter().all(|d| d.jitter <= j));
        assert!(a.iter().all(|d| {
            d.fault
                .is_none_or(|f| matches!(f, Fault::Status500 | Fault::Status502 | Fault::Status503))
        }));
    }

    #[test]
    fn jitter_is_uniform_within_its_bound_and_seeded() {
        let r = FaultRates::default();
        let j = Duration::from_millis(20);
        let a: Vec<Duration> = (0..2000)
            .map(|n| draw(3, "GET", "/rooms/a", n, &r, j).jitter)
            .collect();
        assert!(a.iter().all(|d| *d <= j));
        // Uniform over 0..=20ms: each quarter of the range gets about a quarter of the draws.
        for q in 0..4u32 {
            let lo = j * q / 4;
            let hi = j * (q + 1) / 4;
            let n = a.iter().filter(|d| **d >= lo && **d < hi).count();
            assert!((400..=600).contains(&n), "quarter {q}: {n} of 2000");
        }
        let distinct: std::collections::BTreeSet<_> = a.iter().collect();
        assert!(distinct.len() > 1900, "{}", distinct.len());
        let again: Vec<Duration> = (0..2000)
            .map(|n| draw(3, "GET", "/rooms/a", n, &r, j).jitter)
            .collect();
        assert_eq!(a, again);
        let other: Vec<Duration> = (0..2000)
            .map(|n| draw(4, "GET", "/rooms/a", n, &r, j).jitter)
            .collect();
        assert_ne!(a, other);
    }

    #[test]
    fn no_rates_no_faults() {
        let r = FaultRates::default();
        assert!((0..1000).all(|n| draw(1, "GET", "/x", n, &r, Duration::ZERO).fault.is_none()));
        let all = FaultRates {
            slow: 1.0,
            ..Default::default()
        };
        assert!(
            (0..1000)
                .all(|n| draw(1, "GET", "/x", n, &all, Duration::ZERO).fault == Some(Fault::Slow))
        );
    }
}
