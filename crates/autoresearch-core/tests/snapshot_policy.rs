//! Snapshots triggered by the bytes a read would replay
//! (`Storage::snapshot_due_after`), besides the tick interval: a world of
//! large ticks gets a snapshot once its records since the last one exceed
//! the floor and twice the state, so time travel stays bounded whatever the
//! tick sizes; a handle reopened mid-way counts the records it replayed.

use autoresearch_core::{
    ComponentRegistry, MemoryStorage, Storage, Tick, World, WorldId,
    storage::SNAPSHOT_REPLAY_FLOOR_BYTES,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Blob(Vec<u8>);

fn registry() -> Arc<ComponentRegistry> {
    let mut reg = ComponentRegistry::new();
    reg.register::<Blob>("Blob").unwrap();
    Arc::new(reg)
}

/// The ticks of `world`'s snapshots up to `to`.
async fn snapshot_ticks(st: &dyn Storage, world: WorldId, to: u64) -> Vec<u64> {
    let mut out = Vec::new();
    let mut at = Tick(to);
    while let Some(s) = st.own_snapshot_at_or_before(world, at).await.unwrap() {
        out.push(s.tick.0);
        if s.tick.0 == 0 {
            break;
        }
        at = Tick(s.tick.0 - 1);
    }
    out.reverse();
    out
}

/// A quarter of the floor per value: the replay passes the floor (and
/// twice the one-value state) on the fourth tick after a snapshot.
fn big(i: u8) -> Blob {
    Blob(vec![i; (SNAPSHOT_REPLAY_FLOOR_BYTES / 4 + 16) as usize])
}

#[tokio::test]
async fn large_ticks_get_a_snapshot_by_their_bytes() {
    // An interval far beyond the test: only bytes can trigger.
    let st: Arc<dyn Storage> = Arc::new(MemoryStorage::new(Some(1_000)));
    let mut w = World::create(st.clone(), registry(), "big").await.unwrap();
    let e = w.spawn_with(&big(0)).unwrap();
    w.commit().await.unwrap();
    for i in 1..=5u8 {
        w.insert(e, &big(i)).unwrap();
        w.commit().await.unwrap();
    }
    // Ticks 1..=4 replay 4 values: the snapshot comes with tick 4.
    assert_eq!(snapshot_ticks(st.as_ref(), w.id(), 6).await, vec![4]);
    // A handle opened now replays ticks 5 and 6, and counts them: its
    // next snapshot is at tick 8, as for the handle that wrote them.
    drop(w);
    let mut w = World::open(st.clone(), registry(), "big").await.unwrap();
    for i in 6..=9u8 {
        w.insert(e, &big(i)).unwrap();
        w.commit().await.unwrap();
    }
    assert_eq!(snapshot_ticks(st.as_ref(), w.id(), 10).await, vec![4, 8]);
    // Staged ticks follow the same rule.
    for i in 10..=12u8 {
        w.insert(e, &big(i)).unwrap();
        w.stage().unwrap();
    }
    w.flush().await.unwrap();
    assert_eq!(
        snapshot_ticks(st.as_ref(), w.id(), 13).await,
        vec![4, 8, 12]
    );
    // Every tick still reads back its own value.
    for t in [3u64, 4, 7, 12] {
        let past = World::open_at(st.clone(), registry(), w.id(), Tick(t))
            .await
            .unwrap();
        assert_eq!(past.get::<Blob>(e), Some(big((t - 1) as u8)), "tick {t}");
    }
}

#[tokio::test]
async fn small_ticks_and_a_storage_without_snapshots_get_none_by_bytes() {
    // Small ticks: far below the floor, even though the replay grows
    // past twice the state.
    let st: Arc<dyn Storage> = Arc::new(MemoryStorage::new(Some(1_000)));
    let mut w = World::create(st.clone(), registry(), "small")
        .await
        .unwrap();
    let e = w.spawn_with(&Blob(vec![1; 100])).unwrap();
    w.commit().await.unwrap();
    for i in 0..50u8 {
        w.insert(e, &Blob(vec![i; 100])).unwrap();
        w.commit().await.unwrap();
    }
    assert!(snapshot_ticks(st.as_ref(), w.id(), 51).await.is_empty());
    // A storage that never snapshots is not made to by large ticks.
    let st: Arc<dyn Storage> = Arc::new(MemoryStorage::new(None));
    let mut w = World::create(st.clone(), registry(), "never")
        .await
        .unwrap();
    let e = w.spawn_with(&big(0)).unwrap();
    w.commit().await.unwrap();
    for i in 1..=8u8 {
        w.insert(e, &big(i)).unwrap();
        w.commit().await.unwrap();
    }
    assert!(snapshot_ticks(st.as_ref(), w.id(), 9).await.is_empty());
    assert!(!st.snapshot_due_after(Tick(9), u64::MAX, 0));
}
