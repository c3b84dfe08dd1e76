//! Counterfactual replay, forks and votes on experiment worlds shaped as
//! the loop writes them, in a real (in-memory) ledger.

use autoresearch_compare::from_spec;
use autoresearch_compare::replay::{
    ForkRequest, ReplayError, ReplayRequest, cast_vote, fork_promoting, replay,
};
use autoresearch_core::compare::Vote;
use autoresearch_core::lifecycle::{Outcome, attempts};
use autoresearch_core::{
    BranchHead, ComponentRegistry, EvalResult, Experiment, MemoryStorage, Run, RunStatus, Storage,
    Tick, World, experiment_world_name,
};
use serde_json::json;
use std::sync::Arc;

const EXP: &str = "nano";

struct Ledger {
    storage: Arc<dyn Storage>,
    registry: Arc<ComponentRegistry>,
    world: World,
    clock: i64,
}

/// One attempt to write: run id, commit, val_bpb samples, original status.
struct Row<'a> {
    run: &'a str,
    values: &'a [f64],
    status: &'a str,
    /// Start at the same time as the previous row (a parallel round).
    parallel: bool,
}

fn row<'a>(run: &'a str, values: &'a [f64], status: &'a str) -> Row<'a> {
    Row {
        run,
        values,
        status,
        parallel: false,
    }
}

impl Ledger {
    async fn new() -> Ledger {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new(Some(4)));
        let registry = Arc::new(ComponentRegistry::standard());
        let mut world = World::create(
            storage.clone(),
            registry.clone(),
            &experiment_world_name(EXP),
        )
        .await
        .unwrap();
        world
            .spawn_with(&Experiment::new(
                EXP,
                "/repo",
                "main",
                1,
                &json!({"controller": "test"}),
            ))
            .unwrap();
        world.commit().await.unwrap();
        Ledger {
            storage,
            registry,
            world,
            clock: 1000,
        }
    }

    fn head(&self) -> String {
        self.world
            .branch_head(EXP)
            .map(|(_, h)| h.commit_hash)
            .unwrap_or_default()
    }

    /// Writes the rows as the loop would, one tick per attempt: the run, its
    /// Results (marked with their commit), its Outcome, and on keep or
    /// baseline the BranchHead. Returns the tick of each row.
    async fn write(&mut self, rows: &[Row<'_>]) -> Vec<Tick> {
        let mut ticks = Vec::new();
        let mut started = self.clock;
        for r in rows {
            if !r.parallel {
                started = self.clock;
            }
            self.clock += 100;
            let commit = format!("c-{}", r.run);
            let mut run = Run::new(r.run, EXP);
            run.commit_hash = commit.clone();
            run.started_at_ms = started;
            run.finished_at_ms = self.clock;
            run.set_status(if r.status == Outcome::CRASH {
                RunStatus::Crashed
            } else {
                RunStatus::Stopped
            });
            let e = self.world.spawn_with(&run).unwrap();
            for (i, v) in r.values.iter().enumerate() {
                let outputs = json!({"val_bpb": v, "_meta": {"commit": commit, "sample": i}});
                self.world
                    .spawn_with(&EvalResult::new(r.run, "evaluate", &outputs, self.clock))
                    .unwrap();
            }
            let base = self.head();
            let outcome = Outcome {
                run_id: r.run.into(),
                status: r.status.into(),
                reason: format!("original {}", r.status),
                descriptor_json: "{}".into(),
                base_commit: base,
                comparator: if r.status == Outcome::CRASH || r.status == Outcome::BASELINE {
                    String::new()
                } else {
                    "scalar:val_bpb:min".into()
                },
                decided_at_ms: self.clock,
            };
            self.world.insert(e, &outcome).unwrap();
            if r.status == Outcome::KEEP || r.status == Outcome::BASELINE {
                let head = BranchHead::new(EXP, &commit, r.run, &json!({}), self.clock);
                match self.world.branch_head(EXP) {
                    Some((h, _)) => self.world.insert(h, &head).unwrap(),
                    None => drop(self.world.spawn_with(&head).unwrap()),
                }
            }
            ticks.push(self.world.commit().await.unwrap());
        }
        ticks
    }

    /// Stores more samples of an existing run (incumbent re-measurements).
    async fn samples(&mut self, run: &str, values: &[f64]) {
        for v in values {
            let outputs = json!({"val_bpb": v, "_meta": {"commit": format!("c-{run}")}});
            self.world
                .spawn_with(&EvalResult::new(run, "incumbent", &outputs, self.clock))
                .unwrap();
        }
        self.world.commit().await.unwrap();
    }

    async fn replay(
        &self,
        spec: &str,
        from: Option<Tick>,
        fork: &str,
    ) -> Result<autoresearch_compare::ReplayReport, ReplayError> {
        let req = ReplayRequest {
            experiment: EXP.into(),
            source_world: experiment_world_name(EXP),
            from,
            fork_name: fork.into(),
        };
        replay(
            self.storage.clone(),
            self.registry.clone(),
            &req,
            from_spec(spec).unwrap(),
        )
        .await
    }

    async fn open(&self, name: &str) -> World {
        World::open(self.storage.clone(), self.registry.clone(), name)
            .await
            .unwrap()
    }
}

