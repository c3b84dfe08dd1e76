//! The progress chart, drawn on the server as inline SVG: every attempt's
//! metric in recording order, crashes marked along the bottom, the kept
//! step line (the head's metric after each keep), and a tooltip on every
//! point (run, idea, metric, decision). Past [`MAX_POINTS`] attempts they
//! are drawn as one min-max bar per column (at most 600), with the last
//! keep of each column as its point and step, so the page stays the same
//! size whatever the history.

use crate::index::{RowClass, WorldIndex};
use crate::view::{enc, fmt_metric};
use serde::Serialize;
use std::fmt::Write;

/// Attempts drawn one by one; more are drawn as columns.
pub const MAX_POINTS: usize = 2_000;
/// Columns of the binned chart.
const COLUMNS: usize = 600;
const W: f64 = 960.0;
const H: f64 = 300.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 10.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 30.0;

/// One point of the chart as the JSON route returns it.
#[derive(Clone, Debug, Serialize)]
pub struct Point {
    /// The attempt's number (1-based).
    pub n: usize,
    /// The run.
    pub run_id: String,
    /// What the attempt counts as.
    pub class: RowClass,
    /// Its metric (none for crashes and runs without one).
    pub metric: Option<f64>,
}

/// One column of a binned chart.
#[derive(Clone, Debug, Serialize)]
pub struct Column {
    /// The first attempt number in it.
    pub from: usize,
    /// The last attempt number in it.
    pub to: usize,
    /// The lowest metric in it.
    pub min: Option<f64>,
    /// The highest metric in it.
    pub max: Option<f64>,
    /// Crashes in it.
    pub crashes: usize,
}

/// The chart's data: the same for the SVG and the JSON route.
#[derive(Clone, Debug, Serialize)]
pub struct Chart {
    /// The metric charted.
    pub metric: Option<String>,
    /// Whether lower is better.
    pub minimize: bool,
    /// Attempts charted (those in the window).
    pub attempts: usize,
    /// Attempts in the world.
    pub total: usize,
    /// The attempts shown.
    pub window: Window,
    /// Every attempt (up to [`MAX_POINTS`]); beyond, the last keep or
    /// baseline of each column.
    pub points: Vec<Point>,
    /// Min-max columns of all attempts, when there are more than [`MAX_POINTS`].
    pub columns: Vec<Column>,
    /// The kept step line: (attempt number, head metric after it).
    pub steps: Vec<(usize, f64)>,
    /// The inline SVG (not in the JSON).
    #[serde(skip)]
    pub svg: String,
}

/// Which attempts a chart shows: numbers `from..=to` (1-based), the whole
/// history unless zoomed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Window {
    /// The first attempt shown.
    pub from: usize,
    /// The last attempt shown.
    pub to: usize,
}

impl Window {
    /// The window `from..=to` asked for, clamped to `1..=attempts`; the
    /// whole history when neither bound is given.
    pub fn clamp(from: Option<usize>, to: Option<usize>, attempts: usize) -> Window {
        let last = attempts.max(1);
        let to = to.unwrap_or(last).clamp(1, last);
        let from = from.unwrap_or(1).clamp(1, to);
        Window { from, to }
    }

    /// Whether this window is the whole of `attempts`.
    pub fn is_all(&self, attempts: usize) -> bool {
        self.from <= 1 && self.to >= attempts
    }
}

