//! Limit discovery: the pace of one credential when the server's limit is lower than
//! `--rate` (client tokens have no documented limit). Instead of halving at every 429 and
//! crawling back (which, against a server whose 429s stop the credential for a whole-second
//! hint, oscillates far below the limit), the controller measures what the server accepted
//! and settles just under it:
//!
//! - At a 429 it looks back over the answers to requests sent since sending last resumed
//!   (the start, or the end of the last pause), at most [`LOOK_BACK`]. When that sample is
//!   long enough ([`MIN_SAMPLE`]) not to be just the server's burst, the server's limit is
//!   the rate it accepted: the sending rate times the share not answered 429, where the
//!   sending rate is the pace when the run was waiting for its budget (the budget is the
//!   credential's, so the pace is what every run on the ledger sends together) and what this
//!   run sent otherwise. The pace becomes [`SETTLE`] of that limit and holds there.
//!   After a climb, the limit is at least the pace before its last step (the sample's
//!   average is under it). A 429 never raises a known limit; against a token bucket each
//!   measurement is a little high (its burst), so the pace nears the limit from above, a few
//!   percent a 429.
//! - A sample too short to tell the server's rate from its burst (the run's first requests
//!   against a bucket, say) halves the pace instead, no lower than what the server let
//!   through over the last seconds, pauses included, and holds a while before climbing
//!   (less after a second blind halving in a row). With a limit known, such a 429 after a
//!   probe means the limit holds; at the settled pace, that it is [`SHRINK`] lower.
//! - A 429 at the asked pace or settled, over a sample the server otherwise accepted
//!   ([`NOISE_SHARE`]), and one of the first few for a while ([`NOISE_GAP`]), is noise (a
//!   window's edge met a moment early, another client's spike): it only costs its hint.
//! - After a hold without a 429, the pace probes upward, additively and slowly, in steps of
//!   [`PROBE_STEP`] of the limit; the next 429 measures the limit again. A probe that passes
//!   the limit by [`RAISED`] without a 429 means the limit was raised: the pace climbs back
//!   toward `--rate`. Each probe that finds the same limit again doubles the next hold.
//!
//! - The runs that share a budget share what they measure: a measured limit is left beside
//!   the ledger ([`Discovery::take_measured`]) and the others adopt it ([`Discovery::adopt`]),
//!   so that all draw from the ledger at one pace (a run drawing faster than another would
//!   otherwise only wait behind it, never learning the limit).
//!
//! The server's own hint (the 429 gate, which the pacer also puts on the shared budget) is
//! the pacer's; this module only sets the pace.
//! Pure state over tokio instants, so tests drive it with paused time.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// How far under the discovered limit the pace settles.
pub(crate) const SETTLE: f64 = 0.95;
/// The furthest back (in send time) an estimate looks.
const LOOK_BACK: Duration = Duration::from_secs(10);
/// The shortest sending time, since sending last resumed, that an estimate is believed
/// from; a shorter sample is mostly the server's burst.
const MIN_SAMPLE: Duration = Duration::from_secs(2);
/// And the fewest accepted answers in it.
const MIN_SAMPLE_ANSWERS: usize = 10;
/// A 429 over a steady sample of which at least this share was accepted is noise ...
const NOISE_SHARE: f64 = 0.95;
/// ... when fewer than [`NOISE_MAX`] others came in this long.
const NOISE_GAP: Duration = Duration::from_secs(60);
/// See [`NOISE_GAP`]: a limit under the pace answers 429 every few seconds, a window's
/// edge or another client's spike now and then.
const NOISE_MAX: usize = 2;
/// The hold after a decrease that measured nothing (the pace was halved blindly) ...
const HOLD_UNSURE: Duration = Duration::from_secs(20);
/// ... and after the next ones in a row: halved twice, the pace is likely well under the
/// limit, and climbs sooner.
const HOLD_UNSURE_AGAIN: Duration = Duration::from_secs(5);
/// The first hold after a discovered limit; doubled by every probe that finds it again.
const HOLD_SETTLED: Duration = Duration::from_secs(30);
/// The longest hold.
const HOLD_MAX: Duration = Duration::from_secs(240);
/// Between two steps up.
const STEP_EVERY: Duration = Duration::from_secs(1);
/// One step up when probing above a discovered limit: this share of it.
const PROBE_STEP: f64 = 0.01;
/// One step up otherwise (back toward the settled pace, or after a blind decrease): this
/// share of the pace.
const CLIMB: f64 = 0.05;
/// A 429 at the settled pace too soon after sending resumed to measure anything lowers the
/// limit by this factor.
const SHRINK: f64 = 0.95;
/// A probe this far over the discovered limit without a 429: the limit was raised.
const RAISED: f64 = 1.10;
/// The slowest pace: this share of `--rate`.
pub(crate) const MIN_FACTOR: f64 = 1.0 / 16.0;
/// Answers and grants kept (by send time), a little more than [`LOOK_BACK`].
const KEEP: Duration = Duration::from_secs(11);

