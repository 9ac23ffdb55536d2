//! The manifest's `window`: when a job may send, and whether it undoes itself at the end.
//! Two kinds: one window given as RFC 3339 instants, or a daily window given as times of day
//! in an IANA time zone (`start: "22:00"`, `end: "07:00"`, `timezone: Asia/Taipei`; an end
//! at or before the start crosses midnight).
//!
//! A daily window stands for one [`Occurrence`] per day, named by the date on which it
//! opens in its zone. [`Window::resolve`] picks the occurrence a `run` at a given instant
//! works in: the one open at that instant, else the next one to open; [`Window::previous`]
//! is the latest one that has ended (a night whose undo may still be owed).
//!
//! Daylight saving time: a time of day is turned into an instant with jiff's "compatible"
//! rule (as RFC 5545 and most schedulers do). A time that falls in a gap (the clock jumps
//! forward over it) is moved forward by the length of the gap, so 02:30 on a night the
//! clocks go from 02:00 to 03:00 opens at 03:30; a time that occurs twice (the clock goes
//! back) means the earlier of the two instants. A window is thus one hour shorter or longer
//! on the two nights a year the clocks change, and never skipped.

use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// The YAML `window`.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    pub times: WindowTimes,
    /// `undo_at_end: true`: at the end, undo what the job changed, in the same run.
    pub undo_at_end: bool,
}

/// When the window is open.
#[derive(Clone, Debug, PartialEq)]
pub enum WindowTimes {
    /// RFC 3339 start and end: a single window.
    Once { start: Timestamp, end: Timestamp },
    /// Times of day in a time zone: a window every day.
    Daily(Daily),
}

/// A daily window: from `start` to `end` (the next day when `end <= start`) in `zone`.
#[derive(Clone, Debug, PartialEq)]
pub struct Daily {
    pub start: Time,
    pub end: Time,
    pub zone: TimeZone,
    /// The IANA name as written, for messages and the journal.
    pub zone_name: String,
}

/// One opening of a window, as instants: nothing is sent before `start` nor from `end` on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Occurrence {
    pub start: Timestamp,
    pub end: Timestamp,
    /// For a daily window, the date on which this occurrence opens, in the window's zone
    /// (what `{date}` in a journal path becomes).
    pub date: Option<Date>,
}

impl Occurrence {
    /// Where `now` stands against this occurrence.
    pub fn state(&self, now: Timestamp) -> WindowState {
        if now < self.start {
            WindowState::NotYet
        } else if now >= self.end {
            WindowState::Closed
        } else {
            WindowState::Open
        }
    }
}

/// Where an instant stands against an occurrence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowState {
    NotYet,
    Open,
    Closed,
}

impl Window {
    /// The occurrence a run at `now` works in: the window itself for a single window; for a
    /// daily window the one open at `now`, else the next one to open.
    pub fn resolve(&self, now: Timestamp) -> Option<Occurrence> {
        match &self.times {
            WindowTimes::Once { start, end } => Some(Occurrence {
                start: *start,
                end: *end,
                date: None,
            }),
            WindowTimes::Daily(d) => d.resolve(now),
        }
    }

    /// For a daily window, the latest occurrence that ended at or before `now` (`None` for
    /// a single window).
    pub fn previous(&self, now: Timestamp) -> Option<Occurrence> {
        match &self.times {
            WindowTimes::Once { .. } => None,
            WindowTimes::Daily(d) => d.previous(now),
        }
    }

    /// The daily window, if this is one.
    pub fn daily(&self) -> Option<&Daily> {
        match &self.times {
            WindowTimes::Daily(d) => Some(d),
            WindowTimes::Once { .. } => None,
        }
    }

    /// How the window reads in messages: `22:00-07:00 Asia/Taipei, daily` or the instants.
    pub fn describe(&self) -> String {
        match &self.times {
            WindowTimes::Once { start, end } => format!("{start} to {end}"),
            WindowTimes::Daily(d) => format!(
                "{}-{} {}, daily",
                short_time(d.start),
                short_time(d.end),
                d.zone_name
            ),
        }
    }

    /// The window as the journal's settings record it.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let kind = match &self.times {
            WindowTimes::Once { start, end } => serde_json::json!({
                "start": start.to_string(), "end": end.to_string()
            }),
            WindowTimes::Daily(d) => serde_json::json!({
                "start": short_time(d.start),
                "end": short_time(d.end),
                "timezone": d.zone_name,
                "daily": true,
            }),
        };
        let mut kind = kind;
        if let Some(o) = kind.as_object_mut() {
            o.insert("undo_at_end".into(), self.undo_at_end.into());
        }
        kind
    }
}

impl Daily {
    /// The occurrence that opens on `date`, or `None` past the ends of time.
    pub fn on(&self, date: Date) -> Option<Occurrence> {
        let end_date = if self.end <= self.start {
            date.checked_add(1.day()).ok()?
        } else {
            date
        };
        let at = |d: Date, t: Time| -> Option<Timestamp> {
            let zoned = self
                .zone
                .to_ambiguous_zoned(d.to_datetime(t))
                .compatible()
                .ok()?;
            Some(zoned.timestamp())
        };
        let start = at(date, self.start)?;
        let end = at(end_date, self.end)?;
        // Only a clock change could make the end come first; such a night has no window.
        let end = end.max(start);
        Some(Occurrence {
            start,
            end,
            date: Some(date),
        })
    }

