//! The dashboard's live index against a fresh materialization of the same
//! ledger, through the router: after new ticks of every kind, after random
//! changes, with every component the pages show, and a run's ticks before
//! and inside the recent window.

mod common;

use autoresearch_core::{OutcomeStatus, Tick, World};
use autoresearch_web::router;
use axum::Router;
use common::http::*;
use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn the_live_index_follows_new_ticks_as_a_fresh_materialization_does() {
    let (ledger, mut w) = fixture().await;
    let app = router(ledger.read_only(), ledger.registry.clone(), read_only());
    let before = get_json(&app, API).await;
    assert_eq!(before["counts"]["attempts"], 8);
    // Append ticks of every kind: decisions, a vote, a new head, a run in flight finishing.
    w.attempt(Some(6.0), OutcomeStatus::Keep, "best yet").await;
    let mut world = World::open(
        ledger.storage.clone(),
        ledger.registry.clone(),
        "autoresearch:demo",
    )
    .await
    .unwrap();
    world
        .spawn_with(&autoresearch_core::Vote {
            run_id: "run-0007".into(),
            verdict: autoresearch_core::VoteVerdict::Discard,
            voter: "bo".into(),
            reason: String::new(),
            at_ms: 1,
        })
        .unwrap();
    world.commit().await.unwrap();
    w.decide_votes().await;
    w.in_flight().await;
    let live = get_json(&app, API).await;
    // A second dashboard materializes the head from scratch.
    let fresh_app = router(ledger.read_only(), ledger.registry.clone(), read_only());
    let fresh = get_json(&fresh_app, API).await;
    assert_eq!(without_ages(live.clone()), without_ages(fresh));
    assert_eq!(live["counts"]["attempts"], 10);
    assert_eq!(live["counts"]["pending"], 1);
    assert_eq!(live["counts"]["in_flight"], 2);
    assert_eq!(live["head"]["run_id"], "run-0009");
    let live_all = get_json(&app, &format!("{API}/attempts?per=500&sort=best")).await;
    let fresh_all = get_json(&fresh_app, &format!("{API}/attempts?per=500&sort=best")).await;
    assert_eq!(without_ages(live_all), without_ages(fresh_all));
}

/// `v` without the fields that say how long ago something was (they move
/// with the clock between two requests).
fn without_ages(mut v: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.remove("elapsed");
                m.remove("last_activity");
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    v
}

/// A small deterministic generator (splitmix64).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n.max(1)
    }
}

