//! Several `autoresearch` processes on one ledger: two `run`s on one
//! experiment (one refuses, naming the holder; a dead holder's lease is taken
//! over and its run recovered), `run --parallel 2` with `vote`s cast
//! meanwhile. Afterwards every world reads from tick 0 and the branch agrees
//! with the ledger.

mod common;

use autoresearch_core::lifecycle::{Attempt, attempts};
use autoresearch_core::{BranchHead, ComponentRegistry, Lease, OutcomeStatus, World};
use autoresearch_store::{RedbConfig, RedbStorage};
use autoresearch_test_support::git::git;
use autoresearch_test_support::loop_repo::{LoopRepo, falling_scores_config};
use autoresearch_test_support::process::wait_for;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_autoresearch");

fn cmd(r: &LoopRepo, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .current_dir(&r.dir)
        .env_remove("AUTORESEARCH_LEDGER");
    c
}

fn run(r: &LoopRepo, args: &[&str]) -> Output {
    cmd(r, args).output().unwrap()
}

fn spawn(r: &LoopRepo, args: &[&str]) -> Child {
    cmd(r, args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Waits for `child` at most `limit`, killing it past that (a bounded test).
fn wait_bounded(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Every world of the ledger opened from tick 0 (replayed), and the
/// experiment's attempts and head.
async fn ledger(r: &LoopRepo) -> (Vec<Attempt>, Option<BranchHead>, Vec<Lease>) {
    let path = r.dir.join(".autoresearch/ledger.redb");
    let storage = Arc::new(RedbStorage::open(&path, RedbConfig::default()).unwrap());
    let registry = Arc::new(ComponentRegistry::standard());
    for info in autoresearch_core::Storage::list_worlds(storage.as_ref())
        .await
        .unwrap()
    {
        let w = World::open_id(storage.clone(), registry.clone(), info.id)
            .await
            .unwrap_or_else(|e| panic!("world {} does not replay: {e}", info.name));
        assert_eq!(w.tick(), info.head);
    }
    let w = World::open(storage, registry, "autoresearch:exp")
        .await
        .unwrap();
    let leases = w.find_all::<Lease>(|_| true).into_iter().map(|(_, l)| l);
    (
        attempts(&w, "exp"),
        w.branch_head("exp").map(|(_, h)| h),
        leases.collect(),
    )
}

/// The branch and the ledger agree, no run is doubled or left in flight.
async fn assert_consistent(r: &LoopRepo) -> Vec<Attempt> {
    let (all, head, leases) = ledger(r).await;
    let tip = git(&r.dir, &["rev-parse", "refs/heads/main"]);
    assert_eq!(
        head.expect("a head").commit_hash,
        tip,
        "branch and BranchHead agree"
    );
    let mut ids: Vec<&str> = all.iter().map(|a| a.run.run_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), all.len(), "no run doubled");
    for a in &all {
        assert!(
            a.run.status().unwrap().is_terminal(),
            "{} in flight",
            a.run.run_id
        );
        assert!(a.outcome.is_some(), "{} has an outcome", a.run.run_id);
    }
    assert_eq!(leases.len(), 1, "one lease record per world: {leases:?}");
    assert!(leases[0].is_released(), "the last holder gave it back");
    let doctor = run(r, &["doctor"]);
    let report = text(&doctor.stdout);
    assert!(
        doctor.status.success(),
        "doctor: {report}{}",
        text(&doctor.stderr)
    );
    assert!(report.contains(" 0 problem(s) found"), "{report}");
    all
}

#[tokio::test]
async fn a_second_run_refuses_naming_the_holder_and_takes_over_once_it_is_gone() {
    let r = LoopRepo::new(falling_scores_config);
    std::fs::write(r.ctl.join("slow_propose"), "").unwrap();
    let first = spawn(&r, &["run", "--iterations", "3"]);
    let first_pid = first.id();
    wait_for(&r.ctl.join("in_propose"));

    let second = run(&r, &["run", "--iterations", "1"]);
    let err = text(&second.stderr);
    assert!(!second.status.success(), "the second loop must refuse");
    assert!(
        err.contains("is being run by") && err.contains(&format!("pid {first_pid}")),
        "the refusal names the holder: {err}"
    );
    // The same ledger through a symbolic link is the same lease.
    let link = r.tmp.path().join("link.redb");
    std::os::unix::fs::symlink(r.dir.join(".autoresearch/ledger.redb"), &link).unwrap();
    let via_link = run(
        &r,
        &[
            "--ledger",
            link.to_str().unwrap(),
            "run",
            "--iterations",
            "1",
        ],
    );
    let err = text(&via_link.stderr);
    assert!(
        !via_link.status.success() && err.contains(&format!("pid {first_pid}")),
        "a loop reaching the ledger through a symlink refuses too: {err}"
    );
    // Reads never need the lease.
    let status = run(&r, &["status"]);
    assert!(status.status.success(), "{}", text(&status.stderr));

    // The holder dies without giving the lease back: the next run takes it
    // over and only then recovers the holder's run in flight.
    let killed = Command::new("kill")
        .args(["-KILL", &first_pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let _ = wait_bounded(first, Duration::from_secs(10));
    let pid = std::fs::read_to_string(r.ctl.join("propose.pid")).unwrap();
    let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
    std::fs::remove_file(r.ctl.join("slow_propose")).unwrap();
    // The dead holder's run is still in flight in the ledger; status says
    // no loop is running it.
    let status = text(&run(&r, &["status"]).stdout);
    assert!(
        status.contains("in flight") && status.contains("no loop is running it"),
        "{status}"
    );
    let doctor = run(&r, &["doctor"]);
    let report = text(&doctor.stdout);
    assert!(doctor.status.success(), "{report}");
    assert!(
        report.contains(&format!("pid {first_pid}")) && report.contains("which is gone"),
        "doctor tells of the dead holder's lease: {report}"
    );

    let third = run(&r, &["run", "--iterations", "1"]);
    assert!(third.status.success(), "{}", text(&third.stderr));
    let all = assert_consistent(&r).await;
    let interrupted = all
        .iter()
        .filter(|a| {
            a.outcome
                .as_ref()
                .is_some_and(|o| o.status == OutcomeStatus::Crash && o.reason == "interrupted")
        })
        .count();
    assert_eq!(interrupted, 1, "the dead holder's run was recovered once");
}

#[tokio::test]
async fn two_runs_started_together_never_damage_the_ledger() {
    for round in 0..3 {
        let r = LoopRepo::new(falling_scores_config);
        let a = spawn(&r, &["run", "--iterations", "3"]);
        let b = spawn(&r, &["run", "--iterations", "3"]);
        let pids = [a.id(), b.id()];
        let outs = [
            wait_bounded(a, Duration::from_secs(60)),
            wait_bounded(b, Duration::from_secs(60)),
        ];
        let mut ok = 0;
        for (i, o) in outs.iter().enumerate() {
            if o.status.success() {
                ok += 1;
            } else {
                let err = text(&o.stderr);
                assert!(err.contains("is being run by"), "round {round}: {err}");
                // The holder named is the other loop, even when it had not
                // recorded its lease yet.
                assert!(
                    err.contains(&format!("pid {} ", pids[1 - i])),
                    "round {round}: {err}"
                );
            }
        }
        assert!(ok >= 1, "round {round}: one loop ran");
        let all = assert_consistent(&r).await;
        let kept = all
            .iter()
            .filter(|a| a.outcome.as_ref().unwrap().status == OutcomeStatus::Keep)
            .count();
        // Every candidate is better than the last: each loop that ran kept
        // all of its three, and nobody took another's keep for an outside move.
        assert_eq!(kept, 3 * ok, "round {round}");
        let log = run(&r, &["log", "--json"]);
        assert!(log.status.success(), "{}", text(&log.stderr));
    }
}

#[tokio::test]
async fn votes_cast_while_a_parallel_loop_runs_are_all_recorded() {
    let r = LoopRepo::new(falling_scores_config);
    let baseline = run(&r, &["run", "--iterations", "1"]);
    assert!(baseline.status.success(), "{}", text(&baseline.stderr));
    let (all, _, _) = ledger(&r).await;
    let target = all[0].run.run_id.clone();
    let loop_ = spawn(&r, &["run", "--iterations", "6", "--parallel", "2"]);
    let mut votes = 0;
    for i in 0..8 {
        let verdict = if i % 2 == 0 { "keep" } else { "discard" };
        let voter = format!("voter{i}");
        let out = run(&r, &["vote", &target, verdict, "--voter", &voter]);
        assert!(out.status.success(), "vote {i}: {}", text(&out.stderr));
        votes += 1;
    }
    let out = wait_bounded(loop_, Duration::from_secs(120));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let all = assert_consistent(&r).await;
    assert_eq!(all.len(), 1 + 1 + 6, "baselines and the six candidates");
    let w = common::exp_world(&r.dir).await;
    let recorded = w
        .find_all::<autoresearch_core::Vote>(|v| v.run_id == target)
        .len();
    assert_eq!(recorded, votes, "no vote lost");
}

/// Everything at once beside a parallel loop: votes, an import into another
/// experiment, forks, replays and every read command, each a real process.
/// None waits for the loop, none fails, and afterwards every world replays
/// and `doctor` finds nothing.
#[tokio::test]
async fn writers_and_readers_of_every_kind_beside_a_parallel_loop() {
    let r = LoopRepo::new(falling_scores_config);
    let baseline = run(&r, &["run", "--iterations", "1"]);
    assert!(baseline.status.success(), "{}", text(&baseline.stderr));
    let (all, _, _) = ledger(&r).await;
    let target = all[1].run.run_id.clone();
    let tsv = r.ctl.join("results.tsv");
    std::fs::write(
        &tsv,
        "commit\tscore\tstatus\tdescription\na1b2c3d\t9\tkeep\tbase\nb2c3d4e\t8\tkeep\tbetter\n",
    )
    .unwrap();
    let tsv = tsv.display().to_string();
    let loop_ = spawn(&r, &["run", "--iterations", "6", "--parallel", "2"]);
    let start = Instant::now();
    for i in 0..4 {
        let (fork, replay) = (format!("fork{i}"), format!("replay{i}"));
        let jobs: Vec<Vec<&str>> = vec![
            vec!["vote", &target, "keep", "--voter", "v"],
            vec!["ingest", "tsv", &tsv, "--experiment", "imported"],
            vec![
                "fork",
                "--experiment",
                "exp",
                "--at",
                "3",
                "--promote",
                &target,
                "--name",
                &fork,
            ],
            vec![
                "replay",
                "--experiment",
                "exp",
                "--comparator",
                "scalar:score:min",
                "--name",
                &replay,
            ],
            vec!["status"],
            vec!["log", "--json"],
            vec!["worlds"],
            vec!["runs", "--world", "autoresearch:exp"],
        ];
        let children: Vec<(String, Child)> = jobs
            .iter()
            .map(|args| (args.join(" "), spawn(&r, args)))
            .collect();
        for (what, child) in children {
            let out = wait_bounded(child, Duration::from_secs(60));
            assert!(
                out.status.success(),
                "round {i}: {what}: {}",
                text(&out.stderr)
            );
        }
    }
    assert!(start.elapsed() < Duration::from_secs(120), "bounded");
    let out = wait_bounded(loop_, Duration::from_secs(120));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_consistent(&r).await;
    let worlds = run(&r, &["worlds", "--json"]);
    let listed = text(&worlds.stdout);
    for name in ["fork3", "replay3", "autoresearch:imported"] {
        assert!(listed.contains(name), "{name} in {listed}");
    }
}
