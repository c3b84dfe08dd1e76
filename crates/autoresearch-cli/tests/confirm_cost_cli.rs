//! Held-out confirmation and cost per candidate through the real binary: a
//! real git repository, shell scripts as proposer, evaluator and confirm
//! command, the bubblewrap sandbox (which hides the held-out data from the
//! proposer and the evaluator), the redb ledger.

mod common;

use autoresearch_core::lifecycle::{Attempt, attempts};
use autoresearch_core::{ConfirmStatus, Confirmation, RunCost};
use autoresearch_test_support::git::{git, init_main};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_autoresearch");

struct Repo {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    ctl: PathBuf,
    held_out: PathBuf,
}

/// A repository whose candidates score the lines of `ctl/scores` in turn
/// (the tip scores 100; lower is better); the confirm command prints the
/// `heldout` value `held_out/table` gives each score, and appends the
/// score it confirmed to `ctl/confirm_calls`. The proposer prints
/// `tokens: 100` and `cost: 0.5`, and records what it sees of the held-out
/// folder in `ctl/proposer_saw_N`; the evaluator burns a little CPU.
/// `extra` is appended to the config (a `[run.cost_budget]`, say).
fn repo(scores: &[u32], table: &[(u32, u32)], tolerance: f64, extra: &str) -> Repo {
    repo_in(scores, table, tolerance, extra, "bwrap")
}

/// [`repo`] with jobs run in `sandbox` (`bwrap` or `none`).
fn repo_in(
    scores: &[u32],
    table: &[(u32, u32)],
    tolerance: f64,
    extra: &str,
    sandbox: &str,
) -> Repo {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let ctl = tmp.path().join("ctl");
    let held_out = tmp.path().join("heldout");
    for d in [&dir, &ctl, &held_out] {
        std::fs::create_dir(d).unwrap();
    }
    let list: String = scores.iter().map(|s| format!("{s}\n")).collect();
    std::fs::write(ctl.join("scores"), list).unwrap();
    let rows: String = table.iter().map(|(s, h)| format!("{s} {h}\n")).collect();
    std::fs::write(held_out.join("table"), rows).unwrap();
    let (c, h) = (ctl.display(), held_out.display());
    let config = format!(
        r#"name = "exp"
branch = "main"

[propose]
command = '''
n=$(cat {c}/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}/n
ls -A {h} > {c}/proposer_saw_$n 2>&1
cp "$AUTORESEARCH_RESULTS" {c}/history_$n
echo "tokens: 100"
echo "cost: 0.5"
sed -n "${{n}}p" {c}/scores > score.txt
'''
timeout = "60s"

[evaluate]
command = '''
ls -A {h} > {c}/evaluator_saw 2>&1
i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done
echo "score: $(cat score.txt)"
'''
timeout = "60s"
protect = ["autoresearch.toml"]

[compare]
kind = "scalar"
metric = "score"
direction = "minimize"

[confirm]
command = '''
s=$(cat score.txt); echo $s >> {c}/confirm_calls
echo "heldout: $(grep "^$s " {h}/table | cut -d' ' -f2)"
'''
metric = "heldout"
direction = "min"
tolerance = {tolerance}
data = ["{h}"]

[run]
sandbox = "{sandbox}"
sandbox_writable = ["{c}"]
{extra}
"#
    );
    init_main(&dir);
    std::fs::write(dir.join("score.txt"), "100\n").unwrap();
    std::fs::write(dir.join("autoresearch.toml"), config).unwrap();
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-q", "-m", "start"]);
    Repo {
        _tmp: tmp,
        dir,
        ctl,
        held_out,
    }
}

