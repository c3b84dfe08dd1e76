//! autoresearch-controller: the autoresearch loop on a git repository.
//!
//! Point it at a repository, a branch, a command that proposes a change and a
//! command that evaluates it; [`Controller`] runs the loop karpathy's
//! autoresearch asks an agent to run by hand (read the head, try a candidate,
//! evaluate, keep or discard or crash, advance the branch only on
//! improvement), recording every step as a tick of the experiment world.
//!
//! - [`config`]: the `autoresearch.toml` file ([`decision_config`]: its
//!   `[confirm]` and `[run] cost_budget`).
//! - [`engine`]: the loop ([`Controller`]), its crash recovery and shutdown.
//! - [`local`]: [`LocalExecutor`], jobs in private slot repositories
//!   ([`slot`]) as bounded child processes, none left alive ([`reaper`]).
//! - [`git`], [`metrics`], [`history`]: git CLI helpers, metric parsing, the
//!   results.tsv the proposer reads.
//!
//! It depends on `autoresearch-core` only: the ledger, the comparator and the
//! executor arrive as trait objects (`Arc<dyn Storage>`, `Arc<dyn Comparator>`,
//! `Arc<dyn Executor>`).

pub mod checkouts;
pub mod config;
pub mod decision_config;
pub mod engine;
pub mod git;
pub mod guard;
pub mod history;
pub mod local;
pub mod metrics;
pub mod reaper;
pub mod sandbox;
pub mod slot;
pub mod usage;

pub use checkouts::SlotCheckouts;
pub use config::{Config, ConfigError, ExecutorKind, MetricsFormat};
pub use engine::{
    Controller, Event, EventSink, HolderState, LoopConfig, LoopError, Shutdown, StopReason,
    Summary, fork_branch_name, holder_state, lock_holder,
};
pub use local::LocalExecutor;
