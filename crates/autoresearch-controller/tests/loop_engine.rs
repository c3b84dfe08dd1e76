//! The loop on real git repositories in temp dirs, with real child processes
//! (small shell scripts) as proposer and evaluator, over the in-memory
//! reference ledger.

use autoresearch_controller::{
    Controller, LocalExecutor, LoopConfig, MetricsFormat, Summary, history,
};
use autoresearch_core::compare::{Comparator, CompareError, Decision, Evidence, Verdict, Vote};
use autoresearch_core::lifecycle::{Attempt, Outcome, attempts};
use autoresearch_core::{
    BranchHead, ComponentRegistry, MemoryStorage, Run, RunStatus, Storage, World, now_ms,
};
use autoresearch_test_support::evidence::MinScore;
use autoresearch_test_support::git::{commit_all, git, init_main};
use autoresearch_test_support::loop_repo::{EVALUATE_SCORE as EVAL, VARY_SCORE as VARY};
use autoresearch_test_support::process::alive;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Asks for three samples a side before deciding like [`MinScore`].
struct ThreeSamples;

#[async_trait::async_trait]
impl Comparator for ThreeSamples {
    fn spec(&self) -> String {
        "three".into()
    }
    async fn compare(&self, inc: &Evidence, cand: &Evidence) -> Result<Decision, CompareError> {
        let (i, c) = (inc.results.len() as u32, cand.results.len() as u32);
        if i < 3 || c < 3 {
            let v = Verdict::NeedMore {
                incumbent: 3u32.saturating_sub(i),
                candidate: 3u32.saturating_sub(c),
            };
            return Ok(Decision::new(v, "more", json!({})));
        }
        MinScore.compare(inc, cand).await
    }
}

/// Pending until a vote exists, then follows the last vote.
struct Votes;

#[async_trait::async_trait]
impl Comparator for Votes {
    fn spec(&self) -> String {
        "vote".into()
    }
    async fn compare(&self, _inc: &Evidence, cand: &Evidence) -> Result<Decision, CompareError> {
        Ok(match cand.votes.last() {
            None => Decision::new(Verdict::Pending, "waiting for a vote", json!({})),
            Some(v) if v.verdict == "keep" => Decision::new(Verdict::Keep, "voted keep", json!({})),
            Some(_) => Decision::new(Verdict::Discard, "voted discard", json!({})),
        })
    }
}

/// Decides like [`MinScore`], but first appends a tick of its own to the
/// experiment world through another handle, as `autoresearch vote` in
/// another process would: the loop's staged steps then meet a conflict.
struct Interloper {
    storage: Arc<dyn Storage>,
    ticks: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl Comparator for Interloper {
    fn spec(&self) -> String {
        "interloper".into()
    }
    async fn compare(&self, inc: &Evidence, cand: &Evidence) -> Result<Decision, CompareError> {
        let reg = Arc::new(ComponentRegistry::standard());
        let mut w = World::open(self.storage.clone(), reg, "autoresearch:exp")
            .await
            .unwrap();
        w.spawn_with(&Vote {
            run_id: "elsewhere".into(),
            verdict: "keep".into(),
            voter: "interloper".into(),
            reason: "a tick from another writer".into(),
            at_ms: now_ms(),
        })
        .unwrap();
        w.commit().await.unwrap();
        self.ticks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        MinScore.compare(inc, cand).await
    }
}

struct Fixture {
    _tmp: tempfile::TempDir,
    repo: PathBuf,
    storage: Arc<dyn Storage>,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        init_main(&repo);
        std::fs::write(repo.join("score.txt"), "1.0\n").unwrap();
        std::fs::write(repo.join("prepare.py"), "# read-only\n").unwrap();
        commit_all(&repo, "start");
        Fixture {
            _tmp: tmp,
            repo,
            storage: Arc::new(MemoryStorage::new(Some(16))),
        }
    }

    fn config(&self, propose: &str, evaluate: &str) -> LoopConfig {
        LoopConfig {
            experiment: "exp".into(),
            world: "autoresearch:exp".into(),
            repo: self.repo.clone(),
            workdir: String::new(),
            branch: "main".into(),
            harness: "shell".into(),
            propose_command: propose.into(),
            propose_timeout: Duration::from_secs(20),
            evaluate_command: evaluate.into(),
            evaluate_timeout: Duration::from_secs(20),
            metrics: MetricsFormat::Lines,
            protect: vec!["prepare.py".into()],
            editable: vec![],
            config_file: None,
            max_file_size: 10 << 20,
            allow_gitlinks: false,
            require: vec![],
            primary_metric: None,
            parallel: 1,
            iterations: 1,
            time_budget: None,
            max_consecutive_crashes: 10,
            output_limit: 4096,
            kill_grace: Duration::from_millis(200),
            max_samples: 10,
            calibrate: 0,
            evidence_diff: true,
            state_dir: self.repo.join(".autoresearch"),
            lease_lock: None,
            lease_timeout: Duration::from_secs(60),
            confirm: None,
            cost_budget: None,
        }
    }