/// What the controller knows of the server's limit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Knowledge {
    /// No 429 has lowered the pace: it is `--rate`.
    Asked,
    /// The server answered 429 above this rate (requests per second), measured.
    Discovered(f64),
    /// 429s lowered the pace, and none measured a limit yet; the last came at this pace.
    Lowered(f64),
}

#[derive(Clone, Copy, Debug)]
struct Answer {
    sent: Instant,
    accepted: bool,
}

/// A request let through.
#[derive(Clone, Copy, Debug)]
struct Grant {
    at: Instant,
    /// It waited for the budget.
    waited: bool,
    /// The pace it was drawn at.
    pace: f64,
}

/// The pace of one credential.
#[derive(Debug)]
pub(crate) struct Discovery {
    /// `--rate` (less the headroom), requests per second.
    asked: f64,
    pace: f64,
    /// The server's limit, as last measured.
    limit: Option<f64>,
    answers: VecDeque<Answer>,
    grants: VecDeque<Grant>,
    /// The fresh 429s of the last [`NOISE_GAP`].
    recent_429s: VecDeque<Instant>,
    /// Sending (re)started then: the start, or the end of the last 429 pause.
    active_since: Instant,
    /// 429s to requests sent before this belong to the last decision.
    decided_at: Option<Instant>,
    hold_until: Instant,
    next_step: Instant,
    /// How many probes found the same limit again (each doubles the hold).
    confirmations: u32,
    /// A limit measured here and not yet left for the other runs on the budget.
    measured: Option<f64>,
    /// The pace a 429 last answered when it could not be measured.
    refused_at: Option<f64>,
    /// Blind decreases in a row (none measured, no step up since).
    blind: u32,
    /// The pace before the last step up: one the server accepted for a whole step.
    stepped_from: Option<f64>,
}

impl Discovery {
    /// A controller at `asked` requests per second.
    pub(crate) fn new(asked: f64, now: Instant) -> Discovery {
        Discovery {
            asked,
            pace: asked,
            limit: None,
            answers: VecDeque::new(),
            grants: VecDeque::new(),
            recent_429s: VecDeque::new(),
            active_since: now,
            decided_at: None,
            hold_until: now,
            next_step: now,
            confirmations: 0,
            measured: None,
            refused_at: None,
            blind: 0,
            stepped_from: None,
        }
    }

    /// The limit measured since the last call, to leave for the other runs on the budget.
    pub(crate) fn take_measured(&mut self) -> Option<f64> {
        self.measured.take()
    }

    /// A limit another run on the budget measured: settle under it as if measured here.
    pub(crate) fn adopt(&mut self, limit: f64, now: Instant) {
        self.stepped_from = None;
        self.limit = Some(limit);
        self.confirmations = 0;
        self.set_pace(SETTLE * limit);
        self.hold_until = now + HOLD_SETTLED;
        self.next_step = self.hold_until;
    }

    /// The pace now, requests per second.
    pub(crate) fn pace(&self) -> f64 {
        self.pace
    }

