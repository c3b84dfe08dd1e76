//! The read commands' fast path (the ledger's current state, issue #19)
//! prints exactly what the materializing path prints: one ledger is read
//! as written (with its current state) and as a copy without the
//! current-state tables (as a ledger written before them), and every
//! command's output is compared.

mod common;

use autoresearch_core::noise::{MetricNoise, NoiseModel};
use autoresearch_core::{
    BranchHead, ComponentRegistry, Confirmation, Description, EvalResult, Experiment,
    OutcomeStatus, Run, RunCost, RunStatus, Storage, Vote, World, lifecycle::Outcome, now_ms,
};
use autoresearch_store::{RedbConfig, RedbStorage};
use redb::ReadableTable;
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

/// An experiment `exp` of 30 attempts with every kind of state the read
/// commands show: keeps, discards, crashes, a baseline, two samples per
/// run, a run in flight, one waiting for votes (with a vote) and one
/// decided by votes, costs with fractional metrics, a confirmation, a
/// noise model and descriptions.
async fn write_ledger(path: &Path) {
    let st: Arc<dyn Storage> = Arc::new(RedbStorage::open(path, RedbConfig::default()).unwrap());
    let mut w = World::create(
        st,
        Arc::new(ComponentRegistry::standard()),
        "autoresearch:exp",
    )
    .await
    .unwrap();
    let exp = w
        .spawn_with(&Experiment::new(
            "exp",
            "/nonexistent/repo",
            "main",
            1,
            &json!({}),
        ))
        .unwrap();
    w.insert(
        exp,
        &NoiseModel {
            experiment_name: "exp".into(),
            metrics: vec![MetricNoise {
                metric: "score".into(),
                sigma: 0.0123,
                df: 4,
                groups: 2,
                samples: 6,
                method: "pooled-mad".into(),
            }],
            updated_at_ms: 5,
        },
    )
    .unwrap();
    let head = w.spawn().unwrap();
    let now = now_ms();
    for n in 0..30u32 {
        // The run in flight has an id of which `run-029` is a unique prefix.
        let run_id = if n == 29 {
            "run-029-late".to_string()
        } else {
            format!("run-{n:03}")
        };
        let commit = format!("{n:040x}");
        let mut run = Run::new(&run_id, "exp");
        run.commit_hash = commit.clone();
        run.task = format!("idea {n}");
        // Ten days and half an hour ago: the in-flight run's "running for"
        // reads `10d 0h` for half an hour, never a boundary between two reads.
        run.started_at_ms = now - 10 * 86_400_000 - 30 * 60_000 + i64::from(n);
        run.set_status(if n == 29 {
            RunStatus::Running
        } else {
            RunStatus::Stopped
        });
        let e = w.spawn_with(&run).unwrap();
        for sample in 0..2 {
            let score = 10.0 - f64::from(n) / 7.0 + f64::from(sample) / 3.0;
            w.spawn_with(&EvalResult::new(
                &run_id,
                "evaluate",
                &json!({"score": score, "seconds": 1.5, "_meta": {"commit": commit, "sample": sample}}),
                1000 + i64::from(n),
            ))
            .unwrap();
        }
        let (status, comparator) = match n {
            0 => (OutcomeStatus::Baseline, ""),
            27 => (OutcomeStatus::Pending, "vote:2"),
            28 => (OutcomeStatus::Keep, "vote:1"),
            29 => continue,
            _ if n % 7 == 3 => (OutcomeStatus::Crash, ""),
            _ if n % 5 == 0 => (OutcomeStatus::Keep, "scalar:score:min"),
            _ => (OutcomeStatus::Discard, "scalar:score:min"),
        };
        w.insert(
            e,
            &Outcome {
                run_id: run_id.clone(),
                status: status.clone(),
                reason: format!("reason {n}"),
                comparator: comparator.into(),
                descriptor_json: if n == 27 {
                    r#"{"quorum":2}"#.into()
                } else {
                    "{}".into()
                },
                ..Outcome::default()
            },
        )
        .unwrap();
        w.insert(
            e,
            &Description {
                run_id: run_id.clone(),
                text: format!("try {n}\n\nbody"),
            },
        )
        .unwrap();
        let mut cost = RunCost::new(&run_id);
        cost.jobs = 3;
        cost.propose.cpu_ms = 100 + u64::from(n);
        cost.evaluate.wall_ms = 50;
        cost.metrics.insert("tokens".into(), 0.1 * f64::from(n + 1));
        w.insert(e, &cost).unwrap();
        if n == 10 {
            w.insert(
                e,
                &Confirmation {
                    run_id: run_id.clone(),
                    commit: commit.clone(),
                    metric: "score".into(),
                    ..Confirmation::default()
                },
            )
            .unwrap();
        }
        if n == 27 {
            w.spawn_with(&Vote {
                run_id: run_id.clone(),
                voter: "ana".into(),
                ..Vote::default()
            })
            .unwrap();
        }
        if matches!(status, OutcomeStatus::Keep | OutcomeStatus::Baseline) {
            w.insert(
                head,
                &BranchHead::new("exp", &commit, &run_id, &json!({}), 0),
            )
            .unwrap();
        }
        // Several attempts a tick, as a loop's ticks and an import's mix.
        if n % 4 == 3 {
            w.commit().await.unwrap();
        }
    }
    w.commit().await.unwrap();
}

