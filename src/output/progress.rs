//! Progress while a job runs: an indicatif bar on stderr when it is a terminal (or
//! `--progress always`), otherwise one tracing line at a steady interval (cron, CI).
//!
//! Log lines and the bar share stderr: [`LogWriter`] is the writer of the tracing
//! subscriber, and while a bar is showing it hides the bar around each line
//! (`ProgressBar::suspend`) so a line never lands in the middle of a half-drawn bar.

use std::io::{IsTerminal, Write as _};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::time::Instant;

use super::ProgressMode;
use crate::runner::Stats;

/// Interval of the log line when there is no bar.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The live progress of a run: a bar, a periodic log line, or nothing.
pub struct Progress {
    bar: Option<ProgressBar>,
    log_every: Option<Duration>,
    last_log: Instant,
}

impl Progress {
    /// `total` ops in this run.
    pub(crate) fn new(mode: ProgressMode, total: u64) -> Progress {
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
            set_active_bar(Some(pb.clone()));
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
    pub(crate) fn update(&mut self, st: &Stats, elapsed: Duration) {
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
            // The time left at the rate so far (unknown before the first op finishes).
            let eta = (rate > 0.0).then(|| {
                let secs = (st.pending() as f64 / rate).round();
                humantime::format_duration(Duration::from_secs(secs as u64)).to_string()
            });
            tracing::info!(
                done = st.done,
                failed = st.failed,
                pending = st.pending(),
                total = st.total,
                retries = st.retries,
                ops_per_sec = format!("{rate:.1}"),
                eta = eta.as_deref().unwrap_or("unknown"),
                "progress: {}/{} ops finished",
                st.finished(),
                st.total
            );
        }
    }

    /// Takes the bar off the screen: the summary that follows says everything it said, and
    /// an abandoned bar leaves the cursor at the end of its line (off a terminal, the next
    /// line would be glued to it).
    pub(crate) fn finish(&self) {
        if let Some(pb) = &self.bar {
            pb.finish_and_clear();
            set_active_bar(None);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if self.bar.is_some() {
            set_active_bar(None);
        }
    }
}

/// The bar on screen, if any: log lines are written around it.
static ACTIVE_BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

fn set_active_bar(bar: Option<ProgressBar>) {
    *ACTIVE_BAR.lock().unwrap_or_else(|e| e.into_inner()) = bar;
}

fn active_bar() -> Option<ProgressBar> {
    ACTIVE_BAR.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Writes `buf` to stderr in one piece, with the bar (if one is showing) hidden meanwhile.
fn write_around_bar(buf: &[u8]) -> std::io::Result<()> {
    let write = || {
        let mut err = std::io::stderr().lock();
        err.write_all(buf)?;
        err.flush()
    };
    match active_bar() {
        Some(pb) => pb.suspend(write),
        None => write(),
    }
}

/// The tracing subscriber's writer: stderr, around the progress bar. The fmt layer writes
/// each event with one `write_all` of the whole formatted line.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        write_around_bar(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;
    fn make_writer(&'a self) -> LogWriter {
        LogWriter
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Off a terminal, the periodic line says done/total, ops/s, ETA, retries and failures.
    #[test]
    fn the_log_line_carries_rate_eta_retries_and_failures() {
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_writer(move || out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let mut p = Progress::log_only(Some(Duration::ZERO));
            let st = Stats {
                total: 1000,
                done: 190,
                failed: 10,
                retries: 7,
                ..Default::default()
            };
            // 200 finished in 10 s: 20 ops/s, 800 left: 40 s.
            p.update(&st, Duration::from_secs(10));
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["message"], "progress: 200/1000 ops finished");
        assert_eq!(line["done"], 190);
        assert_eq!(line["failed"], 10);
        assert_eq!(line["pending"], 800);
        assert_eq!(line["retries"], 7);
        assert_eq!(line["ops_per_sec"], "20.0");
        assert_eq!(line["eta"], "40s");
    }
}
