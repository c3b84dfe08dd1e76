//! The current state the store keeps (`current`) against the reference:
//! the same reads answered from the world materialized at its head
//! (`autoresearch_core::current::answer_from_state`), after random
//! histories; and the fall back (no answer) for forks and for ledgers
//! written without it.

use super::*;
use autoresearch_core::current::{self, CurrentAnswer, CurrentRead, answer_from_state};
use autoresearch_core::{
    Confirmation, Description, EvalResult, OutcomeStatus, Run, RunCost, RunStatus, Storage,
    TickWriter, Vote, World, ledger, lifecycle::Outcome,
};
use serde_json::json;
use std::sync::Arc;

use crate::test_support::{Rng, registry};

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

/// Every kind of read, over the components and keys `state` holds.
fn reads_for(state: &autoresearch_core::State, rng: &mut Rng) -> Vec<CurrentRead> {
    let mut reads = vec![CurrentRead::Tally];
    for c in [
        "Run",
        "Outcome",
        "Result",
        "Vote",
        "RunCost",
        "Description",
        "Nothing",
    ] {
        reads.push(CurrentRead::Values {
            component: c.into(),
            newest_first: false,
            before: None,
            limit: None,
        });
        reads.push(CurrentRead::Values {
            component: c.into(),
            newest_first: true,
            before: Some(EntityId(rng.below(state.next_entity + 1))),
            limit: Some(rng.below(5) as usize),
        });
        let entities = (0..4)
            .map(|_| EntityId(rng.below(state.next_entity + 2)))
            .collect();
        reads.push(CurrentRead::Get {
            component: c.into(),
            entities,
        });
    }
    let runs = ["r0", "r1", "r2", "r3", "r4", "r10", "x"];
    for (index, keys) in [
        (current::BY_RUN_ID, &runs[..]),
        (current::RESULT_OF, &runs[..]),
        (current::VOTE_ON, &runs[..]),
        (current::CONFIRMATION_OF, &runs[..]),
        (current::BY_EXPERIMENT, &["a", "b"][..]),
        (current::ACTIVE, &["a", "b"][..]),
        (current::PENDING, &["a", "b"][..]),
        (current::VOTED, &["a", "b"][..]),
    ] {
        for key in keys {
            for (prefix, newest_first, limit) in [
                (false, false, None),
                (false, true, Some(2)),
                (true, false, None),
                (true, true, Some(3)),
            ] {
                reads.push(CurrentRead::Keyed {
                    index: index.into(),
                    key: if prefix {
                        key[..1].to_string()
                    } else {
                        key.to_string()
                    },
                    prefix,
                    newest_first,
                    limit,
                });
            }
        }
    }
    reads
}

/// Checks the store's answers against the reference at the world's head.
pub(crate) async fn check(st: &Arc<dyn Storage>, world: WorldId, rng: &mut Rng, seed: u64) {
    let head = st.world(world).await.unwrap().head;
    let state = ledger::state_at(st.as_ref(), world, head).await.unwrap();
    let reads = reads_for(&state, rng);
    let want = answer_from_state(&state, &reads).unwrap();
    let got = st
        .read_current(world, reads.clone())
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("seed {seed}: no current state at tick {head}"));
    assert_eq!(got.tick, head);
    for ((r, g), w) in reads.iter().zip(&got.answers).zip(&want) {
        assert_eq!(
            normalized(g),
            normalized(w),
            "seed {seed}, tick {head}, {r:?}"
        );
    }
}

