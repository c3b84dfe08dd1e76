//! The runner tests' ledger (their state.db fixtures come from
//! `autoresearch_test_support::statedb`).

use autoresearch_core::{ComponentRegistry, Storage};
use std::sync::Arc;

/// An in-memory ledger with the runner's registry.
pub fn ledger() -> (Arc<dyn Storage>, Arc<ComponentRegistry>) {
    autoresearch_test_support::memory_ledger(autoresearch_runner::registry())
}