/// The chart of `idx`'s attempts in `window` on `metric`. Cost: one pass
/// over the window's runs (and back from its start to the last keep
/// before it); the caller caches it per world, tick and window.
pub fn chart(idx: &WorldIndex, metric: Option<(&str, bool)>, window: Window) -> Chart {
    let minimize = metric.is_none_or(|(_, m)| m);
    let name = metric.map(|(m, _)| m);
    let end = window.to.min(idx.runs.len());
    let start = window.from.min(end.max(1));
    let live: Vec<(usize, &crate::index::RunRow)> = idx
        .runs
        .get(start.saturating_sub(1)..end)
        .unwrap_or(&[])
        .iter()
        .enumerate()
        .map(|(i, r)| (start + i, r))
        .collect();
    // The head as the window opens: the last keep before it, so the step
    // line starts at the window's left edge.
    let carried = idx.runs[..start.saturating_sub(1).min(idx.runs.len())]
        .iter()
        .rev()
        .filter(|r| matches!(r.class(), RowClass::Keep | RowClass::Baseline))
        .find_map(|r| name.and_then(|m| r.metric(m)).filter(|v| v.is_finite()));
    let attempts = live.len();
    let binned = attempts > MAX_POINTS;
    let per_column = attempts.div_ceil(COLUMNS).max(1);
    let mut points = Vec::new();
    let mut columns: Vec<Column> = Vec::new();
    let mut steps: Vec<(usize, f64)> = carried.map(|v| (start, v)).into_iter().collect();
    for &(n, row) in &live {
        let class = row.class();
        let value = name.and_then(|m| row.metric(m)).filter(|v| v.is_finite());
        let head = matches!(class, RowClass::Keep | RowClass::Baseline);
        if !binned {
            if head && let Some(v) = value {
                steps.push((n, v));
            }
            points.push(Point {
                n,
                run_id: row.run.run_id.clone(),
                class,
                metric: value,
            });
        } else {
            let c = (n - start) / per_column;
            if columns.len() <= c {
                columns.push(Column {
                    from: n,
                    to: n,
                    min: None,
                    max: None,
                    crashes: 0,
                });
            }
            let col = &mut columns[c];
            col.to = n;
            if class == RowClass::Crash {
                col.crashes += 1;
            }
            if let Some(v) = value {
                col.min = Some(col.min.map_or(v, |m| m.min(v)));
                col.max = Some(col.max.map_or(v, |m| m.max(v)));
            }
            // Binned, the last head of each column stands for the column's
            // keeps (one point and one step a column at most).
            if head && let Some(v) = value {
                let point = Point {
                    n,
                    run_id: row.run.run_id.clone(),
                    class,
                    metric: value,
                };
                match points.last_mut() {
                    Some(last) if (last.n - start) / per_column == c => {
                        *last = point;
                        if let Some(step) = steps.last_mut() {
                            *step = (n, v);
                        }
                    }
                    _ => {
                        points.push(point);
                        steps.push((n, v));
                    }
                }
            }
        }
    }
    let mut chart = Chart {
        metric: name.map(str::to_string),
        minimize,
        attempts,
        total: idx.runs.len(),
        window: Window {
            from: start,
            to: end.max(start),
        },
        points,
        columns,
        steps,
        svg: String::new(),
    };
    chart.svg = svg(idx, &chart, |n| {
        n.checked_sub(start)
            .and_then(|i| live.get(i))
            .map(|(_, r)| *r)
    });
    chart
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' => {}
            c => out.push(c),
        }
    }
    out
}

