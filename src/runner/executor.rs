//! The two seams of the scheduler: [`Executor`] sends one op (the API client in production,
//! a scripted fake in tests) and [`Recorder`] writes outcomes (the journal's writer in
//! production, memory in tests). The scheduler never sees HTTP or SQLite.

use std::future::Future;
use std::sync::Mutex;

use crate::api::{ApiClient, Attempt};
use crate::journal::{JournalError, JournalWriter, OpRecord};
use crate::op::Op;

/// Sends requests.
pub trait Executor: Send + Sync + 'static {
    /// Sends the request that carries `op`.
    fn send(&self, op: &Op) -> impl Future<Output = Attempt> + Send;
    /// Reads a room before its first change (`--snapshot`).
    fn read_room(
        &self,
        room: &str,
    ) -> impl Future<Output = Result<serde_json::Value, Attempt>> + Send;
}

impl Executor for ApiClient {
    async fn send(&self, op: &Op) -> Attempt {
        ApiClient::send(self, op).await
    }

    async fn read_room(&self, room: &str) -> Result<serde_json::Value, Attempt> {
        self.get_room(room).await
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
    fn record_snapshot(
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
}

/// A recorder that keeps everything in memory (tests, dry runs).
#[derive(Debug, Default)]
pub struct MemoryRecorder {
    records: Mutex<Vec<OpRecord>>,
    snapshots: Mutex<Vec<(String, Option<serde_json::Value>)>>,
}

impl MemoryRecorder {
    pub fn records(&self) -> Vec<OpRecord> {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn snapshots(&self) -> Vec<(String, Option<serde_json::Value>)> {
        self.snapshots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Recorder for MemoryRecorder {
    fn record(&self, rec: OpRecord) -> Result<(), JournalError> {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(rec);
        Ok(())
    }

    async fn record_snapshot(
        &self,
        room: &str,
        prior: Option<serde_json::Value>,
    ) -> Result<(), JournalError> {
        self.snapshots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((room.to_string(), prior));
        Ok(())
    }
}
