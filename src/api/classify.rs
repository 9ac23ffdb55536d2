//! What one answer means for one op (docs/api.md, "Status codes"): the response envelope in
//! both documented error shapes, non-JSON bodies, the server's wait hints, and the
//! [`Outcome`] every caller branches on. Pure functions over (status, headers, body), so every
//! row of the table is unit-tested without a network.

use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;

use crate::op::{Action, Credential};

/// Longest wait hint honoured; a larger one is clamped (a buggy or hostile server must not
/// park the job for days; the runner's deadline handling still applies).
const MAX_HINT: Duration = Duration::from_secs(3600);

/// What an attempt means for its op.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// 2xx with `RC == 0`; or an answer that says the desired state already holds
    /// (`already`, its error code): an unmute answered 400 `ROOM_NOT_MUTED`, a ban 409
    /// `USER_ALREADY_BLOCKED`, an unban 404 `BLOCK_NOT_FOUND`.
    Done {
        status: u16,
        already: Option<&'static str>,
    },
    /// Retry later: 408, 429, 500, 502, 503, 504, a non-JSON 5xx, a network failure.
    Transient {
        status: Option<u16>,
        /// The error code of the body when there is one (e.g. `RATE_LIMIT_EXCEEDED`), else a
        /// short tag such as `TIMEOUT` or `CONNECT`.
        code: Option<String>,
        reason: String,
        /// The server's wait hint (`Retry-After`, body `retryAfter`, rate-limit headers).
        retry_after: Option<Duration>,
    },
    /// 401: the credential is wrong or expired; every later call would fail too.
    CredentialsRejected {
        credential: Credential,
        status: u16,
        code: Option<String>,
        message: Option<String>,
    },
    /// Permanent for this op: 403, 404, other 4xx, a 2xx whose RC is not 0.
    Permanent {
        status: Option<u16>,
        rc: Option<i64>,
        code: Option<String>,
        message: Option<String>,
    },
}

impl Outcome {
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            Outcome::Done { status, .. } => Some(*status),
            Outcome::Transient { status, .. } | Outcome::Permanent { status, .. } => *status,
            Outcome::CredentialsRejected { status, .. } => Some(*status),
        }
    }

    pub(crate) fn code(&self) -> Option<&str> {
        match self {
            Outcome::Done { already, .. } => *already,
            Outcome::Transient { code, .. }
            | Outcome::CredentialsRejected { code, .. }
            | Outcome::Permanent { code, .. } => code.as_deref(),
        }
    }

    pub(crate) fn message(&self) -> Option<&str> {
        match self {
            Outcome::Done { .. } => None,
            Outcome::Transient { reason, .. } => Some(reason),
            Outcome::CredentialsRejected { message, .. } | Outcome::Permanent { message, .. } => {
                message.as_deref()
            }
        }
    }

    pub(crate) fn rc(&self) -> Option<i64> {
        match self {
            Outcome::Permanent { rc, .. } => *rc,
            _ => None,
        }
    }

    /// A permanent outcome produced on our side (no answer from the server).
    pub(crate) fn local(code: &str, message: impl Into<String>) -> Outcome {
        Outcome::Permanent {
            status: None,
            rc: None,
            code: Some(code.to_string()),
            message: Some(message.into()),
        }
    }
}

/// The documented body, either shape, as far as it parsed.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Envelope {
    rc: Option<i64>,
    rm: Option<String>,
    code: Option<String>,
    message: Option<String>,
    retry_after: Option<Duration>,
    pub(crate) result: Option<serde_json::Value>,
}

/// Parses a body as a JSON object in either documented shape; `None` when it is not a JSON
/// object at all (an HTML page, an empty body, a cut-off body).
pub(crate) fn parse_envelope(body: &[u8]) -> Option<Envelope> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let obj = v.as_object()?;
    let s = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).map(str::to_string);
    let mut env = Envelope {
        rc: obj.get("RC").and_then(json_int),
        rm: s(obj.get("RM")),
        result: obj.get("result").cloned(),
        ..Default::default()
    };
    match obj.get("error") {
        // envelope: {"RC","RM","error":{"code","message"}}
        Some(serde_json::Value::Object(e)) => {
            env.code = s(e.get("code"));
            env.message = s(e.get("message"));
        }
        // flat: {"error":"CODE","message":"..."}
        Some(serde_json::Value::String(code)) => {
            env.code = Some(code.clone());
            env.message = s(obj.get("message"));
        }
        _ => env.message = s(obj.get("message")),
    }
    if env.message.is_none() {
        env.message = env.rm.clone();
    }
    env.retry_after = obj.get("retryAfter").and_then(json_seconds);
    Some(env)
}

