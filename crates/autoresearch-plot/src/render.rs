//! Drawing a [`Progress`] with plotters, on the SVG or the bitmap backend.

use crate::progress::{Direction, Mark, Point, Progress, shorten};
use crate::{Format, PlotError};
use autoresearch_core::num::fmt_f64;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::sync::OnceLock;

/// Size and title of the chart.
#[derive(Clone, Debug)]
pub struct ChartOptions {
    /// In pixels (SVG user units for SVG).
    pub width: u32,
    /// In pixels (SVG user units for SVG).
    pub height: u32,
    /// Replaces the default title `"{experiment}: N attempts, K kept"`.
    pub title: Option<String>,
}

impl Default for ChartOptions {
    fn default() -> Self {
        ChartOptions {
            width: 1400,
            height: 700,
            title: None,
        }
    }
}

const FONT: &str = "sans-serif";
const KEEP: RGBColor = RGBColor(46, 204, 113);
const KEEP_DARK: RGBColor = RGBColor(26, 122, 58);
const STEP: RGBColor = RGBColor(39, 174, 96);
const DISCARD: RGBColor = RGBColor(150, 150, 150);
const CRASH: RGBColor = RGBColor(214, 48, 49);
const BASELINE: RGBColor = RGBColor(52, 119, 219);
const PENDING: RGBColor = RGBColor(230, 126, 34);
/// Candidates the held-out confirmation turned down.
const UNCONFIRMED: RGBColor = RGBColor(142, 68, 173);

/// Registers the embedded DejaVu Sans as the chart's font, once per process.
fn fonts() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<Result<(), &'static str>> = OnceLock::new();
    let r = REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
            .map_err(|_| "DejaVu Sans regular")?;
        plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold())
            .map_err(|_| "DejaVu Sans bold")?;
        Ok(())
    });
    r.map_err(PlotError::Font)
}

/// Draws `progress` as an image in `format`: SVG text or PNG bytes.
/// Cost: proportional to the number of attempts; a PNG also allocates its
/// `width x height x 3` pixel buffer.
pub fn render(
    progress: &Progress,
    format: Format,
    options: &ChartOptions,
) -> Result<Vec<u8>, PlotError> {
    fonts()?;
    let size = (options.width.max(200), options.height.max(150));
    match format {
        Format::Svg => {
            let mut svg = String::new();
            {
                let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
                draw(&root, progress, options).map_err(|e| PlotError::Draw(Box::new(e)))?;
                root.present().map_err(|e| PlotError::Draw(Box::new(e)))?;
            }
            Ok(svg.into_bytes())
        }
        Format::Png => {
            let mut pixels = vec![0u8; size.0 as usize * size.1 as usize * 3];
            {
                let root = BitMapBackend::with_buffer(&mut pixels, size).into_drawing_area();
                draw(&root, progress, options).map_err(|e| PlotError::Draw(Box::new(e)))?;
                root.present().map_err(|e| PlotError::Draw(Box::new(e)))?;
            }
            let mut out = Vec::new();
            let mut encoder = png::Encoder::new(&mut out, size.0, size.1);
            encoder.set_color(png::ColorType::Rgb);
            encoder.set_depth(png::BitDepth::Eight);
            let mut writer = encoder.write_header()?;
            writer.write_image_data(&pixels)?;
            writer.finish()?;
            Ok(out)
        }
    }
}

/// The y range of the values `on_scale` accepts; `None` when there are none.
fn data_range(points: &[Point], on_scale: impl Fn(f64) -> bool) -> Option<(f64, f64)> {
    let mut values = points
        .iter()
        .filter(|p| p.value.is_some_and(&on_scale))
        .flat_map(|p| p.samples.iter().copied().chain(p.value))
        .filter(|v| on_scale(*v));
    let first = values.next()?;
    Some(values.fold((first, first), |(lo, hi), v| (lo.min(v), hi.max(v))))
}