impl Repo {
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .current_dir(&self.dir)
            .env_remove("AUTORESEARCH_LEDGER")
            .env_remove("AUTORESEARCH_TEST_CRASH_AT");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args, &[]);
        assert!(
            out.status.success(),
            "autoresearch {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }

    fn tip(&self) -> String {
        git(&self.dir, &["rev-parse", "refs/heads/main"])
    }

    fn score_at(&self, commit: &str) -> String {
        git(&self.dir, &["show", &format!("{commit}:score.txt")])
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.ctl.join(name)).unwrap_or_default()
    }

    /// The attempts, and each run's Confirmation and RunCost.
    async fn attempts(&self) -> Vec<(Attempt, Option<Confirmation>, Option<RunCost>)> {
        let w = common::exp_world(&self.dir).await;
        attempts(&w, "exp")
            .into_iter()
            .map(|a| {
                let (c, k) = (w.get(a.entity), w.get(a.entity));
                (a, c, k)
            })
            .collect()
    }
}

fn status_of(a: &Attempt) -> String {
    a.outcome
        .as_ref()
        .map_or("-".into(), |o| o.status.to_string())
}

fn reason_of(a: &Attempt) -> String {
    a.outcome
        .as_ref()
        .map_or(String::new(), |o| o.reason.clone())
}

