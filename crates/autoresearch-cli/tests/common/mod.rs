//! Helpers shared by the CLI's test files (each file is a crate of its own
//! and takes this with `mod common;`).

use autoresearch_core::{ComponentRegistry, World};
use autoresearch_store::{RedbConfig, RedbStorage};
use std::path::Path;
use std::sync::Arc;

/// The world `autoresearch:exp` of the ledger a loop run in `dir` wrote
/// (`dir/.autoresearch/ledger.redb`), opened read-write with the standard
/// registry. Panics when it cannot be opened: a test's fixture is broken.
pub async fn exp_world(dir: &Path) -> World {
    let path = dir.join(".autoresearch/ledger.redb");
    let storage = Arc::new(RedbStorage::open(&path, RedbConfig::default()).unwrap());
    World::open(
        storage,
        Arc::new(ComponentRegistry::standard()),
        "autoresearch:exp",
    )
    .await
    .unwrap()
}
