//! One-component reads (`spans`, `span_cache`): through the decoded cache
//! (admitting a value on its second decode) and without it, at random
//! ticks and again, they answer as the full replay; the cache keeps a
//! value read twice, not one read once, and stays within its bytes; a
//! state replayed twice from many records is kept gathered, and reads
//! that start from it answer as the full replay.

use super::*;
use crate::test_support::{Rng, registry};
use autoresearch_core::{Run, RunStatus, Storage, World, ledger};
use std::collections::BTreeMap;
use std::sync::Arc;

fn open(path: &Path, decoded_cache_bytes: usize) -> Arc<RedbStorage> {
    open_with(path, decoded_cache_bytes, Some(16))
}

fn open_with(
    path: &Path,
    decoded_cache_bytes: usize,
    snapshot_interval: Option<u64>,
) -> Arc<RedbStorage> {
    Arc::new(
        RedbStorage::open(
            path,
            RedbConfig {
                snapshot_interval,
                decoded_cache_bytes,
                ..RedbConfig::default()
            },
        )
        .unwrap(),
    )
}

/// World "w": tick 1 spawns 80 runs, ticks 2..=90 each change the status
/// of 3 of them (stored as deltas of the ingested values), some also
/// their task, one despawns a run and one spawns another. A snapshot
/// every 16 ticks.
async fn history(path: &Path) -> (WorldId, u64) {
    history_with(path, Some(16)).await
}

async fn history_with(path: &Path, snapshot_interval: Option<u64>) -> (WorldId, u64) {
    let st: Arc<dyn Storage> = open_with(path, 0, snapshot_interval);
    let mut w = World::create(st, registry(), "w").await.unwrap();
    let mut rng = Rng(5);
    let mut ids = Vec::new();
    for i in 0..80 {
        let mut run = Run::new(format!("run-{i:04}"), "exp");
        run.task = format!("make model {i} faster without changing what it computes");
        ids.push(w.spawn_with(&run).unwrap());
    }
    w.commit().await.unwrap();
    for tick in 2..=90u64 {
        for k in 0..3 {
            let e = *rng.pick(&ids);
            let mut run = w.get::<Run>(e).unwrap();
            run.set_status(*rng.pick(&RunStatus::ALL));
            if k == 0 && tick % 5 == 0 {
                run.task.push_str(&format!(" (again at {tick})"));
            }
            w.insert(e, &run).unwrap();
        }
        if tick == 40 {
            let gone = ids.swap_remove(7);
            w.despawn(gone).unwrap();
            ids.push(w.spawn_with(&Run::new("run-late", "exp")).unwrap());
        }
        w.commit().await.unwrap();
    }
    (w.id(), 90)
}

/// The runs at `tick` by the full replay (`ledger::state_at`).
async fn replayed(st: &dyn Storage, world: WorldId, tick: Tick) -> BTreeMap<EntityId, Vec<u8>> {
    ledger::state_at(st, world, tick)
        .await
        .unwrap()
        .entities
        .into_iter()
        .filter_map(|(e, comps)| Some((e, comps.get("Run")?.clone())))
        .collect()
}

async fn spans_at(st: &dyn Storage, world: WorldId, tick: Tick) -> BTreeMap<EntityId, Vec<u8>> {
    ledger::component_values_at::<Run>(st, &registry(), world, tick)
        .await
        .unwrap()
        .iter()
        .map(|(e, v)| (e, v.to_vec()))
        .collect()
}

#[tokio::test]
async fn cached_and_uncached_reads_equal_a_full_replay_at_random_ticks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    let (id, head) = history(&path).await;
    let (default, small, none) = (
        open(&path, RedbConfig::default().decoded_cache_bytes),
        open(&path, 30_000),
        open(&path, 0),
    );
    let mut rng = Rng(17);
    for _ in 0..60 {
        let tick = Tick(1 + rng.below(head));
        let want = replayed(none.as_ref(), id, tick).await;
        assert!(want.len() >= 79, "tick {tick}");
        // Three reads each: the first decodes, the second keeps, the
        // third finds what the second kept.
        for round in 0..3 {
            for (name, st) in [("default", &default), ("small", &small), ("none", &none)] {
                let got = spans_at(st.as_ref(), id, tick).await;
                assert_eq!(got, want, "{name} cache, read {round} at tick {tick}");
            }
        }
        assert!(small.spans.bytes() <= 30_000, "{}", small.spans.bytes());
        assert_eq!(none.spans.bytes(), 0);
    }
}

