//! Inline SVG charts over the report's [`Timeline`]: bars (stacked or side by side) and
//! lines, one value per bin and series, with a y axis of round steps, time labels (UTC)
//! under the bins, a dashed mark where a long pause was cut out, and a `<title>` tooltip
//! per bin. Plain markup, no script: the page is self-contained.

use std::fmt::Write as _;

use super::esc;
use super::facts::Timeline;

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 34.0;
/// Width of the mark where a pause was cut out.
const GAP_W: f64 = 14.0;

/// How the series of a chart are drawn.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Style {
    /// Bars, the series stacked on each other.
    Stacked,
    /// Bars, the series side by side within a bin.
    Grouped,
    /// A line per series through the bins' centres; a bin without a value breaks it.
    Lines,
}

/// One series: its name (legend, tooltips), colour and a value per bin.
pub(super) struct Series {
    pub(super) name: &'static str,
    pub(super) color: &'static str,
    pub(super) values: Vec<Option<f64>>,
}

/// A chart: its series over the bins of `timeline`, in `unit` (y axis).
pub(super) struct Chart<'a> {
    pub(super) label: &'a str,
    pub(super) unit: &'a str,
    pub(super) style: Style,
    /// The values are counts: the y axis steps by whole numbers.
    pub(super) whole: bool,
    pub(super) series: Vec<Series>,
    pub(super) timeline: &'a Timeline,
}

/// Where bins go horizontally.
struct XAxis {
    slot: f64,
    /// Per bin: its left edge.
    left: Vec<f64>,
}

impl XAxis {
    fn new(t: &Timeline) -> XAxis {
        let n = t.bins.len().max(1) as f64;
        let plot = WIDTH - LEFT - RIGHT - GAP_W * t.gaps.len() as f64;
        let slot = plot / n;
        let left = t
            .bins
            .iter()
            .enumerate()
            .map(|(i, b)| LEFT + slot * i as f64 + GAP_W * b.segment as f64)
            .collect();
        XAxis { slot, left }
    }
}

/// A round step for a y axis from 0 to `max` in about four steps, and the axis' top; a
/// whole number of at least 1 for counts (`whole`).
fn y_scale(max: f64, whole: bool) -> (f64, f64) {
    if max <= 0.0 || !max.is_finite() {
        return (1.0, 4.0);
    }
    let raw = max / 4.0;
    let mag = 10f64.powf(raw.log10().floor());
    let mut step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .filter(|s| !whole || s.fract() == 0.0)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * mag);
    if whole {
        step = step.max(1.0);
    }
    (step, (max / step).ceil() * step)
}

/// A value as an axis or tooltip label: whole numbers plain, others with up to two decimals.
pub(super) fn num(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// `HH:MM:SS` (UTC) of Unix seconds, with the date when `dated`.
pub(super) fn clock(s: i64, dated: bool) -> String {
    let Ok(t) = jiff::Timestamp::from_second(s) else {
        return s.to_string();
    };
    let fmt = if dated {
        "%Y-%m-%d %H:%M:%S"
    } else {
        "%H:%M:%S"
    };
    t.strftime(fmt).to_string()
}

/// The chart as an `<svg>` element.
pub(super) fn render(c: &Chart) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        "<svg class=\"chart\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"{}\">",
        esc(c.label)
    );
    if c.timeline.bins.is_empty() {
        let _ = write!(
            o,
            "<text x=\"{}\" y=\"{}\" class=\"empty\" text-anchor=\"middle\">nothing recorded yet</text></svg>",
            WIDTH / 2.0,
            HEIGHT / 2.0
        );
        return o;
    }
    let x = XAxis::new(c.timeline);
    let max = top_value(c);
    let (step, top) = y_scale(max, c.whole);
    let y = |v: f64| TOP + (HEIGHT - TOP - BOTTOM) * (1.0 - v / top);
    y_axis(&mut o, step, top, c.unit, &y);
    x_axis(&mut o, c.timeline, &x);
    match c.style {
        Style::Lines => lines(&mut o, c, &x, &y),
        Style::Stacked | Style::Grouped => bars(&mut o, c, &x, &y),
    }
    o.push_str("</svg>");
    o
}

/// The highest point drawn: of the sums for stacked bars, else of the values.
fn top_value(c: &Chart) -> f64 {
    let n = c.timeline.bins.len();
    (0..n)
        .map(|i| {
            let vals = c.series.iter().map(|s| s.values.get(i).copied().flatten());
            if c.style == Style::Stacked {
                vals.map(|v| v.unwrap_or(0.0)).sum::<f64>()
            } else {
                vals.map(|v| v.unwrap_or(0.0)).fold(0.0, f64::max)
            }
        })
        .fold(0.0, f64::max)
}

