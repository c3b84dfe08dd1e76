//! Drawing a [`Progress`] with plotters, on the SVG or the bitmap backend.

use crate::progress::{Direction, Mark, Point, Progress, shorten};
use crate::{Format, PlotError};
use autoresearch_core::num::fmt_f64;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::sync::OnceLock;

mod labels;
mod scale;

use labels::{Rect, Taken};
use scale::{Cut, data_range, decimals, focus};

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
    // The axis `draw` lays out spans about 1.4 times the values on scale:
    // past f64, plotters' tick search would not end.
    let cut = focus(progress);
    if let Some((lo, hi)) = data_range(&progress.points, |v| Cut::on_scale(cut, v))
        && !((hi - lo) * 4.0 + hi.abs().max(lo.abs()) * 4.0).is_finite()
    {
        return Err(PlotError::Unscalable {
            metric: progress.metric.clone(),
            lo,
            hi,
        });
    }
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

/// One row of the legend panel: how its marker is drawn, and its text.
#[derive(Clone, Copy)]
enum Key {
    Ring(RGBColor),
    Dot(RGBColor),
    Hollow(RGBColor),
    Cross(RGBColor),
    Triangle(RGBColor),
    Square(RGBColor),
    Line(RGBColor),
    Whisker(RGBColor),
    Changed,
    Band,
}