    /// What the pace is based on.
    pub(crate) fn knowledge(&self) -> Knowledge {
        match self.limit {
            Some(l) => Knowledge::Discovered(l),
            None => match self.refused_at {
                Some(r) if self.pace < self.asked => Knowledge::Lowered(r),
                _ => Knowledge::Asked,
            },
        }
    }

    /// A request was let through at `now`; `waited` when its budget made it wait.
    pub(crate) fn on_grant(&mut self, now: Instant, waited: bool) {
        self.grants.push_back(Grant {
            at: now,
            waited,
            pace: self.pace,
        });
        self.forget_before(now);
    }

    /// The server answered a request sent at `sent` with something else than 429.
    pub(crate) fn on_accepted(&mut self, sent: Instant, now: Instant) {
        self.answers.push_back(Answer {
            sent,
            accepted: true,
        });
        self.forget_before(now);
        self.step_up(now);
    }

    /// The server answered 429 to a request sent at `sent`; sending resumes at `resume`
    /// (the end of the server's hint). 429s to requests sent before the last decision only
    /// count in later samples.
    pub(crate) fn on_rate_limited(&mut self, sent: Instant, resume: Instant, now: Instant) {
        let fresh = self.decided_at.is_none_or(|d| sent > d);
        if fresh {
            self.decide(sent, resume, now);
        }
        self.answers.push_back(Answer {
            sent,
            accepted: false,
        });
        self.active_since = self.active_since.max(resume);
        self.forget_before(now);
    }

    fn forget_before(&mut self, now: Instant) {
        let Some(horizon) = now.checked_sub(KEEP) else {
            return;
        };
        while self.answers.front().is_some_and(|a| a.sent < horizon) {
            self.answers.pop_front();
        }
        while self.grants.front().is_some_and(|g| g.at < horizon) {
            self.grants.pop_front();
        }
    }

