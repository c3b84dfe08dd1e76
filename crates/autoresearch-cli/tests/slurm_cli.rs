//! The loop with `[run] executor = "slurm"` against a real Slurm cluster:
//! the single-node cluster on loopback that `.ci/slurm-up.sh` starts and
//! `.ci/run` names in `SLURM_CONF`. Keep, discard and crash; parallel
//! candidates; a job over its Slurm time limit, and over the loop's own
//! timeout; `scancel` from outside;
//! Ctrl-C cancelling the job; the controller killed with SIGKILL while a
//! job runs, then resumed (the job adopted: waited for, its result its
//! run's, or cancelled; recorded once, never submitted again). More in
//! `slurm_results_cli.rs`.
//!
//! The baseline (score 100) is never slow, so a test's first run measures
//! it and then meets the slow candidate.
//!
//! Without a cluster (no `SLURM_CONF`), each test prints why and returns;
//! with `AUTORESEARCH_REQUIRE_SLURM` set (CI), a missing cluster fails.

mod common;
mod slurm;

use autoresearch_core::JobState;
use autoresearch_test_support::git::git;
use autoresearch_test_support::loop_repo::write_scores;
use serde_json::Value;
use slurm::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

#[tokio::test]
async fn keep_discard_crash_and_parallel_candidates_on_slurm() {
    if !cluster("keep_discard_crash_and_parallel_candidates_on_slurm") {
        return;
    }
    let r = Repo::new(Setup {
        propose_on: "slurm",
        ..Setup::default()
    });
    write_scores(&r.ctl, &[50, 70, 0, 40, 30]);
    let out = r.ok(&["run", "--iterations", "3"]);
    let (all, jobs) = r.assert_consistent().await;
    assert_eq!(
        outcome_words(&all),
        ["baseline", "keep", "discard", "crash"],
        "{out}"
    );
    assert_eq!(git(&r.dir, &["show", "main:score.txt"]), "50");
    // Proposers and evaluators alike ran as Slurm jobs, each recorded.
    for a in &all[1..] {
        let steps: Vec<&str> = jobs
            .iter()
            .filter(|j| j.run_id == a.run.run_id)
            .map(|j| j.step.as_str())
            .collect();
        assert!(steps.contains(&"propose"), "{}: {steps:?}", a.run.run_id);
        assert!(steps.contains(&"evaluate-0"), "{}: {steps:?}", a.run.run_id);
    }
    let crashed = &all[3];
    let broke = jobs
        .iter()
        .find(|j| j.run_id == crashed.run.run_id && j.step == "evaluate-0")
        .unwrap();
    assert_eq!(broke.state, JobState::Failed, "{broke:?}");
    assert!(
        broke.reason.contains('3') || broke.reason.contains("NonZeroExitCode"),
        "{broke:?}"
    );
    let crash = crashed.outcome.as_ref().unwrap();
    let detail = crash.descriptor_json.clone();
    assert!(detail.contains("evaluator broke"), "{detail}");
    assert!(
        broke
            .stderr_log
            .starts_with(&r.workdir.display().to_string()),
        "logs under the work directory: {broke:?}"
    );
    // `status` shows every job with its id and state.
    let status: Value = serde_json::from_str(&r.ok(&["status", "--json"])).unwrap();
    let listed = status["jobs"].as_array().unwrap();
    assert_eq!(listed.len(), jobs.len());
    assert!(
        listed
            .iter()
            .all(|j| j["job_id"].as_str().is_some_and(|s| !s.is_empty()))
    );
    let text = r.ok(&["status"]);
    assert!(
        text.contains(&format!("job        slurm {}", broke.job_id)),
        "{text}"
    );

    // Two candidates at once against one head, both better: one is kept,
    // the other measured again on the new head.
    let out = r.ok(&["run", "--iterations", "2", "--parallel", "2"]);
    let (all, _) = r.assert_consistent().await;
    assert_eq!(all.len(), 6, "{out}");
    let head: i64 = git(&r.dir, &["show", "main:score.txt"]).parse().unwrap();
    assert!(head == 30 || head == 40, "{out}");
}

#[tokio::test]
async fn a_job_over_its_slurm_time_limit_is_a_crash() {
    if !cluster("a_job_over_its_slurm_time_limit_is_a_crash") {
        return;
    }
    // Slurm's smallest limit is a minute; its own timeout is above it.
    let r = Repo::new(Setup {
        slow: 150,
        eval_timeout: "300s",
        slurm: "time = \"1\"",
        ..Setup::default()
    });
    write_scores(&r.ctl, &[50]);
    std::fs::write(r.ctl.join("slow_eval"), "").unwrap();
    let out = r.ok(&["run", "--iterations", "1"]);
    let (all, jobs) = r.assert_consistent().await;
    assert_eq!(outcome_words(&all), ["baseline", "crash"], "{out}");
    let job = jobs.iter().find(|j| j.run_id == all[1].run.run_id).unwrap();
    assert_eq!(job.state, JobState::Timeout, "{job:?}");
    let detail = &all[1].outcome.as_ref().unwrap().descriptor_json;
    assert!(detail.contains("Slurm time limit"), "{detail}");
    assert!(detail.contains("timed out"), "{detail}");
}

