//! The emulated API endpoints and their answers, as the vendor pages document them (docs/api.md):
//! credentials, permissions, the success and error bodies of each route ([`super::route`]
//! tells them apart), and where each request meets its seeded fault, the latency and the
//! per-credential rate limit.
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
//! - Any valid client token may read a room. The API key is accepted on room and ban
//!   endpoints as a platform admin (the vendor documents it as able to call every API; see
//!   docs/api.md, The API key on every endpoint); with `api_key_on_rooms` off they take only
//!   the client key + token their pages document, and the API key alone is answered their 401.
//! - Ban, unban and the ban list: [`super::ban_api`].
//! - Muting an already muted room answers 200 with one entry (mute is a set).
//! - A path segment that is not valid UTF-8 once decoded is read lossily (U+FFFD), so it
//!   names no existing id and answers 404.
//! - Unknown routes and methods: 404 `NOT_FOUND` "Cannot METHOD /path", as Express words it
//!   (logged with kind `unknown` and counted in the responses).
//! - 401s carry the endpoint pages' RC envelope; `flat_401` answers the flat shape that
//!   the API-key section of docs/api.md documents (`{"error":"INVALID_API_KEY","message":"The provided API key is
//!   invalid or expired"}`; for a token, `INVALID_TOKEN` with the room pages' message).
//! - The rate limit (`rate_limit`) is a fixed window, or with `rate_limit_burst` a token
//!   bucket, per credential that authenticated the request ([`super::limit`]); a request no
//!   credential authenticates spends no budget.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use std::time::Duration;

use super::ban_api;
use super::config::ADMIN_ID;
use super::faults::{self, Fault};
use super::limit::Bucket;
use super::route::{Endpoint, OpKind, Route, op_kind};
use super::shared::{ConnDropper, Shared};
use super::state::{self, RoomPatch};
use super::tracking::LogEntry;
use crate::sync::lock;

/// Largest PUT body read; a room update is a few hundred bytes.
const MAX_BODY: usize = 64 * 1024;

/// `{"RC":0,"RM":rm,"result":result}`.
pub(super) fn ok(rm: &str, result: Value) -> Response {
    axum::Json(json!({"RC": 0, "RM": rm, "result": result})).into_response()
}

/// The documented error envelope `{"RC":..,"RM":..,"error":{"code":..,"message":..}}`.
pub(super) fn error(status: StatusCode, rm: &str, code: &str, message: &str) -> Response {
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

/// The flat error shape of docs/api.md (API key): `{"error":CODE,"message":..}`.
fn flat_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": code, "message": message})),
    )
        .into_response()
}

pub(super) fn invalid_token(sb: &Shared) -> Response {
    if sb.config.flat_401 {
        // Only the API key's flat 401 is documented; the token's follows it with the room
        // pages' message.
        return flat_error(
            StatusCode::UNAUTHORIZED,
            "INVALID_TOKEN",
            "Invalid or expired token",
        );
    }
    error(
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        "INVALID_TOKEN",
        "Invalid or expired token",
    )
}

