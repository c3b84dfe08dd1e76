//! The interface through which a front end (the dashboard) starts a
//! counterfactual replay without depending on the crate that implements it:
//! `autoresearch-compare` implements [`Replayer`] on its `replay` function,
//! and the CLI hands one to the dashboard.

use crate::Tick;
use serde::Serialize;

/// A replay asked for: re-decide every candidate of `experiment` recorded in
/// `source_world` after tick `from` under `comparator`, into a new fork.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayOrder {
    /// The experiment replayed.
    pub experiment: String,
    /// The world replayed from (it is only read).
    pub source_world: String,
    /// The comparator spec to re-decide with, e.g. `scalar:val_bpb:min`.
    pub comparator: String,
    /// The tick to fork at; `None`: the tick that created the experiment.
    pub from: Option<Tick>,
    /// The fork's name; `None` lets the implementation pick a free one.
    pub fork_name: Option<String>,
}

/// What a replay wrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReplayStarted {
    /// The fork written.
    pub fork_world: String,
    /// The source tick it was forked at.
    pub from_tick: u64,
    /// The comparator spec the candidates were re-decided with (as the
    /// comparator prints itself).
    pub comparator: String,
    /// Candidates re-decided.
    pub candidates: usize,
    /// Candidates decided differently (keep and baseline alike), as
    /// `autoresearch replay` marks them.
    pub changed: usize,
}

/// Why a replay was not done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayerError {
    /// The comparator spec does not parse; holds the parser's message.
    #[error("{0}")]
    BadSpec(String),
    /// The ledger refuses the replay as asked (no such experiment, a tick
    /// beyond the head, a taken fork name).
    #[error("{0}")]
    Refused(String),
    /// The ledger could not be read or written.
    #[error("{0}")]
    Failed(String),
}

/// Starts counterfactual replays (object-safe: passed as `Arc<dyn Replayer>`).
#[async_trait::async_trait]
pub trait Replayer: Send + Sync + 'static {
    /// Checks a comparator spec without replaying anything: `Ok` with the
    /// spec as the comparator prints it, or [`ReplayerError::BadSpec`].
    fn check_spec(&self, spec: &str) -> Result<String, ReplayerError>;

    /// Replays as `order` asks and writes the fork (as `autoresearch
    /// replay`). Cost: one ledger tick per later candidate; no job runs.
    async fn replay(&self, order: ReplayOrder) -> Result<ReplayStarted, ReplayerError>;
}