#[tokio::test]
async fn scancel_from_outside_and_ctrl_c_cancel_jobs() {
    if !cluster("scancel_from_outside_and_ctrl_c_cancel_jobs") {
        return;
    }
    let r = Repo::new(Setup::default());
    write_scores(&r.ctl, &[50, 40, 30]);

    // Someone cancels the evaluation: the run is a crash saying so.
    std::fs::write(r.ctl.join("slow_eval"), "").unwrap();
    let mut child = r.spawn(&["run", "--iterations", "1"]);
    let id = r.slow_job();
    let st = Command::new("scancel").arg(&id).status().unwrap();
    assert!(st.success());
    assert!(wait_exit(&mut child, Duration::from_secs(60)).success());
    let (all, jobs) = r.assert_consistent().await;
    assert_eq!(outcome_words(&all), ["baseline", "crash"]);
    let job = jobs.iter().find(|j| j.job_id == id).unwrap();
    assert_eq!(job.state, JobState::Cancelled, "{job:?}");
    let detail = &all[1].outcome.as_ref().unwrap().descriptor_json;
    assert!(detail.contains("was cancelled (scancel)"), "{detail}");
    let _ = std::fs::remove_file(r.ctl.join("in_eval"));

    // Ctrl-C twice (the second kills what runs): the job is cancelled.
    let mut child = r.spawn(&["run", "--iterations", "1"]);
    let id = r.slow_job();
    let pid = child.id() as i32;
    for _ in 0..2 {
        // SAFETY: kill on a child of this test that has not been reaped.
        unsafe { libc::kill(pid, libc::SIGINT) };
        std::thread::sleep(Duration::from_millis(300));
    }
    wait_exit(&mut child, Duration::from_secs(60));
    let start = Instant::now();
    while slurm_state(&id) != "CANCELLED" {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "job {id} is {} after Ctrl-C",
            slurm_state(&id)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, _, jobs) = r.ledger().await;
    let job = jobs.iter().find(|j| j.job_id == id).unwrap();
    assert_eq!(job.state, JobState::Cancelled, "{job:?}");
    assert!(job.reason.contains("cancelled by the loop"), "{job:?}");
    // The next run finishes what the interrupted one left.
    r.go_fast();
    r.ok(&["run", "--iterations", "1"]);
    r.assert_consistent().await;
}

#[tokio::test]
async fn sigkill_while_a_job_runs_then_resume_adopts_it() {
    if !cluster("sigkill_while_a_job_runs_then_resume_adopts_it") {
        return;
    }
    for on_restart in ["wait", "cancel"] {
        let r = Repo::new(Setup {
            slow: 5,
            slurm: &format!("on_restart = \"{on_restart}\""),
            ..Setup::default()
        });
        write_scores(&r.ctl, &[50, 40]);
        std::fs::write(r.ctl.join("slow_eval"), "").unwrap();
        let mut child = r.spawn(&["run", "--iterations", "1"]);
        let id = r.slow_job();
        r.wait_recorded(&id);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(
            slurm_state(&id),
            "RUNNING",
            "the job outlives its controller"
        );
        r.go_fast();
        // Resumed while the job still runs: waited for (its result is the
        // run's, a keep) or cancelled (the run interrupted).
        let out = r.ok(&["run", "--iterations", "1"]);
        let (all, jobs) = r.assert_consistent().await;
        let adopted = jobs.iter().find(|j| j.job_id == id).unwrap();
        assert!(
            adopted.reason.contains("adopted after a restart"),
            "{adopted:?}"
        );
        let (words, reason, state, slurm) = match on_restart {
            "wait" => (
                ["baseline", "keep", "keep"],
                "improved 100 -> 50",
                JobState::Completed,
                "COMPLETED",
            ),
            _ => (
                ["baseline", "crash", "keep"],
                "interrupted",
                JobState::Cancelled,
                "CANCELLED",
            ),
        };
        assert_eq!(outcome_words(&all), words, "{on_restart}: {out}");
        let killed = all[1].outcome.as_ref().unwrap();
        assert!(killed.reason.contains(reason), "{on_restart}: {killed:?}");
        assert_eq!(adopted.state, state, "{adopted:?}");
        assert_eq!(slurm_state(&id), slurm);
        // The killed run's evaluation was submitted once.
        let of_killed = jobs
            .iter()
            .filter(|j| j.run_id == all[1].run.run_id)
            .count();
        assert_eq!(of_killed, 1, "{jobs:?}");
    }
}

