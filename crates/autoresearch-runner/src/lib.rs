//! autoresearch-runner: brings history from outside into autoresearch worlds.
//!
//! - [`RunnerIngest`] reads archetype-runner's `state.db` (SQLite, read-only,
//!   safe while the runner writes in WAL mode) into `Run` entities, with each
//!   run's latest report kept as a [`RunReport`] component. Syncs are
//!   incremental and idempotent: each one appends exactly the changes it saw
//!   as one tick.
//! - [`tsv`] imports and exports karpathy/autoresearch's `results.tsv`
//!   through the shared lifecycle model (`autoresearch_core::lifecycle`);
//!   [`pi`] imports pi-autoresearch's `autoresearch.jsonl` the same way.
//!
//! It depends on `autoresearch-core` only; it knows no storage backend.
//! SQLite reads run on `spawn_blocking`, never on the async executor.

mod error;
mod index;
mod pages;
pub mod pi;
mod report;
mod statedb;
mod sync;
pub mod time;
pub mod tsv;

pub use error::IngestError;
pub use report::RunReport;
pub use sync::{DEFAULT_WORLD, RunnerConfig, RunnerIngest, SyncReport, experiment_from_agent_name};

use autoresearch_core::{ComponentRegistry, RegistryError};

/// Registers the components this crate writes (`RunReport`) in `registry`.
/// Idempotent. Errors only if another type already took the name.
pub fn register(registry: &mut ComponentRegistry) -> Result<(), RegistryError> {
    registry.register::<RunReport>("RunReport")
}

/// [`ComponentRegistry::standard`] plus this crate's components.
pub fn registry() -> ComponentRegistry {
    let mut r = ComponentRegistry::standard();
    register(&mut r).expect("RunReport is not a standard name");
    r
}

/// The default location of the runner's database: `~/.archetype-runner/state.db`.
/// `None` when no home directory is known.
pub fn default_state_db() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| {
        std::path::PathBuf::from(h)
            .join(".archetype-runner")
            .join("state.db")
    })
}
