//! [`Progress`]: what the chart shows, read from an experiment's attempts.
//! Pure data, no drawing, so that it can be tested and printed as JSON.

use crate::PlotError;
use autoresearch_core::RunStatus;
use autoresearch_core::World;
use autoresearch_core::lifecycle::{Attempt, attempts};
use autoresearch_core::series::OutcomeKind;
use autoresearch_core::{ConfirmStatus, OutcomeStatus, short_commit};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeSet;

/// How one attempt is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mark {
    /// Kept: the head advanced to it.
    Keep,
    /// Measured and not kept.
    Discard,
    /// The proposer or evaluator failed; any metric it logged is ignored.
    Crash,
    /// An evaluation of a head the loop did not choose (the initial tip, or a
    /// branch moved by someone else): it becomes the incumbent like a keep.
    Baseline,
    /// Waiting for votes.
    Pending,
    /// Still running, or finished without a recorded decision.
    Undecided,
}

impl Mark {
    pub(crate) fn of(attempt: &Attempt) -> Mark {
        Mark::of_kind(
            attempt.outcome.as_ref().map(|o| OutcomeKind::of(&o.status)),
            attempt.run.status() == Ok(RunStatus::Crashed),
        )
    }

    /// The mark of an attempt whose Outcome is of `outcome` (`None`
    /// without one) and whose Run's status is `crashed` or not.
    pub fn of_kind(outcome: Option<OutcomeKind>, run_crashed: bool) -> Mark {
        match outcome {
            Some(OutcomeKind::Keep) => Mark::Keep,
            Some(OutcomeKind::Discard) => Mark::Discard,
            Some(OutcomeKind::Crash) => Mark::Crash,
            Some(OutcomeKind::Baseline) => Mark::Baseline,
            Some(OutcomeKind::Pending) => Mark::Pending,
            Some(OutcomeKind::Other) => Mark::Undecided,
            None if run_crashed => Mark::Crash,
            None => Mark::Undecided,
        }
    }

    /// Whether the head moved to this attempt.
    pub fn is_head(self) -> bool {
        matches!(self, Mark::Keep | Mark::Baseline)
    }
}

/// Whether smaller or larger values of the metric are better.
pub use autoresearch_core::compare::Direction;

/// One attempt as charted.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Point {
    /// 1-based position among the experiment's attempts.
    pub attempt: usize,
    /// The attempt's run.
    pub run_id: String,
    /// The commit evaluated (empty when the run made none).
    pub commit: String,
    /// How the attempt was decided.
    pub mark: Mark,
    /// Mean of the metric over the attempt's samples; `None` when it has none
    /// and always for a crash.
    pub value: Option<f64>,
    /// Every finite sample of the metric on the run's final commit (several
    /// with a noise-aware comparator).
    pub samples: Vec<f64>,
    /// A short label for people: the change's description (a `description`
    /// output, as results.tsv imports have, else the run's task when runs
    /// differ in it), or else the short commit; see [`Progress::relabel`].
    pub label: String,
    /// On a replay's chart ([`Progress::align_to`]): how the original run
    /// decided this attempt, when the replay decided it otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed_from: Option<Mark>,
    /// The held-out confirmation's verdict on it (`[confirm]`): `Some(true)`
    /// confirmed, `Some(false)` kept by the comparator but not confirmed
    /// (a discard), `None` when it had none.
    pub confirmed: Option<bool>,
}

/// Everything the progress chart of one experiment shows.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Progress {
    /// The experiment charted.
    pub experiment: String,
    /// The metric on the vertical axis, a key of the Results' outputs.
    pub metric: String,
    /// Taken from the deciding comparator's spec when it says (`...:min`).
    pub direction: Option<Direction>,
    /// One point per attempt, in the order the runs were recorded.
    pub points: Vec<Point>,
    /// The world read (empty when built from attempts alone).
    pub world: String,
    /// The tick it was read at (0 when built from attempts alone).
    pub tick: u64,
    /// The spec of the comparator that decided the latest attempt, empty
    /// when none was recorded.
    pub comparator: String,
    /// On a replay's chart ([`Progress::align_to`]): the world it re-decides.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<String>,
    /// Set when [`Progress::downsample`] left out points: the counts of
    /// every attempt, which the title shows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downsampled: Option<Downsampled>,
}

