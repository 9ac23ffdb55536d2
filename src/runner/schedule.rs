//! When a run works and in which journal: the manifest's window resolved at the time of the
//! run (see [`crate::manifest::window`]), the undo time, and the journal path with `{date}`
//! replaced. `run`, `plan` and `status` resolve the same way, so `plan` shows the journal
//! `run` would use.
//!
//! `{date}` becomes `YYYY-MM-DD`: for a daily window, the date on which the current (or
//! next) window opens in the window's zone, so the morning end of a night window still names
//! the evening it began; otherwise the local date at the time of the run.
//!
//! One exception keeps an undo from being lost: for a daily window with `undo_at_end`, when
//! the journal of the latest window that has already ended still owes its undo (a run killed
//! while it waited for the end, a machine down at the time), that window is the one the run
//! works in: it undoes at once. The next run goes on with the current (or next) window.

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use jiff::civil::Date;

use crate::manifest::{Manifest, Occurrence};

/// What `{date}` stands for in a journal path.
pub(crate) const DATE_PLACEHOLDER: &str = "{date}";

/// The journal of a manifest with a daily window when none is named: the manifest's path +
/// `.{date}.journal`; otherwise the manifest's path + `.journal`. A rehearsal on the sandbox
/// puts `.sandbox` before either.
pub(crate) fn default_journal_template(manifest: &Manifest, sandbox: bool) -> PathBuf {
    let daily = manifest
        .window
        .as_ref()
        .is_some_and(|w| w.daily().is_some());
    let mut s = manifest.path.as_os_str().to_owned();
    if sandbox {
        // A rehearsal never shares a journal with the real run.
        s.push(".sandbox");
    }
    s.push(if daily { ".{date}.journal" } else { ".journal" });
    PathBuf::from(s)
}

/// `template` with every `{date}` replaced by `date` (`YYYY-MM-DD`).
pub(crate) fn with_date(template: &Path, date: Date) -> PathBuf {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let bytes = template.as_os_str().as_bytes();
    let needle = DATE_PLACEHOLDER.as_bytes();
    if !bytes.windows(needle.len()).any(|w| w == needle) {
        return template.to_path_buf();
    }
    let date = date.to_string();
    let mut out = Vec::with_capacity(bytes.len() + 8);
    let mut rest = bytes;
    while let Some(i) = rest.windows(needle.len()).position(|w| w == needle) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(date.as_bytes());
        rest = &rest[i + needle.len()..];
    }
    out.extend_from_slice(rest);
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// Where a run stands: the window occurrence it works in, when its undo is due, and its
/// journal.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    /// The time the schedule was resolved for.
    pub now: Timestamp,
    /// The journal, `{date}` replaced.
    pub journal_path: PathBuf,
    /// The occurrence of the manifest's window the run works in.
    pub window: Option<Occurrence>,
    /// When the undo is due (`undo_at_end`: the occurrence's end; or `--undo-at`); `None`
    /// when the job has no undo.
    pub undo_at: Option<Timestamp>,
    /// The date `{date}` became, and where it came from (for `plan` and messages).
    pub date: Date,
    /// True when the window is an earlier night whose undo is still owed.
    pub owed_undo: bool,
}

impl Schedule {
    /// The undo time, as messages name it.
    pub(crate) fn undo_label(&self) -> Option<String> {
        let t = self.undo_at?;
        Some(match self.window {
            Some(w) if w.end == t => format!("the window's end ({t})"),
            _ => format!("--undo-at {t}"),
        })
    }
}

/// What resolving a schedule needs besides the manifest: the journal path as given (may
/// hold `{date}`), `--undo-at`, and how to tell whether an ended night's journal still owes
/// its undo.
pub(crate) struct ScheduleInput<'a> {
    pub journal_template: &'a Path,
    pub undo_at: Option<Timestamp>,
    pub owes_undo: &'a dyn Fn(&Path) -> bool,
}

/// Resolves the schedule of `manifest` at `now`.
pub(crate) fn resolve(manifest: &Manifest, input: &ScheduleInput<'_>, now: Timestamp) -> Schedule {
    let window = manifest.window.as_ref();
    let undo_at_end = window.is_some_and(|w| w.undo_at_end);
    let at = |occurrence: Option<Occurrence>, date: Date, owed_undo: bool| Schedule {
        now,
        journal_path: with_date(input.journal_template, date),
        window: occurrence,
        undo_at: input
            .undo_at
            .or_else(|| occurrence.filter(|_| undo_at_end).map(|o| o.end)),
        date,
        owed_undo,
    };
    let local_date = || now.to_zoned(jiff::tz::TimeZone::system()).date();
    let Some(w) = window else {
        return at(None, local_date(), false);
    };
    if undo_at_end
        && let Some(prev) = w.previous(now)
        && let Some(date) = prev.date
        && (input.owes_undo)(&with_date(input.journal_template, date))
    {
        return at(Some(prev), date, true);
    }
    let current = w.resolve(now);
    let date = current.and_then(|o| o.date).unwrap_or_else(local_date);
    at(current, date, false)
}