#[tokio::test]
async fn the_fast_reads_print_what_the_materialized_reads_print() {
    let dir = tempfile::tempdir().unwrap();
    let fast = dir.path().join("fast.redb");
    let slow = dir.path().join("slow.redb");
    write_ledger(&fast).await;
    common::copy_without_tables(&fast, &slow, &common::CURRENT_TABLES);
    let svg = |name: &str| dir.path().join(name).display().to_string();
    let (svg_fast, svg_slow) = (svg("fast.svg"), svg("slow.svg"));
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec!["status"], vec!["status"]),
        (vec!["status", "--json"], vec!["status", "--json"]),
        (vec!["log", "--limit", "30"], vec!["log", "--limit", "30"]),
        (
            vec!["log", "--limit", "40", "--json"],
            vec!["log", "--limit", "40", "--json"],
        ),
        (
            vec!["log", "--limit", "30", "--format", "tsv"],
            vec!["log", "--limit", "30", "--format", "tsv"],
        ),
        (vec!["show", "run-010"], vec!["show", "run-010"]),
        (
            vec!["show", "run-027", "--json"],
            vec!["show", "run-027", "--json"],
        ),
        (vec!["show", "run-029"], vec!["show", "run-029"]),
        (
            vec!["plot", "--json", "--metric", "score", "--out", &svg_fast],
            vec!["plot", "--json", "--metric", "score", "--out", &svg_slow],
        ),
        (
            vec!["plot", "--metric", "score", "--out", &svg_fast],
            vec!["plot", "--metric", "score", "--out", &svg_slow],
        ),
    ];
    for (a, b) in &cases {
        let (mut out_fast, err_fast) = common::run_on_ledger(&fast, dir.path(), a);
        let (mut out_slow, err_slow) = common::run_on_ledger(&slow, dir.path(), b);
        if a[0] == "plot" {
            out_fast = out_fast.replace("fast.svg", "X.svg");
            out_slow = out_slow.replace("slow.svg", "X.svg");
        }
        if a[0] == "show" {
            // "decided N s ago" and the like may tick over between the two runs.
            assert_eq!(out_fast.lines().count(), out_slow.lines().count(), "{a:?}");
        } else {
            assert_eq!(out_fast, out_slow, "{a:?}");
        }
        assert_eq!(err_fast, err_slow, "{a:?}");
    }
    assert_eq!(
        std::fs::read_to_string(&svg_fast).unwrap(),
        std::fs::read_to_string(&svg_slow).unwrap()
    );
    // What the fast reads found, spelled out.
    let (status, _) = common::run_on_ledger(&fast, dir.path(), &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["attempts"], 30);
    assert_eq!(v["pending"][0]["run_id"], "run-027");
    assert_eq!(v["pending"][0]["votes"], 1);
    assert_eq!(v["in_flight"][0]["run_id"], "run-029-late");
    assert_eq!(v["cost"]["jobs"], 87);
    // 0.1 + 0.2 + ... + 2.9 summed exactly, rounded once.
    assert_eq!(v["cost"]["metrics"]["tokens"], 43.5);
    let (text, _) = common::run_on_ledger(&fast, dir.path(), &["status"]);
    assert!(text.contains("voted") && text.contains("run-028"), "{text}");
    assert!(text.contains("noise") && text.contains("score σ"), "{text}");
    let (log, err) = common::run_on_ledger(&fast, dir.path(), &["log", "--limit", "2"]);
    assert_eq!(log.lines().count(), 3, "{log}");
    assert!(
        log.contains("run-028") && log.contains("run-029-late"),
        "{log}"
    );
    assert!(err.contains("2 of 30 attempts shown"), "{err}");
    let (show, _) = common::run_on_ledger(&fast, dir.path(), &["show", "run-010", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&show).unwrap();
    assert_eq!(v["run"]["run_id"], "run-010");
    assert_eq!(v["results"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn an_ambiguous_prefix_is_refused_alike() {
    let dir = tempfile::tempdir().unwrap();
    let fast = dir.path().join("fast.redb");
    let slow = dir.path().join("slow.redb");
    write_ledger(&fast).await;
    common::copy_without_tables(&fast, &slow, &common::CURRENT_TABLES);
    let fail = |ledger: &Path, id: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_autoresearch"))
            .current_dir(dir.path())
            .arg("--ledger")
            .arg(ledger)
            .args(["show", id])
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8(out.stderr).unwrap()
    };
    for id in ["run-0", "nope"] {
        let (a, b) = (fail(&fast, id), fail(&slow, id));
        assert_eq!(a, b);
        assert!(a.contains(id), "{a}");
    }
}

#[tokio::test]
async fn a_damaged_current_state_falls_back_to_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let fast = dir.path().join("fast.redb");
    let slow = dir.path().join("slow.redb");
    write_ledger(&fast).await;
    common::copy_without_tables(&fast, &slow, &common::CURRENT_TABLES);
    // Every pointer block of the current state's Runs, and every pending
    // change, becomes bytes that do not decode; the log stays whole.
    {
        let db = redb::Database::create(&fast).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let def: redb::TableDefinition<(u64, &str, u64), &[u8]> =
                redb::TableDefinition::new("current_ticks");
            let mut t = txn.open_table(def).unwrap();
            let keys: Vec<(u64, String, u64)> = t
                .iter()
                .unwrap()
                .map(|e| {
                    let (k, _) = e.unwrap();
                    let (w, c, b) = k.value();
                    (w, c.to_string(), b)
                })
                .filter(|(_, c, _)| c == "Run")
                .collect();
            for (w, c, b) in &keys {
                t.insert((*w, c.as_str(), *b), [0xff_u8, 0xff, 0xff].as_slice())
                    .unwrap();
            }
            // The latest ticks' pointers are pending (`current_pending`)
            // until folded: those entries do not decode either.
            let def: redb::TableDefinition<(u64, u64), &[u8]> =
                redb::TableDefinition::new("current_pending");
            let mut p = txn.open_table(def).unwrap();
            let pending: Vec<(u64, u64)> =
                p.iter().unwrap().map(|e| e.unwrap().0.value()).collect();
            assert!(!keys.is_empty() || !pending.is_empty());
            for k in pending {
                p.insert(k, [0xff_u8, 0xff, 0xff].as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
    }
    for args in [
        vec!["status", "--json"],
        vec!["log", "--limit", "5"],
        vec!["show", "run-010", "--json"],
    ] {
        let (out_fast, _) = common::run_on_ledger(&fast, dir.path(), &args);
        let (out_slow, _) = common::run_on_ledger(&slow, dir.path(), &args);
        if args[0] == "show" {
            let strip = |s: &str| {
                let mut v: serde_json::Value = serde_json::from_str(s).unwrap();
                v.as_object_mut().unwrap().remove("now_ms");
                v["run"].clone()
            };
            assert_eq!(strip(&out_fast), strip(&out_slow), "{args:?}");
        } else {
            assert_eq!(out_fast, out_slow, "{args:?}");
        }
    }
}