/// What a downsampled chart left out ([`Progress::downsample`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Downsampled {
    /// Attempts in all.
    pub attempts: usize,
    /// Kept attempts in all (every one is drawn).
    pub kept: usize,
    /// Crashed attempts in all.
    pub crashed: usize,
    /// Points drawn.
    pub drawn: usize,
    /// Buckets the other attempts were grouped in.
    pub buckets: usize,
}

/// Reads a comparator spec (as an Outcome records it) into the metrics it
/// decides on, with their directions, most important first; empty when it
/// names none or cannot be read. The spec grammar belongs to whoever made
/// the comparators: the CLI passes `autoresearch_compare::CompareSpec`'s
/// `objectives`, and `&|_| Vec::new()` reads none.
pub type SpecReader<'a> = &'a dyn Fn(&str) -> Vec<(String, Direction)>;

/// Labels longer than this are cut with an ellipsis.
pub const LABEL_CHARS: usize = 30;

impl Progress {
    /// Reads the chart's data from `attempts` (as returned by
    /// `autoresearch_core::lifecycle::attempts`, in recorded order).
    ///
    /// `metric` defaults to the first one `specs` reads from the deciding
    /// comparator's spec (`scalar:val_bpb:min` names `val_bpb`) that the
    /// results have, else the only numeric output the results share.
    /// Errors: no attempts, or no metric to choose.
    pub fn from_attempts(
        experiment: &str,
        attempts: &[Attempt],
        metric: Option<&str>,
        specs: SpecReader<'_>,
    ) -> Result<Progress, PlotError> {
        Progress::build(experiment, attempts, metric, &Hints::default(), specs)
    }

    /// [`Progress::from_attempts`] on the attempts of `experiment` in
    /// `world`, also taking the metric, direction and comparator the
    /// Experiment's metadata records (`metric`, `direction`, `comparator`, as
    /// the loop and the results.tsv importer write them).
    /// Cost: one pass over the world's Runs and Results.
    pub fn read(
        world: &World,
        experiment: &str,
        metric: Option<&str>,
        specs: SpecReader<'_>,
    ) -> Result<Progress, PlotError> {
        let record = world.experiment(experiment).map(|(_, x)| x);
        let attempts = attempts(world, experiment);
        let mut p = Progress::from_record(
            experiment,
            record.as_ref(),
            &attempts,
            |a| world.get::<autoresearch_core::Confirmation>(a.entity),
            metric,
            specs,
        )?;
        p.world = world.name().to_string();
        p.tick = world.tick().0;
        Ok(p)
    }

    /// [`Progress::from_attempts`] with the hints of the experiment's
    /// record (as [`Progress::read`] takes them) and each attempt's
    /// Confirmation from `confirmation`: for readers without a [`World`]
    /// (the ledger's current state). `world` and `tick` are left empty.
    pub fn from_record(
        experiment: &str,
        record: Option<&autoresearch_core::Experiment>,
        attempts: &[Attempt],
        confirmation: impl Fn(&Attempt) -> Option<autoresearch_core::Confirmation>,
        metric: Option<&str>,
        specs: SpecReader<'_>,
    ) -> Result<Progress, PlotError> {
        let hints = Hints::of(record);
        let mut p = Progress::build(experiment, attempts, metric, &hints, specs)?;
        for (point, a) in p.points.iter_mut().zip(attempts) {
            point.confirmed = confirmed(a, confirmation(a));
        }
        Ok(p)
    }

