//! Waiting for SIGINT or SIGTERM, the signals that stop a run (and the sandbox).

/// Resolves on SIGINT or SIGTERM (Ctrl-C only, off Unix); false when signals cannot be
/// watched.
pub(crate) async fn wait_for_signal() -> bool {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot watch SIGTERM: {e}");
                return tokio::signal::ctrl_c().await.is_ok();
            }
        };
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.is_ok(),
            _ = term.recv() => true,
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.is_ok()
    }
}

/// Resolves on SIGINT or SIGTERM; never when signals cannot be watched.
pub(crate) async fn signalled() {
    if !wait_for_signal().await {
        std::future::pending::<()>().await;
    }
}

/// What stops a run: the first signal stops dispatching, a second one cancels the requests
/// in flight.
pub(super) fn run_shutdown() -> crate::runner::Shutdown {
    crate::runner::Shutdown::new(signalled(), signalled())
}
