//! The metrics file of `run --metrics-file`, in the Prometheus text exposition format, for
//! node_exporter's textfile collector: the job's ops by outcome (gauges, from the journal's
//! counts), the requests, retries and 429s over the job's life (counters over every run of
//! the journal), and the last run's exit code and end time, with the time of the job's
//! success once every op is done. Every sample carries `job="<manifest name, else file
//! name>"`.
//!
//! The file is replaced atomically: written whole to a temporary file in the same directory
//! (a name the collector ignores: it reads only `*.prom`), synced, then renamed over the old
//! one, so a scrape never sees half a file.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::Exit;
use crate::journal::{Counts, Journal, JournalError};

/// The run the file is written after: how this invocation of `run` ended.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LastRun {
    pub(crate) exit: Exit,
    /// Unix milliseconds.
    pub(crate) ended_at_ms: i64,
}

/// Everything the file says.
#[derive(Clone, Debug, PartialEq)]
struct Figures {
    counts: Counts,
    requests: u64,
    retries: u64,
    rate_limited: u64,
    last_exit_code: u8,
    last_run_end_ms: i64,
    /// When the job ended with every op done (none failed, none pending).
    last_success_ms: Option<i64>,
}

/// Reads the figures of the job from its journal.
fn gather(journal: &Journal, last: LastRun) -> Result<Figures, JournalError> {
    let counts = journal.counts()?;
    let (requests, retries) = journal.attempt_totals()?;
    let rate_limited = journal.series_totals()?.rate_limited;
    let all_done = counts.pending == 0 && counts.failed == 0;
    let last_success_ms = if all_done {
        Some(journal.job()?.ended_at.unwrap_or(last.ended_at_ms))
    } else {
        None
    };
    Ok(Figures {
        counts,
        requests,
        retries,
        rate_limited,
        last_exit_code: last.exit.code(),
        last_run_end_ms: last.ended_at_ms,
        last_success_ms,
    })
}

/// A label value as the text format wants it: `\`, `"` and line feeds escaped.
fn label_value(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => o.push_str(r"\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str(r"\n"),
            c => o.push(c),
        }
    }
    o
}

/// Unix milliseconds as seconds with three decimals.
fn seconds(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

/// One metric family: its HELP and TYPE lines, then its samples (`labels` without braces).
fn family(o: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, String)]) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(o, "{name}{{{labels}}} {value}");
    }
}

/// The file's text for job `job`.
fn render(job: &str, f: &Figures) -> String {
    let job = format!("job=\"{}\"", label_value(job));
    let one = |v: String| vec![(job.clone(), v)];
    let mut o = String::new();
    let c = &f.counts;
    let ops: Vec<(String, String)> = [
        ("done", c.done),
        ("failed", c.failed),
        ("pending", c.pending),
        ("skipped", c.skipped),
    ]
    .iter()
    .map(|(outcome, n)| (format!("{job},outcome=\"{outcome}\""), n.to_string()))
    .collect();
    family(
        &mut o,
        "imkit_batch_ops",
        "gauge",
        "Ops of the job by outcome, from its journal.",
        &ops,
    );
    family(
        &mut o,
        "imkit_batch_requests_total",
        "counter",
        "Requests answered over the job's life (every run of its journal).",
        &one(f.requests.to_string()),
    );
    family(
        &mut o,
        "imkit_batch_retries_total",
        "counter",
        "Requests that were retries (an op's second attempt or later), over the job's life.",
        &one(f.retries.to_string()),
    );
    family(
        &mut o,
        "imkit_batch_rate_limited_total",
        "counter",
        "Requests answered 429 (rate limited), over the job's life.",
        &one(f.rate_limited.to_string()),
    );
    family(
        &mut o,
        "imkit_batch_last_exit_code",
        "gauge",
        "Exit code of the last run: 0 every op done, 1 some failed, 2 invalid, 3 aborted, 4 stopped.",
        &one(f.last_exit_code.to_string()),
    );
    family(
        &mut o,
        "imkit_batch_last_run_end_timestamp_seconds",
        "gauge",
        "When the last run ended, in Unix seconds.",
        &one(seconds(f.last_run_end_ms)),
    );
    if let Some(ms) = f.last_success_ms {
        family(
            &mut o,
            "imkit_batch_last_success_timestamp_seconds",
            "gauge",
            "When the job ended with every op done, in Unix seconds.",
            &one(seconds(ms)),
        );
    }
    o
}

