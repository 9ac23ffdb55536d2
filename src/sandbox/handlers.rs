//! The emulated API endpoints and their answers, as the vendor pages in `api/` document them:
//! routing on the raw path (each id one percent-decoded segment), credentials, permissions,
//! the success and error bodies, and where each request meets its seeded fault, the latency
//! and the per-credential rate limit.
//!
//! Where the pages are silent, the sandbox does what the service plausibly does:
//! - Order of checks (as an Express-style service would): route, credentials (401), the
//!   target (404), the body (400), permissions (403), then the change.
//! - PUT body: every documented field is type-checked (strings, string arrays, boolean,
//!   `opening`/`status` exactly 0 or 1; `null` is a wrong type) and a wrong type, malformed
//!   JSON or a non-object body is 400 `INVALID_PARAMETER` with nothing applied. Unknown
//!   fields are ignored (schema-based storage strips them). An empty body is `{}`.
//! - A new `owner` or `managers` entry that is no client: 404 `CLIENT_NOT_FOUND`.
//! - A body of only `status` answers with the freeze page's messages ("Room frozen
//!   successfully"; for 1 "Room unfrozen successfully", by the same pattern) and its 403
//!   wording; any other body with the update page's.
//! - Any valid client token may read a room; the API key is not accepted on room endpoints
//!   (the documented way) unless `api_key_on_rooms` emulates the deployments NOTES.md calls
//!   possible.
//! - Muting an already muted room answers 200 with one entry (mute is a set).
//! - A path segment that is not valid UTF-8 once decoded is read lossily (U+FFFD), so it
//!   names no existing id and answers 404.
//! - Unknown routes and methods: 404 `NOT_FOUND` "Cannot METHOD /path", as Express words it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use percent_encoding::percent_decode_str;
use serde_json::{Value, json};

use super::control::LogEntry;
use super::faults::{self, Fault};
use super::server::{ConnDropper, Shared, lock};
use super::state::{self, RoomPatch};
use crate::api::request::segment;

/// Largest PUT body read; a room update is a few hundred bytes.
const MAX_BODY: usize = 64 * 1024;

/// The endpoints the sandbox emulates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    GetRoom,
    PutRoom,
    Mute,
    Unmute,
}

impl Endpoint {
    pub const COUNT: usize = 4;
    pub const ALL: [Endpoint; Endpoint::COUNT] = [
        Endpoint::GetRoom,
        Endpoint::PutRoom,
        Endpoint::Mute,
        Endpoint::Unmute,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::GetRoom => "GET /rooms/{id}",
            Endpoint::PutRoom => "PUT /rooms/{id}",
            Endpoint::Mute => "POST /admin/clients/{uid}/mute/{room}",
            Endpoint::Unmute => "DELETE /admin/clients/{uid}/mute/{room}",
        }
    }

    fn uses_api_key(self) -> bool {
        matches!(self, Endpoint::Mute | Endpoint::Unmute)
    }
}

/// A request matched to an endpoint, with its decoded ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub endpoint: Endpoint,
    pub room: String,
    pub client: Option<String>,
}

impl Route {
    /// Matches a raw (still percent-encoded) path. Each id is exactly one segment, decoded
    /// after splitting, so `%2F` inside an id never makes a new segment.
    pub fn parse(method: &str, path: &str) -> Option<Route> {
        let rest = path.strip_prefix('/')?;
        let segs: Vec<&str> = rest.split('/').collect();
        let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        let (endpoint, room, client) = match (method, segs.as_slice()) {
            ("GET", ["rooms", id]) if !id.is_empty() => (Endpoint::GetRoom, *id, None),
            ("PUT", ["rooms", id]) if !id.is_empty() => (Endpoint::PutRoom, *id, None),
            ("POST", ["admin", "clients", uid, "mute", room])
                if !uid.is_empty() && !room.is_empty() =>
            {
                (Endpoint::Mute, *room, Some(*uid))
            }
            ("DELETE", ["admin", "clients", uid, "mute", room])
                if !uid.is_empty() && !room.is_empty() =>
            {
                (Endpoint::Unmute, *room, Some(*uid))
            }
            _ => return None,
        };
        Some(Route {
            endpoint,
            room: decode(room),
            client: client.map(decode),
        })
    }

    pub fn method(&self) -> &'static str {
        match self.endpoint {
            Endpoint::GetRoom => "GET",
            Endpoint::PutRoom => "PUT",
            Endpoint::Mute => "POST",
            Endpoint::Unmute => "DELETE",
        }
    }

    /// `METHOD /path` with canonically encoded ids: the key of fault replay and applied counts.
    pub fn key(&self) -> String {
        match &self.client {
            Some(c) => format!(
                "{} /admin/clients/{}/mute/{}",
                self.method(),
                segment(c),
                segment(&self.room)
            ),
            None => format!("{} /rooms/{}", self.method(), segment(&self.room)),
        }
    }
}

