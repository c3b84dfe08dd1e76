//! The `autoresearch` binary running the loop on real git repositories, with
//! real shell scripts as proposer and evaluator and the real redb ledger:
//! init/run/status/show, config errors, and SIGKILL at several points of an
//! iteration followed by a resume.

mod common;

use autoresearch_core::BranchHead;
use autoresearch_core::lifecycle::{Attempt, Outcome, attempts};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use autoresearch_test_support::git::git;
use autoresearch_test_support::loop_repo::{LoopRepo, falling_scores_config};
use autoresearch_test_support::process::{alive, kill_marked, wait_for, with_marker};

const BIN: &str = env!("CARGO_BIN_EXE_autoresearch");

struct Repo {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    ctl: PathBuf,
}

impl Repo {
    /// Every candidate is strictly better than all before it, so every
    /// evaluated candidate is kept; flag files in `ctl` make the proposer or
    /// the evaluator hang ([`falling_scores_config`]).
    ///
    /// Without the bubblewrap sandbox: these tests follow the jobs' host
    /// pids (a sandboxed job's `$$` is a pid of its own namespace), and so
    /// cover the no-sandbox mode's containment (subreaper, reaper); the
    /// sandbox's own is tested in the controller's `sandbox` tests.
    fn new() -> Repo {
        let LoopRepo { tmp, dir, ctl } = LoopRepo::new(|ctl| {
            falling_scores_config(ctl).replace("[run]\n", "[run]\nsandbox = \"none\"\n")
        });
        Repo {
            _tmp: tmp,
            dir,
            ctl,
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(&self.dir)
            .env_remove("AUTORESEARCH_LEDGER");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
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

    fn spawn(&self, args: &[&str], env: &[(&str, &str)]) -> Child {
        let mut c = self.cmd(args);
        c.envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c.spawn().unwrap()
    }

    fn tip(&self) -> String {
        git(&self.dir, &["rev-parse", "refs/heads/main"])
    }

    async fn ledger(&self) -> (Vec<Attempt>, BranchHead) {
        let w = common::exp_world(&self.dir).await;
        (attempts(&w, "exp"), w.branch_head("exp").unwrap().1)
    }

    /// The branch and the ledger agree, no run is in flight or undecided,
    /// no run id is doubled, no worktree is left, the checkout is clean.
    async fn assert_consistent(&self) -> Vec<Attempt> {
        let (all, head) = self.ledger().await;
        assert_eq!(head.commit_hash, self.tip(), "branch and BranchHead agree");
        let mut ids: Vec<&str> = all.iter().map(|a| a.run.run_id.as_str()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), all.len(), "no run doubled");
        for a in &all {
            assert!(
                a.run.status().unwrap().is_terminal(),
                "{} is {}",
                a.run.run_id,
                a.run.status
            );
            assert!(a.outcome.is_some(), "{} has an outcome", a.run.run_id);
        }
        assert_eq!(git(&self.dir, &["status", "--porcelain"]), "");
        let wts = git(&self.dir, &["worktree", "list", "--porcelain"]);
        assert_eq!(wts.matches("worktree ").count(), 1, "{wts}");
        // Each kept candidate appears once on the branch: a chain of keeps.
        let kept: Vec<&Attempt> = all
            .iter()
            .filter(|a| a.outcome.as_ref().unwrap().status == Outcome::KEEP)
            .collect();
        let chain = git(&self.dir, &["rev-list", "main"]);
        for k in &kept {
            assert_eq!(chain.lines().filter(|l| *l == k.run.commit_hash).count(), 1);
        }
        // ... or a commit someone else made, adopted as a baseline.
        let adopted = all
            .iter()
            .filter(|a| a.outcome.as_ref().unwrap().status == Outcome::BASELINE)
            .count();
        assert_eq!(
            chain.lines().count(),
            kept.len() + adopted,
            "every commit on the branch is a kept candidate or an adopted baseline"
        );
        all
    }
}

#[tokio::test]
async fn run_status_and_show_through_the_binary() {
    let r = Repo::new();
    let out = r.ok(&["run", "--iterations", "2"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[0].contains("score=100 ") && lines[0].contains("baseline"),
        "{out}"
    );
    assert!(
        lines[1].contains("score=99 ") && lines[1].contains("keep"),
        "{out}"
    );
    // Off a terminal too: N of M and the best so far.
    assert!(lines[0].starts_with("[base] "), "{out}");
    assert!(
        lines[1].starts_with("[1/2] ") && lines[2].starts_with("[2/2] "),
        "{out}"
    );
    assert!(lines[2].contains("best score=98"), "{out}");
    assert!(
        lines[3].starts_with("2 iterations done: 2 launched, 2 kept"),
        "{out}"
    );
    let status: Value = serde_json::from_str(&r.ok(&["status", "--json"])).unwrap();
    assert_eq!(status["head"]["commit"], Value::String(r.tip()));
    assert_eq!(status["kept"], 2);
    assert_eq!(status["baselines"], 1);
    let head_run = status["head"]["run_id"].as_str().unwrap().to_string();
    let show: Value = serde_json::from_str(&r.ok(&["show", &head_run[..10], "--json"])).unwrap();
    assert_eq!(show["run"]["run_id"], Value::String(head_run.clone()));
    assert_eq!(show["outcome"]["status"], "keep");
    assert_eq!(show["results"][0]["outputs"]["score"], 98.0);
    assert!(show["diff_stat"].as_str().unwrap().contains("score.txt"));
    assert_eq!(show["logs"].as_array().unwrap().len(), 4);
    let text = r.ok(&["show", &head_run]);
    assert!(text.contains("decision   keep"), "{text}");
    r.assert_consistent().await;
    // .autoresearch never shows as untracked.
    assert!(r.dir.join(".autoresearch/ledger.redb").exists());
}

#[test]
fn init_writes_a_config_that_run_accepts_and_refuses_to_overwrite() {
    let r = Repo::new();
    std::fs::remove_file(r.dir.join("autoresearch.toml")).unwrap();
    let out = r.ok(&["init"]);
    assert!(out.contains("autoresearch.toml"));
    let text = std::fs::read_to_string(r.dir.join("autoresearch.toml")).unwrap();
    assert!(text.contains("name = \"repo\"") && text.contains("branch = \"main\""));
    let again = r.run(&["init"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
}

#[test]
fn config_errors_name_the_key_and_line() {
    let cases: &[(&str, &[&str])] = &[
        (
            "name = \"exp\"\nparalel = 2\n[propose]\ncommand = \"true\"\n[evaluate]\ncommand = \"true\"\n",
            &["line 2", "paralel"],
        ),
        (
            "name = \"exp\"\n[propose]\ncommand = \"true\"\n[evaluate]\ncommand = \"true\"\n[run]\nparallel = \"two\"\n",
            &["line 7", "parallel"],
        ),
        (
            "name = \"exp\"\n[propose]\ntimeout = 5\n[evaluate]\ncommand = \"true\"\n",
            &["command"],
        ),
        (
            "name = \"exp\"\n[propose]\ncommand = \"true\"\n[evaluate]\ncommand = \"true\"\n[compare]\nkind = \"scalar\"\nmetric = \"m\"\ndirection = \"down\"\n",
            &["compare.direction"],
        ),
    ];
    for (text, needles) in cases {
        let r = Repo::new();
        std::fs::write(r.dir.join("autoresearch.toml"), text).unwrap();
        let out = r.run(&["run", "--iterations", "1"]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        for n in *needles {
            assert!(err.contains(n), "{err} should mention {n}");
        }
    }
}

/// Kills `autoresearch run` with SIGKILL at a point, resumes, and checks that
/// the branch and the ledger agree and nothing is lost or doubled.
async fn kill_and_resume(at: &str) -> Vec<Attempt> {
    let r = Repo::new();
    r.ok(&["run", "--iterations", "1"]);
    let mut env: Vec<(&str, &str)> = Vec::new();
    match at {
        "propose" => std::fs::write(r.ctl.join("slow_propose"), "").unwrap(),
        "evaluate" => std::fs::write(r.ctl.join("slow_eval"), "").unwrap(),
        point => env.push(("AUTORESEARCH_TEST_CRASH_AT", point)),
    }
    let mut child = r.spawn(&["run", "--iterations", "1"], &env);
    match at {
        "propose" => wait_for(&r.ctl.join("in_propose")),
        "evaluate" => wait_for(&r.ctl.join("in_eval")),
        _ => {}
    }
    if at == "propose" || at == "evaluate" {
        child.kill().unwrap();
    }
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "killed at {at}");
    let _ = std::fs::remove_file(r.ctl.join("slow_propose"));
    let _ = std::fs::remove_file(r.ctl.join("slow_eval"));
    r.ok(&["run", "--iterations", "1"]);
    if at == "propose" {
        let pid: i32 = std::fs::read_to_string(r.ctl.join("propose.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(!alive(pid), "the orphaned proposer was killed on resume");
    }
    r.assert_consistent().await
}

#[tokio::test]
async fn sigkill_while_proposing_then_resume() {
    let all = kill_and_resume("propose").await;
    let st: Vec<&str> = all
        .iter()
        .map(|a| a.outcome.as_ref().unwrap().status.as_str())
        .collect();
    assert_eq!(st, ["baseline", "keep", "crash", "keep"]);
    assert_eq!(all[2].outcome.as_ref().unwrap().reason, "interrupted");
    assert_eq!(all[2].run.status, "crashed");
}

#[tokio::test]
async fn sigkill_while_evaluating_then_resume() {
    let all = kill_and_resume("evaluate").await;
    let st: Vec<&str> = all
        .iter()
        .map(|a| a.outcome.as_ref().unwrap().status.as_str())
        .collect();
    assert_eq!(st, ["baseline", "keep", "crash", "keep"]);
    assert_eq!(all[2].outcome.as_ref().unwrap().reason, "interrupted");
}

#[tokio::test]
async fn sigkill_after_the_candidate_was_recorded_then_resume() {
    let all = kill_and_resume("after-candidate").await;
    let st: Vec<&str> = all
        .iter()
        .map(|a| a.outcome.as_ref().unwrap().status.as_str())
        .collect();
    assert_eq!(st, ["baseline", "keep", "crash", "keep"]);
}

#[tokio::test]
async fn sigkill_after_deciding_keep_before_moving_the_branch_then_resume() {
    let all = kill_and_resume("after-intent").await;
    let st: Vec<&str> = all
        .iter()
        .map(|a| a.outcome.as_ref().unwrap().status.as_str())
        .collect();
    // The decided keep is applied on resume, once; then one more candidate.
    assert_eq!(st, ["baseline", "keep", "keep", "keep"]);
}

#[tokio::test]
async fn sigkill_after_moving_the_branch_before_the_ledger_tick_then_resume() {
    let all = kill_and_resume("after-ref").await;
    let st: Vec<&str> = all
        .iter()
        .map(|a| a.outcome.as_ref().unwrap().status.as_str())
        .collect();
    assert_eq!(st, ["baseline", "keep", "keep", "keep"]);
}

fn interrupt(child: &Child) {
    let ok = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[tokio::test]
async fn ctrl_c_once_drains_and_twice_kills_and_records_interrupted() {
    // Once: the running candidate finishes and is decided; nothing new starts.
    let r = Repo::new();
    r.ok(&["run", "--iterations", "1"]);
    std::fs::write(r.ctl.join("slow_eval"), "").unwrap();
    let config = std::fs::read_to_string(r.dir.join("autoresearch.toml"))
        .unwrap()
        .replace("sleep 30; fi\necho \"score", "sleep 1; fi\necho \"score");
    std::fs::write(r.dir.join("autoresearch.toml"), config).unwrap();
    git(&r.dir, &["commit", "-qam", "shorter sleep"]);
    r.ok(&["run", "--iterations", "1"]); // adopt the config commit as a baseline
    let _ = std::fs::remove_file(r.ctl.join("in_eval"));
    let mut child = r.spawn(&["run", "--iterations", "5"], &[]);
    wait_for(&r.ctl.join("in_eval"));
    interrupt(&child);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let all = r.assert_consistent().await;
    let last = all.last().unwrap();
    assert_eq!(
        last.outcome.as_ref().unwrap().status,
        Outcome::KEEP,
        "the running one finished"
    );
    assert_eq!(all.len(), 5, "nothing was launched after Ctrl-C");

    // Twice: the running job is killed and the run recorded as interrupted.
    let r = Repo::new();
    r.ok(&["run", "--iterations", "1"]);
    std::fs::write(r.ctl.join("slow_propose"), "").unwrap();
    let mut child = r.spawn(&["run", "--iterations", "5"], &[]);
    wait_for(&r.ctl.join("in_propose"));
    interrupt(&child);
    std::thread::sleep(Duration::from_millis(200));
    interrupt(&child);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let pid: i32 = std::fs::read_to_string(r.ctl.join("propose.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!alive(pid), "the proposer was killed");
    let all = r.assert_consistent().await;
    let last = all.last().unwrap().outcome.as_ref().unwrap();
    assert_eq!(
        (last.status.as_str(), last.reason.as_str()),
        ("crash", "interrupted")
    );
}

#[tokio::test]
async fn sigkill_between_the_branch_and_its_checkout_then_resume_repairs_the_checkout() {
    // `assert_consistent` checks that `git status` is clean: the checkout,
    // left at the old commit under the moved branch, was brought forward.
    let all = kill_and_resume("after-branch").await;
    let st: Vec<&str> = all
        .iter()
        .map(|a| a.outcome.as_ref().unwrap().status.as_str())
        .collect();
    assert_eq!(st, ["baseline", "keep", "keep", "keep"]);
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[tokio::test]
async fn sigterm_and_sighup_kill_running_jobs_and_record_them_interrupted() {
    for sig in ["-TERM", "-HUP"] {
        let r = Repo::new();
        r.ok(&["run", "--iterations", "1"]);
        std::fs::write(r.ctl.join("slow_propose"), "").unwrap();
        let mut child = r.spawn(&["run", "--iterations", "5"], &[]);
        wait_for(&r.ctl.join("in_propose"));
        signal(&child, sig);
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(130), "{sig}");
        let pid: i32 = std::fs::read_to_string(r.ctl.join("propose.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(!alive(pid), "{sig}: the proposer was killed");
        let all = r.assert_consistent().await;
        let last = all.last().unwrap().outcome.as_ref().unwrap();
        assert_eq!(
            (last.status.as_str(), last.reason.as_str()),
            ("crash", "interrupted"),
            "{sig}"
        );
    }
}

#[tokio::test]
async fn branches_default_to_the_checked_out_one_are_created_when_missing_and_never_switched() {
    // init on another branch writes that branch.
    let r = Repo::new();
    git(&r.dir, &["checkout", "-q", "-b", "work"]);
    std::fs::remove_file(r.dir.join("autoresearch.toml")).unwrap();
    r.ok(&["init"]);
    let text = std::fs::read_to_string(r.dir.join("autoresearch.toml")).unwrap();
    assert!(text.contains("branch = \"work\""), "{text}");

    // init --branch NEW creates it from HEAD, saying so; run then works.
    let r = Repo::new();
    let config = std::fs::read_to_string(r.dir.join("autoresearch.toml")).unwrap();
    std::fs::remove_file(r.dir.join("autoresearch.toml")).unwrap();
    let out = r.ok(&["init", "--branch", "autoresearch/nov30", "--force"]);
    assert!(out.contains("created branch autoresearch/nov30"), "{out}");
    assert_eq!(
        git(&r.dir, &["rev-parse", "autoresearch/nov30"]),
        git(&r.dir, &["rev-parse", "HEAD"])
    );
    // The fixture's own commands, on the new branch.
    let on_new = config.replace("branch = \"main\"", "branch = \"autoresearch/nov30\"");
    std::fs::write(r.dir.join("autoresearch.toml"), &on_new).unwrap();
    git(&r.dir, &["commit", "-qam", "loop on nov30"]);
    let main_before = r.tip();
    git(&r.dir, &["branch", "-f", "autoresearch/nov30", "main"]);
    r.ok(&["run", "--iterations", "1"]);
    assert_eq!(r.tip(), main_before, "main stays");
    assert_ne!(
        git(&r.dir, &["rev-parse", "autoresearch/nov30"]),
        main_before
    );

    // Without a branch key, the checked-out branch; a branch differing from
    // the one the experiment recorded is an error naming both.
    let r = Repo::new();
    r.ok(&["run", "--iterations", "1"]);
    let config = std::fs::read_to_string(r.dir.join("autoresearch.toml")).unwrap();
    std::fs::write(
        r.dir.join("autoresearch.toml"),
        config.replace("branch = \"main\"", "branch = \"mian\""),
    )
    .unwrap();
    let out = r.run(&["run", "--iterations", "1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"main\"") && err.contains("\"mian\""),
        "{err}"
    );
    assert!(
        git(&r.dir, &["branch", "--list", "mian"]).is_empty(),
        "no branch made"
    );
    std::fs::write(
        r.dir.join("autoresearch.toml"),
        config.replace("branch = \"main\"\n", ""),
    )
    .unwrap();
    r.ok(&["run", "--iterations", "1"]);

    // run creates a missing branch of a new experiment from HEAD, saying so.
    let r = Repo::new();
    let config = std::fs::read_to_string(r.dir.join("autoresearch.toml")).unwrap();
    std::fs::write(
        r.dir.join("autoresearch.toml"),
        config.replace("branch = \"main\"", "branch = \"autoresearch/fresh\""),
    )
    .unwrap();
    let out = r.run(&["run", "--iterations", "1"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("created branch autoresearch/fresh"), "{text}");
}

#[tokio::test]
async fn show_lists_what_the_proposer_left_out_of_the_candidate() {
    let r = Repo::new();
    let config = std::fs::read_to_string(r.dir.join("autoresearch.toml")).unwrap();
    let config = config.replace(
        "echo $n > score.txt\n",
        "echo $n > score.txt; mkdir -p build; touch build/cache\n",
    );
    std::fs::write(r.dir.join("autoresearch.toml"), config).unwrap();
    std::fs::write(r.dir.join(".gitignore"), "build/\n").unwrap();
    git(&r.dir, &["add", "-A"]);
    git(&r.dir, &["commit", "-qm", "ignore build"]);
    r.ok(&["run", "--iterations", "1"]);
    let (all, _) = r.ledger().await;
    let kept = &all[1];
    assert_eq!(kept.outcome.as_ref().unwrap().status, Outcome::KEEP);
    let out = r.ok(&["show", &kept.run.run_id]);
    assert!(
        out.contains("left out   build/ (ignored, not evaluated)"),
        "{out}"
    );
}

#[tokio::test]
async fn a_daemon_of_a_proposer_outliving_a_killed_run_is_killed_on_resume() {
    let marker = "61.5151";
    let r = Repo::new();
    let config = std::fs::read_to_string(r.dir.join("autoresearch.toml")).unwrap();
    let config = config.replacen(
        "if [ -f",
        &format!("setsid sleep {marker} >/dev/null 2>&1 </dev/null &\nif [ -f"),
        1,
    );
    std::fs::write(r.dir.join("autoresearch.toml"), config).unwrap();
    git(&r.dir, &["commit", "-qam", "a daemon"]);
    std::fs::write(r.ctl.join("slow_propose"), "").unwrap();
    let mut child = r.spawn(&["run", "--iterations", "1"], &[]);
    wait_for(&r.ctl.join("in_propose"));
    child.kill().unwrap();
    child.wait().unwrap();
    let orphans = with_marker(marker);
    std::fs::remove_file(r.ctl.join("slow_propose")).unwrap();
    let _ = std::fs::remove_file(r.ctl.join("in_propose"));
    // The resumed run's own proposer starts a daemon too, killed with its job.
    r.ok(&["run", "--iterations", "1"]);
    let left = with_marker(marker);
    kill_marked(marker);
    assert!(!orphans.is_empty(), "the killed run left its daemon");
    assert!(left.is_empty(), "daemons left: {left:?}");
}

#[test]
fn run_from_a_monorepo_root_leaves_nothing_untracked() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("mono");
    let proj = root.join("proj");
    std::fs::create_dir_all(&proj).unwrap();
    autoresearch_test_support::git::init_main(&root);
    std::fs::write(proj.join("score.txt"), "100\n").unwrap();
    std::fs::write(
        proj.join("autoresearch.toml"),
        "name = \"exp\"\n[propose]\ncommand = \"echo 90 > score.txt\"\n[evaluate]\ncommand = 'echo \"score: $(cat score.txt)\"'\n[compare]\nkind = \"scalar\"\nmetric = \"score\"\ndirection = \"min\"\n",
    )
    .unwrap();
    autoresearch_test_support::git::commit_all(&root, "start");
    let out = Command::new(BIN)
        .args([
            "run",
            "--iterations",
            "1",
            "--config",
            "proj/autoresearch.toml",
        ])
        .current_dir(&root)
        .env_remove("AUTORESEARCH_LEDGER")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(git(&root, &["show", "main:proj/score.txt"]), "90");
    assert_eq!(
        git(&root, &["status", "--porcelain", "--untracked-files=all"]),
        ""
    );
}

/// A tiny metric keeps every digit (progress lines, `log`, the TSV export),
/// and a loop stopped by consecutive crashes (here: `nan` scores) exits
/// with its own code, 3, after saying why.
#[test]
fn tiny_metrics_keep_their_digits_and_consecutive_crashes_exit_3() {
    use autoresearch_test_support::loop_repo::listed_scores_config;
    let LoopRepo { tmp, dir, ctl } = LoopRepo::new(|c| {
        listed_scores_config(
            c,
            "kind = \"scalar\"\nmetric = \"score\"\ndirection = \"min\"",
        )
        .replace("[run]\n", "[run]\nmax_consecutive_crashes = 2\n")
    });
    std::fs::write(ctl.join("scores"), "3.2e-08\nnan\ninf\n").unwrap();
    let r = Repo {
        _tmp: tmp,
        dir,
        ctl,
    };
    let out = r.run(&["run", "--iterations", "5"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(stdout.contains("score=3.2e-8 "), "{stdout}");
    assert!(stdout.contains("2 consecutive crashes"), "{stdout}");
    assert!(stdout.contains("not a finite number"), "{stdout}");
    let tsv = r.ok(&["log", "--experiment", "exp", "--format", "tsv"]);
    let rows: Vec<&str> = tsv.lines().collect();
    assert_eq!(rows[0], "commit\tscore\tstatus\tdescription\treason");
    assert!(rows[2].contains("\t3.2e-8\tkeep\t"), "{tsv}");
    assert!(
        rows[3].contains("\t\tcrash\t"),
        "a crash has no score: {tsv}"
    );
}