/// Where the chart cuts its y axis: values beyond `at` (above it when
/// `above`) are drawn pinned at the edge, with their value written.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Cut {
    above: bool,
    at: f64,
}

impl Cut {
    fn on_scale(cut: Option<Cut>, v: f64) -> bool {
        match cut {
            Some(Cut { above: true, at }) => v <= at,
            Some(Cut { above: false, at }) => v >= at,
            None => true,
        }
    }
}

/// When the first head value lies far beyond the rest of the head's
/// trajectory (a baseline the first keep improved many times over), the
/// chart focuses on the rest, as karpathy's notebook does by hand: otherwise
/// every later step would be squeezed into a few pixels.
fn focus(p: &Progress) -> Option<Cut> {
    let heads: Vec<f64> = p.head_steps().iter().map(|(_, v)| *v).collect();
    let (first, rest) = heads.split_first()?;
    if rest.len() < 2 {
        return None;
    }
    let lo = rest.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = rest.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let span = (hi - lo).max(hi.abs().max(lo.abs()) * 1e-3);
    if !(span.is_finite() && span > 0.0) {
        return None;
    }
    if *first > hi + 4.0 * span {
        Some(Cut {
            above: true,
            at: hi + 1.5 * span,
        })
    } else if *first < lo - 4.0 * span {
        Some(Cut {
            above: false,
            at: lo - 1.5 * span,
        })
    } else {
        None
    }
}

/// Decimals that tell ticks `span` apart: three significant digits of it.
fn decimals(span: f64) -> usize {
    if !(span.is_finite() && span > 0.0) {
        return 3;
    }
    // Up to 17 decimals: a tiny span (`3.2e-8` against `3.3e-8`) still
    // gets ticks that tell its values apart.
    (2.0 - span.log10().floor()).clamp(0.0, 17.0) as usize
}

type Rect = (i32, i32, i32, i32);