/// `{"RC":0,"RM":rm,"result":result}`.
fn ok(rm: &str, result: Value) -> Response {
    axum::Json(json!({"RC": 0, "RM": rm, "result": result})).into_response()
}

/// The documented error envelope `{"RC":..,"RM":..,"error":{"code":..,"message":..}}`.
fn error(status: StatusCode, rm: &str, code: &str, message: &str) -> Response {
    let body = json!({
        "RC": status.as_u16(),
        "RM": rm,
        "error": {"code": code, "message": message},
    });
    (status, axum::Json(body)).into_response()
}

fn bad_request(message: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "Bad Request",
        "INVALID_PARAMETER",
        message,
    )
}

fn invalid_token() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        "INVALID_TOKEN",
        "Invalid or expired token",
    )
}

fn invalid_api_key() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        "INVALID_API_KEY",
        "Invalid or missing API key",
    )
}

fn room_not_found(endpoint: Endpoint) -> Response {
    // The room pages and the mute pages word the message differently.
    let message = if endpoint.uses_api_key() {
        "The specified room does not exist"
    } else {
        "Room with specified ID does not exist"
    };
    error(
        StatusCode::NOT_FOUND,
        "Room not found",
        "ROOM_NOT_FOUND",
        message,
    )
}

fn client_not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "Client not found",
        "CLIENT_NOT_FOUND",
        "The specified client does not exist",
    )
}

