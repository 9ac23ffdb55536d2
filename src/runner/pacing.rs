//! Pacing per credential: a [`Pacer`] draws every request from the credential's [`Budget`]
//! (a ledger shared by every run on this host that uses the credential, or through Redis, or
//! this process's own), at the pace that [`super::discovery`] sets: `--rate` less
//! [`HEADROOM`] until 429s show the server allows less, then just under what it accepts.
//! A 429 also closes a gate until the server's hint has passed (every request on that
//! credential waits). A budget lost mid-run fails the draw: the request is not sent, and
//! the run stops rather than go on unpaced. Time is tokio's, so tests with paused time and
//! an in-process budget are deterministic.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::discovery::{Discovery, Knowledge};
use super::summary::{PaceBasis, PaceReport};
use crate::budget::{Budget, BudgetError, BudgetScope, Draw, Gcra, new_publisher};
use crate::op::Credential;
use crate::units::Rate;

/// Requests that may go out back to back on one credential: enough to absorb the timer's
/// millisecond lateness (with a burst of 1 every late wake-up is lost for good and the
/// achieved rate drifts below `--rate`), small enough that a server-side window never sees
/// more than `rate * window + BURST`.
pub(crate) const BURST: u32 = 4;
/// How far under `--rate` the pacer stays. A server that counts the same rate in fixed
/// windows sees every window's last request and the next window's first one spaced by
/// exactly one interval, and a request the network delays less than the one that opened the
/// window (the first pays for the TCP and TLS handshakes) arrives a moment early: a 429
/// whose whole-second hint stops the credential for a second or more. 1% is 0.6 s a minute
/// at the documented 1000/min, more than a handshake; 10 ms a second at 20/s.
pub(crate) const HEADROOM: f64 = 0.01;
/// The timer lateness a burst must make up for: tokio's timer ticks in milliseconds, so a
/// pacer at a high rate that waits for its next slot wakes up to a millisecond late, every
/// time.
const LATENESS: Duration = Duration::from_millis(2);
/// How often the limit the runs on the budget left each other is read.
const SYNC_EVERY: Duration = Duration::from_millis(250);
/// How often a host budget's other runs are counted, for the summary.
const PEERS_EVERY: Duration = Duration::from_secs(2);

/// The pace of `rate` with the headroom and the burst: what a budget is opened with. Above
/// a few hundred requests per second the burst grows to cover [`LATENESS`] (else every
/// wake-up would find the ledger idle, and grant one request per millisecond).
pub(crate) fn gcra_for(rate: Rate) -> Gcra {
    let interval = rate.interval().mul_f64(1.0 + HEADROOM);
    let cover = LATENESS.as_secs_f64() / interval.as_secs_f64().max(1e-9);
    let burst = u32::try_from(cover.ceil() as u64 + 1).unwrap_or(u32::MAX);
    Gcra::for_rate(rate, BURST.max(burst), HEADROOM)
}

#[derive(Debug)]
struct PaceState {
    paused_until: Option<Instant>,
    discovery: Discovery,
    /// A request was let through (the credential is in use in this run).
    used: bool,
    next_sync: Instant,
    next_peer_count: Instant,
    /// The last limit read from the budget (who left it, its number), adopted or not.
    seen: Option<(u64, u64)>,
}

/// The pace of one credential.
pub(crate) struct Pacer {
    credential: Credential,
    rate: Rate,
    budget: Budget,
    /// The budget's own pace: `rate` less the headroom.
    asked: Gcra,
    /// One task at a time draws from the budget, so a process asks once per slot.
    turn: tokio::sync::Mutex<()>,
    state: Arc<Mutex<PaceState>>,
    /// The most other runs seen sharing the budget (host budgets only).
    peers: Arc<AtomicU32>,
    /// Who this pacer is in the limits left beside the budget.
    publisher: u64,
}

