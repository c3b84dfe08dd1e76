//! The demo's sample project still works: `autoresearch-devtools demo --fixture-only` (what `cargo xtask demo --fixture-only` runs) makes
//! the repository, and every idea of the scripted agent, applied to the
//! baseline in a worktree of its own, has the effect the demo relies on
//! (real git, real Python processes, bounded by timeouts).

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn git(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Runs `cmd` to completion or kills it after `limit`; `None` on timeout.
fn bounded(mut cmd: Command, limit: Duration) -> Option<Output> {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(Output {
                status,
                stdout: std::fs::read(&out).unwrap(),
                stderr: std::fs::read(&err).unwrap(),
            });
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[derive(Debug, PartialEq)]
enum Effect {
    /// Evaluated; the tour length at sample 0.
    Length(f64),
    /// The evaluator failed.
    Fails,
    /// Still running at the timeout.
    Hangs,
}

fn evaluate(dir: &Path, sample: u32) -> Effect {
    let mut cmd = Command::new("python3");
    cmd.arg("evaluate.py")
        .current_dir(dir)
        .env("AUTORESEARCH_SAMPLE", sample.to_string())
        .env("PYTHONDONTWRITEBYTECODE", "1");
    match bounded(cmd, Duration::from_secs(3)) {
        None => Effect::Hangs,
        Some(out) if !out.status.success() => Effect::Fails,
        Some(out) => {
            let text = String::from_utf8(out.stdout).unwrap();
            let value = text
                .lines()
                .find_map(|l| l.strip_prefix("tour_length: "))
                .unwrap_or_else(|| panic!("no tour_length line in {text:?}"));
            Effect::Length(value.parse().unwrap())
        }
    }
}

#[test]
fn every_scripted_idea_has_the_effect_the_demo_needs() {
    let tmp = tempfile::tempdir().unwrap();
    let demo = tmp.path().join("demo");
    let out = Command::new(env!("CARGO_BIN_EXE_autoresearch-devtools"))
        .args(["demo", "--fixture-only", "--dir"])
        .arg(&demo)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let repo = demo.join("tsp");
    let agent = demo.join("agent/propose.py");
    assert_eq!(git(&repo, &["status", "--porcelain"]), "", "clean checkout");
    assert_eq!(git(&repo, &["rev-list", "--count", "main"]), "1");
    let config = std::fs::read_to_string(repo.join("autoresearch.toml")).unwrap();
    assert!(config.contains("kind = \"stat\""), "{config}");
    assert!(config.contains(&agent.display().to_string()), "{config}");

    // The evaluator is noisy across samples and reproducible for one sample.
    let baseline = evaluate(&repo, 0);
    let Effect::Length(base) = baseline else {
        panic!("baseline: {baseline:?}")
    };
    assert_eq!(evaluate(&repo, 0), baseline);
    assert_ne!(evaluate(&repo, 1), baseline);

    // Each idea applied alone to the baseline, in a worktree of its own, with
    // the agent's counter shared as in the loop.
    let state = demo.join("agent/state");
    let mut effects = Vec::new();
    for i in 0..13 {
        let wt = tmp.path().join(format!("wt{i}"));
        git(
            &repo,
            &[
                "worktree",
                "add",
                "--detach",
                &wt.display().to_string(),
                "main",
            ],
        );
        let mut cmd = Command::new("python3");
        cmd.arg(&agent).arg(&state).current_dir(&wt);
        let out = bounded(cmd, Duration::from_secs(10)).expect("the agent finishes");
        assert!(out.status.success(), "idea {}: {out:?}", i + 1);
        let subject = git(&wt, &["log", "-1", "--format=%s"]);
        let touched = git(&wt, &["diff", "--name-only", "main", "HEAD"]);
        effects.push((subject, touched, evaluate(&wt, 0)));
    }

    let names: Vec<&str> = effects.iter().map(|(s, _, _)| s.as_str()).collect();
    assert_eq!(names[0], "visit the cities in shuffled order");
    // The 13th call is out of ideas and commits nothing.
    assert_eq!(names[12], "TSP heuristic: visit cities in input order");
    for (i, (subject, touched, effect)) in effects.iter().enumerate().take(12) {
        match i + 1 {
            4 => assert_eq!(*effect, Effect::Fails, "{subject}: breaks the program"),
            6 => assert_eq!(*effect, Effect::Hangs, "{subject}: hangs"),
            8 => assert_eq!(
                touched, "evaluate.py",
                "{subject}: edits the protected file"
            ),
            // The baseline already skips 2-opt: the agent leaves no change.
            11 => assert_eq!(touched, "", "{subject}"),
            _ => assert_eq!(touched, "tsp.py", "{subject}"),
        }
        if let Effect::Length(v) = effect {
            match i + 1 {
                // Shuffling random cities changes nothing but the draw.
                1 => assert!((v - base).abs() / base < 0.15, "{subject}: {v} vs {base}"),
                // Real improvements over visiting cities in input order.
                2 | 3 | 7 | 9 | 10 => assert!(*v < base * 0.6, "{subject}: {v} vs {base}"),
                _ => {}
            }
        }
    }
}
