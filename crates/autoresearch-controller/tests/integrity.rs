//! What is kept is what was measured, and the user's repository is never
//! damaged: hostile proposers (a few lines of shell each) against the real
//! loop on real repositories, each case asserting on the branch, the user's
//! repository (hooks, branches, config, untracked files), the ledger and the
//! processes left.

use autoresearch_controller::{Config, Controller, Event, LocalExecutor, LoopConfig, Summary};
use autoresearch_core::lifecycle::{Attempt, Outcome, attempts};
use autoresearch_core::{ComponentRegistry, EvalResult, MemoryStorage, ResultMeta, Storage, World};
use autoresearch_test_support::evidence::MinScore;
use autoresearch_test_support::git::{UserRepoState, commit_all, git, init_main};
use autoresearch_test_support::loop_repo::LoopRepo;
use autoresearch_test_support::process::{kill_marked, with_env_prefix, with_marker};
use serde_json::json;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The evaluator of most cases: prints the checkout's score.
const EVAL: &str = "echo \"score: $(cat score.txt)\"";

/// An `autoresearch.toml` with these commands, a 20 s timeout each, and
/// `extra` lines at the end of `[propose]`.
fn config(propose: &str, evaluate: &str, extra: &str) -> impl FnOnce(&Path) -> String {
    let (propose, evaluate, extra) = (propose.to_string(), evaluate.to_string(), extra.to_string());
    move |ctl: &Path| {
        let c = ctl.display().to_string();
        format!(
            "name = \"exp\"\n\n[propose]\ncommand = '''\n{}\n'''\ntimeout = \"20s\"\n{extra}\n\n[evaluate]\ncommand = '''\n{}\n'''\ntimeout = \"20s\"\n",
            propose.replace("{c}", &c),
            evaluate.replace("{c}", &c)
        )
    }
}

/// A run of the loop and what it left.
struct Ran {
    summary: Summary,
    warnings: Vec<String>,
    storage: Arc<dyn Storage>,
}

impl Ran {
    async fn attempts(&self) -> Vec<Attempt> {
        let w = World::open(
            self.storage.clone(),
            Arc::new(ComponentRegistry::standard()),
            "autoresearch:exp",
        )
        .await
        .unwrap();
        attempts(&w, "exp")
    }
}

