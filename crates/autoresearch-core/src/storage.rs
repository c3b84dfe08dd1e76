//! The storage interface: an append-only log of tick records per world, with
//! snapshots and fork lineage. Backends implement [`Storage`]; everything that
//! reads *through* lineage (materializing a tick, an entity's history) is
//! written once, above the trait, in [`crate::ledger`].

use crate::ids::{EntityId, Tick, WorldId};
use crate::record::{Snapshot, TickRecord};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Where a fork branched off: its parent world and the last tick it shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkPoint {
    pub parent: WorldId,
    pub tick: Tick,
}

/// A world's catalogue entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorldInfo {
    pub id: WorldId,
    pub name: String,
    /// The last committed tick (the fork tick for a fork with no own ticks yet).
    pub head: Tick,
    pub parent: Option<ForkPoint>,
    pub created_at_ms: i64,
}

impl WorldInfo {
    /// The first tick stored in this world's own segment of the log.
    pub fn first_own_tick(&self) -> Tick {
        self.parent.map_or(Tick(1), |p| p.tick.next())
    }
}

/// Errors of a storage backend. Each names the world, tick or file involved.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("no world with id {0}")]
    NoSuchWorld(WorldId),
    #[error("a world named {0:?} already exists")]
    NameTaken(String),
    #[error(
        "{world}: append of tick {attempted} refused, the head is {head} (another writer advanced it)"
    )]
    Conflict {
        world: WorldId,
        attempted: Tick,
        head: Tick,
    },
    #[error("{world}: cannot fork at tick {at}, the head is {head}")]
    ForkBeyondHead {
        world: WorldId,
        at: Tick,
        head: Tick,
    },
    #[error("{world}: snapshot for tick {tick} is outside the world's own ticks")]
    SnapshotOutOfRange { world: WorldId, tick: Tick },
    #[error("{world} tick {tick}: stored value is corrupt: {reason}")]
    Corrupt {
        world: WorldId,
        tick: Tick,
        reason: String,
    },
    #[error("{what} was written by format version {found}, this build reads up to {supported}")]
    NewerFormat {
        what: String,
        found: u8,
        supported: u8,
    },
    #[error("ledger {path} is locked by another process: {reason}")]
    Locked { path: String, reason: String },
    #[error("{context}: {reason}")]
    Backend { context: String, reason: String },
}