fn overlaps(a: Rect, b: Rect) -> bool {
    a.0 < b.2 && b.0 < a.2 && a.1 < b.3 && b.1 < a.3
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    p: &Progress,
    options: &ChartOptions,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let n = p.points.len() as i32;
    let crashes = p.count(Mark::Crash);
    let cut = focus(p);
    let (lo, hi) = data_range(&p.points, |v| Cut::on_scale(cut, v))
        .or_else(|| data_range(&p.points, |_| true))
        .unwrap_or((0.0, 1.0));
    let span = if hi > lo {
        hi - lo
    } else {
        lo.abs().max(1.0) * 0.02
    };
    // Off-scale values sit in a band beyond the data; below the data is the
    // lane crashes are drawn in, and above it room for labels.
    let pinned_below = cut.is_some_and(|c| !c.above);
    let lane_base = if pinned_below { lo - span * 0.14 } else { lo };
    let pin = if pinned_below {
        lo - span * 0.07
    } else {
        hi + span * 0.10
    };
    let shown = move |v: f64| if Cut::on_scale(cut, v) { v } else { pin };
    let top = hi + span * 0.22;
    let bottom = lane_base - span * if crashes > 0 { 0.16 } else { 0.08 };
    let crash_lane = lane_base - span * 0.09;

    let kept = p.count(Mark::Keep);
    let title = options.title.clone().unwrap_or_else(|| {
        let mut t = format!(
            "{}: {} attempts, {} kept",
            p.experiment,
            p.points.len(),
            kept
        );
        if crashes > 0 {
            t.push_str(&format!(", {crashes} crashed"));
        }
        t
    });
    let y_desc = match p.direction {
        Some(Direction::Minimize) => format!("{} (lower is better)", p.metric),
        Some(Direction::Maximize) => format!("{} (higher is better)", p.metric),
        None => p.metric.clone(),
    };
    let digits = decimals(span);
    let y_fmt = move |v: &f64| format!("{v:.digits$}");
    let x_fmt = |x: &i32| {
        if (1..=n).contains(x) {
            x.to_string()
        } else {
            String::new()
        }
    };

    let widest = [top, bottom, lo, hi]
        .iter()
        .map(|v| y_fmt(v).len())
        .max()
        .unwrap_or(4) as u32;
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FONT, 24).into_font().style(FontStyle::Bold))
        .margin(18)
        .x_label_area_size(48)
        .y_label_area_size(widest * 9 + 40)
        .build_cartesian_2d(0..n + 1, bottom..top)?;
    chart
        .configure_mesh()
        .light_line_style(BLACK.mix(0.04))
        .bold_line_style(BLACK.mix(0.10))
        .x_labels((n as usize + 2).min(16))
        .y_labels(8)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .x_desc("Attempt #")
        .y_desc(y_desc)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .draw()?;

    // The crash lane: a faint band under the data, so that a crash is never
    // read as a value.
    if crashes > 0 {
        let lane_top = lane_base - span * 0.03;
        chart.draw_series(std::iter::once(Rectangle::new(
            [(0, bottom), (n + 1, lane_top)],
            CRASH.mix(0.05).filled(),
        )))?;
        let (x, y) = chart.backend_coord(&(0, crash_lane));
        root.draw(&Text::new(
            "crashed",
            (x + 6, y - 7),
            TextStyle::from((FONT, 12).into_font()).color(&CRASH.mix(0.8)),
        ))?;
    }

    // The off-scale band: values beyond the cut, pinned, with their value.
    if let Some(c) = cut {
        let (a, b) = (pin - span * 0.045, pin + span * 0.045);
        chart.draw_series(std::iter::once(Rectangle::new(
            [(0, a), (n + 1, b)],
            BLACK.mix(0.04).filled(),
        )))?;
        let (x, y) = chart.backend_coord(&(0, pin));
        root.draw(&Text::new(
            if c.above {
                "off scale ↑"
            } else {
                "off scale ↓"
            },
            (x + 6, y - 7),
            TextStyle::from((FONT, 12).into_font()).color(&BLACK.mix(0.5)),
        ))?;
    }

    let at = |pt: &Point| pt.attempt as i32;
    let with_value = |mark: Mark| {
        p.points
            .iter()
            .filter(move |pt| pt.mark == mark)
            .filter_map(move |pt| pt.value.map(|v| (pt, shown(v))))
    };

    // Sample spread of attempts measured more than once.
    chart.draw_series(
        p.points
            .iter()
            .filter(|pt| pt.samples.len() > 1)
            .filter(|pt| pt.value.is_some_and(|v| Cut::on_scale(cut, v)))
            .map(|pt| {
                let (mut a, mut b) = (f64::INFINITY, f64::NEG_INFINITY);
                for s in &pt.samples {
                    a = a.min(shown(*s));
                    b = b.max(shown(*s));
                }
                let color = if pt.mark.is_head() {
                    KEEP_DARK
                } else {
                    DISCARD
                };
                PathElement::new(vec![(at(pt), a), (at(pt), b)], color.mix(0.55))
            }),
    )?;

    let undecided: Vec<_> = with_value(Mark::Pending)
        .chain(with_value(Mark::Undecided))
        .collect();
    if !undecided.is_empty() {
        chart
            .draw_series(
                undecided
                    .iter()
                    .map(|(pt, v)| Circle::new((at(pt), *v), 5, PENDING.stroke_width(2))),
            )?
            .label("Pending / undecided")
            .legend(|(x, y)| Circle::new((x + 10, y), 5, PENDING.stroke_width(2)));
    }

    // The head as a step line: flat until the next keep, then a step, and on
    // to the last attempt.
    let steps = p.head_steps();
    if !steps.is_empty() {
        let mut path = Vec::with_capacity(steps.len() * 2 + 1);
        for (i, (x, v)) in steps.iter().enumerate() {
            if i > 0 {
                path.push((*x as i32, shown(steps[i - 1].1)));
            }
            path.push((*x as i32, shown(*v)));
        }
        if let Some((_, v)) = steps.last() {
            path.push((n, shown(*v)));
        }
        chart
            .draw_series(LineSeries::new(path, STEP.mix(0.75).stroke_width(2)))?
            .label("Running best (head)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], STEP.stroke_width(2)));
    }

    chart
        .draw_series(
            with_value(Mark::Discard)
                .map(|(pt, v)| Circle::new((at(pt), v), 4, DISCARD.mix(0.55).filled())),
        )?
        .label("Discarded")
        .legend(|(x, y)| Circle::new((x + 10, y), 4, DISCARD.mix(0.55).filled()));

    // Kept by the comparator, turned down by the held-out confirmation.
    let unconfirmed: Vec<(i32, f64)> = p
        .not_confirmed()
        .filter_map(|pt| Some((at(pt), shown(pt.value?))))
        .collect();
    if !unconfirmed.is_empty() {
        chart
            .draw_series(
                unconfirmed
                    .iter()
                    .map(|c| TriangleMarker::new(*c, 7, UNCONFIRMED.stroke_width(2))),
            )?
            .label("Not confirmed (held-out)")
            .legend(|(x, y)| TriangleMarker::new((x + 10, y), 7, UNCONFIRMED.stroke_width(2)));
    }

    let ring = |c: (i32, f64), r: i32, fill: RGBColor| {
        EmptyElement::at(c)
            + Circle::new((0, 0), r, fill.filled())
            + Circle::new((0, 0), r, BLACK.mix(0.8).stroke_width(1))
    };
    if with_value(Mark::Baseline).next().is_some() {
        chart
            .draw_series(with_value(Mark::Baseline).map(|(pt, v)| ring((at(pt), v), 6, BASELINE)))?
            .label("Baseline")
            .legend(move |(x, y)| {
                EmptyElement::at((x + 10, y))
                    + Circle::new((0, 0), 6, BASELINE.filled())
                    + Circle::new((0, 0), 6, BLACK.mix(0.8).stroke_width(1))
            });
    }
    chart
        .draw_series(with_value(Mark::Keep).map(|(pt, v)| ring((at(pt), v), 6, KEEP)))?
        .label("Kept")
        .legend(move |(x, y)| {
            EmptyElement::at((x + 10, y))
                + Circle::new((0, 0), 6, KEEP.filled())
                + Circle::new((0, 0), 6, BLACK.mix(0.8).stroke_width(1))
        });
    if crashes > 0 {
        chart
            .draw_series(
                p.points
                    .iter()
                    .filter(|pt| pt.mark == Mark::Crash)
                    .map(|pt| Cross::new((at(pt), crash_lane), 5, CRASH.stroke_width(2))),
            )?
            .label("Crashed")
            .legend(|(x, y)| Cross::new((x + 10, y), 5, CRASH.stroke_width(2)));
    }

    // Off-scale points carry their value, in full.
    for pt in &p.points {
        let Some(v) = pt.value.filter(|v| !Cut::on_scale(cut, *v)) else {
            continue;
        };
        let (x, y) = chart.backend_coord(&(at(pt), pin));
        let arrow = if pinned_below { '↓' } else { '↑' };
        root.draw(&Text::new(
            format!("{arrow} {}", fmt_f64(v)),
            (x + 9, y - 6),
            TextStyle::from((FONT, 12).into_font()).color(&BLACK.mix(0.55)),
        ))?;
    }

    let legend_low = p.direction == Some(Direction::Maximize);
    let legend_at = if legend_low {
        SeriesLabelPosition::LowerRight
    } else {
        SeriesLabelPosition::UpperRight
    };
    chart
        .configure_series_labels()
        .position(legend_at)
        .margin(12)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.3))
        .draw()?;

    // Labels on kept changes, placed where they overlap neither each other,
    // the kept markers nor (roughly) the legend.
    let (xr, yr) = chart.plotting_area().get_pixel_range();
    let legend_rows = 2
        + usize::from(!undecided.is_empty())
        + usize::from(!steps.is_empty())
        + usize::from(with_value(Mark::Baseline).next().is_some())
        + usize::from(crashes > 0)
        + usize::from(!unconfirmed.is_empty());
    let legend_h = legend_rows as i32 * 22 + 24;
    let legend: Rect = if legend_low {
        (xr.end - 230, yr.end - legend_h, xr.end, yr.end)
    } else {
        (xr.end - 230, yr.start, xr.end, yr.start + legend_h)
    };
    let heads: Vec<(Point, (i32, i32))> = p
        .points
        .iter()
        .filter(|pt| pt.mark.is_head())
        .filter_map(|pt| {
            pt.value
                .map(|v| (pt.clone(), chart.backend_coord(&(at(pt), shown(v)))))
        })
        .collect();
    let mut taken: Vec<Rect> = vec![legend];
    taken.extend(heads.iter().map(|(_, (x, y))| (x - 7, y - 7, x + 7, y + 7)));
    taken.extend(p.points.iter().filter_map(|pt| {
        let v = pt.value?;
        let (x, y) = chart.backend_coord(&(at(pt), shown(v)));
        // Off-scale points carry their value to the right.
        let right = if Cut::on_scale(cut, v) { 4 } else { 80 };
        Some((x - 4, y - 8, x + right, y + 8))
    }));
    let style = TextStyle::from((FONT, 13).into_font()).color(&KEEP_DARK);
    for (pt, (px, py)) in &heads {
        let text = shorten(&pt.label, crate::LABEL_CHARS);
        if text.is_empty() {
            continue;
        }
        let (w, h) = root.estimate_text_size(&text, &style)?;
        let (w, h) = (w as i32 + 6, h as i32 + 4);
        let fits = |r: Rect| {
            r.0 >= xr.start
                && r.2 <= xr.end
                && r.1 >= yr.start
                && r.3 <= yr.end
                && !taken.iter().any(|t| overlaps(*t, r))
        };
        let candidates = (0..8).flat_map(|k| {
            let up = py - 9 - h - k * (h + 2);
            let down = py + 9 + k * (h + 2);
            [
                (px + 8, up),
                (px + 8, down),
                (px - 8 - w, up),
                (px - 8 - w, down),
            ]
        });
        let chosen = candidates
            .map(|(x, y)| (x, y, x + w, y + h))
            .find(|r| fits(*r))
            .unwrap_or((px + 8, py - 9 - h, px + 8 + w, py - 9));
        taken.push(chosen);
        let (x0, y0, x1, y1) = chosen;
        // A leader line when the label sits away from its point.
        let near_y = if y1 <= *py { y1 } else { y0 };
        let near_x = if x0 >= *px { x0 } else { x1 };
        if (near_y - py).abs() > 12 {
            root.draw(&PathElement::new(
                vec![(*px, *py), (near_x, near_y)],
                KEEP_DARK.mix(0.35),
            ))?;
        }
        root.draw(&Rectangle::new(
            [(x0, y0), (x1, y1)],
            WHITE.mix(0.75).filled(),
        ))?;
        root.draw(&Text::new(text, (x0 + 3, y0 + 2), style.clone()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_follow_the_span() {
        assert_eq!(decimals(0.004), 5);
        assert_eq!(decimals(0.05), 4);
        assert_eq!(decimals(1.5), 2);
        assert_eq!(decimals(250.0), 0);
        assert_eq!(decimals(0.0), 3);
    }

    #[test]
    fn rectangles_overlap_only_when_they_share_area() {
        assert!(overlaps((0, 0, 10, 10), (5, 5, 15, 15)));
        assert!(!overlaps((0, 0, 10, 10), (10, 0, 20, 10)));
        assert!(!overlaps((0, 0, 10, 10), (0, 11, 10, 20)));
    }
}
