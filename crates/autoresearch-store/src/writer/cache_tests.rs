//! The writer thread's caches across processes: two handles on one ledger
//! file (two writer threads, each with its own `LastSets` and
//! `ChunkTicks`, as two processes have) append to one world in turn,
//! sometimes one tick, sometimes a run of them. Whatever one writer
//! remembers of the values and entities it wrote, the other has since
//! changed: every read through either handle must equal a recount.

use crate::test_support::{Rng, registry};
use crate::{RedbConfig, RedbStorage};
use autoresearch_core::current::{CurrentRead, answer_from_state};
use autoresearch_core::series::series_of_state;
use autoresearch_core::{
    EntityId, EvalResult, OutcomeStatus, Run, RunStatus, Storage, Tick, World, WorldId, ledger,
    lifecycle::Outcome,
};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What the test set: each run's value, and the live Results.
#[derive(Default)]
struct Model {
    runs: BTreeMap<EntityId, Run>,
    results: Vec<EntityId>,
}

/// One tick of random changes to `w`, noted in `model`: status changes
/// (stored as deltas of the run's last value), Outcomes, new runs, Results
/// that join runs and Results that go.
fn random_tick(w: &mut World, rng: &mut Rng, model: &mut Model) {
    let statuses = [
        RunStatus::Booting,
        RunStatus::Running,
        RunStatus::Stopped,
        RunStatus::Crashed,
    ];
    for _ in 0..1 + rng.below(8) {
        let runs: Vec<EntityId> = model.runs.keys().copied().collect();
        match rng.below(10) {
            0 => {
                let n = model.runs.len();
                let mut run = Run::new(format!("r{n}"), *rng.pick(&["a", "b"]));
                run.task = "a task long enough to be stored as deltas".into();
                let e = w.spawn_with(&run).unwrap();
                model.runs.insert(e, run);
            }
            1 => {
                let e = *rng.pick(&runs);
                let run_id = model.runs[&e].run_id.clone();
                let loss = rng.below(1000) as f64 / 8.0;
                let r = EvalResult::new(&run_id, "eval", &json!({ "loss": loss }), 0);
                model.results.push(w.spawn_with(&r).unwrap());
            }
            2 if !model.results.is_empty() => {
                let i = rng.below(model.results.len() as u64) as usize;
                w.despawn(model.results.swap_remove(i)).unwrap();
            }
            3 => {
                let e = *rng.pick(&runs);
                let status = rng.pick(&[OutcomeStatus::Keep, OutcomeStatus::Discard]);
                let outcome = Outcome {
                    run_id: model.runs[&e].run_id.clone(),
                    status: status.clone(),
                    comparator: "scalar:loss:min".into(),
                    ..Outcome::default()
                };
                w.insert(e, &outcome).unwrap();
            }
            _ => {
                let e = *rng.pick(&runs);
                let run = model.runs.get_mut(&e).unwrap();
                run.set_status(*rng.pick(&statuses));
                w.insert(e, &*run).unwrap();
            }
        }
    }
}

/// Every read of `st` against the recount at the world's head: the runs'
/// values against `model`, the current state against
/// `answer_from_state`, the series against `series_of_state`, and the
/// ticks that changed a few entities against the records.
async fn check(st: &Arc<dyn Storage>, world: WorldId, model: &Model, what: &str) {
    let head = st.world(world).await.unwrap().head;
    let state = ledger::state_at(st.as_ref(), world, head).await.unwrap();
    let reg = registry();
    for (e, run) in &model.runs {
        let bytes = &state.entities[e]["Run"];
        let stored: Run = reg.decode(world, bytes).unwrap();
        assert_eq!(&stored, run, "{what}: {e}'s Run at tick {head}");
    }
    let mut reads = vec![CurrentRead::Tally];
    for c in ["Run", "Outcome", "Result"] {
        reads.push(CurrentRead::Values {
            component: c.into(),
            newest_first: false,
            before: None,
            limit: None,
        });
    }
    for (index, key) in [("active", "a"), ("active", "b"), ("experiment", "a")] {
        reads.push(CurrentRead::Keyed {
            index: index.into(),
            key: key.into(),
            prefix: false,
            newest_first: false,
            limit: None,
        });
    }
    let want = answer_from_state(&state, &reads).unwrap();
    let got = st
        .read_current(world, reads.clone())
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{what}: no current state at tick {head}"));
    assert_eq!(got.tick, head, "{what}");
    for ((r, g), w) in reads.iter().zip(&got.answers).zip(&want) {
        assert_eq!(
            format!("{g:?}"),
            format!("{w:?}"),
            "{what}, tick {head}, {r:?}"
        );
    }
    for exp in ["a", "b"] {
        for metric in [None, Some("loss")] {
            let got = st
                .read_series(world, exp.into(), metric.map(str::to_string))
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{what}: no series at tick {head}"));
            let want = series_of_state(&state, exp, metric).unwrap();
            assert_eq!(got, want, "{what}, tick {head}, {exp} {metric:?}");
        }
    }
    let records = ledger::read_records(st.as_ref(), world, Tick(1), head)
        .await
        .unwrap();
    for e in model.runs.keys().take(6) {
        let want: Vec<Tick> = records
            .iter()
            .filter(|r| r.changes.iter().any(|c| c.entity() == *e))
            .map(|r| r.tick)
            .collect();
        let got = st.own_entity_ticks(world, *e, head).await.unwrap();
        assert_eq!(got, want, "{what}, tick {head}: ticks that changed {e}");
    }
}

/// Two writers on one ledger file take turns on one world (runs of one to
/// five ticks each, some staged together), across entity-index chunks;
/// after every turn both handles read what a recount gives.
#[tokio::test]
async fn two_writers_taking_turns_on_one_world_read_as_a_recount() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    let a: Arc<dyn Storage> = Arc::new(RedbStorage::open(&path, RedbConfig::default()).unwrap());
    let b: Arc<dyn Storage> = Arc::new(RedbStorage::open(&path, RedbConfig::default()).unwrap());
    let mut rng = Rng(19);
    let mut model = Model::default();
    let mut wa = World::create(a.clone(), registry(), "autoresearch:a")
        .await
        .unwrap();
    for i in 0..40 {
        let mut run = Run::new(format!("r{i}"), if i % 2 == 0 { "a" } else { "b" });
        run.task = "a task long enough to be stored as deltas".into();
        let e = wa.spawn_with(&run).unwrap();
        model.runs.insert(e, run);
    }
    wa.commit().await.unwrap();
    let id = wa.id();
    let mut wb = World::open_id(b.clone(), registry(), id).await.unwrap();
    let mut turn = 0u64;
    while wa.tick().0.max(wb.tick().0) < 150 {
        let (w, name) = if turn.is_multiple_of(2) {
            (&mut wa, "a")
        } else {
            (&mut wb, "b")
        };
        w.refresh().await.unwrap();
        for _ in 0..1 + rng.below(5) {
            random_tick(w, &mut rng, &mut model);
            if rng.below(3) == 0 {
                w.stage().unwrap();
            } else {
                w.commit().await.unwrap();
            }
        }
        w.commit().await.unwrap();
        let what = format!("turn {turn} (writer {name})");
        check(&a, id, &model, &what).await;
        check(&b, id, &model, &what).await;
        turn += 1;
    }
}
