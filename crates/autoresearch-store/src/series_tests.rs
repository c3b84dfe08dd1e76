//! The chart series the store keeps (`series`) against the reference
//! (`autoresearch_core::series::series_of_state` of the world
//! materialized at its head), after random histories; and the fall back
//! (no series) for forks, ledgers appended to by older builds and
//! histories it does not keep.

use super::*;
use autoresearch_core::series::{Series, series_of_state};
use autoresearch_core::{
    EvalResult, OutcomeStatus, Run, RunStatus, Storage, Tick, World, ledger, lifecycle::Outcome,
};
use redb::ReadableTable;
use serde_json::json;
use std::sync::Arc;

use crate::test_support::{Rng, registry};

const METRICS: [Option<&str>; 4] = [None, Some("loss"), Some("acc"), Some("absent")];

/// The store's series of each experiment and metric, against the
/// reference; `false` when the store keeps none (then `must_keep` fails).
async fn check(st: &Arc<dyn Storage>, world: WorldId, seed: u64, must_keep: bool) -> bool {
    let head = st.world(world).await.unwrap().head;
    let state = ledger::state_at(st.as_ref(), world, head).await.unwrap();
    for exp in ["a", "b", "none"] {
        for metric in METRICS {
            let got = st
                .read_series(world, exp.into(), metric.map(str::to_string))
                .await
                .unwrap();
            let Some(got) = got else {
                assert!(!must_keep, "seed {seed}: no series at tick {head}");
                return false;
            };
            let want: Series = series_of_state(&state, exp, metric).unwrap();
            assert_eq!(got.tick, head);
            assert_eq!(got, want, "seed {seed}, tick {head}, {exp} {metric:?}");
        }
    }
    true
}

/// A history the series keeps: runs of two experiments (each run_id once)
/// whose status, commit and Outcome change, Results (several per run,
/// on the final commit, an earlier one or none, some without the
/// metric, some not JSON) that come, change and go.
fn kept_tick(
    w: &mut World,
    rng: &mut Rng,
    runs: &mut Vec<(EntityId, Run)>,
    results: &mut Vec<EntityId>,
) {
    let statuses = [RunStatus::Running, RunStatus::Stopped, RunStatus::Crashed];
    let outcomes = [
        OutcomeStatus::Keep,
        OutcomeStatus::Discard,
        OutcomeStatus::Crash,
        OutcomeStatus::Pending,
        OutcomeStatus::Baseline,
        OutcomeStatus::Other("later".into()),
    ];
    let commits = ["c1", "c2", ""];
    for _ in 0..1 + rng.below(5) {
        match rng.below(8) {
            0 | 1 => {
                let run_id = format!("r{}", runs.len());
                let mut run = Run::new(&run_id, *rng.pick(&["a", "b"]));
                run.task = rng.pick(&["same", "other"]).to_string();
                run.commit_hash = rng.pick(&commits).to_string();
                let e = w.spawn_with(&run).unwrap();
                runs.push((e, run));
            }
            _ if runs.is_empty() => {}
            2 | 3 => {
                let run_id = rng.pick(runs).1.run_id.clone();
                let loss = rng.below(1000) as f64 / 8.0;
                let outputs = match rng.below(5) {
                    0 => {
                        json!({"loss": loss, "acc": 0.5, "_meta": {"commit": *rng.pick(&commits)}})
                    }
                    1 => json!({"loss": loss, "_meta": {"commit": *rng.pick(&commits)}}),
                    2 => json!({"acc": loss, "note": "text"}),
                    3 => json!({"loss": loss}),
                    _ => json!("not an object"),
                };
                let r = EvalResult::new(&run_id, "eval", &outputs, 0);
                let e = if rng.below(4) == 0 && !results.is_empty() {
                    // A Result rewritten in place, perhaps for another run.
                    let e = *rng.pick(results);
                    w.insert(e, &r).unwrap();
                    e
                } else {
                    w.spawn_with(&r).unwrap()
                };
                results.push(e);
            }
            4 => {
                let i = rng.below(runs.len() as u64) as usize;
                let (e, run) = &mut runs[i];
                run.set_status(*rng.pick(&statuses));
                run.commit_hash = rng.pick(&commits).to_string();
                w.insert(*e, &*run).unwrap();
            }
            5 | 6 => {
                let (e, run_id, exp) = {
                    let (e, run) = rng.pick(runs);
                    (*e, run.run_id.clone(), run.experiment_name.clone())
                };
                let comparator = *rng.pick(&["scalar:loss:min", "vote:2", ""]);
                let newest = w
                    .find_all::<Outcome>(|o| !o.comparator.is_empty())
                    .into_iter()
                    .map(|(e, _)| e)
                    .filter(|o| {
                        runs.iter()
                            .any(|(r, run)| r == o && run.experiment_name == exp)
                    })
                    .max()
                    == Some(e);
                if comparator.is_empty() && newest {
                    // Taking back the newest comparator is not kept.
                    continue;
                }
                w.insert(
                    e,
                    &Outcome {
                        run_id,
                        status: rng.pick(&outcomes).clone(),
                        comparator: comparator.into(),
                        ..Outcome::default()
                    },
                )
                .unwrap();
            }
            _ if results.is_empty() => {}
            _ => {
                let i = rng.below(results.len() as u64) as usize;
                let e = results.swap_remove(i);
                results.retain(|r| *r != e);
                if rng.below(2) == 0 {
                    w.despawn(e).unwrap();
                } else {
                    w.remove::<EvalResult>(e).unwrap();
                }
            }
        }
    }
}

