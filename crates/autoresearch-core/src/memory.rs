//! [`MemoryStorage`]: the reference [`Storage`], held in memory. It defines
//! the behaviour every durable backend must match, and serves tests.

use crate::ids::{EntityId, Tick, WorldId, now_ms};
use crate::record::{LivenessCheck, Snapshot, TickRecord};
use crate::storage::{ForkPoint, Storage, StorageError, WorldInfo};
use async_trait::async_trait;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

#[derive(Default)]
struct WorldData {
    info: Option<WorldInfo>,
    records: BTreeMap<Tick, TickRecord>,
    snapshots: BTreeMap<Tick, Snapshot>,
    entity_ticks: BTreeSet<(EntityId, Tick)>,
    /// (entity, tick) -> alive after that own tick, for the ticks that
    /// changed the entity's liveness: the append check's index.
    liveness: BTreeMap<(EntityId, Tick), bool>,
}

#[derive(Default)]
struct Inner {
    worlds: Vec<WorldData>,
}

/// An in-memory ledger. Not durable; cheap to create.
pub struct MemoryStorage {
    inner: Mutex<Inner>,
    snapshot_interval: Option<u64>,
}

impl MemoryStorage {
    /// A ledger that asks for a snapshot every `snapshot_interval` ticks.
    pub fn new(snapshot_interval: Option<u64>) -> Self {
        MemoryStorage {
            inner: Mutex::new(Inner::default()),
            snapshot_interval,
        }
    }
}

impl Default for MemoryStorage {
    fn default() -> Self {
        MemoryStorage::new(Some(crate::DEFAULT_SNAPSHOT_INTERVAL))
    }
}

impl Inner {
    fn get(&self, id: WorldId) -> Result<&WorldData, StorageError> {
        self.worlds
            .get(id.0 as usize)
            .filter(|w| w.info.is_some())
            .ok_or(StorageError::NoSuchWorld(id))
    }

    fn get_mut(&mut self, id: WorldId) -> Result<&mut WorldData, StorageError> {
        self.worlds
            .get_mut(id.0 as usize)
            .filter(|w| w.info.is_some())
            .ok_or(StorageError::NoSuchWorld(id))
    }

    /// Whether `entity` is alive in `world` at tick `at` (at most its
    /// head): the newest liveness change at or before `at` on its lineage.
    fn alive_at(&self, world: WorldId, entity: EntityId, at: Tick) -> Result<bool, StorageError> {
        let (mut world, mut at) = (world, at);
        loop {
            let data = self.get(world)?;
            if let Some((_, alive)) = data
                .liveness
                .range((entity, Tick::ZERO)..=(entity, at))
                .next_back()
            {
                return Ok(*alive);
            }
            match data.info.as_ref().and_then(|i| i.parent) {
                Some(p) => {
                    world = p.parent;
                    at = at.min(p.tick);
                }
                None => return Ok(false),
            }
        }
    }

    fn add(&mut self, name: &str, parent: Option<ForkPoint>) -> Result<WorldInfo, StorageError> {
        if self
            .worlds
            .iter()
            .any(|w| w.info.as_ref().is_some_and(|i| i.name == name))
        {
            return Err(StorageError::NameTaken(name.to_string()));
        }
        let info = WorldInfo {
            id: WorldId(self.worlds.len() as u64),
            name: name.to_string(),
            head: parent.map_or(Tick::ZERO, |p| p.tick),
            parent,
            created_at_ms: now_ms(),
        };
        self.worlds.push(WorldData {
            info: Some(info.clone()),
            ..WorldData::default()
        });
        Ok(info)
    }
}

