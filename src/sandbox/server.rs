//! The server: shared state, the accept loop and the in-process handle.
//!
//! We own the accept loop (hyper's HTTP/1 connection driver over the axum router) so that a
//! handler can make its connection be dropped without any response bytes: every connection
//! gets a [`ConnDropper`] token in its requests' extensions, and the connection future is
//! raced against it. Shutdown is graceful (in-flight answers finish, idle connections close)
//! with a short bound, after which remaining connections are cut.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::config::{SandboxConfig, SandboxCredentials};
use super::control::{LogEntry, OpCounts, OpKind, Stats};
use super::faults::Fault;
use super::handlers::Endpoint;
use super::state::World;
use crate::op::Op;

/// Per-credential limiter of `--rate-limit`.
pub(crate) type Limiter = super::limit::FixedWindow;

/// Inserted into every request's extensions: cancelling it closes the connection at once,
/// without a response.
#[derive(Clone)]
pub(crate) struct ConnDropper(pub CancellationToken);

/// Counters that every request touches, lock-free.
#[derive(Default)]
pub(crate) struct Counters {
    pub requests: [AtomicU64; Endpoint::COUNT],
    pub faults: [AtomicU64; Fault::ALL.len()],
    pub rate_limited: AtomicU64,
    pub delayed: AtomicU64,
    pub unknown_routes: AtomicU64,
}

impl Counters {
    fn reset(&self) {
        let all = self.requests.iter().chain(&self.faults).chain([
            &self.rate_limited,
            &self.delayed,
            &self.unknown_routes,
        ]);
        for c in all {
            c.store(0, Ordering::Relaxed);
        }
    }
}

/// Per canonical request (`METHOD /path`): times seen (drives fault replay) and applied.
#[derive(Clone, Copy, Default)]
pub(crate) struct PathCounts {
    pub seen: u64,
    pub applied: u64,
}

/// Bookkeeping behind one short-lived lock: bounded by the number of distinct requests (at
/// most one entry per room or client-room pair a job touches) and the log ring's capacity,
/// never by the number of requests.
#[derive(Default)]
pub(crate) struct Tracking {
    pub paths: HashMap<String, PathCounts>,
    /// Received and applied per (kind, canonical path).
    pub ops: HashMap<(OpKind, String), OpCounts>,
    pub statuses: BTreeMap<u16, u64>,
    pub dropped: u64,
    pub applied_total: u64,
    pub log: VecDeque<LogEntry>,
    pub seq: u64,
}

/// Everything the handlers share.
pub(crate) struct Shared {
    pub config: SandboxConfig,
    initial: World,
    pub world: Mutex<World>,
    pub track: Mutex<Tracking>,
    pub counters: Counters,
    limiter: Mutex<Option<Arc<Limiter>>>,
    pub started: Instant,
    /// Serves `latency` + jitter precisely (started only when a latency is set).
    timer: Option<super::timer::Timer>,
}

/// Locks a mutex, recovering the data of a poisoned one (a panicking handler must not take
/// the whole sandbox down; every critical section leaves the state consistent).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Waits `delay` (the configured latency and its jitter), to well under a millisecond.
    pub async fn delay(&self, delay: Duration) {
        match &self.timer {
            Some(t) => t.sleep(delay).await,
            None => tokio::time::sleep(delay).await,
        }
    }

    pub fn new(config: SandboxConfig) -> anyhow::Result<Arc<Shared>> {
        config
            .check()
            .map_err(|e| anyhow::anyhow!("invalid sandbox settings: {e}"))?;
        let initial = World::from_config(&config);
        let shared =
            Shared {
                world: Mutex::new(initial.clone()),
                initial,
                track: Mutex::new(Tracking::default()),
                counters: Counters::default(),
                limiter: Mutex::new(new_limiter(&config)),
                started: Instant::now(),
                timer: if config.latency.is_zero() && config.latency_jitter.is_zero() {
                    None
                } else {
                    Some(super::timer::Timer::start().map_err(|e| {
                        anyhow::anyhow!("cannot start the sandbox's timer thread: {e}")
                    })?)
                },
                config,
            };
        Ok(Arc::new(shared))
    }

    /// The rate limiter, when `rate_limit` is set (no lock taken otherwise).
    pub fn limiter(&self) -> Option<Arc<Limiter>> {
        self.config.rate_limit?;
        lock(&self.limiter).clone()
    }

    /// Back to the state at start: rooms, clients, counters, fault replay, log, rate limits.
    pub fn reset(&self) {
        *lock(&self.world) = self.initial.clone();
        *lock(&self.track) = Tracking::default();
        self.counters.reset();
        *lock(&self.limiter) = new_limiter(&self.config);
    }

    /// How often `method path` (either encoding of the ids) was applied.
    pub fn applied(&self, method: &str, path: &str) -> u64 {
        let key = match super::handlers::Route::parse(method, path) {
            Some(r) => r.key(),
            None => format!("{method} {path}"),
        };
        lock(&self.track).paths.get(&key).map_or(0, |c| c.applied)
    }

    /// Received and applied requests of this kind to `path` (either encoding of the ids).
    pub fn op_counts(&self, kind: OpKind, path: &str) -> OpCounts {
        let path = canonical_path(path);
        lock(&self.track)
            .ops
            .get(&(kind, path))
            .copied()
            .unwrap_or_default()
    }

    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        let requests = Endpoint::ALL
            .iter()
            .map(|e| {
                (
                    e.as_str().to_owned(),
                    c.requests[*e as usize].load(Ordering::Relaxed),
                )
            })
            .chain([(
                "unknown_route".to_owned(),
                c.unknown_routes.load(Ordering::Relaxed),
            )])
            .collect();
        let faults = Fault::ALL
            .iter()
            .map(|f| {
                (
                    f.as_str().to_owned(),
                    c.faults[f.index()].load(Ordering::Relaxed),
                )
            })
            .collect();
        let t = lock(&self.track);
        let mut responses: BTreeMap<String, u64> = t
            .statuses
            .iter()
            .map(|(s, n)| (s.to_string(), *n))
            .collect();
        responses.insert("dropped".into(), t.dropped);
        Stats {
            requests,
            responses,
            applied_total: t.applied_total,
            applied: t
                .paths
                .iter()
                .filter(|(_, p)| p.applied > 0)
                .map(|(k, p)| (k.clone(), p.applied))
                .collect(),
            faults,
            ops: t
                .ops
                .iter()
                .map(|((k, p), c)| (format!("{} {p}", k.as_str()), *c))
                .collect(),
            rate_limited: c.rate_limited.load(Ordering::Relaxed),
            delayed: c.delayed.load(Ordering::Relaxed),
        }
    }

    /// The last `limit` log entries, oldest first.
    pub fn log(&self, limit: usize) -> Vec<LogEntry> {
        let t = lock(&self.track);
        let skip = t.log.len().saturating_sub(limit);
        t.log.iter().skip(skip).cloned().collect()
    }

    /// The room object; with `extra`, also the fields the vendor pages' object leaves out.
    pub fn room_json(&self, id: &str, extra: bool) -> Option<serde_json::Value> {
        let w = lock(&self.world);
        w.rooms.get(id).map(|r| r.to_json(id, &w.clients, extra))
    }

    pub fn client_json(&self, id: &str) -> Option<serde_json::Value> {
        lock(&self.world).clients.get(id).map(|c| c.to_json(id))
    }
}

