//! The state every request shares: the configuration, the world of rooms, clients and bans
//! (and the clients and bans it started with, for reset, which makes the rooms again from the
//! configuration), the books on requests, the per-credential rate
//! limiter and the precise latency timer; and the views of them that the control API and
//! [`super::SandboxHandle`] read. The accept loop builds one [`Shared`] per server; the
//! handlers reach it through axum's state.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::bans::BanBook;
use super::bans::control_json;
use super::config::SandboxConfig;
use super::faults::Fault;
use super::limit::Limiter;
use super::route::{Endpoint, OpKind, Route};
use super::state::{Client, World};
use super::timer::Timer;
use super::tracking::{Counters, LogEntry, OpCounts, Stats, Tracking};
use crate::sync::lock;

/// Inserted by the accept loop into every request's extensions: cancelling it (as a drop
/// fault does) closes the connection at once, without a response.
#[derive(Clone)]
pub(crate) struct ConnDropper(pub CancellationToken);

/// Everything the handlers share.
pub(crate) struct Shared {
    pub config: SandboxConfig,
    /// The clients and bans at start, for reset (the rooms are made again from the config:
    /// a copy of a million rooms would double the sandbox's memory).
    initial_clients: HashMap<String, Client>,
    initial_bans: BanBook,
    pub world: Mutex<World>,
    pub track: Mutex<Tracking>,
    pub counters: Counters,
    limiter: Mutex<Option<Arc<Limiter>>>,
    pub started: Instant,
    /// Serves `latency` + jitter precisely (started only when a latency is set).
    timer: Option<Timer>,
}

impl Shared {
    /// Waits `delay` (the configured latency and its jitter), to well under a millisecond.
    pub async fn delay(&self, delay: Duration) {
        match &self.timer {
            Some(t) => t.sleep(delay).await,
            None => tokio::time::sleep(delay).await,
        }
    }

    pub fn new(config: SandboxConfig) -> anyhow::Result<Arc<Shared>> {
        config
            .check()
            .map_err(|e| anyhow::anyhow!("invalid sandbox settings: {e}"))?;
        let world = World::from_config(&config);
        let shared =
            Shared {
                initial_clients: world.clients.clone(),
                initial_bans: world.bans.clone(),
                world: Mutex::new(world),
                track: Mutex::new(Tracking::default()),
                counters: Counters::default(),
                limiter: Mutex::new(new_limiter(&config)),
                started: Instant::now(),
                timer: if config.latency.is_zero() && config.latency_jitter.is_zero() {
                    None
                } else {
                    Some(Timer::start().map_err(|e| {
                        anyhow::anyhow!("cannot start the sandbox's timer thread: {e}")
                    })?)
                },
                config,
            };
        Ok(Arc::new(shared))
    }

    /// The rate limiter, when `rate_limit` is set (no lock taken otherwise).
    pub fn limiter(&self) -> Option<Arc<Limiter>> {
        self.config.rate_limit?;
        lock(&self.limiter).clone()
    }

    /// Back to the state at start: rooms, clients, counters, fault replay, log, rate limits.
    pub fn reset(&self) {
        let rooms = World::rooms_of(&self.config);
        *lock(&self.world) = World {
            rooms,
            clients: self.initial_clients.clone(),
            bans: self.initial_bans.clone(),
        };
        *lock(&self.track) = Tracking::default();
        self.counters.reset();
        *lock(&self.limiter) = new_limiter(&self.config);
    }

    /// How often `method path` (either encoding of the ids) was applied.
    pub fn applied(&self, method: &str, path: &str) -> u64 {
        let key = match Route::parse(method, path) {
            Some(r) => r.key(),
            None => format!("{method} {path}"),
        };
        lock(&self.track).paths.get(&key).map_or(0, |c| c.applied)
    }

