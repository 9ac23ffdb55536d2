//! What a job leaves behind: the `--metrics-file` of every run (Prometheus text format,
//! parsed here), and the HTML page of `report --format html`, both from real runs of the
//! binary against a sandbox with failures and injected 429s.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::util::{self, Sandbox, exec, freeze_job, journal_of, run_cmd};

/// A parsed metrics file: family name -> (type, samples as (labels, value)).
type Families = BTreeMap<String, (String, Vec<(BTreeMap<String, String>, f64)>)>;

/// Parses the text exposition format strictly enough for these files: `# HELP` then
/// `# TYPE` before each family's samples, `name{k="v",...} value` samples with escaped
/// label values.
fn parse_metrics(text: &str) -> Families {
    let mut out = Families::new();
    let mut helped = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(!help.is_empty(), "{line}");
            helped = Some(name.to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert_eq!(helped.as_deref(), Some(name), "HELP before TYPE: {line}");
            assert!(kind == "counter" || kind == "gauge", "{line}");
            assert!(!name.ends_with("_total") || kind == "counter", "{line}");
            let fresh = out.insert(name.into(), (kind.into(), vec![])).is_none();
            assert!(fresh, "{name} declared twice");
        } else {
            let (name, rest) = line.split_once('{').expect("labels");
            let (labels, value) = rest.rsplit_once("} ").expect("value");
            let fam = out.get_mut(name).expect("a sample after its TYPE");
            fam.1
                .push((parse_labels(labels), value.parse().expect("a number")));
        }
    }
    out
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = s.chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        assert_eq!(chars.next(), Some('"'));
        let mut value = String::new();
        loop {
            match chars.next().expect("closing quote") {
                '\\' => value.push(match chars.next() {
                    Some('n') => '\n',
                    Some(c @ ('\\' | '"')) => c,
                    o => panic!("bad escape {o:?}"),
                }),
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key, value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    labels
}

/// The one sample of `name`, checked to carry `job`.
fn value(f: &Families, name: &str, job: &str) -> f64 {
    let (_, samples) = f.get(name).unwrap_or_else(|| panic!("no {name}"));
    assert_eq!(samples.len(), 1, "{name}");
    assert_eq!(samples[0].0["job"], job, "{name}");
    samples[0].1
}

/// `imkit_batch_ops` by outcome.
fn ops(f: &Families) -> BTreeMap<String, f64> {
    let (kind, samples) = &f["imkit_batch_ops"];
    assert_eq!(kind, "gauge");
    samples
        .iter()
        .map(|(l, v)| (l["outcome"].clone(), *v))
        .collect()
}

fn read_metrics(p: &Path) -> Families {
    parse_metrics(&std::fs::read_to_string(p).expect("the metrics file"))
}

fn now_s() -> f64 {
    jiff::Timestamp::now().as_millisecond() as f64 / 1000.0
}

/// `status --json` of a journal.
fn status_json(journal: &Path) -> serde_json::Value {
    let st = exec(util::imkit(&[
        "status",
        journal.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(st.code, 0, "{st:?}");
    serde_json::from_str(&st.stdout).unwrap()
}

/// A freeze job of 40 rooms plus two the sandbox lacks (404), against a sandbox that
/// answers 15% of requests with a 429 (hint 0 s).
fn failing_job(dir: &Path) -> (PathBuf, Sandbox) {
    let (manifest, mut config) = freeze_job(dir, "nightly.csv", 40);
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push_str("ghost-1\nghost-2\n");
    std::fs::write(&manifest, text).unwrap();
    config.faults.too_many_requests = 0.15;
    config.fault_retry_after_secs = 0;
    config.fault_seed = 11;
    (manifest, Sandbox::start(config))
}

/// After a run with failures, then a re-run of the finished job, then `--retry-failed` once
/// the missing rooms exist: the figures of each, read back from the file.
#[test]
fn metrics_file_after_failures_a_rerun_and_a_retry() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, sb) = failing_job(dir.path());
    let journal = journal_of(&manifest);
    let metrics = dir.path().join("imkit.prom");
    let m = metrics.to_str().unwrap();
    let t0 = now_s();
    let first = exec(run_cmd(
        &sb.url(),
        &manifest,
        &["--action", "freeze", "--metrics-file", m],
    ));
    assert_eq!(first.code, 1, "{first:?}");
    let f = read_metrics(&metrics);
    let job = "nightly.csv";
    assert_eq!(
        ops(&f),
        BTreeMap::from([
            ("done".into(), 40.0),
            ("failed".into(), 2.0),
            ("pending".into(), 0.0),
            ("skipped".into(), 0.0)
        ])
    );
    let st = status_json(&journal);
    let served_429 = sb.stats().responses.get("429").copied().unwrap_or(0);
    assert!(served_429 > 0, "the sandbox injected no 429");
    assert_eq!(
        value(&f, "imkit_batch_requests_total", job),
        sb.requests_total() as f64
    );
    assert_eq!(
        value(&f, "imkit_batch_requests_total", job),
        st["attempts"].as_f64().unwrap()
    );
    assert_eq!(
        value(&f, "imkit_batch_retries_total", job),
        st["retries"].as_f64().unwrap()
    );
    assert_eq!(
        value(&f, "imkit_batch_rate_limited_total", job),
        served_429 as f64
    );
    assert_eq!(value(&f, "imkit_batch_last_exit_code", job), 1.0);
    let end = value(&f, "imkit_batch_last_run_end_timestamp_seconds", job);
    assert!(end >= t0 && end <= now_s(), "{t0} <= {end}");
    assert!(!f.contains_key("imkit_batch_last_success_timestamp_seconds"));
    for (kind, _) in f.values() {
        assert!(kind == "gauge" || kind == "counter");
    }

    // The finished job re-run: nothing sent, the file written again, the same counters.
    let sent = sb.requests_total();
    let again = exec(run_cmd(
        &sb.url(),
        &manifest,
        &["--action", "freeze", "--metrics-file", m],
    ));
    assert_eq!(again.code, 1, "{again:?}");
    assert_eq!(sb.requests_total(), sent);
    let g = read_metrics(&metrics);
    assert_eq!(ops(&g), ops(&f));
    for c in [
        "imkit_batch_requests_total",
        "imkit_batch_retries_total",
        "imkit_batch_rate_limited_total",
        "imkit_batch_last_exit_code",
    ] {
        assert_eq!(value(&g, c, job), value(&f, c, job), "{c}");
    }
    assert!(value(&g, "imkit_batch_last_run_end_timestamp_seconds", job) >= end);

    // The missing rooms created, --retry-failed: every op done, a success time, and the
    // counters went on from where they were (two more requests at least).
    let mut config = sb.config().clone();
    config.add_room("ghost-1", "owner-1", &[]);
    config.add_room("ghost-2", "owner-1", &[]);
    config.faults.too_many_requests = 0.0;
    drop(sb);
    let sb2 = Sandbox::start(config);
    let t1 = now_s();
    let retry = exec(run_cmd(
        &sb2.url(),
        &manifest,
        // The same service on another port (the journal is bound to its base URL).
        &[
            "--action",
            "freeze",
            "--retry-failed",
            "--retarget",
            "--metrics-file",
            m,
        ],
    ));
    assert_eq!(retry.code, 0, "{retry:?}");
    let h = read_metrics(&metrics);
    assert_eq!(ops(&h)["done"], 42.0);
    assert_eq!(ops(&h)["failed"], 0.0);
    assert_eq!(
        value(&h, "imkit_batch_requests_total", job),
        value(&f, "imkit_batch_requests_total", job) + 2.0
    );
    assert_eq!(
        value(&h, "imkit_batch_retries_total", job),
        value(&f, "imkit_batch_retries_total", job) + 2.0
    );
    assert_eq!(
        value(&h, "imkit_batch_rate_limited_total", job),
        served_429 as f64
    );
    assert_eq!(value(&h, "imkit_batch_last_exit_code", job), 0.0);
    let success = value(&h, "imkit_batch_last_success_timestamp_seconds", job);
    assert!(success >= t1 && success <= now_s(), "{t1} <= {success}");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("prom"))
        .collect();
    assert_eq!(
        names,
        vec!["imkit.prom".to_string()],
        "no temporary file left"
    );
}

/// A run stopped at once (its deadline passed) writes the file too: exit 4, every op
/// pending, nothing sent; the manifest's `name` is the job label.
#[test]
fn a_stopped_run_writes_its_metrics_labelled_with_the_manifest_name() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "version: 1\nname: \"night \\\"mute\\\"\"\nops:\n  - action: freeze\n    rooms: [a, b, c]\n";
    let manifest = util::write(dir.path(), "job.yaml", yaml);
    let metrics = dir.path().join("m.prom");
    let r = exec(util::imkit(&[
        "run",
        manifest.to_str().unwrap(),
        "--sandbox",
        "--progress",
        "never",
        "--until",
        "2020-01-01T00:00:00Z",
        "--metrics-file",
        metrics.to_str().unwrap(),
    ]));
    assert_eq!(r.code, 4, "{r:?}");
    let f = read_metrics(&metrics);
    let job = "night \"mute\"";
    assert_eq!(ops(&f)["pending"], 3.0);
    assert_eq!(value(&f, "imkit_batch_requests_total", job), 0.0);
    assert_eq!(value(&f, "imkit_batch_last_exit_code", job), 4.0);
    assert!(
        std::fs::read_to_string(&metrics)
            .unwrap()
            .contains(r#"job="night \"mute\"""#)
    );
}

/// A metrics file in a directory that does not exist is refused before anything is sent
/// (exit 2, no journal created).
#[test]
fn a_metrics_file_in_a_missing_directory_is_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, config) = freeze_job(dir.path(), "f.csv", 3);
    let sb = Sandbox::start(config);
    let missing = dir.path().join("no-such-dir").join("m.prom");
    let r = exec(run_cmd(
        &sb.url(),
        &manifest,
        &[
            "--action",
            "freeze",
            "--metrics-file",
            missing.to_str().unwrap(),
        ],
    ));
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("does not exist"), "{}", r.stderr);
    assert_eq!(sb.requests_total(), 0);
    assert!(!journal_of(&manifest).exists());
}