#[tokio::test]
async fn a_record_read_once_is_not_kept_and_one_read_twice_is() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    let (id, _) = history(&path).await;
    let st = open(&path, 1 << 20);
    let read = |from: u64, to: u64| {
        let st = st.clone();
        async move {
            st.read_own_component_spans(id, Tick(from), Tick(to), "Run")
                .await
                .unwrap()
        }
    };
    let first = read(20, 30).await;
    assert_eq!(first.len(), 11);
    for t in 20..=30 {
        assert_eq!(st.spans.record(id, Tick(t), "Run"), None, "tick {t}");
    }
    // A second read of part of the range keeps that part.
    let second = read(25, 35).await;
    assert_eq!(second[..6], first[5..]);
    for t in 20..=35 {
        let kept = st.spans.record(id, Tick(t), "Run");
        assert_eq!(kept.is_some(), (25..=30).contains(&t), "tick {t}");
    }
    // And a third read answers from it, the same.
    assert_eq!(read(25, 30).await[..], first[5..]);
    // Snapshots likewise.
    let snap = |at: u64| {
        let st = st.clone();
        async move {
            st.own_component_span_snapshot_at_or_before(id, Tick(at), "Run")
                .await
                .unwrap()
                .unwrap()
        }
    };
    let s = snap(40).await;
    assert!(s.tick > Tick(1) && s.tick <= Tick(40), "{}", s.tick);
    assert_eq!(st.spans.snapshot(id, s.tick, "Run"), None);
    assert_eq!(snap(s.tick.0).await, s);
    assert_eq!(st.spans.snapshot(id, s.tick, "Run"), Some(s));
    assert!(st.spans.bytes() <= 1 << 20);
}

/// Without stored snapshots every read replays from tick 1: a state read
/// twice is kept gathered at its tick and stands for a snapshot there.
#[tokio::test]
async fn a_state_replayed_twice_is_kept_and_later_reads_start_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    let (id, _) = history_with(&path, None).await;
    let st = open_with(&path, 1 << 22, None);
    let none = open_with(&path, 0, None);
    let base = |at: u64| {
        let st = st.clone();
        async move {
            st.own_component_span_snapshot_at_or_before(id, Tick(at), "Run")
                .await
                .unwrap()
        }
    };
    let want = replayed(none.as_ref(), id, Tick(60)).await;
    assert_eq!(spans_at(st.as_ref(), id, Tick(60)).await, want);
    assert_eq!(base(90).await, None, "kept after one read");
    assert_eq!(spans_at(st.as_ref(), id, Tick(60)).await, want);
    let kept = base(90).await.expect("kept after the second read");
    assert_eq!(kept.tick, Tick(60));
    // One body, in entity order, holding exactly the state at tick 60.
    let values: BTreeMap<_, _> = kept
        .entities
        .iter()
        .filter_map(|(e, span)| Some((*e, span.as_ref()?.get(&kept.body)?.to_vec())))
        .collect();
    assert_eq!(values, want);
    assert_eq!(kept.body.len(), want.values().map(Vec::len).sum::<usize>());
    // Not before its tick; and reads at, after and before it answer as
    // the full replay. Tick 70 replays 10 records from it: not offered.
    assert_eq!(base(59).await, None);
    for t in [60, 70, 59, 90] {
        let want = replayed(none.as_ref(), id, Tick(t)).await;
        for _ in 0..2 {
            assert_eq!(spans_at(st.as_ref(), id, Tick(t)).await, want, "tick {t}");
        }
    }
    assert_eq!(base(75).await.unwrap().tick, Tick(60));
    // Tick 90 replayed 30 records from tick 60's state: kept too.
    assert_eq!(base(90).await.unwrap().tick, Tick(90));
    // A read of fewer records is never offered; nor is anything offered
    // to a storage that keeps nothing.
    assert_eq!(
        none.own_component_span_snapshot_at_or_before(id, Tick(90), "Run")
            .await
            .unwrap(),
        None
    );
}

/// Reads at random ticks of a world and of a fork of it, through caches
/// of several sizes with no stored snapshot, so that states are gathered
/// (and, in the small cache, dropped): each answers as the full replay.
#[tokio::test]
async fn reads_from_gathered_states_equal_a_full_replay_across_a_fork() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    let (id, head) = history_with(&path, None).await;
    // A fork at tick 45 with 30 ticks of its own.
    let writer: Arc<dyn Storage> = open_with(&path, 0, None);
    let main = World::open_id(writer.clone(), registry(), id)
        .await
        .unwrap();
    let mut fork = main.fork_world(Tick(45), "f").await.unwrap();
    let ids: Vec<EntityId> = fork
        .find_all::<Run>(|_| true)
        .into_iter()
        .map(|(e, _)| e)
        .collect();
    let mut rng = Rng(23);
    for _ in 46..=75 {
        let e = *rng.pick(&ids);
        let mut run = fork.get::<Run>(e).unwrap();
        run.set_status(*rng.pick(&RunStatus::ALL));
        fork.insert(e, &run).unwrap();
        fork.commit().await.unwrap();
    }
    let fork_id = fork.id();
    let (default, small, none) = (
        open_with(&path, RedbConfig::default().decoded_cache_bytes, None),
        open_with(&path, 120_000, None),
        open_with(&path, 0, None),
    );
    for _ in 0..40 {
        let (world, last) = if rng.below(2) == 0 {
            (id, head)
        } else {
            (fork_id, 75)
        };
        let tick = Tick(1 + rng.below(last));
        let want = replayed(none.as_ref(), world, tick).await;
        for round in 0..3 {
            for (name, st) in [("default", &default), ("small", &small)] {
                let got = spans_at(st.as_ref(), world, tick).await;
                assert_eq!(
                    got, want,
                    "{name} cache, read {round} of {world} at tick {tick}"
                );
            }
        }
        assert!(small.spans.bytes() <= 120_000, "{}", small.spans.bytes());
    }
}