fn json_int(v: &serde_json::Value) -> Option<i64> {
    match v {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A non-negative, finite number of seconds (number or numeric string).
fn json_seconds(v: &serde_json::Value) -> Option<Duration> {
    let secs = match v {
        serde_json::Value::Number(n) => n.as_f64()?,
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    seconds(secs)
}

fn seconds(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs).min(MAX_HINT))
}

/// The server's wait hint, in the order of docs/api.md (Rate limits): `Retry-After` (delta-seconds or
/// HTTP-date), else the body's `retryAfter`, else a well-formed `X-RateLimit-Reset` (seconds,
/// or a Unix epoch in the future) or IETF `RateLimit` reset. Malformed hints are ignored.
fn wait_hint(headers: &HeaderMap, body: Option<&Envelope>, now: SystemTime) -> Option<Duration> {
    if let Some(d) = header_str(headers, "retry-after").and_then(|v| parse_retry_after(v, now)) {
        return Some(d);
    }
    if let Some(d) = body.and_then(|b| b.retry_after) {
        return Some(d);
    }
    if let Some(d) = header_str(headers, "x-ratelimit-reset").and_then(|v| parse_reset(v, now)) {
        return Some(d);
    }
    header_str(headers, "ratelimit").and_then(parse_ratelimit_header)
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// `Retry-After`: delta-seconds (digits only) or an HTTP-date (RFC 9110 §10.2.3).
fn parse_retry_after(v: &str, now: SystemTime) -> Option<Duration> {
    let v = v.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = v.parse().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs.min(MAX_HINT.as_secs())));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_HINT),
    )
}

/// `X-RateLimit-Reset`: seconds from now, or a Unix epoch (values past 10^9) in the future.
fn parse_reset(v: &str, now: SystemTime) -> Option<Duration> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = v.parse().ok()?;
    if n >= 1_000_000_000 {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(n);
        let d = at.duration_since(now).ok()?;
        return (d <= MAX_HINT).then_some(d);
    }
    (n <= MAX_HINT.as_secs()).then(|| Duration::from_secs(n))
}

/// IETF draft `RateLimit`: `limit=100, remaining=0, reset=30` or `"default";r=0;t=30`.
fn parse_ratelimit_header(v: &str) -> Option<Duration> {
    v.split([',', ';'])
        .filter_map(|part| part.trim().split_once('='))
        .find(|(k, _)| matches!(k.trim(), "reset" | "t"))
        .and_then(|(_, val)| {
            let val = val.trim();
            (!val.is_empty() && val.bytes().all(|b| b.is_ascii_digit()))
                .then(|| val.parse::<u64>().ok())
                .flatten()
        })
        .filter(|&n| n <= MAX_HINT.as_secs())
        .map(Duration::from_secs)
}

/// Whether a status is transient by itself (docs/api.md, Status codes).
fn is_transient_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// An answer whose body is not JSON: a proxy page, an empty or cut-off body. Transport-level.
fn classify_not_json(
    credential: Credential,
    status: u16,
    empty: bool,
    hint: impl Fn() -> Option<Duration>,
) -> Outcome {
    if status == 401 {
        return Outcome::CredentialsRejected {
            credential,
            status,
            code: None,
            message: Some("401 Unauthorized (the body was not JSON)".into()),
        };
    }
    let what = if empty {
        "an empty body"
    } else {
        "a body that is not JSON"
    };
    let reason = format!("HTTP {status} with {what}");
    if is_transient_status(status) || (500..600).contains(&status) {
        return Outcome::Transient {
            status: Some(status),
            code: None,
            reason,
            retry_after: hint(),
        };
    }
    Outcome::Permanent {
        status: Some(status),
        rc: None,
        code: Some("NOT_JSON".into()),
        message: Some(reason),
    }
}

