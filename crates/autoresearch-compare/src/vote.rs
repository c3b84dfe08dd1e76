//! The human-vote comparator: pending until a quorum has voted.

use crate::spec::CompareSpec;
use async_trait::async_trait;
use autoresearch_core::VoteVerdict;
use autoresearch_core::compare::{Comparator, CompareError, Decision, Evidence, Verdict, Vote};
use serde_json::json;

/// Waits ([`Verdict::Pending`]) until `quorum` votes on the candidate's run
/// are in `Evidence.votes`, then keeps on a strict majority of `keep` votes
/// (a tie discards). A voter who voted several times counts once, with their
/// latest vote; votes for another run or with a verdict other than `keep` or
/// `discard` are ignored.
#[derive(Clone, Debug)]
pub struct HumanVote {
    quorum: u32,
}

impl HumanVote {
    /// A vote comparator that waits for `quorum` counted votes.
    pub fn new(quorum: u32) -> Self {
        HumanVote { quorum }
    }

    /// The votes that count, one per voter (anonymous votes each count).
    pub fn counted<'a>(&self, candidate: &'a Evidence) -> Vec<&'a Vote> {
        let mut votes: Vec<&Vote> = candidate
            .votes
            .iter()
            .filter(|v| v.run_id == candidate.run_id)
            .filter(|v| matches!(v.verdict, VoteVerdict::Keep | VoteVerdict::Discard))
            .collect();
        votes.sort_by_key(|v| v.at_ms);
        let mut out: Vec<&Vote> = Vec::new();
        for v in votes {
            match out
                .iter_mut()
                .find(|o| !v.voter.is_empty() && o.voter == v.voter)
            {
                Some(slot) => *slot = v,
                None => out.push(v),
            }
        }
        out
    }

    /// The decision, computed synchronously (no I/O).
    pub fn decide(&self, candidate: &Evidence) -> Decision {
        let votes = self.counted(candidate);
        let keep = votes
            .iter()
            .filter(|v| v.verdict == VoteVerdict::Keep)
            .count();
        let discard = votes.len() - keep;
        let descriptor = json!({
            "comparator": CompareSpec::Vote { quorum: self.quorum }.to_string(),
            "quorum": self.quorum,
            VoteVerdict::Keep.as_str(): keep,
            VoteVerdict::Discard.as_str(): discard,
            "votes": votes.iter().map(|v| json!({
                "voter": v.voter, "verdict": v.verdict, "reason": v.reason, "at_ms": v.at_ms,
            })).collect::<Vec<_>>(),
        });
        if (votes.len() as u64) < u64::from(self.quorum) {
            return Decision::new(
                Verdict::Pending,
                format!("waiting for votes: {} of {}", votes.len(), self.quorum),
                descriptor,
            );
        }
        let verdict = if keep > discard {
            Verdict::Keep
        } else {
            Verdict::Discard
        };
        Decision::new(
            verdict,
            format!(
                "voted {keep} keep, {discard} discard (quorum {})",
                self.quorum
            ),
            descriptor,
        )
    }
}

#[async_trait]
impl Comparator for HumanVote {
    fn spec(&self) -> String {
        CompareSpec::Vote {
            quorum: self.quorum,
        }
        .to_string()
    }

    async fn compare(
        &self,
        _incumbent: &Evidence,
        candidate: &Evidence,
    ) -> Result<Decision, CompareError> {
        Ok(self.decide(candidate))
    }
}