/// The title: what is shown (experiment, world, tick, comparator) and the counts.
fn title(p: &Progress, options: &ChartOptions) -> (String, String) {
    let (attempts, kept, crashes) = match &p.downsampled {
        Some(d) => (d.attempts, d.kept, d.crashed),
        None => (p.points.len(), p.count(Mark::Keep), p.count(Mark::Crash)),
    };
    let mut main = options.title.clone().unwrap_or_else(|| {
        let mut t = format!("{}: {attempts} attempts, {kept} kept", p.experiment);
        if crashes > 0 {
            t.push_str(&format!(", {crashes} crashed"));
        }
        if let Some(d) = &p.downsampled {
            t.push_str(&format!(" ({} drawn)", d.drawn));
        }
        t
    });
    if let Some(of) = &p.replay_of {
        main.push_str(&format!(
            " (fork of {of}: {} decided otherwise)",
            p.changed()
        ));
    }
    let mut sub = Vec::new();
    if !p.world.is_empty() {
        sub.push(format!("world {} at tick {}", p.world, p.tick));
    }
    if !p.comparator.is_empty() {
        sub.push(format!("decided by {}", p.comparator));
    }
    (main, sub.join(" · "))
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    p: &Progress,
    options: &ChartOptions,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    // Attempt numbers: a replay keeps the original's, so they may skip.
    let n = p.points.iter().map(|pt| pt.attempt).max().unwrap_or(0) as i32;
    let crashes = p.count(Mark::Crash);
    // Attempts decided without a value: crashes, and discards refused before
    // any evaluation (no change, a protected path). They go in a lane of
    // their own under the data, so that none is read as a value.
    let unmeasured = |pt: &Point| pt.mark != Mark::Crash && pt.value.is_none();
    let not_evaluated = p.points.iter().filter(|pt| unmeasured(pt)).count();
    let lane = crashes + not_evaluated > 0;
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
    // lane of attempts without a value, and above it room for labels.
    let pinned_below = cut.is_some_and(|c| !c.above);
    let lane_base = if pinned_below { lo - span * 0.14 } else { lo };
    let pin = if pinned_below {
        lo - span * 0.07
    } else {
        hi + span * 0.10
    };
    let shown = move |v: f64| if Cut::on_scale(cut, v) { v } else { pin };
    let top = hi
        + span
            * if cut.is_some_and(|c| c.above) {
                0.22
            } else {
                0.12
            };
    let bottom = lane_base - span * if lane { 0.16 } else { 0.06 };
    let lane_y = lane_base - span * 0.09;

    let (main, sub) = title(p, options);
    let body = root.titled(&main, (FONT, 22).into_font().style(FontStyle::Bold))?;
    let body = if sub.is_empty() {
        body
    } else {
        body.titled(
            &sub,
            TextStyle::from((FONT, 15).into_font()).color(&BLACK.mix(0.65)),
        )?
    };
    // The legend has a panel of its own, right of the plot: it never hides a point.
    let (w, _) = body.dim_in_pixel();
    let legend_w = (w / 4).clamp(220, 320);
    let (plot_area, legend_area) = body.split_horizontally(w.saturating_sub(legend_w));

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
    let mut chart = ChartBuilder::on(&plot_area)
        .margin(14)
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

    if lane {
        let lane_top = lane_base - span * 0.03;
        chart.draw_series(std::iter::once(Rectangle::new(
            [(0, bottom), (n + 1, lane_top)],
            CRASH.mix(0.05).filled(),
        )))?;
        let (x, y) = chart.backend_coord(&(0, lane_y));
        root.draw(&Text::new(
            "no value",
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

    // Whiskers: the spread of attempts measured more than once.
    let whiskers = p
        .points
        .iter()
        .filter(|pt| pt.samples.len() > 1)
        .filter(|pt| pt.value.is_some_and(|v| Cut::on_scale(cut, v)))
        .count();
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
    chart.draw_series(
        undecided
            .iter()
            .map(|(pt, v)| Circle::new((at(pt), *v), 5, PENDING.stroke_width(2))),
    )?;

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
        chart.draw_series(LineSeries::new(path, STEP.mix(0.75).stroke_width(2)))?;
    }

    chart.draw_series(
        with_value(Mark::Discard)
            .map(|(pt, v)| Circle::new((at(pt), v), 4, DISCARD.mix(0.55).filled())),
    )?;

    // Kept by the comparator, turned down by the held-out confirmation.
    let unconfirmed: Vec<(i32, f64)> = p
        .not_confirmed()
        .filter_map(|pt| Some((at(pt), shown(pt.value?))))
        .collect();
    chart.draw_series(
        unconfirmed
            .iter()
            .map(|c| TriangleMarker::new(*c, 7, UNCONFIRMED.stroke_width(2))),
    )?;

    let ring = |c: (i32, f64), r: i32, fill: RGBColor| {
        EmptyElement::at(c)
            + Circle::new((0, 0), r, fill.filled())
            + Circle::new((0, 0), r, BLACK.mix(0.8).stroke_width(1))
    };
    chart.draw_series(with_value(Mark::Baseline).map(|(pt, v)| ring((at(pt), v), 6, BASELINE)))?;
    chart.draw_series(with_value(Mark::Keep).map(|(pt, v)| ring((at(pt), v), 6, KEEP)))?;
    // The lane: crashes as crosses, the rest (refused before evaluation,
    // or pending without a value) as hollow squares.
    chart.draw_series(
        p.points
            .iter()
            .filter(|pt| pt.mark == Mark::Crash)
            .map(|pt| Cross::new((at(pt), lane_y), 5, CRASH.stroke_width(2))),
    )?;
    chart.draw_series(p.points.iter().filter(|pt| unmeasured(pt)).map(|pt| {
        let (x, y) = (at(pt), lane_y);
        EmptyElement::at((x, y)) + Rectangle::new([(-4, -4), (4, 4)], DISCARD.stroke_width(2))
    }))?;
    // A replay's changed decisions: an outer ring around the point.
    let changed_at = |pt: &Point| match pt.value {
        Some(v) if pt.mark != Mark::Crash => shown(v),
        _ => lane_y,
    };
    chart.draw_series(
        p.points
            .iter()
            .filter(|pt| pt.changed_from.is_some())
            .map(|pt| Circle::new((at(pt), changed_at(pt)), 10, PENDING.stroke_width(2))),
    )?;

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

    // The legend panel: a row for every kind of mark drawn, then notes.
    let mut keys: Vec<(Key, String)> = Vec::new();
    if p.count(Mark::Baseline) > 0 {
        keys.push((
            Key::Ring(BASELINE),
            "Baseline (head not chosen by the loop)".into(),
        ));
    }
    keys.push((Key::Ring(KEEP), "Kept".into()));
    if !steps.is_empty() {
        keys.push((Key::Line(STEP), "Running best (head)".into()));
    }
    if with_value(Mark::Discard).next().is_some() {
        keys.push((Key::Dot(DISCARD), "Discarded".into()));
    }
    if !undecided.is_empty() {
        keys.push((Key::Hollow(PENDING), "Pending / undecided".into()));
    }
    if !unconfirmed.is_empty() {
        keys.push((
            Key::Triangle(UNCONFIRMED),
            "Not confirmed (held-out)".into(),
        ));
    }
    if crashes > 0 {
        keys.push((Key::Cross(CRASH), "Crashed (no value)".into()));
    }
    if not_evaluated > 0 {
        keys.push((
            Key::Square(DISCARD),
            "Not evaluated (no change, protected path)".into(),
        ));
    }
    if whiskers > 0 {
        keys.push((
            Key::Whisker(DISCARD),
            "Whisker: min to max of repeated samples; dot at the mean".into(),
        ));
    }
    if p.changed() > 0 {
        keys.push((Key::Changed, "Decided otherwise than the original".into()));
    }
    if cut.is_some() {
        keys.push((Key::Band, "Off scale: far worse than any head".into()));
    }
    let mut notes: Vec<String> = Vec::new();
    if p.comparator.starts_with("stat") {
        notes.push(
            "p: chance that noise alone shows this gain (one-sided Welch t-test); kept when p < α, discarded early when p > futility"
                .into(),
        );
    }
    let (text_color, note_color) = (BLACK.mix(0.85), BLACK.mix(0.6));
    let text_style = TextStyle::from((FONT, 13).into_font()).color(&text_color);
    let note_style = TextStyle::from((FONT, 12).into_font()).color(&note_color);
    let (lw, _) = legend_area.dim_in_pixel();
    let chars = ((lw as i32 - 50) / 7).max(12) as usize;
    let mut y = 24;
    for (key, text) in &keys {
        let (x0, cy) = (14, y + 7);
        match *key {
            Key::Ring(c) => legend_area.draw(
                &(EmptyElement::at((x0 + 8, cy))
                    + Circle::new((0, 0), 6, c.filled())
                    + Circle::new((0, 0), 6, BLACK.mix(0.8).stroke_width(1))),
            )?,
            Key::Dot(c) => legend_area.draw(&Circle::new((x0 + 8, cy), 4, c.mix(0.55).filled()))?,
            Key::Hollow(c) => legend_area.draw(&Circle::new((x0 + 8, cy), 5, c.stroke_width(2)))?,
            Key::Cross(c) => legend_area.draw(&Cross::new((x0 + 8, cy), 5, c.stroke_width(2)))?,
            Key::Triangle(c) => {
                legend_area.draw(&TriangleMarker::new((x0 + 8, cy), 7, c.stroke_width(2)))?
            }
            Key::Square(c) => legend_area.draw(&Rectangle::new(
                [(x0 + 4, cy - 4), (x0 + 12, cy + 4)],
                c.stroke_width(2),
            ))?,
            Key::Line(c) => legend_area.draw(&PathElement::new(
                vec![(x0, cy), (x0 + 18, cy)],
                c.stroke_width(2),
            ))?,
            Key::Whisker(c) => {
                legend_area.draw(&PathElement::new(
                    vec![(x0 + 8, cy - 8), (x0 + 8, cy + 8)],
                    c.mix(0.8),
                ))?;
                legend_area.draw(&Circle::new((x0 + 8, cy), 3, c.filled()))?;
            }
            Key::Changed => {
                legend_area.draw(&Circle::new((x0 + 8, cy), 8, PENDING.stroke_width(2)))?
            }
            Key::Band => legend_area.draw(&Rectangle::new(
                [(x0, cy - 5), (x0 + 18, cy + 5)],
                BLACK.mix(0.08).filled(),
            ))?,
        }
        for (i, line) in wrap(text, chars).iter().enumerate() {
            legend_area.draw(&Text::new(
                line.clone(),
                (x0 + 26, y + i as i32 * 16),
                text_style.clone(),
            ))?;
            if i > 0 {
                y += 16;
            }
        }
        y += 24;
    }
    y += 6;
    for note in &notes {
        for line in wrap(note, chars + 4) {
            legend_area.draw(&Text::new(line, (14, y), note_style.clone()))?;
            y += 15;
        }
        y += 6;
    }

    // Labels on kept changes, placed where they overlap neither each other
    // nor any point.
    let (xr, yr) = chart.plotting_area().get_pixel_range();
    let heads: Vec<(Point, (i32, i32))> = p
        .points
        .iter()
        .filter(|pt| pt.mark.is_head())
        .filter_map(|pt| {
            pt.value
                .map(|v| (pt.clone(), chart.backend_coord(&(at(pt), shown(v)))))
        })
        .collect();
    let mut taken = Taken::default();
    taken.extend(heads.iter().map(|(_, (x, y))| (x - 7, y - 7, x + 7, y + 7)));
    taken.extend(p.points.iter().filter_map(|pt| {
        let v = pt.value?;
        let (x, y) = chart.backend_coord(&(at(pt), shown(v)));
        // Off-scale points carry their value to the right.
        let right = if Cut::on_scale(cut, v) { 4 } else { 80 };
        Some((x - 4, y - 8, x + right, y + 8))
    }));
    // And the lane's markers.
    taken.extend(
        p.points
            .iter()
            .filter(|pt| pt.mark == Mark::Crash || unmeasured(pt))
            .map(|pt| {
                let (x, y) = chart.backend_coord(&(at(pt), lane_y));
                (x - 7, y - 7, x + 7, y + 7)
            }),
    );
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
                && !taken.overlaps(r)
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

/// `text` in lines of at most `width` characters, broken at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}
