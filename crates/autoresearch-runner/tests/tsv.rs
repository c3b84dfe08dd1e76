//! results.tsv import and export through the lifecycle model.

mod common;

use autoresearch_core::lifecycle::{self, Outcome};
use autoresearch_core::{
    BranchHead, EvalResult, Experiment, Run, RunStatus, Tick, World, experiment_world_name,
};
use autoresearch_runner::tsv::{self, Direction, TsvError, TsvImport};
use serde_json::json;
use std::path::PathBuf;

const KARPATHY: &str = "commit\tval_bpb\tmemory_gb\tstatus\tdescription
a1b2c3d\t0.997900\t44.0\tkeep\tbaseline
b2c3d4e\t0.993200\t44.2\tkeep\tincrease LR to 0.04
c3d4e5f\t1.005000\t44.0\tdiscard\tswitch to GeLU activation
d4e5f6g\t0.000000\t0.0\tcrash\tdouble model width (OOM)
e5f6a7b\t0.991100\t44.1\tkeep\tweight decay 0.1
";

fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.tsv");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn opts(experiment: &str) -> TsvImport {
    TsvImport {
        experiment: experiment.into(),
        metric: None,
        direction: None,
        strict: false,
    }
}

#[tokio::test]
async fn import_then_export_reproduces_the_file() {
    let (_d, path) = file(KARPATHY);
    let (storage, registry) = common::ledger();
    let report = tsv::import(storage.clone(), registry.clone(), &path, &opts("nano"))
        .await
        .unwrap();
    assert_eq!(
        (
            report.imported,
            report.kept,
            report.discarded,
            report.crashed
        ),
        (5, 3, 1, 1)
    );
    assert_eq!(
        (report.first_tick, report.last_tick),
        (Some(1), Some(2)),
        "the experiment, then every row in one tick"
    );
    assert_eq!(report.metric, "val_bpb");
    let w = World::open(storage, registry, &experiment_world_name("nano"))
        .await
        .unwrap();
    let (text, skipped) = tsv::attempt_log(&w, "nano").to_tsv();
    assert_eq!(text, KARPATHY);
    assert_eq!(skipped, 0);
    let meta = w.experiment("nano").unwrap().1.metadata().unwrap();
    assert_eq!(meta["metric"], "val_bpb");
    assert_eq!(meta["direction"], "minimize");
}

/// The whole import is one tick (all or nothing): the head is the last
/// kept row, each decision's base the kept row before it, and a crash row
/// has no score (its `0.000000` and `0.0` are placeholders, kept as text
/// for the export only).
#[tokio::test]
async fn an_import_is_one_tick_and_kept_rows_move_the_head() {
    let (_d, path) = file(KARPATHY);
    let (storage, registry) = common::ledger();
    tsv::import(storage.clone(), registry.clone(), &path, &opts("nano"))
        .await
        .unwrap();
    let id = storage
        .find_world("autoresearch:nano")
        .await
        .unwrap()
        .unwrap()
        .id;
    let w = World::open_id(storage, registry, id).await.unwrap();
    assert_eq!(w.tick(), Tick(2), "the experiment, then all rows");
    let attempts = lifecycle::attempts(&w, "nano");
    let bases: Vec<&str> = attempts
        .iter()
        .map(|a| a.outcome.as_ref().unwrap().base_commit.as_str())
        .collect();
    assert_eq!(bases, ["", "a1b2c3d", "b2c3d4e", "b2c3d4e", "b2c3d4e"]);
    let crash = &attempts[3];
    assert_eq!(crash.run.status, "crashed");
    assert_eq!(crash.outcome.as_ref().unwrap().status, "crash");
    assert_eq!(
        crash.results[0].outputs().unwrap(),
        json!({"description": "double model width (OOM)", "_text": {"val_bpb": "0.000000", "memory_gb": "0.0"}})
    );
    assert_eq!(attempts[2].run.status, "stopped");
    let out = attempts[1].results[0].outputs().unwrap();
    assert_eq!(
        out,
        json!({"val_bpb": 0.9932, "memory_gb": 44.2, "description": "increase LR to 0.04"})
    );
    let head = w.branch_head("nano").unwrap().1;
    assert_eq!(head.commit_hash, "e5f6a7b");
    assert_eq!(head.descriptor().unwrap(), json!({"val_bpb": 0.9911}));
}

