//! The writer's small-tick path (update ticks that change the status of a
//! few runs) against the references: the current state against a recount,
//! the chart series against `series_of_state`, and the log against a
//! replay, when the ticks alternate between two handles on one file (so
//! that each writer's caches miss the other's ticks), and after reopening.

use super::*;
use autoresearch_core::series::{Series, series_of_state};
use autoresearch_core::{EvalResult, Run, RunStatus, Storage, World, ledger};
use serde_json::json;
use std::sync::Arc;

use crate::current_tests::check as check_current;
use crate::test_support::{Rng, registry};

/// The store's series of both experiments, with and without a metric,
/// equal the reference at the world's head.
async fn check_series(st: &Arc<dyn Storage>, world: WorldId, round: u64) {
    let head = st.world(world).await.unwrap().head;
    let state = ledger::state_at(st.as_ref(), world, head).await.unwrap();
    for exp in ["a", "b"] {
        for metric in [None, Some("loss")] {
            let got = st
                .read_series(world, exp.into(), metric.map(str::to_string))
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("round {round}: no series at tick {head}"));
            let want: Series = series_of_state(&state, exp, metric).unwrap();
            assert_eq!(got, want, "round {round}, tick {head}, {exp} {metric:?}");
        }
    }
}

/// Ticks that change only the status of runs (crossing `crashed` and
/// back), with a few that change a run's commit (the path that reads the
/// point and its Results), written alternately through two handles of one
/// file, some staged several to an append: the current state, the series
/// and every Run read back equal their references, before and after the
/// file is reopened.
#[tokio::test]
async fn status_ticks_through_two_handles_equal_the_references() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    let a: Arc<dyn Storage> = Arc::new(RedbStorage::open(&path, RedbConfig::default()).unwrap());
    let b: Arc<dyn Storage> = Arc::new(RedbStorage::open(&path, RedbConfig::default()).unwrap());
    let reg = registry();
    let mut wa = World::create(a.clone(), reg.clone(), "autoresearch:a")
        .await
        .unwrap();
    let mut runs: Vec<(EntityId, Run)> = Vec::new();
    for i in 0..300u64 {
        let mut run = Run::new(format!("r{i}"), ["a", "b"][i as usize % 2]);
        run.commit_hash = "c1".into();
        run.task = "t".into();
        let e = wa.spawn_with(&run).unwrap();
        runs.push((e, run));
        if i % 3 == 0 {
            let outputs = json!({"loss": i as f64 / 4.0, "_meta": {"commit": "c1"}});
            wa.spawn_with(&EvalResult::new(format!("r{i}"), "eval", &outputs, 0))
                .unwrap();
        }
    }
    wa.commit().await.unwrap();
    let mut wb = World::open(b.clone(), reg.clone(), "autoresearch:a")
        .await
        .unwrap();
    let world = wa.id();
    let mut rng = Rng(19);
    for round in 0..40u64 {
        let w = if round % 2 == 0 { &mut wa } else { &mut wb };
        w.refresh().await.unwrap();
        let ticks = if round % 5 == 0 { 3 } else { 1 };
        for t in 0..ticks {
            for _ in 0..25 {
                let i = rng.below(runs.len() as u64) as usize;
                let (e, run) = &mut runs[i];
                run.set_status(*rng.pick(&RunStatus::ALL));
                if rng.below(10) == 0 {
                    run.commit_hash = rng.pick(&["c1", "c2"]).to_string();
                }
                w.insert(*e, &*run).unwrap();
            }
            if t + 1 < ticks {
                w.stage().unwrap();
            }
        }
        w.commit().await.unwrap();
        let st = if round % 2 == 0 { &a } else { &b };
        if round % 8 == 7 {
            check_current(st, world, &mut rng, round).await;
            check_series(st, world, round).await;
        }
    }
    check_current(&a, world, &mut rng, 40).await;
    check_series(&b, world, 40).await;
    drop((wa, wb, a, b));
    let st: Arc<dyn Storage> = Arc::new(RedbStorage::open(&path, RedbConfig::default()).unwrap());
    check_current(&st, world, &mut rng, 41).await;
    check_series(&st, world, 41).await;
    // Every Run reads back as last written.
    let w = World::open(st.clone(), reg, "autoresearch:a")
        .await
        .unwrap();
    for (e, run) in &runs {
        assert_eq!(w.get::<Run>(*e).as_ref(), Some(run), "{e:?}");
    }
}
