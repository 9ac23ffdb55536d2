//! What a run prints on stderr besides its log: the live progress ([`Progress`], a bar or a
//! periodic log line), the writer the log goes through so it never tears the bar
//! (`LogWriter`), and the lines printed whatever `-q` says (the run summary, the note that
//! a job is already complete, the final error), as text or as JSON events shaped like the
//! log's (`json_event`). The command line picks the [`LogFormat`] and [`ProgressMode`];
//! the runner prints through here.

mod progress;

pub(crate) use progress::LogWriter;
pub use progress::Progress;

use crate::journal::Counts;
use crate::runner::Stats;

/// The format of what goes to stderr: human text, or one JSON object per line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// When the live progress bar shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// On a terminal only; elsewhere a log line at a steady interval.
    Auto,
    Always,
    Never,
}

/// One line for stderr shaped like the JSON log events (`timestamp`, `level`, `message`,
/// then `fields`' members), for what is printed whatever `-q` says: the summary, the final
/// error. `fields` is an object (anything else is ignored).
pub(crate) fn json_event(level: &str, message: &str, fields: serde_json::Value) -> String {
    let mut obj = serde_json::Map::new();
    obj.insert(
        "timestamp".into(),
        jiff::Timestamp::now().to_string().into(),
    );
    obj.insert("level".into(), level.into());
    obj.insert("message".into(), message.into());
    if let serde_json::Value::Object(extra) = fields {
        obj.extend(extra);
    }
    serde_json::Value::Object(obj).to_string()
}

/// The summary of a run, on stderr whatever `-q` says (a cron job's log should say how the
/// job ended): text, or with `--log-format json` one JSON object on its own line shaped like
/// the log events (`timestamp`, `level`, `message`), marked `"summary": true`.
pub(crate) fn print_summary(stats: &Stats, headline: &str, format: LogFormat) {
    match format {
        LogFormat::Text => eprint!("{}", stats.render(headline)),
        LogFormat::Json => eprintln!("{}", summary_json(stats, headline)),
    }
}

fn summary_json(stats: &Stats, headline: &str) -> String {
    let ms = |p: f64| stats.percentile(p).map(|d| d.as_secs_f64() * 1000.0);
    let fields = serde_json::json!({
        "summary": true,
        "total": stats.total,
        "done": stats.done,
        "already_in_state": stats.already,
        "already_by_code": stats.already_by_code,
        "failed": stats.failed,
        "pending": stats.pending(),
        "requests": stats.attempts,
        "retries": stats.retries,
        "rate_limited": stats.rate_limited,
        "elapsed_s": stats.elapsed.as_secs_f64(),
        "ops_per_s": stats.ops_per_sec(),
        "latency_p50_ms": ms(50.0),
        "latency_p95_ms": ms(95.0),
        "latency_p99_ms": ms(99.0),
        "failures_by_code": stats.failures_by_code,
        "unbans_refused": stats.unbans_refused,
        "pace": stats.paces,
    });
    json_event("INFO", headline, fields)
}

/// What a run of a job with nothing pending prints instead of a summary: `message` as text,
/// or as a JSON summary event with the journal's counts.
pub(crate) fn print_already_complete(message: &str, counts: &Counts, format: LogFormat) {
    match format {
        LogFormat::Text => eprintln!("{message}"),
        LogFormat::Json => {
            let fields = serde_json::json!({
                "summary": true,
                "already_complete": true,
                "done": counts.done,
                "failed": counts.failed,
                "skipped": counts.skipped,
                "pending": 0,
                "requests": 0,
            });
            eprintln!("{}", json_event("INFO", message, fields));
        }
    }
}
