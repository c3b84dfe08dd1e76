//! Replay, fork and vote against experiments the real loop ran: a real git
//! repository, shell scripts as proposer and evaluator, the redb ledger, and
//! `autoresearch run --world FORK` continuing a fork on its own branch.

use autoresearch_core::lifecycle::{Attempt, attempts};
use autoresearch_core::{ComponentRegistry, Storage, Tick, World};
use autoresearch_store::{RedbConfig, RedbStorage};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;

use autoresearch_test_support::git::git;
use autoresearch_test_support::loop_repo::{LoopRepo, listed_scores_config, write_scores};

const BIN: &str = env!("CARGO_BIN_EXE_autoresearch");

struct Repo {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    ctl: PathBuf,
}

impl Repo {
    /// A repository whose candidates will score `scores` in turn (the
    /// branch tip scores 100), compared under the `compare` table
    /// ([`listed_scores_config`]).
    fn new(scores: &[u32], compare: &str) -> Repo {
        let LoopRepo { tmp, dir, ctl } = LoopRepo::new(|ctl| listed_scores_config(ctl, compare));
        write_scores(&ctl, scores);
        Repo {
            _tmp: tmp,
            dir,
            ctl,
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .current_dir(&self.dir)
            .env_remove("AUTORESEARCH_LEDGER")
            .env("USER", "tester")
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
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

    fn tip(&self, branch: &str) -> String {
        git(&self.dir, &["rev-parse", &format!("refs/heads/{branch}")])
    }

    fn storage(&self) -> Arc<dyn Storage> {
        let path = self.dir.join(".autoresearch/ledger.redb");
        Arc::new(RedbStorage::open(&path, RedbConfig::default()).unwrap())
    }

    /// The attempts of experiment `exp` in `world`, and the world's head tick.
    async fn attempts(&self, world: &str) -> (Vec<Attempt>, Tick) {
        let w = World::open(
            self.storage(),
            Arc::new(ComponentRegistry::standard()),
            world,
        )
        .await
        .unwrap();
        (attempts(&w, "exp"), w.tick())
    }

    /// The first tick of `world` at which run `run_id` is the head.
    async fn tick_when_head(&self, world: &str, run_id: &str) -> Tick {
        let storage = self.storage();
        let info = storage.find_world(world).await.unwrap().unwrap();
        for t in 1..=info.head.0 {
            let w = World::open_at(
                storage.clone(),
                Arc::new(ComponentRegistry::standard()),
                info.id,
                Tick(t),
            )
            .await
            .unwrap();
            if w.branch_head("exp")
                .is_some_and(|(_, h)| h.run_id == run_id)
            {
                return Tick(t);
            }
        }
        panic!("{run_id} never head in {world}");
    }
}

fn statuses(all: &[Attempt]) -> Vec<String> {
    all.iter()
        .map(|a| a.outcome.as_ref().unwrap().status.to_string())
        .collect()
}

fn score_at(repo: &Repo, commit: &str) -> String {
    git(&repo.dir, &["show", &format!("{commit}:score.txt")])
}

const SCALAR: &str = "kind = \"scalar\"\nmetric = \"score\"\ndirection = \"minimize\"";

#[tokio::test]
async fn replay_a_loop_run_then_continue_the_fork_on_its_own_branch() {
    // Baseline 100, then 90 (keep), 95 (discard), 80 (keep), and 60 for the fork.
    let r = Repo::new(&[90, 95, 80, 60], SCALAR);
    r.ok(&["run", "--iterations", "3"]);
    let (orig, _) = r.attempts("autoresearch:exp").await;
    assert_eq!(statuses(&orig), ["baseline", "keep", "discard", "keep"]);
    let main_tip = r.tip("main");
    assert_eq!(score_at(&r, &main_tip), "80");

    // Under a minimum delta of 15, only 100 -> 80 is worth keeping.
    let rep = r.json(&[
        "replay",
        "--comparator",
        "scalar:score:min:delta=15",
        "--name",
        "strict",
        "--json",
    ]);
    let cf: Vec<&str> = rep["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["counterfactual"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(cf, ["baseline", "discard", "discard", "keep"]);
    assert_eq!(
        rep["counterfactual_head"]["commit"],
        Value::String(main_tip.clone())
    );
    assert_eq!(
        rep["counterfactual_trajectory"].as_array().unwrap().len(),
        3,
        "{rep}"
    );
    assert_eq!(
        rep["original_trajectory"].as_array().unwrap().len(),
        4,
        "{rep}"
    );
    let reason = rep["steps"][1]["counterfactual"]["reason"]
        .as_str()
        .unwrap();
    assert!(reason.contains("not more than min_delta 15"), "{reason}");

    // The fork continues on branch autoresearch/strict; main is not touched.
    r.ok(&[
        "run",
        "--world",
        "strict",
        "--iterations",
        "1",
        "--comparator",
        "scalar:score:min:delta=15",
    ]);
    assert_eq!(r.tip("main"), main_tip);
    let fork_tip = r.tip("autoresearch/strict");
    assert_eq!(score_at(&r, &fork_tip), "60");
    assert_eq!(
        git(&r.dir, &["rev-parse", &format!("{fork_tip}^")]),
        main_tip
    );
    let (forked, _) = r.attempts("strict").await;
    assert_eq!(
        statuses(&forked),
        ["baseline", "discard", "discard", "keep", "keep"]
    );
    let (orig_again, _) = r.attempts("autoresearch:exp").await;
    assert_eq!(orig_again.len(), 4, "the original world is untouched");
}

#[tokio::test]
async fn fork_a_discarded_run_as_head_and_continue_from_it() {
    // Baseline 100, then 90 (keep), 95 (discard), 80 (keep); 85 for the fork.
    let r = Repo::new(&[90, 95, 80, 85], SCALAR);
    r.ok(&["run", "--iterations", "3"]);
    let (orig, _) = r.attempts("autoresearch:exp").await;
    assert_eq!(statuses(&orig), ["baseline", "keep", "discard", "keep"]);
    let main_tip = r.tip("main");
    let (kept90, discarded95) = (&orig[1].run, &orig[2].run);
    let at = r.tick_when_head("autoresearch:exp", &kept90.run_id).await;
    let rep = r.json(&[
        "fork",
        "--at",
        &at.0.to_string(),
        "--promote",
        &discarded95.run_id,
        "--name",
        "what-if",
        "--json",
    ]);
    assert_eq!(
        rep["head"]["commit"],
        Value::String(discarded95.commit_hash.clone())
    );
    assert_eq!(
        rep["previous_head"]["run_id"],
        Value::String(kept90.run_id.clone())
    );

    let out = r.run(&["run", "--world", "what-if", "--iterations", "1"]);
    assert!(out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !said.contains("comparator changed"),
        "a promotion by hand is no comparator to switch from: {said}"
    );
    let tip = r.tip("autoresearch/what-if");
    assert_eq!(score_at(&r, &tip), "85", "85 beats the promoted 95");
    assert_eq!(
        git(&r.dir, &["rev-parse", &format!("{tip}^")]),
        discarded95.commit_hash
    );
    assert_eq!(
        r.tip("main"),
        main_tip,
        "the original branch is never touched"
    );
    let (forked, _) = r.attempts("what-if").await;
    assert_eq!(statuses(&forked), ["baseline", "keep", "keep", "keep"]);
    assert!(
        forked[2]
            .outcome
            .as_ref()
            .unwrap()
            .reason
            .contains("promoted by hand")
    );
}

#[tokio::test]
async fn a_vote_from_another_terminal_decides_a_pending_run() {
    let r = Repo::new(&[90, 80], "kind = \"vote\"");
    r.ok(&["run", "--iterations", "1"]);
    let (all, _) = r.attempts("autoresearch:exp").await;
    assert_eq!(statuses(&all), ["baseline", "pending"]);
    let pending = all[1].run.clone();
    let start = r.tip("main");
    let err = r.run(&["vote", "no-such-run", "keep"]);
    assert!(!err.status.success());
    let stderr = String::from_utf8_lossy(&err.stderr);
    assert!(
        stderr.contains("no run \"no-such-run\" in experiment \"exp\""),
        "{stderr}"
    );
    let v = r.json(&[
        "vote",
        &pending.run_id[..10],
        "keep",
        "--reason",
        "looks good",
        "--json",
    ]);
    assert_eq!(v["vote"]["run_id"], Value::String(pending.run_id.clone()));
    assert_eq!(v["run_status"], "pending");
    // The quorum (1) is in: the vote applies the decision at once, and
    // launches no candidate.
    assert_eq!(v["decision"]["status"], "keep", "{v}");
    assert_eq!(r.tip("main"), pending.commit_hash);
    let (all, _) = r.attempts("autoresearch:exp").await;
    assert_eq!(statuses(&all), ["baseline", "keep"]);
    let status = r.ok(&["status"]);
    assert!(
        status.contains(&format!("voted      {}: keep", pending.run_id))
            && !status.contains("waiting"),
        "{status}"
    );
    // The next run of the loop goes on from the kept candidate.
    r.ok(&["run", "--iterations", "1"]);
    let (all, _) = r.attempts("autoresearch:exp").await;
    let decided = all.iter().find(|a| a.run.run_id == pending.run_id).unwrap();
    assert_eq!(
        decided.outcome.as_ref().unwrap().status,
        "keep",
        "{:?}",
        decided.outcome
    );
    assert_ne!(r.tip("main"), start);
    assert_eq!(r.tip("main"), pending.commit_hash);
}

#[tokio::test]
async fn a_vote_cast_while_the_loop_runs_is_seen_by_it() {
    let r = Repo::new(&[90, 80, 70], "kind = \"vote\"");
    // The second proposal waits until the test says go.
    std::fs::write(r.ctl.join("hold_2"), "").unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--iterations", "3"])
        .current_dir(&r.dir)
        .env_remove("AUTORESEARCH_LEDGER")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !r.ctl.join("in_2").exists() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the loop never reached the second proposal"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The first candidate waits for a vote; cast it while the loop holds the ledger.
    let (all, _) = r.attempts("autoresearch:exp").await;
    assert_eq!(statuses(&all[..2]), ["baseline", "pending"]);
    let first = all[1].run.clone();
    let v = r.json(&["vote", &first.run_id, "keep", "--voter", "ana", "--json"]);
    assert_eq!(v["votes_on_run"], 1);
    // The loop holds the lease: the vote leaves the decision to it.
    assert!(v["loop_running"].is_string(), "{v}");
    assert!(v["decision"].is_null(), "{v}");
    std::fs::write(r.ctl.join("go"), "").unwrap();
    let status = child.wait().unwrap();
    assert!(status.success());
    let (all, _) = r.attempts("autoresearch:exp").await;
    let decided = all.iter().find(|a| a.run.run_id == first.run_id).unwrap();
    assert_eq!(decided.outcome.as_ref().unwrap().status, "keep");
    assert_eq!(r.tip("main"), first.commit_hash);
}

#[tokio::test]
async fn a_vote_short_of_the_quorum_waits_and_status_says_how_many() {
    let r = Repo::new(&[90], "kind = \"vote\"\nquorum = 2");
    r.ok(&["run", "--iterations", "1"]);
    let (all, _) = r.attempts("autoresearch:exp").await;
    let pending = all[1].run.run_id.clone();
    let text = r.ok(&["vote", &pending, "keep", "--voter", "ana"]);
    assert!(
        text.contains("still waits for votes: 1 vote(s) on it; vote:quorum=2 decides it"),
        "the count now, not the one recorded when it began to wait: {text}"
    );
    let status = r.ok(&["status"]);
    assert!(
        status.contains(&format!("waiting    {pending} for a vote (1 of 2 votes)")),
        "{status}"
    );
    let text = r.ok(&["vote", &pending, "keep", "--voter", "bo"]);
    assert!(
        text.contains("quorum reached") && text.contains("decided keep"),
        "{text}"
    );
    let (all, _) = r.attempts("autoresearch:exp").await;
    assert_eq!(
        statuses(&all),
        ["baseline", "keep"],
        "no candidate launched"
    );
    assert_eq!(r.tip("main"), all[1].run.commit_hash);
}

#[tokio::test]
async fn a_vote_decides_a_run_that_a_run_comparator_made_wait() {
    // The config compares by score; this run's comparator asks for votes.
    let r = Repo::new(&[90], SCALAR);
    r.ok(&["run", "--iterations", "1", "--comparator", "vote:quorum=1"]);
    let (all, _) = r.attempts("autoresearch:exp").await;
    assert_eq!(statuses(&all), ["baseline", "pending"]);
    let pending = all[1].run.clone();
    let text = r.ok(&["vote", &pending.run_id, "keep", "--voter", "ana"]);
    assert!(
        text.contains("quorum reached") && text.contains("decided keep"),
        "{text}"
    );
    let (all, _) = r.attempts("autoresearch:exp").await;
    assert_eq!(
        statuses(&all),
        ["baseline", "keep"],
        "decided by the comparator that made it wait; no candidate launched"
    );
    assert_eq!(r.tip("main"), pending.commit_hash);
}
