//! Evidence and votes for comparator tests, built without a ledger.

use autoresearch_core::EvalResult;
use autoresearch_core::compare::{Comparator, CompareError, Decision, Evidence, Verdict, Vote};
use serde_json::Value;

/// Evidence for run `run_id` with one Result per outputs object, recorded a
/// second apart from time 0.
pub fn evidence(run_id: &str, outputs: &[Value]) -> Evidence {
    evidence_at(run_id, 0, outputs)
}

/// [`evidence`] with the Results recorded a second apart from `t0_ms`.
pub fn evidence_at(run_id: &str, t0_ms: i64, outputs: &[Value]) -> Evidence {
    Evidence {
        run_id: run_id.to_string(),
        commit: format!("{run_id}-commit"),
        results: outputs
            .iter()
            .enumerate()
            .map(|(i, o)| EvalResult::new(run_id, "eval", o, t0_ms + 1000 * i as i64))
            .collect(),
        diff: None,
        votes: Vec::new(),
        noise: None,
    }
}

/// Evidence with one sample of `metric` per value.
pub fn samples(run_id: &str, metric: &str, values: &[f64]) -> Evidence {
    let outputs: Vec<Value> = values
        .iter()
        .map(|v| serde_json::json!({ metric: v }))
        .collect();
    evidence(run_id, &outputs)
}

/// A vote of `voter` on run `run_id`, with no reason.
pub fn vote(run_id: &str, voter: &str, verdict: &str, at_ms: i64) -> Vote {
    Vote {
        run_id: run_id.to_string(),
        verdict: verdict.into(),
        voter: voter.to_string(),
        reason: String::new(),
        at_ms,
    }
}

/// The loop tests' comparator: the mean `score` of the candidate must be
/// lower than the incumbent's (spec `scalar:score:min`); a side without a
/// score is a discard ("no score").
pub struct MinScore;

#[async_trait::async_trait]
impl Comparator for MinScore {
    fn spec(&self) -> String {
        "scalar:score:min".into()
    }
    async fn compare(&self, inc: &Evidence, cand: &Evidence) -> Result<Decision, CompareError> {
        let mean = |v: Vec<f64>| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
        let (Some(a), Some(b)) = (mean(inc.samples("score")), mean(cand.samples("score"))) else {
            return Ok(Decision::new(
                Verdict::Discard,
                "no score",
                serde_json::json!({}),
            ));
        };
        let v = if b < a {
            Verdict::Keep
        } else {
            Verdict::Discard
        };
        Ok(Decision::new(
            v,
            format!("{b} vs {a}"),
            serde_json::json!({"incumbent": a, "candidate": b}),
        ))
    }
}
