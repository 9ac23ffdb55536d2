//! The HTTP client: one shared `reqwest::Client` (rustls, pool sized to the concurrency,
//! connect and request timeouts, no retry layer: retries belong to the runner alone), the
//! credential headers, bodies read under a size cap, and the mapping of every answer or
//! network failure to an [`Attempt`], which also says how far the request got ([`Reach`]).

use std::time::{Duration, Instant, SystemTime};

use reqwest::Url;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::api::classify::{Outcome, classify, parse_envelope};
use crate::api::credentials::Credentials;
use crate::api::reach::{self, Reach};
use crate::api::request::{Method, Request};
use crate::op::{Auth, Credential, Op};

/// Largest body read; the rest is dropped. An error answer is a few hundred bytes, but a
/// room object lists its members, so a success can be large: see [`sniff_rc`].
const BODY_CAP: usize = 1024 * 1024;

/// The result of one request.
#[derive(Clone, Debug, PartialEq)]
pub struct Attempt {
    pub outcome: Outcome,
    /// From sending the request to the end of the body.
    pub latency: Duration,
    /// Whether the server answered, or might have seen the request, or never did.
    pub reach: Reach,
}

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Whole-request timeout (connect, send, answer, body).
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Idle connections kept per host: the job's concurrency.
    pub pool_size: usize,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            pool_size: 8,
        }
    }
}

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid base URL {url:?}: {reason}")]
    BaseUrl { url: String, reason: String },
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

/// Whether `host`, as `Url::host_str` gives it (IPv6 in brackets, IPv4 normalised), is a
/// loopback address: 127.0.0.0/8, `::1` or `localhost`.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6
            .parse::<std::net::Ipv6Addr>()
            .is_ok_and(|ip| ip.is_loopback());
    }
    if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
        return ip.is_loopback();
    }
    host.trim_end_matches('.').eq_ignore_ascii_case("localhost")
}

/// The connect timeout, kept under the whole request's: a connect that does not finish must
/// end as a connect failure (the request never reached the server), not as the request's
/// timeout (after which the server may have seen it).
fn connect_timeout(options: &ClientOptions) -> Duration {
    options.connect_timeout.min(options.timeout.mul_f64(0.9))
}

/// The IMKIT API client. Cheap to share behind an `Arc`.
pub struct ApiClient {
    http: reqwest::Client,
    base: Url,
    /// The base URL's host, with its port when the URL gives one (for messages).
    host: String,
    credentials: Credentials,
    /// Which credential [`ApiClient::send`] and the reads use for each kind of op.
    auth: Auth,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    pub fn new(
        base_url: &Url,
        credentials: Credentials,
        options: ClientOptions,
    ) -> Result<ApiClient, ClientError> {
        if base_url.cannot_be_a_base() || base_url.host().is_none() {
            return Err(ClientError::BaseUrl {
                url: base_url.to_string(),
                reason: "expected an http(s) URL with a host".into(),
            });
        }
        let mut builder = reqwest::Client::builder();
        if base_url.host_str().is_some_and(is_loopback_host) {
            // A loopback API (the sandbox, a tunnel) is reached directly: through an
            // HTTP_PROXY from the environment, plain-http credentials would leave the machine
            // in clear text, and the in-process sandbox would be unreachable.
            builder = builder.no_proxy();
        }
        let http = builder
            .use_rustls_tls()
            // The system's resolver, with failures typed so they are told apart (see reach).
            .dns_resolver(std::sync::Arc::new(reach::Resolver))
            // The runner's retries are the only layer (docs/behaviour.md §4): none in the client.
            .retry(reqwest::retry::never())
            .timeout(options.timeout)
            .connect_timeout(connect_timeout(&options))
            .pool_max_idle_per_host(options.pool_size.max(1))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("imkit-batch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Build(e.to_string()))?;
        // Normalise the base so that joining "/rooms/x" keeps any path prefix.
        let mut base = base_url.clone();
        let trimmed = base.path().trim_end_matches('/').to_string();
        base.set_path(&trimmed);
        base.set_query(None);
        base.set_fragment(None);
        let host = match (base.host_str(), base.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => String::new(),
        };
        Ok(ApiClient {
            http,
            base,
            host,
            credentials,
            auth: Auth::default(),
        })
    }

    /// The client sending room ops and bans with `auth`'s credential (by default the client
    /// key and token).
    pub fn with_auth(mut self, auth: Auth) -> ApiClient {
        self.auth = auth;
        self
    }

    /// Sends the one request that carries `op`, with the credential the client's [`Auth`]
    /// gives it, and classifies the answer.
    pub async fn send(&self, op: &Op) -> Attempt {
        self.send_as(op, self.auth.for_op(op)).await
    }

    /// [`ApiClient::send`] with `credential`, as the scheduler decided.
    pub(crate) async fn send_as(&self, op: &Op, credential: Credential) -> Attempt {
        let req = Request::for_op(op);
        self.execute(&req, Some(op.action), credential).await.0
    }

    /// `GET /rooms/{room}` for `--snapshot`: the room object (`result`, or the whole body when
    /// it has none), exactly as returned; fields the API left out stay absent.
    pub async fn get_room(&self, room: &str) -> Result<serde_json::Value, Attempt> {
        self.read(&Request::get_room(room), self.auth.rooms).await
    }

    /// A read before a change (`GET /rooms/{room}`, `GET /blockStatus/room/{room}`) with
    /// `credential`: the answer's `result` (or the whole body when it has none).
    pub(crate) async fn read(
        &self,
        req: &Request,
        credential: Credential,
    ) -> Result<serde_json::Value, Attempt> {
        let (attempt, body) = self.execute(req, None, credential).await;
        match (&attempt.outcome, body) {
            (Outcome::Done { .. }, Some(body)) => match parse_envelope(&body) {
                Some(env) => Ok(env.result.unwrap_or_else(|| {
                    serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null)
                })),
                None => Err(attempt),
            },
            _ => Err(attempt),
        }
    }