/// Runs a job with failures (one in a room whose id is markup), 429s and retries, and
/// writes its page; returns the page, the sandbox's URL and its 429 count.
fn html_report_of_a_failing_job(dir: &Path) -> (String, String, u64) {
    let (manifest, mut config) = freeze_job(dir, "night.csv", 40);
    let text = std::fs::read_to_string(&manifest).unwrap();
    // The markup room comes first: it is among the examples shown.
    let text =
        text.replacen("room\n", "room\n<script>alert(1)</script>\n", 1) + "ghost-1\nghost-2\n";
    std::fs::write(&manifest, text).unwrap();
    config.faults.too_many_requests = 0.15;
    config.fault_retry_after_secs = 0;
    config.fault_seed = 11;
    let sb = Sandbox::start(config);
    let r = exec(run_cmd(&sb.url(), &manifest, &["--action", "freeze"]));
    assert_eq!(r.code, 1, "{r:?}");
    let page = dir.join("report.html");
    let rep = exec(util::imkit(&[
        "report",
        journal_of(&manifest).to_str().unwrap(),
        "--format",
        "html",
        "-o",
        page.to_str().unwrap(),
    ]));
    assert_eq!(rep.code, 0, "{rep:?}");
    let served_429 = sb.stats().responses.get("429").copied().unwrap_or(0);
    (
        std::fs::read_to_string(&page).unwrap(),
        sb.url(),
        served_429,
    )
}