    async fn run_with(&self, cfg: LoopConfig, cmp: Arc<dyn Comparator>) -> Summary {
        let exec = Arc::new(LocalExecutor::new(cfg.state_dir.clone()));
        let c = Controller::open(cfg, self.storage.clone(), cmp, exec)
            .await
            .unwrap();
        Arc::new(c).run().await.unwrap()
    }

    async fn run(&self, propose: &str, iterations: u64) -> Summary {
        let mut cfg = self.config(propose, EVAL);
        cfg.iterations = iterations;
        self.run_with(cfg, Arc::new(MinScore)).await
    }

    async fn world(&self) -> World {
        World::open(
            self.storage.clone(),
            Arc::new(ComponentRegistry::standard()),
            "autoresearch:exp",
        )
        .await
        .unwrap()
    }

    /// A directory for proposers to copy what they saw into.
    fn seen_dir(&self) -> PathBuf {
        let out = self._tmp.path().join("seen");
        std::fs::create_dir_all(&out).unwrap();
        out
    }

    async fn attempts(&self) -> Vec<Attempt> {
        attempts(&self.world().await, "exp")
    }

    async fn head(&self) -> BranchHead {
        self.world().await.branch_head("exp").unwrap().1
    }

    fn tip(&self) -> String {
        git(&self.repo, &["rev-parse", "refs/heads/main"])
    }

    /// The branch and the ledger agree, every run is over, the checkout is clean.
    async fn assert_consistent(&self) {
        assert_eq!(
            self.head().await.commit_hash,
            self.tip(),
            "branch and BranchHead agree"
        );
        for a in self.attempts().await {
            assert!(
                a.run.status().unwrap().is_terminal(),
                "run {} still {}",
                a.run.run_id,
                a.run.status
            );
            assert!(a.outcome.is_some(), "run {} has an outcome", a.run.run_id);
        }
        assert_eq!(
            git(&self.repo, &["status", "--porcelain"]),
            "",
            "user checkout stays clean"
        );
        let wts = git(&self.repo, &["worktree", "list", "--porcelain"]);
        assert_eq!(wts.matches("worktree ").count(), 1, "worktrees left: {wts}");
    }
}

fn outcome(a: &Attempt) -> &Outcome {
    a.outcome.as_ref().unwrap()
}

#[tokio::test]
async fn first_run_evaluates_a_baseline_then_keeps_an_improvement() {
    let f = Fixture::new();
    let start = f.tip();
    let s = f.run("echo 0.5 > score.txt", 1).await;
    assert_eq!((s.kept, s.baselines), (1, 1));
    let all = f.attempts().await;
    assert_eq!(all.len(), 2);
    assert_eq!(outcome(&all[0]).status, Outcome::BASELINE);
    assert_eq!(all[0].run.commit_hash, start);
    let kept = &all[1];
    assert_eq!(outcome(kept).status, Outcome::KEEP);
    assert_eq!(outcome(kept).base_commit, start);
    assert_eq!(outcome(kept).comparator, "scalar:score:min");
    assert_eq!(kept.run.status, "stopped");
    assert_eq!(kept.run.agent_name, "exp-shell");
    assert!(kept.run.finished_at_ms >= kept.run.started_at_ms);
    let tip = f.tip();
    assert_eq!(kept.run.commit_hash, tip);
    assert_eq!(git(&f.repo, &["rev-parse", "HEAD~1"]), start);
    let candidate_ref = format!("refs/autoresearch/exp/{}", kept.run.run_id);
    assert_eq!(git(&f.repo, &["rev-parse", &candidate_ref]), tip);
    let head = f.head().await;
    assert_eq!(head.run_id, kept.run.run_id);
    assert_eq!(head.descriptor().unwrap()["candidate"], json!(0.5));
    // The clean checkout followed the branch.
    assert_eq!(
        std::fs::read_to_string(f.repo.join("score.txt")).unwrap(),
        "0.5\n"
    );
    let out = kept.results[0].outputs().unwrap();
    assert_eq!(out["score"], json!(0.5));
    assert_eq!(out["_meta"]["exit_code"], json!(0));
    assert!(Path::new(out["_meta"]["stdout_log"].as_str().unwrap()).exists());
    // Every step of the run is a tick of its own: time travel walks it.
    let w = f.world().await;
    let mut steps: Vec<(u64, String)> = Vec::new();
    for c in w.history(kept.entity).await.unwrap() {
        let past = World::open_at(
            f.storage.clone(),
            Arc::new(ComponentRegistry::standard()),
            w.id(),
            c.tick,
        )
        .await
        .unwrap();
        let run = past.get::<Run>(kept.entity).unwrap();
        let decided = past.get::<Outcome>(kept.entity).map(|o| o.status);
        let step = format!("{} {}", run.status, decided.unwrap_or_default());
        if steps.last().is_none_or(|(t, _)| *t != c.tick.0) {
            steps.push((c.tick.0, step));
        }
    }
    let names: Vec<&str> = steps.iter().map(|(_, s)| s.trim()).collect();
    assert_eq!(
        names,
        [
            "booting",
            "running",
            "running",
            "stopping keep",
            "stopped keep"
        ],
        "{steps:?}"
    );
    f.assert_consistent().await;
}

