//! Evidence and votes for comparator tests, built without a ledger.

use autoresearch_core::EvalResult;
use autoresearch_core::compare::{Evidence, Vote};
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