/// Runs `iterations` of the loop on the config at `config_file`, bounded in
/// time, over `storage`.
async fn run_loop(config_file: &Path, iterations: u64, storage: Arc<dyn Storage>) -> Ran {
    let config = Config::load(config_file).unwrap();
    let mut cfg = LoopConfig::from_config(&config);
    cfg.iterations = iterations;
    cfg.max_consecutive_crashes = 3;
    cfg.kill_grace = Duration::from_millis(200);
    cfg.require = vec!["score".into()];
    let warnings = Arc::new(Mutex::new(Vec::new()));
    let w2 = warnings.clone();
    let state_dir = cfg.state_dir.clone();
    let exec = Arc::new(LocalExecutor::new(cfg.state_dir.clone()));
    let c = Controller::open(cfg, storage.clone(), Arc::new(MinScore), exec)
        .await
        .unwrap()
        .with_events(Arc::new(move |e| {
            if let Event::Warning(w) = e {
                w2.lock().unwrap().push(w.clone());
            }
        }));
    let summary = tokio::time::timeout(Duration::from_secs(90), Arc::new(c).run())
        .await
        .expect("the loop ends in time")
        .unwrap();
    let warnings = warnings.lock().unwrap().clone();
    let left = with_env_prefix("AUTORESEARCH_WORKTREE", &state_dir.display().to_string());
    for pid in &left {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
    assert!(
        left.is_empty(),
        "processes of the loop's jobs left: {left:?}"
    );
    Ran {
        summary,
        warnings,
        storage,
    }
}

async fn run(r: &LoopRepo, iterations: u64) -> Ran {
    run_loop(
        &r.dir.join("autoresearch.toml"),
        iterations,
        Arc::new(MemoryStorage::new(Some(16))),
    )
    .await
}

fn outcome(a: &Attempt) -> &Outcome {
    a.outcome.as_ref().unwrap()
}

fn tip(dir: &Path) -> String {
    git(dir, &["rev-parse", "refs/heads/main"])
}

/// The parents of `commit`, space-separated.
fn parents(dir: &Path, commit: &str) -> String {
    git(dir, &["log", "-1", "--format=%P", commit])
}

#[tokio::test]
async fn history_rewritten_in_the_slot_still_gives_a_single_child_of_the_head() {
    // From the second run on, the proposer resets to the commit before the
    // head (as karpathy's program tells an agent to on a failed idea).
    let propose =
        "if git rev-parse -q --verify HEAD~1 >/dev/null; then git reset -q --hard HEAD~1; fi
n=$(cat {c}/n 2>/dev/null || echo 100); n=$((n-10)); echo $n > {c}/n
echo $n > score.txt; git add -A; git -c user.name=p -c user.email=p@p commit -qm \"proposal $n\"";
    let r = LoopRepo::new(config(propose, EVAL, ""));
    let before = UserRepoState::of(&r.dir, "main");
    let ran = run(&r, 3).await;
    assert_eq!(ran.summary.kept, 3, "{:?}", ran.summary);
    let all = ran.attempts().await;
    let mut previous = all[0].run.commit_hash.clone();
    for a in &all[1..] {
        let c = &a.run.commit_hash;
        assert_eq!(outcome(a).status, Outcome::KEEP);
        assert_eq!(parents(&r.dir, c), previous, "a single child of the head");
        previous = c.clone();
    }
    assert_eq!(tip(&r.dir), previous, "the branch only moved forward");
    let subjects = git(&r.dir, &["log", "--format=%s", "main"]);
    assert_eq!(subjects, "proposal 70\nproposal 80\nproposal 90\nstart");
    assert_eq!(UserRepoState::of(&r.dir, "main"), before);
}

#[tokio::test]
async fn a_proposer_cannot_reach_the_users_branches_hooks_filters_or_config() {
    let hook = "#!/bin/sh\ntouch {c}/hook-ran\n";
    let propose = format!(
        "git checkout -q --ignore-other-worktrees main 2>/dev/null; git checkout -q -b other
echo '* filter=evil' > .gitattributes; echo 90 > score.txt
git add -A; git -c user.name=p -c user.email=p@p commit -qm planted
for h in post-checkout pre-commit post-commit reference-transaction post-merge pre-push; do
  printf '{hook}' > .git/hooks/$h; chmod +x .git/hooks/$h
done
git config filter.evil.smudge 'touch {{c}}/filter-ran; cat'
git config filter.evil.clean 'touch {{c}}/filter-ran; cat'
git config core.hooksPath .git/hooks"
    )
    .replace("{{c}}", "{c}");
    let r = LoopRepo::new(config(&propose, EVAL, ""));
    let before = UserRepoState::of(&r.dir, "main");
    let ran = run(&r, 2).await;
    let all = ran.attempts().await;
    assert_eq!(
        outcome(&all[1]).status,
        Outcome::KEEP,
        "{:?}",
        outcome(&all[1])
    );
    assert_eq!(tip(&r.dir), all[1].run.commit_hash);
    assert!(!r.ctl.join("hook-ran").exists(), "a planted hook ran");
    assert!(!r.ctl.join("filter-ran").exists(), "a planted filter ran");
    assert_eq!(UserRepoState::of(&r.dir, "main"), before);
    assert_eq!(git(&r.dir, &["show", "main:score.txt"]), "90");
}

#[tokio::test]
async fn deleting_the_slots_git_never_reaches_the_users_checkout() {
    let propose = "rm -rf .git; echo 90 > score.txt
git add -A 2>/dev/null; git -c user.name=p -c user.email=p@p commit -qm escaped 2>/dev/null; true";
    let r = LoopRepo::new(config(propose, EVAL, ""));
    std::fs::write(r.dir.join("notes.txt"), "notes\n").unwrap();
    commit_all(&r.dir, "notes");
    // The user's work in progress: an edit and a new file.
    std::fs::write(r.dir.join("notes.txt"), "my edit\n").unwrap();
    std::fs::write(r.dir.join("mine.txt"), "untracked\n").unwrap();
    let start = tip(&r.dir);
    let ran = run(&r, 1).await;
    let all = ran.attempts().await;
    let kept = &all[1].run.commit_hash;
    assert_eq!(outcome(&all[1]).status, Outcome::KEEP);
    assert_eq!(parents(&r.dir, kept), start);
    assert_eq!(
        git(&r.dir, &["diff", "--name-only", &start, kept]),
        "score.txt"
    );
    assert_eq!(git(&r.dir, &["symbolic-ref", "HEAD"]), "refs/heads/main");
    assert_eq!(
        std::fs::read_to_string(r.dir.join("notes.txt")).unwrap(),
        "my edit\n"
    );
    // One warning, and its command brings the checkout up to date.
    assert_eq!(ran.warnings.len(), 1, "{:?}", ran.warnings);
    let w = &ran.warnings[0];
    assert!(w.contains("local changes"), "{w}");
    let cmd = w.split('`').nth(1).unwrap();
    let ok = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .status()
        .unwrap();
    assert!(ok.success(), "{cmd}");
    assert_eq!(
        // (` M notes.txt`, trimmed by `git`)
        git(&r.dir, &["status", "--porcelain", "--untracked-files=all"]),
        "M notes.txt\n?? mine.txt"
    );
    assert_eq!(
        std::fs::read_to_string(r.dir.join("score.txt")).unwrap(),
        "90\n"
    );
    assert_eq!(
        std::fs::read_to_string(r.dir.join("notes.txt")).unwrap(),
        "my edit\n"
    );
}

#[tokio::test]
async fn ignored_leftovers_are_listed_and_never_evaluated() {
    let eval = "if [ -f build/score ]; then echo \"score: $(cat build/score)\"; else echo \"score: $(cat score.txt)\"; fi";
    let propose = "mkdir -p build; echo 1 > build/score; echo 90 > score.txt";
    let r = LoopRepo::new(config(propose, eval, ""));
    std::fs::write(r.dir.join(".gitignore"), "build/\n").unwrap();
    commit_all(&r.dir, "ignore build");
    let ran = run(&r, 1).await;
    let all = ran.attempts().await;
    assert_eq!(outcome(&all[1]).status, Outcome::KEEP);
    let first = all[1].results.first().unwrap();
    let outputs = first.outputs().unwrap();
    assert_eq!(
        outputs["score"],
        json!(90.0),
        "measured without build/score"
    );
    let meta: ResultMeta = serde_json::from_value(outputs[EvalResult::META].clone()).unwrap();
    assert_eq!(meta.left_out, vec!["build/".to_string()]);
    assert!(
        git(&r.dir, &["ls-tree", "-r", "--name-only", "main"])
            .lines()
            .all(|p| !p.starts_with("build"))
    );
}

#[tokio::test]
async fn a_setsid_daemon_of_the_proposer_is_dead_before_the_evaluation() {
    let marker = "61.7373";
    let propose = format!(
        "setsid sh -c 'sleep 1.5; echo 1 > score.txt; exec sleep {marker}' >/dev/null 2>&1 </dev/null &
echo 90 > score.txt"
    );
    let eval = "sleep 2; echo \"score: $(cat score.txt)\"";
    let r = LoopRepo::new(config(&propose, eval, ""));
    let ran = run(&r, 1).await;
    let left = with_marker(marker);
    kill_marked(marker);
    let all = ran.attempts().await;
    assert_eq!(outcome(&all[1]).status, Outcome::KEEP);
    let outputs = all[1].results[0].outputs().unwrap();
    assert_eq!(
        outputs["score"],
        json!(90.0),
        "the daemon did not change what was measured"
    );
    assert_eq!(git(&r.dir, &["show", "main:score.txt"]), "90");
    assert!(left.is_empty(), "processes left: {left:?}");
}

/// Runs one candidate made by `propose` on a repository holding
/// `prepare.py`, `tools/run.sh`, `data/x.csv` and the evaluator `measure`
/// (run as `sh ./measure`, itself running `sh tools/score`, which prints
/// the score), protecting `protect`; returns the run's
/// Outcome, after checking that the branch did not move unless it was kept.
async fn protected_case(propose: &str, protect: &str, extra: &str) -> Outcome {
    let eval = "sh ./measure";
    let extra_eval = format!("protect = {protect}");
    let r = LoopRepo::new(move |ctl| {
        config(&format!("{propose}\necho 90 > score.txt"), eval, extra)(ctl) + &extra_eval + "\n"
    });
    for (path, text) in [
        ("prepare.py", "# data\n"),
        ("tools/run.sh", "echo run\n"),
        ("data/x.csv", "1,2\n"),
        ("measure", "set -e\nsh tools/score\n"),
        ("tools/score", "echo \"score: $(cat score.txt)\"\n"),
    ] {
        std::fs::create_dir_all(r.dir.join(path).parent().unwrap()).unwrap();
        std::fs::write(r.dir.join(path), text).unwrap();
    }
    commit_all(&r.dir, "files");
    let start = tip(&r.dir);
    let ran = run(&r, 1).await;
    let o = ran.attempts().await[1].outcome.clone().unwrap();
    if o.status != Outcome::KEEP {
        assert_eq!(tip(&r.dir), start, "{propose}: the branch stayed");
    }
    o
}

#[tokio::test]
async fn protected_paths_match_through_dot_slash_globs_directories_and_every_change_kind() {
    let protect = r#"["./prepare.py", "*.sh", "data/"]"#;
    let cases: &[(&str, &str)] = &[
        ("echo x >> prepare.py", "prepare.py"),
        ("chmod +x prepare.py", "prepare.py"),
        ("rm prepare.py; ln -s score.txt prepare.py", "prepare.py"),
        ("rm prepare.py", "prepare.py"),
        ("mv tools/run.sh tools/run2.sh", "tools/run.sh"),
        ("echo y > data/new.csv", "data/new.csv"),
        // Protected by default: what the evaluate command runs, the config.
        ("echo 'echo score: 0' > measure", "measure"),
        // ... and what the scripts it runs run.
        ("echo 'echo score: 0' > tools/score", "tools/score"),
        ("echo '# x' >> autoresearch.toml", "autoresearch.toml"),
    ];
    for (propose, path) in cases {
        let o = protected_case(propose, protect, "").await;
        assert_eq!(o.status, Outcome::DISCARD, "{propose}");
        assert_eq!(
            o.reason,
            format!("touches protected path {path}"),
            "{propose}"
        );
    }
    // Not protected: a path no pattern names is kept.
    let o = protected_case("echo z > notes.md", protect, "").await;
    assert_eq!(o.status, Outcome::KEEP);
}

#[tokio::test]
async fn limits_refuse_a_huge_file_and_a_nested_repository() {
    let cases: &[(&str, &str)] = &[
        (
            "head -c 2000 /dev/zero > big.bin",
            "refused: big.bin is 2000 bytes",
        ),
        (
            "mkdir n && cd n && git init -q && echo a > a && git add a && git -c user.name=a -c user.email=a@a commit -qm a",
            "refused: adds a nested repository or gitlink at n",
        ),
    ];
    for (propose, reason) in cases {
        let o = protected_case(propose, "[]", "max_file_size = \"1k\"").await;
        assert_eq!(o.status, Outcome::DISCARD, "{propose}");
        assert!(o.reason.starts_with(reason), "{propose}: {}", o.reason);
    }
}

#[tokio::test]
async fn a_config_in_a_monorepo_folder_runs_there_and_leaves_the_repository_clean() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("mono");
    let proj = root.join("proj");
    std::fs::create_dir_all(&proj).unwrap();
    init_main(&root);
    std::fs::write(root.join("README"), "top\n").unwrap();
    std::fs::write(proj.join("score.txt"), "100\n").unwrap();
    let text = config("echo 90 > score.txt; pwd > where", EVAL, "")(tmp.path());
    std::fs::write(proj.join("autoresearch.toml"), text).unwrap();
    commit_all(&root, "start");
    let start = tip(&root);
    let ran = run_loop(
        &proj.join("autoresearch.toml"),
        1,
        Arc::new(MemoryStorage::new(Some(16))),
    )
    .await;
    let all = ran.attempts().await;
    assert_eq!(
        outcome(&all[1]).status,
        Outcome::KEEP,
        "{:?}",
        outcome(&all[1])
    );
    let changed = git(&root, &["diff", "--name-only", &start, "main"]);
    assert_eq!(changed, "proj/score.txt\nproj/where");
    let whered = git(&root, &["show", "main:proj/where"]);
    assert!(
        whered.ends_with("/proj"),
        "the proposer ran in proj/: {whered}"
    );
    assert!(proj.join(".autoresearch").is_dir());
    assert_eq!(
        git(&root, &["status", "--porcelain", "--untracked-files=all"]),
        ""
    );
}