/// Classifies one HTTP answer. `action` is `None` for `GET /rooms/{id}`.
pub(crate) fn classify(
    action: Option<Action>,
    credential: Credential,
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Outcome {
    let env = parse_envelope(body);
    let hint = || wait_hint(headers, env.as_ref(), now);
    let Some(env) = env.clone() else {
        return classify_not_json(credential, status, body.is_empty(), hint);
    };
    if (200..300).contains(&status) {
        return match env.rc {
            Some(0) => Outcome::Done {
                status,
                already: None,
            },
            rc => Outcome::Permanent {
                status: Some(status),
                rc,
                code: env
                    .code
                    .or_else(|| Some(if rc.is_some() { "RC_NOT_ZERO" } else { "NO_RC" }.into())),
                message: env.message.or_else(|| {
                    Some(match rc {
                        Some(rc) => format!("HTTP {status} but RC {rc}"),
                        None => format!("HTTP {status} without RC"),
                    })
                }),
            },
        };
    }
    if let Some((s, code)) = action.and_then(Action::already_answer)
        && status == s
        && env.code.as_deref() == Some(code)
    {
        return Outcome::Done {
            status,
            already: Some(code),
        };
    }
    if status == 401 {
        return Outcome::CredentialsRejected {
            credential,
            status,
            code: env.code,
            message: env.message,
        };
    }
    if is_transient_status(status) {
        let reason = match &env.message {
            Some(m) => format!("HTTP {status}: {m}"),
            None => format!("HTTP {status}"),
        };
        return Outcome::Transient {
            status: Some(status),
            code: env.code.clone(),
            reason,
            retry_after: hint(),
        };
    }
    let message = match (action, status) {
        (Some(Action::Unban), 403) => Some(with_hint(env.message, UNBAN_OWNER_ONLY)),
        _ => env.message,
    };
    Outcome::Permanent {
        status: Some(status),
        rc: env.rc,
        code: env.code,
        message,
    }
}

/// What a 403 on an unban adds to the server's message: the unban page lets only a room's
/// owner unban, while the ban page lets platform admins ban too, so a credential that could
/// ban may still be refused here.
pub(crate) const UNBAN_OWNER_ONLY: &str = "the vendor documents unban as room-owner only: \
     lift these bans with the room owner's token (IMKIT_TOKEN), or on a deployment that lets \
     the platform admin (the API key) unban";

/// `message` followed by `hint` in parentheses (the hint alone when there is no message).
fn with_hint(message: Option<String>, hint: &str) -> String {
    match message {
        Some(m) => format!("{m} ({hint})"),
        None => hint.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderName, HeaderValue};

    const ROOM: Credential = Credential::ClientToken;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000)
    }

    fn c(action: Action, status: u16, headers: &[(&str, &str)], body: &str) -> Outcome {
        classify(
            Some(action),
            crate::op::Auth::default().for_action(action),
            status,
            &h(headers),
            body.as_bytes(),
            now(),
        )
    }

    const ENVELOPE_404: &str = r#"{"RC":404,"RM":"Room not found","error":{"code":"ROOM_NOT_FOUND","message":"Room with specified ID does not exist"}}"#;

    #[test]
    fn success_needs_rc_zero() {
        let ok = r#"{"RC":0,"RM":"OK","result":{"_id":"r","status":0}}"#;
        assert_eq!(
            c(Action::Freeze, 200, &[], ok),
            Outcome::Done {
                status: 200,
                already: None
            }
        );
        assert_eq!(
            c(Action::Mute, 204, &[], r#"{"RC":0}"#),
            Outcome::Done {
                status: 204,
                already: None
            }
        );
        match c(Action::Freeze, 200, &[], r#"{"RC":7,"RM":"Something odd"}"#) {
            Outcome::Permanent {
                status: Some(200),
                rc: Some(7),
                code,
                message,
            } => {
                assert_eq!(code.as_deref(), Some("RC_NOT_ZERO"));
                assert_eq!(message.as_deref(), Some("Something odd"));
            }
            o => panic!("{o:?}"),
        }
        match c(Action::Freeze, 200, &[], r#"{"result":{}}"#) {
            Outcome::Permanent { rc: None, code, .. } => assert_eq!(code.as_deref(), Some("NO_RC")),
            o => panic!("{o:?}"),
        }
        // A 200 with an HTML body is not a success either, and not worth retrying.
        assert!(matches!(
            c(Action::Freeze, 200, &[], "<html>ok</html>"),
            Outcome::Permanent {
                status: Some(200),
                ..
            }
        ));
    }

    #[test]
    fn unmute_not_muted_is_done_only_for_unmute() {
        let body = r#"{"RC":400,"RM":"Bad Request","error":{"code":"ROOM_NOT_MUTED","message":"Room is not muted"}}"#;
        assert_eq!(
            c(Action::Unmute, 400, &[], body),
            Outcome::Done {
                status: 400,
                already: Some("ROOM_NOT_MUTED")
            }
        );
        let flat = r#"{"error":"ROOM_NOT_MUTED","message":"Room is not muted"}"#;
        assert!(matches!(
            c(Action::Unmute, 400, &[], flat),
            Outcome::Done {
                already: Some("ROOM_NOT_MUTED"),
                ..
            }
        ));
        assert!(matches!(
            c(Action::Mute, 400, &[], body),
            Outcome::Permanent {
                status: Some(400),
                ..
            }
        ));
        assert!(matches!(
            c(Action::Unmute, 400, &[], r#"{"error":"BAD_REQUEST"}"#),
            Outcome::Permanent { .. }
        ));
    }

    /// The ban pages' answers: 409 on a ban and 404 `BLOCK_NOT_FOUND` on an unban say the
    /// desired state holds; 404 `ROOM_OR_USER_NOT_FOUND` and 403 are permanent, the unban's
    /// 403 with the owner-only hint; each code only on its own action and status.
    #[test]
    fn ban_answers_follow_the_pages() {
        let conflict = r#"{"RC":409,"RM":"User already blocked","error":{"code":"USER_ALREADY_BLOCKED","message":"This user is already blocked in this room"}}"#;
        let no_block = r#"{"RC":404,"RM":"Block relationship not found","error":{"code":"BLOCK_NOT_FOUND","message":"No block relationship exists for this user in the specified room"}}"#;
        let missing = r#"{"RC":404,"RM":"Resource not found","error":{"code":"ROOM_OR_USER_NOT_FOUND","message":"The specified room or user does not exist"}}"#;
        let denied = r#"{"RC":403,"RM":"Access denied","error":{"code":"INSUFFICIENT_PERMISSIONS","message":"Only room owner can unblock users in group chat rooms"}}"#;
        let done = |a, s, b| match c(a, s, &[], b) {
            Outcome::Done { status, already } => Some((status, already)),
            _ => None,
        };
        assert_eq!(
            done(Action::Ban, 409, conflict),
            Some((409, Some("USER_ALREADY_BLOCKED")))
        );
        assert_eq!(
            done(Action::Unban, 404, no_block),
            Some((404, Some("BLOCK_NOT_FOUND")))
        );
        let ok = r#"{"RC":0,"RM":"OK","result":{"room":"r"}}"#;
        assert_eq!(done(Action::Ban, 200, ok), Some((200, None)));
        // Each code means "already" only for its own action and status.
        assert_eq!(done(Action::Unban, 409, conflict), None);
        assert_eq!(done(Action::Ban, 404, no_block), None);
        assert_eq!(done(Action::Unmute, 404, no_block), None);
        assert_eq!(done(Action::Ban, 400, conflict), None);
        for a in [Action::Ban, Action::Unban] {
            match c(a, 404, &[], missing) {
                Outcome::Permanent {
                    status: Some(404),
                    code,
                    ..
                } => assert_eq!(code.as_deref(), Some("ROOM_OR_USER_NOT_FOUND")),
                o => panic!("{a}: {o:?}"),
            }
        }
        match c(Action::Unban, 403, &[], denied) {
            Outcome::Permanent {
                status: Some(403),
                message: Some(m),
                ..
            } => {
                assert!(m.starts_with("Only room owner can unblock users"), "{m}");
                assert!(
                    m.contains("the vendor documents unban as room-owner only"),
                    "{m}"
                );
            }
            o => panic!("{o:?}"),
        }
        // A ban refused 403 keeps the server's message as it is.
        match c(Action::Ban, 403, &[], denied) {
            Outcome::Permanent {
                message: Some(m), ..
            } => assert!(!m.contains("vendor"), "{m}"),
            o => panic!("{o:?}"),
        }
        let o = c(Action::Ban, 409, &[], conflict);
        assert_eq!(
            (o.status(), o.code(), o.message()),
            (Some(409), Some("USER_ALREADY_BLOCKED"), None)
        );
    }

    #[test]
    fn unauthorized_names_the_credential_in_both_shapes() {
        let env = r#"{"RC":401,"RM":"Unauthorized","error":{"code":"INVALID_TOKEN","message":"Invalid or expired token"}}"#;
        assert_eq!(
            c(Action::Freeze, 401, &[], env),
            Outcome::CredentialsRejected {
                credential: ROOM,
                status: 401,
                code: Some("INVALID_TOKEN".into()),
                message: Some("Invalid or expired token".into()),
            }
        );
        let flat =
            r#"{"error":"INVALID_API_KEY","message":"The provided API key is invalid or expired"}"#;
        match c(Action::Mute, 401, &[], flat) {
            Outcome::CredentialsRejected {
                credential, code, ..
            } => {
                assert_eq!(credential, Credential::ApiKey);
                assert_eq!(code.as_deref(), Some("INVALID_API_KEY"));
            }
            o => panic!("{o:?}"),
        }
        assert!(matches!(
            c(Action::Mute, 401, &[], "<html>nope</html>"),
            Outcome::CredentialsRejected { .. }
        ));
    }

    #[test]
    fn forbidden_not_found_and_other_4xx_are_permanent() {
        let f403 = r#"{"RC":403,"RM":"Permission denied","error":{"code":"INSUFFICIENT_PERMISSIONS","message":"Only room owner, manager, or platform admin can freeze room"}}"#;
        assert_eq!(
            c(Action::Freeze, 403, &[], f403),
            Outcome::Permanent {
                status: Some(403),
                rc: Some(403),
                code: Some("INSUFFICIENT_PERMISSIONS".into()),
                message: Some("Only room owner, manager, or platform admin can freeze room".into()),
            }
        );
        match c(Action::Update, 404, &[], ENVELOPE_404) {
            Outcome::Permanent { rc, code, .. } => {
                assert_eq!(rc, Some(404));
                assert_eq!(code.as_deref(), Some("ROOM_NOT_FOUND"));
            }
            o => panic!("{o:?}"),
        }
        for s in [400, 405, 409, 410, 413, 422] {
            assert!(
                matches!(c(Action::Freeze, s, &[], r#"{"error":"X","message":"m"}"#), Outcome::Permanent { status: Some(st), .. } if st == s),
                "{s}"
            );
        }
        // A non-JSON 404 from a proxy is permanent too, with a message saying so.
        match c(Action::Freeze, 404, &[], "<html>Not Found</html>") {
            Outcome::Permanent { code, message, .. } => {
                assert_eq!(code.as_deref(), Some("NOT_JSON"));
                assert!(message.unwrap().contains("404"));
            }
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn transient_statuses_and_non_json_5xx() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(
                matches!(c(Action::Freeze, s, &[], r#"{"RC":500,"RM":"x"}"#), Outcome::Transient { status: Some(st), .. } if st == s),
                "{s}"
            );
            assert!(
                matches!(
                    c(Action::Freeze, s, &[], "<html>Bad Gateway</html>"),
                    Outcome::Transient { .. }
                ),
                "{s} html"
            );
            assert!(
                matches!(c(Action::Freeze, s, &[], ""), Outcome::Transient { .. }),
                "{s} empty"
            );
        }
        // Other 5xx: transient when the body is a proxy page, permanent when the API says so.
        assert!(matches!(
            c(Action::Freeze, 507, &[], "<html/>"),
            Outcome::Transient { .. }
        ));
        assert!(matches!(
            c(Action::Freeze, 501, &[], r#"{"error":"NOT_IMPLEMENTED"}"#),
            Outcome::Permanent { .. }
        ));
        // Empty 4xx (other than 401/408/429) is permanent.
        assert!(matches!(
            c(Action::Freeze, 403, &[], ""),
            Outcome::Permanent { .. }
        ));
    }

    #[test]
    fn rate_limit_hints_in_precedence_order() {
        let flat =
            r#"{"error":"RATE_LIMIT_EXCEEDED","message":"Too many requests","retryAfter":60}"#;
        let hint = |headers: &[(&str, &str)], body: &str| match c(Action::Mute, 429, headers, body)
        {
            Outcome::Transient {
                retry_after, code, ..
            } => {
                if body.contains("RATE_LIMIT") {
                    assert_eq!(code.as_deref(), Some("RATE_LIMIT_EXCEEDED"));
                }
                retry_after
            }
            o => panic!("{o:?}"),
        };
        // Body only.
        assert_eq!(hint(&[], flat), Some(Duration::from_secs(60)));
        // Header seconds win over the body.
        assert_eq!(
            hint(&[("retry-after", "7")], flat),
            Some(Duration::from_secs(7))
        );
        // HTTP-date, 30 s in the future.
        let date = httpdate::fmt_http_date(now() + Duration::from_secs(30));
        assert_eq!(
            hint(&[("Retry-After", &date)], flat),
            Some(Duration::from_secs(30))
        );
        // HTTP-date in the past: no wait.
        let past = httpdate::fmt_http_date(now() - Duration::from_secs(30));
        assert_eq!(hint(&[("Retry-After", &past)], ""), Some(Duration::ZERO));
        // Malformed header: ignored, the body wins.
        assert_eq!(
            hint(&[("Retry-After", "soon")], flat),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            hint(&[("Retry-After", "-5")], flat),
            Some(Duration::from_secs(60))
        );
        // Envelope-shaped 429 with a fractional retryAfter.
        let env = r#"{"RC":429,"RM":"Too Many Requests","error":{"code":"RATE_LIMIT_EXCEEDED","message":"slow down"},"retryAfter":1.5}"#;
        assert_eq!(hint(&[], env), Some(Duration::from_millis(1500)));
        // No hint at all.
        assert_eq!(hint(&[], r#"{"error":"RATE_LIMIT_EXCEEDED"}"#), None);
        // Malformed body hint ignored.
        assert_eq!(
            hint(&[], r#"{"error":"RATE_LIMIT_EXCEEDED","retryAfter":-3}"#),
            None
        );
        assert_eq!(
            hint(&[], r#"{"error":"RATE_LIMIT_EXCEEDED","retryAfter":"x"}"#),
            None
        );
        // Rate-limit headers as a last resort, only when well formed.
        assert_eq!(
            hint(&[("x-ratelimit-reset", "12")], ""),
            Some(Duration::from_secs(12))
        );
        let epoch = (1_790_000_000u64 + 20).to_string();
        assert_eq!(
            hint(&[("x-ratelimit-reset", &epoch)], ""),
            Some(Duration::from_secs(20))
        );
        assert_eq!(hint(&[("x-ratelimit-reset", "12.5x")], ""), None);
        assert_eq!(hint(&[("x-ratelimit-reset", "1000000001")], ""), None);
        assert_eq!(
            hint(&[("ratelimit", "limit=100, remaining=0, reset=9")], ""),
            Some(Duration::from_secs(9))
        );
        assert_eq!(
            hint(&[("ratelimit", "\"default\";r=0;t=4")], ""),
            Some(Duration::from_secs(4))
        );
        assert_eq!(hint(&[("ratelimit", "reset=soon")], ""), None);
        // Absurd hints are clamped.
        assert_eq!(
            hint(&[("retry-after", "99999999999999999999")], ""),
            Some(MAX_HINT)
        );
    }

    #[test]
    fn envelope_parses_both_shapes() {
        let e = parse_envelope(ENVELOPE_404.as_bytes()).unwrap();
        assert_eq!(e.rc, Some(404));
        assert_eq!(e.rm.as_deref(), Some("Room not found"));
        assert_eq!(e.code.as_deref(), Some("ROOM_NOT_FOUND"));
        let f = parse_envelope(br#"{"error":"INVALID_API_KEY","message":"bad"}"#).unwrap();
        assert_eq!(f.rc, None);
        assert_eq!(f.code.as_deref(), Some("INVALID_API_KEY"));
        assert_eq!(f.message.as_deref(), Some("bad"));
        assert!(parse_envelope(b"").is_none());
        assert!(parse_envelope(b"[1,2]").is_none());
        assert!(parse_envelope(br#"{"RC":0,"#).is_none());
    }
}