#[tokio::test]
async fn a_candidate_that_regresses_on_held_out_data_is_discarded_and_shown() {
    // Search scores fall 90, 80, 70; held-out values 45, 60 (a regression
    // against 45), 44.
    let r = repo(
        &[90, 80, 70],
        &[(100, 50), (90, 45), (80, 60), (70, 44)],
        0.0,
        "",
    );
    let out = r.ok(&["run", "--iterations", "3"]);
    assert!(out.contains("3 launched, 2 kept, 1 discarded"), "{out}");
    let all = r.attempts().await;
    let statuses: Vec<String> = all.iter().map(|(a, _, _)| status_of(a)).collect();
    assert_eq!(statuses, ["baseline", "keep", "discard", "keep"]);
    assert_eq!(r.score_at(&r.tip()), "70");

    // The incumbent's value was measured once, on the baseline's run, and
    // reused: each candidate confirmed once.
    assert_eq!(r.read("confirm_calls"), "100\n90\n80\n70\n");
    let (base, base_conf, _) = &all[0];
    let base_conf = base_conf.as_ref().expect("the baseline's reference value");
    assert_eq!(base_conf.status, ConfirmStatus::Measured);
    assert_eq!(base_conf.value, Some(50.0));
    assert_eq!(base_conf.commit, base.run.commit_hash);

    let (kept, kept_conf, _) = &all[1];
    let kept_conf = kept_conf.as_ref().unwrap();
    assert_eq!(kept_conf.status, ConfirmStatus::Confirmed);
    assert_eq!(
        (kept_conf.value, kept_conf.incumbent_value),
        (Some(45.0), Some(50.0))
    );
    let descriptor = kept.outcome.as_ref().unwrap().descriptor().unwrap();
    assert_eq!(descriptor["confirm"]["status"], "confirmed");

    let (rejected, rejected_conf, _) = &all[2];
    let rejected_conf = rejected_conf.as_ref().unwrap();
    assert_eq!(rejected_conf.status, ConfirmStatus::Rejected);
    assert_eq!(
        (rejected_conf.value, rejected_conf.incumbent_value),
        (Some(60.0), Some(45.0))
    );
    let reason = reason_of(rejected);
    assert!(
        reason.starts_with(
            "not confirmed: it regressed on the held-out data; the comparator would keep it (score improved"
        ),
        "{reason}"
    );
    assert!(
        rejected_conf
            .reason
            .contains("heldout 60 vs the incumbent's 45 (lower is better, tolerance 0)"),
        "{}",
        rejected_conf.reason
    );
    // The proposer's history says it was not confirmed, never the values.
    let seen = r.read("history_3");
    let row = &seen[seen.find("not confirmed").expect("a not-confirmed row")..];
    assert!(
        !row.contains("60") && !row.contains("45") && !row.contains("heldout"),
        "{seen}"
    );
    let o = rejected.outcome.as_ref().unwrap();
    assert_eq!(
        autoresearch_core::LoopCause::of(o),
        Some(autoresearch_core::LoopCause::NotConfirmed)
    );

    // The held-out folder is hidden from the proposer and the evaluator.
    for n in 1..=3 {
        assert_eq!(r.read(&format!("proposer_saw_{n}")), "", "proposal {n}");
    }
    assert_eq!(r.read("evaluator_saw"), "");
    assert!(r.held_out.join("table").exists());

    // log, show and the chart show it.
    let log = r.ok(&["log"]);
    assert!(log.contains("CONFIRM"), "{log}");
    assert!(log.contains("rejected 60 vs 45"), "{log}");
    assert!(log.contains("ok 45"), "{log}");
    let show = r.ok(&["show", &rejected.run.run_id]);
    assert!(
        show.contains("confirm    rejected (heldout min) value 60, incumbent 45"),
        "{show}"
    );
    let shown = r.json(&["show", &rejected.run.run_id, "--json"]);
    assert_eq!(shown["confirmation"]["status"], "rejected");
    let chart = r.json(&["plot", "--json"]);
    let confirmed: Vec<Value> = chart["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["confirmed"].clone())
        .collect();
    assert_eq!(
        confirmed,
        [
            Value::Null,
            Value::Bool(true),
            Value::Bool(false),
            Value::Bool(true)
        ]
    );
    let svg = r.dir.join("chart.svg");
    r.ok(&["plot", "--out", svg.to_str().unwrap()]);
    let svg = std::fs::read_to_string(svg).unwrap();
    assert!(svg.contains("Not confirmed (held-out)"));
}

#[tokio::test]
async fn cpu_time_is_measured_without_the_sandbox_too() {
    let r = repo_in(&[90], &[(100, 50), (90, 45)], 0.0, "", "none");
    r.ok(&["run", "--iterations", "1"]);
    let all = r.attempts().await;
    for (a, _, cost) in &all {
        let cost = cost.as_ref().unwrap();
        assert!(cost.evaluate.cpu_ms > 0, "{}: {cost:?}", a.run.run_id);
        assert!(
            cost.evaluate.cpu_ms <= cost.evaluate.wall_ms + 20,
            "{cost:?}"
        );
    }
}

#[tokio::test]
async fn a_tolerance_lets_a_small_held_out_regression_through() {
    let r = repo(&[90], &[(100, 50), (90, 52)], 2.5, "");
    let out = r.ok(&["run", "--iterations", "1"]);
    assert!(out.contains("1 kept"), "{out}");
    let all = r.attempts().await;
    assert_eq!(
        all[1].1.as_ref().map(|c| c.status.clone()),
        Some(ConfirmStatus::Confirmed)
    );
}

#[tokio::test]
async fn a_failing_confirm_command_is_a_discard_saying_why() {
    // No table row for 90: the confirm command prints `heldout: ` without a value.
    let r = repo(&[90], &[(100, 50)], 0.0, "");
    r.ok(&["run", "--iterations", "1"]);
    let all = r.attempts().await;
    assert_eq!(status_of(&all[1].0), "discard");
    let reason = reason_of(&all[1].0);
    assert!(
        reason.starts_with("not confirmed: the confirm command failed on the candidate;"),
        "{reason}"
    );
    // The details (the confirm output's near miss) only in the record.
    assert!(!reason.contains("heldout:"), "{reason}");
    let why = &all[1].1.as_ref().unwrap().reason;
    assert!(why.contains("no metric in the output"), "{why}");
    assert_eq!(
        all[1].1.as_ref().map(|c| c.status.clone()),
        Some(ConfirmStatus::Failed)
    );
    assert_eq!(r.score_at(&r.tip()), "100");
}

#[tokio::test]
async fn a_kill_during_confirmation_recovers_as_interrupted_never_promoted() {
    let r = repo(&[90, 80], &[(100, 50), (90, 45), (80, 40)], 0.0, "");
    let start = r.tip();
    let out = r.run(
        &["run", "--iterations", "1"],
        &[("AUTORESEARCH_TEST_CRASH_AT", "confirming")],
    );
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(9));
    // What the ledger holds: the run confirming, nothing measured yet.
    let all = r.attempts().await;
    let (a, conf, _) = &all[1];
    assert_eq!(a.run.status, "running");
    assert_eq!(conf.as_ref().unwrap().status, ConfirmStatus::Running);
    let state = autoresearch_core::AttemptState::of(&a.run, a.outcome.as_ref())
        .with_confirmation(&a.run, conf.as_ref());
    assert_eq!(state, autoresearch_core::AttemptState::Confirming);
    assert_eq!(r.tip(), start);

    let out = r.ok(&["run", "--iterations", "1"]);
    assert!(out.contains("1 kept"), "{out}");
    let all = r.attempts().await;
    let statuses: Vec<String> = all.iter().map(|(a, _, _)| status_of(a)).collect();
    assert_eq!(statuses, ["baseline", "crash", "keep"]);
    assert_eq!(
        reason_of(&all[1].0),
        "interrupted during its held-out confirmation"
    );
    assert_eq!(
        all[1].1.as_ref().unwrap().status,
        ConfirmStatus::Interrupted
    );
    // The second candidate (80) was confirmed against a freshly measured
    // incumbent and promoted.
    assert_eq!(r.score_at(&r.tip()), "80");
    assert_eq!(r.read("confirm_calls"), "100\n80\n");
}

