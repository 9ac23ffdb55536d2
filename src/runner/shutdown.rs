//! How a run is stopped from outside, in the manner of mini-redis's
//! `server::run(listener, shutdown)`: the caller hands [`run_job`](super::run_job) two
//! futures. When `stop` resolves, nothing more is dispatched (requests in flight finish and
//! are recorded; the run exits 4, resumable); when `cancel` resolves after that, the
//! requests in flight are aborted too (their ops stay pending). The command line passes the
//! first and the second SIGINT/SIGTERM; tests pass what they like, or [`Shutdown::never`].

use std::future::Future;
use std::pin::Pin;

use super::scheduler::Controls;

type Signal = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The two outside stops of a run: `stop`, then `cancel` (polled only once `stop` has
/// resolved).
pub struct Shutdown {
    stop: Signal,
    cancel: Signal,
}

impl Shutdown {
    pub fn new(
        stop: impl Future<Output = ()> + Send + 'static,
        cancel: impl Future<Output = ()> + Send + 'static,
    ) -> Shutdown {
        Shutdown {
            stop: Box::pin(stop),
            cancel: Box::pin(cancel),
        }
    }

    /// A run stopped by nothing from outside.
    pub fn never() -> Shutdown {
        Shutdown::new(std::future::pending(), std::future::pending())
    }

    /// Drives `work` to its end, passing `stop` and then `cancel` on to `controls` as they
    /// resolve.
    pub(crate) async fn drive<F: Future>(self, work: F, controls: &Controls) -> F::Output {
        let Shutdown { stop, cancel } = self;
        let mut work = std::pin::pin!(work);
        tokio::select! {
            out = &mut work => return out,
            () = stop => controls.stop.cancel(),
        }
        tokio::select! {
            out = &mut work => return out,
            () = cancel => controls.cancel.cancel(),
        }
        work.await
    }
}

impl std::fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shutdown").finish_non_exhaustive()
    }
}