#[tokio::test]
async fn a_baseline_that_fails_once_is_measured_again_and_the_loop_goes_on() {
    let eval = format!("if [ ! -f {{c}}/failed ]; then touch {{c}}/failed; exit 1; fi; {EVAL}");
    let r = LoopRepo::new(config("echo 90 > score.txt", &eval, ""));
    let ran = run(&r, 1).await;
    let all = ran.attempts().await;
    assert_eq!(
        outcome(&all[0]).status,
        Outcome::CRASH,
        "the baseline failed"
    );
    assert_eq!(all[0].results.len(), 2, "and was measured again");
    assert_eq!(
        outcome(&all[1]).status,
        Outcome::KEEP,
        "{:?}",
        outcome(&all[1])
    );
    assert_eq!(tip(&r.dir), all[1].run.commit_hash);
}

#[tokio::test]
async fn a_baseline_that_always_fails_stops_the_loop_on_consecutive_crashes() {
    let r = LoopRepo::new(config("echo 90 > score.txt", "exit 1", ""));
    let start = tip(&r.dir);
    let ran = run(&r, 0).await;
    assert_eq!(ran.summary.stopped, "3 consecutive crashes");
    assert_eq!(ran.summary.launched, 0);
    let all = ran.attempts().await;
    assert_eq!(all.len(), 1, "only the baseline run");
    assert_eq!(all[0].results.len(), 3, "measured three times");
    assert_eq!(tip(&r.dir), start);
}

