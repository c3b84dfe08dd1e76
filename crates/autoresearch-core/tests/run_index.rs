//! `World::run_by_id` answers through an index the world keeps in step with
//! every applied tick: checked against a scan of the materialized runs over
//! random spawns, run changes (including run_id changes and duplicates),
//! removals, despawns, commits, reopenings and forks; looked up after
//! every step, or only at the end (the index built by the first look-up).

use autoresearch_core::{ComponentRegistry, EntityId, MemoryStorage, Run, Storage, World};
use proptest::prelude::*;
use std::sync::Arc;

#[derive(Clone, Debug)]
enum Op {
    Spawn(u8),
    SetRun(usize, u8),
    RemoveRun(usize),
    Despawn(usize),
    Commit,
    Reopen,
    Fork,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..6).prop_map(Op::Spawn),
        3 => (0usize..12, 0u8..6).prop_map(|(e, id)| Op::SetRun(e, id)),
        1 => (0usize..12).prop_map(Op::RemoveRun),
        1 => (0usize..12).prop_map(Op::Despawn),
        3 => Just(Op::Commit),
        1 => Just(Op::Reopen),
        1 => Just(Op::Fork),
    ]
}

fn run_id(i: u8) -> String {
    format!("run-{i}")
}

/// The scan `run_by_id` used to be: the lowest entity holding that run_id.
fn scanned(w: &World, id: &str) -> Option<(EntityId, Run)> {
    w.find::<Run>(|r| r.run_id == id)
}

async fn check(w: &World, ops: &[Op]) {
    for i in 0..7 {
        let id = run_id(i);
        assert_eq!(w.run_by_id(&id), scanned(w, &id), "{id} after {ops:?}");
    }
}

/// Runs `ops`; with `every`, looks every run up after each op (the index
/// built at once and kept in step), else only at the end (built by the
/// first look-up, after every tick was applied without it).
async fn scenario(ops: Vec<Op>, every: bool) {
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new(Some(3)));
    let registry = Arc::new(ComponentRegistry::standard());
    let mut w = World::create(storage.clone(), registry.clone(), "w")
        .await
        .unwrap();
    let mut forks = 0;
    for (i, op) in ops.iter().enumerate() {
        let live: Vec<EntityId> = {
            let mut q = w.hecs().query::<&EntityId>();
            let mut v: Vec<EntityId> = q.iter().copied().filter(|e| w.is_live(*e)).collect();
            v.sort();
            v
        };
        let pick = |k: usize| (!live.is_empty()).then(|| live[k % live.len()]);
        match op {
            Op::Spawn(id) => {
                w.spawn_with(&Run::new(run_id(*id), "exp")).unwrap();
            }
            Op::SetRun(k, id) => {
                if let Some(e) = pick(*k) {
                    let mut r = Run::new(run_id(*id), "exp");
                    r.status = "running".into();
                    w.insert_owned(e, r).unwrap();
                }
            }
            Op::RemoveRun(k) => {
                if let Some(e) = pick(*k) {
                    w.remove::<Run>(e).unwrap();
                }
            }
            Op::Despawn(k) => {
                if let Some(e) = pick(*k) {
                    w.despawn(e).unwrap();
                }
            }
            Op::Commit => {
                w.commit().await.unwrap();
            }
            Op::Reopen => {
                w.commit().await.unwrap();
                w = World::open_id(storage.clone(), registry.clone(), w.id())
                    .await
                    .unwrap();
            }
            Op::Fork => {
                w.commit().await.unwrap();
                forks += 1;
                let at = w.tick();
                w = w.fork_world(at, &format!("fork-{forks}")).await.unwrap();
                assert_eq!(w.tick(), at);
            }
        }
        if every {
            check(&w, &ops[..=i]).await;
        }
    }
    w.commit().await.unwrap();
    check(&w, &ops).await;
    // A fresh materialization of the head agrees with the kept index.
    let fresh = World::open_id(storage, registry, w.id()).await.unwrap();
    assert_eq!(fresh.tick(), w.tick());
    check(&fresh, &ops).await;
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn run_by_id_matches_a_scan(ops in prop::collection::vec(op(), 1..40)) {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(scenario(ops, true));
    }

    #[test]
    fn a_first_look_up_after_many_ticks_matches_a_scan(ops in prop::collection::vec(op(), 1..40)) {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(scenario(ops, false));
    }
}
