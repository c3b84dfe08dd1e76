//! What the dashboard can change: votes and forks. The web crate depends on
//! core only, so the one who serves it (the CLI) passes an [`Actions`]
//! implementation that opens the ledger for writing and uses the same
//! functions as `autoresearch vote` and `autoresearch fork`.

use autoresearch_core::{Tick, VoteVerdict};
use serde::Serialize;

/// A vote asked for from the dashboard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VoteRequest {
    /// The world the run is in.
    pub world: String,
    /// The experiment the run belongs to.
    pub experiment: String,
    /// The run voted on.
    pub run_id: String,
    /// Keep or discard.
    pub verdict: VoteVerdict,
    /// Who voted (the dashboard's user as given, or "dashboard").
    pub voter: String,
    /// Why, in the voter's words (may be empty).
    pub reason: String,
}

/// A "what if this run had won" fork asked for from the dashboard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForkRequest {
    /// The world forked.
    pub world: String,
    /// The experiment whose head moves in the fork.
    pub experiment: String,
    /// The run made head in the fork.
    pub run_id: String,
    /// The tick forked at.
    pub at: Tick,
    /// The fork's name; `None` lets the implementation pick a free one.
    pub name: Option<String>,
}

/// What an action did, as the dashboard shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ActionReceipt {
    /// One sentence saying what was done.
    pub message: String,
    /// The world the action wrote to (the fork, for a fork).
    pub world: String,
    /// The details the implementation reports (its receipt as JSON).
    pub detail: serde_json::Value,
}

/// Why an action was not done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ActionError {
    /// The ledger refuses it as asked (no such run, a run without a
    /// commit, a taken name): the caller can change the request.
    #[error("{0}")]
    Refused(String),
    /// The ledger could not be written.
    #[error("{0}")]
    Failed(String),
}

/// Votes and forks, done by whoever serves the dashboard (object-safe:
/// passed as `Arc<dyn Actions>`). Each call may open the ledger for
/// writing; none takes a loop's lease.
#[async_trait::async_trait]
pub trait Actions: Send + Sync + 'static {
    /// Records a vote on a run (as `autoresearch vote`).
    async fn vote(&self, request: VoteRequest) -> Result<ActionReceipt, ActionError>;
    /// Forks a world at a tick with a run as its head (as `autoresearch fork`).
    async fn fork(&self, request: ForkRequest) -> Result<ActionReceipt, ActionError>;
}

/// Reads a candidate's diff from the experiment's repository for the run
/// page (the CLI passes one that runs git). Optional: without it the run
/// page shows no diff.
#[async_trait::async_trait]
pub trait Diffs: Send + Sync + 'static {
    /// The diff of `commit` against `base` in the repository at `repo` (an
    /// Experiment's `repo_url`), at most a bounded size; `None` when it
    /// cannot be had (no such repository or commit, a timeout).
    async fn diff(&self, repo: &str, base: &str, commit: &str) -> Option<String>;
}

/// Reads the parameters a candidate set for the attempts table's parameter
/// columns (the CLI passes one that reads them from the candidate's diff as
/// `autoresearch log` does: each added `NAME = LITERAL` line). Optional:
/// without it the table offers metric columns only.
#[async_trait::async_trait]
pub trait Params: Send + Sync + 'static {
    /// The parameters `commit` set against `base` in the repository at
    /// `repo`, by name; `None` when they cannot be had.
    async fn params(
        &self,
        repo: &str,
        base: &str,
        commit: &str,
    ) -> Option<std::collections::BTreeMap<String, String>>;
}
