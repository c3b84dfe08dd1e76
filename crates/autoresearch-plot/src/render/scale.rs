//! The chart's y axis: the range of the values drawn, where it is cut to
//! keep far-off attempts from squeezing the rest, and its tick decimals.

use crate::progress::{Direction, Point, Progress};

/// The y range of the values `on_scale` accepts; `None` when there are none.
pub(super) fn data_range(points: &[Point], on_scale: impl Fn(f64) -> bool) -> Option<(f64, f64)> {
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
pub(super) struct Cut {
    pub(super) above: bool,
    pub(super) at: f64,
}

impl Cut {
    pub(super) fn on_scale(cut: Option<Cut>, v: f64) -> bool {
        match cut {
            Some(Cut { above: true, at }) => v <= at,
            Some(Cut { above: false, at }) => v >= at,
            None => true,
        }
    }
}

/// Where the y axis is cut, if anywhere. The head's whole trajectory (the
/// baseline included) is always on scale, so that the chart shows every
/// gain at its true size; only attempts far worse than any head (a diverged
/// run, a broken build scored at 1e9) are pinned in an off-scale band on
/// their side, with their value written, so that they do not squeeze the
/// rest into a few pixels.
pub(super) fn focus(p: &Progress) -> Option<Cut> {
    let heads: Vec<f64> = p.head_steps().iter().map(|(_, v)| *v).collect();
    if heads.is_empty() {
        return None;
    }
    let lo = heads.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = heads.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let span = (hi - lo).max(hi.abs().max(lo.abs()) * 0.05);
    if !(span.is_finite() && span > 0.0) {
        return None;
    }
    let others = || {
        p.points
            .iter()
            .filter(|pt| !pt.mark.is_head())
            .filter_map(|pt| pt.value)
    };
    let far_above = others().any(|v| v > hi + 4.0 * span);
    let far_below = others().any(|v| v < lo - 4.0 * span);
    let above = match (far_above, far_below) {
        (false, false) => return None,
        (true, false) => true,
        (false, true) => false,
        // Both: cut on the worse side, which the direction says.
        (true, true) => p.direction != Some(Direction::Maximize),
    };
    Some(if above {
        Cut {
            above: true,
            at: hi + 1.5 * span,
        }
    } else {
        Cut {
            above: false,
            at: lo - 1.5 * span,
        }
    })
}

/// Decimals that tell ticks `span` apart: three significant digits of it.
pub(super) fn decimals(span: f64) -> usize {
    if !(span.is_finite() && span > 0.0) {
        return 3;
    }
    // Up to 17 decimals: a tiny span (`3.2e-8` against `3.3e-8`) still
    // gets ticks that tell its values apart.
    (2.0 - span.log10().floor()).clamp(0.0, 17.0) as usize
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
}
