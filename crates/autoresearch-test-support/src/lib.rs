//! Fixtures shared by the workspace's tests (rust-analyzer's `test-utils`):
//! temp git repositories and the git helper, loop repositories with their
//! proposer and evaluator scripts, archetype-runner `state.db` files with
//! their schema and row builders, comparator evidence, process probes.
//!
//! It is a dev-dependency only: no library crate's `[dependencies]` may name
//! it (tests/tests/architecture.rs checks that), so it may depend on what its
//! fixtures need (SQLite, tempfile, `autoresearch-core`). It is not a test
//! framework: helpers panic, with a message, when a fixture cannot be built,
//! which fails the test that asked for it.

pub mod evidence;
pub mod git;
pub mod loop_repo;
pub mod process;
pub mod statedb;

use autoresearch_core::{ComponentRegistry, MemoryStorage, Storage};
use std::sync::Arc;

/// A fresh in-memory ledger (no snapshots) and `registry`, shared.
pub fn memory_ledger(registry: ComponentRegistry) -> (Arc<dyn Storage>, Arc<ComponentRegistry>) {
    (Arc::new(MemoryStorage::default()), Arc::new(registry))
}