impl Pacer {
    /// The pacer of `credential` at `rate`, drawing from `budget` (opened at
    /// [`gcra_for`]`(rate)`). A fresh budget starts with its burst spent: the first
    /// requests go one interval apart, so a server whose window opens with the run's first
    /// request sees `rate` in it, not `rate + BURST - 1`.
    pub(crate) fn new(credential: Credential, rate: Rate, budget: Budget) -> Pacer {
        let asked = budget.gcra();
        let now = Instant::now();
        Pacer {
            credential,
            rate,
            budget,
            asked,
            turn: tokio::sync::Mutex::new(()),
            state: Arc::new(Mutex::new(PaceState {
                paused_until: None,
                discovery: Discovery::new(asked.per_second(), now),
                used: false,
                next_sync: now,
                next_peer_count: now,
                seen: None,
            })),
            peers: Arc::new(AtomicU32::new(0)),
            publisher: new_publisher(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PaceState> {
        crate::sync::lock(&self.state)
    }

    /// Waits until one request may go out on this credential. Cancel-safe. An error is a
    /// lost budget: the request must not be sent.
    pub(crate) async fn acquire(&self) -> Result<(), BudgetError> {
        loop {
            if let Some(t) = self.paused_until()
                && t > Instant::now()
            {
                tokio::time::sleep_until(t).await;
                continue;
            }
            let waited = self.draw().await?;
            // A 429 may have closed the gate while this request waited for its turn.
            if self.paused_until().is_some_and(|t| t > Instant::now()) {
                continue;
            }
            let now = Instant::now();
            let (sync, count_peers) = {
                let mut st = self.lock();
                st.discovery.on_grant(now, waited);
                st.used = true;
                let sync = now >= st.next_sync;
                if sync {
                    st.next_sync = now + SYNC_EVERY;
                }
                let count = now >= st.next_peer_count;
                if count {
                    st.next_peer_count = now + PEERS_EVERY;
                }
                (sync, count)
            };
            if sync || count_peers {
                self.sync(count_peers);
            }
            return Ok(());
        }
    }

    /// One draw from the budget at the current pace, waiting for the slot; whether it
    /// had to wait.
    async fn draw(&self) -> Result<bool, BudgetError> {
        let _turn = self.turn.lock().await;
        let mut waited = false;
        loop {
            let gcra = self.gcra();
            match self.budget.draw_with(&gcra).await? {
                Draw::Granted => return Ok(waited),
                Draw::Wait(d) => {
                    waited = true;
                    tokio::time::sleep(d).await;
                }
            }
        }
    }

    /// The ledger's pace now: the budget's own, or slower after the server's 429s.
    fn gcra(&self) -> Gcra {
        let pace = self.lock().discovery.pace();
        if pace >= self.asked.per_second() {
            self.asked
        } else {
            Gcra::new(Duration::from_secs_f64(1.0 / pace), self.asked.burst())
        }
    }

    /// In the background: adopts a limit another run on the budget left, and counts the
    /// other runs that share a host budget.
    fn sync(&self, count_peers: bool) {
        let (budget, peers, state, me) = (
            self.budget.clone(),
            Arc::clone(&self.peers),
            Arc::clone(&self.state),
            self.publisher,
        );
        tokio::spawn(async move {
            if count_peers
                && budget.info().scope == BudgetScope::Host
                && let Some(n) = budget.peers().await
            {
                peers.fetch_max(n, Ordering::Relaxed);
            }
            let Some(shared) = budget.shared_limit().await else {
                return;
            };
            let mut st = crate::sync::lock(&state);
            let id = (shared.by, shared.seq);
            if shared.by != me && st.seen != Some(id) {
                st.seen = Some(id);
                st.discovery.adopt(shared.per_second, Instant::now());
            }
        });
    }

    /// In the background: leaves a limit measured here for the other runs on the budget.
    fn publish(&self, limit: f64) {
        let (budget, me) = (self.budget.clone(), self.publisher);
        tokio::spawn(async move { budget.publish_limit(limit, me).await });
    }

    /// Until when the gate is closed, if it is.
    pub(crate) fn paused_until(&self) -> Option<Instant> {
        self.lock().paused_until
    }

    /// A 429 answered a request sent at `sent_at`: close the gate for `wait` (here, and on
    /// the budget for every run that shares it), and let the pace follow what the server
    /// accepts.
    pub(crate) fn on_rate_limited(&self, wait: Duration, sent_at: Instant) {
        let now = Instant::now();
        let measured = {
            let mut st = self.lock();
            let until = now + wait;
            let until = st.paused_until.map_or(until, |p| p.max(until));
            st.paused_until = Some(until);
            st.discovery.on_rate_limited(sent_at, until, now);
            st.discovery.take_measured()
        };
        if let Some(limit) = measured {
            self.publish(limit);
        }
        if !wait.is_zero() {
            let (budget, gcra) = (self.budget.clone(), self.gcra());
            tokio::spawn(async move { budget.pause(&gcra, wait).await });
        }
    }

    /// The server answered a request sent at `sent_at` on this credential, with anything
    /// but a 429.
    pub(crate) fn on_answered(&self, sent_at: Instant) {
        let now = Instant::now();
        self.lock().discovery.on_accepted(sent_at, now);
    }

    /// The pace this run settled on and why, if the credential was used.
    pub(crate) fn report(&self) -> Option<PaceReport> {
        let st = self.lock();
        if !st.used {
            return None;
        }
        let info = self.budget.info();
        let (basis, limit) = match st.discovery.knowledge() {
            Knowledge::Asked => (PaceBasis::Asked, None),
            Knowledge::Discovered(l) => (PaceBasis::Discovered, Some(l)),
            Knowledge::Lowered(at) => (PaceBasis::Lowered, Some(at)),
        };
        Some(PaceReport {
            credential: self.credential,
            asked: self.rate,
            per_second: st.discovery.pace(),
            basis,
            limit_per_second: limit,
            scope: info.scope,
            ledger: info.ledger,
            other_runs: self.peers.load(Ordering::Relaxed),
        })
    }

    /// The current pace, requests per second, for the tests.
    #[cfg(test)]
    pub(crate) fn pace(&self) -> f64 {
        self.lock().discovery.pace()
    }
}
