//! All-of combinations: gate conditions on the candidate, then comparators.

use crate::spec::{CompareSpec, Condition, Member};
use async_trait::async_trait;
use autoresearch_core::compare::{Comparator, CompareError, Decision, Evidence, Verdict};
use serde_json::{Value, json};
use std::sync::Arc;

enum Part {
    Condition(Condition),
    Compare(Arc<dyn Comparator>),
}

/// Checks its members in order and keeps only when every one keeps: a gate
/// condition holds when every sample of its metric in the candidate's
/// results satisfies it (a missing metric fails it). The first member that
/// does not keep decides: its discard, need-more or pending is the answer,
/// and later members are not asked.
pub struct AllOf {
    spec: CompareSpec,
    parts: Vec<Part>,
}

impl AllOf {
    /// An all-of comparator over `members`, checked in the given order. Builds each member's
    /// comparator once, here.
    pub fn new(members: &[Member]) -> Self {
        let parts = members
            .iter()
            .map(|m| match m {
                Member::Condition(c) => Part::Condition(c.clone()),
                Member::Compare(s) => Part::Compare(crate::build(s)),
            })
            .collect();
        AllOf {
            spec: CompareSpec::All(members.to_vec()),
            parts,
        }
    }
}

/// Whether the candidate passes a gate condition, with the reason.
pub fn check_condition(c: &Condition, candidate: &Evidence) -> (bool, String) {
    let samples = candidate.samples(&c.metric);
    let text = format!("metric({}){}{}", c.metric, c.op.as_str(), c.value);
    if samples.is_empty() {
        return (
            false,
            format!("gate {text} failed: candidate has no {}", c.metric),
        );
    }
    match samples.iter().find(|x| !c.op.holds(**x, c.value)) {
        Some(bad) => (false, format!("gate {text} failed: {} = {bad}", c.metric)),
        None => (true, format!("gate {text} passed")),
    }
}

#[async_trait]
impl Comparator for AllOf {
    fn spec(&self) -> String {
        self.spec.to_string()
    }

    async fn compare(
        &self,
        incumbent: &Evidence,
        candidate: &Evidence,
    ) -> Result<Decision, CompareError> {
        let mut members: Vec<Value> = Vec::new();
        let mut reasons: Vec<String> = Vec::new();
        for part in &self.parts {
            let d = match part {
                Part::Condition(c) => {
                    let (ok, reason) = check_condition(c, candidate);
                    let verdict = if ok { Verdict::Keep } else { Verdict::Discard };
                    Decision::new(
                        verdict,
                        reason,
                        json!({"samples": candidate.samples(&c.metric)}),
                    )
                }
                Part::Compare(cmp) => cmp.compare(incumbent, candidate).await?,
            };
            members.push(json!({
                "verdict": d.verdict.as_str(),
                "reason": d.reason,
                "descriptor": d.descriptor,
            }));
            if d.verdict != Verdict::Keep {
                let descriptor = json!({"comparator": self.spec(), "members": members});
                return Ok(Decision::new(d.verdict, d.reason, descriptor));
            }
            reasons.push(d.reason);
        }
        let descriptor = json!({"comparator": self.spec(), "members": members});
        Ok(Decision::new(Verdict::Keep, reasons.join("; "), descriptor))
    }
}