/// The standard history: a baseline at 1.0, then five candidates decided
/// by `scalar:val_bpb:min`.
async fn standard() -> (Ledger, Vec<Tick>) {
    let mut l = Ledger::new().await;
    let ticks = l
        .write(&[
            row("b0", &[1.0], Outcome::BASELINE),
            row("r1", &[0.99], Outcome::KEEP),
            row("r2", &[0.995], Outcome::DISCARD),
            row("r3", &[0.97], Outcome::KEEP),
            row("r4", &[], Outcome::CRASH),
            row("r5", &[0.965], Outcome::KEEP),
        ])
        .await;
    (l, ticks)
}

fn statuses(r: &autoresearch_compare::ReplayReport) -> Vec<(String, String, String)> {
    r.steps
        .iter()
        .map(|s| {
            (
                s.run_id.clone(),
                s.original.status.clone(),
                s.counterfactual.status.clone(),
            )
        })
        .collect()
}

fn runs(traj: &[autoresearch_compare::replay::HeadPoint]) -> Vec<&str> {
    traj.iter().map(|h| h.run_id.as_str()).collect()
}

/// Replays the standard history under `spec` and expects, per candidate,
/// the counterfactual status, and the counterfactual trajectory.
async fn check(spec: &str, expected: &[&str], trajectory: &[&str]) {
    let (l, _) = standard().await;
    let fork = format!("cf-{}", spec.replace(':', "-"));
    let r = l.replay(spec, None, &fork).await.unwrap();
    let got: Vec<&str> = r
        .steps
        .iter()
        .map(|s| s.counterfactual.status.as_str())
        .collect();
    assert_eq!(got, expected, "{spec}: {:#?}", r.steps);
    assert_eq!(runs(&r.counterfactual_trajectory), trajectory, "{spec}");
    assert_eq!(
        runs(&r.original_trajectory),
        ["", "b0", "r1", "r3", "r5"],
        "{spec}"
    );
    // The fork holds the counterfactual head; the source is untouched.
    let forked = l.open(&fork).await;
    let head = forked.branch_head(EXP).unwrap().1;
    assert_eq!(
        head.run_id,
        *trajectory.last().unwrap(),
        "{spec}: fork head"
    );
    assert_eq!(
        l.open(&experiment_world_name(EXP))
            .await
            .branch_head(EXP)
            .unwrap()
            .1
            .run_id,
        "r5"
    );
}

#[tokio::test]
async fn replay_cases() {
    let (b, k, d, c) = ("baseline", "keep", "discard", "crash");
    // The original rule reproduces the original decisions.
    check(
        "scalar:val_bpb:min",
        &[b, k, d, k, c, k],
        &["", "b0", "r1", "r3", "r5"],
    )
    .await;
    // A minimum delta keeps fewer: r1 (0.01) and r5 (0.005 over r3) are not enough.
    check(
        "scalar:val_bpb:min:delta=0.015",
        &[b, d, d, k, c, d],
        &["", "b0", "r3"],
    )
    .await;
    // Maximizing keeps nothing that lowers the metric.
    check("scalar:val_bpb:max", &[b, d, d, d, c, d], &["", "b0"]).await;
    // A gate on a metric nobody printed discards everything.
    check(
        "all:metric(tests_passed)==1;scalar:val_bpb:min",
        &[b, d, d, d, c, d],
        &["", "b0"],
    )
    .await;
    // Votes nobody cast leave the candidates pending.
    check(
        "vote",
        &[b, "pending", "pending", "pending", c, "pending"],
        &["", "b0"],
    )
    .await;
}

