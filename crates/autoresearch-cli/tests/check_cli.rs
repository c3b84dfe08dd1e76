//! Mistakes caught before they cost an agent run: `init` outside a git
//! repository, a proposer or evaluator that is not installed, an evaluator
//! that fails on the baseline, a misspelt metric. `autoresearch check` says
//! so in plain words and exits 4; `run` starts with the same check and
//! stops before any proposal. The real binary, real git repositories, real
//! shell commands.

use autoresearch_test_support::git::git;
use autoresearch_test_support::loop_repo::LoopRepo;
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_autoresearch");
const CHECK_FAILED: i32 = 4;

fn autoresearch(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("AUTORESEARCH_LEDGER")
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A repository whose proposer touches `ctl/proposed` (so a test sees
/// whether any proposal ran) and lowers the score, with `evaluate` as the
/// evaluator and `metric` as the comparator's metric.
fn repo(evaluate: &str, metric: &str) -> LoopRepo {
    let (evaluate, metric) = (evaluate.to_string(), metric.to_string());
    LoopRepo::new(move |ctl| {
        format!(
            r#"name = "exp"
branch = "main"

[propose]
command = 'touch {c}/proposed; echo 50 > score.txt'
timeout = "60s"

[evaluate]
command = '{evaluate}'
timeout = "60s"

[compare]
kind = "scalar"
metric = "{metric}"
direction = "min"

[run]
sandbox_writable = ["{c}"]
"#,
            c = ctl.display()
        )
    })
}

const EVALUATE: &str = r#"echo "score: $(cat score.txt)""#;

#[test]
fn init_refuses_a_folder_outside_a_git_repository_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = autoresearch(tmp.path(), &["init"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("is not inside a git repository"),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "nothing written"
    );
}

#[test]
fn init_writes_program_md_beside_the_config_and_never_overwrites_it() {
    let r = repo(EVALUATE, "score");
    std::fs::remove_file(r.dir.join("autoresearch.toml")).unwrap();
    let out = autoresearch(&r.dir, &["init"]);
    assert!(out.status.success(), "{}", text(&out));
    let program = std::fs::read_to_string(r.dir.join("program.md")).unwrap();
    for section in [
        "## What you may change",
        "## What you must not touch",
        "## How results are read",
        "$AUTORESEARCH_RESULTS",
        "$AUTORESEARCH_DESCRIPTION",
        "description: ...",
    ] {
        assert!(program.contains(section), "{section:?} in program.md");
    }
    std::fs::write(r.dir.join("program.md"), "my own brief\n").unwrap();
    let out = autoresearch(&r.dir, &["init", "--force"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("kept the existing"), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(r.dir.join("program.md")).unwrap(),
        "my own brief\n"
    );
}

#[test]
fn the_untouched_template_fails_the_check_naming_the_missing_programs() {
    let r = repo(EVALUATE, "score");
    std::fs::remove_file(r.dir.join("autoresearch.toml")).unwrap();
    assert!(autoresearch(&r.dir, &["init"]).status.success());
    // The template's agent and runner, under names no machine has.
    let path = r.dir.join("autoresearch.toml");
    let config = std::fs::read_to_string(&path)
        .unwrap()
        .replace("claude -p", "autoresearch-test-no-agent -p")
        .replace("uv run", "autoresearch-test-no-uv run");
    std::fs::write(&path, config).unwrap();
    let out = autoresearch(&r.dir, &["check"]);
    assert_eq!(out.status.code(), Some(CHECK_FAILED), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("FAIL  propose command: `autoresearch-test-no-agent` is not installed"),
        "{said}"
    );
    assert!(
        said.contains("FAIL  evaluate command: `autoresearch-test-no-uv` is not installed"),
        "{said}"
    );
    assert!(
        said.contains("not run: the evaluate command is missing"),
        "{said}"
    );

    let out = autoresearch(&r.dir, &["run", "--iterations", "2"]);
    assert_eq!(out.status.code(), Some(CHECK_FAILED), "{}", text(&out));
    assert!(
        text(&out).contains("the check failed, so no proposal was made"),
        "{}",
        text(&out)
    );
    assert!(!r.dir.join(".autoresearch/runs").exists(), "no job ran");
}

#[test]
fn an_evaluator_failing_on_the_baseline_is_shown_as_text_and_stops_run_before_any_proposal() {
    // `true` exists; the second command does not: the shell's own message.
    let r = repo("true && autoresearch-test-no-tool", "score");
    let out = autoresearch(&r.dir, &["check"]);
    assert_eq!(out.status.code(), Some(CHECK_FAILED), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("FAIL  baseline evaluation of"), "{said}");
    assert!(
        said.contains("the evaluate command failed (exit code 127)"),
        "{said}"
    );
    assert!(
        said.contains("autoresearch-test-no-tool: not found"),
        "{said}"
    );
    assert!(
        !said.contains("\\n"),
        "plain text, not escaped JSON: {said}"
    );

    let out = autoresearch(&r.dir, &["run", "--iterations", "3"]);
    assert_eq!(out.status.code(), Some(CHECK_FAILED), "{}", text(&out));
    assert!(!r.ctl.join("proposed").exists(), "no proposal ran");

    // Without the check, the loop's own baseline fails as often as
    // max_consecutive_crashes allows, and run stops non-zero, still
    // without a proposal.
    let out = autoresearch(&r.dir, &["run", "--iterations", "3", "--no-check"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(!r.ctl.join("proposed").exists(), "no proposal ran");
}

#[test]
fn a_misspelt_metric_is_caught_on_the_baseline_with_the_nearest_line() {
    let r = repo(EVALUATE, "scroe");
    let out = autoresearch(&r.dir, &["check"]);
    assert_eq!(out.status.code(), Some(CHECK_FAILED), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("scroe"), "{said}");
    assert!(said.contains("score: 100"), "the nearest line: {said}");
    let out = autoresearch(&r.dir, &["run", "--iterations", "1"]);
    assert_eq!(out.status.code(), Some(CHECK_FAILED), "{}", text(&out));
    assert!(!r.ctl.join("proposed").exists(), "no proposal ran");
}

#[test]
fn a_sound_config_passes_and_run_goes_on() {
    let r = repo(EVALUATE, "score");
    let out = autoresearch(&r.dir, &["check"]);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("ok    propose command: `touch` is "),
        "{said}"
    );
    assert!(said.contains("ok    repository: "), "{said}");
    assert!(said.contains("score=100 in "), "{said}");
    assert!(!said.contains("FAIL"), "{said}");
    assert_eq!(
        git(&r.dir, &["status", "--porcelain"]),
        "",
        "nothing left to see"
    );
    let out = autoresearch(&r.dir, &["run", "--iterations", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(r.ctl.join("proposed").exists(), "the proposal ran");
    assert_eq!(git(&r.dir, &["show", "main:score.txt"]), "50");
}

#[test]
fn a_command_that_starts_with_a_shell_construct_is_noted_not_refused() {
    let r = repo(
        r#"if [ -f score.txt ]; then echo "score: $(cat score.txt)"; fi"#,
        "score",
    );
    let out = autoresearch(&r.dir, &["check", "--no-baseline"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("ok    evaluate command: starts with the shell construct `if`"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_metric_the_heads_results_lack_is_checked_before_run_spends_a_candidate() {
    let r = repo(EVALUATE, "score");
    let out = autoresearch(&r.dir, &["run", "--iterations", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    // The head is scored: a second run with the same config does not
    // evaluate it again.
    std::fs::remove_file(r.ctl.join("proposed")).unwrap();
    let out = autoresearch(&r.dir, &["run", "--iterations", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !text(&out).contains("baseline evaluation"),
        "{}",
        text(&out)
    );
    assert!(r.ctl.join("proposed").exists(), "the proposal ran");
    // A comparator on a metric the head never recorded (misspelt): the
    // check evaluates the head once and stops before any proposal,
    // instead of crashing every candidate.
    std::fs::remove_file(r.ctl.join("proposed")).unwrap();
    let out = autoresearch(
        &r.dir,
        &[
            "run",
            "--iterations",
            "2",
            "--comparator",
            "scalar:scroe:min",
        ],
    );
    assert_eq!(out.status.code(), Some(CHECK_FAILED), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("FAIL  baseline evaluation of"), "{said}");
    assert!(said.contains("scroe"), "{said}");
    assert!(!r.ctl.join("proposed").exists(), "no proposal ran");
}

#[test]
fn a_forks_first_run_checks_the_forks_head_not_the_repositorys_head() {
    let r = repo(EVALUATE, "score");
    let out = autoresearch(&r.dir, &["run", "--iterations", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    let status: serde_json::Value =
        serde_json::from_slice(&autoresearch(&r.dir, &["status", "--json"]).stdout).unwrap();
    let (tick, head_run) = (
        status["tick"].as_u64().unwrap().to_string(),
        status["head"]["run_id"].as_str().unwrap().to_string(),
    );
    let head_commit = status["head"]["commit"].as_str().unwrap().to_string();
    let out = autoresearch(
        &r.dir,
        &["fork", "--at", &tick, "--promote", &head_run, "--name", "w"],
    );
    assert!(out.status.success(), "{}", text(&out));
    // The repository's HEAD (branch main) moves on to a commit whose
    // evaluation fails; the fork's branch does not exist yet.
    std::fs::write(r.dir.join("score.txt"), "broken\n").unwrap();
    git(&r.dir, &["commit", "-qam", "broken"]);
    std::fs::remove_file(r.ctl.join("proposed")).unwrap();
    let out = autoresearch(&r.dir, &["run", "--world", "w", "--iterations", "1"]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "branch autoresearch/w does not exist yet: `run` creates it at world w's head ({})",
            &head_commit[..7]
        )),
        "{said}"
    );
    assert!(!said.contains("baseline evaluation"), "{said}");
    assert!(r.ctl.join("proposed").exists(), "the proposal ran");
    // The proposer's change equals the head's (score 50): not better, so
    // the fork's branch stays where the loop created it.
    assert_eq!(
        git(&r.dir, &["rev-parse", "autoresearch/w"]),
        head_commit,
        "the fork's branch starts at its head"
    );
}