#[tokio::test]
async fn a_worse_candidate_is_discarded_and_the_branch_stays() {
    let f = Fixture::new();
    let start = f.tip();
    let s = f.run("echo 2.0 > score.txt", 2).await;
    assert_eq!((s.kept, s.discarded), (0, 2));
    let all = f.attempts().await;
    assert_eq!(outcome(&all[1]).status, Outcome::DISCARD);
    assert_eq!(outcome(&all[1]).reason, "2 vs 1");
    assert_eq!(f.tip(), start);
    // Discarded candidates stay reachable.
    let r = format!("refs/autoresearch/exp/{}", all[1].run.run_id);
    assert_eq!(git(&f.repo, &["show", &format!("{r}:score.txt")]), "2.0");
    f.assert_consistent().await;
}

#[tokio::test]
async fn each_crash_cause_is_recorded_and_the_loop_goes_on() {
    let cases: &[(&str, &str, &str)] = &[
        ("exit 3", EVAL, "propose: proposer exit code 3"),
        (
            "echo 0.5 > score.txt",
            "echo boom >&2; exit 4",
            "evaluate: evaluator exit code 4",
        ),
        (
            "echo 0.5 > score.txt",
            "echo no numbers here",
            "evaluate: no metric",
        ),
        (
            "echo 0.5 > score.txt",
            "echo 'score: nan'",
            "evaluate: metric score is not a finite",
        ),
        ("sleep 5", EVAL, "propose: proposer timed out"),
        (
            "echo 0.5 > score.txt",
            "test \"$(cat score.txt)\" = 1.0 || sleep 5; echo 'score: 1'",
            "evaluate: evaluator timed out",
        ),
    ];
    for (propose, evaluate, reason) in cases {
        let f = Fixture::new();
        // The baseline (score 1.0) evaluates well: a failed baseline is
        // measured again before any candidate runs (a test of its own).
        let evaluate = &format!(
            "if [ \"$(cat score.txt)\" = 1.0 ]; then echo 'score: 1'; else {evaluate}; fi"
        );
        let mut cfg = f.config(propose, evaluate);
        cfg.iterations = 2;
        cfg.propose_timeout = Duration::from_millis(500);
        cfg.evaluate_timeout = Duration::from_millis(500);
        let s = f.run_with(cfg, Arc::new(MinScore)).await;
        let all = f.attempts().await;
        let crashes: Vec<_> = all.iter().skip(1).collect();
        assert_eq!(crashes.len(), 2, "{propose} / {evaluate}: the loop went on");
        assert_eq!(s.crashed, 2);
        for a in crashes {
            let o = outcome(a);
            assert_eq!(o.status, Outcome::CRASH, "{propose} / {evaluate}");
            assert!(
                o.reason.starts_with(reason),
                "{:?} should start with {reason:?}",
                o.reason
            );
            assert_eq!(a.run.status, "crashed");
        }
        if evaluate.contains("echo boom >&2; exit 4") {
            let d: serde_json::Value =
                serde_json::from_str(&outcome(&all[1]).descriptor_json).unwrap();
            assert_eq!(d["stderr_tail"], json!("boom\n"), "the log tail is kept");
        }
        f.assert_consistent().await;
    }
}

