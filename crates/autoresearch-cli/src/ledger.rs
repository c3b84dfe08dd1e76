//! Opening the ledger: the one place the CLI picks a Storage implementation.

use anyhow::Context;
use autoresearch_core::{ComponentRegistry, Storage};
use autoresearch_store::{RedbConfig, RedbStorage};
use std::path::Path;
use std::sync::Arc;

/// Opens (creating if needed) the redb ledger at `path`.
pub fn open(path: &Path) -> anyhow::Result<Arc<dyn Storage>> {
    let store = RedbStorage::open(path, RedbConfig::default())
        .with_context(|| format!("opening ledger {}", path.display()))?;
    Ok(Arc::new(store))
}

/// The registry every command uses.
#[allow(dead_code)]
pub fn registry() -> Arc<ComponentRegistry> {
    Arc::new(ComponentRegistry::standard())
}