/// The documented flat 429 body (api-key.md), no `RC`, no header.
fn too_many_flat(retry_after: u64) -> Response {
    let body = json!({
        "error": "RATE_LIMIT_EXCEEDED",
        "message": "Too many requests, please try again later",
        "retryAfter": retry_after,
    });
    (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response()
}

/// 429 with `Retry-After` and the RC envelope (what many gateways in front of such a service
/// send).
fn too_many_with_header(retry_after: u64) -> Response {
    let mut r = error(
        StatusCode::TOO_MANY_REQUESTS,
        "Too Many Requests",
        "RATE_LIMIT_EXCEEDED",
        "Too many requests, please try again later",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    r
}

/// A reverse proxy's HTML error page.
fn proxy_page(status: StatusCode) -> Response {
    let reason = status.canonical_reason().unwrap_or("Error");
    let code = status.as_u16();
    let html = format!(
        "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n\
         <center><h1>{code} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n\
         </body>\r\n</html>\r\n"
    );
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response()
}

fn fault_response(fault: Fault, retry_after: u64) -> Option<Response> {
    Some(match fault {
        Fault::TooManyWithHeader => too_many_with_header(retry_after),
        Fault::TooManyFlat => too_many_flat(retry_after),
        Fault::Status500 => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error",
            "INTERNAL_ERROR",
            "An unexpected error occurred",
        ),
        Fault::Status502 => proxy_page(StatusCode::BAD_GATEWAY),
        Fault::Status503 => proxy_page(StatusCode::SERVICE_UNAVAILABLE),
        Fault::DropBefore | Fault::DropAfter | Fault::Slow => return None,
    })
}

/// Who a client key + token belongs to.
enum Caller {
    Admin,
    User(String),
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn caller(sb: &Shared, h: &HeaderMap) -> Option<Caller> {
    let creds = &sb.config.credentials;
    if sb.config.api_key_on_rooms && header_str(h, "IM-API-KEY") == Some(&creds.api_key) {
        return Some(Caller::Admin);
    }
    if header_str(h, "IM-CLIENT-KEY")? != creds.client_key {
        return None;
    }
    let token = header_str(h, "IM-Authorization")?;
    if token == creds.token {
        return Some(Caller::Admin);
    }
    sb.config.users.get(token).cloned().map(Caller::User)
}

/// The key the rate limit counts under: the credential presented (never logged).
fn limit_key(endpoint: Endpoint, h: &HeaderMap) -> String {
    if endpoint.uses_api_key() {
        format!("k:{}", header_str(h, "IM-API-KEY").unwrap_or(""))
    } else {
        format!(
            "t:{}\n{}",
            header_str(h, "IM-CLIENT-KEY").unwrap_or(""),
            header_str(h, "IM-Authorization").unwrap_or("")
        )
    }
}

/// What became of one request, for the log.
struct Outcome {
    status: Option<u16>,
    fault: Option<Fault>,
    applied: bool,
}

/// Every API request lands here (the control API has its own routes).
pub(crate) async fn api(State(sb): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Some(route) = Route::parse(parts.method.as_str(), parts.uri.path()) else {
        sb.counters.unknown_routes.fetch_add(1, Ordering::Relaxed);
        return route_not_found(&parts.method, parts.uri.path());
    };
    sb.counters.requests[route.endpoint as usize].fetch_add(1, Ordering::Relaxed);
    let key = route.key();
    let n = {
        let mut t = lock(&sb.track);
        let c = t.paths.entry(key.clone()).or_default();
        c.seen += 1;
        c.seen - 1
    };
    let cfg = &sb.config;
    let draw = faults::draw(
        cfg.fault_seed,
        route.method(),
        &key,
        n,
        &cfg.faults,
        cfg.latency_jitter,
    );
    let delay = cfg.latency + draw.jitter;
    if !delay.is_zero() {
        sb.counters.delayed.fetch_add(1, Ordering::Relaxed);
        sb.delay(delay).await;
    }
    if let Some(f) = draw.fault {
        sb.counters.faults[f.index()].fetch_add(1, Ordering::Relaxed);
        if f == Fault::DropBefore {
            return drop_connection(&sb, &parts, &key, f, false).await;
        }
        if let Some(resp) = fault_response(f, cfg.fault_retry_after_secs) {
            return finish(&sb, &key, resp, Some(f), false);
        }
    }
    if let Some(limiter) = sb.limiter()
        && let Err(not_until) = limiter.check_key(&limit_key(route.endpoint, &parts.headers))
    {
        sb.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        return finish(&sb, &key, too_many_flat(secs.max(1)), None, false);
    }
    let body = if route.endpoint == Endpoint::PutRoom {
        match axum::body::to_bytes(Body::new(body), MAX_BODY).await {
            Ok(b) => b,
            Err(_) => {
                let r = error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "Payload Too Large",
                    "PAYLOAD_TOO_LARGE",
                    "Request body is too large or was cut short",
                );
                return finish(&sb, &key, r, None, false);
            }
        }
    } else {
        Bytes::new()
    };
    let (resp, applied) = handle(&sb, &route, &parts.headers, &body);
    match draw.fault {
        Some(f @ Fault::DropAfter) => drop_connection(&sb, &parts, &key, f, applied).await,
        Some(f @ Fault::Slow) => {
            // Recorded before the wait: the client may well give up and close first.
            let resp = finish(&sb, &key, resp, Some(f), applied);
            tokio::time::sleep(cfg.slow_duration).await;
            resp
        }
        _ => finish(&sb, &key, resp, None, applied),
    }
}

/// Records the answer and returns it.
fn finish(sb: &Shared, key: &str, resp: Response, fault: Option<Fault>, applied: bool) -> Response {
    record(
        sb,
        key,
        Outcome {
            status: Some(resp.status().as_u16()),
            fault,
            applied,
        },
    );
    resp
}

fn record(sb: &Shared, key: &str, o: Outcome) {
    let at_ms = sb.started.elapsed().as_millis() as u64;
    let mut t = lock(&sb.track);
    t.seq += 1;
    let seq = t.seq;
    match o.status {
        Some(s) => *t.statuses.entry(s).or_default() += 1,
        None => t.dropped += 1,
    }
    if o.applied {
        t.applied_total += 1;
        if let Some(c) = t.paths.get_mut(key) {
            c.applied += 1;
        }
    }
    let cap = sb.config.log_capacity;
    if cap > 0 {
        if t.log.len() >= cap {
            t.log.pop_front();
        }
        t.log.push_back(LogEntry {
            seq,
            at_ms,
            request: key.to_owned(),
            status: o.status,
            fault: o.fault.map(|f| f.as_str().to_owned()),
            applied: o.applied,
        });
    }
}

/// Closes this request's connection without a response.
async fn drop_connection(
    sb: &Shared,
    parts: &axum::http::request::Parts,
    key: &str,
    fault: Fault,
    applied: bool,
) -> Response {
    record(
        sb,
        key,
        Outcome {
            status: None,
            fault: Some(fault),
            applied,
        },
    );
    match parts.extensions.get::<ConnDropper>() {
        Some(d) => {
            d.0.cancel();
            // The connection task drops this future with the connection.
            std::future::pending::<Response>().await
        }
        // Served outside our accept loop (cannot happen through run/spawn): the nearest
        // thing is an empty 502.
        None => StatusCode::BAD_GATEWAY.into_response(),
    }
}

/// An unknown route: Express answers 404 to any path or method it has no route for.
fn route_not_found(method: &Method, path: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "Not Found",
        "NOT_FOUND",
        &format!("Cannot {method} {path}"),
    )
}

/// Applies one request to the state. Returns the answer and whether a change was applied
/// (a 2xx of PUT, POST or DELETE; re-applying an equal value counts too).
fn handle(sb: &Shared, route: &Route, h: &HeaderMap, body: &[u8]) -> (Response, bool) {
    match route.endpoint {
        Endpoint::GetRoom => (get_room(sb, route, h), false),
        Endpoint::PutRoom => put_room(sb, route, h, body),
        Endpoint::Mute | Endpoint::Unmute => mute(sb, route, h),
    }
}