#[tokio::test]
async fn consecutive_crashes_stop_the_loop() {
    let f = Fixture::new();
    let mut cfg = f.config("exit 1", EVAL);
    cfg.iterations = 10;
    cfg.max_consecutive_crashes = 3;
    let s = f.run_with(cfg, Arc::new(MinScore)).await;
    assert_eq!(s.crashed, 3);
    assert_eq!(s.stopped, "3 consecutive crashes");
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_group_even_a_grandchild_ignoring_sigterm() {
    let f = Fixture::new();
    let pidfile = f._tmp.path().join("grandchild.pid");
    let propose = format!(
        "sh -c 'trap \"\" TERM; echo $$ > {}; while true; do sleep 0.05; done' & sleep 30",
        pidfile.display()
    );
    let mut cfg = f.config(&propose, EVAL);
    cfg.propose_timeout = Duration::from_millis(700);
    f.run_with(cfg, Arc::new(MinScore)).await;
    let all = f.attempts().await;
    assert_eq!(outcome(&all[1]).reason, "propose: proposer timed out");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut dead = false;
    for _ in 0..50 {
        if !alive(pid) {
            dead = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(dead, "grandchild {pid} survived the timeout");
    f.assert_consistent().await;
}

#[tokio::test]
async fn no_change_and_protected_paths_are_discards() {
    let cases: &[(&str, &str)] = &[
        ("true", "no change"),
        ("echo 1.0 > score.txt", "no change"),
        ("git commit -q --allow-empty -m empty", "no change"),
        (
            "echo x >> prepare.py; echo 0.1 > score.txt",
            "touches protected path prepare.py",
        ),
    ];
    for (propose, reason) in cases {
        let f = Fixture::new();
        let start = f.tip();
        f.run(propose, 1).await;
        let all = f.attempts().await;
        assert_eq!(outcome(&all[1]).status, Outcome::DISCARD, "{propose}");
        assert_eq!(outcome(&all[1]).reason, *reason, "{propose}");
        assert_eq!(f.tip(), start);
        f.assert_consistent().await;
    }
}

#[tokio::test]
async fn staged_steps_survive_another_writer_appending_in_between() {
    let f = Fixture::new();
    // Every candidate changes something (its own id file), so every one is
    // compared, even if two scores happen to be equal.
    let propose = format!("echo $AUTORESEARCH_RUN_ID > id.txt; {VARY}");
    let mut cfg = f.config(&propose, EVAL);
    cfg.iterations = 4;
    let cmp = Arc::new(Interloper {
        storage: f.storage.clone(),
        ticks: Default::default(),
    });
    let s = f.run_with(cfg, cmp.clone()).await;
    assert_eq!(s.launched, 4, "{s:?}");
    assert_eq!(s.crashed, 0, "{s:?}");
    let w = f.world().await;
    // Every foreign tick is there, and so is every step of the loop.
    let foreign = w.find_all::<Vote>(|v| v.voter == "interloper");
    let compared = cmp.ticks.load(std::sync::atomic::Ordering::SeqCst) as usize;
    assert_eq!(foreign.len(), compared);
    let all = f.attempts().await;
    let reasons: Vec<_> = all.iter().map(|a| &outcome(a).reason).collect();
    assert_eq!(compared, 4, "{reasons:?}");
    assert_eq!(all.len(), 5, "baseline and four runs");
    for a in &all[1..] {
        assert_eq!(a.results.len(), 1, "run {} has its result", a.run.run_id);
        assert_eq!(outcome(a).comparator, "interloper");
    }
    f.assert_consistent().await;
}

#[tokio::test]
async fn a_stale_candidate_is_rebased_and_evaluated_again_after_a_parallel_keep() {
    let f = Fixture::new();
    // Each candidate adds its own file; the score falls with every such file.
    let propose = "touch \"f_$AUTORESEARCH_RUN_ID\"";
    let eval = "n=$(ls f_* 2>/dev/null | wc -l); echo \"score: $((10 - n))\"";
    let mut cfg = f.config(propose, eval);
    cfg.parallel = 2;
    cfg.iterations = 2;
    let s = f.run_with(cfg, Arc::new(MinScore)).await;
    let all = f.attempts().await;
    let outcomes: Vec<_> = all.iter().map(|a| &a.outcome).collect();
    assert_eq!(s.kept, 2, "{s:?} {outcomes:#?}");
    let (a, b) = (&all[1], &all[2]);
    let first_kept = if f.head().await.run_id == b.run.run_id {
        a
    } else {
        b
    };
    let second = if first_kept.run.run_id == a.run.run_id {
        b
    } else {
        a
    };
    // The second was re-measured on the new head: its last result scores 8.
    assert_eq!(outcome(second).base_commit, first_kept.run.commit_hash);
    let last = second.results.last().unwrap().outputs().unwrap();
    assert_eq!(last["score"], json!(8.0));
    assert_eq!(
        git(&f.repo, &["rev-parse", "HEAD~1"]),
        first_kept.run.commit_hash
    );
    assert_eq!(f.tip(), second.run.commit_hash);
    f.assert_consistent().await;
}

/// A rebased candidate takes more samples of its new commit, and the
/// incumbent is sampled in its checkout against two heads: every job step
/// is numbered per run, so no sample's log is another's.
#[tokio::test]
async fn job_steps_are_unique_in_a_run_across_a_rebase_and_repeats() {
    let f = Fixture::new();
    let propose = "touch \"f_$AUTORESEARCH_RUN_ID\"";
    let eval = "n=$(ls f_* 2>/dev/null | wc -l); echo \"score: $((10 - n))\"";
    let mut cfg = f.config(propose, eval);
    cfg.parallel = 2;
    cfg.iterations = 2;
    let s = f.run_with(cfg, Arc::new(ThreeSamples)).await;
    assert_eq!(s.kept, 2, "{s:?}");
    let all = f.attempts().await;
    let rebased = all
        .iter()
        .find(|a| {
            a.results
                .iter()
                .any(|r| r.meta().is_some_and(|m| m.commit != a.run.commit_hash))
        })
        .expect("one candidate was measured before and after its rebase");
    let after: Vec<_> = rebased
        .results
        .iter()
        .filter_map(|r| r.meta())
        .filter(|m| m.commit == rebased.run.commit_hash)
        .collect();
    assert_eq!(after.len(), 3, "three samples of the rebased commit");
    let mut logs: Vec<String> = all
        .iter()
        .flat_map(|a| a.results.iter().filter_map(|r| r.meta()))
        .map(|m| m.stdout_log)
        .collect();
    let n = logs.len();
    assert!(
        n >= 12,
        "baseline, two candidates and their repeats: {logs:?}"
    );
    logs.sort();
    logs.dedup();
    assert_eq!(logs.len(), n, "a log file per sample: {logs:#?}");
    f.assert_consistent().await;
}

#[tokio::test]
async fn a_stale_candidate_that_conflicts_is_discarded() {
    let f = Fixture::new();
    // Both candidates rewrite score.txt differently (the whole checksum of
    // the run id, so they never write the same): the second conflicts.
    let propose = "echo \"0.$(echo $AUTORESEARCH_RUN_ID | cksum | cut -d' ' -f1)\" > score.txt";
    let mut cfg = f.config(propose, EVAL);
    cfg.parallel = 2;
    cfg.iterations = 2;
    let s = f.run_with(cfg, Arc::new(MinScore)).await;
    assert_eq!((s.kept, s.discarded), (1, 1), "{s:?}");
    let all = f.attempts().await;
    let stale = all
        .iter()
        .find(|a| outcome(a).status == Outcome::DISCARD)
        .unwrap();
    assert!(
        outcome(stale).reason.starts_with("stale: conflicts"),
        "{}",
        outcome(stale).reason
    );
    f.assert_consistent().await;
}

#[tokio::test]
async fn a_branch_moved_by_someone_else_becomes_a_new_baseline() {
    let f = Fixture::new();
    f.run("echo 2.0 > score.txt", 1).await;
    std::fs::write(f.repo.join("score.txt"), "0.7\n").unwrap();
    git(&f.repo, &["commit", "-qam", "by hand"]);
    let moved = f.tip();
    let s = f.run("echo 0.8 > score.txt", 1).await;
    assert_eq!(s.baselines, 1);
    let all = f.attempts().await;
    let b = &all[2];
    assert_eq!(outcome(b).status, Outcome::BASELINE);
    assert!(outcome(b).reason.contains("moved outside the loop"));
    assert_eq!(b.run.commit_hash, moved);
    // 0.8 is worse than the adopted 0.7.
    assert_eq!(outcome(&all[3]).status, Outcome::DISCARD);
    assert_eq!(f.tip(), moved);
    f.assert_consistent().await;
}

#[tokio::test]
async fn a_dirty_checkout_is_left_alone_with_a_warning() {
    let f = Fixture::new();
    std::fs::write(f.repo.join("prepare.py"), "# edited by the user\n").unwrap();
    let warnings = Arc::new(std::sync::Mutex::new(Vec::new()));
    let w2 = warnings.clone();
    let cfg = f.config("echo 0.5 > score.txt", EVAL);
    let exec = Arc::new(LocalExecutor::new(cfg.state_dir.clone()));
    let c = Controller::open(cfg, f.storage.clone(), Arc::new(MinScore), exec)
        .await
        .unwrap()
        .with_events(Arc::new(move |e| {
            if let autoresearch_controller::Event::Warning(w) = e {
                w2.lock().unwrap().push(w.clone());
            }
        }));
    Arc::new(c).run().await.unwrap();
    let w = warnings.lock().unwrap().clone();
    assert_eq!(w.len(), 1);
    assert!(w[0].contains("local changes"), "{}", w[0]);
    assert_eq!(
        std::fs::read_to_string(f.repo.join("prepare.py")).unwrap(),
        "# edited by the user\n"
    );
    assert_eq!(f.head().await.commit_hash, f.tip());
}

#[tokio::test]
async fn a_resumed_experiment_shows_its_whole_history_to_the_proposer() {
    let f = Fixture::new();
    let out = f.seen_dir();
    let propose = format!(
        "cp \"$AUTORESEARCH_RESULTS\" {o}/hist_$AUTORESEARCH_RUN_ID; {VARY}",
        o = out.display()
    );
    // Enough attempts that a new controller reads them in one pass.
    f.run(&propose, 18).await;
    f.run(&propose, 1).await;
    let all = f.attempts().await;
    assert_eq!(all.len(), 20);
    let seen = std::fs::read_to_string(out.join(format!("hist_{}", all[19].run.run_id))).unwrap();
    assert_eq!(seen, history_seen_by(&all, 19));
    // 19 decided attempts; the run itself, still running, is not listed.
    assert_eq!(seen.lines().count(), 20);
}

/// The history file run `k` of `all` should have seen: every earlier
/// attempt as a rebuild from the ledger renders it (run `k`, running, is
/// left out by the rendering: only decided attempts are listed).
fn history_seen_by(all: &[Attempt], k: usize) -> String {
    let mut running = all[k].clone();
    running.run.commit_hash.clear();
    (running.results, running.outcome) = (Vec::new(), None);
    let mut before = all[..k].to_vec();
    before.push(running);
    history::render(&before, None)
}

#[tokio::test]
async fn the_proposer_sees_its_run_base_worktree_and_history() {
    let f = Fixture::new();
    let out = f.seen_dir();
    let propose = format!(
        "echo \"$AUTORESEARCH_BASE_COMMIT $PWD $AUTORESEARCH_WORKTREE\" > {o}/env_$AUTORESEARCH_RUN_ID; cp \"$AUTORESEARCH_RESULTS\" {o}/hist_$AUTORESEARCH_RUN_ID; {VARY}",
        o = out.display()
    );
    f.run(&propose, 4).await;
    let all = f.attempts().await;
    // Each proposer saw every earlier decided attempt (not itself: it is
    // not decided), exactly as a rebuild from the ledger renders them (the
    // loop keeps decided lines from one iteration to the next).
    for k in 1..all.len() {
        let seen = std::fs::read_to_string(out.join(format!("hist_{}", all[k].run.run_id)));
        assert_eq!(seen.unwrap(), history_seen_by(&all, k), "run {k}");
    }
    let second = &all[2].run.run_id;
    let hist = std::fs::read_to_string(out.join(format!("hist_{second}"))).unwrap();
    let lines: Vec<&str> = hist.lines().collect();
    assert_eq!(lines[0], "commit\tscore\tstatus\tdescription\treason");
    assert_eq!(lines.len(), 3, "baseline, first candidate: {hist}");
    assert!(lines[1].starts_with(&all[0].run.commit_hash[..7]));
    assert!(lines[1].contains("\t1.000000\tkeep\t"));
    let env = std::fs::read_to_string(out.join(format!("env_{second}"))).unwrap();
    let parts: Vec<&str> = env.split_whitespace().collect();
    assert_eq!(parts[0], outcome(&all[2]).base_commit);
    assert_eq!(parts[1], parts[2]);
    assert!(parts[1].contains(".autoresearch/slots/"));
    f.assert_consistent().await;
}

#[tokio::test]
async fn need_more_adds_samples_with_their_index_and_reuses_incumbent_samples() {
    let f = Fixture::new();
    let eval = "echo \"score: $(cat score.txt)\"; echo \"sample: $AUTORESEARCH_SAMPLE\"";
    let mut cfg = f.config(VARY, eval);
    cfg.iterations = 2;
    f.run_with(cfg, Arc::new(ThreeSamples)).await;
    let all = f.attempts().await;
    let baseline = &all[0];
    // Incumbent samples live under the baseline's run and are reused.
    let samples: Vec<f64> = baseline
        .results
        .iter()
        .map(|r| r.outputs().unwrap()["sample"].as_f64().unwrap())
        .collect();
    if f.head().await.run_id == baseline.run.run_id {
        assert_eq!(samples, vec![0.0, 1.0, 2.0]);
    }
    for a in &all[1..] {
        let s: Vec<f64> = a
            .results
            .iter()
            .map(|r| r.outputs().unwrap()["sample"].as_f64().unwrap())
            .collect();
        assert_eq!(s, vec![0.0, 1.0, 2.0], "run {}", a.run.run_id);
    }
    f.assert_consistent().await;
}

#[tokio::test]
async fn a_pending_decision_waits_for_votes_while_the_loop_goes_on() {
    let f = Fixture::new();
    let mut cfg = f.config(VARY, EVAL);
    cfg.iterations = 2;
    let s = f.run_with(cfg.clone(), Arc::new(Votes)).await;
    assert_eq!(s.pending, 2);
    let all = f.attempts().await;
    assert!(
        all[1..]
            .iter()
            .all(|a| outcome(a).status == Outcome::PENDING && a.run.status == "stopped")
    );
    // Another process votes.
    let mut w = f.world().await;
    let voted = all[1].run.run_id.clone();
    w.spawn_with(&Vote {
        run_id: voted.clone(),
        verdict: "keep".into(),
        voter: "ann".into(),
        reason: "looks right".into(),
        at_ms: now_ms(),
    })
    .unwrap();
    w.commit().await.unwrap();
    cfg.iterations = 1;
    f.run_with(cfg, Arc::new(Votes)).await;
    let all = f.attempts().await;
    let kept = all.iter().find(|a| a.run.run_id == voted).unwrap();
    assert_eq!(outcome(kept).status, Outcome::KEEP);
    assert_eq!(f.head().await.run_id, voted);
    assert_eq!(f.tip(), kept.run.commit_hash);
    assert_eq!(
        outcome(&all[2]).status,
        Outcome::PENDING,
        "the other still waits"
    );
    f.assert_consistent().await;
}

#[tokio::test]
async fn recovery_marks_interrupted_runs_and_finishes_a_started_promotion() {
    let f = Fixture::new();
    f.run("echo 2.0 > score.txt", 1).await;
    let base = f.tip();
    // A candidate commit, as a killed controller would have left it.
    let wt = f._tmp.path().join("wt");
    git(
        &f.repo,
        &[
            "worktree",
            "add",
            "-q",
            "--detach",
            wt.to_str().unwrap(),
            &base,
        ],
    );
    std::fs::write(wt.join("score.txt"), "0.2\n").unwrap();
    git(&wt, &["commit", "-qam", "cand"]);
    let cand = git(&wt, &["rev-parse", "HEAD"]);
    git(
        &f.repo,
        &["worktree", "remove", "--force", wt.to_str().unwrap()],
    );
    let mut w = f.world().await;
    let mut in_flight = Run::new("r-flight", "exp");
    in_flight.set_status(RunStatus::Running);
    w.spawn_with(&in_flight).unwrap();
    let mut promoting = Run::new("r-keep", "exp");
    promoting.set_status(RunStatus::Stopping);
    promoting.commit_hash = cand.clone();
    let e = w.spawn_with(&promoting).unwrap();
    w.insert(
        e,
        &Outcome {
            run_id: "r-keep".into(),
            status: Outcome::KEEP.into(),
            reason: "better".into(),
            descriptor_json: "{}".into(),
            base_commit: base.clone(),
            comparator: "x".into(),
            decided_at_ms: now_ms(),
        },
    )
    .unwrap();
    w.commit().await.unwrap();
    let cfg = f.config("echo 2.0 > score.txt", EVAL);
    let exec = Arc::new(LocalExecutor::new(cfg.state_dir.clone()));
    let c = Controller::open(cfg, f.storage.clone(), Arc::new(MinScore), exec)
        .await
        .unwrap();
    let touched = c.recover().await.unwrap();
    assert_eq!(touched.len(), 2);
    let all = f.attempts().await;
    let flight = all.iter().find(|a| a.run.run_id == "r-flight").unwrap();
    assert_eq!(
        (
            outcome(flight).status.as_str(),
            outcome(flight).reason.as_str()
        ),
        ("crash", "interrupted")
    );
    assert_eq!(flight.run.status, "crashed");
    let kept = all.iter().find(|a| a.run.run_id == "r-keep").unwrap();
    assert_eq!(kept.run.status, "stopped");
    assert_eq!(f.tip(), cand, "the kept candidate was applied");
    assert_eq!(f.head().await.commit_hash, cand);
    // Recovering again changes nothing: never applied twice.
    assert!(c.recover().await.unwrap().is_empty());
    assert_eq!(git(&f.repo, &["rev-parse", "main~1"]), base);
    f.assert_consistent().await;
}

#[tokio::test]
async fn a_forked_world_continues_on_its_own_branch() {
    let f = Fixture::new();
    f.run("echo 0.9 > score.txt", 1).await;
    let main_tip = f.tip();
    let w = f.world().await;
    w.fork(w.tick(), "autoresearch:exp/alt").await.unwrap();
    let mut cfg = f.config("echo 0.5 > score.txt", EVAL);
    cfg.world = "autoresearch:exp/alt".into();
    cfg.branch = autoresearch_controller::fork_branch_name(&cfg.world);
    assert_eq!(cfg.branch, "autoresearch/exp/alt");
    let s = f.run_with(cfg, Arc::new(MinScore)).await;
    assert_eq!(
        (s.kept, s.baselines),
        (1, 0),
        "the fork's head is reused, not re-evaluated"
    );
    assert_eq!(f.tip(), main_tip, "the original branch is untouched");
    let alt = git(&f.repo, &["rev-parse", "refs/heads/autoresearch/exp/alt"]);
    assert_eq!(git(&f.repo, &["rev-parse", &format!("{alt}~1")]), main_tip);
    let fork = World::open(
        f.storage.clone(),
        Arc::new(ComponentRegistry::standard()),
        "autoresearch:exp/alt",
    )
    .await
    .unwrap();
    assert_eq!(fork.branch_head("exp").unwrap().1.commit_hash, alt);
    assert_eq!(
        f.head().await.commit_hash,
        main_tip,
        "the parent world is untouched"
    );
}

#[tokio::test]
async fn a_reused_checkout_carries_nothing_over_from_the_previous_run() {
    let f = Fixture::new();
    // The evaluator leaves an untracked file; a proposer that finds one fails.
    let propose = format!("test ! -e junk || exit 9; {VARY}");
    let eval = format!("touch junk; {EVAL}");
    let mut cfg = f.config(&propose, &eval);
    cfg.iterations = 4;
    let s = f.run_with(cfg, Arc::new(MinScore)).await;
    assert_eq!(s.crashed, 0, "{s:?}");
    assert_eq!(s.launched, 4);
    f.assert_consistent().await;
}

#[test]
fn branch_tip_and_head_commit_agree_with_git_for_loose_and_packed_refs() {
    use autoresearch_controller::git::Git;
    let f = Fixture::new();
    let g = Git::new(&f.repo);
    let tip = f.tip();
    assert_eq!(g.branch_tip("main").unwrap(), Some(tip.clone()));
    git(&f.repo, &["pack-refs", "--all", "--prune"]);
    assert!(!f.repo.join(".git/refs/heads/main").exists());
    assert_eq!(
        Git::new(&f.repo).branch_tip("main").unwrap(),
        Some(tip.clone())
    );
    assert_eq!(Git::new(&f.repo).branch_tip("nope").unwrap(), None);
    let wt = f._tmp.path().join("wt");
    git(
        &f.repo,
        &[
            "worktree",
            "add",
            "-q",
            "--detach",
            wt.to_str().unwrap(),
            &tip,
        ],
    );
    assert_eq!(Git::new(&wt).head_commit().unwrap(), tip);
    git(&wt, &["checkout", "-q", "-b", "side"]);
    assert_eq!(
        Git::new(&wt).head_commit().unwrap(),
        tip,
        "a symbolic HEAD falls back to git"
    );
    assert_eq!(Git::new(&f.repo).head_commit().unwrap(), tip);
}