    /// The occurrences opening from two days before the date of `now` (in the zone) to two
    /// days after, in order.
    fn around(&self, now: Timestamp) -> Vec<Occurrence> {
        let today = now.to_zoned(self.zone.clone()).date();
        (-2i64..=2)
            .filter_map(|n| today.checked_add(n.days()).ok())
            .filter_map(|d| self.on(d))
            .collect()
    }

    fn resolve(&self, now: Timestamp) -> Option<Occurrence> {
        let all = self.around(now);
        let open = all.iter().rev().find(|o| o.state(now) == WindowState::Open);
        open.or_else(|| all.iter().find(|o| o.start > now)).copied()
    }

    fn previous(&self, now: Timestamp) -> Option<Occurrence> {
        self.around(now)
            .into_iter()
            .rev()
            .find(|o| o.start < o.end && o.end <= now)
    }
}

/// `22:00`, or `22:00:30` when the seconds are not zero.
fn short_time(t: Time) -> String {
    if t.second() == 0 {
        format!("{:02}:{:02}", t.hour(), t.minute())
    } else {
        format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second())
    }
}

/// What a `window.start`/`window.end` value is.
pub(crate) enum WindowTime {
    OfDay(Time),
    Instant(Timestamp),
}

/// Reads a window time: `HH:MM` or `HH:MM:SS` (a time of day), or an RFC 3339 instant with
/// an offset. The error says what was expected.
pub(crate) fn parse_window_time(s: &str) -> Result<WindowTime, String> {
    let s = s.trim();
    if looks_like_time_of_day(s) {
        return parse_time_of_day(s).map(WindowTime::OfDay);
    }
    s.parse::<Timestamp>().map(WindowTime::Instant).map_err(|e| {
        if s.contains('-') {
            // Meant as a date-time.
            format!(
                "is not an RFC 3339 time with an offset, such as 2026-11-22T22:00:00+08:00 ({e})"
            )
        } else {
            format!(
                "is neither a time of day (HH:MM or HH:MM:SS, such as 22:00) nor an RFC 3339 \
                 time with an offset, such as 2026-11-22T22:00:00+08:00 ({e})"
            )
        }
    })
}

/// Digits and colons only, with a colon: meant as a time of day.
fn looks_like_time_of_day(s: &str) -> bool {
    s.contains(':') && s.chars().all(|c| c.is_ascii_digit() || c == ':')
}

/// `HH:MM` or `HH:MM:SS`, two digits each, 00:00 to 23:59:59.
fn parse_time_of_day(s: &str) -> Result<Time, String> {
    let bad = || {
        "is not a time of day: write HH:MM or HH:MM:SS with two digits each, from 00:00 to \
         23:59:59 (such as 22:00 or 07:30:00)"
            .to_string()
    };
    let parts: Vec<&str> = s.split(':').collect();
    if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.len() != 2) {
        return Err(bad());
    }
    let n = |i: usize| -> Result<i8, String> {
        parts
            .get(i)
            .map_or(Ok(0), |p| p.parse::<i8>().map_err(|_| bad()))
    };
    let (h, m, sec) = (n(0)?, n(1)?, n(2)?);
    Time::new(h, m, sec, 0).map_err(|_| bad())
}

