//! autoresearch-core: the component model and every interface between the
//! layers of autoresearch.
//!
//! - The lifecycle components ([`Experiment`], [`Run`], [`EvalResult`] stored
//!   as `Result`, [`BranchHead`]) and a [`ComponentRegistry`] for user types.
//! - [`World`]: a `hecs::World` materialized at one tick of a durable log;
//!   buffered mutations become one appended tick on `commit()`.
//!   [`TickWriter`] appends ticks without materializing the world, for
//!   writers that index their own entities (bulk ingest).
//! - [`Storage`]: the object-safe async interface a ledger backend implements
//!   (worlds, tick records, snapshots, lineage), with [`MemoryStorage`] as the
//!   reference; lineage-aware reads (time travel, history) live in [`ledger`].
//! - [`Executor`]: the object-safe async interface that runs a proposer or
//!   evaluator job somewhere (a local worktree, a VM, a cluster) and reports
//!   its exit status, output, log tails and produced commit ([`exec`]).
//!
//! It depends on no sibling crate. Concrete backends (`autoresearch-store`),
//! the ingester (`autoresearch-runner`) and the loop (`autoresearch-controller`)
//! depend on this crate only.

pub mod compare;
pub mod components;
pub mod confirm;
pub mod cost;
pub mod current;
pub mod description;
pub mod doctor;
pub mod error;
pub mod exec;
pub mod ids;
pub mod jobs;
pub mod ledger;
pub mod lifecycle;
pub mod memory;
pub mod metrics;
pub mod noise;
pub mod num;
pub mod query;
pub mod record;
pub mod registry;
pub mod replayer;
pub mod series;
pub mod storage;
pub mod vocab;
pub mod world;
pub mod writer;

pub use components::{
    BranchHead, EvalResult, Experiment, Lease, Outcome, ResultMeta, Run, RunRef, RunStatus,
    UnknownStatus, Vote,
};
pub use confirm::Confirmation;
pub use cost::{CostKind, JobUsage, RunCost};
pub use description::Description;
pub use error::Error;
pub use exec::{ExecError, Executor, ExitStatus, Job, JobReport, Limits, OutputSource};
pub use ids::{CommitHash, EntityId, RunId, Tick, WorldId, now_ms, short_commit};
pub use jobs::{Checkouts, ExecutorJob, JobJournal};
pub use ledger::EntityChange;
pub use lifecycle::{Attempt, experiment_of_world, experiment_world_name};
pub use memory::MemoryStorage;
pub use noise::{MetricNoise, NoiseModel};
pub use record::{
    ApplyError, Change, ChangeKind, ComponentChange, ComponentRecord, ComponentSnapshot,
    LivenessCheck, Snapshot, Span, SpanRecord, SpanSnapshot, State, TickRecord,
};
pub use registry::{ComponentRegistry, ComponentValue, RegistryError};
pub use replayer::{ReplayOrder, ReplayStarted, Replayer, ReplayerError};
pub use storage::{ForkPoint, Storage, StorageError, WorldInfo};
pub use vocab::ConfirmStatus;
pub use vocab::{AttemptState, JobState, LoopCause, OutcomeStatus, TsvStatus, VoteVerdict};
pub use world::World;
pub use writer::TickWriter;

/// Snapshot interval backends use unless configured otherwise: time travel
/// replays at most this many ticks after a snapshot.
pub const DEFAULT_SNAPSHOT_INTERVAL: u64 = 128;