    /// The attempts the comparator would have kept but the held-out
    /// confirmation turned down.
    pub fn not_confirmed(&self) -> impl Iterator<Item = &Point> {
        self.points
            .iter()
            .filter(|pt| pt.confirmed == Some(false) && pt.mark == Mark::Discard)
    }

    fn build(
        experiment: &str,
        attempts: &[Attempt],
        metric: Option<&str>,
        hints: &Hints,
        specs: SpecReader<'_>,
    ) -> Result<Progress, PlotError> {
        if attempts.is_empty() {
            return Err(PlotError::NoAttempts {
                experiment: experiment.to_string(),
            });
        }
        let spec = attempts
            .iter()
            .filter_map(|a| a.outcome.as_ref())
            .map(|o| o.comparator.as_str())
            .rfind(|c| !c.is_empty())
            .unwrap_or(&hints.spec);
        let choice = Choice::new(experiment, spec, metric, hints, specs, || {
            numeric_outputs(attempts)
        })?;
        // A task every run shares (the loop records the proposer's command)
        // describes no change.
        let mut tasks = attempts
            .iter()
            .filter(|a| Mark::of(a) != Mark::Baseline)
            .map(|a| a.run.task.as_str());
        let shared_task = match tasks.next() {
            Some(first) => attempts.len() > 2 && tasks.all(|t| t == first),
            None => false,
        };
        let points = attempts
            .iter()
            .enumerate()
            .map(|(i, a)| point(i + 1, a, &choice.metric, shared_task))
            .collect();
        Ok(choice.progress(experiment, points))
    }

    /// Makes this chart of a replay (or any fork) comparable with the
    /// chart of the world it came from: every attempt keeps the number it
    /// has in `original` (a run the original does not have is numbered
    /// after them, in order), and an attempt decided otherwise than in
    /// `original` records how ([`Point::changed_from`]; a keep and a
    /// baseline count as the same, both made the candidate head).
    pub fn align_to(&mut self, original: &Progress, original_world: &str) {
        let mut next = original.points.iter().map(|p| p.attempt).max().unwrap_or(0);
        for p in &mut self.points {
            match original.points.iter().find(|o| o.run_id == p.run_id) {
                Some(o) => {
                    p.attempt = o.attempt;
                    if p.mark.is_head() != o.mark.is_head()
                        || (!p.mark.is_head() && p.mark != o.mark)
                    {
                        p.changed_from = Some(o.mark);
                    }
                }
                None => {
                    next += 1;
                    p.attempt = next;
                }
            }
        }
        self.points.sort_by_key(|p| p.attempt);
        self.replay_of = Some(original_world.to_string());
    }

    /// How many attempts a replay decided otherwise ([`Progress::align_to`]).
    pub fn changed(&self) -> usize {
        self.points
            .iter()
            .filter(|p| p.changed_from.is_some())
            .count()
    }

    /// Replaces the label of every point for which `label` answers, e.g.
    /// with the commit's subject line read from git. Labels are shortened
    /// to [`LABEL_CHARS`].
    pub fn relabel(&mut self, mut label: impl FnMut(&Point) -> Option<String>) {
        for p in &mut self.points {
            if let Some(l) = label(p) {
                let l = l.lines().next().unwrap_or("").trim().to_string();
                if !l.is_empty() {
                    p.label = shorten(&l, LABEL_CHARS);
                }
            }
        }
    }

    /// Whether a point's label is only its short commit (nothing better was
    /// recorded), so that a caller with access to the repository may relabel it.
    pub fn label_is_commit(point: &Point) -> bool {
        !point.commit.is_empty() && point.commit.starts_with(&point.label)
    }

    /// How many attempts carry `mark`.
    pub fn count(&self, mark: Mark) -> usize {
        self.points.iter().filter(|p| p.mark == mark).count()
    }

