//! `autoresearch plot` from the ledger's chart series (issue #19) prints
//! and draws exactly what the materializing path does: one ledger is read
//! as written and as a copy without its current-state and series tables
//! (as a ledger written before them), and the outputs and image files
//! are compared, for a chart that is downsampled and for one that is not.

mod common;

use autoresearch_core::{
    BranchHead, ComponentRegistry, ConfirmStatus, Confirmation, Description, EvalResult,
    Experiment, OutcomeStatus, Run, RunStatus, Storage, TickWriter, lifecycle::Outcome,
};
use autoresearch_store::{RedbConfig, RedbStorage};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;

/// Writes world `autoresearch:NAME` with `attempts` attempts of every
/// kind the chart draws: a baseline, keeps, discards, crashes (by Outcome
/// and by a crashed run without one), one pending, one of an unknown
/// status, runs without the metric, runs with two samples of which one
/// measured the candidate before a rebase, descriptions and a
/// confirmation, Results before their Run, and later ticks that change a
/// run's commit after its Results and crash and restart runs.
/// `shared_task` gives every run one task.
async fn write_world(st: Arc<dyn Storage>, name: &str, attempts: u32, shared_task: bool) {
    let registry = Arc::new(ComponentRegistry::standard());
    let mut w = TickWriter::create(st, registry, &format!("autoresearch:{name}"))
        .await
        .unwrap();
    let exp = w.spawn();
    let meta = json!({"metric": "loss", "direction": "minimize"});
    w.set(
        exp,
        &Experiment::new(name, "/nonexistent", "main", 1, &meta),
    )
    .unwrap();
    let head = w.spawn();
    let mut best = 10.0;
    let mut later = Vec::new();
    for n in 0..attempts {
        let run_id = format!("{name}-{n:05}");
        let commit = format!("{n:040x}");
        let mut run = Run::new(&run_id, name);
        run.commit_hash = commit.clone();
        run.task = if shared_task {
            "python propose.py".into()
        } else {
            format!("idea {n}: tune the schedule")
        };
        run.set_status(if n % 101 == 50 {
            RunStatus::Crashed
        } else {
            RunStatus::Stopped
        });
        let e = w.spawn();
        w.set(e, &run).unwrap();
        if n == 2 || n == 4 || n % 101 == 50 {
            later.push((e, run.clone()));
        }
        if n % 23 == 11 {
            // A Result of the next attempt, before its Run.
            let next = format!("{name}-{:05}", n + 1);
            let r = w.spawn();
            let out = json!({"loss": 5.0, "_meta": {"commit": format!("{:040x}", n + 1)}});
            w.set(r, &EvalResult::new(&next, "evaluate", &out, 0))
                .unwrap();
        }
        let keep = n == 0 || n % 97 == 1;
        let loss = if keep {
            best -= 0.01;
            best
        } else {
            best + (n % 89) as f64 / 10.0
        };
        if n % 31 != 7 {
            // Results: a sample of the commit before a rebase on some runs.
            if n % 17 == 3 {
                let r = w.spawn();
                let out = json!({"loss": 99.0, "_meta": {"commit": "f".repeat(40)}});
                w.set(r, &EvalResult::new(&run_id, "evaluate", &out, 0))
                    .unwrap();
            }
            for sample in 0..1 + n % 2 {
                let r = w.spawn();
                let out = json!({
                    "loss": loss + f64::from(sample) / 3.0,
                    "seconds": 1.5,
                    "_meta": {"commit": commit, "sample": sample},
                });
                w.set(r, &EvalResult::new(&run_id, "evaluate", &out, 0))
                    .unwrap();
            }
        }
        let status = match n {
            0 => Some(OutcomeStatus::Baseline),
            _ if keep => Some(OutcomeStatus::Keep),
            _ if n % 101 == 50 => None,
            _ if n % 13 == 5 => Some(OutcomeStatus::Crash),
            _ if n == attempts - 2 => Some(OutcomeStatus::Pending),
            _ if n == attempts - 3 => Some(OutcomeStatus::Other("deferred".into())),
            _ if n == attempts - 1 => None,
            _ => Some(OutcomeStatus::Discard),
        };
        if let Some(status) = status {
            let comparator = if n == 0 { "" } else { "scalar:loss:min" };
            w.set(
                e,
                &Outcome {
                    run_id: run_id.clone(),
                    status,
                    comparator: comparator.into(),
                    ..Outcome::default()
                },
            )
            .unwrap();
        }
        if n % 3 == 0 {
            w.set(
                e,
                &Description {
                    run_id: run_id.clone(),
                    text: format!("try {n}\n\nbody"),
                },
            )
            .unwrap();
        }
        if n == 1 {
            w.set(
                e,
                &Confirmation {
                    run_id: run_id.clone(),
                    commit: commit.clone(),
                    metric: "loss".into(),
                    status: ConfirmStatus::Confirmed,
                    ..Confirmation::default()
                },
            )
            .unwrap();
        }
        if keep {
            w.set(
                head,
                &BranchHead::new(name, &commit, &run_id, &json!({}), 0),
            )
            .unwrap();
        }
        if n % 50 == 49 {
            w.commit().await.unwrap();
        }
    }
    w.commit().await.unwrap();
    // Later ticks: a run's commit changes after its Results (they measured
    // the one before), crashed runs are restarted and another crashes.
    for (e, mut run) in later {
        if run.status == RunStatus::Crashed.as_str() {
            run.set_status(RunStatus::Stopped);
        } else if run.run_id.ends_with("00002") {
            run.commit_hash = "e".repeat(40);
        } else {
            run.set_status(RunStatus::Crashed);
        }
        w.set(e, &run).unwrap();
        w.commit().await.unwrap();
    }
}

