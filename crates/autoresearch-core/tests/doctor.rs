//! The ledger checks (`doctor`) on a sound ledger and on one a faulty
//! backend serves: a record that does not apply, a wrong snapshot, a wrong
//! index. The repair saves the readable ticks as a fork that reads.

use async_trait::async_trait;
use autoresearch_core::doctor::{Problem, check_ledger, repair_world};
use autoresearch_core::{
    Change, ComponentRegistry, EntityId, MemoryStorage, Run, Snapshot, Storage, StorageError, Tick,
    TickRecord, World, WorldId, WorldInfo,
};
use std::sync::Arc;

/// Serves `inner`'s ledger with one fault.
struct Faulty {
    inner: Arc<MemoryStorage>,
    fault: Fault,
}

#[derive(Clone, Copy)]
enum Fault {
    None,
    /// The record of this tick of world#0 gains a change to an entity never
    /// spawned.
    BadRecord(u64),
    /// The snapshot at or before any tick comes back with one entity too few.
    BadSnapshot,
    /// The index of every entity lists one tick too many.
    BadIndex,
}

#[async_trait]
impl Storage for Faulty {
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
    async fn append_all(
        &self,
        w: WorldId,
        rs: Vec<(TickRecord, Option<Snapshot>)>,
    ) -> Result<(), StorageError> {
        self.inner.append_all(w, rs).await
    }
    async fn read_own_records(
        &self,
        w: WorldId,
        from: Tick,
        to: Tick,
    ) -> Result<Vec<TickRecord>, StorageError> {
        let mut records = self.inner.read_own_records(w, from, to).await?;
        if let Fault::BadRecord(t) = self.fault
            && w == WorldId(0)
        {
            for r in records.iter_mut().filter(|r| r.tick == Tick(t)) {
                r.changes.push(Change::Despawn {
                    entity: EntityId(9999),
                });
            }
        }
        Ok(records)
    }
    async fn own_snapshot_at_or_before(
        &self,
        w: WorldId,
        at: Tick,
    ) -> Result<Option<Snapshot>, StorageError> {
        let mut s = self.inner.own_snapshot_at_or_before(w, at).await?;
        if let (Fault::BadSnapshot, Some(s)) = (self.fault, s.as_mut()) {
            s.entities.pop();
        }
        Ok(s)
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
        let mut ticks = self.inner.own_entity_ticks(w, e, to).await?;
        if let Fault::BadIndex = self.fault {
            ticks.push(Tick(to.0 + 1000));
        }
        Ok(ticks)
    }
    fn snapshot_interval(&self) -> Option<u64> {
        self.inner.snapshot_interval()
    }
}

/// A world of 10 ticks (a run spawned, then changed nine times), snapshots
/// every 4 ticks, and a fork of it at tick 6 with two ticks of its own.
async fn ledger(fault: Fault) -> Arc<dyn Storage> {
    let inner = Arc::new(MemoryStorage::new(Some(4)));
    let storage: Arc<dyn Storage> = inner.clone();
    let registry = Arc::new(ComponentRegistry::standard());
    let mut w = World::create(storage.clone(), registry.clone(), "main")
        .await
        .unwrap();
    let e = w.spawn_with(&Run::new("r1", "exp")).unwrap();
    w.commit().await.unwrap();
    for i in 0..9 {
        w.insert(e, &Run::new(format!("r1-{i}"), "exp")).unwrap();
        w.commit().await.unwrap();
    }
    let fork = w.fork(Tick(6), "fork").await.unwrap();
    let mut f = World::open_id(storage.clone(), registry, fork.id)
        .await
        .unwrap();
    let e2 = f.spawn_with(&Run::new("r2", "exp")).unwrap();
    f.commit().await.unwrap();
    f.despawn(e2).unwrap();
    f.commit().await.unwrap();
    // The same ledger, now served with the fault.
    Arc::new(Faulty { inner, fault })
}

#[tokio::test]
async fn a_sound_ledger_has_no_problem_and_every_check_ran() {
    let storage = ledger(Fault::None).await;
    let reports = check_ledger(storage.as_ref()).await.unwrap();
    assert_eq!(reports.len(), 2);
    for r in &reports {
        assert!(r.is_sound(), "{}: {:?}", r.info.name, r.problems);
        assert_eq!(r.replayed_to, r.info.head);
        assert!(r.entities_checked >= 1, "{}", r.info.name);
    }
    let main = reports.iter().find(|r| r.info.name == "main").unwrap();
    assert_eq!(main.snapshots_checked, 2, "snapshots at ticks 4 and 8");
}

#[tokio::test]
async fn a_record_that_does_not_apply_is_found_and_the_readable_part_saved() {
    let storage = ledger(Fault::BadRecord(7)).await;
    let reports = check_ledger(storage.as_ref()).await.unwrap();
    let main = reports.iter().find(|r| r.info.name == "main").unwrap();
    assert_eq!(main.replayed_to, Tick(6));
    assert!(
        matches!(
            main.problems.as_slice(),
            [Problem::Unreplayable { readable_to: Tick(6), reason }] if reason.contains("tick 7")
        ),
        "{:?}",
        main.problems
    );
    // The fork at 6 shares ticks 1..=6 only: it is sound.
    let fork = reports.iter().find(|r| r.info.name == "fork").unwrap();
    assert!(fork.is_sound(), "{:?}", fork.problems);
    let saved = repair_world(
        storage.as_ref(),
        main.info.id,
        main.replayed_to,
        "main.repaired",
    )
    .await
    .unwrap();
    let w = World::open_id(
        storage.clone(),
        Arc::new(ComponentRegistry::standard()),
        saved.id,
    )
    .await
    .unwrap();
    assert_eq!(w.tick(), Tick(6));
    assert_eq!(
        w.run_by_id("r1-4").map(|(_, r)| r.run_id),
        Some("r1-4".into())
    );
    // Nothing of the damaged world changed.
    assert_eq!(storage.world(main.info.id).await.unwrap().head, Tick(10));
}

#[tokio::test]
async fn a_snapshot_that_differs_from_the_replay_is_found() {
    let storage = ledger(Fault::BadSnapshot).await;
    let reports = check_ledger(storage.as_ref()).await.unwrap();
    let main = reports.iter().find(|r| r.info.name == "main").unwrap();
    assert_eq!(
        main.problems,
        vec![
            Problem::SnapshotMismatch { tick: Tick(4) },
            Problem::SnapshotMismatch { tick: Tick(8) },
        ]
    );
}

#[tokio::test]
async fn an_index_that_disagrees_with_the_records_is_found() {
    let storage = ledger(Fault::BadIndex).await;
    let reports = check_ledger(storage.as_ref()).await.unwrap();
    for r in &reports {
        assert!(
            r.problems
                .iter()
                .any(|p| matches!(p, Problem::IndexMismatch { extra, missing, .. } if missing.is_empty() && extra.len() == 1)),
            "{}: {:?}",
            r.info.name,
            r.problems
        );
    }
}