    /// The head's value over time: `(attempt, value)` at every keep or
    /// baseline that has a value, in order. Drawn as a step line.
    pub fn head_steps(&self) -> Vec<(usize, f64)> {
        self.points
            .iter()
            .filter(|p| p.mark.is_head())
            .filter_map(|p| p.value.map(|v| (p.attempt, v)))
            .collect()
    }

    /// The last head value, if any.
    pub fn best(&self) -> Option<f64> {
        self.head_steps().last().map(|(_, v)| *v)
    }

    /// Leaves at most about `max_points` points to draw when there are
    /// more (the min/max decimation of time-series plotting): every point
    /// the head moved to (keeps and baselines, so the step line is exact)
    /// and every point a replay decided otherwise; the others are grouped
    /// in order into `max_points / 3` buckets, each drawn by its lowest
    /// and highest value and its first point without one (a crash).
    /// Records what was left out in [`Progress::downsampled`]; returns
    /// whether it left out any. Cost: O(points).
    pub fn downsample(&mut self, max_points: usize) -> bool {
        let Some((keep, buckets)) = select(
            self.points.len(),
            |i| self.points[i].mark.is_head() || self.points[i].changed_from.is_some(),
            |i| self.points[i].value,
            max_points,
        ) else {
            return false;
        };
        let summary = Downsampled {
            attempts: self.points.len(),
            kept: self.count(Mark::Keep),
            crashed: self.count(Mark::Crash),
            drawn: keep.iter().filter(|k| **k).count(),
            buckets,
        };
        let mut i = 0;
        self.points.retain(|_| {
            i += 1;
            keep[i - 1]
        });
        self.downsampled = Some(summary);
        true
    }
}

/// Which of `n` points [`Progress::downsample`] draws: `None` when it
/// draws all; else a flag per point and the number of buckets. `always(i)`
/// says point `i` is always drawn, `value(i)` is its value.
pub(crate) fn select(
    n: usize,
    always: impl Fn(usize) -> bool,
    value: impl Fn(usize) -> Option<f64>,
    max_points: usize,
) -> Option<(Vec<bool>, usize)> {
    if n <= max_points.max(3) {
        return None;
    }
    let buckets = (max_points / 3).max(1);
    let others: Vec<usize> = (0..n).filter(|&i| !always(i)).collect();
    let mut keep: Vec<bool> = (0..n).map(&always).collect();
    let per = others.len().div_ceil(buckets).max(1);
    for chunk in others.chunks(per) {
        let valued = chunk.iter().filter_map(|&i| value(i).map(|v| (i, v)));
        let lo = valued.clone().min_by(|a, b| a.1.total_cmp(&b.1));
        let hi = valued.max_by(|a, b| a.1.total_cmp(&b.1));
        let none = chunk.iter().find(|&&i| value(i).is_none());
        for i in [lo.map(|x| x.0), hi.map(|x| x.0), none.copied()]
            .into_iter()
            .flatten()
        {
            keep[i] = true;
        }
    }
    Some((keep, others.len().div_ceil(per)))
}

/// The point of attempt number `number` (1-based).
pub(crate) fn point(number: usize, a: &Attempt, metric: &str, shared_task: bool) -> Point {
    let mark = Mark::of(a);
    let samples = samples(a, metric);
    let value = match mark {
        Mark::Crash => None,
        _ if samples.is_empty() => None,
        _ => Some(samples.iter().sum::<f64>() / samples.len() as f64),
    };
    Point {
        attempt: number,
        run_id: a.run.run_id.clone(),
        commit: a.run.commit_hash.clone(),
        mark,
        value,
        samples,
        label: label(a, mark, shared_task),
        changed_from: None,
        confirmed: None,
    }
}

/// The held-out confirmation's verdict on `a` ([`Point::confirmed`]).
pub(crate) fn confirmed(
    a: &Attempt,
    confirmation: Option<autoresearch_core::Confirmation>,
) -> Option<bool> {
    confirmation
        .filter(|c| c.commit == a.run.commit_hash)
        .and_then(|c| match c.status {
            ConfirmStatus::Confirmed => Some(true),
            ConfirmStatus::Rejected | ConfirmStatus::Failed => Some(false),
            _ => None,
        })
}

