//! `autoresearch replay`, `fork` and `vote` on a results.tsv imported with
//! `autoresearch ingest tsv`, against the real redb ledger.

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_autoresearch");

/// karpathy/autoresearch's results.tsv shape: lower val_bpb is better.
const TSV: &str = "commit\tval_bpb\tmemory_gb\tstatus\tdescription
a1b2c3d\t0.997900\t44.0\tkeep\tbaseline
b2c3d4e\t0.993200\t44.2\tkeep\tincrease LR to 0.04
c3d4e5f\t1.005000\t44.0\tdiscard\tswitch to GeLU activation
d4e5f6a\t0.000000\t0.0\tcrash\tdouble model width (OOM)
e5f6a7b\t0.992800\t44.1\tkeep\tsmaller warmup
f6a7b8c\t0.986000\t45.0\tkeep\tlonger context
";

struct Env {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        std::fs::write(dir.join("results.tsv"), TSV).unwrap();
        let env = Env { _tmp: tmp, dir };
        let out = env.run(&["ingest", "tsv", "results.tsv", "--experiment", "nano"]);
        assert!(
            out.status.success(),
            "ingest: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        env
    }

    /// The file imported in two steps: its first two rows (tick 2, after
    /// the experiment's tick 1), then the whole file (tick 3, adding the
    /// other four). An import is one tick, so tick 2 is the point "after the
    /// second row" that replays and forks can start from.
    fn in_two_imports() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let first: String = TSV.lines().take(3).map(|l| format!("{l}\n")).collect();
        let env = Env { _tmp: tmp, dir };
        for text in [first.as_str(), TSV] {
            std::fs::write(env.dir.join("results.tsv"), text).unwrap();
            env.ok(&["ingest", "tsv", "results.tsv", "--experiment", "nano"]);
        }
        env
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .current_dir(&self.dir)
            .env_remove("AUTORESEARCH_LEDGER")
            .env("USER", "tester")
            .arg("--ledger")
            .arg(self.dir.join("ledger.redb"))
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let text = self.ok(args);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
    }

    /// Runs a command that must fail, returning its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "{args:?} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

fn statuses(report: &Value, side: &str) -> Vec<String> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[side]["status"].as_str().unwrap().to_string())
        .collect()
}

fn trajectory(report: &Value, key: &str) -> Vec<String> {
    report[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["commit"].as_str().unwrap().to_string())
        .collect()
}

/// Replays the imported file under `spec` and expects the counterfactual
/// statuses and head trajectory.
fn check(env: &Env, spec: &str, fork: &str, expected: &[&str], heads: &[&str]) {
    let r = env.json(&[
        "replay",
        "--experiment",
        "nano",
        "--comparator",
        spec,
        "--name",
        fork,
        "--json",
    ]);
    assert_eq!(r["comparator"], Value::from(spec.to_string()), "{spec}");
    assert_eq!(
        statuses(&r, "original"),
        ["keep", "keep", "discard", "crash", "keep", "keep"]
    );
    assert_eq!(statuses(&r, "counterfactual"), expected, "{spec}");
    assert_eq!(
        trajectory(&r, "counterfactual_trajectory")[1..],
        *heads,
        "{spec}"
    );
    assert_eq!(
        trajectory(&r, "original_trajectory")[1..],
        ["a1b2c3d", "b2c3d4e", "e5f6a7b", "f6a7b8c"]
    );
    // The fork is a world of its own whose head is the counterfactual one.
    let worlds = env.json(&["worlds", "--json"]);
    let names: Vec<&str> = worlds
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["name"].as_str())
        .collect();
    assert!(names.contains(&fork), "{fork} in {names:?}");
}

#[test]
fn replay_an_imported_results_tsv_under_other_comparators() {
    let env = Env::new();
    let (b, k, d, c) = ("baseline", "keep", "discard", "crash");
    check(
        &env,
        "scalar:val_bpb:min",
        "same",
        &[b, k, d, c, k, k],
        &["a1b2c3d", "b2c3d4e", "e5f6a7b", "f6a7b8c"],
    );
    check(
        &env,
        "scalar:val_bpb:min:delta=0.002",
        "delta",
        &[b, k, d, c, d, k],
        &["a1b2c3d", "b2c3d4e", "f6a7b8c"],
    );
    check(
        &env,
        "pareto:val_bpb:min,memory_gb:min",
        "pareto",
        &[b, d, d, c, d, d],
        &["a1b2c3d"],
    );
    check(
        &env,
        "pareto:val_bpb:min,memory_gb:min:eps=0.5",
        "pareto-eps",
        &[b, k, d, c, k, d],
        &["a1b2c3d", "b2c3d4e", "e5f6a7b"],
    );
    // One sample each: the statistical test cannot decide and says so.
    let r = env.json(&[
        "replay",
        "--experiment",
        "nano",
        "--comparator",
        "stat:val_bpb:min",
        "--json",
    ]);
    assert_eq!(r["fork_world"], "nano-replay-stat");
    let reason = r["steps"][1]["counterfactual"]["reason"].as_str().unwrap();
    assert!(reason.contains("never taken"), "{reason}");
    // A second default-named replay gets a fresh name.
    let r = env.json(&[
        "replay",
        "--experiment",
        "nano",
        "--comparator",
        "stat:val_bpb:min",
        "--json",
    ]);
    assert_eq!(r["fork_world"], "nano-replay-stat-2");
}

