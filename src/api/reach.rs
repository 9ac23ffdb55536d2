//! How far a request got: answered by the server, sent without an answer, or never at the
//! server at all (and why: DNS, a refused connection, no route, a connect timeout, TLS),
//! read from reqwest's error chain; and the DNS resolver whose typed error makes a failed
//! lookup tell itself apart from the other connect failures.
//!
//! Never reached means no byte of the request can have been read by the API: reqwest reports
//! a failure of its connector (name lookup, TCP connect, TLS handshake, proxy tunnel), which
//! all come before the request is written. A timeout after the connection was made, a reset
//! of an open connection or a body cut short are not: the server may have acted on those.

use std::error::Error as StdError;
use std::fmt;
use std::io;

/// How far one request got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reach {
    /// The server answered with an HTTP status (even if the body was then cut short).
    Answered,
    /// Sent, or perhaps sent, and no answer came back: the server may have received it.
    NoAnswer,
    /// The request never reached the server.
    Unreached(Unreached),
    /// Refused on our side before anything was sent (a missing credential, an unsendable id).
    NotSent,
}

/// A request that never reached the server: where it was going and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unreached {
    /// The host (with its port when the URL gives one), e.g. `api.example.com` or
    /// `127.0.0.1:8787`.
    pub host: String,
    pub kind: UnreachedKind,
    /// The innermost cause, as the system or the TLS library words it.
    pub detail: String,
}

/// Why a request never reached the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnreachedKind {
    /// The host name did not resolve.
    Dns,
    /// Nothing listens there: the connection was refused.
    Refused,
    /// No route to the host or its network.
    NoRoute,
    /// The TCP connection was not made within the connect timeout.
    ConnectTimeout,
    /// The connection was made but the TLS handshake failed (certificate, protocol, or not a
    /// TLS server at all).
    Tls,
    /// Another failure while connecting (a proxy tunnel, a local socket error).
    Connect,
}

impl UnreachedKind {
    /// A few words for messages.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            UnreachedKind::Dns => "DNS lookup failed",
            UnreachedKind::Refused => "connection refused",
            UnreachedKind::NoRoute => "no route to the host",
            UnreachedKind::ConnectTimeout => "connect timed out",
            UnreachedKind::Tls => "TLS handshake failed",
            UnreachedKind::Connect => "cannot connect",
        }
    }
}

impl fmt::Display for Unreached {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.host, self.kind.describe())?;
        // A refusal, a missing route or a timeout says it all; the others' causes vary.
        let telling = matches!(
            self.kind,
            UnreachedKind::Dns | UnreachedKind::Tls | UnreachedKind::Connect
        );
        if telling && !self.detail.is_empty() {
            write!(f, " ({})", self.detail)?;
        }
        Ok(())
    }
}

/// A failed name lookup, as [`Resolver`] reports it: typed, so that [`unreached`] finds it in
/// reqwest's error chain.
#[derive(Debug)]
struct DnsError(io::Error);

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl StdError for DnsError {}

/// The system's resolver (`getaddrinfo` on a blocking thread, as reqwest's own), reporting
/// failures as a [`DnsError`].
pub(crate) struct Resolver;

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            match tokio::net::lookup_host((host.as_str(), 0)).await {
                Ok(addrs) => {
                    let addrs: Vec<std::net::SocketAddr> = addrs.collect();
                    Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
                }
                Err(e) => Err(Box::new(DnsError(e)) as Box<dyn StdError + Send + Sync>),
            }
        })
    }
}

/// What a connector's error holds when the TCP connection was made and the TLS handshake then
/// failed (a TCP connect reports none of these): a bad certificate or message, or a peer that
/// closed or reset the connection before the handshake ended.
const TLS_BROKEN: [io::ErrorKind; 5] = [
    io::ErrorKind::InvalidData,
    io::ErrorKind::UnexpectedEof,
    io::ErrorKind::ConnectionReset,
    io::ErrorKind::ConnectionAborted,
    io::ErrorKind::BrokenPipe,
];

/// Every error of `e`'s chain, with the errors an `io::Error` wraps (which its `source` skips:
/// it returns the wrapped error's source, not the wrapped error).
fn chain(e: &reqwest::Error) -> Vec<&(dyn StdError + 'static)> {
    let mut out: Vec<&(dyn StdError + 'static)> = Vec::new();
    let mut next = e.source();
    while let Some(err) = next {
        out.push(err);
        let mut inner = err.downcast_ref::<io::Error>().and_then(|io| io.get_ref());
        while let Some(i) = inner {
            let i: &(dyn StdError + 'static) = i;
            out.push(i);
            inner = i.downcast_ref::<io::Error>().and_then(|io| io.get_ref());
        }
        next = err.source();
    }
    out
}

/// Whether `e` says the request to `host` (over TLS when `tls`) never reached the server, and
/// why. Only failures of the connector count (see the module's notes); the kind is read from
/// the chain's types and `io::ErrorKind`s, never from message texts.
pub(crate) fn unreached(e: &reqwest::Error, host: &str, tls: bool) -> Option<Unreached> {
    if !e.is_connect() {
        return None;
    }
    let chain = chain(e);
    let detail = chain.last().map(|c| c.to_string()).unwrap_or_default();
    let io_kinds: Vec<io::ErrorKind> = chain
        .iter()
        .filter_map(|c| c.downcast_ref::<io::Error>())
        .map(io::Error::kind)
        .collect();
    let has = |k: &[io::ErrorKind]| io_kinds.iter().any(|x| k.contains(x));
    let kind = if chain.iter().any(|c| c.is::<DnsError>()) {
        UnreachedKind::Dns
    } else if e.is_timeout() {
        UnreachedKind::ConnectTimeout
    } else if has(&[io::ErrorKind::ConnectionRefused]) {
        UnreachedKind::Refused
    } else if has(&[
        io::ErrorKind::NetworkUnreachable,
        io::ErrorKind::HostUnreachable,
    ]) {
        UnreachedKind::NoRoute
    } else if tls && has(&TLS_BROKEN) {
        UnreachedKind::Tls
    } else {
        UnreachedKind::Connect
    };
    Some(Unreached {
        host: host.to_string(),
        kind,
        detail,
    })
}