#[tokio::test]
async fn replay_writes_the_counterfactual_into_the_fork() {
    let (l, _) = standard().await;
    let r = l
        .replay("scalar:val_bpb:min:delta=0.015", None, "cf")
        .await
        .unwrap();
    assert_eq!(r.from_tick, 1);
    assert_eq!(r.original_head.run_id, "r5");
    assert_eq!(r.counterfactual_head.run_id, "r3");
    assert_eq!(r.counterfactual_head.commit, "c-r3");
    assert_eq!(r.original_comparators, ["scalar:val_bpb:min"]);
    let fork = l.open("cf").await;
    let all = attempts(&fork, EXP);
    assert_eq!(all.len(), 6);
    let r1 = all.iter().find(|a| a.run.run_id == "r1").unwrap();
    let o = r1.outcome.as_ref().unwrap();
    assert_eq!(o.status, "discard");
    assert_eq!(o.comparator, "scalar:val_bpb:min:delta=0.015");
    assert_eq!(o.base_commit, "c-b0");
    assert!(
        o.reason.contains("not more than min_delta 0.015"),
        "{}",
        o.reason
    );
    assert_eq!(r1.results.len(), 1, "the run's Results are in the fork");
    let meta = fork.experiment(EXP).unwrap().1.metadata().unwrap();
    assert_eq!(
        meta["counterfactual"]["comparator"],
        json!("scalar:val_bpb:min:delta=0.015")
    );
    assert_eq!(meta["controller"], json!("test"));
    // One tick per candidate after the carry-over tick; time travel shows each step.
    let ticks: Vec<u64> = r.steps.iter().map(|s| s.fork_tick).collect();
    assert_eq!(ticks, [3, 4, 5, 6, 7, 8]);
    let mid = World::open_at(l.storage.clone(), l.registry.clone(), fork.id(), Tick(6))
        .await
        .unwrap();
    assert_eq!(mid.branch_head(EXP).unwrap().1.run_id, "r3");
    // A replay of the fork itself is possible too (forks of forks).
    let req = ReplayRequest {
        experiment: EXP.into(),
        source_world: "cf".into(),
        from: None,
        fork_name: "cf2".into(),
    };
    let again = replay(
        l.storage.clone(),
        l.registry.clone(),
        &req,
        from_spec("scalar:val_bpb:min").unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(again.counterfactual_head.run_id, "r5");
}

#[tokio::test]
async fn replay_from_a_tick_starts_at_the_head_of_that_tick() {
    let (l, ticks) = standard().await;
    // After r2: the head is r1.
    let r = l
        .replay("scalar:val_bpb:min:delta=0.03", Some(ticks[2]), "cf-mid")
        .await
        .unwrap();
    assert_eq!(r.start_head.run_id, "r1");
    assert_eq!(
        statuses(&r),
        [
            ("r3".into(), "keep".into(), "discard".into()),
            ("r4".into(), "crash".into(), "crash".into()),
            ("r5".into(), "keep".into(), "discard".into()),
        ]
    );
    assert_eq!(runs(&r.counterfactual_trajectory), ["r1"]);
    assert_eq!(runs(&r.original_trajectory), ["r1", "r3", "r5"]);
    let fork = l.open("cf-mid").await;
    assert_eq!(fork.branch_head(EXP).unwrap().1.run_id, "r1");
}

#[tokio::test]
async fn missing_samples_are_decided_on_what_exists_and_said_so() {
    let (l, _) = standard().await;
    let r = l.replay("stat:val_bpb:min", None, "cf-stat").await.unwrap();
    let r1 = &r.steps[1];
    assert_eq!(r1.counterfactual.status, "discard");
    assert!(
        r1.counterfactual.reason.contains("decided on the samples that exist; the comparator asked for 2 more incumbent and 2 more candidate samples, never taken"),
        "{}",
        r1.counterfactual.reason
    );
}

#[tokio::test]
async fn stored_samples_let_a_statistical_replay_keep() {
    let mut l = Ledger::new().await;
    l.write(&[row("b0", &[1.0, 1.01, 0.99], Outcome::BASELINE)])
        .await;
    l.write(&[
        row("r1", &[0.9, 0.91, 0.89], Outcome::KEEP),
        row("r2", &[0.905, 0.895], Outcome::DISCARD),
    ])
    .await;
    // Later incumbent samples of r1 are stored under its run id.
    l.samples("r1", &[0.905, 0.9]).await;
    let r = l
        .replay("stat:val_bpb:min:min_n=2", None, "cf-stat2")
        .await
        .unwrap();
    assert_eq!(
        r.steps[1].counterfactual.status, "keep",
        "{}",
        r.steps[1].counterfactual.reason
    );
    assert_eq!(
        r.steps[2].counterfactual.status, "discard",
        "{}",
        r.steps[2].counterfactual.reason
    );
    let fork = l.open("cf-stat2").await;
    assert_eq!(
        fork.results_for("r1").len(),
        5,
        "the incumbent's later samples are carried over"
    );
}

#[tokio::test]
async fn a_parallel_round_replays_as_a_tournament() {
    let mut l = Ledger::new().await;
    l.write(&[row("b0", &[1.0], Outcome::BASELINE)]).await;
    l.write(&[
        row("p1", &[0.95], Outcome::KEEP),
        Row {
            parallel: true,
            ..row("p2", &[0.9], Outcome::DISCARD)
        },
        Row {
            parallel: true,
            ..row("p3", &[0.97], Outcome::DISCARD)
        },
    ])
    .await;
    let r = l
        .replay("tournament:scalar:val_bpb:min", None, "cf-t")
        .await
        .unwrap();
    assert_eq!(
        statuses(&r)[1..],
        [
            ("p1".into(), "keep".into(), "discard".into()),
            ("p2".into(), "discard".into(), "keep".into()),
            ("p3".into(), "discard".into(), "discard".into()),
        ]
    );
    assert!(
        r.steps[1]
            .counterfactual
            .reason
            .contains("lost the tournament to p2")
    );
    // Without a tournament the round is judged candidate by candidate: p1
    // keeps, then p2 is decided again against p1 and keeps too.
    let r = l.replay("scalar:val_bpb:min", None, "cf-s").await.unwrap();
    let cf: Vec<&str> = r
        .steps
        .iter()
        .map(|s| s.counterfactual.status.as_str())
        .collect();
    assert_eq!(cf, ["baseline", "keep", "keep", "discard"]);
    assert_eq!(r.counterfactual_head.run_id, "p2");
}

#[tokio::test]
async fn an_imported_history_without_a_first_head_adopts_its_first_row() {
    // The results.tsv importer's shape: an empty BranchHead, then a keep
    // whose base is empty.
    let mut l = Ledger::new().await;
    l.world
        .spawn_with(&BranchHead::new(EXP, "", "", &json!({}), 0))
        .unwrap();
    l.world.commit().await.unwrap();
    l.write(&[
        row("t1", &[1.0], Outcome::KEEP),
        row("t2", &[0.98], Outcome::KEEP),
    ])
    .await;
    let r = l
        .replay("scalar:val_bpb:min:delta=0.05", None, "cf-imp")
        .await
        .unwrap();
    assert_eq!(r.steps[0].counterfactual.status, "baseline");
    assert!(
        r.steps[0]
            .counterfactual
            .reason
            .contains("no incumbent yet")
    );
    assert_eq!(r.steps[1].counterfactual.status, "discard");
    assert_eq!(r.counterfactual_head.run_id, "t1");
}

#[tokio::test]
async fn replay_errors_name_what_is_wrong() {
    let (l, _) = standard().await;
    let err = l
        .replay("scalar:val_bpb:min", Some(Tick(999)), "x")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ReplayError::BeyondHead {
                tick: Tick(999),
                ..
            }
        ),
        "{err}"
    );
    let err = l
        .replay("scalar:val_bpb:min", Some(Tick(0)), "x")
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "world \"autoresearch:nano\" has no experiment \"nano\" at tick 0"
    );
    l.replay("scalar:val_bpb:min", None, "taken").await.unwrap();
    let err = l
        .replay("scalar:val_bpb:min", None, "taken")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    let req = ReplayRequest {
        experiment: "other".into(),
        source_world: experiment_world_name(EXP),
        from: None,
        fork_name: "y".into(),
    };
    let err = replay(
        l.storage.clone(),
        l.registry.clone(),
        &req,
        from_spec("vote").unwrap(),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("has no experiment \"other\""),
        "{err}"
    );
    let req = ReplayRequest {
        source_world: "nope".into(),
        ..req
    };
    let err = replay(
        l.storage.clone(),
        l.registry.clone(),
        &req,
        from_spec("vote").unwrap(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("no world named \"nope\""), "{err}");
}

