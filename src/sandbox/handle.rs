//! [`SandboxHandle`]: a sandbox running in this process, as [`super::spawn`] returns it to
//! `run --sandbox` and the tests: its address and credentials, what it holds (rooms, clients,
//! mutes, bans), its counts and log, reset and shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context as _;

use super::config::{SandboxConfig, SandboxCredentials};
use super::faults::Fault;
use super::route::{OpKind, Route, op_kind};
use super::shared::Shared;
use super::tracking::{LogEntry, OpCounts, Stats};
use crate::op::Op;
use crate::sync::lock;

/// A sandbox running in this process. Dropping it stops the server too.
pub struct SandboxHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl SandboxHandle {
    /// The handle of a server task that serves `shared` on `addr` until `stop` fires.
    pub(super) fn new(
        addr: SocketAddr,
        shared: Arc<Shared>,
        stop: tokio::sync::oneshot::Sender<()>,
        task: tokio::task::JoinHandle<anyhow::Result<()>>,
    ) -> SandboxHandle {
        SandboxHandle {
            addr,
            shared,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn credentials(&self) -> &SandboxCredentials {
        &self.shared.config.credentials
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.shared.config
    }

    /// The sandbox's whole view of a room: the room object with `status` (whatever
    /// `get_room_omits_status` says) and every field an update can set (whatever
    /// `room_extra_fields` says), so tests can check owner, managers and the rest; and `bans`,
    /// as `GET /_sandbox/rooms/{id}` shows them.
    pub fn room(&self, id: &str) -> Option<serde_json::Value> {
        self.shared.room_view(id)
    }

    /// The clients banned in `room`, in ban order; `None` if the room does not exist.
    pub fn banned(&self, room: &str) -> Option<Vec<String>> {
        self.shared.banned(room)
    }

    /// The client object, as the mute endpoint answers it.
    pub fn client(&self, id: &str) -> Option<serde_json::Value> {
        self.shared.client_json(id)
    }

    /// The rooms muted for `client`, in mute order; `None` if the client does not exist.
    pub fn muted_rooms(&self, client: &str) -> Option<Vec<String>> {
        lock(&self.shared.world)
            .clients
            .get(client)
            .map(|c| c.mute.clone())
    }

    /// The status of a room (1 active, 0 frozen); `None` if it does not exist.
    pub fn room_status(&self, id: &str) -> Option<u8> {
        lock(&self.shared.world).rooms.get(id).map(|r| r.status)
    }

    /// How many times `method path` was applied (answered 2xx or dropped after applying).
    /// `path` may be written with any percent-encoding of the ids.
    pub fn applied(&self, method: &str, path: &str) -> u64 {
        self.shared.applied(method, path)
    }

    /// How many times the request carrying `op` was applied: counted by its kind (freeze,
    /// unfreeze, update, mute, unmute), so a freeze and an update of one room count apart.
    pub fn applied_op(&self, op: &Op) -> u64 {
        let (kind, path) = op_kind_path(op);
        self.shared.op_counts(kind, &path).applied
    }

    /// How many requests of `op`'s kind to its path arrived, and how many were applied.
    pub fn op_counts_of(&self, op: &Op) -> OpCounts {
        let (kind, path) = op_kind_path(op);
        self.shared.op_counts(kind, &path)
    }

    /// Received and applied requests of `kind` to `path` (any encoding of the ids).
    pub fn op_counts(&self, kind: OpKind, path: &str) -> OpCounts {
        self.shared.op_counts(kind, path)
    }

    /// Requests per endpoint, answers per status, applied changes, faults by kind.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// API requests received (all endpoints, unknown routes included).
    pub fn requests_total(&self) -> u64 {
        let c = &self.shared.counters;
        c.requests
            .iter()
            .chain([&c.unknown_routes])
            .map(|n| n.load(Ordering::Relaxed))
            .sum()
    }

    /// Faults injected, all kinds together.
    pub fn faults_total(&self) -> u64 {
        Fault::ALL.iter().map(|f| self.faults(*f)).sum()
    }

    /// Faults injected of one kind.
    pub fn faults(&self, kind: Fault) -> u64 {
        self.shared.counters.faults[kind.index()].load(Ordering::Relaxed)
    }

    /// The last `limit` entries of the request log, oldest first.
    pub fn log(&self, limit: usize) -> Vec<LogEntry> {
        self.shared.log(limit)
    }

    /// Back to the seeded state; counters, log and fault replay start over.
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// Stops accepting, lets in-flight answers finish (briefly), and waits for the server.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(t) => t.await.context("the sandbox task failed")?,
            None => Ok(()),
        }
    }
}

/// The kind and path of the request carrying `op`, as the sandbox classifies it (by its
/// route, so that a ban and a mute, both POSTs, count apart).
fn op_kind_path(op: &Op) -> (OpKind, String) {
    let r = crate::api::request::Request::for_op(op);
    let body = r.body.as_ref().map(|b| b.to_string()).unwrap_or_default();
    let kind = Route::parse(r.method.as_str(), &r.path).map_or(OpKind::Unknown, |route| {
        op_kind(route.endpoint, body.as_bytes())
    });
    (kind, r.path)
}

impl Drop for SandboxHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}