fn svg<'a>(
    idx: &WorldIndex,
    chart: &Chart,
    row_of: impl Fn(usize) -> Option<&'a crate::index::RunRow>,
) -> String {
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for v in chart
        .points
        .iter()
        .filter_map(|p| p.metric)
        .chain(chart.columns.iter().flat_map(|c| [c.min, c.max]).flatten())
    {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    let mut s = String::new();
    let (from, to) = (chart.window.from, chart.window.to);
    let _ = write!(
        s,
        r#"<svg class="chart" viewBox="0 0 {W} {H}" width="100%" role="img" aria-label="progress chart" xmlns="http://www.w3.org/2000/svg" data-from="{from}" data-to="{to}" data-total="{}" data-x0="{LEFT}" data-x1="{}" data-w="{W}">"#,
        chart.total,
        W - RIGHT
    );
    if chart.attempts == 0 || !lo.is_finite() {
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle" class="empty">{}</text></svg>"#,
            W / 2.0,
            H / 2.0,
            if chart.attempts == 0 {
                "no attempts yet"
            } else {
                "no metric recorded yet"
            }
        );
        return s;
    }
    if hi - lo < 1e-12 {
        hi = lo + 1.0;
        lo -= 1.0;
    }
    let pad = (hi - lo) * 0.05;
    let (lo, hi) = (lo - pad, hi + pad);
    let span = (to.max(from + 1) - from) as f64;
    let x = |i: usize| LEFT + (i as f64 - from as f64) / span * (W - LEFT - RIGHT);
    let y = |v: f64| TOP + (hi - v) / (hi - lo) * (H - TOP - BOTTOM);
    // Axes and labels.
    axes(&mut s, (lo, hi), (from, to), chart.metric.as_deref());
    // Binned columns.
    for c in &chart.columns {
        let cx = (x(c.from) + x(c.to)) / 2.0;
        if let (Some(a), Some(b)) = (c.min, c.max) {
            let _ = write!(
                s,
                r#"<line class="col" x1="{cx:.1}" y1="{:.1}" x2="{cx:.1}" y2="{:.1}"><title>attempts {}–{}: {} to {}</title></line>"#,
                y(b),
                y(a) + 0.5,
                c.from,
                c.to,
                esc(&fmt_metric(Some(a))),
                esc(&fmt_metric(Some(b)))
            );
        }
        if c.crashes > 0 {
            let _ = write!(
                s,
                r#"<line class="crash" x1="{cx:.1}" y1="{b}" x2="{cx:.1}" y2="{:.1}"><title>attempts {}–{}: {} crashed</title></line>"#,
                H - BOTTOM - 6.0,
                c.from,
                c.to,
                c.crashes,
                b = H - BOTTOM
            );
        }
    }
    // The kept step line.
    if let Some(&(first, v0)) = chart.steps.first() {
        let mut d = format!("M{:.1},{:.1}", x(first), y(v0));
        let mut last = v0;
        for &(i, v) in &chart.steps[1..] {
            let _ = write!(d, " H{:.1} V{:.1}", x(i), y(v));
            last = v;
        }
        let _ = write!(d, " H{:.1}", x(to));
        let _ = write!(
            s,
            r#"<path class="steps" d="{d}"><title>head: {}</title></path>"#,
            esc(&fmt_metric(Some(last)))
        );
    }
    // Points, each with its tooltip and a link to its run.
    let world = idx.info.name.as_str();
    for p in &chart.points {
        let row = row_of(p.n);
        let idea = row.map(|r| r.idea()).unwrap_or("");
        let idea: String = idea.chars().take(200).collect();
        let reason = row
            .and_then(|r| r.outcome.as_ref())
            .map(|o| o.reason.chars().take(200).collect::<String>())
            .unwrap_or_default();
        let title = format!(
            "#{} {} · {}: {}\n{}{}",
            p.n,
            p.run_id,
            p.class.as_str(),
            fmt_metric(p.metric),
            idea,
            if reason.is_empty() {
                String::new()
            } else {
                format!("\n{reason}")
            }
        );
        let href = format!("/worlds/{}/runs/{}", enc(world), enc(&p.run_id));
        match p.metric {
            Some(v) => {
                let _ = write!(
                    s,
                    r#"<a href="{href}"><circle class="pt {cls}" data-run="{id}" cx="{:.1}" cy="{:.1}" r="{r}"><title>{t}</title></circle></a>"#,
                    x(p.n),
                    y(v),
                    cls = p.class.as_str(),
                    id = esc(&p.run_id),
                    r = if matches!(p.class, RowClass::Keep | RowClass::Baseline) {
                        4.5
                    } else {
                        3.0
                    },
                    t = esc(&title)
                );
            }
            None => {
                let _ = write!(
                    s,
                    r#"<a href="{href}"><path class="pt x {cls}" data-run="{id}" d="M{:.1},{:.1} l6,6 m0,-6 l-6,6"><title>{t}</title></path></a>"#,
                    x(p.n) - 3.0,
                    H - BOTTOM - 9.0,
                    cls = p.class.as_str(),
                    id = esc(&p.run_id),
                    t = esc(&title)
                );
            }
        }
    }
    s.push_str("</svg>");
    s
}

