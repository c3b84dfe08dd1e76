//! One-component reads (`spans`, `span_cache`): through the decoded cache
//! (admitting a value on its second decode) and without it, at random
//! ticks and again, they answer as the full replay; the cache keeps a
//! value read twice, not one read once, and stays within its bytes.

use super::*;
use crate::test_support::{Rng, registry};
use autoresearch_core::{Run, RunStatus, Storage, World, ledger};
use std::collections::BTreeMap;
use std::sync::Arc;

fn open(path: &Path, decoded_cache_bytes: usize) -> Arc<RedbStorage> {
    Arc::new(
        RedbStorage::open(
            path,
            RedbConfig {
                snapshot_interval: Some(16),
                decoded_cache_bytes,
                ..RedbConfig::default()
            },
        )
        .unwrap(),
    )
}

/// World "w": tick 1 spawns 80 runs, ticks 2..=90 each change the status
/// of 3 of them (stored as deltas of the ingested values), some also
/// their task, one despawns a run and one spawns another.
async fn history(path: &Path) -> (WorldId, u64) {
    let st: Arc<dyn Storage> = open(path, 0);
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