/// The IANA time zone `name`, from the system's database (`/usr/share/zoneinfo`, or
/// `TZDIR`) or, where there is none, the copy built into the binary. The error suggests a
/// close name.
pub(crate) fn zone(name: &str) -> Result<TimeZone, String> {
    let name = name.trim();
    match TimeZone::get(name) {
        Ok(tz) => Ok(tz),
        Err(_) => {
            let names: Vec<String> = jiff::tz::db().available().map(|n| n.to_string()).collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            Err(format!(
                "{name:?} is not a known IANA time zone{}; write a name such as Asia/Taipei, \
                 Europe/Paris or UTC",
                super::did_you_mean(name, &refs)
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn daily(start: &str, end: &str, zone_name: &str) -> Window {
        let t = |s: &str| match parse_window_time(s).unwrap() {
            WindowTime::OfDay(t) => t,
            WindowTime::Instant(_) => panic!("{s}"),
        };
        Window {
            times: WindowTimes::Daily(Daily {
                start: t(start),
                end: t(end),
                zone: zone(zone_name).unwrap(),
                zone_name: zone_name.into(),
            }),
            undo_at_end: false,
        }
    }

    #[test]
    fn times_of_day_are_strict() {
        for ok in ["22:00", "07:30:15", "00:00", "23:59:59"] {
            assert!(
                matches!(parse_window_time(ok), Ok(WindowTime::OfDay(_))),
                "{ok}"
            );
        }
        for bad in [
            "24:00",
            "7:00",
            "22:60",
            "22:00:60",
            "22",
            "22:00:00:00",
            "::",
        ] {
            let e = parse_window_time(bad).err().unwrap_or_default();
            assert!(e.contains("HH:MM"), "{bad}: {e}");
        }
        assert!(matches!(
            parse_window_time("2026-11-22T22:00:00+08:00"),
            Ok(WindowTime::Instant(_))
        ));
        let e = parse_window_time("tonight").err().unwrap();
        assert!(
            e.contains("neither a time of day") && e.contains("RFC 3339"),
            "{e}"
        );
    }

    #[test]
    fn zones_come_from_the_database_with_a_suggestion() {
        assert!(zone("Asia/Taipei").is_ok());
        assert!(zone("UTC").is_ok());
        let e = zone("Asia/Taipie").unwrap_err();
        assert!(e.contains("did you mean `Asia/Taipei`?"), "{e}");
        assert!(
            zone("Mars/Olympus")
                .unwrap_err()
                .contains("not a known IANA")
        );
    }

    /// A night window in Taipei (UTC+8, no DST): inside it, the occurrence is the one that
    /// opened the evening before, dated by that evening, also after midnight; after its end,
    /// the next evening's.
    #[test]
    fn a_night_window_resolves_to_the_evening_it_opened() {
        let w = daily("22:00", "07:00", "Asia/Taipei");
        // 23:30 and 03:00 local on the night of 2026-11-22.
        for now in ["2026-11-22T15:30:00Z", "2026-11-22T19:00:00Z"] {
            let o = w.resolve(ts(now)).unwrap();
            assert_eq!(o.date.unwrap().to_string(), "2026-11-22", "{now}");
            assert_eq!(o.start, ts("2026-11-22T14:00:00Z"));
            assert_eq!(o.end, ts("2026-11-22T23:00:00Z"));
            assert_eq!(o.state(ts(now)), WindowState::Open);
        }
        // 07:00 local: that night is over; the next opens at 22:00 the same day.
        let now = ts("2026-11-22T23:00:00Z");
        let o = w.resolve(now).unwrap();
        assert_eq!(o.date.unwrap().to_string(), "2026-11-23");
        assert_eq!(o.state(now), WindowState::NotYet);
        let p = w.previous(now).unwrap();
        assert_eq!(p.date.unwrap().to_string(), "2026-11-22");
        // 21:59 local: not yet open; the previous night ended that morning.
        let now = ts("2026-11-23T13:59:00Z");
        assert_eq!(
            w.resolve(now).unwrap().date.unwrap().to_string(),
            "2026-11-23"
        );
        assert_eq!(
            w.previous(now).unwrap().date.unwrap().to_string(),
            "2026-11-22"
        );
    }

    #[test]
    fn a_day_window_stays_on_its_day() {
        let w = daily("09:00", "17:30", "UTC");
        let o = w.resolve(ts("2026-11-22T12:00:00Z")).unwrap();
        assert_eq!(o.start, ts("2026-11-22T09:00:00Z"));
        assert_eq!(o.end, ts("2026-11-22T17:30:00Z"));
        let o = w.resolve(ts("2026-11-22T18:00:00Z")).unwrap();
        assert_eq!(o.start, ts("2026-11-23T09:00:00Z"));
        assert_eq!(w.describe(), "09:00-17:30 UTC, daily");
    }

    /// The clocks change: in Europe/Berlin 2026-03-29 has no 02:30 (it is moved to 03:30),
    /// and 2026-10-25 has 02:30 twice (the earlier one, +02:00, is taken).
    #[test]
    fn dst_gaps_move_forward_and_folds_take_the_earlier_instant() {
        let w = daily("02:30", "05:00", "Europe/Berlin");
        let spring = w.resolve(ts("2026-03-29T00:00:00Z")).unwrap();
        assert_eq!(spring.start, ts("2026-03-29T01:30:00Z")); // 03:30 +02:00
        assert_eq!(spring.end, ts("2026-03-29T03:00:00Z")); // 05:00 +02:00
        let autumn = w.resolve(ts("2026-10-24T23:00:00Z")).unwrap();
        assert_eq!(autumn.start, ts("2026-10-25T00:30:00Z")); // 02:30 +02:00
        assert_eq!(autumn.end, ts("2026-10-25T04:00:00Z")); // 05:00 +01:00
    }

    #[test]
    fn a_single_window_is_itself() {
        let w = Window {
            times: WindowTimes::Once {
                start: ts("2026-11-22T14:00:00Z"),
                end: ts("2026-11-22T18:00:00Z"),
            },
            undo_at_end: true,
        };
        let o = w.resolve(ts("2030-01-01T00:00:00Z")).unwrap();
        assert_eq!(o.state(ts("2030-01-01T00:00:00Z")), WindowState::Closed);
        assert_eq!(o.date, None);
        assert_eq!(w.previous(ts("2030-01-01T00:00:00Z")), None);
        assert_eq!(w.to_json()["undo_at_end"], true);
    }
}
