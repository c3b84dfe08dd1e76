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
use std::collections::HashMap;
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
/// whose status, commit, run_id and Outcome change, Results (several per
/// run, on the final commit, an earlier one or none, some without the
/// metric, some not JSON, some before their run, some of no run) that
/// come, change and go.
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
                // Mostly a run's, sometimes one the next run will take (a
                // Result before its Run) or one no run has.
                let run_id = match rng.below(8) {
                    0 => format!("r{}", runs.len()),
                    1 => "nobody".to_string(),
                    _ => rng.pick(runs).1.run_id.clone(),
                };
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
                let fresh = format!("r{i}-{}", rng.next() % 1000);
                let taken = runs.iter().any(|(_, r)| r.run_id == fresh);
                let (e, run) = &mut runs[i];
                run.set_status(*rng.pick(&statuses));
                match rng.below(4) {
                    0 => run.commit_hash = rng.pick(&commits).to_string(),
                    // Another run_id no run has: its Results leave it, those
                    // of the new one join it.
                    1 if !taken => run.run_id = fresh,
                    _ => {}
                }
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
    for seed in [3u64, 11, 23, 42, 2024, 77777] {
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

/// Plays one tick: its actions separated by `;`, each `VERB RUN_ID ...`:
/// `run ID [EXPERIMENT] [COMMIT]`, `result ID [COMMIT]` (a Result of
/// `loss` = how many Results came before), `status ID STATUS`, `commit
/// ID COMMIT`, `rename ID NEW`, `move ID EXPERIMENT`, `remove-run ID`,
/// `despawn ID`, `outcome-without-run`. `runs` maps a run_id to the
/// entity and value of its newest Run.
fn play(w: &mut World, runs: &mut HashMap<String, (EntityId, Run)>, results: &mut u32, tick: &str) {
    for action in tick.split(';').map(str::trim) {
        let words: Vec<&str> = action.split(' ').collect();
        let mut change = |f: &dyn Fn(&mut Run)| {
            let (e, run) = runs.get_mut(words[1]).unwrap();
            f(run);
            w.insert(*e, &*run).unwrap();
        };
        match words[0] {
            "run" => {
                let mut run = Run::new(words[1], words.get(2).copied().unwrap_or("a"));
                run.commit_hash = words.get(3).copied().unwrap_or("").to_string();
                let e = w.spawn_with(&run).unwrap();
                runs.insert(words[1].to_string(), (e, run));
            }
            "result" => {
                let outputs = match words.get(2) {
                    Some(c) => json!({"loss": *results, "_meta": {"commit": c}}),
                    None => json!({"loss": *results}),
                };
                *results += 1;
                w.spawn_with(&EvalResult::new(words[1], "e", &outputs, 0))
                    .unwrap();
            }
            "status" => change(&|r| r.set_status(words[2].parse().unwrap())),
            "commit" => change(&|r| r.commit_hash = words.get(2).copied().unwrap_or("").into()),
            "move" => change(&|r| r.experiment_name = words[2].to_string()),
            "rename" => {
                change(&|r| r.run_id = words[2].to_string());
                let run = runs.remove(words[1]).unwrap();
                runs.insert(words[2].to_string(), run);
            }
            "remove-run" => w.remove::<Run>(runs[words[1]].0).unwrap(),
            "despawn" => w.despawn(runs[words[1]].0).unwrap(),
            "outcome-without-run" => {
                w.spawn_with(&Outcome::default()).unwrap();
            }
            other => panic!("unknown action {other}"),
        }
    }
}

/// Histories the series keeps, checked against the reference after
/// every tick: Results before and after their Run (and its status
/// change), in one tick with it, of a run_id no run has (joining none
/// until a Run takes it), a run whose commit or run_id changes after it
/// has Results; two runs with one run_id that no Result has.
#[tokio::test]
async fn results_join_the_run_that_has_their_run_id_now() {
    let cases: &[&[&str]] = &[
        &["result r9", "run r9", "status r9 running", "result r9"],
        &["run r0", "result r0", "status r0 stopping", "result r0"],
        &[
            "run r0",
            "status r0 crashed",
            "result r0",
            "status r0 booting",
        ],
        &["run r0; result r0; status r0 crashed; result r0"],
        &["run r0", "result ghost", "result ghost", "run ghost b"],
        // Two runs with one run_id that no Result has: no point depends
        // on which one a Result would join.
        &[
            "run r0",
            "run r0",
            "status r0 crashed",
            "run r1 b",
            "run r1",
        ],
        &[
            "run r0 a c1",
            "result r0 c1; result r0 c2; result r0",
            "commit r0 c2",
            "result r0 c2",
            "commit r0",
            "commit r0 c1",
        ],
        &[
            "run r0",
            "result r0; result r1",
            "rename r0 r1",
            "run r0",
            "rename r1 r2; rename r0 r1",
        ],
    ];
    for steps in cases {
        let dir = tempfile::tempdir().unwrap();
        let st: Arc<dyn Storage> =
            Arc::new(RedbStorage::open(&dir.path().join("l.redb"), RedbConfig::default()).unwrap());
        let mut w = World::create(st.clone(), registry(), "w").await.unwrap();
        let (mut runs, mut results) = (HashMap::new(), 0);
        for tick in *steps {
            play(&mut w, &mut runs, &mut results, tick);
            w.commit().await.unwrap();
            assert!(check(&st, w.id(), 0, true).await, "{steps:?} at {tick}");
        }
    }
}

/// Histories the series does not keep (two Runs with one run_id in one
/// tick, or with one that Results have, a run_id changed to such a one, a
/// Run removed or moved to another experiment, an Outcome without a Run):
/// once the store gives none it gives none at every later tick, and its
/// entries are gone.
#[tokio::test]
async fn a_history_it_cannot_keep_falls_back_for_good() {
    let cases: &[&[&str]] = &[
        &["run r0", "run r0", "result r0"],
        &["run r0", "result r0", "run r0"],
        &["run r0; run r0"],
        &["run r0", "run r1; run r1"],
        &["run r0", "result r0", "run r1", "rename r1 r0"],
        &["result r1", "run r0", "run r1", "rename r0 r1"],
        &["run r0", "result r0", "remove-run r0"],
        &["run r0", "despawn r0"],
        &["run r0", "move r0 b"],
        &["run r0", "outcome-without-run"],
    ];
    for steps in cases {
        let dir = tempfile::tempdir().unwrap();
        let st: Arc<dyn Storage> =
            Arc::new(RedbStorage::open(&dir.path().join("l.redb"), RedbConfig::default()).unwrap());
        let mut w = World::create(st.clone(), registry(), "w").await.unwrap();
        let (mut runs, mut results) = (HashMap::new(), 0);
        for tick in *steps {
            play(&mut w, &mut runs, &mut results, tick);
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

/// A ledger whose root world `w` has five runs (one crashed, one with a
/// Result) and a fork at tick 3 with one more: the root keeps its series,
/// the fork none.
async fn five_runs_and_a_fork(path: &Path) -> WorldId {
    let st: Arc<dyn Storage> = Arc::new(RedbStorage::open(path, RedbConfig::default()).unwrap());
    let mut w = World::create(st.clone(), registry(), "w").await.unwrap();
    for i in 0..5 {
        let mut run = Run::new(format!("r{i}"), "w");
        if i == 0 {
            run.set_status(RunStatus::Crashed);
            w.spawn_with(&EvalResult::new("r0", "e", &json!({"loss": 1}), 0))
                .unwrap();
        }
        w.spawn_with(&run).unwrap();
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
}

/// Forks keep no series; nor does a world appended to by a build that
/// keeps neither its current state nor its series (its current state's
/// tick is behind its head), nor one whose head entry is of another
/// version: reads give none, and the next append deletes its entries.
#[tokio::test]
async fn forks_older_builds_and_other_versions_keep_no_series() {
    for case in ["older build", "other version"] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.redb");
        let id = five_runs_and_a_fork(&path).await;
        {
            let db = Database::builder()
                .set_concurrency_mode(ConcurrencyMode::MultiWriter)
                .create(&path)
                .unwrap();
            let txn = db.begin_write().unwrap();
            if case == "older build" {
                // It appended tick 5 without keeping the current state
                // (which it kept in the layout before the state row).
                assert_eq!(current::to_previous_layout(&txn, id.0), 5);
                txn.open_table(current::HEAD)
                    .unwrap()
                    .insert(id.0, 4)
                    .unwrap();
            } else {
                let mut head = txn.open_table(series::HEAD).unwrap();
                let mut bytes = head.get(id.0).unwrap().unwrap().value().to_vec();
                assert_eq!(
                    bytes[0],
                    series::VERSION,
                    "the head starts with its version"
                );
                bytes[0] = 2;
                head.insert(id.0, bytes.as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        assert!(entries(&path) > 0, "{case}");
        let st: Arc<dyn Storage> =
            Arc::new(RedbStorage::open(&path, RedbConfig::default()).unwrap());
        assert_eq!(st.read_series(id, "w".into(), None).await.unwrap(), None);
        let mut w = World::open_id(st.clone(), registry(), id).await.unwrap();
        w.spawn_with(&Run::new("r5", "w")).unwrap();
        w.commit().await.unwrap();
        assert_eq!(st.read_series(id, "w".into(), None).await.unwrap(), None);
        assert_eq!(w.find_all::<Run>(|_| true).len(), 6);
        // The writer that found it not kept deleted the world's entries.
        drop(w);
        drop(st);
        assert_eq!(entries(&path), 0, "{case}");
    }
}

/// The entries of the points, crashed, runs and results tables, over
/// every world.
fn entries(path: &Path) -> usize {
    let db = Database::builder()
        .set_concurrency_mode(ConcurrencyMode::MultiWriter)
        .create(path)
        .unwrap();
    let txn = db.begin_read().unwrap();
    let points = txn.open_table(series::POINTS).unwrap();
    let crashed = txn.open_table(series::CRASHED).unwrap();
    let runs = txn.open_table(series::RUNS).unwrap();
    let results = txn.open_table(series::RESULTS).unwrap();
    points.iter().unwrap().count()
        + crashed.iter().unwrap().count()
        + runs.iter().unwrap().count()
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

/// Every entry of each series table, as text, by table.
fn dump(path: &Path) -> Vec<(&'static str, Vec<String>)> {
    let db = Database::builder()
        .set_concurrency_mode(ConcurrencyMode::MultiWriter)
        .create(path)
        .unwrap();
    let txn = db.begin_read().unwrap();
    fn all<K: redb::Key + 'static, V: redb::Value + 'static>(
        txn: &ReadTransaction,
        def: redb::TableDefinition<K, V>,
    ) -> Vec<String>
    where
        for<'a> K::SelfType<'a>: std::fmt::Debug,
        for<'a> V::SelfType<'a>: std::fmt::Debug,
    {
        let table = txn.open_table(def).unwrap();
        table
            .iter()
            .unwrap()
            .map(|e| {
                let (k, v) = e.unwrap();
                format!("{:?} {:?}", k.value(), v.value())
            })
            .collect()
    }
    vec![
        ("head", all(&txn, series::HEAD)),
        ("points", all(&txn, series::POINTS)),
        ("crashed", all(&txn, series::CRASHED)),
        ("runs", all(&txn, series::RUNS)),
        ("results", all(&txn, series::RESULTS)),
    ]
}

/// A tick that changes no point leaves every series table as it was (a
/// status change that does not cross `crashed`); one that crashes a run
/// changes its block's crashed bitmap alone; a Result changes its run's
/// point and record, not the bitmaps.
#[tokio::test]
async fn a_tick_changes_only_what_its_points_need() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    let (mut runs, mut results) = (HashMap::new(), 0);
    let id = {
        let st: Arc<dyn Storage> =
            Arc::new(RedbStorage::open(&path, RedbConfig::default()).unwrap());
        let mut w = World::create(st.clone(), registry(), "w").await.unwrap();
        play(&mut w, &mut runs, &mut results, "run r0; run r1 b; run r2");
        w.commit().await.unwrap();
        play(
            &mut w,
            &mut runs,
            &mut results,
            "status r0 running; status r1 crashed",
        );
        w.commit().await.unwrap();
        w.id()
    };
    let mut before = dump(&path);
    for (tick, changed) in [
        ("status r0 stopping; status r2 stopped", &[][..]),
        ("status r0 crashed", &["crashed"][..]),
        ("result r2", &["head", "points", "runs", "results"][..]),
        (
            "status r1 running; status r0 stopped; status r2 running",
            &["crashed"][..],
        ),
    ] {
        {
            let st: Arc<dyn Storage> =
                Arc::new(RedbStorage::open(&path, RedbConfig::default()).unwrap());
            let mut w = World::open_id(st.clone(), registry(), id).await.unwrap();
            play(&mut w, &mut runs, &mut results, tick);
            w.commit().await.unwrap();
            assert!(check(&st, id, 0, true).await, "{tick}");
        }
        let after = dump(&path);
        let differ: Vec<&str> = before
            .iter()
            .zip(&after)
            .filter(|(a, b)| a != b)
            .map(|(a, _)| a.0)
            .collect();
        assert_eq!(differ, changed, "{tick}");
        before = after;
    }
}

/// A file with version 2's run-id table (`series_run_ids`) loses it on
/// its next read-write open, and its worlds' series of version 2 are not
/// read.
#[tokio::test]
async fn opening_drops_the_old_run_id_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    let id = five_runs_and_a_fork(&path).await;
    {
        let db = Database::builder()
            .set_concurrency_mode(ConcurrencyMode::MultiWriter)
            .create(&path)
            .unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(series::OLD_RUN_IDS)
            .unwrap()
            .insert((id.0, "r0"), 1)
            .unwrap();
        let mut head = txn.open_table(series::HEAD).unwrap();
        let mut bytes = head.get(id.0).unwrap().unwrap().value().to_vec();
        bytes[0] = 2;
        head.insert(id.0, bytes.as_slice()).unwrap();
        drop(head);
        txn.commit().unwrap();
    }
    let st: Arc<dyn Storage> = Arc::new(RedbStorage::open(&path, RedbConfig::default()).unwrap());
    assert_eq!(st.read_series(id, "w".into(), None).await.unwrap(), None);
    drop(st);
    let db = Database::builder()
        .set_concurrency_mode(ConcurrencyMode::MultiWriter)
        .create(&path)
        .unwrap();
    let txn = db.begin_read().unwrap();
    let tables: Vec<String> = txn
        .list_tables()
        .unwrap()
        .map(|t| redb::TableHandle::name(&t).to_string())
        .collect();
    assert!(tables.iter().any(|t| t == "series_points"), "{tables:?}");
    assert!(!tables.iter().any(|t| t == "series_run_ids"), "{tables:?}");
}
