//! The storage interface: an append-only log of tick records per world, with
//! snapshots and fork lineage. Backends implement [`Storage`]; everything that
//! reads *through* lineage (materializing a tick, an entity's history) is
//! written once, above the trait, in [`crate::ledger`].

use crate::ids::{EntityId, Tick, WorldId};
use crate::record::{
    ChangeKind, ComponentRecord, ComponentSnapshot, Snapshot, SpanRecord, SpanSnapshot, TickRecord,
};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Replays shorter than this many bytes never trigger a snapshot by
/// their size ([`Storage::snapshot_due_after`]): below it, reading the
/// records costs about what reading a snapshot would.
pub const SNAPSHOT_REPLAY_FLOOR_BYTES: u64 = 1 << 20;

/// Where a fork branched off: its parent world and the last tick it shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkPoint {
    /// The world forked from.
    pub parent: WorldId,
    /// The last tick the fork shares with its parent; its own ticks start after it.
    pub tick: Tick,
}

/// A world's catalogue entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorldInfo {
    /// The world's id, never reused in its ledger.
    pub id: WorldId,
    /// The world's name, unique in its ledger.
    pub name: String,
    /// The last committed tick (the fork tick for a fork with no own ticks yet).
    pub head: Tick,
    /// Where the world was forked from; `None` for a root world.
    pub parent: Option<ForkPoint>,
    /// When the world was created, in Unix milliseconds.
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
#[non_exhaustive]
pub enum StorageError {
    /// No world in the ledger has this id.
    #[error("no world with id {0}")]
    NoSuchWorld(WorldId),
    /// A world was created or forked under a name already in use.
    #[error("a world named {0:?} already exists")]
    NameTaken(String),
    /// An append lost a race: the world's head moved since the writer read it.
    /// Nothing of the batch was stored; refresh and retry.
    #[error(
        "{world}: append of tick {attempted} refused, the head is {head} (another writer advanced it)"
    )]
    Conflict {
        /// The world appended to.
        world: WorldId,
        /// The first tick of the refused batch.
        attempted: Tick,
        /// The world's head when the append was refused.
        head: Tick,
    },
    /// A tick that does not apply to the world's head state (a change to
    /// an entity that is not alive there, or a spawn of one that is): it
    /// was built on a stale state. Nothing of its batch was stored.
    #[error(
        "{world}: append of tick {attempted} refused, it does not apply to the head: {change} of {entity}, which is {}",
        if matches!(change, ChangeKind::Spawn) { "alive" } else { "not alive" }
    )]
    NotApplicable {
        /// The world appended to.
        world: WorldId,
        /// The refused tick.
        attempted: Tick,
        /// The entity of the first change that does not apply.
        entity: EntityId,
        /// What that change tried to do.
        change: ChangeKind,
    },
    /// A fork asked for a tick its parent has not reached.
    #[error("{world}: cannot fork at tick {at}, the head is {head}")]
    ForkBeyondHead {
        /// The parent world.
        world: WorldId,
        /// The tick asked to fork at.
        at: Tick,
        /// The parent's head.
        head: Tick,
    },
    /// A snapshot was appended for a tick other than the record it goes
    /// with; nothing of its batch was stored.
    #[error("{world}: snapshot for tick {tick} is outside the world's own ticks")]
    SnapshotOutOfRange {
        /// The world the snapshot was for.
        world: WorldId,
        /// The snapshot's tick.
        tick: Tick,
    },
    /// A stored record or snapshot does not decode.
    #[error("{world} tick {tick}: stored value is corrupt: {reason}")]
    Corrupt {
        /// The world read.
        world: WorldId,
        /// The tick whose stored value is damaged.
        tick: Tick,
        /// What did not decode, and why.
        reason: String,
    },
    /// A stored value carries a format version newer than this build reads;
    /// it is refused rather than misread.
    #[error("{what} was written by format version {found}, this build reads up to {supported}")]
    NewerFormat {
        /// What was being read (a tick record, a snapshot, the catalogue).
        what: String,
        /// The version tag found.
        found: u8,
        /// The newest version this build reads.
        supported: u8,
    },
    /// Another process holds the ledger file in a way that excludes this open.
    #[error("ledger {path} is locked by another process: {reason}")]
    Locked {
        /// The ledger file.
        path: String,
        /// The lock error, as the database engine reported it.
        reason: String,
    },
    /// A read-only open of a ledger file that does not exist.
    #[error("ledger {} does not exist", path.display())]
    LedgerNotFound {
        /// The path that was opened.
        path: std::path::PathBuf,
    },
    /// A read-only open of a ledger file that a writer left unclean (it
    /// crashed, or a write failed) and that no live writer is repairing:
    /// the repair needs a read-write open.
    #[error(
        "ledger {} was not closed cleanly and needs a repair, which a read-only open cannot make; a read-write open (any command that writes) repairs it",
        path.display()
    )]
    NeedsRepair {
        /// The ledger file.
        path: std::path::PathBuf,
    },
    /// A write to a ledger opened read-only.
    #[error("ledger {} is open read-only: {context} refused", path.display())]
    ReadOnlyLedger {
        /// The ledger file.
        path: std::path::PathBuf,
        /// The write that was refused.
        context: String,
    },
    /// The ledger file is damaged in a way its database engine could not
    /// report as an error (it panicked; the panic was contained).
    #[error("ledger {} is damaged: {context}: {reason}", path.display())]
    Damaged {
        /// The ledger file.
        path: std::path::PathBuf,
        /// The operation that met the damage.
        context: String,
        /// The contained panic's message.
        reason: String,
    },
    /// A world that other worlds were forked from cannot be deleted: they
    /// read its ticks. Delete the forks first.
    #[error("{world} cannot be deleted: worlds {forks:?} were forked from it")]
    HasForks {
        /// The world asked to delete.
        world: WorldId,
        /// The names of the worlds forked from it.
        forks: Vec<String>,
    },
    /// Any other failure of the backend (I/O, a file that is not a ledger,
    /// an invalid configuration). `context` names the operation and the
    /// file; `source` is the cause.
    #[error("{context}: {source}")]
    Backend {
        /// The operation and the file.
        context: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
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
///                 source: format!("names must start with {:?}", self.prefix).into(),
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
///     async fn append_all(&self, w: WorldId, rs: Vec<(TickRecord, Option<Snapshot>)>) -> Result<(), StorageError> {
///         self.inner.append_all(w, rs).await
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
    /// Creates an empty root world at tick 0. Errors with `NameTaken` when
    /// a world of that name exists, and with an error (never a second
    /// world) when the backend cannot tell because its catalogue is damaged.
    async fn create_world(&self, name: &str) -> Result<WorldInfo, StorageError>;

    /// Creates a world that shares `parent`'s ticks up to `at` and continues on
    /// its own. Must cost O(1) in the parent's history length.
    async fn fork_world(
        &self,
        parent: WorldId,
        at: Tick,
        name: &str,
    ) -> Result<WorldInfo, StorageError>;

    /// Forks `parent` at `at` into a new world named `name` (as
    /// [`Storage::fork_world`]) whose first own ticks are `records` (from
    /// `at + 1`, checked as [`Storage::append_all`] checks them), in one
    /// step: for a durable backend, one durable write instead of two.
    /// Returns the fork's catalogue entry, its head at the last record.
    /// Errors as `fork_world` and `append_all`.
    ///
    /// The default forks, then appends; when the append is refused it
    /// deletes the fork again (best effort: a failure to delete leaves the
    /// empty fork). A backend that stores both in one transaction
    /// overrides it, stores nothing on any error, and so is atomic.
    async fn fork_and_append(
        &self,
        parent: WorldId,
        at: Tick,
        name: &str,
        records: Vec<(TickRecord, Option<Snapshot>)>,
    ) -> Result<WorldInfo, StorageError> {
        let mut info = self.fork_world(parent, at, name).await?;
        let head = records.last().map(|(r, _)| r.tick);
        if let Err(e) = self.append_all(info.id, records).await {
            let _ = self.delete_world(info.id).await;
            return Err(e);
        }
        if let Some(head) = head {
            info.head = head;
        }
        Ok(info)
    }

    /// Creates a root world named `name` (as [`Storage::create_world`])
    /// whose first ticks are `records` (from tick 1, checked as
    /// [`Storage::append_all`] checks them), in one step: for a durable
    /// backend, one durable write instead of two. Returns the world's
    /// catalogue entry, its head at the last record. Errors as
    /// `create_world` and `append_all`.
    ///
    /// The default creates, then appends; when the append is refused it
    /// deletes the world again (best effort: a failure to delete leaves
    /// the empty world). A backend that stores both in one transaction
    /// overrides it, stores nothing on any error, and so is atomic.
    async fn create_and_append(
        &self,
        name: &str,
        records: Vec<(TickRecord, Option<Snapshot>)>,
    ) -> Result<WorldInfo, StorageError> {
        let mut info = self.create_world(name).await?;
        let head = records.last().map(|(r, _)| r.tick);
        if let Err(e) = self.append_all(info.id, records).await {
            let _ = self.delete_world(info.id).await;
            return Err(e);
        }
        if let Some(head) = head {
            info.head = head;
        }
        Ok(info)
    }

    /// The catalogue entry of world `id`. Errors with `NoSuchWorld` when there is none.
    async fn world(&self, id: WorldId) -> Result<WorldInfo, StorageError>;

    /// The world named `name`. `Ok(None)` only when the backend knows no
    /// world has that name; a damaged catalogue is an error, so that a
    /// caller never creates a second world of one name.
    async fn find_world(&self, name: &str) -> Result<Option<WorldInfo>, StorageError>;

    /// Every world, ordered by id.
    async fn list_worlds(&self) -> Result<Vec<WorldInfo>, StorageError>;

    /// Appends the record of tick `head + 1`, with an optional snapshot of the
    /// state *after* it, atomically. Any other tick number is refused with
    /// `Conflict`, so two writers cannot both advance a world; a record
    /// that does not apply to the head state (see [`crate::LivenessCheck`])
    /// is refused with `NotApplicable`, so every stored tick replays. When
    /// this returns `Ok`, the tick is durable as the backend promises.
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

    /// Whether a writer should hand a snapshot to `append` with tick `tick`,
    /// knowing how many bytes of records a read of that tick would replay
    /// after the last snapshot (`replay_bytes`, the record of `tick`
    /// included; [`TickRecord::approx_bytes`]) and how large the state is
    /// (`state_bytes`, [`crate::State::approx_bytes`]). The default: when
    /// [`Storage::snapshot_due`] says so, or, for a storage that snapshots
    /// at all, when the replay has grown past [`SNAPSHOT_REPLAY_FLOOR_BYTES`]
    /// and past twice the state: reading a tick then costs at most about
    /// three times the state, however large the ticks are.
    fn snapshot_due_after(&self, tick: Tick, replay_bytes: u64, state_bytes: u64) -> bool {
        self.snapshot_due(tick)
            || (self.snapshot_interval().is_some()
                && replay_bytes >= SNAPSHOT_REPLAY_FLOOR_BYTES
                && replay_bytes >= state_bytes.saturating_mul(2))
    }

    /// Appends `records` (each with its optional snapshot) as consecutive
    /// ticks of `world`, in order, **all or nothing**: the first must be
    /// `head + 1` and each must apply to the state the ones before it
    /// leave, or nothing is stored (`Conflict`, `NotApplicable`, or the
    /// backend's error). A backend makes them durable together, in one
    /// commit. An empty `records` stores nothing and succeeds.
    async fn append_all(
        &self,
        world: WorldId,
        records: Vec<(TickRecord, Option<Snapshot>)>,
    ) -> Result<(), StorageError>;

    /// Where this ledger lives, for error messages ("ledger /path/file",
    /// "in-memory ledger").
    fn location(&self) -> String {
        "ledger".to_string()
    }

    /// The world's own records with tick in `from..=to`, in tick order.
    async fn read_own_records(
        &self,
        world: WorldId,
        from: Tick,
        to: Tick,
    ) -> Result<Vec<TickRecord>, StorageError>;

    /// The world's own records with tick in `from..=to`, in tick order, as a
    /// read of one component sees them ([`ComponentRecord`]): for reads
    /// that need one component's values only
    /// ([`crate::ledger::component_bytes_at`]). The default projects
    /// [`Storage::read_own_records`]; a backend may decode less.
    async fn read_own_component_records(
        &self,
        world: WorldId,
        from: Tick,
        to: Tick,
        component: &str,
    ) -> Result<Vec<ComponentRecord>, StorageError> {
        Ok(self
            .read_own_records(world, from, to)
            .await?
            .into_iter()
            .map(|r| ComponentRecord::project(r, component))
            .collect())
    }

    /// [`Storage::own_snapshot_at_or_before`] projected on one component
    /// ([`ComponentSnapshot`]). The default projects the whole snapshot; a
    /// backend may decode less.
    async fn own_component_snapshot_at_or_before(
        &self,
        world: WorldId,
        at: Tick,
        component: &str,
    ) -> Result<Option<ComponentSnapshot>, StorageError> {
        Ok(self
            .own_snapshot_at_or_before(world, at)
            .await?
            .map(|s| ComponentSnapshot::project(s, component)))
    }

    /// [`Storage::read_own_component_records`] with the values left in
    /// shared bodies ([`SpanRecord`]): for reads of many values
    /// ([`crate::ledger::component_values_at`]) that copy none. The
    /// default gathers the values of `read_own_component_records` (one
    /// copy each); a backend may point into the records it decodes.
    async fn read_own_component_spans(
        &self,
        world: WorldId,
        from: Tick,
        to: Tick,
        component: &str,
    ) -> Result<Vec<SpanRecord>, StorageError> {
        self.read_own_component_records(world, from, to, component)
            .await?
            .into_iter()
            .map(|r| {
                let tick = r.tick;
                SpanRecord::gather(r).map_err(|reason| StorageError::Backend {
                    context: format!("reading tick {tick} of {world} for {component:?}"),
                    source: reason.into(),
                })
            })
            .collect()
    }

    /// [`Storage::own_component_snapshot_at_or_before`] with the values
    /// left in one shared body ([`SpanSnapshot`]), as
    /// [`Storage::read_own_component_spans`] for records. A backend may
    /// also answer with a state it keeps in memory from
    /// [`Storage::offer_component_span_snapshot`] (the same state a
    /// stored snapshot at its tick would hold, but none is stored), when
    /// it is newer than the stored snapshot.
    async fn own_component_span_snapshot_at_or_before(
        &self,
        world: WorldId,
        at: Tick,
        component: &str,
    ) -> Result<Option<SpanSnapshot>, StorageError> {
        self.own_component_snapshot_at_or_before(world, at, component)
            .await?
            .map(|s| {
                let tick = s.tick;
                SpanSnapshot::gather(s).map_err(|reason| StorageError::Backend {
                    context: format!(
                        "reading the snapshot of {world} tick {tick} for {component:?}"
                    ),
                    source: reason.into(),
                })
            })
            .transpose()
    }

    /// Offers the state of `component` in `world` at `tick` that a read
    /// ([`crate::ledger::component_values_at`]) has just replayed from
    /// `replayed` records after its snapshot, its values `bytes` long in
    /// all, for the backend to keep in memory and hand out from
    /// [`Storage::own_component_span_snapshot_at_or_before`] as if it were
    /// a snapshot stored at `tick`: later reads at `tick` or after it
    /// (until a newer snapshot) then start there, with the values in one
    /// body in entity order, instead of replaying the same records and
    /// reading values scattered over their bodies. `gather` copies the
    /// values into that body (O(`bytes`)); a backend calls it only when it
    /// means to keep the result (it may still drop it, if another read
    /// kept the same state first), and returns what it kept so that the
    /// read uses it too. `tick` is one of `world`'s own ticks (not an
    /// ancestor's). Nothing is stored. The default keeps nothing and never
    /// calls `gather`.
    fn offer_component_span_snapshot(
        &self,
        world: WorldId,
        component: &str,
        tick: Tick,
        replayed: usize,
        bytes: usize,
        gather: &mut dyn FnMut() -> Option<SpanSnapshot>,
    ) -> Option<SpanSnapshot> {
        let _ = (world, component, tick, replayed, bytes, gather);
        None
    }

    /// The world's own snapshot with the greatest tick `<= at`.
    async fn own_snapshot_at_or_before(
        &self,
        world: WorldId,
        at: Tick,
    ) -> Result<Option<Snapshot>, StorageError>;

    /// Stores a snapshot of an already committed own tick. A snapshot
    /// already stored at that tick is kept as it is: a stored snapshot
    /// never changes, so readers may keep it decoded.
    async fn put_snapshot(&self, world: WorldId, snapshot: Snapshot) -> Result<(), StorageError>;

    /// Deletes world `world`, atomically: its catalogue entry and name, and
    /// its own records, snapshots and indexes (the ticks a fork shares with
    /// its parent are the parent's and stay). Its name is free again; its
    /// id is never given to another world. Refused, deleting nothing, with
    /// `HasForks` when another world was forked from it and with
    /// `NoSuchWorld` when there is none. Cost: O(the world's own ticks).
    ///
    /// The default refuses with `Backend`, for a backend that cannot delete.
    async fn delete_world(&self, world: WorldId) -> Result<(), StorageError> {
        Err(StorageError::Backend {
            context: format!("deleting {world} in {}", self.location()),
            source: "this ledger backend cannot delete worlds".into(),
        })
    }

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

    /// Checks the backend's own structures beyond what reads of the worlds
    /// touch (`autoresearch doctor`): each problem found, in words; empty
    /// when sound, and by default (a backend with nothing of its own to
    /// check). The redb backend walks every table of its file. Cost: the
    /// backend's; for redb a read of every page once.
    async fn check_structure(&self) -> Result<Vec<String>, StorageError> {
        Ok(Vec::new())
    }

    /// The bytes this ledger occupies: a file's length for a file-backed
    /// backend, the stored encoded bytes for an in-memory one. `None` when
    /// the backend does not know (the default, for wrappers).
    async fn size_bytes(&self) -> Result<Option<u64>, StorageError> {
        Ok(None)
    }

    /// Answers `reads` from the current state this backend keeps for
    /// `world`'s head ([`crate::current`]), all from one consistent view:
    /// `Ok(None)` when it keeps none at the head (the default, a fork, a
    /// ledger written before it was kept): the caller then materializes
    /// the world. Cost: the backend's; the redb one answers each read in
    /// O(log n + answer size).
    async fn read_current(
        &self,
        world: WorldId,
        reads: Vec<crate::current::CurrentRead>,
    ) -> Result<Option<crate::current::CurrentView>, StorageError> {
        let _ = (world, reads);
        Ok(None)
    }

    /// The chart series of `experiment` this backend keeps for `world`'s
    /// head ([`crate::series`]), with each attempt's value of `metric`
    /// (no points when `None`: the header alone, to choose the metric):
    /// `Ok(None)` when it keeps none at the head (the default, a fork, a
    /// ledger written before it was kept); the caller then materializes
    /// the world. Cost: the backend's; the redb one reads packed blocks
    /// of points, O(attempts) with no value decoded.
    async fn read_series(
        &self,
        world: WorldId,
        experiment: String,
        metric: Option<String>,
    ) -> Result<Option<crate::series::Series>, StorageError> {
        let _ = (world, experiment, metric);
        Ok(None)
    }
}