#[tokio::test]
async fn a_submodule_the_user_initialised_is_checked_out_for_every_job() {
    let propose = "cat lib/value > {c}/seen; echo 90 > score.txt";
    let eval = format!("test -f lib/value || exit 7; {EVAL}");
    let r = LoopRepo::new(config(propose, &eval, ""));
    let lib = r.tmp.path().join("lib");
    std::fs::create_dir(&lib).unwrap();
    init_main(&lib);
    std::fs::write(lib.join("value"), "7\n").unwrap();
    commit_all(&lib, "lib");
    let lib_path = lib.display().to_string();
    git(
        &r.dir,
        &[
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            "-q",
            &lib_path,
            "lib",
        ],
    );
    commit_all(&r.dir, "submodule");
    let before = UserRepoState::of(&r.dir, "main");
    let ran = run(&r, 1).await;
    let all = ran.attempts().await;
    assert_eq!(
        outcome(&all[0]).status,
        Outcome::BASELINE,
        "{:?}",
        outcome(&all[0])
    );
    assert_eq!(
        outcome(&all[1]).status,
        Outcome::KEEP,
        "{:?}",
        outcome(&all[1])
    );
    assert_eq!(std::fs::read_to_string(r.ctl.join("seen")).unwrap(), "7\n");
    assert_eq!(
        git(&r.dir, &["diff", "--name-only", "HEAD~1", "main"]),
        "score.txt",
        "the submodule is unchanged in the candidate"
    );
    assert_eq!(UserRepoState::of(&r.dir, "main"), before);
}

