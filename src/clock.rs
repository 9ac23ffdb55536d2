//! The wall clock of scheduling decisions: where the time stands against a window, the
//! deadlines of `--until` and `--undo-at`, and the date `{date}` becomes in a journal path.
//! It is the system clock, unless the test hook `IMKIT_BATCH_NOW` moves it.
//!
//! `IMKIT_BATCH_NOW=2026-11-22T23:59:58+08:00` (an RFC 3339 time) makes the process start at
//! that instant: from its first reading the clock runs at the real pace from there (a fixed
//! offset on the system clock), so waits and deadlines keep their real lengths. It exists so
//! that the integration tests can cross midnight in a time zone, or see two nights, without
//! waiting for them; it is not a setting for operators. An invalid value is ignored with a
//! warning. The journal's own times (attempts, runs) stay on the system clock.

use std::sync::OnceLock;

use jiff::{SignedDuration, Timestamp};

/// The test hook's variable.
const NOW_VAR: &str = "IMKIT_BATCH_NOW";

/// Now, on the scheduling clock.
pub(crate) fn now() -> Timestamp {
    let real = Timestamp::now();
    real.checked_add(offset()).unwrap_or(real)
}

/// How far `IMKIT_BATCH_NOW` moves the clock (zero without it), fixed at the first reading.
fn offset() -> SignedDuration {
    static OFFSET: OnceLock<SignedDuration> = OnceLock::new();
    *OFFSET.get_or_init(|| match std::env::var(NOW_VAR) {
        Err(_) => SignedDuration::ZERO,
        Ok(v) => match v.trim().parse::<Timestamp>() {
            Ok(t) => {
                tracing::warn!(
                    "{NOW_VAR} is set (a test hook): the scheduling clock starts at {t}"
                );
                t.duration_since(Timestamp::now())
            }
            Err(e) => {
                tracing::warn!("{NOW_VAR}={v:?} is not an RFC 3339 time ({e}): ignored");
                SignedDuration::ZERO
            }
        },
    })
}
