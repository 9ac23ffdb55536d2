//! The books the sandbox keeps on requests: lock-free counters every request touches,
//! times seen and applied per canonical request and per kind, answers per status, the bounded
//! log ring; and the reports built from them ([`Stats`], [`OpCounts`], [`LogEntry`]) that the
//! control API serves and [`super::SandboxHandle`] returns.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::faults::Fault;
use super::route::{Endpoint, OpKind};

/// Requests of one kind to one target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpCounts {
    /// Arrived (whatever became of them: faults, 429s, 4xx included).
    pub received: u64,
    /// Applied (answered 2xx, or applied and then dropped or held back).
    pub applied: u64,
}

/// Counters since start or the last reset.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Requests per endpoint (`"PUT /rooms/{id}"`, ...), plus `unknown_route`.
    pub requests: BTreeMap<String, u64>,
    /// Answers per HTTP status, plus `dropped` (connection closed without an answer).
    pub responses: BTreeMap<String, u64>,
    /// Changes applied, all requests together.
    pub applied_total: u64,
    /// Changes applied per canonical request (`"PUT /rooms/lobby-1"`), all kinds together.
    pub applied: BTreeMap<String, u64>,
    /// Received and applied per kind and target (`"freeze /rooms/lobby-1"`).
    #[serde(default)]
    pub ops: BTreeMap<String, OpCounts>,
    /// Faults injected per kind (`"500"`, `"drop_after"`, `"429_flat_body"`, ...).
    pub faults: BTreeMap<String, u64>,
    /// Requests refused by the server-side rate limit.
    pub rate_limited: u64,
    /// Requests delayed by `latency`/`latency_jitter`.
    pub delayed: u64,
}

/// One request in the log ring. Holds no header and no credential.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// 1-based, in order of completion.
    pub seq: u64,
    /// Milliseconds since the sandbox started.
    pub at_ms: u64,
    /// `METHOD /path`, ids canonically encoded (an unknown route's path as sent).
    pub request: String,
    /// freeze, unfreeze, update, get, mute, unmute, ban, unban, bans (a ban list read) or
    /// unknown.
    pub kind: OpKind,
    /// `None` when the connection was dropped.
    pub status: Option<u16>,
    pub fault: Option<String>,
    pub applied: bool,
    /// Latency plus jitter served before the answer, in microseconds.
    #[serde(default)]
    pub delay_us: u64,
}

/// Counters that every request touches, lock-free.
#[derive(Default)]
pub(crate) struct Counters {
    pub requests: [AtomicU64; Endpoint::COUNT],
    pub faults: [AtomicU64; Fault::ALL.len()],
    pub rate_limited: AtomicU64,
    pub delayed: AtomicU64,
    pub unknown_routes: AtomicU64,
}

impl Counters {
    pub(crate) fn reset(&self) {
        let all = self.requests.iter().chain(&self.faults).chain([
            &self.rate_limited,
            &self.delayed,
            &self.unknown_routes,
        ]);
        for c in all {
            c.store(0, Ordering::Relaxed);
        }
    }
}

/// Per canonical request (`METHOD /path`): times seen (drives fault replay) and applied.
#[derive(Clone, Copy, Default)]
pub(crate) struct PathCounts {
    pub seen: u64,
    pub applied: u64,
}

/// Bookkeeping behind one short-lived lock: bounded by the number of distinct requests (at
/// most one entry per room or client-room pair a job touches) and the log ring's capacity,
/// never by the number of requests.
#[derive(Default)]
pub(crate) struct Tracking {
    pub paths: HashMap<String, PathCounts>,
    /// Received and applied per (kind, canonical path).
    pub ops: HashMap<(OpKind, String), OpCounts>,
    pub statuses: BTreeMap<u16, u64>,
    pub dropped: u64,
    pub applied_total: u64,
    pub log: VecDeque<LogEntry>,
    pub seq: u64,
}