/// The metric charted, its direction and the deciding comparator's spec.
pub(crate) struct Choice {
    pub(crate) metric: String,
    pub(crate) direction: Option<Direction>,
    pub(crate) spec: String,
}

impl Choice {
    /// `metric` when given, else the record's, else the first the spec
    /// names that `available()` has, else the only one available.
    pub(crate) fn new(
        experiment: &str,
        spec: &str,
        metric: Option<&str>,
        hints: &Hints,
        specs: SpecReader<'_>,
        available: impl FnOnce() -> BTreeSet<String>,
    ) -> Result<Choice, PlotError> {
        let objectives = specs(spec);
        let metric = match metric.or(hints.metric.as_deref()) {
            Some(m) => m.to_string(),
            None => choose_metric(experiment, available(), &objectives)?,
        };
        let direction =
            direction_of(&objectives, &metric).or(if hints.metric.as_deref() == Some(&metric) {
                hints.direction
            } else {
                None
            });
        Ok(Choice {
            metric,
            direction,
            spec: spec.to_string(),
        })
    }

    pub(crate) fn progress(self, experiment: &str, points: Vec<Point>) -> Progress {
        Progress {
            experiment: experiment.to_string(),
            direction: self.direction,
            metric: self.metric,
            points,
            world: String::new(),
            tick: 0,
            comparator: self.spec,
            replay_of: None,
            downsampled: None,
        }
    }
}

#[derive(Default)]
pub(crate) struct Hints {
    pub(crate) spec: String,
    pub(crate) metric: Option<String>,
    direction: Option<Direction>,
}

impl Hints {
    /// The metric, direction and comparator an Experiment's metadata
    /// records (`metric`, `direction`, `comparator`).
    pub(crate) fn of(record: Option<&autoresearch_core::Experiment>) -> Hints {
        let meta = record
            .and_then(|x| x.metadata().ok())
            .unwrap_or(Value::Null);
        let text = |k: &str| meta.get(k).and_then(Value::as_str).map(str::to_string);
        Hints {
            spec: text("comparator").unwrap_or_default(),
            metric: text("metric"),
            direction: text("direction").and_then(|d| parse_direction(&d)),
        }
    }
}

/// A direction as metadata records it; `lower` and `higher` are read too.
fn parse_direction(d: &str) -> Option<Direction> {
    Direction::parse(d).or(match d.trim() {
        "lower" => Some(Direction::Minimize),
        "higher" => Some(Direction::Maximize),
        _ => None,
    })
}

/// Finite values of `metric` over the attempt's Results of its final commit
/// ([`Attempt::final_results`]), in order.
fn samples(attempt: &Attempt, metric: &str) -> Vec<f64> {
    attempt
        .final_results()
        .filter_map(|r| r.outputs().ok())
        .filter_map(|o| o.get(metric).and_then(Value::as_f64))
        .filter(|v| v.is_finite())
        .collect()
}

/// Every numeric top-level output key across the attempts' Results.
fn numeric_outputs(attempts: &[Attempt]) -> BTreeSet<String> {
    attempts
        .iter()
        .flat_map(|a| a.results.iter())
        .filter_map(|r| r.outputs().ok())
        .filter_map(|o| match o {
            Value::Object(map) => Some(map),
            _ => None,
        })
        .flat_map(|map| {
            map.into_iter()
                .filter(|(_, v)| v.is_number())
                .map(|(k, _)| k)
        })
        .collect()
}

fn direction_of(objectives: &[(String, Direction)], metric: &str) -> Option<Direction> {
    objectives
        .iter()
        .find(|(m, _)| m == metric)
        .map(|(_, d)| *d)
}