/// The page holds the counts, the failures with their code, status and examples, the runs
/// and three inline charts; ids and messages are escaped; nothing is fetched from anywhere.
#[test]
fn html_report_shows_counts_failures_runs_and_charts() {
    let dir = tempfile::tempdir().unwrap();
    let (page, url, served_429) = html_report_of_a_failing_job(dir.path());
    assert!(page.starts_with("<!DOCTYPE html>"), "{}", &page[..100]);
    assert!(page.trim_end().ends_with("</html>"));
    // Outcome counts per action: 43 freezes, 40 done, 3 failed.
    assert!(
        page.contains(
            "<td>freeze</td><td class=\"n\">43</td><td class=\"n\">40</td><td class=\"n\">3</td>\
             <td class=\"n\">0</td><td class=\"n\">0</td>"
        ),
        "{page}"
    );
    // The failures: the code, how many, the status, and the op whose id is markup, escaped.
    assert!(
        page.contains("<code>ROOM_NOT_FOUND</code> <span class=\"count\">3 ops · HTTP 404</span>")
    );
    assert!(
        page.contains("room &lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(page.contains("<code>") && page.contains("night.csv:2</code>"));
    assert!(
        !page.to_ascii_lowercase().contains("<script"),
        "unescaped markup"
    );
    // Three charts, drawn inline.
    assert_eq!(page.matches("<svg class=\"chart\"").count(), 3);
    // Bars for the counts; the latency of every answered bin as a dot (a line joins
    // neighbouring bins, which a job this small may not fill: a fast machine finishes it
    // within one bin, so the line itself is checked in the chart's unit tests).
    assert!(page.contains("<rect") && page.contains("<circle"));
    // Figures: requests, retries, the 429s the sandbox served; the run and its exit.
    assert!(served_429 > 0);
    let st = status_json(&journal_of(&dir.path().join("night.csv")));
    let card = format!(
        "<div class=\"v\">{}</div><div class=\"d\">{} retries, {served_429} answered 429</div>",
        st["attempts"], st["retries"]
    );
    assert!(page.contains(&card), "{card}");
    assert!(page.contains("1 (ops_failed)"));
    // Self-contained: no reference to any resource; the only URL is the run's base URL,
    // shown as text among its settings.
    for reference in [
        "src=", "href=", "url(", "@import", "<link", "<img", "<iframe", "<object",
    ] {
        assert!(!page.contains(reference), "{reference}");
    }
    let without_base_url = page.replace(url.trim_end_matches('/'), "");
    assert!(!without_base_url.contains("http://") && !without_base_url.contains("https://"));
    assert!(page.contains("Content-Security-Policy\" content=\"default-src 'none'"));
}

/// A job that never sent anything: empty charts say so, the run is listed, nothing fails.
#[test]
fn html_report_of_a_job_that_sent_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = util::write(dir.path(), "j.csv", "room\na\nb\n");
    let r = exec(util::imkit(&[
        "run",
        manifest.to_str().unwrap(),
        "--action",
        "freeze",
        "--sandbox",
        "--progress",
        "never",
        "--until",
        "2020-01-01T00:00:00Z",
    ]));
    assert_eq!(r.code, 4, "{r:?}");
    let rehearsal = dir.path().join("j.csv.sandbox.journal");
    let rep = exec(util::imkit(&[
        "report",
        rehearsal.to_str().unwrap(),
        "--format",
        "html",
    ]));
    assert_eq!(rep.code, 0, "{rep:?}");
    let page = rep.stdout;
    assert_eq!(page.matches("nothing recorded yet").count(), 3);
    assert!(page.contains("No op failed."));
    assert!(page.contains("4 (stopped)"));
    assert!(page.contains("<td class=\"n\">2</td><td class=\"n\">0</td><td class=\"n\">0</td><td class=\"n\">0</td><td class=\"n\">2</td>"), "{page}");
}

/// `--failed` writes a CSV manifest: it cannot be an HTML page.
#[test]
fn report_failed_as_html_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let r = exec(util::imkit(&[
        "report",
        dir.path().join("x.journal").to_str().unwrap(),
        "--failed",
        "--format",
        "html",
    ]));
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("--format html"), "{}", r.stderr);
}