/// Grid lines and labels of the y axis, and its unit.
fn y_axis(o: &mut String, step: f64, top: f64, unit: &str, y: &impl Fn(f64) -> f64) {
    let mut v = 0.0;
    while v <= top + step / 2.0 {
        let yy = y(v);
        let _ = write!(
            o,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\"/>\
             <text class=\"tick\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            WIDTH - RIGHT,
            LEFT - 6.0,
            yy + 4.0,
            esc(&num(v))
        );
        v += step;
    }
    let _ = write!(
        o,
        "<text class=\"unit\" x=\"12\" y=\"{:.1}\" transform=\"rotate(-90 12 {:.1})\" text-anchor=\"middle\">{}</text>",
        (HEIGHT - BOTTOM + TOP) / 2.0,
        (HEIGHT - BOTTOM + TOP) / 2.0,
        esc(unit)
    );
}

/// Time labels under some bins (the first of each segment among them), and a dashed mark
/// with the length of each pause cut out.
fn x_axis(o: &mut String, t: &Timeline, x: &XAxis) {
    let base = HEIGHT - BOTTOM;
    let every = t.bins.len().div_ceil(8).max(1);
    let mut last_label = f64::NEG_INFINITY;
    for (i, b) in t.bins.iter().enumerate() {
        let first_of_segment = i == 0 || t.bins[i - 1].segment != b.segment;
        let left = x.left[i];
        // Labels are centred on their tick; one too near the right edge would be cut.
        let fits = left + 28.0 <= WIDTH;
        if (i % every == 0 || first_of_segment) && left - last_label > 80.0 && fits {
            last_label = left;
            let _ = write!(
                o,
                "<line class=\"axis\" x1=\"{left:.1}\" x2=\"{left:.1}\" y1=\"{base}\" y2=\"{}\"/>\
                 <text class=\"tick\" x=\"{left:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                base + 4.0,
                base + 16.0,
                esc(&clock(b.start, false))
            );
        }
        if first_of_segment && i > 0 {
            let gap = t.gaps.get(b.segment - 1).copied().unwrap_or(0);
            let mx = left - GAP_W / 2.0;
            let _ = write!(
                o,
                "<line class=\"cut\" x1=\"{mx:.1}\" x2=\"{mx:.1}\" y1=\"{TOP}\" y2=\"{base}\"/>\
                 <text class=\"cutlabel\" x=\"{mx:.1}\" y=\"{}\" text-anchor=\"middle\">{} later</text>",
                base + 30.0,
                esc(
                    &humantime::format_duration(std::time::Duration::from_secs(gap.max(0) as u64))
                        .to_string()
                )
            );
        }
    }
    let _ = write!(
        o,
        "<line class=\"axis\" x1=\"{LEFT}\" x2=\"{}\" y1=\"{base}\" y2=\"{base}\"/>",
        WIDTH - RIGHT
    );
}

/// The tooltip of bin `i`: its time and each series' value.
fn tooltip(c: &Chart, i: usize) -> String {
    let b = &c.timeline.bins[i];
    let mut t = clock(b.start, true);
    for s in &c.series {
        let v = s.values.get(i).copied().flatten();
        let _ = write!(t, "\n{}: {}", s.name, v.map_or_else(|| "-".into(), num));
    }
    esc(&t)
}

fn bars(o: &mut String, c: &Chart, x: &XAxis, y: &impl Fn(f64) -> f64) {
    let n_series = c.series.len().max(1) as f64;
    let pad = (x.slot * 0.1).min(2.0);
    for i in 0..c.timeline.bins.len() {
        let left = x.left[i] + pad;
        let width = (x.slot - 2.0 * pad).max(0.5);
        let _ = write!(o, "<g><title>{}</title>", tooltip(c, i));
        let mut stack = 0.0;
        for (k, s) in c.series.iter().enumerate() {
            let v = s.values.get(i).copied().flatten().unwrap_or(0.0);
            if v <= 0.0 {
                continue;
            }
            let (bx, bw, lo, hi) = if c.style == Style::Stacked {
                let r = (left, width, stack, stack + v);
                stack += v;
                r
            } else {
                let w = width / n_series;
                (left + w * k as f64, w, 0.0, v)
            };
            let _ = write!(
                o,
                "<rect x=\"{bx:.2}\" y=\"{:.2}\" width=\"{bw:.2}\" height=\"{:.2}\" fill=\"{}\"/>",
                y(hi),
                (y(lo) - y(hi)).max(0.5),
                s.color
            );
        }
        // The whole slot answers the tooltip, bars or not.
        let _ = write!(
            o,
            "<rect class=\"hit\" x=\"{:.2}\" y=\"{TOP}\" width=\"{:.2}\" height=\"{:.2}\"/></g>",
            x.left[i],
            x.slot,
            HEIGHT - TOP - BOTTOM
        );
    }
}