#[tokio::test]
async fn fork_promoting_makes_a_run_head_at_a_tick() {
    let (l, ticks) = standard().await;
    // At the tick that kept r1, promote r2 instead (it was discarded later).
    let req = ForkRequest {
        experiment: EXP.into(),
        source_world: experiment_world_name(EXP),
        at: ticks[1],
        promote: "r2".into(),
        fork_name: "what-if-r2".into(),
    };
    let rep = fork_promoting(l.storage.clone(), l.registry.clone(), &req)
        .await
        .unwrap();
    assert_eq!(rep.previous_head.run_id, "r1");
    assert_eq!(rep.head.run_id, "r2");
    assert_eq!(rep.head.commit, "c-r2");
    let fork = l.open("what-if-r2").await;
    let head = fork.branch_head(EXP).unwrap().1;
    assert_eq!(
        (head.run_id.as_str(), head.commit_hash.as_str()),
        ("r2", "c-r2")
    );
    let a = attempts(&fork, EXP);
    let r2 = a.iter().find(|a| a.run.run_id == "r2").unwrap();
    assert_eq!(r2.outcome.as_ref().unwrap().status, "keep");
    assert!(
        r2.outcome
            .as_ref()
            .unwrap()
            .reason
            .contains("promoted by hand")
    );
    assert_eq!(r2.results.len(), 1);
    assert!(
        a.iter().all(|a| a.run.run_id != "r3"),
        "later runs are not in the fork"
    );
    // The source is untouched.
    assert_eq!(
        l.open(&experiment_world_name(EXP))
            .await
            .branch_head(EXP)
            .unwrap()
            .1
            .run_id,
        "r5"
    );
    // Errors.
    let bad = |promote: &str, name: &str| ForkRequest {
        promote: promote.into(),
        fork_name: name.into(),
        ..req.clone()
    };
    let err = fork_promoting(l.storage.clone(), l.registry.clone(), &bad("zz", "f1"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "world \"autoresearch:nano\": no run \"zz\" in experiment \"nano\""
    );
    let err = fork_promoting(l.storage.clone(), l.registry.clone(), &bad("r", "f2"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ReplayError::AmbiguousRun { count: 5, .. }),
        "{err}"
    );
    assert!(
        l.storage.find_world("f1").await.unwrap().is_none(),
        "no fork is left behind on error"
    );
}

#[tokio::test]
async fn fork_promoting_a_run_without_a_commit_is_an_error() {
    let mut l = Ledger::new().await;
    l.write(&[row("b0", &[1.0], Outcome::BASELINE)]).await;
    l.world.spawn_with(&Run::new("empty", EXP)).unwrap();
    l.world.commit().await.unwrap();
    let req = ForkRequest {
        experiment: EXP.into(),
        source_world: experiment_world_name(EXP),
        at: Tick(2),
        promote: "empty".into(),
        fork_name: "f".into(),
    };
    let err = fork_promoting(l.storage.clone(), l.registry.clone(), &req)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("has no commit to promote"),
        "{err}"
    );
}