    /// Received and applied requests of this kind to `path` (either encoding of the ids).
    pub fn op_counts(&self, kind: OpKind, path: &str) -> OpCounts {
        let path = canonical_path(path);
        lock(&self.track)
            .ops
            .get(&(kind, path))
            .copied()
            .unwrap_or_default()
    }

    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        let requests = Endpoint::ALL
            .iter()
            .map(|e| {
                (
                    e.as_str().to_owned(),
                    c.requests[*e as usize].load(Ordering::Relaxed),
                )
            })
            .chain([(
                "unknown_route".to_owned(),
                c.unknown_routes.load(Ordering::Relaxed),
            )])
            .collect();
        let faults = Fault::ALL
            .iter()
            .map(|f| {
                (
                    f.as_str().to_owned(),
                    c.faults[f.index()].load(Ordering::Relaxed),
                )
            })
            .collect();
        let t = lock(&self.track);
        let mut responses: BTreeMap<String, u64> = t
            .statuses
            .iter()
            .map(|(s, n)| (s.to_string(), *n))
            .collect();
        responses.insert("dropped".into(), t.dropped);
        Stats {
            requests,
            responses,
            applied_total: t.applied_total,
            applied: t
                .paths
                .iter()
                .filter(|(_, p)| p.applied > 0)
                .map(|(k, p)| (k.clone(), p.applied))
                .collect(),
            faults,
            ops: t
                .ops
                .iter()
                .map(|((k, p), c)| (format!("{} {p}", k.as_str()), *c))
                .collect(),
            rate_limited: c.rate_limited.load(Ordering::Relaxed),
            delayed: c.delayed.load(Ordering::Relaxed),
        }
    }

    /// The last `limit` log entries, oldest first.
    pub fn log(&self, limit: usize) -> Vec<LogEntry> {
        let t = lock(&self.track);
        let skip = t.log.len().saturating_sub(limit);
        t.log.iter().skip(skip).cloned().collect()
    }

    /// The room object; with `extra`, also the fields the vendor pages' object leaves out.
    pub fn room_json(&self, id: &str, extra: bool) -> Option<serde_json::Value> {
        let w = lock(&self.world);
        w.rooms.get(id).map(|r| r.to_json(id, &w.clients, extra))
    }

    /// The control API's whole view of a room: the room object with every field an update
    /// can set, and `bans`, its bans in ban order (`blockee`, `blocker`, `createdAt`,
    /// `updatedAt`).
    pub fn room_view(&self, id: &str) -> Option<serde_json::Value> {
        let w = lock(&self.world);
        let mut room = w.rooms.get(id)?.to_json(id, &w.clients, true);
        let bans: Vec<serde_json::Value> = w
            .bans
            .of_room(id)
            .into_iter()
            .map(|(blockee, ban)| control_json(blockee, ban))
            .collect();
        drop(w);
        if let Some(o) = room.as_object_mut() {
            o.insert("bans".into(), serde_json::Value::Array(bans));
        }
        Some(room)
    }

    /// The clients banned in a room, in ban order; `None` when there is no such room.
    pub fn banned(&self, room: &str) -> Option<Vec<String>> {
        let w = lock(&self.world);
        w.rooms.get(room)?;
        Some(
            w.bans
                .of_room(room)
                .into_iter()
                .map(|(c, _)| c.to_owned())
                .collect(),
        )
    }

    pub fn client_json(&self, id: &str) -> Option<serde_json::Value> {
        lock(&self.world).clients.get(id).map(|c| c.to_json(id))
    }
}

fn new_limiter(config: &SandboxConfig) -> Option<Arc<Limiter>> {
    Some(Arc::new(Limiter::new(
        config.rate_limit?,
        config.rate_limit_burst,
    )))
}

/// `path` with its ids canonically encoded, when it is one of the API's paths (any method's
/// route will do: only the path is kept).
fn canonical_path(path: &str) -> String {
    ["PUT", "POST", "GET"]
        .iter()
        .find_map(|m| Route::parse(m, path))
        .and_then(|r| r.key().split_once(' ').map(|(_, p)| p.to_owned()))
        .unwrap_or_else(|| path.to_owned())
}
