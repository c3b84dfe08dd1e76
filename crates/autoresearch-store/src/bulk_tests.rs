//! A bulk tick (an ingest: the current state's keys folded sorted at
//! once, the series' batch gathered in a vector, the record encoded on a
//! thread of its own) against the same changes in small ticks (the
//! pending overlay, one small record at a time), and both against the
//! recount from the world materialized at its head.

use super::*;
use autoresearch_core::current::{self, CurrentAnswer, CurrentRead, answer_from_state};
use autoresearch_core::series::series_of_state;
use autoresearch_core::{
    EvalResult, OutcomeStatus, Run, RunStatus, Storage, World, ledger, lifecycle::Outcome,
};
use serde_json::json;
use std::sync::Arc;

use crate::test_support::{Rng, registry};

/// Runs in the bulk tick: more than `current::pending::FOLD_NOW` changes.
const RUNS: u64 = 2_600;

/// One change of the history, to run `i` (`0..RUNS`).
#[derive(Clone)]
enum Step {
    Spawn(u64),
    Status(u64, RunStatus),
    Outcome(u64, OutcomeStatus),
    Result(u64, f64),
}

fn run(i: u64, status: RunStatus) -> Run {
    let mut run = Run::new(
        format!("{:08x}-{i}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32),
        if i.is_multiple_of(3) { "a" } else { "b" },
    );
    run.commit_hash = format!("c{}", i % 7);
    run.set_status(status);
    run
}

/// The ingest: every run spawned (some then changed in the same tick),
/// with Outcomes and Results (one before its run is spawned).
fn ingest(rng: &mut Rng) -> Vec<Step> {
    let statuses = [RunStatus::Running, RunStatus::Stopped, RunStatus::Crashed];
    let mut steps = vec![Step::Result(5, 0.25)];
    for i in 0..RUNS {
        steps.push(Step::Spawn(i));
        match rng.below(6) {
            0 => steps.push(Step::Status(i, *rng.pick(&statuses))),
            1 => steps.push(Step::Outcome(i, OutcomeStatus::Keep)),
            2 => steps.push(Step::Result(i, rng.below(1000) as f64 / 8.0)),
            _ => {}
        }
    }
    steps
}

/// A second bulk tick: most runs change status (keys leave and join the
/// main tables), some get an Outcome or a Result.
fn changes(rng: &mut Rng) -> Vec<Step> {
    let statuses = [
        RunStatus::Booting,
        RunStatus::Running,
        RunStatus::Stopped,
        RunStatus::Crashed,
    ];
    let mut steps = Vec::new();
    for i in 0..RUNS {
        match rng.below(8) {
            0 => steps.push(Step::Outcome(i, OutcomeStatus::Discard)),
            1 => steps.push(Step::Result(i, rng.below(1000) as f64)),
            _ => steps.push(Step::Status(i, *rng.pick(&statuses))),
        }
    }
    steps
}

/// Plays `steps` on `w`, committing every `per_commit` steps (and at the
/// end). `runs` maps a run to its entity.
async fn play(w: &mut World, steps: &[Step], per_commit: usize, runs: &mut [Option<EntityId>]) {
    for (n, step) in steps.iter().enumerate() {
        match step.clone() {
            Step::Spawn(i) => {
                let e = w.spawn_with(&run(i, RunStatus::Booting)).unwrap();
                runs[i as usize] = Some(e);
            }
            Step::Status(i, status) => {
                let e = runs[i as usize].unwrap();
                w.insert_owned(e, run(i, status)).unwrap();
            }
            Step::Outcome(i, status) => {
                let e = runs[i as usize].unwrap();
                let outcome = Outcome {
                    run_id: run(i, RunStatus::Running).run_id,
                    status,
                    comparator: "scalar:loss:min".into(),
                    ..Outcome::default()
                };
                w.insert(e, &outcome).unwrap();
            }
            Step::Result(i, loss) => {
                let run_id = run(i, RunStatus::Running).run_id;
                let outputs = json!({"loss": loss, "_meta": {"commit": format!("c{}", i % 7)}});
                w.spawn_with(&EvalResult::new(&run_id, "eval", &outputs, 0))
                    .unwrap();
            }
        }
        if (n + 1) % per_commit == 0 {
            w.commit().await.unwrap();
        }
    }
    w.commit().await.unwrap();
}

/// Tallies compared by what they say (sums by value, not by partials).
fn normalized(a: &CurrentAnswer) -> String {
    match a {
        CurrentAnswer::Tally(t) => format!(
            "{:?} runs {} cost {:?}",
            t.experiments,
            t.cost.runs,
            t.cost.to_cost()
        ),
        other => format!("{other:?}"),
    }
}

fn reads() -> Vec<CurrentRead> {
    let mut reads = vec![CurrentRead::Tally];
    for c in ["Run", "Outcome", "Result"] {
        reads.push(CurrentRead::Values {
            component: c.into(),
            newest_first: false,
            before: None,
            limit: None,
        });
    }
    for (index, key, prefix) in [
        (current::BY_EXPERIMENT, "a", false),
        (current::BY_EXPERIMENT, "b", false),
        (current::ACTIVE, "a", false),
        (current::ACTIVE, "b", false),
        (current::PENDING, "b", false),
        (current::BY_RUN_ID, "", true),
        (current::RESULT_OF, "", true),
    ] {
        reads.push(CurrentRead::Keyed {
            index: index.into(),
            key: key.into(),
            prefix,
            newest_first: false,
            limit: None,
        });
    }
    reads
}

/// What the store answers of world `w`'s current state and series, each
/// checked against the recount at its head.
async fn answers(st: &Arc<dyn Storage>, w: WorldId) -> (Vec<String>, Vec<String>) {
    let head = st.world(w).await.unwrap().head;
    let state = ledger::state_at(st.as_ref(), w, head).await.unwrap();
    let reads = reads();
    let want = answer_from_state(&state, &reads).unwrap();
    let got = st.read_current(w, reads.clone()).await.unwrap().unwrap();
    assert_eq!(got.tick, head);
    let got: Vec<String> = got.answers.iter().map(normalized).collect();
    let want: Vec<String> = want.iter().map(normalized).collect();
    assert_eq!(got, want, "current state of {w} at {head}");
    let mut series = Vec::new();
    for exp in ["a", "b"] {
        for metric in [None, Some("loss")] {
            let got = st
                .read_series(w, exp.into(), metric.map(str::to_string))
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{w} keeps no series"));
            let want = series_of_state(&state, exp, metric).unwrap();
            assert_eq!(got, want, "series of {w} at {head}, {exp} {metric:?}");
            series.push(format!("{:?}", got.points));
        }
    }
    (got, series)
}

/// The same history as bulk ticks (folded at once, nothing pending), as
/// small ticks (kept pending, folded every 33rd) and as small ticks then
/// a bulk one (folded with what is pending): equal answers, each equal
/// to the recount.
#[tokio::test]
async fn a_bulk_tick_equals_the_same_changes_in_small_ticks() {
    let dir = tempfile::tempdir().unwrap();
    let redb =
        Arc::new(RedbStorage::open(&dir.path().join("l.redb"), RedbConfig::default()).unwrap());
    let st: Arc<dyn Storage> = redb.clone();
    let mut rng = Rng(19);
    let first = ingest(&mut rng);
    let second = changes(&mut rng);
    let mut results = Vec::new();
    for (name, per_commit, second_per_commit) in [
        ("bulk", usize::MAX, usize::MAX),
        ("small", 40, 40),
        ("small-then-bulk", 40, usize::MAX),
    ] {
        let mut w = World::create(st.clone(), registry(), name).await.unwrap();
        let mut runs = vec![None; RUNS as usize];
        play(&mut w, &first, per_commit, &mut runs).await;
        let after_first = answers(&st, w.id()).await;
        // A few small ticks: the last bulk tick meets pending changes.
        let touch = [3u64, 4, 5];
        let small: Vec<Step> = touch
            .iter()
            .map(|&i| Step::Status(i, RunStatus::Stopped))
            .collect();
        play(&mut w, &small, 1, &mut runs).await;
        play(&mut w, &second, second_per_commit, &mut runs).await;
        let after_second = answers(&st, w.id()).await;
        results.push((name, after_first, after_second));
    }
    for (name, first, second) in &results[1..] {
        assert_eq!(first, &results[0].1, "{name} after the ingest");
        assert_eq!(second, &results[0].2, "{name} after the changes");
    }
    // The bulk world's ingest record was large enough to be encoded on a
    // thread of its own, and reads back whole (the recount above read it).
    let bulk = st.find_world("bulk").await.unwrap().unwrap();
    let records = st
        .read_own_records(bulk.id, Tick(1), Tick(1))
        .await
        .unwrap();
    assert!(estimated_bytes(&records[0].changes) >= ENCODE_APART_FROM);
}

/// A record encoded apart whose encoding failed (or whose thread
/// panicked) is an error that aborts the whole transaction, naming the
/// world and tick; one encoded in place is there at once.
#[test]
fn a_failed_encoding_apart_is_an_abort_naming_the_record() {
    let record = TickRecord {
        tick: Tick(4),
        at_ms: 0,
        changes: vec![autoresearch_core::Change::Spawn {
            entity: EntityId(1),
        }],
    };
    let mut a = EncodedAppend::new(WorldId(7), record, None).unwrap();
    let whole = a.record().ok().map(<[u8]>::to_vec).unwrap();
    assert!(!whole.is_empty());
    assert!(a.bytes() >= whole.len());
    for job in [
        (|| Err("refused".to_string())) as fn() -> Result<Vec<u8>, String>,
        || panic!("encoder down"),
    ] {
        a.record = RecordBytes::running(std::thread::spawn(job));
        for _ in 0..2 {
            match a.record() {
                Err(Failure::Aborted(StorageError::Backend { context, source })) => {
                    assert!(context.contains("record of world#7 tick 4"), "{context}");
                    let reason = source.to_string();
                    assert!(
                        reason == "refused" || reason.contains("panicked"),
                        "{reason}"
                    );
                }
                Err(_) => panic!("not an abort"),
                Ok(_) => panic!("a failed encoding gave bytes"),
            }
        }
    }
}