#[test]
fn replay_prints_both_trajectories_side_by_side() {
    let env = Env::new();
    let out = env.ok(&[
        "replay",
        "--experiment",
        "nano",
        "--comparator",
        "scalar:val_bpb:min:delta=0.002",
    ]);
    assert!(
        out.contains("counterfactual: scalar:val_bpb:min:delta=0.002  -> fork nano-replay-scalar"),
        "{out}"
    );
    assert!(out.contains("original:       results.tsv"), "{out}");
    let l6 = out.lines().find(|l| l.starts_with("nano-tsv-L6")).unwrap();
    assert!(l6.contains("keep     e5f6a7b *discard  b2c3d4e"), "{l6}");
    assert!(l6.contains("not more than min_delta 0.002"), "{l6}");
    assert!(
        out.contains("6 candidates re-decided, 1 differently (*)"),
        "{out}"
    );
    assert!(
        out.contains("original       a1b2c3d -> b2c3d4e -> e5f6a7b -> f6a7b8c"),
        "{out}"
    );
    assert!(
        out.contains("counterfactual a1b2c3d -> b2c3d4e -> f6a7b8c"),
        "{out}"
    );
    assert!(out.contains("autoresearch run --world nano-replay-scalar (on branch autoresearch/nano-replay-scalar)"), "{out}");
}

#[test]
fn replay_from_a_tick() {
    let env = Env::in_two_imports();
    // Tick 2 is after the second row: its head is b2c3d4e.
    let r = env.json(&[
        "replay",
        "--experiment",
        "nano",
        "--comparator",
        "scalar:val_bpb:max",
        "--from",
        "2",
        "--json",
    ]);
    assert_eq!(r["from_tick"], 2);
    assert_eq!(r["start_head"]["commit"], "b2c3d4e");
    assert_eq!(
        statuses(&r, "counterfactual"),
        ["keep", "crash", "discard", "discard"]
    );
    assert_eq!(r["counterfactual_head"]["commit"], "c3d4e5f");
}

#[test]
fn replay_errors() {
    let env = Env::new();
    let err = env.fails(&[
        "replay",
        "--experiment",
        "nano",
        "--comparator",
        "scalar:val_bpb",
    ]);
    assert!(err.contains("--comparator \"scalar:val_bpb\""), "{err}");
    assert!(err.contains("needs a direction"), "{err}");
    let err = env.fails(&[
        "replay",
        "--experiment",
        "nano",
        "--comparator",
        "scalar:val_bpb:min",
        "--from",
        "99",
    ]);
    assert!(err.contains("tick 99 is beyond its head 2"), "{err}");
    let err = env.fails(&[
        "replay",
        "--experiment",
        "ghost",
        "--comparator",
        "scalar:val_bpb:min",
    ]);
    assert!(
        err.contains("no world named \"autoresearch:ghost\""),
        "{err}"
    );
    // Without --experiment or a config, the ledger's only experiment; a
    // dry run writes no fork.
    let worlds = env.json(&["worlds", "--json"]);
    let dry = env.json(&[
        "replay",
        "--comparator",
        "scalar:val_bpb:max",
        "--dry-run",
        "--json",
    ]);
    assert_eq!(dry["experiment"], "nano", "{dry}");
    assert_eq!(dry["dry_run"], true, "{dry}");
    assert!(dry["fork_world"].is_null(), "{dry}");
    assert!(!dry["steps"].as_array().unwrap().is_empty(), "{dry}");
    assert_eq!(env.json(&["worlds", "--json"]), worlds, "nothing written");
    let text = env.ok(&["replay", "--comparator", "scalar:val_bpb:max", "--dry-run"]);
    assert!(text.contains("dry run: no fork written"), "{text}");
    assert_eq!(env.json(&["worlds", "--json"]), worlds, "nothing written");
    env.ok(&[
        "replay",
        "--experiment",
        "nano",
        "--comparator",
        "vote",
        "--name",
        "taken",
    ]);
    let err = env.fails(&[
        "replay",
        "--experiment",
        "nano",
        "--comparator",
        "vote",
        "--name",
        "taken",
    ]);
    assert!(err.contains("already exists"), "{err}");
}

