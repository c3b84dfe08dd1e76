//! The writer's small-tick path (update ticks that change the status of a
//! few runs) against the references: the current state against a recount,
//! the chart series against `series_of_state`, and the log against a
//! replay, when the ticks alternate between two handles on one file (so
//! that each writer's caches miss the other's ticks), and after reopening.

use super::*;
use autoresearch_core::current::{self, CurrentAnswer, CurrentRead};
use autoresearch_core::lifecycle::Outcome;
use autoresearch_core::series::{Series, series_of_state};
use autoresearch_core::{
    Change, EvalResult, OutcomeStatus, Run, RunStatus, Storage, TickRecord, World, ledger,
};
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

/// The store's series of both experiments equal the reference where the
/// store still keeps them (a random history removes Runs, which stops
/// them); how many it kept.
async fn check_kept_series(st: &Arc<dyn Storage>, world: WorldId, round: u64) -> usize {
    let head = st.world(world).await.unwrap().head;
    let state = ledger::state_at(st.as_ref(), world, head).await.unwrap();
    let mut kept = 0;
    for exp in ["a", "b"] {
        for metric in [None, Some("m")] {
            let metric = metric.map(str::to_string);
            if let Some(got) = st
                .read_series(world, exp.into(), metric.clone())
                .await
                .unwrap()
            {
                let want = series_of_state(&state, exp, metric.as_deref()).unwrap();
                assert_eq!(got, want, "round {round}, tick {head}, {exp} {metric:?}");
                kept += 1;
            }
        }
    }
    kept
}

/// Ticks that change only the status of runs (crossing `crashed` and
/// back), with a few that change a run's commit (the path that reads the
/// point and its Results), written alternately through two handles of one
/// file, some staged several to an append: the current state, the series
/// and every Run read back equal their references, before and after the
/// file is reopened.
/// Two handles (each with its own writer thread) on one new ledger file
/// in `dir`.
fn two_handles(dir: &Path) -> (Arc<dyn Storage>, Arc<dyn Storage>) {
    let path = dir.join("l.redb");
    let open = || -> Arc<dyn Storage> {
        Arc::new(RedbStorage::open(&path, RedbConfig::default()).unwrap())
    };
    (open(), open())
}

#[tokio::test]
async fn status_ticks_through_two_handles_equal_the_references() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_handles(dir.path());
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
    let st: Arc<dyn Storage> =
        Arc::new(RedbStorage::open(&dir.path().join("l.redb"), RedbConfig::default()).unwrap());
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

/// Random ticks (runs, Outcomes, costs, Results, Votes, despawns) written
/// through two handles of one file in turns of one to four ticks, so that
/// what each writer thread remembers between its transactions (pending
/// changes, the values it last wrote, anything kept per world) is valid
/// for a few ticks, then misses the other handle's. The current state and
/// the series equal their references (a replay of the log) after every
/// turn and after reopening.
#[tokio::test]
async fn random_ticks_in_turns_of_two_handles_equal_the_references() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_handles(dir.path());
    let reg = registry();
    let mut wa = World::create(a.clone(), reg.clone(), "autoresearch:a")
        .await
        .unwrap();
    let mut wb = World::open(b.clone(), reg.clone(), "autoresearch:a")
        .await
        .unwrap();
    let world = wa.id();
    let mut rng = Rng(77);
    let (mut live, mut n) = (Vec::new(), 0);
    let mut series = 0;
    for turn in 0..24u64 {
        let (w, st) = if turn % 2 == 0 {
            (&mut wa, &a)
        } else {
            (&mut wb, &b)
        };
        w.refresh().await.unwrap();
        for _ in 0..1 + rng.below(4) {
            current_tests::random_tick(w, &mut rng, &mut live, &mut n);
            w.commit().await.unwrap();
        }
        check_current(st, world, &mut rng, turn).await;
        series += check_kept_series(st, world, turn).await;
    }
    // The series was kept for some turns at least.
    assert!(series > 0);
    let head = a.world(world).await.unwrap().head;
    drop((wa, wb, a, b));
    let st: Arc<dyn Storage> =
        Arc::new(RedbStorage::open(&dir.path().join("l.redb"), RedbConfig::default()).unwrap());
    assert_eq!(st.world(world).await.unwrap().head, head);
    check_current(&st, world, &mut rng, 99).await;
    check_kept_series(&st, world, 99).await;
}

/// One tick of raw changes.
fn record(tick: u64, changes: Vec<Change>) -> TickRecord {
    TickRecord {
        tick: Tick(tick),
        at_ms: 0,
        changes,
    }
}

/// A writer that changed a run in its last ticks must not take it for
/// alive, nor its values for current, once another handle has written:
/// after the other handle despawned one run and gave another a pending
/// Outcome, the first writer refuses a change to the despawned run, and
/// its change to the other run keeps the other handle's Outcome in the
/// current state.
#[tokio::test]
async fn a_writers_memory_of_a_run_ends_when_another_handle_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_handles(dir.path());
    let reg = registry();
    let info = a.create_world("autoresearch:a").await.unwrap();
    let world = info.id;
    let run = |i: u64, status: RunStatus| {
        let mut r = Run::new(format!("r{i}"), "a");
        r.set_status(status);
        reg.encode(&r).unwrap()
    };
    let set = |e: u64, (component, value): (String, Vec<u8>)| Change::Set {
        entity: EntityId(e),
        component,
        value,
    };
    let mut spawns = Vec::new();
    for e in 0..4 {
        spawns.push(Change::Spawn {
            entity: EntityId(e),
        });
        spawns.push(set(e, run(e, RunStatus::Booting)));
    }
    a.append(world, record(1, spawns), None).await.unwrap();
    // Through `a`, twice: the second tick finds the runs in `a`'s memory.
    for tick in [2, 3] {
        let changes = (0..4).map(|e| set(e, run(e, RunStatus::Running))).collect();
        a.append(world, record(tick, changes), None).await.unwrap();
    }
    // Through `b`: run 0 despawned, run 1 gets a pending Outcome.
    let outcome = Outcome {
        run_id: "r1".into(),
        status: OutcomeStatus::Pending,
        comparator: "scalar:m:min".into(),
        ..Outcome::default()
    };
    let changes = vec![
        Change::Despawn {
            entity: EntityId(0),
        },
        set(1, reg.encode(&outcome).unwrap()),
    ];
    b.append(world, record(4, changes), None).await.unwrap();
    // Through `a` again: run 0 is not alive.
    let stale = vec![set(0, run(0, RunStatus::Stopped))];
    match a.append(world, record(5, stale), None).await {
        Err(StorageError::NotApplicable { entity, .. }) => assert_eq!(entity, EntityId(0)),
        other => panic!("a change to a despawned run was not refused: {other:?}"),
    }
    let changes = vec![set(1, run(1, RunStatus::Stopped))];
    a.append(world, record(5, changes), None).await.unwrap();
    let mut rng = Rng(5);
    check_current(&a, world, &mut rng, 5).await;
    check_current(&b, world, &mut rng, 5).await;
    // The Outcome `b` set is in the state `a` computed.
    let read = CurrentRead::Keyed {
        index: current::PENDING.into(),
        key: "a".into(),
        prefix: false,
        newest_first: false,
        limit: None,
    };
    let view = a.read_current(world, vec![read]).await.unwrap().unwrap();
    assert_eq!(view.tick, Tick(5));
    assert_eq!(
        view.answers,
        vec![CurrentAnswer::Keys(vec![("a".into(), EntityId(1))])]
    );
}
