//! The demo's loop, end to end and quick: the sample project of
//! `cargo xtask demo` (the same fixture code, included from autoresearch-devtools), the real
//! binary running two candidates at a time under the noise-aware comparator,
//! then the chart. Real git, real Python processes.

#[path = "../../autoresearch-devtools/src/demo/fixture.rs"]
#[allow(dead_code, reason = "this test uses only part of the demo fixture")]
mod fixture;

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs the binary in `dir`, killing it after `limit`.
fn autoresearch(dir: &Path, args: &[&str], limit: Duration) -> Output {
    let logs = tempfile::tempdir().unwrap();
    let (out, err) = (logs.path().join("out"), logs.path().join("err"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_autoresearch"))
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("autoresearch {args:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = Output {
        status,
        stdout: std::fs::read(&out).unwrap(),
        stderr: std::fs::read(&err).unwrap(),
    };
    assert!(output.status.success(), "autoresearch {args:?}: {output:?}");
    output
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_demo_loop_keeps_improvements_and_survives_a_crash_and_a_hang() {
    let tmp = tempfile::tempdir().unwrap();
    let settings = fixture::LoopSettings {
        iterations: 7,
        max_samples: 5,
        evaluate_timeout_s: 3,
        ..fixture::LoopSettings::default()
    };
    let fx = fixture::create(&tmp.path().join("demo"), &settings).unwrap();
    let repo = &fx.repo;
    let minutes = Duration::from_secs(120);

    let run = autoresearch(
        repo,
        &["run", "--parallel", "2", "--iterations", "7"],
        minutes,
    );
    let progress = String::from_utf8_lossy(&run.stdout);
    assert!(progress.contains("evaluator timed out"), "{progress}");

    let status = json(&autoresearch(repo, &["status", "--json"], minutes));
    assert_eq!(status["attempts"], 8, "baseline + 7 candidates: {status}");
    assert_eq!(status["crashed"], 2, "syntax error and hang: {status}");
    assert!(status["kept"].as_u64().unwrap() >= 2, "{status}");
    assert_eq!(status["branch_tip"], status["head"]["commit"]);

    // The branch advanced in the user's checkout, which stays clean.
    let git = |args: &[&str]| fixture::git(repo, args).unwrap();
    assert_eq!(
        git(&["rev-parse", "HEAD"]),
        status["branch_tip"].as_str().unwrap()
    );
    assert_eq!(git(&["status", "--porcelain"]), "");
    let kept = git(&["log", "--format=%s", "main"]);
    assert!(kept.contains("nearest-neighbour construction"), "{kept}");
    assert!(
        !kept.contains("memoise dist()"),
        "the crash is not kept: {kept}"
    );

    let log = json(&autoresearch(
        repo,
        &["log", "--experiment", "tsp", "--format", "json"],
        minutes,
    ));
    let rows = log["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 8);
    let best = status["head"]["descriptor"]["mean"]["candidate"]
        .as_f64()
        .unwrap();
    assert!(best < 7000.0, "tour shortened from ~30000 to {best}");

    let chart = tmp.path().join("progress.png");
    let chart_arg = chart.display().to_string();
    let out = autoresearch(repo, &["plot", "--out", &chart_arg], minutes);
    assert!(String::from_utf8_lossy(&out.stdout).contains("8 attempts"));
    assert_eq!(&std::fs::read(&chart).unwrap()[..4], b"\x89PNG");

    // The chart from the ledger's chart series (issue #19) is the chart
    // of every attempt read in full: the same loop ledger copied without
    // its current-state and series tables charts the same, byte for byte.
    let copy = tmp.path().join("materialized.redb");
    common::copy_without_tables(
        &repo.join(".autoresearch/ledger.redb"),
        &copy,
        &[&common::CURRENT_TABLES[..], &common::SERIES_TABLES[..]].concat(),
    );
    let copy_arg = copy.display().to_string();
    let (svg_a, svg_b) = (tmp.path().join("a.svg"), tmp.path().join("b.svg"));
    let (a, b) = (svg_a.display().to_string(), svg_b.display().to_string());
    let series = autoresearch(repo, &["-vv", "plot", "--json", "--out", &a], minutes);
    let full = autoresearch(
        repo,
        &["--ledger", &copy_arg, "plot", "--json", "--out", &b],
        minutes,
    );
    assert!(
        String::from_utf8_lossy(&series.stderr).contains("charted from the ledger's chart series"),
        "{series:?}"
    );
    let (mut series, full) = (json(&series), json(&full));
    series["path"] = full["path"].clone();
    assert_eq!(series, full);
    assert_eq!(
        std::fs::read(&svg_a).unwrap(),
        std::fs::read(&svg_b).unwrap()
    );
}