#[test]
fn fork_promotes_a_run_at_a_tick() {
    let env = Env::in_two_imports();
    // At tick 2 (head b2c3d4e), make the discarded GeLU change the head.
    let r = env.json(&[
        "fork",
        "--experiment",
        "nano",
        "--at",
        "2",
        "--promote",
        "nano-tsv-L4",
        "--name",
        "gelu",
        "--json",
    ]);
    assert_eq!(r["previous_head"]["commit"], "b2c3d4e");
    assert_eq!(r["head"]["commit"], "c3d4e5f");
    assert_eq!(r["fork_world"], "gelu");
    // A replay of the fork continues from there.
    let rep = env.json(&[
        "replay",
        "--experiment",
        "nano",
        "--world",
        "gelu",
        "--comparator",
        "scalar:val_bpb:min",
        "--from",
        "3",
        "--json",
    ]);
    assert_eq!(rep["start_head"]["commit"], "c3d4e5f");
    assert_eq!(rep["steps"].as_array().unwrap().len(), 0);
    let text = env.ok(&[
        "fork",
        "--experiment",
        "nano",
        "--at",
        "2",
        "--promote",
        "nano-tsv-L7",
    ]);
    assert!(text.contains("fork nano-fork-nano-tsv-L7 of autoresearch:nano at tick 2: head f6a7b8c (nano-tsv-L7) (was b2c3d4e (nano-tsv-L3))"), "{text}");
    assert!(text.contains("autoresearch run --world nano-fork-nano-tsv-L7 (on branch autoresearch/nano-fork-nano-tsv-L7)"), "{text}");
    let err = env.fails(&[
        "fork",
        "--experiment",
        "nano",
        "--at",
        "3",
        "--promote",
        "nope",
    ]);
    assert!(
        err.contains("no run \"nope\" in experiment \"nano\""),
        "{err}"
    );
    let err = env.fails(&[
        "fork",
        "--experiment",
        "nano",
        "--at",
        "3",
        "--promote",
        "nano-tsv-L",
    ]);
    assert!(err.contains("matches 6 runs"), "{err}");
}

#[test]
fn votes_are_recorded_and_unknown_runs_are_an_error() {
    let env = Env::new();
    let v = env.json(&[
        "vote",
        "nano-tsv-L4",
        "keep",
        "--experiment",
        "nano",
        "--reason",
        "GeLU is fine",
        "--json",
    ]);
    assert_eq!(v["vote"]["voter"], "tester");
    assert_eq!(v["vote"]["verdict"], "keep");
    assert_eq!(v["vote"]["reason"], "GeLU is fine");
    assert_eq!(v["votes_on_run"], 1);
    let out = env.run(&[
        "vote",
        "nano-tsv-L4",
        "discard",
        "--experiment",
        "nano",
        "--voter",
        "ana",
    ]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("ana voted discard on run nano-tsv-L4 (2 vote(s) on it now)")
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("is not waiting for votes (its outcome is discard)")
    );
    let err = env.fails(&["vote", "nano-tsv-L99", "keep", "--experiment", "nano"]);
    assert!(
        err.contains("no run \"nano-tsv-L99\" in experiment \"nano\""),
        "{err}"
    );
    let err = env.fails(&["vote", "nano-tsv-L4", "maybe", "--experiment", "nano"]);
    assert!(err.contains("invalid value 'maybe'"), "{err}");
    // Votes count in a replay under the vote comparator: two votes split, a tie discards.
    let r = env.json(&[
        "replay",
        "--experiment",
        "nano",
        "--comparator",
        "vote",
        "--json",
    ]);
    assert_eq!(
        statuses(&r, "counterfactual"),
        [
            "baseline", "pending", "discard", "crash", "pending", "pending"
        ]
    );
}

#[test]
fn every_command_has_help_with_an_example() {
    for cmd in ["replay", "fork", "vote"] {
        let out = Command::new(BIN).args([cmd, "--help"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{cmd} --help");
        assert!(
            text.contains("Example"),
            "{cmd} --help has an example: {text}"
        );
        assert!(
            text.contains(&format!("autoresearch {cmd} ")),
            "{cmd} --help shows the command"
        );
    }
}