#[tokio::test]
async fn random_changes_keep_the_live_index_equal_to_a_fresh_one() {
    use autoresearch_core::{EvalResult, Outcome, Run, RunStatus, Vote, VoteVerdict};
    let ledger = Ledger::new();
    let mut w = Writer::start(&ledger, "rand", 5.0).await;
    let live = router(ledger.read_only(), ledger.registry.clone(), read_only());
    let mut rng = Rng(17);
    let statuses = [
        OutcomeStatus::Keep,
        OutcomeStatus::Discard,
        OutcomeStatus::Crash,
        OutcomeStatus::Pending,
    ];
    // One change a tick: the choices read the committed state.
    for step in 0..80 {
        let world = &mut w.world;
        {
            let runs = world.find_all::<Run>(|_| true);
            let results = world.find_all::<EvalResult>(|_| true);
            let votes = world.find_all::<Vote>(|_| true);
            let pick = |rng: &mut Rng, n: usize| rng.below(n as u64) as usize;
            match rng.below(12) {
                0 | 1 => {
                    let mut run = Run::new(format!("x{step}-{}", rng.below(1000)), "rand");
                    run.set_status(RunStatus::Running);
                    if world.run_by_id(&run.run_id).is_none() {
                        world.spawn_with(&run).unwrap();
                    }
                }
                2 if !runs.is_empty() => {
                    let (e, mut run) = runs[pick(&mut rng, runs.len())].clone();
                    run.set_status(RunStatus::Stopped);
                    run.commit_hash = format!("{:040}", rng.below(9));
                    world.insert(e, &run).unwrap();
                    let status = statuses[pick(&mut rng, statuses.len())].clone();
                    world
                        .insert(
                            e,
                            &Outcome {
                                run_id: run.run_id,
                                status,
                                comparator: SPEC.into(),
                                ..Outcome::default()
                            },
                        )
                        .unwrap();
                }
                3 if !runs.is_empty() => {
                    // Results, sometimes for a run id not recorded yet.
                    let run_id = if rng.below(4) == 0 {
                        format!("x{}-{}", step + 1, rng.below(1000))
                    } else {
                        runs[pick(&mut rng, runs.len())].1.run_id.clone()
                    };
                    let score = rng.below(100) as f64 / 10.0;
                    world
                        .spawn_with(&EvalResult::new(run_id, "e", &json!({"score": score}), 1))
                        .unwrap();
                }
                4 if !runs.is_empty() => {
                    let run_id = runs[pick(&mut rng, runs.len())].1.run_id.clone();
                    world
                        .spawn_with(&Vote {
                            run_id,
                            verdict: VoteVerdict::Keep,
                            voter: "v".into(),
                            reason: String::new(),
                            at_ms: 1,
                        })
                        .unwrap();
                }
                5 if !runs.is_empty() => {
                    let (e, _) = runs[pick(&mut rng, runs.len())];
                    world.remove::<Outcome>(e).unwrap();
                }
                6 if !runs.is_empty() && rng.below(3) == 0 => {
                    let (e, _) = runs[pick(&mut rng, runs.len())];
                    world.despawn(e).unwrap();
                }
                7 if !results.is_empty() => {
                    let (e, _) = results[pick(&mut rng, results.len())];
                    world.despawn(e).unwrap();
                }
                8 if !votes.is_empty() => {
                    let (e, _) = votes[pick(&mut rng, votes.len())];
                    world.despawn(e).unwrap();
                }
                9 if !runs.is_empty() => {
                    // A cost set, replaced or removed.
                    let (e, run) = &runs[pick(&mut rng, runs.len())];
                    if rng.below(3) == 0 {
                        world.remove::<autoresearch_core::RunCost>(*e).unwrap();
                    } else {
                        let mut c = autoresearch_core::RunCost::new(&run.run_id);
                        let usage = autoresearch_core::JobUsage {
                            wall_ms: rng.below(5000),
                            cpu_ms: rng.below(5000),
                        };
                        let tokens = rng.below(100) as f64;
                        c.charge(
                            autoresearch_core::CostKind::Evaluate,
                            usage,
                            &[("tokens".into(), tokens)],
                        );
                        world.insert(*e, &c).unwrap();
                    }
                }
                10 if !runs.is_empty() => {
                    // A Description set or removed, a Confirmation set.
                    let (e, run) = &runs[pick(&mut rng, runs.len())];
                    match rng.below(3) {
                        0 => world.remove::<autoresearch_core::Description>(*e).unwrap(),
                        1 => world
                            .insert(
                                *e,
                                &autoresearch_core::Description {
                                    run_id: run.run_id.clone(),
                                    text: format!("idea {step}\nbody"),
                                },
                            )
                            .unwrap(),
                        _ => world
                            .insert(
                                *e,
                                &autoresearch_core::Confirmation {
                                    run_id: run.run_id.clone(),
                                    status: autoresearch_core::ConfirmStatus::Confirmed,
                                    value: Some(step as f64),
                                    ..Default::default()
                                },
                            )
                            .unwrap(),
                    }
                }
                11 if !runs.is_empty() => {
                    // A scheduler job, sometimes moved on or removed.
                    let jobs = world.find_all::<autoresearch_core::ExecutorJob>(|_| true);
                    match (rng.below(3), jobs.is_empty()) {
                        (0, false) => {
                            let (e, _) = jobs[pick(&mut rng, jobs.len())];
                            world.despawn(e).unwrap();
                        }
                        (1, false) => {
                            let (e, mut j) = jobs[pick(&mut rng, jobs.len())].clone();
                            j.state = autoresearch_core::JobState::Completed;
                            world.insert(e, &j).unwrap();
                        }
                        _ => {
                            let run_id = runs[pick(&mut rng, runs.len())].1.run_id.clone();
                            world
                                .spawn_with(&autoresearch_core::ExecutorJob {
                                    run_id,
                                    job_id: format!("{step}"),
                                    state: autoresearch_core::JobState::Running,
                                    ..Default::default()
                                })
                                .unwrap();
                        }
                    }
                }
                _ => {}
            }
        }
        if world.pending().is_empty() {
            continue;
        }
        world.commit().await.unwrap();
        let uri = "/api/worlds/autoresearch%3Arand/attempts?per=500&sort=old";
        let a = get_json(&live, uri).await;
        let fresh = router(ledger.read_only(), ledger.registry.clone(), read_only());
        let b = get_json(&fresh, uri).await;
        assert_eq!(without_ages(a), without_ages(b), "step {step}");
        let a = get_json(&live, "/api/worlds").await;
        let b = get_json(&fresh, "/api/worlds").await;
        assert_eq!(without_ages(a), without_ages(b), "step {step}");
        let exp = "/api/worlds/autoresearch%3Arand";
        let a = without_ages(get_json(&live, exp).await);
        let b = without_ages(get_json(&fresh, exp).await);
        for field in ["cost", "noise", "in_flight"] {
            assert_eq!(a[field], b[field], "step {step}: {field}");
        }
        // A run's page: its ticks from the store and the recent window.
        let runs = w.world.find_all::<Run>(|_| true);
        if !runs.is_empty() {
            let run = &runs[rng.below(runs.len() as u64) as usize].1.run_id;
            let uri = format!("{exp}/runs/{run}");
            let a = get_json(&live, &uri).await;
            let b = get_json(&fresh, &uri).await;
            for field in ["ticks", "samples", "idea", "cost", "confirmation", "jobs"] {
                assert_eq!(a[field], b[field], "step {step}: run {run} {field}");
            }
        }
    }
}