    /// The URL for a request path, refusing any id that URL normalisation would turn into
    /// another path (`.`/`..` segments: WHATWG URL parsing resolves even `%2E%2E`).
    fn url_for(&self, path: &str) -> Result<Url, Outcome> {
        let full = format!("{}{}", self.base.as_str().trim_end_matches('/'), path);
        let url = Url::parse(&full).map_err(|e| Outcome::local("BAD_URL", e.to_string()))?;
        let expected = format!("{}{}", self.base.path().trim_end_matches('/'), path);
        if url.path() != expected {
            return Err(Outcome::local(
                "UNSENDABLE_ID",
                "an id made only of dots cannot be sent as a path segment (HTTP clients resolve it as a relative path); the op was not sent",
            ));
        }
        Ok(url)
    }

    fn auth_headers(&self, credential: Credential) -> Result<HeaderMap, Outcome> {
        let missing = || {
            Outcome::local(
                "MISSING_CREDENTIAL",
                format!("the {} is not set", credential.describe()),
            )
        };
        let value = |s: &crate::api::credentials::Secret| {
            let mut v = HeaderValue::from_str(s.expose()).map_err(|_| {
                Outcome::local(
                    "BAD_CREDENTIAL",
                    format!("the {} cannot be sent as a header", credential.describe()),
                )
            })?;
            v.set_sensitive(true);
            Ok::<_, Outcome>(v)
        };
        let mut h = HeaderMap::new();
        match credential {
            Credential::ClientToken => {
                let key = self.credentials.client_key.as_ref().ok_or_else(missing)?;
                let token = self.credentials.token.as_ref().ok_or_else(missing)?;
                h.insert(HeaderName::from_static("im-client-key"), value(key)?);
                h.insert(HeaderName::from_static("im-authorization"), value(token)?);
            }
            Credential::ApiKey => {
                let key = self.credentials.api_key.as_ref().ok_or_else(missing)?;
                h.insert(HeaderName::from_static("im-api-key"), value(key)?);
            }
        }
        Ok(h)
    }