fn lines(o: &mut String, c: &Chart, x: &XAxis, y: &impl Fn(f64) -> f64) {
    let bins = &c.timeline.bins;
    let dots = bins.len() <= 60;
    let cx = |i: usize| x.left[i] + x.slot / 2.0;
    for s in &c.series {
        let mut run: Vec<(f64, f64)> = Vec::new();
        for (i, b) in bins.iter().enumerate() {
            if i > 0 && bins[i - 1].segment != b.segment {
                polyline(o, s.color, &run, dots);
                run.clear();
            }
            match s.values.get(i).copied().flatten() {
                Some(v) => run.push((cx(i), y(v))),
                None => {
                    polyline(o, s.color, &run, dots);
                    run.clear();
                }
            }
        }
        polyline(o, s.color, &run, dots);
    }
    for i in 0..bins.len() {
        let _ = write!(
            o,
            "<g><title>{}</title><rect class=\"hit\" x=\"{:.2}\" y=\"{TOP}\" width=\"{:.2}\" height=\"{:.2}\"/></g>",
            tooltip(c, i),
            x.left[i],
            x.slot,
            HEIGHT - TOP - BOTTOM
        );
    }
}

/// A line through `pts`, with a dot on each point when `dots` (or when it is alone).
fn polyline(o: &mut String, color: &str, pts: &[(f64, f64)], dots: bool) {
    if pts.len() > 1 {
        let list: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.2},{y:.2}")).collect();
        let _ = write!(
            o,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            list.join(" ")
        );
    }
    if dots || pts.len() == 1 {
        for (x, y) in pts {
            let _ = write!(
                o,
                "<circle cx=\"{x:.2}\" cy=\"{y:.2}\" r=\"2.5\" fill=\"{color}\"/>"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::facts::Bin;

    #[test]
    fn y_steps_are_round() {
        assert_eq!(y_scale(10.0, false), (2.5, 10.0));
        assert_eq!(y_scale(37.0, false), (10.0, 40.0));
        let (step, top) = y_scale(0.3, false);
        assert!(
            (step - 0.1).abs() < 1e-9 && (top - 0.3).abs() < 1e-9,
            "{step} {top}"
        );
        assert_eq!(y_scale(0.0, false), (1.0, 4.0));
        // Counts step by whole numbers: no 2.5, nothing under 1.
        assert_eq!(y_scale(10.0, true), (5.0, 10.0));
        assert_eq!(y_scale(2.0, true), (1.0, 2.0));
        assert_eq!(y_scale(300.0, true), (100.0, 300.0));
        assert_eq!(num(3.0), "3");
        assert_eq!(num(12.345), "12.3");
        assert_eq!(num(0.126), "0.13");
    }

    /// A line joins neighbouring bins with a value; a bin without one breaks it, and a
    /// value alone between breaks is a dot.
    #[test]
    fn latency_lines_join_neighbours_and_break_at_gaps() {
        let timeline = Timeline {
            bin_s: 1,
            bins: (0..5)
                .map(|i| Bin {
                    start: i,
                    ..Bin::default()
                })
                .collect(),
            ..Timeline::default()
        };
        let chart = |values: Vec<Option<f64>>| {
            render(&Chart {
                label: "latency",
                unit: "ms",
                style: Style::Lines,
                whole: false,
                series: vec![Series {
                    name: "p50",
                    color: "#1f77b4",
                    values,
                }],
                timeline: &timeline,
            })
        };
        let joined = chart(vec![Some(10.0), Some(12.0), Some(11.0), None, Some(30.0)]);
        assert_eq!(joined.matches("<polyline").count(), 1, "{joined}");
        assert_eq!(joined.matches("<circle").count(), 4, "{joined}");
        let apart = chart(vec![Some(10.0), None, Some(12.0), None, Some(30.0)]);
        assert_eq!(apart.matches("<polyline").count(), 0, "{apart}");
        assert_eq!(apart.matches("<circle").count(), 3, "{apart}");
    }
}
