//! The tournament: a round's candidates meet pairwise under an inner
//! comparator, and only the winner is compared with the incumbent.

use async_trait::async_trait;
use autoresearch_core::compare::{Comparator, CompareError, Decision, Evidence, Verdict};
use serde_json::json;
use std::sync::Arc;

/// With one candidate it is its inner comparator. With several, every pair
/// (a, b) meets twice, b challenging a and a challenging b; a keep is a win
/// for the challenger, anything else (discard, need-more, pending) no win.
/// The candidate with most wins (the earliest on a tie) is compared with the
/// incumbent; every other candidate is discarded. Every decision's
/// descriptor holds the table.
pub struct Tournament {
    inner: Arc<dyn Comparator>,
}

impl Tournament {
    /// A tournament whose pairwise meetings, and the winner's comparison with the incumbent, are
    /// decided by `inner`.
    pub fn new(inner: Arc<dyn Comparator>) -> Self {
        Tournament { inner }
    }
}

fn label(e: &Evidence, i: usize) -> String {
    if e.run_id.is_empty() {
        format!("#{i}")
    } else {
        e.run_id.clone()
    }
}

#[async_trait]
impl Comparator for Tournament {
    fn spec(&self) -> String {
        format!("tournament:{}", self.inner.spec())
    }

    async fn compare(
        &self,
        incumbent: &Evidence,
        candidate: &Evidence,
    ) -> Result<Decision, CompareError> {
        self.inner.compare(incumbent, candidate).await
    }

    async fn compare_round(
        &self,
        incumbent: &Evidence,
        candidates: &[Evidence],
    ) -> Result<Vec<Decision>, CompareError> {
        if candidates.len() <= 1 {
            return self.inner.compare_round(incumbent, candidates).await;
        }
        let n = candidates.len();
        let mut wins = vec![0u32; n];
        let mut matches = Vec::new();
        for a in 0..n {
            for b in (a + 1)..n {
                let b_over_a = self.inner.compare(&candidates[a], &candidates[b]).await?;
                let a_over_b = self.inner.compare(&candidates[b], &candidates[a]).await?;
                // A keep both ways, or neither way, is a draw.
                let winner = match (
                    b_over_a.verdict == Verdict::Keep,
                    a_over_b.verdict == Verdict::Keep,
                ) {
                    (true, false) => Some(b),
                    (false, true) => Some(a),
                    _ => None,
                };
                if let Some(w) = winner {
                    wins[w] += 1;
                }
                matches.push(json!({
                    "a": label(&candidates[a], a),
                    "b": label(&candidates[b], b),
                    "winner": winner.map(|w| label(&candidates[w], w)),
                    "b_over_a": {"verdict": b_over_a.verdict.as_str(), "reason": b_over_a.reason},
                    "a_over_b": {"verdict": a_over_b.verdict.as_str(), "reason": a_over_b.reason},
                }));
            }
        }
        // The first index with the most wins: ties go to the earlier candidate.
        let best = (0..n).fold(0, |best, i| if wins[i] > wins[best] { i } else { best });
        let table = json!({
            "candidates": candidates.iter().enumerate().map(|(i, c)| label(c, i)).collect::<Vec<_>>(),
            "wins": wins,
            "matches": matches,
            "winner": label(&candidates[best], best),
        });
        let final_decision = self.inner.compare(incumbent, &candidates[best]).await?;
        let mut out = Vec::with_capacity(n);
        for (i, c) in candidates.iter().enumerate() {
            if i == best {
                out.push(Decision::new(
                    final_decision.verdict.clone(),
                    format!(
                        "won the tournament ({} wins); {}",
                        wins[i], final_decision.reason
                    ),
                    json!({
                        "comparator": self.spec(),
                        "tournament": table,
                        "final": final_decision.descriptor,
                    }),
                ));
            } else {
                out.push(Decision::new(
                    Verdict::Discard,
                    format!(
                        "lost the tournament to {} ({} wins vs {})",
                        label(&candidates[best], best),
                        wins[i],
                        wins[best]
                    ),
                    json!({"comparator": self.spec(), "tournament": table, "run": label(c, i)}),
                ));
            }
        }
        Ok(out)
    }
}
