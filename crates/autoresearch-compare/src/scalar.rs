//! The scalar comparator: one metric, better by more than a minimum delta.

use crate::spec::{CompareSpec, ScalarSpec};
use crate::summary;
use async_trait::async_trait;
use autoresearch_core::compare::{Comparator, CompareError, Decision, Evidence, Verdict};
use serde_json::json;

/// Keeps a candidate whose metric improves on the incumbent's by more than
/// `min_delta`. With several samples on a side it compares like with like:
/// the means of the same number of samples a side, the most recent ones of
/// the side that has more (after a `stat` run, a candidate's one sample
/// meets the incumbent's latest one, not the mean of three). A side without
/// the metric is a discard saying which side lacks it.
#[derive(Clone, Debug)]
pub struct Scalar {
    spec: ScalarSpec,
}

impl Scalar {
    /// A scalar comparator for `spec`.
    pub fn new(spec: ScalarSpec) -> Self {
        Scalar { spec }
    }

    /// The decision, computed synchronously (the comparator does no I/O).
    pub fn decide(&self, incumbent: &Evidence, candidate: &Evidence) -> Decision {
        let s = &self.spec;
        let spec_text = CompareSpec::Scalar(s.clone()).to_string();
        let (mut inc, mut cand) = (incumbent.samples(&s.metric), candidate.samples(&s.metric));
        let n = inc.len().min(cand.len()).max(1);
        inc.drain(..inc.len().saturating_sub(n));
        cand.drain(..cand.len().saturating_sub(n));
        let inc = summary(&inc);
        let cand = summary(&cand);
        let mut descriptor = json!({
            "comparator": spec_text,
            "metric": s.metric,
            "direction": s.direction.long(),
            "min_delta": s.min_delta,
            "incumbent": inc.map(|x| x.mean),
            "candidate": cand.map(|x| x.mean),
        });
        let (inc, cand) = match (inc, cand) {
            (Some(i), Some(c)) => (i, c),
            (_, None) => {
                return Decision::new(
                    Verdict::Discard,
                    format!("candidate has no {}", s.metric),
                    descriptor,
                );
            }
            (None, Some(_)) => {
                return Decision::new(
                    Verdict::Discard,
                    format!("incumbent has no {}", s.metric),
                    descriptor,
                );
            }
        };
        let delta = cand.mean - inc.mean;
        let improvement = s.direction.improvement(inc.mean, cand.mean);
        descriptor["delta"] = json!(delta);
        descriptor["improvement"] = json!(improvement);
        if inc.n > 1 || cand.n > 1 {
            descriptor["n"] = json!({"incumbent": inc.n, "candidate": cand.n});
        }
        let verdict = if improvement > s.min_delta {
            Verdict::Keep
        } else {
            Verdict::Discard
        };
        let (from, to) = (fmt_value(inc.mean), fmt_value(cand.mean));
        let reason = if improvement > s.min_delta {
            format!(
                "{} improved {from} -> {to} (delta {})",
                s.metric,
                signed(delta)
            )
        } else if improvement > 0.0 {
            format!(
                "{} improved {from} -> {to} by {}, not more than min_delta {}",
                s.metric,
                crate::num(improvement),
                crate::num(s.min_delta)
            )
        } else {
            format!(
                "{} did not improve: {from} -> {to} (delta {})",
                s.metric,
                signed(delta)
            )
        };
        Decision::new(verdict, reason, descriptor)
    }
}

fn signed(x: f64) -> String {
    if x > 0.0 {
        format!("+{}", crate::num(x))
    } else {
        crate::num(x)
    }
}

fn fmt_value(x: f64) -> String {
    crate::num(x)
}

#[async_trait]
impl Comparator for Scalar {
    fn spec(&self) -> String {
        CompareSpec::Scalar(self.spec.clone()).to_string()
    }

    async fn compare(
        &self,
        incumbent: &Evidence,
        candidate: &Evidence,
    ) -> Result<Decision, CompareError> {
        Ok(self.decide(incumbent, candidate))
    }
}