#[tokio::test]
async fn reimport_skips_rows_already_present() {
    let (_d, path) = file(KARPATHY);
    let (storage, registry) = common::ledger();
    tsv::import(storage.clone(), registry.clone(), &path, &opts("nano"))
        .await
        .unwrap();
    std::fs::write(
        &path,
        format!("{KARPATHY}f6a7b8c\t0.990000\t44.0\tkeep\tnew idea\n"),
    )
    .unwrap();
    let again = tsv::import(storage.clone(), registry.clone(), &path, &opts("nano"))
        .await
        .unwrap();
    assert_eq!((again.imported, again.already_present), (1, 5));
    assert_eq!((again.first_tick, again.last_tick), (Some(3), Some(3)));
}

/// Each case: file text, then the malformed line numbers with a word of the reason.
#[tokio::test]
async fn malformed_rows_are_reported_by_line_and_strict_refuses() {
    let h = "commit\tval_bpb\tmemory_gb\tstatus\tdescription\n";
    let cases: &[(String, &[(usize, &str)])] = &[
        (format!("{h}a\t1.0\t2.0\tkeep\tok\n"), &[]),
        (format!("{h}a\t1.0\t2.0\tkeep\n"), &[(2, "4 columns")]),
        (format!("{h}a\t1.0\t2.0\tkeep\tx\ty\n"), &[(2, "6 columns")]),
        (
            format!("{h}a\tnan?\t2.0\tdiscard\tx\n"),
            &[(2, "not a number")],
        ),
        (format!("{h}a\t\t2.0\tkeep\tx\n"), &[(2, "not a number")]),
        (format!("{h}a\tOOM\t\tcrash\tx\n"), &[]),
        (
            format!("{h}a\t1.0\t2.0\tmaybe\tx\n"),
            &[(2, "not keep, discard or crash")],
        ),
        (format!("{h}\t1.0\t2.0\tkeep\tx\n"), &[(2, "empty commit")]),
        (
            format!("{h}a\t1.0\t2.0\tkeep\tx\n\nb\tbad\t1\tkeep\ty\r\nc\t0.5\t1\tkeep\tz\n"),
            &[(4, "not a number")],
        ),
    ];
    for (text, expected) in cases {
        let (_d, path) = file(text);
        let (storage, registry) = common::ledger();
        let report = tsv::import(storage.clone(), registry.clone(), &path, &opts("x"))
            .await
            .unwrap();
        let got: Vec<usize> = report.malformed.iter().map(|m| m.line).collect();
        let want: Vec<usize> = expected.iter().map(|(l, _)| *l).collect();
        assert_eq!(got, want, "{text:?}");
        for (m, (_, word)) in report.malformed.iter().zip(expected.iter()) {
            assert!(m.reason.contains(word), "{text:?}: {}", m.reason);
        }
        let (storage, registry) = common::ledger();
        let strict = TsvImport {
            strict: true,
            ..opts("x")
        };
        let res = tsv::import(storage.clone(), registry, &path, &strict).await;
        if expected.is_empty() {
            assert!(res.is_ok(), "{text:?}");
        } else {
            let err = res.unwrap_err();
            assert!(matches!(err, TsvError::Malformed { .. }), "{err}");
            assert!(
                err.to_string().contains(&format!("line {}", expected[0].0)),
                "{err}"
            );
            assert!(
                storage.list_worlds().await.unwrap().is_empty(),
                "strict wrote {text:?}"
            );
        }
    }
}

#[tokio::test]
async fn header_problems_and_missing_files_are_errors() {
    let cases: &[(&str, Option<&str>, &str)] = &[
        ("", None, "empty"),
        ("hash\tval_bpb\tstatus\n", None, "no `commit` column"),
        ("commit\tval_bpb\tdescription\n", None, "no `status` column"),
        (
            "commit\tval_bpb\tstatus\n",
            Some("loss"),
            "`loss` is not a numeric column",
        ),
        (
            "commit\tstatus\tdescription\n",
            None,
            "`status` is not a numeric column",
        ),
        ("commit\tx\tx\tstatus\n", None, "twice"),
    ];
    for (text, metric, message) in cases {
        let (_d, path) = file(text);
        let (storage, registry) = common::ledger();
        let o = TsvImport {
            metric: metric.map(String::from),
            ..opts("x")
        };
        let err = tsv::import(storage.clone(), registry, &path, &o)
            .await
            .unwrap_err();
        assert!(err.to_string().contains(message), "{text:?}: {err}");
        assert!(err.to_string().contains("results.tsv"), "{err}");
        assert!(storage.list_worlds().await.unwrap().is_empty());
    }
    let (storage, registry) = common::ledger();
    let err = tsv::import(
        storage,
        registry,
        std::path::Path::new("/nonexistent/r.tsv"),
        &opts("x"),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, TsvError::Io { .. }), "{err}");
}

