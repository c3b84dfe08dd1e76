//! The config of the decision's safeguards: `[confirm]` (held-out
//! confirmation of a candidate the comparator would keep) and `[run]
//! cost_budget` (stop once the experiment has spent this much).

use crate::config::{MetricsFormat, Span};
use autoresearch_core::compare::Direction;
use serde::Deserialize;
use std::time::Duration;

/// `[confirm]`: a second measurement, by a command the proposer never sees,
/// of every candidate the comparator would keep. The candidate is promoted
/// only when its confirm metric is not worse than the incumbent's by more
/// than `tolerance`; otherwise it is a discard (cause `not confirmed`).
///
/// The command lives in this config file, which candidates may not change
/// (it is protected), and runs in a checkout of the candidate like the
/// evaluator. Its held-out data belongs outside the repository, listed in
/// `data`: under the bubblewrap sandbox those paths are hidden from the
/// proposer and the evaluator (an empty tmpfs over each) and bound
/// read-only into confirm jobs only. Without the sandbox, jobs run as the
/// user and could read them.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfirmConfig {
    /// Shell command run in a checkout of the candidate (and, once, of the
    /// incumbent); prints the confirm metric.
    pub command: String,
    /// The metric it prints that decides.
    pub metric: String,
    /// `"min"` or `"max"` (also `minimize`, `maximize`).
    #[serde(deserialize_with = "direction")]
    pub direction: Direction,
    /// How far the candidate's confirm value may fall behind the
    /// incumbent's and still be confirmed, in the metric's own units; 0 by
    /// default (no regression at all).
    #[serde(default)]
    pub tolerance: f64,
    /// How long one confirmation may run; 10 minutes by default.
    #[serde(default = "default_timeout")]
    pub timeout: Span,
    /// How its metrics are read: `lines` (default), `json` or `file:PATH`.
    #[serde(default = "default_metrics")]
    pub metrics: MetricsFormat,
    /// Held-out data (files or directories outside the repository): hidden
    /// from every other job in the sandbox, readable by confirm jobs.
    #[serde(default)]
    pub data: Vec<String>,
}

fn default_timeout() -> Span {
    Span(Duration::from_secs(10 * 60))
}

fn default_metrics() -> MetricsFormat {
    MetricsFormat::Lines
}

fn direction<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Direction, D::Error> {
    let s = String::deserialize(d)?;
    Direction::parse(&s).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "invalid direction {s:?}: expected \"min\" or \"max\""
        ))
    })
}

impl ConfirmConfig {
    /// The checks the types cannot make: the key and why, on failure.
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.command.trim().is_empty() {
            return Err(("confirm.command", "must not be empty".into()));
        }
        if self.metric.trim().is_empty() {
            return Err(("confirm.metric", "must name the metric it prints".into()));
        }
        if !self.tolerance.is_finite() || self.tolerance < 0.0 {
            return Err((
                "confirm.tolerance",
                format!(
                    "{} is not a non-negative number (in the metric's units)",
                    self.tolerance
                ),
            ));
        }
        Ok(())
    }
}

/// `[run] cost_budget`: the loop stops launching runs once the experiment
/// (every run recorded in its world, all invocations together) has spent
/// this much: `cpu`, CPU time (user + system) of every proposer,
/// evaluator and confirm job; and/or `limit` units of `metric`, a cost
/// metric the proposer prints (`cost`, `tokens`, `*_cost`, `*_tokens`),
/// summed. Whichever is reached first stops the loop (cause `cost budget
/// spent`); a run in flight finishes.
///
/// ```toml
/// [run.cost_budget]
/// cpu = "10h"        # CPU time of all jobs
/// metric = "cost"    # what the proposer prints, e.g. `cost: 0.12` (dollars)
/// limit = 25.0
/// ```
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostBudget {
    /// CPU time of every job, summed.
    #[serde(default)]
    pub cpu: Option<Span>,
    /// A cost metric the proposer prints.
    #[serde(default)]
    pub metric: Option<String>,
    /// The most of `metric`, summed, the experiment may spend.
    #[serde(default)]
    pub limit: Option<f64>,
}