/// The temporary file beside `dest` that [`write_atomically`] writes first.
fn temp_path(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "metrics".into());
    dest.with_file_name(format!(".{name}.tmp.{}", std::process::id()))
}

/// Replaces `dest` with `text`: a temporary file in the same directory, synced, renamed
/// over it (then the directory synced, best effort). The temporary file is removed on error.
fn write_atomically(dest: &Path, text: &str) -> std::io::Result<()> {
    let tmp = temp_path(dest);
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, dest)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return written;
    }
    if let Some(dir) = dest.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Writes the metrics file `dest` of the job whose journal is `journal`, labelled `job`,
/// after the run `last`.
pub(crate) fn write(dest: &Path, journal: &Path, job: &str, last: LastRun) -> anyhow::Result<()> {
    let j = Journal::open_read_only(journal)?;
    let figures = gather(&j, last)?;
    drop(j);
    write_atomically(dest, &render(job, &figures))
        .with_context(|| format!("cannot write the metrics file {}", dest.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// One sample of a parsed file.
    #[derive(Debug, PartialEq)]
    struct Sample {
        labels: BTreeMap<String, String>,
        value: f64,
    }

    /// The families of a file in the text format: name -> (type, help, samples). Panics on
    /// anything the format does not allow: a sample before its TYPE, a bad label set or
    /// value, a family declared twice.
    fn parse(text: &str) -> BTreeMap<String, (String, String, Vec<Sample>)> {
        let mut out: BTreeMap<String, (String, String, Vec<Sample>)> = BTreeMap::new();
        let mut help = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, h) = rest.split_once(' ').expect("HELP name text");
                assert!(help.insert(name.to_string(), h.to_string()).is_none());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, t) = rest.split_once(' ').expect("TYPE name type");
                assert!(["counter", "gauge"].contains(&t), "{t}");
                let h = help.get(name).cloned().expect("HELP before TYPE");
                assert!(
                    out.insert(name.into(), (t.into(), h, vec![])).is_none(),
                    "{name} twice"
                );
            } else {
                let (name, labels, value) = parse_sample(line);
                let fam = out.get_mut(&name).expect("sample after its TYPE");
                fam.2.push(Sample { labels, value });
            }
        }
        out
    }

    /// `name{k="v",...} value`, with `\\`, `\"` and `\n` unescaped in values.
    fn parse_sample(line: &str) -> (String, BTreeMap<String, String>, f64) {
        let open = line.find('{').expect("labels");
        let name = &line[..open];
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{name}"
        );
        let mut labels = BTreeMap::new();
        let mut chars = line[open + 1..].chars();
        loop {
            let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
            assert_eq!(chars.next(), Some('"'), "{line}");
            let mut v = String::new();
            loop {
                match chars.next().expect("closing quote") {
                    '\\' => match chars.next() {
                        Some('\\') => v.push('\\'),
                        Some('"') => v.push('"'),
                        Some('n') => v.push('\n'),
                        o => panic!("bad escape {o:?} in {line}"),
                    },
                    '"' => break,
                    c => v.push(c),
                }
            }
            labels.insert(key, v);
            match chars.next() {
                Some(',') => {}
                Some('}') => break,
                o => panic!("{o:?} in {line}"),
            }
        }
        let rest: String = chars.collect();
        let value = rest
            .strip_prefix(' ')
            .expect("space")
            .parse()
            .expect("value");
        (name.to_string(), labels, value)
    }

    fn figures() -> Figures {
        Figures {
            counts: Counts {
                pending: 2,
                done: 7,
                failed: 1,
                skipped: 0,
            },
            requests: 15,
            retries: 5,
            rate_limited: 3,
            last_exit_code: 4,
            last_run_end_ms: 1_700_000_000_250,
            last_success_ms: None,
        }
    }

    #[test]
    fn every_family_has_its_type_labels_and_value() {
        let fams = parse(&render("night-mute", &figures()));
        let value = |name: &str| {
            let (_, _, s) = &fams[name];
            assert_eq!(s.len(), 1, "{name}");
            assert_eq!(s[0].labels["job"], "night-mute");
            s[0].value
        };
        assert_eq!(fams["imkit_batch_ops"].0, "gauge");
        let ops: BTreeMap<_, _> = fams["imkit_batch_ops"]
            .2
            .iter()
            .map(|s| (s.labels["outcome"].clone(), s.value))
            .collect();
        assert_eq!(
            ops,
            BTreeMap::from([
                ("done".into(), 7.0),
                ("failed".into(), 1.0),
                ("pending".into(), 2.0),
                ("skipped".into(), 0.0)
            ])
        );
        for c in [
            "imkit_batch_requests_total",
            "imkit_batch_retries_total",
            "imkit_batch_rate_limited_total",
        ] {
            assert_eq!(fams[c].0, "counter", "{c}");
        }
        assert_eq!(value("imkit_batch_requests_total"), 15.0);
        assert_eq!(value("imkit_batch_retries_total"), 5.0);
        assert_eq!(value("imkit_batch_rate_limited_total"), 3.0);
        assert_eq!(value("imkit_batch_last_exit_code"), 4.0);
        assert_eq!(
            value("imkit_batch_last_run_end_timestamp_seconds"),
            1_700_000_000.25
        );
        // Not every op done: no success time.
        assert!(!fams.contains_key("imkit_batch_last_success_timestamp_seconds"));
        let done = Figures {
            last_success_ms: Some(1_700_000_000_000),
            ..figures()
        };
        let fams = parse(&render("j", &done));
        let (t, _, s) = &fams["imkit_batch_last_success_timestamp_seconds"];
        assert_eq!((t.as_str(), s[0].value), ("gauge", 1_700_000_000.0));
    }

    /// Backslashes, quotes and line feeds in the job's name are escaped; the parser gets
    /// the name back.
    #[test]
    fn label_values_are_escaped() {
        let name = "a \"quoted\" \\ name\nwith a line feed";
        let text = render(name, &figures());
        assert!(text.contains(r#"job="a \"quoted\" \\ name\nwith a line feed""#));
        // HELP and TYPE of six families, four `ops` samples and one of each other family.
        assert_eq!(text.lines().count(), 2 * 6 + 4 + 5);
        for (_, _, samples) in parse(&text).values() {
            assert!(samples.iter().all(|s| s.labels["job"] == name));
        }
    }

    /// The new text replaces the old by a rename: a reader holding the old file still reads
    /// the whole old text, the path holds the whole new one, and no temporary file is left.
    #[test]
    fn the_file_is_replaced_by_a_rename() {
        use std::io::Read as _;
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir().expect("temp dir");
        let dest = dir.path().join("imkit.prom");
        write_atomically(&dest, "old text\n").expect("first write");
        let before = std::fs::metadata(&dest).expect("stat").ino();
        let mut reader = File::open(&dest).expect("open the old file");
        let tmp = temp_path(&dest);
        assert_ne!(tmp, dest);
        assert_eq!(
            tmp.parent(),
            dest.parent(),
            "same directory, same file system"
        );
        assert!(
            !tmp.to_string_lossy().ends_with(".prom"),
            "ignored by the collector"
        );
        write_atomically(&dest, "new text\n").expect("second write");
        let mut old = String::new();
        reader.read_to_string(&mut old).expect("read the old file");
        assert_eq!(old, "old text\n");
        assert_eq!(std::fs::read_to_string(&dest).expect("read"), "new text\n");
        assert_ne!(std::fs::metadata(&dest).expect("stat").ino(), before);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("imkit.prom")]);
    }

    /// A failed write leaves the old file as it was and no temporary file behind.
    #[test]
    fn a_failed_write_leaves_the_old_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        // A directory where the file should be: the rename fails.
        let dest = dir.path().join("taken.prom");
        std::fs::create_dir(&dest).expect("mkdir");
        std::fs::write(dest.join("inside"), "x").expect("write");
        assert!(write_atomically(&dest, "text").is_err());
        assert!(dest.is_dir());
        assert!(!temp_path(&dest).exists());
    }
}
