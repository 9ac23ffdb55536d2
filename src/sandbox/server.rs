//! The server: the router and the accept loop, [`run`] on a listener and [`spawn`] in process.
//!
//! We own the accept loop (hyper's HTTP/1 connection driver over the axum router) so that a
//! handler can make its connection be dropped without any response bytes: every connection
//! gets a [`ConnDropper`] token in its requests' extensions, and the connection future is
//! raced against it. Shutdown is graceful (in-flight answers finish, idle connections close)
//! with a short bound, after which remaining connections are cut.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::config::SandboxConfig;
use super::handle::SandboxHandle;
use super::shared::{ConnDropper, Shared};
use super::{control, handlers};

/// The router: control API under `/_sandbox/`, everything else to the emulated API (which
/// routes on the raw path itself, so an encoded id can never reach another endpoint).
fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/_sandbox/rooms/{id}", get(control::room))
        .route("/_sandbox/clients/{id}", get(control::client))
        .route("/_sandbox/stats", get(control::stats))
        .route("/_sandbox/applied", get(control::applied))
        .route("/_sandbox/log", get(control::log))
        .route("/_sandbox/reset", post(control::reset))
        .fallback(handlers::api)
        .with_state(shared)
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
    let app = router(shared);
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
    Ok(SandboxHandle::new(addr, shared, tx, task))
}
