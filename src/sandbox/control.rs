//! The control API for tests and rehearsals, under the reserved prefix `/_sandbox/` (no
//! IMKIT path starts with it): state of a room or client, counters, applied counts, a
//! bounded request log, reset. It needs no credentials and never shows any.
//!
//! - `GET /_sandbox/rooms/{id}`: the sandbox's whole view of the room (always with `status`,
//!   owner, managers and every other field an update can set), 404 if none
//! - `GET /_sandbox/clients/{id}`: the client object, 404 if none
//! - `GET /_sandbox/stats`: [`Stats`]
//! - `GET /_sandbox/applied?method=PUT&path=/rooms/x`: `{"request":..,"applied":N}`
//! - `GET /_sandbox/log?limit=N`: the last N [`LogEntry`]s (default 100), oldest first
//! - `POST /_sandbox/reset`: back to the seeded state; counters and fault replay restart

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::server::Shared;

/// Counters since start or the last reset.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Requests per endpoint (`"PUT /rooms/{id}"`, ...), plus `unknown_route`.
    pub requests: BTreeMap<String, u64>,
    /// Answers per HTTP status, plus `dropped` (connection closed without an answer).
    pub responses: BTreeMap<String, u64>,
    /// Changes applied, all requests together.
    pub applied_total: u64,
    /// Changes applied per canonical request (`"PUT /rooms/lobby-1"`).
    pub applied: BTreeMap<String, u64>,
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
    /// `METHOD /path`, ids canonically encoded.
    pub request: String,
    /// `None` when the connection was dropped.
    pub status: Option<u16>,
    pub fault: Option<String>,
    pub applied: bool,
}

fn not_found(what: &str, id: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": format!("no {what} {id:?} in the sandbox")})),
    )
        .into_response()
}

pub(crate) async fn room(State(sb): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match sb.room_json(&id, true) {
        Some(r) => Json(r).into_response(),
        None => not_found("room", &id),
    }
}

pub(crate) async fn client(State(sb): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match sb.client_json(&id) {
        Some(c) => Json(c).into_response(),
        None => not_found("client", &id),
    }
}

pub(crate) async fn stats(State(sb): State<Arc<Shared>>) -> Json<Stats> {
    Json(sb.stats())
}

#[derive(Deserialize)]
pub(crate) struct AppliedQuery {
    method: String,
    path: String,
}

pub(crate) async fn applied(
    State(sb): State<Arc<Shared>>,
    Query(q): Query<AppliedQuery>,
) -> Json<serde_json::Value> {
    let method = q.method.to_ascii_uppercase();
    let n = sb.applied(&method, &q.path);
    Json(json!({"request": format!("{method} {}", q.path), "applied": n}))
}

#[derive(Deserialize)]
pub(crate) struct LogQuery {
    limit: Option<usize>,
}

pub(crate) async fn log(
    State(sb): State<Arc<Shared>>,
    Query(q): Query<LogQuery>,
) -> Json<Vec<LogEntry>> {
    Json(sb.log(q.limit.unwrap_or(100)))
}

pub(crate) async fn reset(State(sb): State<Arc<Shared>>) -> Json<serde_json::Value> {
    sb.reset();
    Json(json!({"reset": true}))
}
