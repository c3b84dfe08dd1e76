//! Fair comparisons across invocations of the real binary: switching
//! comparators says what evidence is reused, and a run waiting for votes
//! is never decided by another comparator.

mod common;

use autoresearch_core::lifecycle::{Attempt, attempts};
use autoresearch_test_support::git::git;
use autoresearch_test_support::loop_repo::{LoopRepo, listed_scores_config, write_scores};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_autoresearch");

fn repo(scores: &[u32], compare: &str) -> LoopRepo {
    let r = LoopRepo::new(|ctl| listed_scores_config(ctl, compare));
    write_scores(&r.ctl, scores);
    r
}

fn run(r: &LoopRepo, args: &[&str]) -> Output {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(&r.dir)
        .env_remove("AUTORESEARCH_LEDGER")
        .env("USER", "tester")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "autoresearch {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

async fn all(r: &LoopRepo) -> Vec<Attempt> {
    let w = common::exp_world(&r.dir).await;
    attempts(&w, "exp")
}

/// The BranchHead and the score of every Result of its run on its commit.
async fn head_samples(r: &LoopRepo) -> (autoresearch_core::BranchHead, Vec<f64>) {
    let w = common::exp_world(&r.dir).await;
    let head = w.branch_head("exp").unwrap().1;
    let ev = autoresearch_core::lifecycle::stored_evidence(&w, &head.run_id, &head.commit_hash);
    let values = ev
        .results
        .iter()
        .filter_map(|r| r.outputs().ok()?.get("score")?.as_f64())
        .collect();
    (head, values)
}

fn statuses(all: &[Attempt]) -> Vec<String> {
    all.iter()
        .map(|a| a.outcome.as_ref().unwrap().status.to_string())
        .collect()
}

#[tokio::test]
async fn switching_comparators_says_which_evidence_is_reused() {
    let r = repo(
        &[90, 80],
        "kind = \"scalar\"\nmetric = \"score\"\ndirection = \"min\"",
    );
    let first = run(
        &r,
        &["run", "--iterations", "1", "--comparator", "stat:score:min"],
    );
    assert!(
        !String::from_utf8_lossy(&first.stderr).contains("comparator changed"),
        "a first run has nothing to switch from"
    );
    // The head (the stat loop's keep, or the baseline it resampled) and
    // its stored samples.
    let (head, values) = head_samples(&r).await;
    // A deterministic evaluator: stat takes one sample a side (issue #15).
    assert!(!values.is_empty(), "stat left the head without samples");
    let mean = autoresearch_core::num::fmt_f64(values.iter().sum::<f64>() / values.len() as f64);

    let second = run(&r, &["run", "--iterations", "1"]);
    let stderr = String::from_utf8_lossy(&second.stderr);
    let expected = format!(
        "comparator changed from stat:score:min to scalar:score:min: the incumbent {} (run {}) keeps its {} stored sample{}, score mean {mean}, taken under the earlier comparator, as its evidence; candidates are measured afresh",
        &head.commit_hash[..7],
        head.run_id,
        values.len(),
        if values.len() == 1 { "" } else { "s" },
    );
    assert!(stderr.contains(&expected), "{stderr}");
    // The same comparator again: nothing to say.
    let third = run(&r, &["run", "--iterations", "0", "--time-budget", "0s"]);
    assert!(
        !String::from_utf8_lossy(&third.stderr).contains("comparator changed"),
        "{}",
        String::from_utf8_lossy(&third.stderr)
    );
}

#[tokio::test]
async fn a_pending_run_is_never_decided_by_the_next_runs_comparator() {
    let r = repo(&[90, 80, 70, 60], "kind = \"vote\"");
    run(&r, &["run", "--iterations", "1"]);
    let first = all(&r).await;
    assert_eq!(statuses(&first), ["baseline", "pending"]);
    let pending = first[1].run.clone();
    let start = git(&r.dir, &["rev-parse", "refs/heads/main"]);

    // A scalar loop would keep 90 against 100: it leaves the run pending,
    // and says so.
    let out = run(
        &r,
        &[
            "run",
            "--iterations",
            "1",
            "--comparator",
            "scalar:score:min",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "run {} waits for votes under comparator vote; this loop compares with scalar:score:min, which does not decide it: it stays pending",
            pending.run_id
        )),
        "{stderr}"
    );
    let second = all(&r).await;
    let still = second
        .iter()
        .find(|a| a.run.run_id == pending.run_id)
        .unwrap();
    assert_eq!(still.outcome.as_ref().unwrap().status, "pending");
    assert_eq!(still.outcome.as_ref().unwrap().comparator, "vote");
    // The scalar loop's own candidate (80) was decided by it.
    assert_eq!(statuses(&second), ["baseline", "pending", "keep"]);
    assert_ne!(git(&r.dir, &["rev-parse", "refs/heads/main"]), start);

    // Without votes, the vote comparator's loop leaves it pending too (and
    // its own candidate, 70, waits as well).
    run(&r, &["run", "--iterations", "1"]);
    let third = all(&r).await;
    assert_eq!(statuses(&third), ["baseline", "pending", "keep", "pending"]);

    // Voted, the comparator that made it wait decides it.
    run(&r, &["vote", &pending.run_id, "discard"]);
    run(&r, &["run", "--iterations", "1"]);
    let fourth = all(&r).await;
    let o = fourth[1].outcome.as_ref().unwrap();
    assert_eq!(fourth[1].run.run_id, pending.run_id);
    assert_eq!(
        (o.status.as_str(), o.comparator.as_str()),
        ("discard", "vote")
    );
    assert_eq!(
        fourth[3].outcome.as_ref().unwrap().status,
        "pending",
        "the unvoted one still waits"
    );
}