#[tokio::test]
async fn metric_and_direction_options_are_recorded() {
    let text = "commit\tmemory_gb\treward\tstatus\tdescription\na\t1.5\t10\tkeep\tfirst\nb\t1.5\t12\tkeep\tsecond\n";
    let (_d, path) = file(text);
    let (storage, registry) = common::ledger();
    let o = TsvImport {
        metric: Some("reward".into()),
        direction: Some(Direction::Maximize),
        ..opts("rl")
    };
    tsv::import(storage.clone(), registry.clone(), &path, &o)
        .await
        .unwrap();
    let w = World::open(storage, registry, "autoresearch:rl")
        .await
        .unwrap();
    let meta = w.experiment("rl").unwrap().1.metadata().unwrap();
    assert_eq!(
        (meta["metric"].as_str(), meta["direction"].as_str()),
        (Some("reward"), Some("maximize"))
    );
    let log = tsv::attempt_log(&w, "rl");
    assert_eq!(log.metric.as_deref(), Some("reward"));
    // The file's column order is kept; the head descriptor holds the metric.
    assert_eq!(log.to_tsv().0, text);
    assert_eq!(
        w.branch_head("rl").unwrap().1.descriptor().unwrap(),
        json!({"reward": 12.0})
    );
}

/// A world written the way the loop writes it (no recorded layout, full
/// hashes, several Results per run, every Outcome status) exports sensibly.
#[tokio::test]
async fn export_of_a_loop_written_experiment() {
    let (storage, registry) = common::ledger();
    let mut w = World::create(storage, registry, &experiment_world_name("loop"))
        .await
        .unwrap();
    w.spawn_with(&Experiment::new(
        "loop",
        "repo",
        "main",
        0,
        &json!({"metric": "score"}),
    ))
    .unwrap();
    w.spawn_with(&BranchHead::new("loop", "", "", &json!({}), 0))
        .unwrap();
    let full = |c: char| c.to_string().repeat(40);
    type Case<'a> = (&'a str, char, RunStatus, Option<&'a str>, &'a [f64]);
    let attempts: &[Case] = &[
        ("r0", 'a', RunStatus::Stopped, Some("baseline"), &[2.0]),
        ("r1", 'b', RunStatus::Stopped, Some("keep"), &[1.0, 2.0]),
        ("r2", 'c', RunStatus::Stopped, Some("discard"), &[3.0]),
        ("r3", 'd', RunStatus::Crashed, Some("crash"), &[]),
        ("r4", 'e', RunStatus::Stopped, Some("pending"), &[1.0]),
        ("r5", 'f', RunStatus::Running, None, &[]),
        ("r6", '0', RunStatus::Crashed, None, &[]),
    ];
    for (id, c, status, outcome, samples) in attempts {
        let mut run = Run::new(*id, "loop");
        run.set_status(*status);
        run.commit_hash = full(*c);
        let e = w.spawn_with(&run).unwrap();
        for s in *samples {
            w.spawn_with(&EvalResult::new(
                *id,
                "bench",
                &json!({"score": s, "tokens": 7}),
                0,
            ))
            .unwrap();
        }
        if let Some(o) = outcome {
            w.insert(
                e,
                &Outcome {
                    run_id: id.to_string(),
                    status: (*o).into(),
                    reason: format!("why {id}"),
                    ..Outcome::default()
                },
            )
            .unwrap();
        }
        // What the proposer tried: its subject is the description column.
        if *id == "r1" {
            let text = "halve the learning rate\n\nit oscillated".to_string();
            w.insert(
                e,
                &autoresearch_core::Description {
                    run_id: id.to_string(),
                    text,
                },
            )
            .unwrap();
        }
    }
    w.commit().await.unwrap();
    let log = tsv::attempt_log(&w, "loop");
    assert_eq!(log.columns, ["score", "tokens"]);
    let (text, skipped) = log.to_tsv();
    assert_eq!(skipped, 2, "pending and undecided rows are left out");
    assert_eq!(
        text,
        "commit\tscore\ttokens\tstatus\tdescription\treason
aaaaaaa\t2.000000\t7\tkeep\tbaseline\twhy r0
bbbbbbb\t1.500000\t7\tkeep\thalve the learning rate\twhy r1
ccccccc\t3.000000\t7\tdiscard\t\twhy r2
ddddddd\t\t\tcrash\t\twhy r3
0000000\t\t\tcrash\t\t
"
    );
    let pending = log.rows.iter().find(|r| r.run_id == "r4").unwrap();
    assert_eq!(
        (pending.outcome.as_str(), pending.status.as_deref()),
        ("pending", None)
    );
}