/// A journal written before the time series existed (here: its table dropped) still gives
/// a page, with the ops finished over time taken from the ops and the 429s marked as not
/// recorded; its next run adds the table and the metrics count from there.
#[test]
fn a_journal_without_the_series_still_reports_and_gains_it_on_its_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, config) = freeze_job(dir.path(), "old.csv", 5);
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push_str("ghost-1\n");
    std::fs::write(&manifest, text).unwrap();
    let journal = journal_of(&manifest);
    let sb = Sandbox::start(config.clone());
    let r = exec(run_cmd(&sb.url(), &manifest, &["--action", "freeze"]));
    assert_eq!(r.code, 1, "{r:?}");
    let c = rusqlite::Connection::open(&journal).unwrap();
    c.execute_batch("DROP TABLE run_series").unwrap();
    drop(c);
    let rep = exec(util::imkit(&[
        "report",
        journal.to_str().unwrap(),
        "--format",
        "html",
    ]));
    assert_eq!(rep.code, 0, "{rep:?}");
    let page = rep.stdout;
    assert!(page.contains("429s not recorded"), "{page}");
    assert!(
        page.contains("Not recorded: this job ran with a build"),
        "{page}"
    );
    // Ops finished per second and latency are still drawn, from the ops' own times.
    assert_eq!(page.matches("<svg class=\"chart\"").count(), 2);
    let first = page.split("<svg class=\"chart\"").nth(1).unwrap();
    let first = &first[..first.find("</svg>").unwrap()];
    assert!(first.contains("fill=\"#2e7d32\""), "done bars: {first}");
    assert!(
        first.contains("fill=\"#c62828\""),
        "the failed bar: {first}"
    );

    let mut config = config;
    config.add_room("ghost-1", "owner-1", &[]);
    drop(sb);
    let sb = Sandbox::start(config);
    let metrics = dir.path().join("old.prom");
    let r = exec(run_cmd(
        &sb.url(),
        &manifest,
        &[
            "--action",
            "freeze",
            "--retry-failed",
            "--retarget",
            "--metrics-file",
            metrics.to_str().unwrap(),
        ],
    ));
    assert_eq!(r.code, 0, "{r:?}");
    let f = read_metrics(&metrics);
    assert_eq!(value(&f, "imkit_batch_requests_total", "old.csv"), 7.0);
    assert_eq!(value(&f, "imkit_batch_rate_limited_total", "old.csv"), 0.0);
    let c = rusqlite::Connection::open(&journal).unwrap();
    let rows: i64 = c
        .query_row("SELECT sum(requests) FROM run_series", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1, "the new run's one request is in the series");
}