#[tokio::test]
async fn costs_are_stored_per_run_summed_in_status_and_a_budget_stops_the_loop() {
    // Every proposal costs 0.5: the budget of 1 is spent after two. In the
    // bubblewrap sandbox (a wrapper shell reports CPU time).
    let r = repo(
        &[90, 80, 70, 60],
        &[(100, 50), (90, 45), (80, 40), (70, 35), (60, 30)],
        0.0,
        "[run.cost_budget]\nmetric = \"cost\"\nlimit = 1.0\n",
    );
    let out = r.ok(&["run", "--iterations", "4"]);
    assert!(
        out.contains("cost budget spent: 1 cost spent of a budget of 1: 2 launched"),
        "{out}"
    );
    let all = r.attempts().await;
    assert_eq!(all.len(), 3);
    for (a, _, cost) in &all[1..] {
        let cost = cost.as_ref().expect("a candidate's cost");
        assert_eq!(cost.metrics.get("cost"), Some(&0.5), "{}", a.run.run_id);
        assert_eq!(cost.metrics.get("tokens"), Some(&100.0));
        assert!(cost.propose.wall_ms > 0);
        // The evaluator's busy loop is measured, and CPU time is within
        // its wall-clock time (one thread).
        assert!(cost.evaluate.cpu_ms > 0, "{cost:?}");
        assert!(
            cost.evaluate.cpu_ms <= cost.evaluate.wall_ms + 20,
            "{cost:?}"
        );
        assert!(cost.confirm.wall_ms > 0, "{cost:?}");
    }
    // The baseline's run carries its evaluation and its reference confirmation.
    let base_cost = all[0].2.as_ref().unwrap();
    assert_eq!(base_cost.jobs, 2);

    let status = r.json(&["status", "--json"]);
    assert_eq!(status["cost"]["metrics"]["cost"], 1.0);
    assert_eq!(status["cost"]["metrics"]["tokens"], 200.0);
    assert!(status["cost"]["cpu_ms"].as_u64().unwrap() > 0);
    let text = r.ok(&["status"]);
    assert!(text.contains("cost       CPU "), "{text}");
    assert!(text.contains("; cost 1; tokens 200"), "{text}");
    assert!(
        text.contains("budget     spent (1 cost spent of a budget of 1)"),
        "{text}"
    );

    // A later invocation stops at once: the budget is the experiment's.
    let again = r.ok(&["run", "--iterations", "4"]);
    assert!(again.contains("0 launched"), "{again}");
}

/// The held-out data must be outside the repository.
#[test]
fn held_out_data_inside_the_repository_is_refused() {
    let r = repo(&[90], &[(100, 50)], 0.0, "");
    let inside = r.dir.join("heldout");
    std::fs::create_dir(&inside).unwrap();
    let config = std::fs::read_to_string(r.dir.join("autoresearch.toml")).unwrap();
    let config = config.replace(
        &format!("data = [\"{}\"]", r.held_out.display()),
        "data = [\"heldout\"]",
    );
    std::fs::write(r.dir.join("autoresearch.toml"), config).unwrap();
    let out = r.run(&["run", "--iterations", "1"], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is inside the repository"), "{err}");
}
