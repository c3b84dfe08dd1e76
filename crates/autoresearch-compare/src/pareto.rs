//! The Pareto comparator: keep only a candidate that dominates the incumbent.

use crate::spec::{CompareSpec, Objective};
use crate::summary;
use async_trait::async_trait;
use autoresearch_core::compare::{Comparator, CompareError, Decision, Evidence, Verdict};
use serde_json::json;

/// Keeps a candidate that is no worse than the incumbent on every objective
/// and better on at least one, where differences within an objective's
/// epsilon are ties. Several samples on a side are averaged. A missing
/// objective on either side is a discard naming it.
#[derive(Clone, Debug)]
pub struct Pareto {
    objectives: Vec<Objective>,
}

impl Pareto {
    /// A Pareto comparator over `objectives`; all must be present on both sides.
    pub fn new(objectives: Vec<Objective>) -> Self {
        Pareto { objectives }
    }

    /// The decision, computed synchronously (no I/O).
    pub fn decide(&self, incumbent: &Evidence, candidate: &Evidence) -> Decision {
        let mean = |e: &Evidence, m: &str| summary(&e.samples(m)).map(|s| s.mean);
        let inc: Vec<Option<f64>> = self
            .objectives
            .iter()
            .map(|o| mean(incumbent, &o.metric))
            .collect();
        let cand: Vec<Option<f64>> = self
            .objectives
            .iter()
            .map(|o| mean(candidate, &o.metric))
            .collect();
        let descriptor = json!({
            "comparator": CompareSpec::Pareto(self.objectives.clone()).to_string(),
            "objectives": self.objectives.iter().map(|o| json!({
                "metric": o.metric, "direction": o.direction.long(), "epsilon": o.epsilon,
            })).collect::<Vec<_>>(),
            "incumbent": inc,
            "candidate": cand,
        });
        let mut better = Vec::new();
        let mut worse = Vec::new();
        for ((o, i), c) in self.objectives.iter().zip(&inc).zip(&cand) {
            let (i, c) = match (i, c) {
                (Some(i), Some(c)) => (*i, *c),
                (_, None) => {
                    return Decision::new(
                        Verdict::Discard,
                        format!("candidate has no {}", o.metric),
                        descriptor,
                    );
                }
                (None, _) => {
                    return Decision::new(
                        Verdict::Discard,
                        format!("incumbent has no {}", o.metric),
                        descriptor,
                    );
                }
            };
            let imp = o.direction.improvement(i, c);
            if imp > o.epsilon {
                better.push(format!(
                    "{} {} -> {}",
                    o.metric,
                    crate::num(i),
                    crate::num(c)
                ));
            } else if imp < -o.epsilon {
                worse.push(format!(
                    "{} {} -> {}",
                    o.metric,
                    crate::num(i),
                    crate::num(c)
                ));
            }
        }
        if !worse.is_empty() {
            Decision::new(
                Verdict::Discard,
                format!("does not dominate: worse on {}", worse.join(", ")),
                descriptor,
            )
        } else if better.is_empty() {
            Decision::new(
                Verdict::Discard,
                "does not dominate: no objective improves beyond its epsilon",
                descriptor,
            )
        } else {
            Decision::new(
                Verdict::Keep,
                format!(
                    "dominates: better on {}, no worse elsewhere",
                    better.join(", ")
                ),
                descriptor,
            )
        }
    }
}

#[async_trait]
impl Comparator for Pareto {
    fn spec(&self) -> String {
        CompareSpec::Pareto(self.objectives.clone()).to_string()
    }

    async fn compare(
        &self,
        incumbent: &Evidence,
        candidate: &Evidence,
    ) -> Result<Decision, CompareError> {
        Ok(self.decide(incumbent, candidate))
    }
}