/// Writes what a loop records beside its runs: run-0002's Description,
/// cost and held-out confirmation, run-0005's cost, the experiment's noise
/// model and a Slurm job of the run in flight (run-0008).
async fn record_extras(w: &mut Writer) {
    use autoresearch_core::{
        ConfirmStatus, CostKind, Description, ExecutorJob, JobState, JobUsage, MetricNoise,
        NoiseModel, Run, RunCost,
    };
    let entity = |w: &Writer, id: &str| w.world.find::<Run>(|r| r.run_id == id).unwrap().0;
    let e2 = entity(w, "run-0002");
    let e5 = entity(w, "run-0005");
    w.world
        .insert(
            e2,
            &Description {
                run_id: "run-0002".into(),
                text: "Unroll the inner loop\n\nFour at a time.".into(),
            },
        )
        .unwrap();
    let mut cost = RunCost::new("run-0002");
    let usage = |s: u64| JobUsage {
        wall_ms: s * 1000,
        cpu_ms: s * 500,
    };
    cost.charge(CostKind::Propose, usage(4), &[("tokens".into(), 1200.0)]);
    cost.charge(CostKind::Evaluate, usage(2), &[]);
    w.world.insert(e2, &cost).unwrap();
    let mut cost5 = RunCost::new("run-0005");
    cost5.charge(CostKind::Evaluate, usage(10), &[("tokens".into(), 300.0)]);
    w.world.insert(e5, &cost5).unwrap();
    w.world
        .insert(
            e2,
            &autoresearch_core::Confirmation {
                run_id: "run-0002".into(),
                commit: format!("{:040x}", 2),
                status: ConfirmStatus::Confirmed,
                metric: "held_out".into(),
                value: Some(0.91),
                incumbent_value: Some(0.93),
                reason: "within tolerance".into(),
                ..Default::default()
            },
        )
        .unwrap();
    let (exp, _) = w.world.experiment("demo").unwrap();
    w.world
        .insert(
            exp,
            &NoiseModel {
                experiment_name: "demo".into(),
                metrics: vec![
                    MetricNoise {
                        metric: "score".into(),
                        sigma: 0.25,
                        df: 12,
                        groups: 5,
                        samples: 17,
                        method: "pooled-mad".into(),
                    },
                    MetricNoise {
                        metric: "loss".into(),
                        method: "none".into(),
                        ..Default::default()
                    },
                ],
                updated_at_ms: autoresearch_core::now_ms(),
            },
        )
        .unwrap();
    w.world
        .spawn_with(&ExecutorJob {
            run_id: "run-0008".into(),
            step: "evaluate-0".into(),
            executor: "slurm".into(),
            job_id: "4711_0".into(),
            state: JobState::Running,
            ..Default::default()
        })
        .unwrap();
    w.world.commit().await.unwrap();
}

