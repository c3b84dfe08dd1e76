//! The comparison interface: the library never decides what "better" means.
//! A [`Comparator`] sees the evidence for the incumbent (the branch head) and
//! a candidate and answers with a [`Decision`].

use crate::components::EvalResult;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Which way a metric improves. Serialized as `minimize` / `maximize`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Lower is better (the default).
    #[default]
    Minimize,
    /// Higher is better.
    Maximize,
}

impl Direction {
    /// Parses `min`, `minimize`, `max` or `maximize`.
    pub fn parse(s: &str) -> Option<Direction> {
        match s.trim() {
            "min" | "minimize" => Some(Direction::Minimize),
            "max" | "maximize" => Some(Direction::Maximize),
            _ => None,
        }
    }

    /// How much better `candidate` is than `incumbent` (positive: better).
    pub fn improvement(self, incumbent: f64, candidate: f64) -> f64 {
        match self {
            Direction::Minimize => incumbent - candidate,
            Direction::Maximize => candidate - incumbent,
        }
    }

    /// `min` or `max`, as in comparator spec strings.
    pub fn short(self) -> &'static str {
        match self {
            Direction::Minimize => "min",
            Direction::Maximize => "max",
        }
    }

    /// `minimize` or `maximize`, as in `autoresearch.toml` and metadata.
    pub fn long(self) -> &'static str {
        match self {
            Direction::Minimize => "minimize",
            Direction::Maximize => "maximize",
        }
    }
}

pub use crate::components::Vote;

/// Everything known about one side of a comparison.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Evidence {
    /// The run that produced this commit; empty for a baseline without a run.
    pub run_id: String,
    /// The commit this side measured (full hash).
    pub commit: String,
    /// Every Result recorded for this commit: one per evaluator, or one per
    /// sample of a repeated evaluator, in the order they were recorded.
    pub results: Vec<EvalResult>,
    /// The candidate's diff against its base, when the caller has it.
    pub diff: Option<String>,
    /// Human votes cast on this run.
    pub votes: Vec<Vote>,
    /// The experiment's noise model at the time of the comparison, when the
    /// caller has one (the loop gives it on both sides): how much one
    /// evaluation varies, per metric, pooled over every repeated sample.
    pub noise: Option<crate::noise::NoiseModel>,
}

impl Evidence {
    /// Every finite value of `metric` across this side's results, in order.
    /// A result whose outputs are not a JSON object, or lack the metric, is skipped.
    pub fn samples(&self, metric: &str) -> Vec<f64> {
        self.results
            .iter()
            .filter_map(|r| r.outputs().ok())
            .filter_map(|o| o.get(metric).and_then(Value::as_f64))
            .filter(|v| v.is_finite())
            .collect()
    }

    /// The finite values of `metric` with when they were measured (Unix
    /// milliseconds), in order, leaving out samples the loop took of this
    /// commit while it was a candidate ([`ResultMeta::role`](crate::ResultMeta::role)
    /// `candidate`) when `fresh_only`: those selected it, so they are biased
    /// in its favour (the winner's curse).
    pub fn timed_samples(&self, metric: &str, fresh_only: bool) -> Vec<(i64, f64)> {
        self.results
            .iter()
            .filter(|r| {
                let selected = || {
                    r.meta()
                        .is_some_and(|m| m.role == crate::ResultMeta::CANDIDATE)
                };
                !(fresh_only && selected())
            })
            .filter_map(|r| {
                let v = r.outputs().ok()?.get(metric)?.as_f64()?;
                v.is_finite().then_some((r.evaluated_at_ms, v))
            })
            .collect()
    }
}

/// What a comparator concluded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "verdict")]
pub enum Verdict {
    /// The candidate is better: advance the head to it.
    Keep,
    /// The candidate is not better.
    Discard,
    /// Evaluate again: this many more samples of each side.
    NeedMore {
        /// More samples wanted of the incumbent's commit.
        incumbent: u32,
        /// More samples wanted of the candidate's commit.
        candidate: u32,
    },
    /// Waiting for something outside the loop (people voting).
    Pending,
}

impl Verdict {
    /// The verdict's word (`keep`, `discard`, `need_more`, `pending`), as stored in decisions and
    /// descriptors.
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Keep => "keep",
            Verdict::Discard => "discard",
            Verdict::NeedMore { .. } => "need_more",
            Verdict::Pending => "pending",
        }
    }
}

/// A verdict with its reasons. The descriptor is stored as the decision's
/// reason and, on keep, as the BranchHead's `descriptor_json`.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// What to do with the candidate.
    pub verdict: Verdict,
    /// One line for people.
    pub reason: String,
    /// Free-form detail: means, p-values, vectors, a judge's verdict.
    pub descriptor: Value,
}

impl Decision {
    /// A decision of `verdict` with its one-line `reason` and free-form `descriptor`.
    pub fn new(verdict: Verdict, reason: impl Into<String>, descriptor: Value) -> Self {
        Decision {
            verdict,
            reason: reason.into(),
            descriptor,
        }
    }
}

/// A comparator that could not reach a verdict at all (as opposed to a
/// `Discard`): a misconfiguration or a failing external judge.
#[derive(Debug, thiserror::Error)]
#[error("comparator {comparator}: {reason}")]
pub struct CompareError {
    /// The comparator's spec or name, as the caller configured it.
    pub comparator: String,
    /// What went wrong, in one line for people.
    pub reason: String,
}

/// Decides whether a candidate beats the incumbent.
///
/// Implementations must be deterministic in their evidence where they can, so
/// that counterfactual replay on a fork reproduces their decisions.
///
/// ```
/// use autoresearch_core::compare::{Comparator, CompareError, Decision, Evidence, Verdict};
/// use serde_json::json;
///
/// /// Keeps any candidate whose `score` is higher.
/// struct HigherScore;
///
/// #[async_trait::async_trait]
/// impl Comparator for HigherScore {
///     fn spec(&self) -> String {
///         "higher-score".into()
///     }
///     async fn compare(&self, inc: &Evidence, cand: &Evidence) -> Result<Decision, CompareError> {
///         let (a, b) = (inc.samples("score"), cand.samples("score"));
///         let (Some(a), Some(b)) = (a.last(), b.last()) else {
///             return Ok(Decision::new(Verdict::Discard, "no score", json!({})));
///         };
///         let verdict = if b > a { Verdict::Keep } else { Verdict::Discard };
///         Ok(Decision::new(verdict, format!("{b} vs {a}"), json!({"incumbent": a, "candidate": b})))
///     }
/// }
/// ```
#[async_trait]
pub trait Comparator: Send + Sync {
    /// The spec string that recreates this comparator, e.g. `scalar:val_bpb:min`.
    fn spec(&self) -> String;

    /// Compares one candidate with the incumbent.
    async fn compare(
        &self,
        incumbent: &Evidence,
        candidate: &Evidence,
    ) -> Result<Decision, CompareError>;

    /// Compares a round of candidates measured against the same incumbent,
    /// returning one decision per candidate, in order. The default compares
    /// each alone; a tournament overrides it to keep at most one. What to do
    /// with several keeps (promote one, rebase the others) is the loop's call.
    async fn compare_round(
        &self,
        incumbent: &Evidence,
        candidates: &[Evidence],
    ) -> Result<Vec<Decision>, CompareError> {
        let mut out = Vec::with_capacity(candidates.len());
        for c in candidates {
            out.push(self.compare(incumbent, c).await?);
        }
        Ok(out)
    }
}
