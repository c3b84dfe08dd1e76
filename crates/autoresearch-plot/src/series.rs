//! The chart from an experiment's chart series
//! ([`autoresearch_core::series`]), which a backend keeps at write time:
//! the metric is chosen from the series' header ([`Progress::plan_series`]),
//! the points to draw are chosen from its per-attempt marks and values
//! alone ([`SeriesPlan::select`]), and only those attempts are read in full
//! to build the [`Progress`] ([`SeriesPlan::progress`]). The result is
//! the [`Progress`] that [`Progress::from_record`] followed by
//! [`Progress::downsample`] gives for the same attempts: same choices,
//! same points, same labels.

use crate::progress::{Choice, Hints, confirmed, point, select};
use crate::{Downsampled, Mark, PlotError, Progress, SpecReader};
use autoresearch_core::lifecycle::Attempt;
use autoresearch_core::series::{Series, SeriesPoint};
use autoresearch_core::{Confirmation, Experiment};

/// What every attempt of a chart adds up to, drawn or not.
#[derive(Clone, Debug, PartialEq)]
pub struct Totals {
    /// Attempts in all.
    pub attempts: usize,
    /// Kept attempts.
    pub kept: usize,
    /// Crashed attempts.
    pub crashed: usize,
    /// The last head value ([`Progress::best`]).
    pub best: Option<f64>,
}

impl Progress {
    /// The totals of this chart's points ([`Totals`]); call it before
    /// [`Progress::downsample`].
    pub fn totals(&self) -> Totals {
        Totals {
            attempts: self.points.len(),
            kept: self.count(Mark::Keep),
            crashed: self.count(Mark::Crash),
            best: self.best(),
        }
    }

    /// The metric, direction and comparator a chart of `header` (a series
    /// read without a metric) shows, chosen as [`Progress::from_record`]
    /// chooses them. Errors: no attempts, or no metric to choose.
    pub fn plan_series(
        experiment: &str,
        record: Option<&Experiment>,
        header: &Series,
        metric: Option<&str>,
        specs: SpecReader<'_>,
    ) -> Result<SeriesPlan, PlotError> {
        if header.attempts == 0 {
            return Err(PlotError::NoAttempts {
                experiment: experiment.to_string(),
            });
        }
        let hints = Hints::of(record);
        let spec = if header.spec.is_empty() {
            hints.spec.clone()
        } else {
            header.spec.clone()
        };
        let choice = Choice::new(experiment, &spec, metric, &hints, specs, || {
            header.metrics.keys().cloned().collect()
        })?;
        Ok(SeriesPlan { choice })
    }
}

/// A chart's choices made from a series header ([`Progress::plan_series`]).
pub struct SeriesPlan {
    choice: Choice,
}

/// The attempts a chart of a series draws ([`SeriesPlan::select`]).
#[derive(Clone, Debug)]
pub struct SeriesDraw {
    /// Indices into the series' points of those drawn, in order.
    pub drawn: Vec<usize>,
    /// What every attempt adds up to.
    pub totals: Totals,
    downsampled: Option<Downsampled>,
    shared_task: bool,
}

impl SeriesPlan {
    /// The metric to read the series' values of.
    pub fn metric(&self) -> &str {
        &self.choice.metric
    }

    /// Chooses the points to draw from `series` (read with
    /// [`SeriesPlan::metric`]) as [`Progress::downsample`] chooses them,
    /// at most about `max_points`. Cost: O(attempts), no allocation per
    /// attempt. Errors: no attempts.
    pub fn select(
        &self,
        experiment: &str,
        series: &Series,
        max_points: usize,
    ) -> Result<SeriesDraw, PlotError> {
        let points = &series.points;
        if points.is_empty() {
            return Err(PlotError::NoAttempts {
                experiment: experiment.to_string(),
            });
        }
        let marks: Vec<Mark> = points
            .iter()
            .map(|p| Mark::of_kind(p.outcome, p.run_crashed))
            .collect();
        let value = |i: usize| value_of(&points[i], marks[i]);
        let count = |m: Mark| marks.iter().filter(|x| **x == m).count();
        let totals = Totals {
            attempts: points.len(),
            kept: count(Mark::Keep),
            crashed: count(Mark::Crash),
            best: (0..points.len())
                .filter(|&i| marks[i].is_head())
                .filter_map(value)
                .next_back(),
        };
        let mut tasks = (0..points.len())
            .filter(|&i| marks[i] != Mark::Baseline)
            .map(|i| points[i].task);
        let shared_task = match tasks.next() {
            Some(first) => points.len() > 2 && tasks.all(|t| t == first),
            None => false,
        };
        let (drawn, downsampled) =
            match select(points.len(), |i| marks[i].is_head(), value, max_points) {
                None => ((0..points.len()).collect(), None),
                Some((keep, buckets)) => {
                    let drawn: Vec<usize> = (0..points.len()).filter(|&i| keep[i]).collect();
                    let d = Downsampled {
                        attempts: totals.attempts,
                        kept: totals.kept,
                        crashed: totals.crashed,
                        drawn: drawn.len(),
                        buckets,
                    };
                    (drawn, Some(d))
                }
            };
        Ok(SeriesDraw {
            drawn,
            totals,
            downsampled,
            shared_task,
        })
    }

    /// The chart of the drawn attempts: `attempts` are those of
    /// `draw.drawn`, in that order, read in full (with their Results,
    /// Outcome and Description); `confirmation` gives each one's
    /// Confirmation. `None` when they disagree with `series` (another
    /// entity, mark or value): the caller then reads every attempt.
    pub fn progress(
        self,
        experiment: &str,
        series: &Series,
        draw: &SeriesDraw,
        attempts: &[Attempt],
        confirmation: impl Fn(&Attempt) -> Option<Confirmation>,
    ) -> Option<Progress> {
        if attempts.len() != draw.drawn.len() {
            return None;
        }
        let mut points = Vec::with_capacity(attempts.len());
        for (&i, a) in draw.drawn.iter().zip(attempts) {
            let s = series.points.get(i)?;
            let mut p = point(i + 1, a, &self.choice.metric, draw.shared_task);
            let mark = Mark::of_kind(s.outcome, s.run_crashed);
            let same_value = p.value.map(f64::to_bits) == value_of(s, mark).map(f64::to_bits);
            if a.entity != s.entity || p.mark != mark || !same_value {
                return None;
            }
            p.confirmed = confirmed(a, confirmation(a));
            points.push(p);
        }
        let mut progress = self.choice.progress(experiment, points);
        progress.downsampled = draw.downsampled.clone();
        Some(progress)
    }
}

/// A point's value as the chart draws it: none for a crash.
fn value_of(p: &SeriesPoint, mark: Mark) -> Option<f64> {
    match mark {
        Mark::Crash => None,
        _ => p.value,
    }
}