impl CostBudget {
    /// The checks the types cannot make: the key and why, on failure.
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        match (&self.metric, self.limit) {
            (Some(m), Some(l)) => {
                if !autoresearch_core::cost::is_cost_metric(m) {
                    return Err((
                        "run.cost_budget.metric",
                        format!(
                            "{m:?} is not recorded as a cost: use cost, tokens, or a name ending in _cost or _tokens"
                        ),
                    ));
                }
                if !l.is_finite() || l < 0.0 {
                    return Err((
                        "run.cost_budget.limit",
                        format!("{l} is not a non-negative number"),
                    ));
                }
            }
            (Some(_), None) => {
                return Err((
                    "run.cost_budget.limit",
                    "missing: how much of the metric may be spent".into(),
                ));
            }
            (None, Some(_)) => {
                return Err((
                    "run.cost_budget.metric",
                    "missing: which proposer metric `limit` counts (e.g. \"cost\")".into(),
                ));
            }
            (None, None) if self.cpu.is_none() => {
                return Err((
                    "run.cost_budget",
                    "sets nothing: give `cpu` (e.g. \"10h\") and/or `metric` with `limit`".into(),
                ));
            }
            (None, None) => {}
        }
        Ok(())
    }

    /// Why `spent` (the experiment's summed costs) exhausts this budget,
    /// in words; `None` while it does not.
    pub fn exhausted_by(&self, spent: &autoresearch_core::RunCost) -> Option<String> {
        let total = spent.total();
        if let Some(cpu) = self.cpu
            && total.cpu_ms >= cpu.0.as_millis() as u64
        {
            return Some(format!(
                "{} CPU-seconds spent of a budget of {}",
                autoresearch_core::num::fmt_f64(total.cpu_ms as f64 / 1000.0),
                autoresearch_core::num::fmt_f64(cpu.0.as_secs_f64())
            ));
        }
        if let (Some(m), Some(limit)) = (&self.metric, self.limit) {
            let used = spent.metrics.get(m).copied().unwrap_or(0.0);
            if used >= limit {
                return Some(format!(
                    "{} {m} spent of a budget of {}",
                    autoresearch_core::num::fmt_f64(used),
                    autoresearch_core::num::fmt_f64(limit)
                ));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};
    use autoresearch_core::RunCost;
    use std::path::Path;

    const MINIMAL: &str = "name = \"x\"\n[propose]\ncommand = \"p\"\n[evaluate]\ncommand = \"e\"\n";

    fn parse(extra: &str) -> Result<Config, ConfigError> {
        Config::parse(
            &format!("{MINIMAL}{extra}"),
            Path::new("/r/autoresearch.toml"),
        )
    }

    #[test]
    fn confirm_parses_with_defaults_and_checks_its_values() {
        let c = parse("[confirm]\ncommand = \"c\"\nmetric = \"acc\"\ndirection = \"max\"\n")
            .unwrap()
            .confirm
            .unwrap();
        assert_eq!(c.metric, "acc");
        assert_eq!(c.tolerance, 0.0);
        assert_eq!(c.timeout.0.as_secs(), 600);
        assert!(parse("").is_ok_and(|c| c.confirm.is_none()));
        let cases: &[(&str, &str)] = &[
            (
                "[confirm]\ncommand = \"c\"\nmetric = \"acc\"\n",
                "direction",
            ),
            (
                "[confirm]\ncommand = \"c\"\nmetric = \"acc\"\ndirection = \"up\"\n",
                "invalid direction",
            ),
            (
                "[confirm]\ncommand = \" \"\nmetric = \"acc\"\ndirection = \"min\"\n",
                "confirm.command",
            ),
            (
                "[confirm]\ncommand = \"c\"\nmetric = \"acc\"\ndirection = \"min\"\ntolerance = -1\n",
                "confirm.tolerance",
            ),
            (
                "[confirm]\ncommand = \"c\"\nmetric = \"a\"\ndirection = \"min\"\nbogus = 1\n",
                "bogus",
            ),
        ];
        for (text, needle) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{err:?} should mention {needle:?}");
        }
    }

    #[test]
    fn cost_budget_parses_and_says_when_it_is_spent() {
        let b = parse("[run.cost_budget]\ncpu = \"2s\"\nmetric = \"cost\"\nlimit = 1.5\n")
            .unwrap()
            .run
            .cost_budget
            .unwrap();
        let mut spent = RunCost::default();
        assert_eq!(b.exhausted_by(&spent), None);
        spent.evaluate.cpu_ms = 2500;
        let why = b.exhausted_by(&spent).unwrap();
        assert!(why.contains("2.5 CPU-seconds"), "{why}");
        spent.evaluate.cpu_ms = 0;
        spent.metrics.insert("cost".into(), 1.5);
        assert!(b.exhausted_by(&spent).unwrap().contains("1.5 cost"));
        let cases: &[(&str, &str)] = &[
            ("[run.cost_budget]\n", "sets nothing"),
            ("[run.cost_budget]\nmetric = \"cost\"\n", "limit"),
            ("[run.cost_budget]\nlimit = 3\n", "metric"),
            (
                "[run.cost_budget]\nmetric = \"val_bpb\"\nlimit = 3\n",
                "not recorded as a cost",
            ),
        ];
        for (text, needle) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{err:?} should mention {needle:?}");
        }
    }
}
