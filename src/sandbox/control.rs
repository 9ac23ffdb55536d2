//! The control API for tests and rehearsals, under the reserved prefix `/_sandbox/` (no
//! IMKIT path starts with it): state of a room or client, counters, applied counts, a
//! bounded request log, reset. It needs no credentials and never shows any.
//!
//! - `GET /_sandbox/rooms/{id}`: the sandbox's whole view of the room (always with `status`,
//!   owner, managers and every other field an update can set, and `bans`: the room's bans in
//!   ban order, each `{"blockee","blocker","createdAt","updatedAt"}`), 404 if none
//! - `GET /_sandbox/clients/{id}`: the client object, 404 if none
//! - `GET /_sandbox/stats`: [`Stats`]
//! - `GET /_sandbox/applied?method=PUT&path=/rooms/x`: `{"request":..,"applied":N}`, all
//!   kinds of PUT together
//! - `GET /_sandbox/applied?kind=freeze&path=/rooms/x`:
//!   `{"kind":"freeze","target":"/rooms/x","received":N,"applied":M}` (kinds: freeze,
//!   unfreeze, update, get, mute, unmute, ban, unban, and bans for reads of a ban list; a
//!   PUT of exactly `{"status":0}` is a freeze, of exactly `{"status":1}` an unfreeze, any
//!   other PUT an update)
//! - `GET /_sandbox/log?limit=N`: the last N [`LogEntry`]s (default 100), oldest first, each
//!   with its kind; unknown routes are logged (kind `unknown`) and counted in `responses`
//! - `POST /_sandbox/reset`: back to the seeded state (seeded bans only); counters and fault
//!   replay restart

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::route::OpKind;
use super::shared::Shared;
use super::tracking::{LogEntry, Stats};

fn not_found(what: &str, id: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": format!("no {what} {id:?} in the sandbox")})),
    )
        .into_response()
}

pub(crate) async fn room(State(sb): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match sb.room_view(&id) {
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
    method: Option<String>,
    kind: Option<String>,
    path: String,
}

/// `?method=PUT&path=..`: applied per method and path, all kinds together;
/// `?kind=freeze&path=..`: received and applied of that kind.
pub(crate) async fn applied(
    State(sb): State<Arc<Shared>>,
    Query(q): Query<AppliedQuery>,
) -> Response {
    match (&q.kind, &q.method) {
        (Some(k), _) => match OpKind::parse(k) {
            Some(kind) => {
                let c = sb.op_counts(kind, &q.path);
                Json(json!({
                    "kind": kind,
                    "target": q.path,
                    "received": c.received,
                    "applied": c.applied,
                }))
                .into_response()
            }
            None => bad_query(&format!("unknown kind {k:?}: one of {}", known_kinds())),
        },
        (None, Some(m)) => {
            let method = m.to_ascii_uppercase();
            let n = sb.applied(&method, &q.path);
            Json(json!({"request": format!("{method} {}", q.path), "applied": n})).into_response()
        }
        (None, None) => bad_query("give kind=KIND or method=METHOD, and path=PATH"),
    }
}

/// The kinds a query may name, comma-separated (`unknown` is for the log only).
fn known_kinds() -> String {
    let kinds: Vec<&str> = OpKind::ALL
        .iter()
        .filter(|k| **k != OpKind::Unknown)
        .map(|k| k.as_str())
        .collect();
    kinds.join(", ")
}

fn bad_query(msg: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": msg}))).into_response()
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
