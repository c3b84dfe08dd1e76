//! Human votes on a run, recorded as `Vote` entities.

use super::{ReplayError, find_run, ledger_err};
use autoresearch_core::compare::Vote;
use autoresearch_core::lifecycle::Outcome;
use autoresearch_core::{StorageError, VoteVerdict, World, now_ms};
use serde::Serialize;

/// A vote as recorded, with the state of the run it is for.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VoteReceipt {
    /// The vote as stored.
    pub vote: VoteRecord,
    /// The tick that recorded it.
    pub tick: u64,
    /// The run's Outcome status when the vote was cast (`pending` when it
    /// waits for votes), if it had one.
    pub run_status: Option<String>,
    /// Votes on the run so far, this one included.
    pub votes_on_run: usize,
}

/// The serializable form of a [`Vote`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VoteRecord {
    /// The run voted on (its full id, even when a prefix was given).
    pub run_id: String,
    /// `keep` or `discard`.
    pub verdict: String,
    /// Who voted.
    pub voter: String,
    /// Why, in one line; may be empty.
    pub reason: String,
    /// When the vote was cast, in Unix milliseconds.
    pub at_ms: i64,
}

/// Records a vote on run `run_id` (or a unique prefix) of `experiment` in
/// `world`, as a `Vote` entity of its own, in one tick. Another writer (the
/// loop) advancing the world meanwhile is handled by refreshing and
/// retrying. Errors: a verdict other than keep or discard, an unknown or
/// ambiguous run, ledger failures.
pub async fn cast_vote(
    world: &mut World,
    experiment: &str,
    run_id: &str,
    verdict: &str,
    voter: &str,
    reason: &str,
) -> Result<VoteReceipt, ReplayError> {
    let Some(verdict) = VoteVerdict::known(verdict) else {
        return Err(ReplayError::BadVerdict(verdict.to_string()));
    };
    let name = world.name().to_string();
    let mut retries = 20;
    loop {
        let (entity, run) = find_run(world, experiment, run_id)?;
        let vote = Vote {
            run_id: run.run_id.clone(),
            verdict: verdict.clone(),
            voter: voter.to_string(),
            reason: reason.to_string(),
            at_ms: now_ms(),
        };
        world
            .spawn_with(&vote)
            .map_err(ledger_err("recording a vote", &name))?;
        match world.commit().await {
            Ok(tick) => {
                let votes_on_run = world.find_all::<Vote>(|v| v.run_id == run.run_id).len();
                return Ok(VoteReceipt {
                    run_status: world.get::<Outcome>(entity).map(|o| o.status.to_string()),
                    votes_on_run,
                    tick: tick.0,
                    vote: VoteRecord {
                        run_id: vote.run_id,
                        verdict: vote.verdict.to_string(),
                        voter: vote.voter,
                        reason: vote.reason,
                        at_ms: vote.at_ms,
                    },
                });
            }
            Err(autoresearch_core::Error::Storage(StorageError::Conflict { .. }))
                if retries > 0 =>
            {
                retries -= 1;
                world
                    .refresh()
                    .await
                    .map_err(ledger_err("catching up before a vote", &name))?;
            }
            Err(e) => {
                world.discard_pending();
                return Err(ledger_err("recording a vote", &name)(e));
            }
        }
    }
}