#[tokio::test]
async fn the_series_equals_the_reference_after_random_histories() {
    for seed in [3u64, 11, 42, 2024, 77777] {
        let dir = tempfile::tempdir().unwrap();
        let st: Arc<dyn Storage> =
            Arc::new(RedbStorage::open(&dir.path().join("l.redb"), RedbConfig::default()).unwrap());
        let mut rng = Rng(seed);
        let mut w = World::create(st.clone(), registry(), "autoresearch:a")
            .await
            .unwrap();
        let (mut runs, mut results) = (Vec::new(), Vec::new());
        for tick in 0..45 {
            kept_tick(&mut w, &mut rng, &mut runs, &mut results);
            if tick % 3 == 0 {
                // Several ticks in one append (one transaction).
                w.stage().unwrap();
                kept_tick(&mut w, &mut rng, &mut runs, &mut results);
            }
            w.commit().await.unwrap();
            if tick % 5 == 0 {
                check(&st, w.id(), seed, true).await;
            }
        }
        check(&st, w.id(), seed, true).await;
        // The memory backend, given the same records, answers the same.
        let head = st.world(w.id()).await.unwrap().head;
        let records = st.read_own_records(w.id(), Tick(1), head).await.unwrap();
        let mem: Arc<dyn Storage> = Arc::new(autoresearch_core::MemoryStorage::default());
        let m = mem.create_world("m").await.unwrap();
        mem.append_all(m.id, records.into_iter().map(|r| (r, None)).collect())
            .await
            .unwrap();
        for exp in ["a", "b"] {
            for metric in METRICS {
                let metric = metric.map(str::to_string);
                let a = st.read_series(w.id(), exp.into(), metric.clone()).await;
                let b = mem.read_series(m.id, exp.into(), metric).await;
                assert_eq!(a.unwrap(), b.unwrap(), "seed {seed}");
            }
        }
    }
}

/// Histories the series does not keep (two Runs with one run_id, a Result
/// before its Run, a Run removed): once the store gives none it gives
/// none at every later tick, and while it gives one it is the reference.
#[tokio::test]
async fn a_history_it_cannot_keep_falls_back_for_good() {
    let cases: [&[&str]; 4] = [
        &["run r0", "run r0"],
        &["result r9", "run r9"],
        &["run r0", "remove-run r0"],
        &["run r0", "outcome-without-run"],
    ];
    for steps in cases {
        let dir = tempfile::tempdir().unwrap();
        let st: Arc<dyn Storage> =
            Arc::new(RedbStorage::open(&dir.path().join("l.redb"), RedbConfig::default()).unwrap());
        let mut w = World::create(st.clone(), registry(), "w").await.unwrap();
        let mut last = None;
        for step in steps {
            match step.split_once(' ').unwrap_or((step, "")) {
                ("run", id) => {
                    last = Some(w.spawn_with(&Run::new(id, "a")).unwrap());
                }
                ("result", id) => {
                    w.spawn_with(&EvalResult::new(id, "e", &json!({"loss": 1}), 0))
                        .unwrap();
                }
                ("remove-run", _) => w.remove::<Run>(last.unwrap()).unwrap(),
                _ => {
                    w.spawn_with(&Outcome::default()).unwrap();
                }
            }
            w.commit().await.unwrap();
        }
        assert!(
            !check(&st, w.id(), 0, false).await,
            "{steps:?}: the series is still kept"
        );
        w.spawn_with(&Run::new("fresh", "a")).unwrap();
        w.commit().await.unwrap();
        assert!(!check(&st, w.id(), 0, false).await, "{steps:?}");
        // Its entries are gone: nothing of the world is left in the tables.
        drop(w);
        drop(st);
        assert_eq!(entries(&dir.path().join("l.redb")), 0, "{steps:?}");
    }
}