/// One kept step line of a [`steps_chart`].
pub struct StepSeries<'a> {
    /// Its name in the legend (a world's name).
    pub name: &'a str,
    /// Its CSS class (`steps`, `steps-b`).
    pub class: &'a str,
    /// (row number, head metric after it), ascending.
    pub steps: &'a [(usize, f64)],
}

/// The most steps or marks a [`steps_chart`] draws one by one; more are
/// thinned to the last of each of [`COLUMNS`] columns.
const MAX_STEPS: usize = 2_000;

/// `v` thinned to the last item of each of [`COLUMNS`] columns over
/// `1..=rows` when it holds more than [`MAX_STEPS`].
fn thin<T: Copy>(v: &[T], rows: usize, n_of: impl Fn(&T) -> usize) -> Vec<T> {
    if v.len() <= MAX_STEPS {
        return v.to_vec();
    }
    let per = rows.div_ceil(COLUMNS).max(1);
    let mut out: Vec<T> = Vec::new();
    for item in v {
        match out.last_mut() {
            Some(last) if (n_of(last) - 1) / per == (n_of(item) - 1) / per => *last = *item,
            _ => out.push(*item),
        }
    }
    out
}

/// Several kept step lines over `rows` rows on one axis, with `marks`
/// (row numbers) drawn as ticks along the bottom: the replay view's chart
/// (changed decisions marked). Its JSON has no points; `steps` holds the
/// first series'. Cost: O(steps + marks).
pub fn steps_chart(
    rows: usize,
    metric: Option<&str>,
    series: &[StepSeries<'_>],
    marks: &[usize],
) -> Chart {
    let series: Vec<(&StepSeries<'_>, Vec<(usize, f64)>)> = series
        .iter()
        .map(|s| (s, thin(s.steps, rows, |p| p.0)))
        .collect();
    let marks = thin(marks, rows, |m| *m);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" viewBox="0 0 {W} {H}" width="100%" role="img" aria-label="kept step lines of both worlds" xmlns="http://www.w3.org/2000/svg">"#
    );
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in series.iter().flat_map(|(_, st)| st.iter().map(|p| p.1)) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if rows == 0 || !lo.is_finite() {
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle" class="empty">no kept metric in either world</text></svg>"#,
            W / 2.0,
            H / 2.0
        );
    } else {
        if hi - lo < 1e-12 {
            hi = lo + 1.0;
            lo -= 1.0;
        }
        let pad = (hi - lo) * 0.05;
        let (lo, hi) = (lo - pad, hi + pad);
        let span = (rows.max(2) - 1) as f64;
        let x = |i: usize| LEFT + (i as f64 - 1.0) / span * (W - LEFT - RIGHT);
        let y = |v: f64| TOP + (hi - v) / (hi - lo) * (H - TOP - BOTTOM);
        let b = H - BOTTOM;
        axes(&mut s, (lo, hi), (1, rows), metric);
        for m in &marks {
            let _ = write!(
                s,
                r#"<line class="changed" x1="{cx:.1}" y1="{b}" x2="{cx:.1}" y2="{top}"><title>attempt {m}: decided differently</title></line>"#,
                cx = x(*m),
                top = b - 10.0
            );
        }
        for (sr, steps) in &series {
            let Some(&(first, v0)) = steps.first() else {
                continue;
            };
            let mut d = format!("M{:.1},{:.1}", x(first), y(v0));
            for &(i, v) in &steps[1..] {
                let _ = write!(d, " H{:.1} V{:.1}", x(i), y(v));
            }
            let _ = write!(d, " H{:.1}", x(rows));
            let last = steps.last().map_or(v0, |p| p.1);
            let _ = write!(
                s,
                r#"<path class="{}" d="{d}"><title>{}: head {}</title></path>"#,
                esc(sr.class),
                esc(sr.name),
                esc(&fmt_metric(Some(last)))
            );
        }
        s.push_str("</svg>");
    }
    Chart {
        metric: metric.map(str::to_string),
        minimize: true,
        attempts: rows,
        total: rows,
        window: Window {
            from: 1,
            to: rows.max(1),
        },
        points: Vec::new(),
        columns: Vec::new(),
        steps: series.first().map(|(_, st)| st.clone()).unwrap_or_default(),
        svg: s,
    }
}