#[tokio::test]
async fn a_guessed_metric_gives_way_to_the_comparators_but_a_recorded_layout_does_not() {
    let (storage, registry) = common::ledger();
    let mut w = World::create(storage, registry, &experiment_world_name("x"))
        .await
        .unwrap();
    w.spawn_with(&Experiment::new("x", "repo", "main", 0, &json!({})))
        .unwrap();
    let e = w.spawn_with(&Run::new("r0", "x")).unwrap();
    w.spawn_with(&EvalResult::new(
        "r0",
        "eval",
        &json!({"a_first": 1.0, "loss": 0.123456789}),
        0,
    ))
    .unwrap();
    w.insert(
        e,
        &Outcome {
            run_id: "r0".into(),
            status: "baseline".into(),
            ..Outcome::default()
        },
    )
    .unwrap();
    w.commit().await.unwrap();
    let mut log = tsv::attempt_log(&w, "x");
    assert_eq!(
        log.metric.as_deref(),
        Some("a_first"),
        "guessed: first column"
    );
    assert!(!log.declared);
    log.prefer_metric("loss", Some("minimize"));
    assert_eq!(log.columns, ["loss", "a_first"]);
    assert_eq!(log.metric.as_deref(), Some("loss"));
    let (text, _) = log.to_tsv();
    assert!(text.starts_with("commit\tloss\ta_first\tstatus"), "{text}");
    assert!(text.contains("\t0.123456789\t1\tkeep"), "{text}");
    log.prefer_metric("absent", None);
    assert_eq!(
        log.metric.as_deref(),
        Some("loss"),
        "unknown metrics are ignored"
    );

    // An imported file's layout is kept as recorded.
    let (_dir, path) = file(
        "commit\tval_bpb\tmemory_gb\tstatus\tdescription\nabc1234\t0.99\t44.0\tkeep\tbaseline\n",
    );
    let (storage, registry) = common::ledger();
    tsv::import(storage.clone(), registry.clone(), &path, &opts("imp"))
        .await
        .unwrap();
    let w = World::open(storage, registry, &experiment_world_name("imp"))
        .await
        .unwrap();
    let mut log = tsv::attempt_log(&w, "imp");
    assert!(log.declared);
    log.prefer_metric("memory_gb", None);
    assert_eq!(log.columns, ["val_bpb", "memory_gb"]);
}

/// An experiment the loop runs is never imported into: its log and head stay
/// the loop's own, and the error names the experiment and a way out.
#[tokio::test]
async fn an_import_into_a_loop_experiment_is_refused_and_writes_nothing() {
    let (_d, path) = file(KARPATHY);
    let (storage, registry) = common::ledger();
    let name = experiment_world_name("live");
    let mut w = World::create(storage.clone(), registry.clone(), &name)
        .await
        .unwrap();
    let loop_meta = json!({ Experiment::CONTROLLER_KEY: Experiment::LOOP_CONTROLLER });
    w.spawn_with(&Experiment::new("live", "/repo", "main", 1, &loop_meta))
        .unwrap();
    w.spawn_with(&BranchHead::new("live", "f00d", "r0", &json!({}), 1))
        .unwrap();
    let head = w.commit().await.unwrap();
    let err = tsv::import(storage.clone(), registry.clone(), &path, &opts("live"))
        .await
        .unwrap_err();
    assert!(matches!(err, TsvError::LoopExperiment { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("\"live\"") && msg.contains("--experiment live-import"),
        "{msg}"
    );
    let w = World::open(storage.clone(), registry.clone(), &name)
        .await
        .unwrap();
    assert_eq!(w.tick(), head, "nothing written");
    assert_eq!(w.branch_head("live").unwrap().1.commit_hash, "f00d");
    // The name the error suggests imports.
    let report = tsv::import(storage, registry, &path, &opts("live-import"))
        .await
        .unwrap();
    assert_eq!(report.imported, 5);
}