fn lock(m: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    // A panic while holding the lock cannot leave a half-applied append: every
    // mutation below is checked before it starts. So a poisoned lock is usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[async_trait]
impl Storage for MemoryStorage {
    async fn create_world(&self, name: &str) -> Result<WorldInfo, StorageError> {
        lock(&self.inner).add(name, None)
    }

    async fn fork_world(
        &self,
        parent: WorldId,
        at: Tick,
        name: &str,
    ) -> Result<WorldInfo, StorageError> {
        let mut inner = lock(&self.inner);
        let head = inner
            .get(parent)?
            .info
            .as_ref()
            .map_or(Tick::ZERO, |i| i.head);
        if at > head {
            return Err(StorageError::ForkBeyondHead {
                world: parent,
                at,
                head,
            });
        }
        inner.add(name, Some(ForkPoint { parent, tick: at }))
    }

    async fn world(&self, id: WorldId) -> Result<WorldInfo, StorageError> {
        let inner = lock(&self.inner);
        Ok(inner.get(id)?.info.clone().expect("checked by get"))
    }

    async fn delete_world(&self, world: WorldId) -> Result<(), StorageError> {
        let mut inner = lock(&self.inner);
        inner.get(world)?;
        let forks: Vec<String> = inner
            .worlds
            .iter()
            .filter_map(|w| w.info.as_ref())
            .filter(|i| i.parent.is_some_and(|p| p.parent == world))
            .map(|i| i.name.clone())
            .collect();
        if !forks.is_empty() {
            return Err(StorageError::HasForks { world, forks });
        }
        // The slot stays, empty: ids are positions and never reused.
        inner.worlds[world.0 as usize] = WorldData::default();
        Ok(())
    }

    async fn find_world(&self, name: &str) -> Result<Option<WorldInfo>, StorageError> {
        let inner = lock(&self.inner);
        Ok(inner
            .worlds
            .iter()
            .filter_map(|w| w.info.clone())
            .find(|i| i.name == name))
    }

    async fn list_worlds(&self) -> Result<Vec<WorldInfo>, StorageError> {
        Ok(lock(&self.inner)
            .worlds
            .iter()
            .filter_map(|w| w.info.clone())
            .collect())
    }

    async fn append(
        &self,
        world: WorldId,
        record: TickRecord,
        snapshot: Option<Snapshot>,
    ) -> Result<(), StorageError> {
        self.append_all(world, vec![(record, snapshot)]).await
    }

    /// All or nothing: every record is checked before the first is stored.
    async fn append_all(
        &self,
        world: WorldId,
        records: Vec<(TickRecord, Option<Snapshot>)>,
    ) -> Result<(), StorageError> {
        let mut inner = lock(&self.inner);
        let head = inner
            .get(world)?
            .info
            .as_ref()
            .map_or(Tick::ZERO, |i| i.head);
        let mut check = LivenessCheck::new(world);
        let mut liveness = Vec::with_capacity(records.len());
        for (i, (record, snapshot)) in records.iter().enumerate() {
            if record.tick.0 != head.0 + 1 + i as u64 {
                return Err(StorageError::Conflict {
                    world,
                    attempted: record.tick,
                    head,
                });
            }
            if let Some(s) = snapshot
                && s.tick != record.tick
            {
                return Err(StorageError::SnapshotOutOfRange {
                    world,
                    tick: s.tick,
                });
            }
            let changes = record.changes.iter().map(|c| (c.kind(), c.entity()));
            liveness.push(check.check(record.tick, changes, |e| inner.alive_at(world, e, head))?);
        }
        let data = inner.get_mut(world)?;
        for ((record, snapshot), live) in records.into_iter().zip(liveness) {
            let info = data.info.as_mut().expect("checked by get_mut");
            info.head = record.tick;
            for e in record.entities() {
                data.entity_ticks.insert((e, record.tick));
            }
            for (e, alive) in live {
                data.liveness.insert((e, record.tick), alive);
            }
            if let Some(s) = snapshot {
                data.snapshots.insert(s.tick, s);
            }
            data.records.insert(record.tick, record);
        }
        Ok(())
    }

    fn location(&self) -> String {
        "in-memory ledger".to_string()
    }

    async fn read_own_records(
        &self,
        world: WorldId,
        from: Tick,
        to: Tick,
    ) -> Result<Vec<TickRecord>, StorageError> {
        let inner = lock(&self.inner);
        if from > to {
            return Ok(Vec::new());
        }
        Ok(inner
            .get(world)?
            .records
            .range(from..=to)
            .map(|(_, r)| r.clone())
            .collect())
    }

    async fn own_snapshot_at_or_before(
        &self,
        world: WorldId,
        at: Tick,
    ) -> Result<Option<Snapshot>, StorageError> {
        let inner = lock(&self.inner);
        Ok(inner
            .get(world)?
            .snapshots
            .range(..=at)
            .next_back()
            .map(|(_, s)| s.clone()))
    }

    async fn put_snapshot(&self, world: WorldId, snapshot: Snapshot) -> Result<(), StorageError> {
        let mut inner = lock(&self.inner);
        let data = inner.get_mut(world)?;
        let info = data.info.as_ref().expect("checked by get_mut");
        if snapshot.tick < info.first_own_tick() || snapshot.tick > info.head {
            return Err(StorageError::SnapshotOutOfRange {
                world,
                tick: snapshot.tick,
            });
        }
        // A stored snapshot never changes (as in the redb store).
        data.snapshots.entry(snapshot.tick).or_insert(snapshot);
        Ok(())
    }

    async fn own_entity_ticks(
        &self,
        world: WorldId,
        entity: EntityId,
        to: Tick,
    ) -> Result<Vec<Tick>, StorageError> {
        let inner = lock(&self.inner);
        Ok(inner
            .get(world)?
            .entity_ticks
            .range((entity, Tick::ZERO)..=(entity, to))
            .map(|(_, t)| *t)
            .collect())
    }

    fn snapshot_interval(&self) -> Option<u64> {
        self.snapshot_interval
    }

    /// The postcard-encoded size of every stored record and snapshot (what
    /// a file backend would store before its own overhead).
    async fn size_bytes(&self) -> Result<Option<u64>, StorageError> {
        let inner = lock(&self.inner);
        let mut total = 0u64;
        for w in &inner.worlds {
            for r in w.records.values() {
                total += postcard::experimental::serialized_size(r).unwrap_or(0) as u64;
            }
            for s in w.snapshots.values() {
                total += postcard::experimental::serialized_size(s).unwrap_or(0) as u64;
            }
        }
        Ok(Some(total))
    }

    /// Computed from the world materialized at its head
    /// ([`crate::current::answer_from_state`]): the reference answers, at
    /// the cost of a materialization.
    async fn read_current(
        &self,
        world: WorldId,
        reads: Vec<crate::current::CurrentRead>,
    ) -> Result<Option<crate::current::CurrentView>, StorageError> {
        let head = self.world(world).await?.head;
        let state = match crate::ledger::state_at(self, world, head).await {
            Ok(s) => s,
            Err(crate::Error::Storage(e)) => return Err(e),
            // A log that does not replay: no current state to answer from.
            Err(_) => return Ok(None),
        };
        Ok(crate::current::answer_from_state(&state, &reads)
            .ok()
            .map(|answers| crate::current::CurrentView {
                tick: head,
                answers,
            }))
    }

    /// Computed from the world materialized at its head
    /// ([`crate::series::series_of_state`]): the reference series, at the
    /// cost of a materialization.
    async fn read_series(
        &self,
        world: WorldId,
        experiment: String,
        metric: Option<String>,
    ) -> Result<Option<crate::series::Series>, StorageError> {
        let head = self.world(world).await?.head;
        let state = match crate::ledger::state_at(self, world, head).await {
            Ok(s) => s,
            Err(crate::Error::Storage(e)) => return Err(e),
            Err(_) => return Ok(None),
        };
        Ok(crate::series::series_of_state(&state, &experiment, metric.as_deref()).ok())
    }
}