/// Checks the extras on the experiment and run pages of `app`; `cost_jobs`
/// and `tokens` are the experiment's summed cost.
async fn check_extras(app: &Router, cost_jobs: u64, tokens: f64) {
    let j = get_json(app, API).await;
    assert_eq!(j["cost"]["jobs"], cost_jobs, "{}", j["cost"]);
    assert_eq!(j["cost"]["metrics"]["tokens"], tokens);
    let noise = j["noise"]["metrics"].as_array().unwrap();
    assert_eq!(noise.len(), 1, "only the metric ever repeated: {noise:?}");
    assert_eq!(noise[0]["metric"], "score");
    assert_eq!(noise[0]["sigma"], 0.25);
    assert_eq!(j["in_flight"][0]["run_id"], "run-0008");
    assert_eq!(j["in_flight"][0]["jobs"][0]["job_id"], "4711_0");
    assert_eq!(j["in_flight"][0]["jobs"][0]["state"], "running");
    let row2 = j["table"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["run_id"] == "run-0002")
        .unwrap();
    assert_eq!(
        row2["idea"], "Unroll the inner loop",
        "the Description's subject"
    );
    assert_eq!(row2["confirm"], "ok 0.91");
    let found = get_json(app, &format!("{API}?q=four+AT+a+time")).await;
    assert_eq!(
        run_ids(&found["table"]),
        vec!["run-0002"],
        "search finds the Description's body"
    );

    let html = get_html(app, W).await;
    assert!(
        html.contains("run-0002 · keep: 9\nUnroll the inner loop\n"),
        "the chart's hover shows the idea"
    );
    assert!(html.contains("score σ 0.25 (pooled-mad, df 12 from 5 commits)"));
    assert!(html.contains("slurm 4711_0 evaluate-0 running"));
    assert!(
        html.contains(&format!("tokens {tokens}")),
        "the summed cost"
    );
    assert!(html.contains("Unroll the inner loop"));

    let r = get_json(app, &format!("{API}/runs/run-0002")).await;
    assert_eq!(r["idea"], "Unroll the inner loop");
    assert_eq!(r["description"], "Unroll the inner loop\n\nFour at a time.");
    assert_eq!(r["cost"]["cpu_ms"], 3000);
    assert_eq!(r["cost"]["wall_ms"], 6000);
    assert_eq!(r["cost"]["jobs"], 2);
    assert_eq!(r["confirmation"]["status"], "confirmed");
    assert_eq!(r["confirm_text"], "ok 0.91: within tolerance");
    let html = get_html(app, &format!("{W}/runs/run-0002")).await;
    assert!(html.contains(r#"<p class="idea lead" id="idea">Unroll the inner loop</p>"#));
    assert!(html.contains("Four at a time."));
    assert!(html.contains("CPU 3s (propose 2s, evaluate 1s), wall 6s, 2 jobs; tokens 1200"));
    assert!(html.contains("ok 0.91: within tolerance"));
    let r8 = get_json(app, &format!("{API}/runs/run-0008")).await;
    assert_eq!(r8["jobs"][0]["job_id"], "4711_0");
    assert_eq!(
        r8["idea"], "an idea being tried",
        "the task without a Description"
    );
    assert!(r8["cost"].is_null());
    let html = get_html(app, &format!("{W}/runs/run-0008")).await;
    assert!(html.contains(r#"<td class="mono">4711_0</td>"#));
}

#[tokio::test]
async fn cost_noise_confirmation_jobs_and_the_idea_show_live_and_from_a_fresh_index() {
    let (ledger, mut w) = fixture().await;
    let app = router(ledger.read_only(), ledger.registry.clone(), read_only());
    let j = get_json(&app, API).await;
    assert!(j["cost"].is_null(), "nothing charged yet");
    assert!(j["noise"].is_null());
    let html = get_html(&app, W).await;
    assert!(html.contains("none charged yet"));
    assert!(html.contains("not known yet"));

    // The live index follows the new tick; a new server builds its index
    // from the materialized head: both show the same.
    record_extras(&mut w).await;
    check_extras(&app, 3, 1500.0).await;
    let fresh = router(ledger.read_only(), ledger.registry.clone(), read_only());
    check_extras(&fresh, 3, 1500.0).await;

    // A cost replaced and one removed leave the sum of what is stored.
    let (e5, _) = w
        .world
        .find::<autoresearch_core::Run>(|r| r.run_id == "run-0005")
        .unwrap();
    w.world.remove::<autoresearch_core::RunCost>(e5).unwrap();
    w.world.commit().await.unwrap();
    let j = get_json(&app, API).await;
    assert_eq!(j["cost"]["jobs"], 2);
    assert_eq!(j["cost"]["metrics"]["tokens"], 1200.0);
}

/// The ticks a run page lists for `run`, as numbers.
async fn page_ticks(app: &Router, run: &str, at: Option<u64>) -> Vec<u64> {
    let q = at.map(|t| format!("?tick={t}")).unwrap_or_default();
    let j = get_json(app, &format!("{API}/runs/{run}{q}")).await;
    j["ticks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tick"].as_u64().unwrap())
        .collect()
}

/// The ticks that changed `run`'s entity up to `to`, read through core's
/// `entity_history` (the whole entity index, no window).
async fn true_ticks(ledger: &Ledger, w: &Writer, run: &str, to: u64) -> Vec<u64> {
    let (entity, _) = w
        .world
        .find::<autoresearch_core::Run>(|r| r.run_id == run)
        .unwrap();
    let mut ticks: Vec<u64> = autoresearch_core::ledger::entity_history(
        ledger.storage.as_ref(),
        w.world.id(),
        entity,
        Tick(to),
    )
    .await
    .unwrap()
    .into_iter()
    .map(|c| c.tick.0)
    .collect();
    ticks.dedup();
    ticks
}

#[tokio::test]
async fn a_run_page_lists_the_same_ticks_before_and_inside_the_recent_window() {
    let (ledger, mut w) = fixture().await;
    let live = router(ledger.read_only(), ledger.registry.clone(), read_only());
    assert_eq!(page_ticks(&live, "run-0003", None).await, vec![4]);
    // More ticks than the window holds, then a change to an old run: its
    // page lists ticks from before the window (the store's index) and
    // from inside it (the index's window), for an index that followed the
    // ticks, one built afresh, and one of a past tick.
    for _ in 0..(autoresearch_web::index::RECENT_TICKS + 6) {
        w.attempt(Some(9.9), OutcomeStatus::Discard, "worse").await;
    }
    let (e3, _) = w
        .world
        .find::<autoresearch_core::Run>(|r| r.run_id == "run-0003")
        .unwrap();
    w.world
        .insert(
            e3,
            &autoresearch_core::Description {
                run_id: "run-0003".into(),
                text: "late words".into(),
            },
        )
        .unwrap();
    let head = w.world.commit().await.unwrap().0;
    let fresh = router(ledger.read_only(), ledger.registry.clone(), read_only());
    let want = true_ticks(&ledger, &w, "run-0003", head).await;
    assert_eq!(want, vec![4, head], "recorded, then described");
    assert_eq!(page_ticks(&live, "run-0003", None).await, want);
    assert_eq!(page_ticks(&fresh, "run-0003", None).await, want);
    let past = head - 3;
    assert_eq!(
        page_ticks(&fresh, "run-0003", Some(past)).await,
        true_ticks(&ledger, &w, "run-0003", past).await
    );
    let recent = format!("run-{:04}", w.n - 2);
    let want = true_ticks(&ledger, &w, &recent, head).await;
    assert_eq!(want.len(), 1);
    assert_eq!(page_ticks(&live, &recent, None).await, want);
    assert_eq!(page_ticks(&fresh, &recent, None).await, want);
    let j = get_json(&fresh, &format!("{API}/runs/run-0003")).await;
    assert_eq!(
        j["samples"].as_array().unwrap().len(),
        1,
        "its Result found"
    );
    assert_eq!(j["idea"], "late words");
}