#[tokio::test]
async fn forks_older_builds_and_deleted_worlds_keep_no_series() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    let id = {
        let st: Arc<dyn Storage> =
            Arc::new(RedbStorage::open(&path, RedbConfig::default()).unwrap());
        let mut w = World::create(st.clone(), registry(), "w").await.unwrap();
        for i in 0..5 {
            w.spawn_with(&Run::new(format!("r{i}"), "w")).unwrap();
            w.commit().await.unwrap();
        }
        assert!(check(&st, w.id(), 0, true).await);
        let fork = w.fork(Tick(3), "what-if").await.unwrap();
        assert_eq!(
            st.read_series(fork.id, "w".into(), None).await.unwrap(),
            None
        );
        let mut f = World::open_id(st.clone(), registry(), fork.id)
            .await
            .unwrap();
        f.spawn_with(&Run::new("f", "w")).unwrap();
        f.commit().await.unwrap();
        assert_eq!(
            st.read_series(fork.id, "w".into(), None).await.unwrap(),
            None
        );
        w.id()
    };
    // An older build appends: the world's head moves past the series'.
    {
        let db = Database::builder()
            .set_concurrency_mode(ConcurrencyMode::MultiWriter)
            .create(&path)
            .unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut head = txn.open_table(series::HEAD).unwrap();
            let mut bytes = head.get(id.0).unwrap().unwrap().value().to_vec();
            assert_eq!(
                bytes[0],
                series::VERSION,
                "the head starts with its version"
            );
            assert_eq!(bytes[1..9], 5u64.to_le_bytes());
            bytes[1..9].copy_from_slice(&4u64.to_le_bytes());
            head.insert(id.0, bytes.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let st: Arc<dyn Storage> = Arc::new(RedbStorage::open(&path, RedbConfig::default()).unwrap());
    assert_eq!(st.read_series(id, "w".into(), None).await.unwrap(), None);
    let mut w = World::open_id(st.clone(), registry(), id).await.unwrap();
    w.spawn_with(&Run::new("r5", "w")).unwrap();
    w.commit().await.unwrap();
    assert_eq!(st.read_series(id, "w".into(), None).await.unwrap(), None);
    assert_eq!(w.find_all::<Run>(|_| true).len(), 6);
    // The writer that found it stale deleted the world's entries.
    drop(w);
    drop(st);
    assert_eq!(entries(&path), 0);
}

/// The entries of the points and runs tables, over every world.
fn entries(path: &Path) -> usize {
    let db = Database::builder()
        .set_concurrency_mode(ConcurrencyMode::MultiWriter)
        .create(path)
        .unwrap();
    let txn = db.begin_read().unwrap();
    let points = txn.open_table(series::POINTS).unwrap();
    let runs = txn.open_table(series::RUNS).unwrap();
    let ids = txn.open_table(series::RUN_IDS).unwrap();
    let results = txn.open_table(series::RESULTS).unwrap();
    points.iter().unwrap().count()
        + runs.iter().unwrap().count()
        + ids.iter().unwrap().count()
        + results.iter().unwrap().count()
}

#[tokio::test]
async fn deleting_a_world_deletes_its_series() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    {
        let st: Arc<dyn Storage> =
            Arc::new(RedbStorage::open(&path, RedbConfig::default()).unwrap());
        let mut w = World::create(st.clone(), registry(), "w").await.unwrap();
        w.spawn_with(&Run::new("r0", "w")).unwrap();
        w.spawn_with(&EvalResult::new("r0", "e", &json!({"loss": 1}), 0))
            .unwrap();
        w.commit().await.unwrap();
        assert!(check(&st, w.id(), 0, true).await);
        let id = w.id();
        drop(w);
        st.delete_world(id).await.unwrap();
    }
    assert_eq!(entries(&path), 0);
}
