//! `report --format html`: one self-contained page for people about a job, from its
//! journal: the job and its state, summary figures, the outcome counts per action, the
//! ops finished per second, the latency and the retries and 429s over the job's time (inline
//! SVG), the failures by error code with a few example ops each, and the job's runs.
//!
//! Self-contained: inline CSS and SVG, no script, nothing fetched (the page's
//! Content-Security-Policy forbids it too). Every value from the journal is escaped.

use std::fmt::Write as _;
use std::io::Write;

use anyhow::Context as _;

use super::chart::{self, Chart, Series, Style};
use super::esc;
use super::facts::{self, EXAMPLES, Facts, FailureFacts, GAP};
use crate::journal::{Counts, Journal, OpRow, RunInfo};

const DONE: &str = "#2e7d32";
const FAILED: &str = "#c62828";
const PENDING: &str = "#9e9e9e";
const SKIPPED: &str = "#f9a825";
const RETRIES: &str = "#fb8c00";
const LIMITED: &str = "#8e24aa";
const P50: &str = "#1e88e5";
const P95: &str = "#f4511e";

const STYLE: &str = "
:root { color-scheme: light; --muted: #5f6b7a; --line: #dde3ea; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; color: #1d2733;
  background: #f6f8fa; margin: 0; }
main { max-width: 1080px; margin: 0 auto; padding: 24px 20px 40px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 32px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 18px 0 6px; }
.sub, .note, footer { color: var(--muted); font-size: 13px; }
.sub code, td code { font-size: 12.5px; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.state { display: inline-block; padding: 1px 10px; border-radius: 10px; font-size: 13px;
  font-weight: 600; color: #fff; background: #607d8b; vertical-align: middle; margin-left: 8px; }
.state.complete { background: #2e7d32; } .state.running { background: #1565c0; }
.state.incomplete { background: #ef6c00; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 10px; margin-top: 18px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; }
.card .k { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .v { font-size: 22px; font-weight: 600; font-variant-numeric: tabular-nums; }
.card .d { color: var(--muted); font-size: 12px; }
table { border-collapse: collapse; width: 100%; background: #fff; border: 1px solid var(--line); }
th, td { padding: 5px 9px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { background: #eef2f6; font-size: 12.5px; font-weight: 600; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.total td { font-weight: 600; background: #fafbfc; }
td.msg { max-width: 420px; overflow-wrap: anywhere; }
td.t { white-space: nowrap; font-variant-numeric: tabular-nums; }
.bar { display: flex; height: 12px; width: 160px; border-radius: 3px; overflow: hidden; background: #eceff1; }
.bar span { display: block; height: 100%; }
.legend { font-size: 13px; margin: 0 0 4px; }
.legend i { display: inline-block; width: 11px; height: 11px; border-radius: 2px; margin: 0 5px 0 12px; vertical-align: -1px; }
.legend i:first-child { margin-left: 0; }
.chartbox { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 8px 10px 4px; }
svg.chart { width: 100%; height: auto; display: block; }
svg .grid { stroke: #e6eaef; } svg .axis { stroke: #90a4ae; }
svg .tick, svg .unit, svg .cutlabel { fill: #5f6b7a; font-size: 11px; }
svg .cut { stroke: #90a4ae; stroke-dasharray: 4 3; }
svg .hit { fill: transparent; } svg .hit:hover { fill: rgba(30, 136, 229, .08); }
svg .empty { fill: #90a4ae; font-size: 14px; }
.fail h3 code { background: #fdecea; color: #b71c1c; padding: 1px 6px; border-radius: 4px; }
.fail .count { color: var(--muted); font-weight: 400; }
tr.settings td { font-size: 12px; color: #5f6b7a; padding-top: 0; }
tr.run td { border-bottom: none; }
footer { margin-top: 36px; }
";

/// Writes the page of the job whose journal is `journal`.
pub(crate) fn write_report_html(journal: &Journal, w: &mut dyn Write) -> anyhow::Result<()> {
    let facts = facts::gather(journal)?;
    let page = page(&facts);
    w.write_all(page.as_bytes())
        .context("cannot write the HTML report")
}

/// The whole page.
fn page(f: &Facts) -> String {
    let name = job_name(f);
    let mut o = String::with_capacity(64 * 1024);
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n\
         <title>{} · imkit-batch report</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n",
        esc(&name)
    );
    header(&mut o, f, &name);
    cards(&mut o, f);
    actions(&mut o, f);
    over_time(&mut o, f);
    failures(&mut o, f);
    runs(&mut o, f);
    let _ = write!(
        o,
        "<footer>Written by imkit-batch {} at {} from the journal <code>{}</code>. Times are UTC. \
         The CSV or JSON report has every op: <code>imkit-batch report JOURNAL --format csv</code>.</footer>\n\
         </main>\n</body>\n</html>\n",
        esc(env!("CARGO_PKG_VERSION")),
        esc(&jiff::Timestamp::now()
            .strftime("%Y-%m-%d %H:%M:%S")
            .to_string()),
        esc(&f.status.journal)
    );
    o
}

/// The manifest's `name`, else its file name.
fn job_name(f: &Facts) -> String {
    match &f.status.job.name {
        Some(n) => n.clone(),
        None => std::path::Path::new(&f.status.job.manifest)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| f.status.job.manifest.clone()),
    }
}

/// The title, the state and where the job comes from.
fn header(o: &mut String, f: &Facts, name: &str) {
    let s = &f.status;
    let state = match (s.state, s.running_pid) {
        ("running", Some(pid)) => format!("running (pid {pid})"),
        (st, _) => st.to_string(),
    };
    let _ = write!(
        o,
        "<header>\n<h1>{}<span class=\"state {}\">{}</span></h1>\n\
         <p class=\"sub\">manifest <code>{}</code> (sha256 <code>{}</code>) · journal <code>{}</code> \
         (schema {}, created by imkit-batch {})<br>created {} · started {} · ended {} (UTC)</p>\n</header>\n",
        esc(name),
        esc(s.state),
        esc(&state),
        esc(&s.job.manifest),
        esc(s.job.checksum.get(..12).unwrap_or(&s.job.checksum)),
        esc(&s.journal),
        s.schema_version,
        esc(&s.job.tool_version),
        esc(&when(f.job.created_at)),
        esc(&f.job.started_at.map_or_else(|| "never".into(), when)),
        esc(&f.job.ended_at.map_or_else(|| "not yet".into(), when)),
    );
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS` (UTC).
fn when(ms: i64) -> String {
    chart::clock(ms.div_euclid(1000), true)
}

/// One summary figure.
fn card(o: &mut String, key: &str, value: &str, detail: &str) {
    let _ = writeln!(
        o,
        "<div class=\"card\"><div class=\"k\">{}</div><div class=\"v\">{}</div><div class=\"d\">{}</div></div>",
        esc(key),
        esc(value),
        esc(detail)
    );
}

/// The summary figures: ops by outcome, requests, throughput, latency, runs.
fn cards(o: &mut String, f: &Facts) {
    let s = &f.status;
    let c = &s.counts;
    o.push_str("<section class=\"cards\">\n");
    card(
        o,
        "ops",
        &s.total.to_string(),
        &format!("{}% final", chart::num(s.progress_percent)),
    );
    card(o, "done", &c.done.to_string(), "");
    card(o, "failed", &c.failed.to_string(), "permanently");
    card(o, "pending", &c.pending.to_string(), "");
    card(o, "skipped", &c.skipped.to_string(), "");
    let limited = match &f.series_total {
        Some(t) => format!("{} answered 429", t.rate_limited),
        None => "429s not recorded".into(),
    };
    card(
        o,
        "requests",
        &s.attempts.to_string(),
        &format!("{} retries, {limited}", s.retries),
    );
    card(
        o,
        "throughput",
        &s.rate_ops_per_sec
            .map_or_else(|| "-".into(), |r| format!("{} ops/s", chart::num(r))),
        &format!("over {} of running", duration(s.running_seconds)),
    );
    card(
        o,
        "latency p50 / p95",
        &f.latency
            .map_or_else(|| "-".into(), |(a, b)| format!("{a} / {b} ms")),
        "last answer of each op",
    );
    let last = s.last_exit.as_ref().map_or_else(
        || "no run ended".into(),
        |e| format!("last exit {} ({})", e.code, e.name),
    );
    card(o, "runs", &s.runs.len().to_string(), &last);
    o.push_str("</section>\n");
}

/// Seconds as a short duration (`4.2s`, `3m 12s`).
fn duration(secs: f64) -> String {
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        humantime::format_duration(std::time::Duration::from_secs(secs.round() as u64)).to_string()
    }
}

/// A stacked bar of the outcomes in `c`, as percentages of its total.
fn outcome_bar(c: &Counts) -> String {
    let total = c.total().max(1) as f64;
    let mut o = String::from("<div class=\"bar\">");
    for (n, color, what) in [
        (c.done, DONE, "done"),
        (c.failed, FAILED, "failed"),
        (c.skipped, SKIPPED, "skipped"),
        (c.pending, PENDING, "pending"),
    ] {
        if n > 0 {
            let _ = write!(
                o,
                "<span style=\"width:{:.2}%;background:{color}\" title=\"{n} {what}\"></span>",
                n as f64 * 100.0 / total
            );
        }
    }
    o.push_str("</div>");
    o
}

/// The table of outcome counts per action, with a total row.
fn actions(o: &mut String, f: &Facts) {
    o.push_str(
        "<h2>Outcomes per action</h2>\n<table>\n<tr><th>action</th><th class=\"n\">ops</th>\
         <th class=\"n\">done</th><th class=\"n\">failed</th><th class=\"n\">skipped</th>\
         <th class=\"n\">pending</th><th></th></tr>\n",
    );
    let row = |o: &mut String, class: &str, name: &str, c: &Counts| {
        let _ = writeln!(
            o,
            "<tr class=\"{class}\"><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            esc(name),
            c.total(),
            c.done,
            c.failed,
            c.skipped,
            c.pending,
            outcome_bar(c)
        );
    };
    for (action, c) in &f.by_action {
        row(o, "", action.as_str(), c);
    }
    if f.by_action.len() != 1 {
        row(o, "total", "all", &f.status.counts);
    }
    o.push_str("</table>\n");
}

/// A chart's legend.
fn legend(o: &mut String, items: &[(&str, &str)]) {
    o.push_str("<p class=\"legend\">");
    for (name, color) in items {
        let _ = write!(o, "<i style=\"background:{color}\"></i>{}", esc(name));
    }
    o.push_str("</p>\n");
}

/// The three charts over the job's time.
fn over_time(o: &mut String, f: &Facts) {
    let t = &f.timeline;
    o.push_str("<h2>Over time</h2>\n");
    if let (Some(first), Some(last)) = (t.bins.first(), t.bins.last()) {
        let cut = if t.gaps.is_empty() {
            String::new()
        } else {
            format!(
                "; {} pause{} longer than {} without any record cut out (dashed)",
                t.gaps.len(),
                if t.gaps.len() == 1 { "" } else { "s" },
                humantime::format_duration(std::time::Duration::from_secs(GAP as u64))
            )
        };
        let _ = writeln!(
            o,
            "<p class=\"note\">From {} to {} UTC, in bins of {}{cut}. Hover a bin for its figures.</p>",
            esc(&chart::clock(first.start, true)),
            esc(&chart::clock(last.start + t.bin_s - 1, true)),
            humantime::format_duration(std::time::Duration::from_secs(t.bin_s as u64)),
        );
    }
    let per_s = |v: u64| Some(v as f64 / t.bin_s as f64);
    o.push_str("<h3>Ops finished per second</h3>\n");
    legend(o, &[("done", DONE), ("failed", FAILED)]);
    chart_box(
        o,
        &Chart {
            label: "ops finished per second over time",
            unit: "ops/s",
            style: Style::Stacked,
            whole: false,
            series: vec![
                series("done", DONE, t, |b| per_s(b.counts.done)),
                series("failed", FAILED, t, |b| per_s(b.counts.failed)),
            ],
            timeline: t,
        },
    );
    o.push_str("<h3>Latency of the ops' last answers</h3>\n");
    legend(o, &[("p50", P50), ("p95", P95)]);
    chart_box(
        o,
        &Chart {
            label: "latency p50 and p95 over time",
            unit: "ms",
            style: Style::Lines,
            whole: false,
            series: vec![
                series("p50 ms", P50, t, |b| b.p50_ms.map(|v| v as f64)),
                series("p95 ms", P95, t, |b| b.p95_ms.map(|v| v as f64)),
            ],
            timeline: t,
        },
    );
    retries_chart(o, f);
}

/// Retries and 429s per bin, when the journal recorded them.
fn retries_chart(o: &mut String, f: &Facts) {
    let t = &f.timeline;
    o.push_str("<h3>Retries and 429s</h3>\n");
    if !t.has_series && !t.bins.is_empty() {
        o.push_str(
            "<p class=\"note\">Not recorded: this job ran with a build of imkit-batch that did \
             not keep retries and 429s over time.</p>\n",
        );
        return;
    }
    let count = |v: u64| Some(v as f64);
    legend(o, &[("retries", RETRIES), ("answered 429", LIMITED)]);
    let unit = format!(
        "per {}",
        humantime::format_duration(std::time::Duration::from_secs(t.bin_s as u64))
    );
    chart_box(
        o,
        &Chart {
            label: "retries and 429 answers over time",
            unit: &unit,
            style: Style::Grouped,
            whole: true,
            series: vec![
                series("retries", RETRIES, t, |b| count(b.counts.retries)),
                series("429", LIMITED, t, |b| count(b.counts.rate_limited)),
            ],
            timeline: t,
        },
    );
}

/// A series of one value per bin of `t`.
fn series(
    name: &'static str,
    color: &'static str,
    t: &facts::Timeline,
    value: impl Fn(&facts::Bin) -> Option<f64>,
) -> Series {
    Series {
        name,
        color,
        values: t.bins.iter().map(value).collect(),
    }
}

fn chart_box(o: &mut String, c: &Chart) {
    let _ = writeln!(o, "<div class=\"chartbox\">{}</div>\n", chart::render(c));
}

/// The failures by error code, each with its first few ops.
fn failures(o: &mut String, f: &Facts) {
    o.push_str("<h2>Failures by error code</h2>\n");
    if f.failures.is_empty() {
        o.push_str("<p class=\"note\">No op failed.</p>\n");
        return;
    }
    for g in &f.failures {
        failure_group(o, g);
    }
    o.push_str(
        "<p class=\"note\"><code>imkit-batch report JOURNAL --failed</code> writes every failed op \
         as a manifest to run again.</p>",
    );
}

fn failure_group(o: &mut String, g: &FailureFacts) {
    let statuses: Vec<String> = g.statuses.iter().map(u16::to_string).collect();
    let _ = write!(
        o,
        "<section class=\"fail\"><h3><code>{}</code> <span class=\"count\">{} op{}{}</span></h3>\n\
         <table>\n<tr><th class=\"n\">op</th><th>manifest line</th><th>action</th><th>target</th>\
         <th class=\"n\">HTTP</th><th class=\"n\">attempts</th><th>message</th></tr>\n",
        esc(g.code.as_deref().unwrap_or("(no error code)")),
        g.count,
        if g.count == 1 { "" } else { "s" },
        if statuses.is_empty() {
            String::new()
        } else {
            format!(" · HTTP {}", statuses.join(", "))
        }
    );
    for r in &g.examples {
        example(o, r);
    }
    o.push_str("</table>\n");
    if g.count > g.examples.len() as u64 {
        let _ = writeln!(
            o,
            "<p class=\"note\">… and {} more with this code (the first {EXAMPLES} in manifest order are shown).</p>",
            g.count - g.examples.len() as u64
        );
    }
    o.push_str("</section>\n");
}

/// One failed op: its seq, manifest line, action, target, status, attempts and message.
fn example(o: &mut String, r: &OpRow) {
    let target = match &r.op.client {
        Some(c) => format!("client {c} in room {}", r.op.room),
        None => format!("room {}", r.op.room),
    };
    let message = r.message.as_deref().unwrap_or("");
    let clipped: String = message.chars().take(300).collect();
    let _ = writeln!(
        o,
        "<tr><td class=\"n\">{}</td><td><code>{}:{}</code></td><td>{}</td><td><code>{}</code></td>\
         <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"msg\">{}{}</td></tr>",
        r.seq,
        esc(&r.file),
        r.line,
        esc(r.op.action.as_str()),
        esc(&target),
        r.http_status.map_or_else(|| "-".into(), |s| s.to_string()),
        r.attempts,
        esc(&clipped),
        if clipped.len() < message.len() {
            "…"
        } else {
            ""
        }
    );
}

/// The job's runs: when, how long, how each ended, what it did, with which settings.
fn runs(o: &mut String, f: &Facts) {
    o.push_str(
        "<h2>Runs</h2>\n<table>\n<tr><th class=\"n\">#</th><th class=\"n\">pid</th><th>started (UTC)</th>\
         <th>ended</th><th class=\"n\">took</th><th>exit</th><th class=\"n\">ops finished</th>\
         <th class=\"n\">requests</th><th class=\"n\">retries</th><th class=\"n\">429s</th></tr>\n",
    );
    if f.runs.is_empty() {
        o.push_str("<tr><td colspan=\"10\">No run yet.</td></tr>\n");
    }
    for r in &f.runs {
        run_row(o, f, r);
    }
    o.push_str("</table>\n");
}

fn run_row(o: &mut String, f: &Facts, r: &RunInfo) {
    let end = r.ended_at.or(r.last_commit_at).unwrap_or(r.started_at);
    let ended = match (r.ended_at, r.last_commit_at) {
        (Some(t), _) => when(t),
        (None, Some(t)) => format!("no end recorded; last commit {}", when(t)),
        (None, None) => "no end recorded".into(),
    };
    let exit = match (r.exit_code, &r.exit) {
        (Some(c), Some(n)) => format!("{c} ({n})"),
        _ => "-".into(),
    };
    let counts = f.run_series.get(&r.id).copied();
    let figure = |v: Option<u64>| match (v, r.outcomes) {
        (Some(v), _) => v.to_string(),
        (None, 0) => "0".into(),
        (None, _) => "-".into(),
    };
    let _ = write!(
        o,
        "<tr class=\"run\"><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"t\">{}</td><td class=\"t\">{}</td><td class=\"n\">{}</td>\
         <td class=\"t\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
         <td class=\"n\">{}</td></tr>\n<tr class=\"settings\"><td></td><td colspan=\"9\">{}</td></tr>\n",
        r.id,
        r.pid,
        esc(&when(r.started_at)),
        esc(&ended),
        esc(&duration((end - r.started_at).max(0) as f64 / 1000.0)),
        esc(&exit),
        r.ops_finalized,
        figure(counts.map(|c| c.requests)),
        figure(counts.map(|c| c.retries)),
        figure(counts.map(|c| c.rate_limited)),
        esc(&settings_text(&r.settings))
    );
}

/// A run's settings as `key value` pairs (those set), in the journal's order.
fn settings_text(v: &serde_json::Value) -> String {
    let Some(obj) = v.as_object() else {
        return v.to_string();
    };
    obj.iter()
        .filter(|(_, v)| !v.is_null() && *v != &serde_json::Value::Bool(false))
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k} {s}"),
            serde_json::Value::Bool(true) => k.clone(),
            v => format!("{k} {v}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}
