//! [`Progress`]: what the chart shows, read from an experiment's attempts.
//! Pure data, no drawing, so that it can be tested and printed as JSON.

use crate::PlotError;
use autoresearch_core::Outcome;
use autoresearch_core::RunStatus;
use autoresearch_core::lifecycle::Attempt;
use serde::Serialize;
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
    fn of(attempt: &Attempt) -> Mark {
        match attempt.outcome.as_ref().map(|o| o.status.as_str()) {
            Some(Outcome::KEEP) => Mark::Keep,
            Some(Outcome::DISCARD) => Mark::Discard,
            Some(Outcome::CRASH) => Mark::Crash,
            Some(Outcome::BASELINE) => Mark::Baseline,
            Some(Outcome::PENDING) => Mark::Pending,
            Some(_) => Mark::Undecided,
            None if attempt.run.status() == Ok(RunStatus::Crashed) => Mark::Crash,
            None => Mark::Undecided,
        }
    }

    /// Whether the head moved to this attempt.
    pub fn is_head(self) -> bool {
        matches!(self, Mark::Keep | Mark::Baseline)
    }
}

/// Whether smaller or larger values of the metric are better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Minimize,
    Maximize,
}

/// One attempt as charted.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Point {
    /// 1-based position among the experiment's attempts.
    pub attempt: usize,
    pub run_id: String,
    pub mark: Mark,
    /// Mean of the metric over the attempt's samples; `None` when it has none
    /// and always for a crash.
    pub value: Option<f64>,
    /// Every finite sample of the metric (several with a noise-aware comparator).
    pub samples: Vec<f64>,
    /// A short label for people: the change's description, or its commit.
    pub label: String,
}

/// Everything the progress chart of one experiment shows.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Progress {
    pub experiment: String,
    pub metric: String,
    /// Taken from the deciding comparator's spec when it says (`...:min`).
    pub direction: Option<Direction>,
    pub points: Vec<Point>,
}

/// Labels longer than this are cut with an ellipsis.
pub const LABEL_CHARS: usize = 30;

impl Progress {
    /// Reads the chart's data from `attempts` (as returned by
    /// `autoresearch_core::lifecycle::attempts`, in recorded order).
    ///
    /// `metric` defaults to the one named by the deciding comparator's spec
    /// (`scalar:val_bpb:min` names `val_bpb`), else the only numeric output
    /// the results share. Errors: no attempts, or no metric to choose.
    pub fn from_attempts(
        experiment: &str,
        attempts: &[Attempt],
        metric: Option<&str>,
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
            .unwrap_or("");
        let metric = match metric {
            Some(m) => m.to_string(),
            None => choose_metric(experiment, attempts, spec)?,
        };
        let points = attempts
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let mark = Mark::of(a);
                let samples = samples(a, &metric);
                let value = match mark {
                    Mark::Crash => None,
                    _ if samples.is_empty() => None,
                    _ => Some(samples.iter().sum::<f64>() / samples.len() as f64),
                };
                Point {
                    attempt: i + 1,
                    run_id: a.run.run_id.clone(),
                    mark,
                    value,
                    samples,
                    label: label(a, mark),
                }
            })
            .collect();
        Ok(Progress {
            experiment: experiment.to_string(),
            direction: direction_of(spec, &metric),
            metric,
            points,
        })
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
}

/// Finite values of `metric` over the attempt's Results, in order.
fn samples(attempt: &Attempt, metric: &str) -> Vec<f64> {
    attempt
        .results
        .iter()
        .filter_map(|r| r.outputs().ok())
        .filter_map(|o| o.get(metric).and_then(serde_json::Value::as_f64))
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
            serde_json::Value::Object(map) => Some(map),
            _ => None,
        })
        .flat_map(|map| {
            map.into_iter()
                .filter(|(_, v)| v.is_number())
                .map(|(k, _)| k)
        })
        .collect()
}

/// `(metric, direction)` pairs a comparator spec names, in order: every
/// token followed by `min`/`max`, so `scalar:val_bpb:min`,
/// `stat:x:max:alpha=0.05`, `pareto:a:min,b:max` and
/// `tournament:stat:x:min` all read as expected.
fn spec_objectives(spec: &str) -> Vec<(&str, Direction)> {
    let tokens: Vec<&str> = spec
        .split([':', ',', ';', '(', ')'])
        .map(str::trim)
        .collect();
    tokens
        .windows(2)
        .filter_map(|w| {
            let dir = match w[1] {
                "min" | "minimize" => Direction::Minimize,
                "max" | "maximize" => Direction::Maximize,
                _ => return None,
            };
            (!w[0].is_empty()).then_some((w[0], dir))
        })
        .collect()
}

fn direction_of(spec: &str, metric: &str) -> Option<Direction> {
    spec_objectives(spec)
        .into_iter()
        .find(|(m, _)| *m == metric)
        .map(|(_, d)| d)
}

fn choose_metric(experiment: &str, attempts: &[Attempt], spec: &str) -> Result<String, PlotError> {
    let available = numeric_outputs(attempts);
    if let Some((m, _)) = spec_objectives(spec)
        .into_iter()
        .find(|(m, _)| available.contains(*m))
    {
        return Ok(m.to_string());
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

/// A short label: the first line of the run's task when it describes the
/// change, else the commit.
fn label(attempt: &Attempt, mark: Mark) -> String {
    if mark == Mark::Baseline {
        return "baseline".to_string();
    }
    let task = attempt.run.task.lines().next().unwrap_or("").trim();
    let text = if task.is_empty() {
        attempt.run.commit_hash.chars().take(7).collect()
    } else {
        task.to_string()
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

    #[test]
    fn spec_names_metrics_and_directions() {
        use Direction::*;
        let check = |spec: &str, expected: &[(&str, Direction)]| {
            assert_eq!(spec_objectives(spec), expected, "{spec}");
        };
        check("scalar:val_bpb:min", &[("val_bpb", Minimize)]);
        check("stat:score:maximize:alpha=0.05", &[("score", Maximize)]);
        check(
            "pareto:a:min,b:max:eps=0.1",
            &[("a", Minimize), ("b", Maximize)],
        );
        check("tournament:stat:x:min", &[("x", Minimize)]);
        check(
            "all:metric(tests)==1;scalar:loss:min",
            &[("loss", Minimize)],
        );
        check("judge:./judge.sh", &[]);
        check("vote:quorum=2", &[]);
        check("", &[]);
        assert_eq!(direction_of("pareto:a:min,b:max", "b"), Some(Maximize));
        assert_eq!(direction_of("pareto:a:min,b:max", "c"), None);
    }

    #[test]
    fn shorten_cuts_on_characters() {
        assert_eq!(shorten("short", 10), "short");
        assert_eq!(shorten("ééééééé", 4), "ééé…");
    }
}
