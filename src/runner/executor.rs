//! The two seams of the scheduler: [`Executor`] sends one op (the API client in production,
//! a scripted fake in tests) and [`Recorder`] writes outcomes (the journal's writer in
//! production, memory in tests). The scheduler never sees HTTP or SQLite.

use std::future::Future;
use std::sync::Mutex;

use crate::api::{ApiClient, Attempt, Request};
use crate::journal::{JournalError, JournalWriter, OpRecord};
use crate::op::{Credential, Op};
use crate::sync::lock;

/// Sends requests, each with the credential the scheduler chose for it (`op::Auth`): the
/// scheduler paces every credential apart, so it decides, and the executor obeys.
pub trait Executor: Send + Sync + 'static {
    /// Sends the request that carries `op`.
    fn send(&self, op: &Op, credential: Credential) -> impl Future<Output = Attempt> + Send;
    /// Reads a room before its first change (`--snapshot`).
    fn read_room(
        &self,
        room: &str,
        credential: Credential,
    ) -> impl Future<Output = Result<serde_json::Value, Attempt>> + Send;
    /// Reads a room's ban list before its first ban or unban (`--snapshot`).
    fn read_bans(
        &self,
        room: &str,
        credential: Credential,
    ) -> impl Future<Output = Result<serde_json::Value, Attempt>> + Send;
}

impl Executor for ApiClient {
    async fn send(&self, op: &Op, credential: Credential) -> Attempt {
        self.send_as(op, credential).await
    }

    async fn read_room(
        &self,
        room: &str,
        credential: Credential,
    ) -> Result<serde_json::Value, Attempt> {
        self.read(&Request::get_room(room), credential).await
    }

    async fn read_bans(
        &self,
        room: &str,
        credential: Credential,
    ) -> Result<serde_json::Value, Attempt> {
        self.read(&Request::get_bans(room), credential).await
    }
}

/// Records outcomes.
pub trait Recorder: Send + Sync + 'static {
    /// Queues an outcome (durable at once, or later: see [`not_durable`](Self::not_durable)).
    fn record(&self, rec: OpRecord) -> Result<(), JournalError>;
    /// Outcomes passed to `record` that are not durable yet. The scheduler counts them with
    /// the requests on the wire, so a kill at any moment leaves at most `2 × --concurrency`
    /// ops sent but not recorded. An error means nothing more can be recorded.
    fn not_durable(&self) -> Result<u64, JournalError> {
        Ok(0)
    }
    /// Resolves when [`not_durable`](Self::not_durable) may have changed (one waiter).
    fn durable_progress(&self) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }
    /// Records what a room read gave before its first change (`None`: nothing usable);
    /// resolves once it is durable, so the change may go out.
    fn record_snapshot(
        &self,
        room: &str,
        prior: Option<serde_json::Value>,
    ) -> impl Future<Output = Result<(), JournalError>> + Send;
    /// Records what a room's ban-list read gave before its first ban or unban (`None`: the
    /// list is unknown, e.g. the read was refused 403); durable when it resolves.
    fn record_ban_snapshot(
        &self,
        room: &str,
        prior: Option<serde_json::Value>,
    ) -> impl Future<Output = Result<(), JournalError>> + Send;
}

impl Recorder for JournalWriter {
    fn record(&self, rec: OpRecord) -> Result<(), JournalError> {
        JournalWriter::record(self, rec)
    }

    fn not_durable(&self) -> Result<u64, JournalError> {
        JournalWriter::not_durable(self)
    }

    async fn durable_progress(&self) {
        JournalWriter::durable_progress(self).await
    }

    async fn record_snapshot(
        &self,
        room: &str,
        prior: Option<serde_json::Value>,
    ) -> Result<(), JournalError> {
        JournalWriter::record_snapshot(self, room, prior).await
    }

    async fn record_ban_snapshot(
        &self,
        room: &str,
        prior: Option<serde_json::Value>,
    ) -> Result<(), JournalError> {
        JournalWriter::record_ban_snapshot(self, room, prior).await
    }
}

/// A recorder that keeps everything in memory (tests, dry runs).
#[derive(Debug, Default)]
pub struct MemoryRecorder {
    records: Mutex<Vec<OpRecord>>,
    snapshots: Mutex<Vec<(String, Option<serde_json::Value>)>>,
    ban_snapshots: Mutex<Vec<(String, Option<serde_json::Value>)>>,
}

impl MemoryRecorder {
    pub fn records(&self) -> Vec<OpRecord> {
        lock(&self.records).clone()
    }

    pub fn snapshots(&self) -> Vec<(String, Option<serde_json::Value>)> {
        lock(&self.snapshots).clone()
    }

    /// The ban-list snapshots recorded, in order.
    pub fn ban_snapshots(&self) -> Vec<(String, Option<serde_json::Value>)> {
        lock(&self.ban_snapshots).clone()
    }
}

impl Recorder for MemoryRecorder {
    fn record(&self, rec: OpRecord) -> Result<(), JournalError> {
        lock(&self.records).push(rec);
        Ok(())
    }

    async fn record_snapshot(
        &self,
        room: &str,
        prior: Option<serde_json::Value>,
    ) -> Result<(), JournalError> {
        lock(&self.snapshots).push((room.to_string(), prior));
        Ok(())
    }

    async fn record_ban_snapshot(
        &self,
        room: &str,
        prior: Option<serde_json::Value>,
    ) -> Result<(), JournalError> {
        lock(&self.ban_snapshots).push((room.to_string(), prior));
        Ok(())
    }
}