/// One random tick of changes to `w`: runs of two experiments whose
/// status, Outcome, cost, Results, Votes, Confirmations and Descriptions
/// come and go, and despawns.
pub(crate) fn random_tick(w: &mut World, rng: &mut Rng, live: &mut Vec<EntityId>, n: &mut u64) {
    let statuses = [
        RunStatus::Booting,
        RunStatus::Running,
        RunStatus::Stopped,
        RunStatus::Crashed,
    ];
    let outcomes = [
        OutcomeStatus::Keep,
        OutcomeStatus::Discard,
        OutcomeStatus::Crash,
        OutcomeStatus::Pending,
        OutcomeStatus::Baseline,
    ];
    for _ in 0..1 + rng.below(6) {
        let run_id = format!("r{}", rng.below(12));
        match rng.below(10) {
            0 | 1 => {
                let mut run = Run::new(&run_id, *rng.pick(&["a", "b"]));
                run.set_status(*rng.pick(&statuses));
                let e = w.spawn_with(&run).unwrap();
                live.push(e);
                *n += 1;
            }
            2 => {
                let e = w
                    .spawn_with(&EvalResult::new(&run_id, "eval", &json!({"m": 1}), 5))
                    .unwrap();
                live.push(e);
            }
            3 => {
                let e = w
                    .spawn_with(&Vote {
                        run_id,
                        ..Vote::default()
                    })
                    .unwrap();
                live.push(e);
            }
            _ if live.is_empty() => {}
            4 => {
                let e = *rng.pick(live);
                let mut run = Run::new(&run_id, *rng.pick(&["a", "b"]));
                run.set_status(*rng.pick(&statuses));
                w.insert(e, &run).unwrap();
            }
            5 => {
                let e = *rng.pick(live);
                let comparator = if rng.below(2) == 0 {
                    "vote:2"
                } else {
                    "scalar:m:min"
                };
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
            6 => {
                let e = *rng.pick(live);
                let mut c = RunCost::new(&run_id);
                c.jobs = rng.below(4) as u32;
                c.propose.cpu_ms = rng.below(1000);
                c.evaluate.wall_ms = rng.below(1000);
                let v = rng.below(1000) as f64 / 7.0;
                c.metrics.insert((*rng.pick(&["tokens", "cost"])).into(), v);
                w.insert(e, &c).unwrap();
            }
            7 => {
                let e = *rng.pick(live);
                match rng.below(4) {
                    0 => w.remove::<Outcome>(e).unwrap(),
                    1 => w.remove::<RunCost>(e).unwrap(),
                    2 => w.remove::<Run>(e).unwrap(),
                    _ => w
                        .insert(
                            e,
                            &Description {
                                run_id,
                                text: "idea".into(),
                            },
                        )
                        .unwrap(),
                }
            }
            8 => {
                let e = *rng.pick(live);
                w.insert(
                    e,
                    &Confirmation {
                        run_id,
                        ..Confirmation::default()
                    },
                )
                .unwrap();
            }
            _ => {
                let i = rng.below(live.len() as u64) as usize;
                let e = live.swap_remove(i);
                w.despawn(e).unwrap();
            }
        }
    }
}

#[tokio::test]
async fn the_current_state_equals_a_recount_after_random_histories() {
    for (seed, ticks) in [(1u64, 40), (7, 40), (42, 90), (1234, 40), (99991, 90)] {
        let dir = tempfile::tempdir().unwrap();
        let st: Arc<dyn Storage> =
            Arc::new(RedbStorage::open(&dir.path().join("l.redb"), RedbConfig::default()).unwrap());
        let mut rng = Rng(seed);
        let mut w = World::create(st.clone(), registry(), "autoresearch:a")
            .await
            .unwrap();
        let (mut live, mut n) = (Vec::new(), 0);
        // Past 32 commits, the pending changes are folded at least once.
        for tick in 0..ticks {
            random_tick(&mut w, &mut rng, &mut live, &mut n);
            if tick % 3 == 0 {
                // Several ticks in one append (one transaction).
                w.stage().unwrap();
                random_tick(&mut w, &mut rng, &mut live, &mut n);
            }
            w.commit().await.unwrap();
            if tick % 4 == 0 {
                check(&st, w.id(), &mut rng, seed).await;
            }
        }
        check(&st, w.id(), &mut rng, seed).await;
        // The memory backend answers from the same reference.
        let mem: Arc<dyn Storage> = Arc::new(autoresearch_core::MemoryStorage::default());
        let mw = World::create(mem.clone(), registry(), "m").await.unwrap();
        assert!(mem.read_current(mw.id(), vec![]).await.unwrap().is_some());
    }
}

/// Several worlds of one ledger updated in turn (as `bench ledger`'s
/// eight writers do): each value an update needs is read from the record
/// that set it (a delta of an older one, or a whole value), world by world
/// through one writer's memo, and every world equals its recount.
#[tokio::test]
async fn interleaved_worlds_of_one_ledger_each_equal_a_recount() {
    let dir = tempfile::tempdir().unwrap();
    let st: Arc<dyn Storage> =
        Arc::new(RedbStorage::open(&dir.path().join("l.redb"), RedbConfig::default()).unwrap());
    let mut rng = Rng(2026);
    let mut worlds = Vec::new();
    for name in ["autoresearch:a", "autoresearch:b", "autoresearch:c"] {
        let w = World::create(st.clone(), registry(), name).await.unwrap();
        worlds.push((w, Vec::new(), 0u64));
    }
    for tick in 0..45 {
        for (w, live, n) in &mut worlds {
            random_tick(w, &mut rng, live, n);
            w.commit().await.unwrap();
        }
        if tick % 9 == 0 {
            for (w, _, _) in &worlds {
                check(&st, w.id(), &mut rng, 2026).await;
            }
        }
    }
    for (w, _, _) in &worlds {
        check(&st, w.id(), &mut rng, 2026).await;
    }
}

#[tokio::test]
async fn a_writer_without_a_world_keeps_it_too_and_deleting_the_world_clears_it() {
    let dir = tempfile::tempdir().unwrap();
    let st: Arc<dyn Storage> =
        Arc::new(RedbStorage::open(&dir.path().join("l.redb"), RedbConfig::default()).unwrap());
    let mut t = TickWriter::create(st.clone(), registry(), "bulk")
        .await
        .unwrap();
    for i in 0..50 {
        let e = t.spawn();
        t.set(e, &Run::new(format!("r{i}"), "a")).unwrap();
        t.set(
            e,
            &Outcome {
                run_id: format!("r{i}"),
                status: if i % 5 == 0 {
                    OutcomeStatus::Keep
                } else {
                    OutcomeStatus::Discard
                },
                ..Outcome::default()
            },
        )
        .unwrap();
        if i % 10 == 9 {
            t.commit().await.unwrap();
        }
    }
    let id = t.info().id;
    let mut rng = Rng(5);
    check(&st, id, &mut rng, 5).await;
    let view = st
        .read_current(id, vec![CurrentRead::Tally])
        .await
        .unwrap()
        .unwrap();
    let CurrentAnswer::Tally(tally) = &view.answers[0] else {
        panic!("not a tally: {view:?}");
    };
    let a = tally.experiment("a");
    assert_eq!(a.attempts, 50);
    assert_eq!(a.outcomes.get("keep"), Some(&10));
    assert_eq!(a.outcomes.get("discard"), Some(&40));
    drop(t);
    st.delete_world(id).await.unwrap();
    let again = TickWriter::create(st.clone(), registry(), "bulk")
        .await
        .unwrap();
    let view = st
        .read_current(again.info().id, vec![CurrentRead::Tally])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        normalized(&view.answers[0]),
        normalized(&CurrentAnswer::Tally(Default::default()))
    );
}