/// Needs no cluster: a bad `[slurm]` is refused before anything runs.
#[test]
fn slurm_config_errors_name_the_key() {
    let base = "name = \"exp\"\nbranch = \"main\"\n[propose]\ncommand = \"true\"\n[evaluate]\ncommand = \"true\"\n[compare]\nspec = \"scalar:score:min\"\n[run]\nexecutor = \"slurm\"\n";
    let cases: &[(&str, &[&str])] = &[
        ("", &["run.executor", "[slurm]"]),
        (
            "[slurm]\nworkdir = \"/w\"\ntime = \"soon\"\n",
            &["[slurm] time", "\"soon\""],
        ),
        (
            "[slurm]\nworkdir = \"/w\"\nqueue = \"gpu\"\n",
            &["[slurm]", "queue"],
        ),
        (
            "[slurm]\nworkdir = \"/w\"\nmem = \"lots\"\n",
            &["[slurm] mem"],
        ),
    ];
    for (tail, needles) in cases {
        let r = Repo::new(Setup::default());
        std::fs::write(r.dir.join("autoresearch.toml"), format!("{base}{tail}")).unwrap();
        let out = r.run(&["run", "--iterations", "1"]);
        assert!(!out.status.success(), "{tail}");
        let err = String::from_utf8_lossy(&out.stderr);
        for n in *needles {
            assert!(err.contains(n), "{err} should mention {n}");
        }
    }
}

#[tokio::test]
async fn sigkill_while_a_job_is_queued_then_resume_waits_for_it() {
    if !cluster("sigkill_while_a_job_is_queued_then_resume_waits_for_it") {
        return;
    }
    // Every job waits 4 s in the queue before it may start.
    let r = Repo::new(Setup {
        slurm: "extra = [\"--begin=now+4\"]",
        ..Setup::default()
    });
    write_scores(&r.ctl, &[50, 40]);
    let mut child = r.spawn(&["run", "--iterations", "1"]);
    // The candidate's evaluation: its script without an exit file once
    // the baseline's (step `baseline-0`) has one.
    let runs = r.workdir.join("runs");
    let start = Instant::now();
    let script = loop {
        let step = |name: &str| -> Vec<PathBuf> {
            std::fs::read_dir(&runs)
                .map(|d| {
                    d.flatten()
                        .map(|e| e.path().join(name))
                        .filter(|p| p.exists())
                        .collect()
                })
                .unwrap_or_default()
        };
        let baseline_ended = step("baseline-0.sh")
            .iter()
            .any(|s| s.with_extension("exit").exists());
        let waiting: Vec<PathBuf> = step("evaluate-0.sh")
            .into_iter()
            .filter(|s| !s.with_extension("exit").exists())
            .collect();
        if let (true, [candidate]) = (baseline_ended, waiting.as_slice()) {
            break candidate.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "no candidate evaluation submitted"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let id = pending_job_of(&script);
    // Killed once the job's record is in the ledger: a controller killed
    // between `sbatch` answering and that record is a case of its own
    // (docs/slurm.md).
    r.wait_recorded(&id);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        slurm_state(&id),
        "PENDING",
        "the queued job outlives its controller"
    );
    let (_, _, jobs) = r.ledger().await;
    let queued = jobs.iter().find(|j| j.job_id == id).unwrap();
    assert_eq!(
        queued.state,
        JobState::Pending,
        "recorded when submitted: {queued:?}"
    );
    let out = r.ok(&["run", "--iterations", "1"]);
    let (all, jobs) = r.assert_consistent().await;
    // The adopted job's result is its run's: a keep.
    assert_eq!(outcome_words(&all), ["baseline", "keep", "keep"], "{out}");
    let adopted = jobs.iter().find(|j| j.job_id == id).unwrap();
    assert_eq!(adopted.state, JobState::Completed, "{adopted:?}");
    assert!(adopted.reason.contains("exit code 0"), "{adopted:?}");
    assert_eq!(slurm_state(&id), "COMPLETED");
}

#[tokio::test]
async fn a_job_over_the_loops_own_timeout_is_cancelled_and_a_crash() {
    if !cluster("a_job_over_the_loops_own_timeout_is_cancelled_and_a_crash") {
        return;
    }
    let r = Repo::new(Setup {
        eval_timeout: "3s",
        ..Setup::default()
    });
    write_scores(&r.ctl, &[50]);
    std::fs::write(r.ctl.join("slow_eval"), "").unwrap();
    let out = r.ok(&["run", "--iterations", "1"]);
    let (all, jobs) = r.assert_consistent().await;
    assert_eq!(outcome_words(&all), ["baseline", "crash"], "{out}");
    let id = std::fs::read_to_string(r.ctl.join("slow.jobid")).unwrap();
    let job = jobs.iter().find(|j| j.job_id == id.trim()).unwrap();
    assert_eq!(job.state, JobState::Cancelled, "{job:?}");
    assert_eq!(slurm_state(&job.job_id), "CANCELLED");
    let detail = &all[1].outcome.as_ref().unwrap().descriptor_json;
    assert!(
        detail.contains("ran past the job's timeout (3s)"),
        "{detail}"
    );
    assert!(detail.contains("timed out"), "{detail}");
}
