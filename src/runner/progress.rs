//! Progress while a job runs: an indicatif bar on stderr when it is a terminal (or
//! `--progress always`), otherwise one tracing line at a steady interval (cron, CI).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::time::Instant;

use crate::cli::ProgressMode;
use crate::runner::summary::Stats;

/// Interval of the log line when there is no bar.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

pub struct Progress {
    bar: Option<ProgressBar>,
    log_every: Option<Duration>,
    last_log: Instant,
}

impl Progress {
    /// `total` ops in this run.
    pub fn new(mode: ProgressMode, total: u64) -> Progress {
        let bar = match mode {
            ProgressMode::Always => true,
            ProgressMode::Never => false,
            ProgressMode::Auto => std::io::stderr().is_terminal(),
        };
        if bar {
            let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{bar:30} {pos}/{len} ops  {per_sec}  ETA {eta}  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            pb.set_style(style);
            Progress {
                bar: Some(pb),
                log_every: None,
                last_log: Instant::now(),
            }
        } else {
            Progress::log_only(if mode == ProgressMode::Never {
                None
            } else {
                Some(LOG_EVERY)
            })
        }
    }

    /// No bar; a log line every `every` (none when `None`).
    pub fn log_only(every: Option<Duration>) -> Progress {
        Progress {
            bar: None,
            log_every: every,
            last_log: Instant::now(),
        }
    }

    /// Shows the current state (cheap; call often).
    pub fn update(&mut self, st: &Stats, elapsed: Duration) {
        if let Some(pb) = &self.bar {
            pb.set_position(st.finished());
            pb.set_message(format!("retries {}  failures {}", st.retries, st.failed));
        } else if let Some(every) = self.log_every
            && self.last_log.elapsed() >= every
        {
            self.last_log = Instant::now();
            let secs = elapsed.as_secs_f64();
            let rate = if secs > 0.0 {
                st.finished() as f64 / secs
            } else {
                0.0
            };
            tracing::info!(
                done = st.done,
                failed = st.failed,
                pending = st.pending(),
                total = st.total,
                retries = st.retries,
                ops_per_sec = format!("{rate:.1}"),
                "progress: {}/{} ops finished",
                st.finished(),
                st.total
            );
        }
    }

    pub fn finish(&self) {
        if let Some(pb) = &self.bar {
            pb.abandon();
        }
    }
}
