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
        let tty = std::io::stderr().is_terminal();
        let bar = match mode {
            ProgressMode::Always => true,
            ProgressMode::Never => false,
            ProgressMode::Auto => tty,
        };
        if bar {
            // indicatif hides its own stderr target off a terminal; `always` means always.
            let target = if tty {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::term_like_with_hz(Box::new(AnsiStderr), 2)
            };
            let pb = ProgressBar::with_draw_target(Some(total), target);
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

/// Plain ANSI output to stderr, for `--progress always` when stderr is not a terminal.
#[derive(Debug)]
struct AnsiStderr;

impl AnsiStderr {
    fn put(&self, s: &str) -> std::io::Result<()> {
        use std::io::Write as _;
        std::io::stderr().write_all(s.as_bytes())
    }
}

impl indicatif::TermLike for AnsiStderr {
    fn width(&self) -> u16 {
        100
    }
    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        if n > 0 {
            self.put(&format!("\x1b[{n}A"))
        } else {
            Ok(())
        }
    }
    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        if n > 0 {
            self.put(&format!("\x1b[{n}B"))
        } else {
            Ok(())
        }
    }
    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        if n > 0 {
            self.put(&format!("\x1b[{n}C"))
        } else {
            Ok(())
        }
    }
    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        if n > 0 {
            self.put(&format!("\x1b[{n}D"))
        } else {
            Ok(())
        }
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.put(&format!("{s}\n"))
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.put(s)
    }
    fn clear_line(&self) -> std::io::Result<()> {
        self.put("\r\x1b[2K")
    }
    fn flush(&self) -> std::io::Result<()> {
        use std::io::Write as _;
        std::io::stderr().flush()
    }
}