/// Resolves the schedule of `manifest` at `now` with the journal path as given and
/// `--undo-at`; an ended night owes its undo when its journal says so
/// ([`crate::journal::owes_undo`]).
pub(crate) fn resolve_at(
    manifest: &Manifest,
    journal_template: &Path,
    undo_at: Option<Timestamp>,
    now: Timestamp,
) -> Schedule {
    let owes = |p: &Path| crate::journal::owes_undo(p, &manifest.checksum);
    let input = ScheduleInput {
        journal_template,
        undo_at,
        owes_undo: &owes,
    };
    resolve(manifest, &input, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Daily, Window, WindowTimes};
    use crate::op::Op;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn night(undo_at_end: bool) -> Manifest {
        let zone = jiff::tz::TimeZone::get("Asia/Taipei").unwrap();
        Manifest {
            window: Some(Window {
                times: WindowTimes::Daily(Daily {
                    start: jiff::civil::time(22, 0, 0, 0),
                    end: jiff::civil::time(7, 0, 0, 0),
                    zone,
                    zone_name: "Asia/Taipei".into(),
                }),
                undo_at_end,
            }),
            ..Manifest::from_ops("jobs/night.yaml", vec![Op::mute("u", "r")])
        }
    }

    #[test]
    fn date_replaces_every_placeholder() {
        let d = jiff::civil::date(2026, 11, 22);
        assert_eq!(
            with_date(Path::new("/var/{date}/n.{date}.journal"), d),
            PathBuf::from("/var/2026-11-22/n.2026-11-22.journal")
        );
        assert_eq!(
            with_date(Path::new("n.journal"), d),
            PathBuf::from("n.journal")
        );
    }

    #[test]
    fn a_daily_window_defaults_to_a_dated_journal() {
        let m = night(false);
        assert_eq!(
            default_journal_template(&m, false),
            PathBuf::from("jobs/night.yaml.{date}.journal")
        );
        let plain = Manifest::from_ops("jobs/x.csv", vec![]);
        assert_eq!(
            default_journal_template(&plain, false),
            PathBuf::from("jobs/x.csv.journal")
        );
    }

    /// The night of the 22nd (Taipei) gives one journal from its evening to its morning; the
    /// next evening gives another.
    #[test]
    fn one_night_one_journal_two_nights_two() {
        let m = night(false);
        let t = default_journal_template(&m, false);
        let input = ScheduleInput {
            journal_template: &t,
            undo_at: None,
            owes_undo: &|_| false,
        };
        let at = |now: &str| resolve(&m, &input, ts(now));
        let evening = at("2026-11-22T14:30:00Z"); // 22:30
        let morning = at("2026-11-22T22:30:00Z"); // 06:30 on the 23rd
        let next = at("2026-11-23T14:30:00Z"); // 22:30 on the 23rd
        assert_eq!(evening.journal_path, morning.journal_path);
        assert_eq!(
            evening.journal_path,
            PathBuf::from("jobs/night.yaml.2026-11-22.journal")
        );
        assert_eq!(
            next.journal_path,
            PathBuf::from("jobs/night.yaml.2026-11-23.journal")
        );
        assert_eq!(evening.undo_at, None);
        // In the afternoon, the next window (that evening's) is the one.
        let afternoon = at("2026-11-23T06:00:00Z");
        assert_eq!(afternoon.journal_path, next.journal_path);
    }

    /// With `undo_at_end`, the undo is due at the window's end; a night whose journal still
    /// owes its undo is worked in first, then the next.
    #[test]
    fn an_owed_undo_comes_first() {
        let m = night(true);
        let t = default_journal_template(&m, false);
        let owed = PathBuf::from("jobs/night.yaml.2026-11-22.journal");
        let owes = |p: &Path| p == owed;
        let input = ScheduleInput {
            journal_template: &t,
            undo_at: None,
            owes_undo: &owes,
        };
        let s = resolve(&m, &input, ts("2026-11-23T01:00:00Z")); // 09:00 on the 23rd
        assert!(s.owed_undo);
        assert_eq!(s.journal_path, owed);
        assert_eq!(s.undo_at, Some(ts("2026-11-22T23:00:00Z")));
        let none = ScheduleInput {
            owes_undo: &|_| false,
            ..input
        };
        let s = resolve(&m, &none, ts("2026-11-23T01:00:00Z"));
        assert!(!s.owed_undo);
        assert_eq!(s.undo_at, Some(ts("2026-11-23T23:00:00Z")));
    }

    #[test]
    fn without_a_daily_window_the_date_is_local() {
        let m = Manifest::from_ops("x.csv", vec![]);
        let input = ScheduleInput {
            journal_template: Path::new("x.{date}.journal"),
            undo_at: Some(ts("2026-11-22T14:00:00Z")),
            owes_undo: &|_| false,
        };
        let now = ts("2026-11-22T12:00:00Z");
        let s = resolve(&m, &input, now);
        let local = now.to_zoned(jiff::tz::TimeZone::system()).date();
        assert_eq!(s.date, local);
        assert_eq!(s.undo_at, input.undo_at);
        assert_eq!(s.window, None);
        assert_eq!(s.undo_label().unwrap(), "--undo-at 2026-11-22T14:00:00Z");
    }
}