/// Hundreds of runs per key: the secondary keys span many chunks, which
/// split as runs are added and shrink as they change or go, and the
/// pointers span many blocks; every read still equals the recount.
#[tokio::test]
async fn keys_and_pointers_over_many_chunks_equal_a_recount() {
    let dir = tempfile::tempdir().unwrap();
    let st: Arc<dyn Storage> =
        Arc::new(RedbStorage::open(&dir.path().join("l.redb"), RedbConfig::default()).unwrap());
    let mut w = World::create(st.clone(), registry(), "many").await.unwrap();
    let mut rng = Rng(11);
    let mut runs = Vec::new();
    // Run ids sharing long prefixes ("r1", "r10", "r100", ...), so that
    // front coding and prefix reads meet keys of every length.
    for i in 0..400u64 {
        let mut run = Run::new(format!("r{i}"), if i % 3 == 0 { "a" } else { "b" });
        run.set_status(RunStatus::Running);
        runs.push(w.spawn_with(&run).unwrap());
        if i % 150 == 149 {
            w.commit().await.unwrap();
        }
    }
    w.commit().await.unwrap();
    check(&st, w.id(), &mut rng, 11).await;
    for round in 0..4 {
        for _ in 0..60 {
            let e = *rng.pick(&runs);
            if let Some(mut run) = w.get::<Run>(e) {
                run.set_status(if rng.below(2) == 0 {
                    RunStatus::Stopped
                } else {
                    RunStatus::Booting
                });
                w.insert_owned(e, run).unwrap();
            }
        }
        for _ in 0..round * 20 {
            let e = runs.swap_remove(rng.below(runs.len() as u64) as usize);
            w.despawn(e).unwrap();
        }
        w.commit().await.unwrap();
        check(&st, w.id(), &mut rng, 11).await;
    }
    // Newest first across chunk boundaries, against the recount.
    let head = st.world(w.id()).await.unwrap().head;
    let state = ledger::state_at(st.as_ref(), w.id(), head).await.unwrap();
    let mut reads = Vec::new();
    for (index, key, prefix) in [
        (current::BY_EXPERIMENT, "b", false),
        (current::ACTIVE, "b", false),
        (current::BY_RUN_ID, "r1", true),
        (current::BY_RUN_ID, "r3", false),
    ] {
        for (newest_first, limit) in [(true, Some(70)), (false, Some(130)), (true, None)] {
            reads.push(CurrentRead::Keyed {
                index: index.into(),
                key: key.into(),
                prefix,
                newest_first,
                limit,
            });
        }
    }
    let want = answer_from_state(&state, &reads).unwrap();
    let got = st
        .read_current(w.id(), reads.clone())
        .await
        .unwrap()
        .unwrap();
    for ((r, g), w) in reads.iter().zip(&got.answers).zip(&want) {
        assert_eq!(g, w, "{r:?}");
    }
    let CurrentAnswer::Keys(all_b) = &want[2] else {
        panic!("not keys")
    };
    assert!(
        all_b.len() > 2 * 64,
        "{} entries: not several chunks",
        all_b.len()
    );
}