fn get_room(sb: &Shared, route: &Route, h: &HeaderMap) -> Response {
    // Any valid client token may read a room (the sandbox has no membership rule for reads).
    if caller(sb, h).is_none() {
        return invalid_token();
    }
    let Some(mut room) = sb.room_json(&route.room, sb.config.room_extra_fields) else {
        return room_not_found(route.endpoint);
    };
    if sb.config.get_room_omits_status
        && let Some(o) = room.as_object_mut()
    {
        o.remove("status");
    }
    ok("OK", room)
}

fn put_room(sb: &Shared, route: &Route, h: &HeaderMap, body: &[u8]) -> (Response, bool) {
    let Some(who) = caller(sb, h) else {
        return (invalid_token(), false);
    };
    let mut world = lock(&sb.world);
    if !world.rooms.contains_key(&route.room) {
        return (room_not_found(route.endpoint), false);
    }
    let patch = match state::parse_patch(body) {
        Ok(p) => p,
        Err(m) => return (bad_request(&m), false),
    };
    let freeze_page = patch.is_status_only();
    let Some(room) = world.rooms.get(&route.room) else {
        return (room_not_found(route.endpoint), false);
    };
    let allowed = match &who {
        Caller::Admin => true,
        Caller::User(id) => !patch.touches_roles() && room.is_run_by(id),
    };
    if !allowed {
        return (forbidden(&who, &patch, freeze_page), false);
    }
    let named = patch
        .owner
        .iter()
        .chain(patch.managers.iter().flatten())
        .any(|c| !world.clients.contains_key(c));
    if named {
        return (client_not_found(), false);
    }
    let rm = match (freeze_page, patch.status) {
        (true, Some(0)) => "Room frozen successfully",
        // Only the freeze message is documented; the unfreeze one follows its pattern.
        (true, _) => "Room unfrozen successfully",
        _ => "OK",
    };
    let state::World { rooms, clients } = &mut *world;
    let Some(room) = rooms.get_mut(&route.room) else {
        return (room_not_found(route.endpoint), false);
    };
    room.apply(patch);
    let result = room.to_json(&route.room, clients, sb.config.room_extra_fields);
    drop(world);
    (ok(rm, result), true)
}

fn forbidden(who: &Caller, patch: &RoomPatch, freeze_page: bool) -> Response {
    let (rm, message) = if freeze_page {
        (
            "Permission denied",
            "Only room owner, manager, or platform admin can freeze room",
        )
    } else if patch.touches_roles() && matches!(who, Caller::User(_)) {
        (
            "Forbidden",
            "Only platform admin can change room owner or managers",
        )
    } else {
        (
            "Forbidden",
            "Only room owner, manager, or platform admin can update room",
        )
    };
    error(
        StatusCode::FORBIDDEN,
        rm,
        "INSUFFICIENT_PERMISSIONS",
        message,
    )
}

fn mute(sb: &Shared, route: &Route, h: &HeaderMap) -> (Response, bool) {
    if header_str(h, "IM-API-KEY") != Some(sb.config.credentials.api_key.as_str()) {
        return (invalid_api_key(), false);
    }
    let client_id = route.client.as_deref().unwrap_or_default();
    let mut world = lock(&sb.world);
    if !world.clients.contains_key(client_id) {
        return (client_not_found(), false);
    }
    if !world.rooms.contains_key(&route.room) {
        return (room_not_found(route.endpoint), false);
    }
    let Some(client) = world.clients.get_mut(client_id) else {
        return (client_not_found(), false);
    };
    if route.endpoint == Endpoint::Mute {
        client.mute(&route.room);
    } else if !client.unmute(&route.room) {
        let r = error(
            StatusCode::BAD_REQUEST,
            "Room is not muted",
            "ROOM_NOT_MUTED",
            "The specified room is not in the mute list",
        );
        return (r, false);
    }
    let result = client.to_json(client_id);
    drop(world);
    (ok("OK", result), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_take_one_segment_per_id() {
        let r = Route::parse("PUT", "/rooms/..%2Fadmin").unwrap();
        assert_eq!(r.room, "../admin");
        assert_eq!(r.key(), "PUT /rooms/..%2Fadmin");
        assert!(Route::parse("PUT", "/rooms/a/b").is_none());
        assert!(Route::parse("PUT", "/rooms/").is_none());
        assert!(Route::parse("PATCH", "/rooms/a").is_none());
        let r = Route::parse("DELETE", "/admin/clients/u%201/mute/%E6%88%BF").unwrap();
        assert_eq!(r.client.as_deref(), Some("u 1"));
        assert_eq!(r.room, "房");
        assert_eq!(
            Route::parse("GET", "/rooms/%41").unwrap().key(),
            "GET /rooms/A"
        );
    }
}