#[tokio::test]
async fn the_series_chart_is_the_materialized_chart() {
    let dir = tempfile::tempdir().unwrap();
    let fast = dir.path().join("fast.redb");
    let slow = dir.path().join("slow.redb");
    {
        let st: Arc<dyn Storage> =
            Arc::new(RedbStorage::open(&fast, RedbConfig::default()).unwrap());
        write_world(st.clone(), "big", 6_500, false).await;
        write_world(st, "small", 40, true).await;
    }
    common::copy_without_tables(
        &fast,
        &slow,
        &[&common::CURRENT_TABLES[..], &common::SERIES_TABLES[..]].concat(),
    );
    let out = |name: &str| dir.path().join(name).display().to_string();
    let big = |more: &[&'static str]| [&["plot", "--experiment", "big"][..], more].concat();
    let small = |more: &[&'static str]| [&["plot", "--experiment", "small"][..], more].concat();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (big(&["--json"]), "svg"),
        (big(&[]), "png"),
        (big(&["--metric", "seconds", "--json"]), "svg"),
        (small(&["--json"]), "svg"),
        (small(&[]), "png"),
        (small(&["--metric", "nothing", "--json"]), "svg"),
    ];
    for (i, (args, ext)) in cases.iter().enumerate() {
        {
            let (a, b) = (
                out(&format!("fast{i}.{ext}")),
                out(&format!("slow{i}.{ext}")),
            );
            let with = |path: &str| {
                let mut v = args.clone();
                v.extend(["--out", path]);
                v.into_iter().map(str::to_string).collect::<Vec<_>>()
            };
            let (fa, fb) = (with(&a), with(&b));
            let fa: Vec<&str> = fa.iter().map(String::as_str).collect();
            let fb: Vec<&str> = fb.iter().map(String::as_str).collect();
            let (out_fast, err_fast) = common::run_on_ledger(&fast, dir.path(), &fa);
            let (out_slow, err_slow) = common::run_on_ledger(&slow, dir.path(), &fb);
            assert_eq!(
                out_fast.replace(&a, "X"),
                out_slow.replace(&b, "X"),
                "{args:?}"
            );
            assert_eq!(err_fast, err_slow, "{args:?}");
            assert!(
                std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
                "{args:?}: the {ext} files differ"
            );
        }
    }
    // What was compared, spelled out: the big chart is downsampled, with
    // every kept attempt drawn and the totals of all.
    let (json_out, _) = common::run_on_ledger(&fast, dir.path(), &cases[0].0);
    let v: serde_json::Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(v["attempts"], 6_500);
    assert_eq!(v["metric"], "loss");
    assert_eq!(v["kept"], 67);
    let drawn = v["points"].as_array().unwrap();
    assert_eq!(v["downsampled"]["drawn"], drawn.len());
    assert!(
        drawn.len() < 6_500 && drawn.len() > 2_000,
        "{}",
        drawn.len()
    );
    assert!(drawn.iter().any(|p| p["confirmed"] == true));
    assert!(drawn.iter().any(|p| p["mark"] == "pending"));
    let (small, _) = common::run_on_ledger(&fast, dir.path(), &cases[3].0);
    let v: serde_json::Value = serde_json::from_str(&small).unwrap();
    assert_eq!(v["points"].as_array().unwrap().len(), 40);
    assert!(v.get("downsampled").is_none());
    // The fast ledger was charted from its series, the copy was not.
    let verbose = |ledger: &Path| {
        let svg = out("v.svg");
        common::run_on_ledger(
            ledger,
            dir.path(),
            &["-vv", "plot", "--experiment", "big", "--out", &svg],
        )
        .1
    };
    let (err_fast, err_slow) = (verbose(&fast), verbose(&slow));
    assert!(
        err_fast.contains("charted from the ledger's chart series"),
        "{err_fast}"
    );
    assert!(!err_slow.contains("chart series"), "{err_slow}");
}

#[tokio::test]
async fn a_ledger_without_a_series_for_the_world_charts_it_by_materializing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    {
        let st: Arc<dyn Storage> =
            Arc::new(RedbStorage::open(&path, RedbConfig::default()).unwrap());
        write_world(st, "small", 12, false).await;
    }
    // Only the series is missing: the chart reads every attempt from the
    // current state, and says why at debug level.
    let copy = dir.path().join("copy.redb");
    std::fs::copy(&path, &copy).unwrap();
    {
        let db = redb::Database::create(&copy).unwrap();
        let txn = db.begin_write().unwrap();
        txn.delete_table(redb::TableDefinition::<u64, u64>::new("series_head"))
            .unwrap();
        txn.commit().unwrap();
    }
    let svg = dir.path().join("x.svg").display().to_string();
    let (a, _) = common::run_on_ledger(&path, dir.path(), &["plot", "--json", "--out", &svg]);
    let (b, err) =
        common::run_on_ledger(&copy, dir.path(), &["-vv", "plot", "--json", "--out", &svg]);
    assert_eq!(a, b);
    assert!(err.contains("keeps no chart series"), "{err}");
}