fn new_limiter(config: &SandboxConfig) -> Option<Arc<Limiter>> {
    Some(Arc::new(Limiter::new(config.rate_limit?)))
}

/// `path` with its ids canonically encoded, when it is one of the API's paths (any method's
/// route will do: only the path is kept).
fn canonical_path(path: &str) -> String {
    ["PUT", "POST"]
        .iter()
        .find_map(|m| super::handlers::Route::parse(m, path))
        .and_then(|r| r.key().split_once(' ').map(|(_, p)| p.to_owned()))
        .unwrap_or_else(|| path.to_owned())
}

/// Serves the sandbox on `listener` until `shutdown` completes (mini-redis style).
pub async fn run(
    listener: TcpListener,
    config: SandboxConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let shared = Shared::new(config)?;
    serve(listener, shared, shutdown).await
}

async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let grace = shared.config.shutdown_grace;
    let app = super::router(shared);
    let graceful = CancellationToken::new();
    let mut conns = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("sandbox: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            // Reap finished connections so the set stays as small as the open ones.
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let drop_conn = CancellationToken::new();
        let dropper = ConnDropper(drop_conn.clone());
        let app = app.clone();
        let svc = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
            req.extensions_mut().insert(dropper.clone());
            let mut app = app.clone();
            async move {
                let req: hyper::Request<hyper::body::Incoming> = req;
                tower::Service::call(&mut app, req).await
            }
        });
        let graceful = graceful.clone();
        conns.spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                () = drop_conn.cancelled() => return,
                () = graceful.cancelled() => conn.as_mut().graceful_shutdown(),
            }
            tokio::select! {
                _ = conn.as_mut() => {}
                () = drop_conn.cancelled() => {}
            }
        });
    }
    drop(listener);
    graceful.cancel();
    let drained = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, drained).await.is_err() {
        // Answers still held back (slow faults, long latency): cut them.
        conns.shutdown().await;
    }
    Ok(())
}

/// Starts a sandbox on `127.0.0.1:0` inside this process.
pub async fn spawn(config: SandboxConfig) -> anyhow::Result<SandboxHandle> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind the sandbox to a loopback port")?;
    let addr = listener
        .local_addr()
        .context("cannot read the sandbox's address")?;
    let shared = Shared::new(config)?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, shared.clone(), async move {
        let _ = rx.await;
    }));
    Ok(SandboxHandle {
        addr,
        shared,
        stop: Some(tx),
        task: Some(task),
    })
}

/// A sandbox running in this process. Dropping it stops the server too.
pub struct SandboxHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl SandboxHandle {
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
    /// `room_extra_fields` says), so tests can check owner, managers and the rest.
    pub fn room(&self, id: &str) -> Option<serde_json::Value> {
        self.shared.room_json(id, true)
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

/// The kind and path of the request carrying `op`, as the sandbox classifies it.
fn op_kind_path(op: &Op) -> (OpKind, String) {
    let r = crate::api::request::Request::for_op(op);
    let kind = match r.method.as_str() {
        "PUT" => {
            let body = r.body.as_ref().map(|b| b.to_string()).unwrap_or_default();
            super::handlers::put_kind(body.as_bytes())
        }
        "POST" => OpKind::Mute,
        "DELETE" => OpKind::Unmute,
        _ => OpKind::Get,
    };
    (kind, r.path)
}

impl Drop for SandboxHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}