/// The pending changes of world `id`: `(entries, changes)`.
pub(crate) async fn pending_of(st: &RedbStorage, id: WorldId) -> (usize, usize) {
    st.read(
        || "reading pending changes".into(),
        move |txn| {
            let t = txn.open_table(crate::current::PENDING)?;
            let mut out = (0, 0);
            // Not the world's state row (head and tally).
            for entry in t.range((id.0, 0)..(id.0, crate::current::STATE_KEY))? {
                let (_, v) = entry?;
                out.0 += 1;
                out.1 += crate::current::pending_changes(v.value()).unwrap();
            }
            Ok(out)
        },
    )
    .await
    .unwrap()
}

/// Opens the ledger at `path` read-write.
pub(crate) fn open_both(path: &Path) -> (Arc<RedbStorage>, Arc<dyn Storage>) {
    let redb = Arc::new(RedbStorage::open(path, RedbConfig::default()).unwrap());
    let st: Arc<dyn Storage> = redb.clone();
    (redb, st)
}

/// A large first tick is folded into the main tables at once (no pending
/// entry); small ticks then leave one entry each until the 33rd folds
/// them; every read equals the recount in each phase, and after a
/// reopen (the writer's cache of pending changes is not needed).
#[tokio::test]
async fn small_ticks_stay_pending_until_folded_and_a_large_one_is_folded_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    let mut rng = Rng(3);
    let id = {
        let (redb, st) = open_both(&path);
        let mut w = World::create(st.clone(), registry(), "bulk").await.unwrap();
        let mut runs = Vec::new();
        for i in 0..2_500u64 {
            let mut run = Run::new(
                format!("{:016x}-{i:07}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                "a",
            );
            run.set_status(RunStatus::Running);
            runs.push(w.spawn_with(&run).unwrap());
        }
        w.commit().await.unwrap();
        let id = w.id();
        drop(w);
        assert_eq!(pending_of(&redb, id).await, (0, 0));
        check(&st, id, &mut rng, 3).await;
        let mut w = World::open_id(st.clone(), registry(), id).await.unwrap();
        for tick in 0..40u64 {
            for _ in 0..10 {
                let e = *rng.pick(&runs);
                let mut run = w.get::<Run>(e).unwrap();
                run.set_status(*rng.pick(&[
                    RunStatus::Running,
                    RunStatus::Stopped,
                    RunStatus::Booting,
                ]));
                w.insert_owned(e, run).unwrap();
            }
            if tick == 7 {
                let e = runs.swap_remove(5);
                w.despawn(e).unwrap();
                let e = w.spawn_with(&Run::new("late", "b")).unwrap();
                runs.push(e);
            }
            w.commit().await.unwrap();
            let (entries, changes) = pending_of(&redb, w.id()).await;
            // 32 pending entries at most: the 33rd tick folds them.
            assert_eq!(
                entries as u64,
                if tick < 32 { tick + 1 } else { tick - 32 },
                "tick {tick}"
            );
            assert!(changes > 0 || entries == 0);
            if tick % 8 == 0 || tick == 31 || tick == 32 {
                check(&st, w.id(), &mut rng, 3).await;
            }
        }
        w.id()
    };
    let st: Arc<dyn Storage> = Arc::new(RedbStorage::open(&path, RedbConfig::default()).unwrap());
    check(&st, id, &mut rng, 3).await;
    let mut w = World::open_id(st.clone(), registry(), id).await.unwrap();
    w.spawn_with(&Run::new("after-reopen", "a")).unwrap();
    w.commit().await.unwrap();
    check(&st, id, &mut rng, 3).await;
}