    /// The pace after a fresh 429 to a request sent at `sent`.
    fn decide(&mut self, sent: Instant, resume: Instant, now: Instant) {
        self.decided_at = Some(now);
        let from = self
            .active_since
            .max(sent.checked_sub(LOOK_BACK).unwrap_or(sent));
        let sample = self.sample(from, sent);
        let long = sent.saturating_duration_since(from) >= MIN_SAMPLE
            && sample.accepted >= MIN_SAMPLE_ANSWERS;
        let settled = self
            .limit
            .is_some_and(|l| self.pace <= SETTLE * l * (1.0 + 1e-9));
        let steady = settled || (self.limit.is_none() && self.pace >= self.asked);
        while self
            .recent_429s
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= NOISE_GAP)
        {
            self.recent_429s.pop_front();
        }
        let lone = self.recent_429s.len() < NOISE_MAX;
        self.recent_429s.push_back(now);
        if long && steady && lone && sample.accepted_share() >= NOISE_SHARE {
            return;
        }
        let restart = resume.max(now);
        match (long, self.limit) {
            (true, known) => {
                // What the server accepted; after a climb, at least the pace before its
                // last step (the sample's average is under it). A 429 never raises the
                // limit (a raise is found by probing past it).
                let accepted = sample.accepted_share() * sample.sending_rate();
                let measured = accepted.max(self.stepped_from.unwrap_or(0.0));
                self.settle(measured.min(known.unwrap_or(f64::INFINITY)), restart);
            }
            // A probe past the limit answered at once: the limit holds.
            (false, Some(l)) if !settled => self.settle(l, restart),
            // Refused at the settled pace, too soon to measure: the limit is lower.
            (false, Some(l)) => self.settle(SHRINK * l.min(self.pace / SETTLE), restart),
            (false, None) => {
                self.stepped_from = None;
                self.refused_at = Some(self.pace);
                let lower = self.lower_bound(sent);
                self.set_pace((self.pace / 2.0).max(SETTLE * lower));
                let hold = if self.blind == 0 {
                    HOLD_UNSURE
                } else {
                    HOLD_UNSURE_AGAIN
                };
                self.blind += 1;
                self.hold_until = restart + hold;
                self.next_step = self.hold_until;
            }
        }
    }

    /// Settles under `limit` (to be left for the other runs on the budget), holding from
    /// `restart` for longer each time the same limit is found again.
    fn settle(&mut self, limit: f64, restart: Instant) {
        self.blind = 0;
        self.stepped_from = None;
        self.confirmations = match self.limit {
            Some(l) if (limit - l).abs() <= 0.05 * l => self.confirmations + 1,
            _ => 0,
        };
        self.limit = Some(limit);
        self.measured = Some(limit);
        // A 429 never raises the pace.
        self.set_pace((SETTLE * limit).min(self.pace));
        let hold = HOLD_SETTLED
            .saturating_mul(1 << self.confirmations.min(8))
            .min(HOLD_MAX);
        self.hold_until = restart + hold;
        self.next_step = self.hold_until;
    }

    /// The answers to requests sent in `[from, to]`, the 429 at `to` included, and how many
    /// of the grants in that time waited for the budget.
    fn sample(&self, from: Instant, to: Instant) -> Sample {
        let mut s = Sample {
            accepted: 0,
            refused: 1,
            grants: 0,
            waited: 0,
            pace_sum: 0.0,
            span: to.saturating_duration_since(from),
        };
        for a in self
            .answers
            .iter()
            .filter(|a| a.sent >= from && a.sent <= to)
        {
            if a.accepted {
                s.accepted += 1;
            } else {
                s.refused += 1;
            }
        }
        for g in self.grants.iter().filter(|g| g.at >= from && g.at <= to) {
            s.grants += 1;
            s.waited += usize::from(g.waited);
            s.pace_sum += g.pace;
        }
        s
    }

    /// What the server accepted over the last [`LOOK_BACK`], pauses included: a rate the
    /// server has shown it allows.
    fn lower_bound(&self, to: Instant) -> f64 {
        let from = to.checked_sub(LOOK_BACK).unwrap_or(to);
        let accepted = self
            .answers
            .iter()
            .filter(|a| a.sent >= from && a.accepted)
            .count();
        accepted as f64 / LOOK_BACK.as_secs_f64()
    }

    fn set_pace(&mut self, pace: f64) {
        self.pace = pace.clamp(self.asked * MIN_FACTOR, self.asked);
    }

    /// After a hold without a fresh 429, one step up per [`STEP_EVERY`].
    fn step_up(&mut self, now: Instant) {
        if now < self.next_step || self.pace >= self.asked {
            return;
        }
        self.next_step = now + STEP_EVERY;
        self.blind = 0;
        self.stepped_from = Some(self.pace);
        let next = match self.limit {
            Some(l) if self.pace < SETTLE * l => (self.pace * (1.0 + CLIMB)).min(SETTLE * l),
            Some(l) => self.pace + PROBE_STEP * l,
            None => self.pace * (1.0 + CLIMB),
        };
        self.set_pace(next);
        if self.limit.is_some_and(|l| self.pace > RAISED * l) {
            self.limit = None;
            self.confirmations = 0;
        }
    }
}

/// The answers of one estimate.
struct Sample {
    accepted: usize,
    refused: usize,
    grants: usize,
    waited: usize,
    /// Of the pace of every grant.
    pace_sum: f64,
    span: Duration,
}

impl Sample {
    fn accepted_share(&self) -> f64 {
        self.accepted as f64 / (self.accepted + self.refused) as f64
    }

    /// Requests per second sent on the credential: the pace (on average over the sample)
    /// when this run mostly waited for its budget (then the budget, shared or not, set the
    /// rate of every run on it), else what this run sent.
    fn sending_rate(&self) -> f64 {
        let own = (self.accepted + self.refused) as f64 / self.span.as_secs_f64().max(1e-3);
        if self.grants > 0 && self.waited * 2 >= self.grants {
            (self.pace_sum / self.grants as f64).max(own)
        } else {
            own
        }
    }
}