    /// Sends `req`; returns the attempt and, on a complete answer, the body.
    async fn execute(
        &self,
        req: &Request,
        action: Option<crate::op::Action>,
        credential: Credential,
    ) -> (Attempt, Option<Vec<u8>>) {
        let started = Instant::now();
        let local = |outcome: Outcome| {
            (
                Attempt {
                    outcome,
                    latency: Duration::ZERO,
                    reach: Reach::NotSent,
                },
                None,
            )
        };
        let url = match self.url_for(&req.path) {
            Ok(u) => u,
            Err(o) => return local(o),
        };
        let headers = match self.auth_headers(credential) {
            Ok(h) => h,
            Err(o) => return local(o),
        };
        let method = match req.method {
            Method::Get => reqwest::Method::GET,
            Method::Put => reqwest::Method::PUT,
            Method::Post => reqwest::Method::POST,
            Method::Delete => reqwest::Method::DELETE,
        };
        let mut builder = self.http.request(method, url).headers(headers);
        if let Some(body) = &req.body {
            builder = builder.json(body);
        }
        let result = Answer::read(builder).await;
        let latency = started.elapsed();
        match result {
            Ok(answer) => {
                let outcome = redact(answer.outcome(action, credential), &self.credentials);
                let attempt = Attempt {
                    outcome,
                    latency,
                    reach: Reach::Answered,
                };
                (attempt, Some(answer.body))
            }
            Err(ReadError { error, answered }) => {
                let tls = self.base.scheme() == "https";
                let reach = match reach::unreached(&error, &self.host, tls) {
                    Some(u) => Reach::Unreached(u),
                    None if answered => Reach::Answered,
                    None => Reach::NoAnswer,
                };
                let outcome = redact(network_outcome(&error, &reach), &self.credentials);
                let attempt = Attempt {
                    outcome,
                    latency,
                    reach,
                };
                (attempt, None)
            }
        }
    }
}

/// An answer read to its end, or as far as [`BODY_CAP`].
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
    /// The body went on past [`BODY_CAP`].
    truncated: bool,
}

/// A request that failed before its answer was read to the end.
struct ReadError {
    error: reqwest::Error,
    /// The answer's status line had arrived (the body was then cut short).
    answered: bool,
}

impl Answer {
    /// Sends the request and reads the answer, keeping at most [`BODY_CAP`] bytes of body.
    async fn read(builder: reqwest::RequestBuilder) -> Result<Answer, ReadError> {
        let mut resp = builder.send().await.map_err(|error| ReadError {
            error,
            answered: false,
        })?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let mut body = Vec::new();
        let mut truncated = false;
        let cut = |error| ReadError {
            error,
            answered: true,
        };
        while let Some(chunk) = resp.chunk().await.map_err(cut)? {
            let room = BODY_CAP.saturating_sub(body.len());
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if chunk.len() > room {
                truncated = true;
                break;
            }
        }
        Ok(Answer {
            status,
            headers,
            body,
            truncated,
        })
    }

    /// What the answer means for `action` (`None` for `GET /rooms/{id}`) on `credential`.
    fn outcome(&self, action: Option<crate::op::Action>, credential: Credential) -> Outcome {
        let status = self.status;
        if self.truncated && (200..300).contains(&status) {
            // Too large to parse whole: the envelope's RC comes first.
            match sniff_rc(&self.body) {
                Some(0) => Outcome::Done {
                    status,
                    already: None,
                },
                rc => Outcome::Permanent {
                    status: Some(status),
                    rc,
                    code: Some("BODY_TOO_LARGE".into()),
                    message: Some(format!(
                        "HTTP {status} with a body over {BODY_CAP} bytes and no RC 0 at its start"
                    )),
                },
            }
        } else {
            classify(
                action,
                credential,
                status,
                &self.headers,
                &self.body,
                SystemTime::now(),
            )
        }
    }
}

/// Removes any credential value from the texts of an outcome: a server (or proxy) that
/// echoes a header back must not smuggle a secret into the journal or the logs.
fn redact(outcome: Outcome, credentials: &Credentials) -> Outcome {
    let clean = |s: Option<String>| -> Option<String> {
        s.map(|mut s| {
            for v in credentials.values() {
                if !v.is_empty() && s.contains(v) {
                    s = s.replace(v, "[redacted]");
                }
            }
            s
        })
    };
    match outcome {
        Outcome::Done { .. } => outcome,
        Outcome::Transient {
            status,
            code,
            reason,
            retry_after,
        } => Outcome::Transient {
            status,
            code: clean(code),
            reason: clean(Some(reason)).unwrap_or_default(),
            retry_after,
        },
        Outcome::CredentialsRejected {
            credential,
            status,
            code,
            message,
        } => Outcome::CredentialsRejected {
            credential,
            status,
            code: clean(code),
            message: clean(message),
        },
        Outcome::Permanent {
            status,
            rc,
            code,
            message,
        } => Outcome::Permanent {
            status,
            rc,
            code: clean(code),
            message: clean(message),
        },
    }
}