fn invalid_api_key(sb: &Shared) -> Response {
    if sb.config.flat_401 {
        return flat_error(
            StatusCode::UNAUTHORIZED,
            "INVALID_API_KEY",
            "The provided API key is invalid or expired",
        );
    }
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

/// The documented flat 429 body (docs/api.md, Rate limits), no `RC`, no header.
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

/// Who a request acts as: a platform admin (the admin token; the API key where it is
/// accepted) or the user of a non-admin token.
pub(super) enum Caller {
    Admin,
    User(String),
}

impl Caller {
    /// The caller's client id: [`ADMIN_ID`] for a platform admin.
    pub(super) fn client_id(&self) -> &str {
        match self {
            Caller::Admin => ADMIN_ID,
            Caller::User(id) => id,
        }
    }
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Who a request to a room or ban endpoint acts as; `None` when no accepted credential
/// authenticates it (answered 401).
pub(super) fn caller(sb: &Shared, h: &HeaderMap) -> Option<Caller> {
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

/// The rate-limit bucket of a request: the credential that actually authenticates it (the
/// API key on mute endpoints, and on room and ban endpoints when `api_key_on_rooms` lets it
/// in; else the client token). `None` for a request no credential authenticates: it is
/// answered 401 and counts against no one's budget (the documented limit is per API key).
fn bucket(sb: &Shared, endpoint: Endpoint, h: &HeaderMap) -> Option<Bucket> {
    let creds = &sb.config.credentials;
    let api_key_ok = header_str(h, "IM-API-KEY") == Some(creds.api_key.as_str());
    if endpoint.uses_api_key() {
        return api_key_ok.then_some(Bucket::ApiKey);
    }
    if sb.config.api_key_on_rooms && api_key_ok {
        return Some(Bucket::ApiKey);
    }
    if header_str(h, "IM-CLIENT-KEY")? != creds.client_key {
        return None;
    }
    let token = header_str(h, "IM-Authorization")?;
    (token == creds.token || sb.config.users.contains_key(token))
        .then(|| Bucket::Token(token.to_owned()))
}

/// What became of one request, for the log.
struct Outcome {
    status: Option<u16>,
    fault: Option<Fault>,
    applied: bool,
}

/// What the log and the counts need to know about one request.
struct Ctx {
    /// `METHOD /path`, ids canonically encoded (fault replay, per-request counts).
    key: String,
    kind: OpKind,
    /// The canonical path, `/rooms/x` or `/admin/clients/u/mute/x`.
    target: String,
    /// Latency plus jitter served to this request.
    delay: Duration,
}

/// Every API request lands here (the control API has its own routes).
pub(crate) async fn api(State(sb): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Some(route) = Route::parse(parts.method.as_str(), parts.uri.path()) else {
        return unknown_route(&sb, &parts);
    };
    sb.counters.requests[route.endpoint as usize].fetch_add(1, Ordering::Relaxed);
    let key = route.key();
    let n = sighting(&sb, &key);
    let target = key
        .split_once(' ')
        .map(|(_, p)| p.to_owned())
        .unwrap_or_default();
    // The body first: it tells the kind of a PUT (freeze, unfreeze or update).
    let body = read_body(route.endpoint, body).await;
    let kind = match &body {
        Ok(b) => op_kind(route.endpoint, b),
        Err(_) => OpKind::Update,
    };
    {
        let mut t = lock(&sb.track);
        t.ops.entry((kind, target.clone())).or_default().received += 1;
    }
    let cfg = &sb.config;
    let draw = faults::draw(
        cfg.fault_seed,
        route.method(),
        &key,
        n,
        &cfg.faults,
        cfg.latency_jitter,
    );
    let ctx = Ctx {
        key,
        kind,
        target,
        delay: cfg.latency + draw.jitter,
    };
    let body = match body {
        Ok(b) => b,
        Err(resp) => return finish(&sb, &ctx, resp, None, false),
    };
    if !ctx.delay.is_zero() {
        sb.counters.delayed.fetch_add(1, Ordering::Relaxed);
        sb.delay(ctx.delay).await;
    }
    if let Some(resp) = refused(&sb, &parts, &route, &ctx, draw.fault).await {
        return resp;
    }
    let (resp, applied) = handle(&sb, &route, &parts.headers, &body);
    match draw.fault {
        Some(f @ Fault::DropAfter) => drop_connection(&sb, &parts, &ctx, f, applied).await,
        Some(f @ Fault::Slow) => {
            // Recorded before the wait: the client may well give up and close first.
            let resp = finish(&sb, &ctx, resp, Some(f), applied);
            tokio::time::sleep(cfg.slow_duration).await;
            resp
        }
        _ => finish(&sb, &ctx, resp, None, applied),
    }
}

/// A request to no known route: counted, logged (kind `unknown`) and answered 404.
fn unknown_route(sb: &Shared, parts: &axum::http::request::Parts) -> Response {
    sb.counters.unknown_routes.fetch_add(1, Ordering::Relaxed);
    let resp = route_not_found(&parts.method, parts.uri.path());
    let ctx = Ctx {
        key: format!("{} {}", parts.method, parts.uri.path()),
        kind: OpKind::Unknown,
        target: parts.uri.path().to_owned(),
        delay: Duration::ZERO,
    };
    finish(sb, &ctx, resp, None, false)
}

/// Counts one more sighting of the canonical request `key`; returns how many times it was
/// seen before (0-based: the `n` of its fault draw).
fn sighting(sb: &Shared, key: &str) -> u64 {
    let mut t = lock(&sb.track);
    let c = t.paths.entry(key.to_owned()).or_default();
    c.seen += 1;
    c.seen - 1
}

/// The body of a PUT (at most [`MAX_BODY`] bytes; a longer or cut one is answered 413);
/// other endpoints read none.
async fn read_body(endpoint: Endpoint, body: Body) -> Result<Bytes, Response> {
    if endpoint != Endpoint::PutRoom {
        return Ok(Bytes::new());
    }
    axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Payload Too Large",
            "PAYLOAD_TOO_LARGE",
            "Request body is too large or was cut short",
        )
    })
}