#[tokio::test]
async fn votes_are_recorded_and_unknown_runs_refused() {
    let (mut l, _) = standard().await;
    let r = cast_vote(&mut l.world, EXP, "r2", "keep", "ann", "looks right")
        .await
        .unwrap();
    assert_eq!(r.vote.run_id, "r2");
    assert_eq!(r.votes_on_run, 1);
    assert_eq!(r.run_status.as_deref(), Some("discard"));
    // A unique prefix names the run; votes accumulate.
    let r = cast_vote(&mut l.world, EXP, "r2", "discard", "bob", "")
        .await
        .unwrap();
    assert_eq!(r.votes_on_run, 2);
    let votes = l.world.find_all::<Vote>(|v| v.run_id == "r2");
    assert_eq!(votes.len(), 2);
    assert_eq!(votes[0].1.reason, "looks right");
    let err = cast_vote(&mut l.world, EXP, "r9", "keep", "ann", "")
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "world \"autoresearch:nano\": no run \"r9\" in experiment \"nano\""
    );
    let err = cast_vote(&mut l.world, EXP, "r2", "maybe", "ann", "")
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "a vote is keep or discard, not \"maybe\"");
    let err = cast_vote(&mut l.world, "other", "r2", "keep", "ann", "")
        .await
        .unwrap_err();
    assert!(matches!(err, ReplayError::UnknownRun { .. }));
    // Another writer advanced the world: the vote still lands.
    let mut other = l.open(&experiment_world_name(EXP)).await;
    other
        .spawn_with(&Vote {
            run_id: "r3".into(),
            verdict: "keep".into(),
            ..Vote::default()
        })
        .unwrap();
    other.commit().await.unwrap();
    let r = cast_vote(&mut l.world, EXP, "r3", "keep", "ann", "")
        .await
        .unwrap();
    assert_eq!(r.votes_on_run, 2);
}