/// The top-level `"RC"` of a JSON object, read from the start of a body too large to parse
/// whole: only when it is the object's first key, or follows `"RM"` (the documented order).
fn sniff_rc(body: &[u8]) -> Option<i64> {
    let head = &body[..body.len().min(256)];
    let text = match std::str::from_utf8(head) {
        Ok(t) => t,
        Err(e) => std::str::from_utf8(&head[..e.valid_up_to()]).ok()?,
    };
    let rest = text.trim_start().strip_prefix('{')?.trim_start();
    let rest = match rest.strip_prefix("\"RM\"") {
        // {"RM":"...","RC":0: skip a plain string value without escapes.
        Some(r) => {
            let r = r
                .trim_start()
                .strip_prefix(':')?
                .trim_start()
                .strip_prefix('"')?;
            let end = r.find('"')?;
            if r[..end].contains('\\') {
                return None;
            }
            r[end + 1..].trim_start().strip_prefix(',')?.trim_start()
        }
        None => rest,
    };
    let rest = rest
        .strip_prefix("\"RC\"")?
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '-'))
        .unwrap_or(rest.len());
    let tail = rest[end..].trim_start();
    if !(tail.starts_with(',') || tail.starts_with('}')) {
        return None;
    }
    rest[..end].parse().ok()
}

/// A network failure is transient: timeouts, refused or reset connections, cut-off bodies.
/// One that never reached the server says so, and why, in its reason.
fn network_outcome(e: &reqwest::Error, reach: &Reach) -> Outcome {
    if let Reach::Unreached(u) = reach {
        let code = if e.is_timeout() { "TIMEOUT" } else { "CONNECT" };
        return Outcome::Transient {
            status: None,
            code: Some(code.to_string()),
            reason: format!("cannot reach {u}"),
            retry_after: None,
        };
    }
    let (code, what) = if e.is_timeout() {
        ("TIMEOUT", "request timed out")
    } else if e.is_connect() {
        ("CONNECT", "cannot connect")
    } else if e.is_body() || e.is_decode() {
        ("BODY_CUT_SHORT", "the answer's body was cut short")
    } else {
        ("NETWORK", "connection failed")
    };
    // The error chain names the URL (ids only) and the cause; never a header.
    let mut detail = String::new();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = src {
        detail = s.to_string();
        src = s.source();
    }
    let reason = if detail.is_empty() {
        what.to_string()
    } else {
        format!("{what}: {detail}")
    };
    Outcome::Transient {
        status: e.status().map(|s| s.as_u16()),
        code: Some(code.to_string()),
        reason,
        retry_after: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base: &str) -> ApiClient {
        ApiClient::new(
            &Url::parse(base).unwrap(),
            Credentials::default(),
            ClientOptions::default(),
        )
        .unwrap()
    }

    #[test]
    fn urls_keep_the_base_prefix_and_refuse_dot_segments() {
        let c = client("https://api.example.com/v1/");
        assert_eq!(
            c.url_for("/rooms/a%2Fb").unwrap().as_str(),
            "https://api.example.com/v1/rooms/a%2Fb"
        );
        assert_eq!(
            c.url_for("/rooms/a%3Fb%23c%25").unwrap().as_str(),
            "https://api.example.com/v1/rooms/a%3Fb%23c%25"
        );
        for id in ["..", ".", "..."] {
            let path = Request::get_room(id).path;
            let r = c.url_for(&path);
            if id == "..." {
                assert!(r.is_ok(), "three dots are an ordinary segment");
            } else {
                assert!(
                    matches!(r, Err(Outcome::Permanent { ref code, .. }) if code.as_deref() == Some("UNSENDABLE_ID")),
                    "{id}: {r:?}"
                );
            }
        }
    }

    #[test]
    fn rc_is_sniffed_from_the_start_of_a_large_body() {
        assert_eq!(
            sniff_rc(br#"{"RC":0,"RM":"OK","result":{"members":[{"#),
            Some(0)
        );
        assert_eq!(
            sniff_rc(br#" { "RM" : "OK" , "RC" : 0 , "result""#),
            Some(0)
        );
        assert_eq!(sniff_rc(br#"{"RC":12,"#), Some(12));
        assert_eq!(sniff_rc(br#"{"result":{"RC":0,"#), None);
        assert_eq!(sniff_rc(br#"{"RC":0x"#), None);
        assert_eq!(sniff_rc(b"<html>"), None);
    }

    #[tokio::test]
    async fn missing_credentials_fail_locally() {
        let c = client("http://127.0.0.1:9");
        let a = c.send(&Op::mute("u", "r")).await;
        assert!(
            matches!(a.outcome, Outcome::Permanent { ref code, .. } if code.as_deref() == Some("MISSING_CREDENTIAL"))
        );
    }
}
