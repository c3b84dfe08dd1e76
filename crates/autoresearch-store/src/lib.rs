//! autoresearch-store: the redb implementation of `autoresearch_core::Storage`.
//!
//! PLACEHOLDER: until the redb backend lands, `RedbStorage` delegates to the
//! in-memory reference ledger so that dependants can build and run. The public
//! signatures below are the ones the real backend keeps.

use async_trait::async_trait;
use autoresearch_core::{
    EntityId, MemoryStorage, Snapshot, Storage, StorageError, Tick, TickRecord, WorldId, WorldInfo,
};
use std::path::Path;

/// Options of a redb ledger.
#[derive(Clone, Debug)]
pub struct RedbConfig {
    /// Snapshot every this many ticks (`None`: never).
    pub snapshot_interval: Option<u64>,
}

impl Default for RedbConfig {
    fn default() -> Self {
        RedbConfig {
            snapshot_interval: Some(autoresearch_core::DEFAULT_SNAPSHOT_INTERVAL),
        }
    }
}

/// A ledger in one redb file.
pub struct RedbStorage {
    inner: MemoryStorage,
}

impl RedbStorage {
    /// Opens (creating if absent, with its parent directory) the ledger at `path`.
    pub fn open(path: &Path, config: RedbConfig) -> Result<RedbStorage, StorageError> {
        let _ = path;
        Ok(RedbStorage {
            inner: MemoryStorage::new(config.snapshot_interval),
        })
    }
}

#[async_trait]
impl Storage for RedbStorage {
    async fn create_world(&self, name: &str) -> Result<WorldInfo, StorageError> {
        self.inner.create_world(name).await
    }
    async fn fork_world(
        &self,
        p: WorldId,
        at: Tick,
        name: &str,
    ) -> Result<WorldInfo, StorageError> {
        self.inner.fork_world(p, at, name).await
    }
    async fn world(&self, id: WorldId) -> Result<WorldInfo, StorageError> {
        self.inner.world(id).await
    }
    async fn find_world(&self, name: &str) -> Result<Option<WorldInfo>, StorageError> {
        self.inner.find_world(name).await
    }
    async fn list_worlds(&self) -> Result<Vec<WorldInfo>, StorageError> {
        self.inner.list_worlds().await
    }
    async fn append(
        &self,
        w: WorldId,
        r: TickRecord,
        s: Option<Snapshot>,
    ) -> Result<(), StorageError> {
        self.inner.append(w, r, s).await
    }
    async fn read_own_records(
        &self,
        w: WorldId,
        from: Tick,
        to: Tick,
    ) -> Result<Vec<TickRecord>, StorageError> {
        self.inner.read_own_records(w, from, to).await
    }
    async fn own_snapshot_at_or_before(
        &self,
        w: WorldId,
        at: Tick,
    ) -> Result<Option<Snapshot>, StorageError> {
        self.inner.own_snapshot_at_or_before(w, at).await
    }
    async fn put_snapshot(&self, w: WorldId, s: Snapshot) -> Result<(), StorageError> {
        self.inner.put_snapshot(w, s).await
    }
    async fn own_entity_ticks(
        &self,
        w: WorldId,
        e: EntityId,
        to: Tick,
    ) -> Result<Vec<Tick>, StorageError> {
        self.inner.own_entity_ticks(w, e, to).await
    }
    fn snapshot_interval(&self) -> Option<u64> {
        self.inner.snapshot_interval()
    }
}