#[tokio::test]
async fn a_replay_under_votes_uses_the_votes_cast() {
    let (mut l, _) = standard().await;
    cast_vote(&mut l.world, EXP, "r2", "keep", "ann", "")
        .await
        .unwrap();
    cast_vote(&mut l.world, EXP, "r1", "discard", "ann", "")
        .await
        .unwrap();
    let r = l.replay("vote", None, "cf-vote").await.unwrap();
    let cf: Vec<&str> = r
        .steps
        .iter()
        .map(|s| s.counterfactual.status.as_str())
        .collect();
    assert_eq!(
        cf,
        ["baseline", "discard", "keep", "pending", "crash", "pending"]
    );
    assert_eq!(r.counterfactual_head.run_id, "r2");
    assert_eq!(
        l.open("cf-vote").await.find_all::<Vote>(|_| true).len(),
        2,
        "votes are carried into the fork"
    );
}

/// The scalar rule as a plain model: the statuses and the head trajectory a
/// sequential loop reaches with minimum delta `delta`.
fn model(base: f64, values: &[Option<f64>], delta: f64) -> (Vec<&'static str>, Vec<usize>) {
    let mut head = base;
    let mut statuses = Vec::new();
    let mut traj = Vec::new();
    for (i, v) in values.iter().enumerate() {
        match v {
            None => statuses.push(Outcome::CRASH),
            Some(v) if head - v > delta => {
                head = *v;
                statuses.push(Outcome::KEEP);
                traj.push(i);
            }
            Some(_) => statuses.push(Outcome::DISCARD),
        }
    }
    (statuses, traj)
}

mod model_based {
    use super::*;
    use proptest::prelude::*;

    fn history() -> impl Strategy<Value = Vec<Option<f64>>> {
        // Values on a coarse grid, so that ties and near-ties happen.
        proptest::collection::vec(
            proptest::option::weighted(0.85, (900u32..1100).prop_map(|x| f64::from(x) / 1000.0)),
            0..12,
        )
    }

    fn deltas() -> impl Strategy<Value = f64> {
        prop_oneof![Just(0.0), (1u32..60).prop_map(|x| f64::from(x) / 1000.0)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Replaying a history under any scalar rule gives exactly what a
        /// loop run under that rule would have decided, and the fork's
        /// BranchHead is the last head of that trajectory.
        #[test]
        fn replay_matches_the_model(values in history(), original in deltas(), other in deltas()) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let mut l = Ledger::new().await;
                l.write(&[row("b0", &[1.0], Outcome::BASELINE)]).await;
                let (orig_statuses, _) = model(1.0, &values, original);
                let names: Vec<String> = (0..values.len()).map(|i| format!("c{i}")).collect();
                let samples: Vec<Vec<f64>> = values.iter().map(|v| v.iter().copied().collect()).collect();
                let rows: Vec<Row> = names
                    .iter()
                    .zip(&samples)
                    .zip(&orig_statuses)
                    .map(|((n, s), st)| row(n, s, st))
                    .collect();
                l.write(&rows).await;
                for (delta, fork) in [(original, "same"), (other, "other")] {
                    let spec = if delta == 0.0 {
                        "scalar:val_bpb:min".to_string()
                    } else {
                        format!("scalar:val_bpb:min:delta={delta}")
                    };
                    let r = l.replay(&spec, None, fork).await.unwrap();
                    let (want, traj) = model(1.0, &values, delta);
                    let got: Vec<&str> = r.steps[1..].iter().map(|s| s.counterfactual.status.as_str()).collect();
                    assert_eq!(got, want, "{spec} on {values:?}");
                    let want_traj: Vec<String> = std::iter::once("b0".to_string())
                        .chain(traj.iter().map(|i| format!("c{i}")))
                        .collect();
                    let got_traj: Vec<String> = r.counterfactual_trajectory[1..].iter().map(|h| h.run_id.clone()).collect();
                    assert_eq!(got_traj, want_traj, "{spec} on {values:?}");
                    let head = l.open(fork).await.branch_head(EXP).unwrap().1;
                    assert_eq!(&head.run_id, want_traj.last().unwrap());
                }
            });
        }
    }
}
