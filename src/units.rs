//! Small value types shared by the command line, manifests and the sandbox: request rates
//! such as `600/min` and durations such as `30s`, each with a parser whose error says what
//! was expected.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A request rate: `count` requests per `per`. Written `600/min`, `10/s`, `36000/h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl Rate {
    pub fn per_minute(count: u32) -> Rate {
        Rate {
            count,
            per: Duration::from_secs(60),
        }
    }

    /// Requests per second, as a float.
    pub fn per_second(&self) -> f64 {
        self.count as f64 / self.per.as_secs_f64()
    }

    /// The time between two requests at this rate.
    pub fn interval(&self) -> Duration {
        self.per / self.count.max(1)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "min",
            3600 => "h",
            _ => return write!(f, "{}/{}", self.count, humantime::format_duration(self.per)),
        };
        write!(f, "{}/{}", self.count, unit)
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Rate, String> {
        let expected =
            || format!("invalid rate {s:?}: expected COUNT/UNIT such as 600/min or 10/s");
        let (count, unit) = s.trim().split_once('/').ok_or_else(expected)?;
        let count: u32 = count.trim().parse().map_err(|_| expected())?;
        if count == 0 {
            return Err(format!("invalid rate {s:?}: the count must be at least 1"));
        }
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(expected()),
        };
        Ok(Rate { count, per })
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Rate, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Bounds of the run settings. The command-line flags and the YAML `settings` are both
/// held to these, through the `check_*` functions below, so that `validate` refuses exactly
/// what `run` would refuse.
const MAX_CONCURRENCY: u32 = 1024;
/// Most attempts per op (`--max-attempts`, `settings.max_attempts`).
const MAX_MAX_ATTEMPTS: u32 = 100;
/// Longest request timeout (`--timeout`, `settings.timeout`).
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// Above this a rate is surely a typo (the documented limit is 1000/min).
const MAX_RATE_PER_SEC: f64 = 100_000.0;

fn whole_in(what: &str, n: i128, max: u32) -> Result<u32, String> {
    u32::try_from(n)
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| format!("{what} must be a whole number between 1 and {max}, not {n}"))
}

/// Checks a concurrency (requests in flight at most); `what` names the setting in the
/// message (`--concurrency`, `settings.concurrency`).
pub(crate) fn check_concurrency(what: &str, n: i128) -> Result<u32, String> {
    whole_in(what, n, MAX_CONCURRENCY)
}

/// Checks a number of attempts per op.
pub(crate) fn check_max_attempts(what: &str, n: i128) -> Result<u32, String> {
    whole_in(what, n, MAX_MAX_ATTEMPTS)
}

/// Checks a request timeout: more than zero, at most [`MAX_TIMEOUT`].
pub(crate) fn check_timeout(what: &str, t: Duration) -> Result<Duration, String> {
    if t.is_zero() || t > MAX_TIMEOUT {
        return Err(format!(
            "{what} must be between 1ms and {}, not {}",
            humantime::format_duration(MAX_TIMEOUT),
            humantime::format_duration(t)
        ));
    }
    Ok(t)
}

/// Checks a rate: at least one request, at most [`MAX_RATE_PER_SEC`] per second.
pub(crate) fn check_rate(what: &str, r: Rate) -> Result<Rate, String> {
    if r.count == 0 || r.per.is_zero() {
        Err(format!("{what} {r} must allow at least one request"))
    } else if r.per_second() > MAX_RATE_PER_SEC {
        Err(format!(
            "{what} {r} is above {MAX_RATE_PER_SEC} requests per second; the documented API \
             limit is 1000/min (e.g. 800/min)"
        ))
    } else {
        Ok(r)
    }
}

/// Parses a duration such as `30s`, `250ms`, `1h 30m` (humantime syntax).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("invalid duration {s:?}: {e} (examples: 30s, 250ms, 2h30m)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_print() {
        let r: Rate = "600/min".parse().unwrap();
        assert_eq!(r, Rate::per_minute(600));
        assert_eq!(r.to_string(), "600/min");
        assert!((r.per_second() - 10.0).abs() < 1e-9);
        assert_eq!(
            "10/s".parse::<Rate>().unwrap().interval(),
            Duration::from_millis(100)
        );
        assert!("0/s".parse::<Rate>().is_err());
        assert!("ten/s".parse::<Rate>().is_err());
        assert!("10/fortnight".parse::<Rate>().is_err());
        assert!("10".parse::<Rate>().is_err());
    }

    #[test]
    fn setting_bounds() {
        assert_eq!(check_concurrency("c", 1), Ok(1));
        assert_eq!(check_concurrency("c", 1024), Ok(1024));
        assert_eq!(
            check_concurrency("c", 1025).unwrap_err(),
            "c must be a whole number between 1 and 1024, not 1025"
        );
        assert!(check_concurrency("c", 0).is_err());
        assert!(check_concurrency("c", -3).is_err());
        assert_eq!(check_max_attempts("m", 100), Ok(100));
        assert!(check_max_attempts("m", 101).is_err());
        assert!(check_timeout("t", MAX_TIMEOUT).is_ok());
        assert_eq!(
            check_timeout("t", Duration::from_secs(5 * 3600)).unwrap_err(),
            "t must be between 1ms and 1h, not 5h"
        );
        assert!(check_timeout("t", Duration::ZERO).is_err());
        assert!(check_rate("r", "100000/s".parse().unwrap()).is_ok());
        let e = check_rate("r", "1000000/s".parse().unwrap()).unwrap_err();
        assert!(e.starts_with("r 1000000/s is above 100000"), "{e}");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("20ms").unwrap(), Duration::from_millis(20));
        assert!(parse_duration("soon").is_err());
    }
}