/// The answer of a request refused before any change: an injected fault that answers (or
/// drops) at once, or the server-side rate limit. `None` lets the request through.
async fn refused(
    sb: &Shared,
    parts: &axum::http::request::Parts,
    route: &Route,
    ctx: &Ctx,
    fault: Option<Fault>,
) -> Option<Response> {
    if let Some(f) = fault {
        sb.counters.faults[f.index()].fetch_add(1, Ordering::Relaxed);
        if f == Fault::DropBefore {
            return Some(drop_connection(sb, parts, ctx, f, false).await);
        }
        if let Some(resp) = fault_response(f, sb.config.fault_retry_after_secs) {
            return Some(finish(sb, ctx, resp, Some(f), false));
        }
    }
    if let Some(limiter) = sb.limiter()
        && let Some(bucket) = bucket(sb, route.endpoint, &parts.headers)
        && let Err(wait) = limiter.check(bucket, tokio::time::Instant::now())
    {
        sb.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        return Some(finish(sb, ctx, too_many_flat(secs.max(1)), None, false));
    }
    None
}

/// Records the answer and returns it.
fn finish(sb: &Shared, ctx: &Ctx, resp: Response, fault: Option<Fault>, applied: bool) -> Response {
    record(
        sb,
        ctx,
        Outcome {
            status: Some(resp.status().as_u16()),
            fault,
            applied,
        },
    );
    resp
}

fn record(sb: &Shared, ctx: &Ctx, o: Outcome) {
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
        if let Some(c) = t.paths.get_mut(&ctx.key) {
            c.applied += 1;
        }
        if let Some(c) = t.ops.get_mut(&(ctx.kind, ctx.target.clone())) {
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
            request: ctx.key.clone(),
            kind: ctx.kind,
            status: o.status,
            fault: o.fault.map(|f| f.as_str().to_owned()),
            applied: o.applied,
            delay_us: ctx.delay.as_micros() as u64,
        });
    }
}

/// Closes this request's connection without a response.
async fn drop_connection(
    sb: &Shared,
    parts: &axum::http::request::Parts,
    ctx: &Ctx,
    fault: Fault,
    applied: bool,
) -> Response {
    record(
        sb,
        ctx,
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
        Endpoint::Ban => ban_api::ban(sb, route, h),
        Endpoint::Unban => ban_api::unban(sb, route, h),
        Endpoint::ListBans => (ban_api::list(sb, route, h), false),
    }
}

fn get_room(sb: &Shared, route: &Route, h: &HeaderMap) -> Response {
    // Any valid client token may read a room (the sandbox has no membership rule for reads).
    if caller(sb, h).is_none() {
        return invalid_token(sb);
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
        return (invalid_token(sb), false);
    };
    let mut world = lock(&sb.world);
    if !world.rooms.contains_key(route.room.as_str()) {
        return (room_not_found(route.endpoint), false);
    }
    let patch = match state::parse_patch(body) {
        Ok(p) => p,
        Err(m) => return (bad_request(&m), false),
    };
    let freeze_page = patch.is_status_only();
    let Some(room) = world.rooms.get(route.room.as_str()) else {
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
    let state::World { rooms, clients, .. } = &mut *world;
    let Some(room) = rooms.get_mut(route.room.as_str()) else {
        return (room_not_found(route.endpoint), false);
    };
    room.apply(&route.room, patch);
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
        return (invalid_api_key(sb), false);
    }
    let client_id = route.client.as_deref().unwrap_or_default();
    let mut world = lock(&sb.world);
    if !world.clients.contains_key(client_id) {
        return (client_not_found(), false);
    }
    if !world.rooms.contains_key(route.room.as_str()) {
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