#[tokio::test]
async fn a_git_failure_that_stops_the_loop_is_recorded_as_the_runs_cause() {
    let r = LoopRepo::new(config("echo 90 > score.txt", EVAL, ""));
    // Candidate refs cannot be written: `refs/autoresearch` is a file.
    std::fs::write(r.dir.join(".git/refs/autoresearch"), "not a directory\n").unwrap();
    let config = Config::load(&r.dir.join("autoresearch.toml")).unwrap();
    let mut cfg = LoopConfig::from_config(&config);
    cfg.iterations = 1;
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new(Some(16)));
    let exec = Arc::new(LocalExecutor::new(cfg.state_dir.clone()));
    let c = Controller::open(cfg, storage.clone(), Arc::new(MinScore), exec)
        .await
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), Arc::new(c).run())
        .await
        .unwrap();
    let err = out.unwrap_err().to_string();
    assert!(err.contains("update-ref"), "{err}");
    let ran = Ran {
        summary: Summary::default(),
        warnings: Vec::new(),
        storage,
    };
    let all = ran.attempts().await;
    let o = outcome(&all[1]);
    assert_eq!(o.status, Outcome::CRASH);
    assert!(
        o.reason.starts_with("infrastructure: git update-ref"),
        "{}",
        o.reason
    );
    assert_eq!(all[1].run.status, "crashed");
}

