//! Deleting worlds (`Storage::delete_world`), checked alike on the redb
//! ledger and on core's in-memory reference: forks refuse the delete of
//! their parent, a deleted world's keys are gone and its name is free, its
//! ancestors read unchanged, and no id is reused (across a reopen too).

use autoresearch_core::{
    ComponentRegistry, MemoryStorage, Storage, StorageError, Tick, World, WorldId, ledger,
};
use autoresearch_store::{RedbConfig, RedbStorage};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Score(i64);

fn registry() -> Arc<ComponentRegistry> {
    let mut r = ComponentRegistry::new();
    r.register::<Score>("Score").unwrap();
    Arc::new(r)
}

/// World `a` of three ticks, `b` forked from it at tick 2 with one tick of
/// its own, `c` forked from `b` at its head. Returns their ids.
async fn family(st: &Arc<dyn Storage>) -> (WorldId, WorldId, WorldId) {
    let mut a = World::create(st.clone(), registry(), "a").await.unwrap();
    let e = a.spawn_with(&Score(1)).unwrap();
    a.commit().await.unwrap();
    for s in [2, 3] {
        a.insert(e, &Score(s)).unwrap();
        a.commit().await.unwrap();
    }
    let b = a.fork(Tick(2), "b").await.unwrap();
    let mut bw = World::open_id(st.clone(), registry(), b.id).await.unwrap();
    bw.insert(e, &Score(20)).unwrap();
    bw.spawn_with(&Score(99)).unwrap();
    bw.commit().await.unwrap();
    let c = bw.fork(bw.tick(), "c").await.unwrap();
    (a.id(), b.id, c.id)
}

async fn scores(st: &Arc<dyn Storage>, name: &str) -> Vec<i64> {
    let w = World::open(st.clone(), registry(), name).await.unwrap();
    let mut v: Vec<i64> = w
        .find_all::<Score>(|_| true)
        .into_iter()
        .map(|(_, s)| s.0)
        .collect();
    v.sort();
    v
}

/// The behaviour every backend shares.
async fn check(st: Arc<dyn Storage>) -> WorldId {
    let (a, b, c) = family(&st).await;
    let a_before = ledger::state_at(st.as_ref(), a, Tick(3)).await.unwrap();
    // A world with forks is refused, and nothing is deleted.
    match st.delete_world(a).await {
        Err(StorageError::HasForks { world, forks }) => {
            assert_eq!(world, a);
            assert_eq!(forks, ["b"]);
        }
        other => panic!("deleting a parent: {other:?}"),
    }
    match st.delete_world(b).await {
        Err(StorageError::HasForks { forks, .. }) => assert_eq!(forks, ["c"]),
        other => panic!("deleting a parent: {other:?}"),
    }
    assert_eq!(scores(&st, "c").await, [20, 99]);
    // Leaves first.
    st.delete_world(c).await.unwrap();
    assert!(st.find_world("c").await.unwrap().is_none());
    assert!(matches!(st.world(c).await, Err(StorageError::NoSuchWorld(id)) if id == c));
    assert!(matches!(
        st.delete_world(c).await,
        Err(StorageError::NoSuchWorld(_))
    ));
    assert_eq!(scores(&st, "b").await, [20, 99], "b reads unchanged");
    st.delete_world(b).await.unwrap();
    let names: Vec<String> = st
        .list_worlds()
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.name)
        .collect();
    assert_eq!(names, ["a"]);
    // The ancestor reads unchanged, at every tick.
    assert_eq!(
        ledger::state_at(st.as_ref(), a, Tick(3)).await.unwrap(),
        a_before
    );
    assert_eq!(scores(&st, "a").await, [3]);
    // The name is free again, with nothing of the old world in it; no id is reused.
    let b2 = st.create_world("b").await.unwrap();
    assert!(b2.id.0 > c.0, "{:?} reuses an id", b2.id);
    assert_eq!(b2.head, Tick::ZERO);
    assert!(
        st.read_own_records(b2.id, Tick(1), Tick(10))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        st.own_snapshot_at_or_before(b2.id, Tick(10))
            .await
            .unwrap()
            .is_none()
    );
    // The new world appends from tick 1 as any new world.
    let mut w = World::open_id(st.clone(), registry(), b2.id).await.unwrap();
    w.spawn_with(&Score(7)).unwrap();
    assert_eq!(w.commit().await.unwrap(), Tick(1));
    assert_eq!(scores(&st, "b").await, [7]);
    c
}

#[tokio::test]
async fn the_in_memory_reference_deletes_worlds() {
    check(Arc::new(MemoryStorage::new(Some(2)))).await;
}

#[tokio::test]
async fn the_redb_ledger_deletes_worlds_and_never_reuses_an_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.redb");
    let cfg = RedbConfig {
        snapshot_interval: Some(2),
        ..RedbConfig::default()
    };
    let st: Arc<dyn Storage> = Arc::new(RedbStorage::open(&path, cfg.clone()).unwrap());
    let c = check(st.clone()).await;
    // Delete the newest world, reopen: the next id is still past every deleted one.
    let newest = st.find_world("b").await.unwrap().unwrap();
    st.delete_world(newest.id).await.unwrap();
    drop(st);
    let st: Arc<dyn Storage> = Arc::new(RedbStorage::open(&path, cfg).unwrap());
    let d = st.create_world("d").await.unwrap();
    assert!(d.id.0 > newest.id.0 && d.id.0 > c.0, "{:?}", d.id);
    assert_eq!(scores(&st, "a").await, [3]);
}