/// A durable, append-only store of worlds.
///
/// Methods that take a world deal only in that world's *own* segment: the
/// ticks after its fork point (all ticks for a root world). Reads through
/// lineage are in [`crate::ledger`]. Implementations must be safe to share
/// between tasks (`Arc<dyn Storage>`), and must not block the async executor.
///
/// A backend is checked against [`crate::MemoryStorage`], the reference. This
/// one wraps another backend and refuses worlds whose name is not allowed,
/// delegating everything else:
///
/// ```
/// use autoresearch_core::*;
/// use std::sync::Arc;
///
/// struct OnlyPrefixed<S> { inner: S, prefix: &'static str }
///
/// #[async_trait::async_trait]
/// impl<S: Storage> Storage for OnlyPrefixed<S> {
///     async fn create_world(&self, name: &str) -> Result<WorldInfo, StorageError> {
///         if !name.starts_with(self.prefix) {
///             return Err(StorageError::Backend {
///                 context: format!("creating world {name:?}"),
///                 reason: format!("names must start with {:?}", self.prefix),
///             });
///         }
///         self.inner.create_world(name).await
///     }
///     async fn fork_world(&self, p: WorldId, at: Tick, name: &str) -> Result<WorldInfo, StorageError> {
///         self.inner.fork_world(p, at, name).await
///     }
///     async fn world(&self, id: WorldId) -> Result<WorldInfo, StorageError> {
///         self.inner.world(id).await
///     }
///     async fn find_world(&self, name: &str) -> Result<Option<WorldInfo>, StorageError> {
///         self.inner.find_world(name).await
///     }
///     async fn list_worlds(&self) -> Result<Vec<WorldInfo>, StorageError> {
///         self.inner.list_worlds().await
///     }
///     async fn append(&self, w: WorldId, r: TickRecord, s: Option<Snapshot>) -> Result<(), StorageError> {
///         self.inner.append(w, r, s).await
///     }
///     async fn read_own_records(&self, w: WorldId, from: Tick, to: Tick) -> Result<Vec<TickRecord>, StorageError> {
///         self.inner.read_own_records(w, from, to).await
///     }
///     async fn own_snapshot_at_or_before(&self, w: WorldId, at: Tick) -> Result<Option<Snapshot>, StorageError> {
///         self.inner.own_snapshot_at_or_before(w, at).await
///     }
///     async fn put_snapshot(&self, w: WorldId, s: Snapshot) -> Result<(), StorageError> {
///         self.inner.put_snapshot(w, s).await
///     }
///     async fn own_entity_ticks(&self, w: WorldId, e: EntityId, to: Tick) -> Result<Vec<Tick>, StorageError> {
///         self.inner.own_entity_ticks(w, e, to).await
///     }
///     fn snapshot_interval(&self) -> Option<u64> {
///         self.inner.snapshot_interval()
///     }
/// }
///
/// # tokio_test_block(async {
/// let storage: Arc<dyn Storage> =
///     Arc::new(OnlyPrefixed { inner: MemoryStorage::default(), prefix: "team-" });
/// let registry = Arc::new(ComponentRegistry::standard());
/// assert!(World::create(storage.clone(), registry.clone(), "scratch").await.is_err());
/// let mut world = World::create(storage, registry, "team-a").await.unwrap();
/// world.spawn_with(&Run::new("r1", "exp")).unwrap();
/// assert_eq!(world.commit().await.unwrap(), Tick(1));
/// # });
/// # fn tokio_test_block(f: impl std::future::Future<Output = ()>) {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// Creates an empty root world at tick 0. Errors with `NameTaken`.
    async fn create_world(&self, name: &str) -> Result<WorldInfo, StorageError>;

    /// Creates a world that shares `parent`'s ticks up to `at` and continues on
    /// its own. Must cost O(1) in the parent's history length.
    async fn fork_world(
        &self,
        parent: WorldId,
        at: Tick,
        name: &str,
    ) -> Result<WorldInfo, StorageError>;

    async fn world(&self, id: WorldId) -> Result<WorldInfo, StorageError>;

    async fn find_world(&self, name: &str) -> Result<Option<WorldInfo>, StorageError>;

    /// Every world, ordered by id.
    async fn list_worlds(&self) -> Result<Vec<WorldInfo>, StorageError>;

    /// Appends the record of tick `head + 1`, with an optional snapshot of the
    /// state *after* it, atomically. Any other tick number is refused with
    /// `Conflict`, so two writers cannot both advance a world. When this
    /// returns `Ok`, the tick is durable as the backend promises.
    async fn append(
        &self,
        world: WorldId,
        record: TickRecord,
        snapshot: Option<Snapshot>,
    ) -> Result<(), StorageError>;

    /// Whether this storage wants a snapshot written with tick `tick`
    /// (every [`Storage::snapshot_interval`]-th tick).
    fn snapshot_due(&self, tick: Tick) -> bool {
        self.snapshot_interval()
            .is_some_and(|k| k > 0 && tick.0.is_multiple_of(k))
    }

    /// Appends `records` (each with its optional snapshot) as consecutive
    /// ticks of `world`, in order, with the rules of [`Storage::append`]. A
    /// backend may make them durable together, in one commit: that is the
    /// point of calling this instead of `append` in a loop (which is what
    /// the default does). On an error, a prefix of `records` may have been
    /// appended; [`Storage::world`] tells the head.
    async fn append_all(
        &self,
        world: WorldId,
        records: Vec<(TickRecord, Option<Snapshot>)>,
    ) -> Result<(), StorageError> {
        for (record, snapshot) in records {
            self.append(world, record, snapshot).await?;
        }
        Ok(())
    }

    /// The world's own records with tick in `from..=to`, in tick order.
    async fn read_own_records(
        &self,
        world: WorldId,
        from: Tick,
        to: Tick,
    ) -> Result<Vec<TickRecord>, StorageError>;

    /// The world's own snapshot with the greatest tick `<= at`.
    async fn own_snapshot_at_or_before(
        &self,
        world: WorldId,
        at: Tick,
    ) -> Result<Option<Snapshot>, StorageError>;

    /// Stores a snapshot of an already committed own tick.
    async fn put_snapshot(&self, world: WorldId, snapshot: Snapshot) -> Result<(), StorageError>;

    /// The world's own ticks `<= to` that changed `entity`, ascending.
    async fn own_entity_ticks(
        &self,
        world: WorldId,
        entity: EntityId,
        to: Tick,
    ) -> Result<Vec<Tick>, StorageError>;

    /// How often a writer should hand a snapshot to `append`: every `K` ticks
    /// (when `tick % K == 0`), or never.
    fn snapshot_interval(&self) -> Option<u64>;
}
