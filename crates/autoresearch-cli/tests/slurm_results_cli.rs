//! What Slurm jobs give the loop on the loopback cluster: an evaluation
//! that finished while the controller was dead gives its run its result
//! (recorded once, decided, nothing submitted again); repeated samples go
//! out together and run side by side; a job's CPU time is measured.
//!
//! Without a cluster (no `SLURM_CONF`), each test prints why and returns;
//! with `AUTORESEARCH_REQUIRE_SLURM` set (CI), a missing cluster fails.

mod common;
mod slurm;

use autoresearch_core::{JobState, RunCost};
use autoresearch_test_support::git::git;
use autoresearch_test_support::loop_repo::write_scores;
use slurm::*;
use std::time::{Duration, Instant};

/// Waits (up to a minute) until Slurm says `job_id` completed.
fn wait_completed(job_id: &str) {
    let start = Instant::now();
    while slurm_state(job_id) != "COMPLETED" {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "job {job_id} is {}",
            slurm_state(job_id)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn a_job_that_ended_while_the_controller_was_dead_gives_its_run_its_result() {
    if !cluster("a_job_that_ended_while_the_controller_was_dead_gives_its_run_its_result") {
        return;
    }
    // Twice the controller dies while a candidate's evaluation runs, and
    // the job completes before the next `run`: that run decides the
    // killed candidate first (a keep of 50, then a discard of 70), then
    // tries one more (60, 80: discards).
    let r = Repo::new(Setup {
        slow: 2,
        ..Setup::default()
    });
    write_scores(&r.ctl, &[50, 60, 70, 80]);
    let mut words = vec!["baseline"];
    for (decision, score) in [("keep", 50.0), ("discard", 70.0)] {
        std::fs::write(r.ctl.join("slow_eval"), "").unwrap();
        let mut child = r.spawn(&["run", "--iterations", "1"]);
        let id = r.slow_job();
        r.wait_recorded(&id);
        child.kill().unwrap();
        child.wait().unwrap();
        wait_completed(&id);
        r.go_fast();
        let out = r.ok(&["run", "--iterations", "1"]);
        let (all, jobs) = r.assert_consistent().await;
        words.extend([decision, "discard"]);
        assert_eq!(
            all.iter()
                .map(|a| a.outcome.as_ref().unwrap().status.to_string())
                .collect::<Vec<_>>(),
            words,
            "{out}"
        );
        let job = jobs.iter().find(|j| j.job_id == id).unwrap();
        let killed = all.iter().find(|a| a.run.run_id == job.run_id).unwrap();
        assert!(!killed.run.commit_hash.is_empty());
        // Its one evaluation, recorded once with its metrics, from its job.
        assert_eq!(job.state, JobState::Completed, "{job:?}");
        assert!(job.reason.contains("adopted after a restart"), "{job:?}");
        assert_eq!(killed.results.len(), 1, "{:?}", killed.results);
        let meta = killed.results[0].meta().unwrap();
        assert_eq!(meta.stdout_log, job.stdout_log);
        assert_eq!(meta.exit_code, Some(0));
        let outputs = killed.results[0].outputs().unwrap();
        assert_eq!(outputs["score"].as_f64(), Some(score));
        assert_eq!(
            jobs.iter()
                .filter(|j| j.run_id == killed.run.run_id)
                .count(),
            1,
            "nothing submitted again: {jobs:?}"
        );
    }
    assert_eq!(git(&r.dir, &["show", "main:score.txt"]), "50");
}

/// `[compare] calibrate = 4` with the statistical comparator: the head's
/// three more samples are asked for at once.
const CALIBRATED_STAT: &str =
    "kind = \"stat\"\nmetric = \"score\"\ndirection = \"min\"\ncalibrate = 4";

#[tokio::test]
async fn repeated_samples_run_side_by_side_on_the_cluster() {
    if !cluster("repeated_samples_run_side_by_side_on_the_cluster") {
        return;
    }
    // Every evaluation sleeps 2 s and writes when it ran.
    let r = Repo::new(Setup {
        compare: CALIBRATED_STAT,
        evaluate_first: "a=$(date +%s%N); sleep 2; echo \"$SLURM_JOB_ID $a $(date +%s%N)\" >> {c}/spans",
        ..Setup::default()
    });
    write_scores(&r.ctl, &[50]);
    let out = r.ok(&["run", "--iterations", "1"]);
    let (all, jobs) = r.assert_consistent().await;
    assert_eq!(
        all.iter()
            .map(|a| a.outcome.as_ref().unwrap().status.to_string())
            .collect::<Vec<_>>(),
        ["baseline", "keep"],
        "{out}"
    );
    // The baseline's one sample and the three repeats, all recorded.
    assert_eq!(all[0].results.len(), 4, "{out}");
    let repeats: Vec<_> = jobs
        .iter()
        .filter(|j| j.run_id == all[0].run.run_id && j.step.starts_with("calibrate-"))
        .collect();
    assert_eq!(repeats.len(), 3, "{jobs:?}");
    let spans = std::fs::read_to_string(r.ctl.join("spans")).unwrap();
    let span_of = |id: &str| -> (u128, u128) {
        let line = spans
            .lines()
            .find(|l| l.split(' ').next() == Some(id))
            .unwrap_or_else(|| panic!("job {id} did not run: {spans}"));
        let v: Vec<u128> = line
            .split(' ')
            .skip(1)
            .map(|x| x.parse().unwrap())
            .collect();
        (v[0], v[1])
    };
    let spans_of: Vec<(u128, u128)> = repeats.iter().map(|j| span_of(&j.job_id)).collect();
    let last_start = spans_of.iter().map(|s| s.0).max().unwrap();
    let first_end = spans_of.iter().map(|s| s.1).min().unwrap();
    assert!(
        last_start < first_end,
        "the repeats ran side by side: {spans_of:?}"
    );
    // Each sample recorded from its own job's log.
    let logs: Vec<String> = all[0]
        .results
        .iter()
        .map(|r| r.meta().unwrap().stdout_log)
        .collect();
    for j in &repeats {
        assert!(logs.contains(&j.stdout_log), "{j:?} not in {logs:?}");
    }
}

#[tokio::test]
async fn repeats_that_ended_while_the_controller_was_dead_are_recorded_once() {
    if !cluster("repeats_that_ended_while_the_controller_was_dead_are_recorded_once") {
        return;
    }
    // The controller dies while the head's three repeats run (they sleep
    // 2 s); they complete before the next `run`, which records them once
    // and takes no more.
    let r = Repo::new(Setup {
        compare: CALIBRATED_STAT,
        evaluate_first: "if [ \"$AUTORESEARCH_SAMPLE\" -gt 0 ]; then touch {c}/in_repeat; sleep 2; fi",
        ..Setup::default()
    });
    write_scores(&r.ctl, &[50]);
    let mut child = r.spawn(&["run", "--iterations", "1"]);
    autoresearch_test_support::process::wait_for(&r.ctl.join("in_repeat"));
    r.wait_jobs("three repeats recorded", |jobs| {
        let steps = jobs.iter().filter_map(|j| j["step"].as_str());
        steps.filter(|s| s.starts_with("calibrate-")).count() == 3
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let repeats = |jobs: &[autoresearch_core::ExecutorJob]| -> Vec<String> {
        jobs.iter()
            .filter(|j| j.step.starts_with("calibrate-"))
            .map(|j| j.job_id.clone())
            .collect()
    };
    let (_, _, jobs) = r.ledger().await;
    let ids = repeats(&jobs);
    assert_eq!(ids.len(), 3, "submitted together: {jobs:?}");
    for id in &ids {
        wait_completed(id);
    }
    let out = r.ok(&["run", "--iterations", "1"]);
    let (all, jobs) = r.assert_consistent().await;
    assert_eq!(repeats(&jobs), ids, "none submitted again: {jobs:?}");
    assert_eq!(
        all.iter()
            .map(|a| a.outcome.as_ref().unwrap().status.to_string())
            .collect::<Vec<_>>(),
        ["baseline", "keep"],
        "{out}"
    );
    // The baseline's sample and the three adopted repeats, once each.
    assert_eq!(all[0].results.len(), 4, "{out}");
    let logs: Vec<String> = all[0]
        .results
        .iter()
        .map(|r| r.meta().unwrap().stdout_log)
        .collect();
    for j in jobs.iter().filter(|j| ids.contains(&j.job_id)) {
        assert!(logs.contains(&j.stdout_log), "{j:?} not in {logs:?}");
        assert!(j.reason.contains("adopted after a restart"), "{j:?}");
    }
}

#[tokio::test]
async fn a_slurm_jobs_cpu_time_is_measured() {
    if !cluster("a_slurm_jobs_cpu_time_is_measured") {
        return;
    }
    // The candidate's evaluation counts to 300000 in the shell.
    let r = Repo::new(Setup {
        evaluate_first: "if [ \"$(cat score.txt)\" != 100 ]; then i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; fi",
        ..Setup::default()
    });
    write_scores(&r.ctl, &[50]);
    let out = r.ok(&["run", "--iterations", "1"]);
    r.assert_consistent().await;
    let w = common::exp_world(&r.dir).await;
    let cand = autoresearch_core::lifecycle::attempts(&w, "exp")[1].clone();
    let cost = w.get::<RunCost>(cand.entity).expect("a cost");
    assert!(
        cost.evaluate.cpu_ms > 0,
        "the evaluation burnt CPU: {cost:?}\n{out}"
    );
    assert!(
        cost.evaluate.cpu_ms <= cost.evaluate.wall_ms + 50,
        "{cost:?}"
    );
}

#[tokio::test]
async fn an_incumbent_sample_for_a_killed_candidate_is_recorded_and_the_candidate_decided() {
    if !cluster("an_incumbent_sample_for_a_killed_candidate_is_recorded_and_the_candidate_decided")
    {
        return;
    }
    // The statistical comparator measures the incumbent again (in the
    // candidate's checkout) to learn the noise; the controller dies while
    // that sample runs, which completes before the next `run`.
    let r = Repo::new(Setup {
        compare: "kind = \"stat\"\nmetric = \"score\"\ndirection = \"min\"",
        evaluate_first: "if [ \"$AUTORESEARCH_SAMPLE\" -gt 0 ]; then echo \"$SLURM_JOB_ID\" > {c}/slow.jobid; touch {c}/in_eval; sleep 2; fi",
        ..Setup::default()
    });
    write_scores(&r.ctl, &[50, 40]);
    let mut child = r.spawn(&["run", "--iterations", "1"]);
    let id = r.slow_job();
    r.wait_recorded(&id);
    child.kill().unwrap();
    child.wait().unwrap();
    wait_completed(&id);
    let out = r.ok(&["run", "--iterations", "1"]);
    let (all, jobs) = r.assert_consistent().await;
    let job = jobs.iter().find(|j| j.job_id == id).unwrap();
    assert_eq!(job.run_id, all[1].run.run_id, "{job:?}");
    assert!(job.step.starts_with("incumbent-"), "{job:?}");
    // Recorded under the incumbent's run, once; the candidate decided.
    let logs: Vec<String> = all[0]
        .results
        .iter()
        .map(|r| r.meta().unwrap().stdout_log)
        .collect();
    assert_eq!(
        logs.iter().filter(|l| **l == job.stdout_log).count(),
        1,
        "{logs:?}"
    );
    let outcome = all[1].outcome.as_ref().unwrap();
    assert_eq!(outcome.status.to_string(), "keep", "{outcome:?}\n{out}");
    assert_eq!(all.len(), 3, "{out}");
}

/// The statistical comparator on a noisy evaluator, asking up to four
/// samples at a look, at levels no sample count reaches, so that it
/// samples to its budget whatever the noise draws.
const PARALLEL_STAT: &str = "kind = \"stat\"\nmetric = \"score\"\ndirection = \"min\"\nparallel = 4\nmax_samples = 6\nalpha = 1e-9\nbeta = 1e-9\nworth = 0";

#[tokio::test]
async fn a_noisy_candidates_repeats_under_stat_run_side_by_side() {
    if !cluster("a_noisy_candidates_repeats_under_stat_run_side_by_side") {
        return;
    }
    // Scores 100 (baseline) and 99 (candidate), in thousandths, each
    // sample plus 0..21.845 of noise (no two samples alike, so the
    // evaluator is never taken for deterministic); every evaluation sleeps
    // 1 s and writes when it ran.
    let r = Repo::new(Setup {
        compare: PARALLEL_STAT,
        evaluate_first: "a=$(date +%s%N); sleep 1; echo \"$SLURM_JOB_ID $a $(date +%s%N)\" >> {c}/spans",
        evaluate_then: "s=$((s * 1000 + $(od -An -N2 -tu2 /dev/urandom) / 3))",
        ..Setup::default()
    });
    write_scores(&r.ctl, &[99]);
    let out = r.ok(&["run", "--iterations", "1"]);
    let (all, jobs) = r.assert_consistent().await;
    assert_eq!(all.len(), 2, "{out}");
    let cand = &all[1];
    let evaluations: Vec<_> = jobs
        .iter()
        .filter(|j| j.run_id == cand.run.run_id && j.step.starts_with("evaluate"))
        .collect();
    // Every sample of the candidate recorded, each from its own job.
    assert!(evaluations.len() >= 3, "{jobs:?}\n{out}");
    assert_eq!(cand.results.len(), evaluations.len(), "{jobs:?}");
    let logs: Vec<String> = cand
        .results
        .iter()
        .map(|r| r.meta().unwrap().stdout_log)
        .collect();
    for j in &evaluations {
        assert!(logs.contains(&j.stdout_log), "{j:?} not in {logs:?}");
    }
    // At some moment three of its jobs ran at once.
    let spans = std::fs::read_to_string(r.ctl.join("spans")).unwrap();
    let span_of = |id: &str| -> (u128, u128) {
        let line = spans
            .lines()
            .find(|l| l.split(' ').next() == Some(id))
            .unwrap_or_else(|| panic!("job {id} did not run: {spans}"));
        let v: Vec<u128> = line
            .split(' ')
            .skip(1)
            .map(|x| x.parse().unwrap())
            .collect();
        (v[0], v[1])
    };
    let spans_of: Vec<(u128, u128)> = evaluations.iter().map(|j| span_of(&j.job_id)).collect();
    let most_at_once = spans_of
        .iter()
        .map(|(t, _)| spans_of.iter().filter(|(a, b)| a <= t && t < b).count())
        .max()
        .unwrap();
    assert!(most_at_once >= 3, "{spans_of:?}\n{out}");
}

#[tokio::test]
async fn a_proposer_job_that_ended_while_the_controller_was_dead_gives_its_candidate() {
    if !cluster("a_proposer_job_that_ended_while_the_controller_was_dead_gives_its_candidate") {
        return;
    }
    // The controller dies while the first candidate's proposer (a Slurm
    // job) sleeps; the job writes score 40 and completes before the next
    // `run`, which takes that candidate, evaluates and keeps it, then
    // tries one more (60: a discard).
    let r = Repo::new(Setup {
        propose_on: "slurm",
        propose_first: "if [ -f {c}/slow_propose ]; then rm {c}/slow_propose; echo \"$SLURM_JOB_ID\" > {c}/slow.jobid; touch {c}/in_eval; sleep 2; fi",
        ..Setup::default()
    });
    write_scores(&r.ctl, &[40, 60]);
    std::fs::write(r.ctl.join("slow_propose"), "").unwrap();
    let mut child = r.spawn(&["run", "--iterations", "1"]);
    let id = r.slow_job();
    r.wait_recorded(&id);
    child.kill().unwrap();
    child.wait().unwrap();
    wait_completed(&id);
    let out = r.ok(&["run", "--iterations", "1"]);
    let (all, jobs) = r.assert_consistent().await;
    assert_eq!(
        all.iter()
            .map(|a| a.outcome.as_ref().unwrap().status.to_string())
            .collect::<Vec<_>>(),
        ["baseline", "keep", "discard"],
        "{out}"
    );
    let job = jobs.iter().find(|j| j.job_id == id).unwrap();
    assert_eq!(job.step, "propose", "{job:?}");
    assert_eq!(job.run_id, all[1].run.run_id, "{job:?}");
    // Its candidate is the proposer's work, now the branch; evaluated once,
    // proposed once.
    assert_eq!(git(&r.dir, &["show", "main:score.txt"]), "40");
    assert_eq!(all[1].run.commit_hash, r.tip());
    assert_eq!(all[1].results.len(), 1, "{:?}", all[1].results);
    let mine = |step: &str| {
        jobs.iter()
            .filter(|j| j.run_id == all[1].run.run_id && j.step == step)
            .count()
    };
    assert_eq!((mine("propose"), mine("evaluate-0")), (1, 1), "{jobs:?}");
    assert_eq!(
        std::fs::read_to_string(r.ctl.join("n")).unwrap().trim(),
        "2"
    );
}

#[tokio::test]
async fn a_proposer_job_that_failed_while_the_controller_was_dead_crashes_its_run() {
    if !cluster("a_proposer_job_that_failed_while_the_controller_was_dead_crashes_its_run") {
        return;
    }
    // As above, but the proposer exits 5 after its sleep: the run is a
    // crash of its proposer (not "interrupted"), nothing evaluated; the
    // next candidate (score 40) is a keep.
    let r = Repo::new(Setup {
        propose_on: "slurm",
        propose_first: "if [ -f {c}/slow_propose ]; then rm {c}/slow_propose; echo \"$SLURM_JOB_ID\" > {c}/slow.jobid; touch {c}/in_eval; sleep 2; echo 'proposer gave up' >&2; exit 5; fi",
        ..Setup::default()
    });
    write_scores(&r.ctl, &[40]);
    std::fs::write(r.ctl.join("slow_propose"), "").unwrap();
    let mut child = r.spawn(&["run", "--iterations", "1"]);
    let id = r.slow_job();
    r.wait_recorded(&id);
    child.kill().unwrap();
    child.wait().unwrap();
    let start = Instant::now();
    while !slurm_state(&id).starts_with("FAILED") {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{}",
            slurm_state(&id)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = r.ok(&["run", "--iterations", "1"]);
    let (all, jobs) = r.assert_consistent().await;
    assert_eq!(
        all.iter()
            .map(|a| a.outcome.as_ref().unwrap().status.to_string())
            .collect::<Vec<_>>(),
        ["baseline", "crash", "keep"],
        "{out}"
    );
    let outcome = all[1].outcome.as_ref().unwrap();
    assert_eq!(outcome.status.to_string(), "crash", "{outcome:?}");
    assert!(outcome.reason.contains("proposer"), "{outcome:?}");
    assert!(
        outcome.descriptor_json.contains("proposer gave up"),
        "{outcome:?}"
    );
    assert!(
        !jobs
            .iter()
            .any(|j| j.run_id == all[1].run.run_id && j.step != "propose"),
        "{jobs:?}"
    );
}