/// The chart's axes group: both axis lines, five value labels from `lo` to
/// `hi` (the padded range the points are drawn in), and the attempt range
/// `first..=last` with the metric's name (`metric` when unnamed) below.
fn axes(s: &mut String, (lo, hi): (f64, f64), (first, last): (usize, usize), metric: Option<&str>) {
    let y = |v: f64| TOP + (hi - v) / (hi - lo) * (H - TOP - BOTTOM);
    let _ = write!(
        s,
        r#"<g class="axis"><line x1="{LEFT}" y1="{b}" x2="{r}" y2="{b}"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{b}"/>"#,
        b = H - BOTTOM,
        r = W - RIGHT
    );
    for k in 0..=4 {
        let v = lo + (hi - lo) * f64::from(k) / 4.0;
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            y(v) + 4.0,
            esc(&fmt_metric(Some(v)))
        );
    }
    let _ = write!(
        s,
        r#"<text x="{LEFT}" y="{}">{first}</text><text x="{}" y="{}" text-anchor="end">{last}</text><text x="{}" y="{}" text-anchor="middle">attempt · {}</text></g>"#,
        H - 8.0,
        W - RIGHT,
        H - 8.0,
        (LEFT + W) / 2.0,
        H - 8.0,
        esc(metric.unwrap_or("metric"))
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_step_lines_are_thinned_to_the_last_of_each_column() {
        let steps: Vec<(usize, f64)> = (1..=6_000).map(|n| (n, -(n as f64))).collect();
        let thinned = thin(&steps, 6_000, |p| p.0);
        assert!(thinned.len() <= COLUMNS, "{} points", thinned.len());
        assert_eq!(thinned.last(), steps.last(), "the final head is kept");
        assert!(thinned.windows(2).all(|w| w[0].0 < w[1].0));
        let few = &steps[..10];
        assert_eq!(thin(few, 6_000, |p| p.0), few.to_vec());

        let chart = steps_chart(
            6_000,
            Some("score"),
            &[StepSeries {
                name: "a <b>",
                class: "steps",
                steps: &steps,
            }],
            &(1..=3_000).collect::<Vec<_>>(),
        );
        assert_eq!(chart.steps.len(), thinned.len());
        assert!(chart.svg.matches("<line class=\"changed\"").count() <= COLUMNS);
        assert!(
            chart.svg.contains("a &lt;b&gt;: head -6000"),
            "{}",
            &chart.svg[..300]
        );
        let empty = steps_chart(0, None, &[], &[]);
        assert!(empty.svg.contains("no kept metric in either world"));
    }

    #[test]
    fn a_window_is_clamped_to_the_history() {
        assert_eq!(Window::clamp(None, None, 10), Window { from: 1, to: 10 });
        assert_eq!(
            Window::clamp(Some(0), Some(99), 10),
            Window { from: 1, to: 10 }
        );
        assert_eq!(
            Window::clamp(Some(12), None, 10),
            Window { from: 10, to: 10 }
        );
        assert_eq!(Window::clamp(None, None, 0), Window { from: 1, to: 1 });
        assert!(Window::clamp(Some(1), Some(10), 10).is_all(10));
        assert!(!Window::clamp(Some(2), Some(10), 10).is_all(10));
    }
}