#[tokio::test]
async fn a_slot_replaced_by_a_link_is_made_again_and_its_target_left_alone() {
    // The proposer points its own slot at a directory of the user's; the
    // evaluation's clean checkout must not clean that directory.
    let propose = "echo 90 > score.txt; slot=$(pwd); cd ..; mv \"$slot\" \"$slot.moved\"; ln -s {c}/precious \"$slot\"";
    let r = LoopRepo::new(config(propose, EVAL, ""));
    std::fs::create_dir(r.ctl.join("precious")).unwrap();
    std::fs::write(r.ctl.join("precious/keep.txt"), "mine\n").unwrap();
    let ran = run(&r, 1).await;
    assert_eq!(
        std::fs::read_to_string(r.ctl.join("precious/keep.txt")).unwrap(),
        "mine\n"
    );
    let all = ran.attempts().await;
    let o = outcome(&all[1]);
    assert_eq!(o.status, Outcome::CRASH);
    assert!(o.reason.contains("replaced its checkout"), "{}", o.reason);
}

#[tokio::test]
async fn a_file_touched_but_unchanged_is_no_local_change_and_the_checkout_follows() {
    let r = LoopRepo::new(config("echo 90 > score.txt", EVAL, ""));
    // A copy or a `touch` changes the file's stat data, not its content.
    let touched = std::process::Command::new("touch")
        .args(["-d", "2001-01-01 00:00:00"])
        .arg(r.dir.join("score.txt"))
        .status()
        .unwrap();
    assert!(touched.success());
    let ran = run(&r, 1).await;
    assert_eq!(outcome(&ran.attempts().await[1]).status, Outcome::KEEP);
    assert!(ran.warnings.is_empty(), "{:?}", ran.warnings);
    assert_eq!(
        std::fs::read_to_string(r.dir.join("score.txt")).unwrap(),
        "90\n"
    );
    assert_eq!(git(&r.dir, &["status", "--porcelain"]), "");
}

#[tokio::test]
async fn after_keeps_past_a_dirty_checkout_the_command_it_is_given_brings_it_up_to_date() {
    let r = LoopRepo::new(config(
        "echo $(( $(cat score.txt) - 1 )) > score.txt",
        EVAL,
        "",
    ));
    std::fs::write(r.dir.join("notes.txt"), "notes\n").unwrap();
    commit_all(&r.dir, "notes");
    // The user's local change, in a file the candidates do not touch.
    std::fs::write(r.dir.join("notes.txt"), "notes, edited\n").unwrap();
    let ran = run(&r, 2).await;
    let all = ran.attempts().await;
    assert_eq!(outcome(&all[1]).status, Outcome::KEEP);
    assert_eq!(outcome(&all[2]).status, Outcome::KEEP);
    let last = ran.warnings.last().expect("a warning");
    assert!(last.contains("staged reverts"), "{last}");
    // The last warning's command works from where the checkout was left.
    let start = last.find("`git -C ").expect("a command") + 1;
    let end = start + last[start..].find('`').unwrap();
    let out = std::process::Command::new("sh")
        .args(["-c", &last[start..end]])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}: {out:?}", &last[start..end]);
    assert_eq!(
        std::fs::read_to_string(r.dir.join("score.txt")).unwrap(),
        "98\n"
    );
    assert_eq!(
        std::fs::read_to_string(r.dir.join("notes.txt")).unwrap(),
        "notes, edited\n"
    );
    assert_eq!(
        git(&r.dir, &["status", "--porcelain"]),
        "M notes.txt",
        "only the user's change, unstaged"
    );
}