fn choose_metric(
    experiment: &str,
    available: BTreeSet<String>,
    objectives: &[(String, Direction)],
) -> Result<String, PlotError> {
    if let Some((m, _)) = objectives.iter().find(|(m, _)| available.contains(m)) {
        return Ok(m.clone());
    }
    let mut it = available.iter();
    match (it.next(), it.next()) {
        (Some(only), None) => Ok(only.clone()),
        _ => Err(PlotError::NoMetric {
            experiment: experiment.to_string(),
            available: available.into_iter().collect(),
        }),
    }
}

/// A short label: a `description` output (an import's), else what the
/// proposer said it tried (the run's `Description`), else the first line of
/// the run's task when it describes the change, else the short commit.
fn label(attempt: &Attempt, mark: Mark, shared_task: bool) -> String {
    if mark == Mark::Baseline {
        return OutcomeStatus::Baseline.to_string();
    }
    let description = attempt
        .results
        .iter()
        .filter_map(|r| r.outputs().ok())
        .find_map(|o| {
            o.get("description")
                .and_then(Value::as_str)
                .map(str::to_string)
        });
    let task = attempt.run.task.lines().next().unwrap_or("").trim();
    let text = match description
        .filter(|d| !d.trim().is_empty())
        .or_else(|| attempt.idea().map(str::to_string))
    {
        Some(d) => d.trim().to_string(),
        None if !task.is_empty() && !shared_task => task.to_string(),
        None => short_commit(&attempt.run.commit_hash).to_string(),
    };
    shorten(&text, LABEL_CHARS)
}

/// `text` cut to at most `max` characters, with an ellipsis when cut.
pub fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut s: String = text.chars().take(max.saturating_sub(1)).collect();
    s.push('…');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(i: usize, mark: Mark, value: Option<f64>) -> Point {
        Point {
            attempt: i + 1,
            run_id: format!("r{i}"),
            commit: String::new(),
            mark,
            value,
            samples: value.into_iter().collect(),
            label: String::new(),
            changed_from: None,
            confirmed: None,
        }
    }

    #[test]
    fn downsampling_keeps_every_head_and_each_buckets_extremes() {
        let points: Vec<Point> = (0..10_000)
            .map(|i| match i {
                _ if i % 1000 == 0 => point(i, Mark::Keep, Some(100.0 - i as f64 / 1000.0)),
                _ if i % 777 == 0 => point(i, Mark::Crash, None),
                _ => point(i, Mark::Discard, Some(200.0 + (i % 97) as f64)),
            })
            .collect();
        let mut p = Progress {
            experiment: "e".into(),
            metric: "m".into(),
            direction: None,
            points: points.clone(),
            world: String::new(),
            tick: 0,
            comparator: String::new(),
            replay_of: None,
            downsampled: None,
        };
        let steps = p.head_steps();
        assert!(
            !p.clone().downsample(20_000),
            "under the limit nothing is left out"
        );
        assert!(p.downsample(300));
        let d = p.downsampled.clone().unwrap();
        assert_eq!((d.attempts, d.kept, d.buckets), (10_000, 10, 100));
        assert_eq!(d.drawn, p.points.len());
        assert!(p.points.len() <= 10 + 3 * 100, "{}", p.points.len());
        // The step line is exact; the value range is kept; points stay in order.
        assert_eq!(p.head_steps(), steps);
        let max = |ps: &[Point]| ps.iter().filter_map(|p| p.value).fold(f64::MIN, f64::max);
        assert_eq!(max(&p.points), max(&points));
        assert!(p.points.windows(2).all(|w| w[0].attempt < w[1].attempt));
        assert!(p.points.iter().any(|pt| pt.mark == Mark::Crash));
    }

    #[test]
    fn shorten_cuts_on_characters() {
        assert_eq!(shorten("short", 10), "short");
        assert_eq!(shorten("ééééééé", 4), "ééé…");
    }
}
