//! A new world and its first tick in one step (`Storage::create_and_append`,
//! `TickWriter::create_on_commit`): on redb one write transaction that
//! stores both or nothing; on the in-memory reference the default (create,
//! append, delete the world on a refusal). Both give the same answers.

use autoresearch_core::{
    Change, ComponentRegistry, EntityId, Error, MemoryStorage, Storage, StorageError, Tick,
    TickRecord, TickWriter, World,
};
use autoresearch_store::{RedbConfig, RedbStorage};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Score(i64);

fn registry() -> Arc<ComponentRegistry> {
    let mut r = ComponentRegistry::new();
    r.register::<Score>("Score").unwrap();
    Arc::new(r)
}

fn backends(dir: &Path) -> Vec<Arc<dyn Storage>> {
    vec![
        Arc::new(MemoryStorage::new(Some(3))),
        Arc::new(RedbStorage::open(&dir.join("l.redb"), RedbConfig::default()).unwrap()),
    ]
}

fn set(entity: u64, score: i64) -> Change {
    Change::Set {
        entity: EntityId(entity),
        component: "Score".into(),
        value: registry().encode(&Score(score)).unwrap().1,
    }
}

#[tokio::test]
async fn a_writer_creates_its_world_with_the_first_tick() {
    let dir = tempfile::tempdir().unwrap();
    for st in backends(dir.path()) {
        let at = st.location();
        let mut w = TickWriter::create_on_commit(st.clone(), registry(), "fleet");
        assert_eq!(st.find_world("fleet").await.unwrap(), None, "{at}");
        let e = w.spawn();
        w.set(e, &Score(7)).unwrap();
        assert_eq!(w.commit().await.unwrap(), Tick(1), "{at}");
        let info = st.find_world("fleet").await.unwrap().expect("created");
        assert_eq!((w.info(), info.head), (&info, Tick(1)), "{at}");
        // The writer goes on like any other.
        w.set(e, &Score(8)).unwrap();
        assert_eq!(w.commit().await.unwrap(), Tick(2), "{at}");
        let world = World::open(st.clone(), registry(), "fleet").await.unwrap();
        assert_eq!(world.get::<Score>(e), Some(Score(8)), "{at}");
    }
}

#[tokio::test]
async fn an_empty_first_commit_creates_the_empty_world() {
    let dir = tempfile::tempdir().unwrap();
    for st in backends(dir.path()) {
        let mut w = TickWriter::create_on_commit(st.clone(), registry(), "empty");
        assert_eq!(w.commit().await.unwrap(), Tick::ZERO);
        let info = st.find_world("empty").await.unwrap().expect("created");
        assert_eq!((info.head, w.info().id), (Tick::ZERO, info.id));
    }
}

#[tokio::test]
async fn a_refused_first_tick_leaves_no_world() {
    let dir = tempfile::tempdir().unwrap();
    for st in backends(dir.path()) {
        let at = st.location();
        // A component on an entity never spawned.
        let bad = TickRecord {
            tick: Tick(1),
            at_ms: 0,
            changes: vec![set(3, 1)],
        };
        let err = st.create_and_append("w", vec![(bad, None)]).await;
        assert!(
            matches!(
                err,
                Err(StorageError::NotApplicable {
                    entity: EntityId(3),
                    ..
                })
            ),
            "{at}: {err:?}"
        );
        assert_eq!(st.list_worlds().await.unwrap(), vec![], "{at}");
        // A tick that is not tick 1.
        let late = TickRecord {
            tick: Tick(2),
            at_ms: 0,
            changes: vec![Change::Spawn {
                entity: EntityId(0),
            }],
        };
        let err = st.create_and_append("w", vec![(late, None)]).await;
        assert!(
            matches!(err, Err(StorageError::Conflict { .. })),
            "{at}: {err:?}"
        );
        assert_eq!(st.list_worlds().await.unwrap(), vec![], "{at}");

        // Through the writer: the error, no world, and a retry that works.
        let mut w = TickWriter::create_on_commit(st.clone(), registry(), "w");
        w.set(EntityId(9), &Score(1)).unwrap();
        let err = w.commit().await;
        assert!(
            matches!(err, Err(Error::Storage(StorageError::NotApplicable { .. }))),
            "{at}: {err:?}"
        );
        assert_eq!(st.find_world("w").await.unwrap(), None, "{at}");
        let e = w.spawn();
        assert_eq!(e, EntityId(0), "{at}: nothing was spawned before");
        w.set(e, &Score(2)).unwrap();
        assert_eq!(w.commit().await.unwrap(), Tick(1), "{at}");
    }
}

#[tokio::test]
async fn a_taken_name_is_refused_and_the_world_of_that_name_kept() {
    let dir = tempfile::tempdir().unwrap();
    for st in backends(dir.path()) {
        let at = st.location();
        let mut first = World::create(st.clone(), registry(), "taken")
            .await
            .unwrap();
        let e = first.spawn_with(&Score(1)).unwrap();
        first.commit().await.unwrap();
        let mut w = TickWriter::create_on_commit(st.clone(), registry(), "taken");
        let e2 = w.spawn();
        w.set(e2, &Score(5)).unwrap();
        let err = w.commit().await;
        assert!(
            matches!(err, Err(Error::Storage(StorageError::NameTaken(ref n))) if n == "taken"),
            "{at}: {err:?}"
        );
        let worlds = st.list_worlds().await.unwrap();
        assert_eq!(worlds.len(), 1, "{at}");
        assert_eq!(worlds[0].head, Tick(1), "{at}");
        let again = World::open(st.clone(), registry(), "taken").await.unwrap();
        assert_eq!(again.get::<Score>(e), Some(Score(1)), "{at}");
    }
}

#[tokio::test]
async fn redb_stores_the_world_and_its_tick_in_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let st = RedbStorage::open(&dir.path().join("l.redb"), RedbConfig::default()).unwrap();
    let before = st.commit_stats();
    let rec = TickRecord {
        tick: Tick(1),
        at_ms: 0,
        changes: vec![Change::Spawn {
            entity: EntityId(0),
        }],
    };
    let info = st
        .create_and_append("one", vec![(rec, None)])
        .await
        .unwrap();
    let after = st.commit_stats();
    assert_eq!(info.head, Tick(1));
    assert_eq!(
        (
            after.transactions - before.transactions,
            after.writes - before.writes
        ),
        (1, 1)
    );
}
