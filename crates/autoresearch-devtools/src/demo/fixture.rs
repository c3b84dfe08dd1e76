//! The demo's sample project: a git repository holding a travelling-salesman
//! heuristic (`tsp.py`), its protected evaluator (`evaluate.py`) and an
//! `autoresearch.toml`, plus a scripted agent outside the repository.
//!
//! The CLI's `tests/demo_loop.rs` compiles this file too (`#[path]`), to run
//! the demo's loop under CI: keep it to std and anyhow.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

const TSP_PY: &str = include_str!("sample/tsp.py");
const EVALUATE_PY: &str = include_str!("sample/evaluate.py");
const README_MD: &str = include_str!("sample/README.md");
const PROPOSE_PY: &str = include_str!("agent/propose.py");

/// How the loop is configured in the generated `autoresearch.toml`.
#[derive(Clone, Debug)]
pub struct LoopSettings {
    pub parallel: u32,
    pub iterations: u32,
    /// Seconds before an evaluation is killed (the hanging candidate's fate).
    pub evaluate_timeout_s: u32,
    /// Sample budget per side of the noise-aware comparator.
    pub max_samples: u32,
}

impl Default for LoopSettings {
    fn default() -> Self {
        LoopSettings {
            parallel: 2,
            iterations: 12,
            evaluate_timeout_s: 5,
            max_samples: 8,
        }
    }
}

/// Paths of a created fixture.
#[derive(Clone, Debug)]
pub struct Fixture {
    /// The directory everything lives in (recreated by [`create`]).
    pub root: PathBuf,
    /// The sample git repository (branch `main`).
    pub repo: PathBuf,
    /// The scripted agent, outside the repository.
    pub agent: PathBuf,
    /// Where the agent keeps its counter.
    pub agent_state: PathBuf,
}

/// Recreates `root` with the sample repository and the agent.
/// Errors: I/O, or git missing or failing (named with its arguments).
pub fn create(root: &Path, settings: &LoopSettings) -> anyhow::Result<Fixture> {
    if root.exists() {
        std::fs::remove_dir_all(root).with_context(|| format!("removing {}", root.display()))?;
    }
    let repo = root.join("tsp");
    let agent_dir = root.join("agent");
    std::fs::create_dir_all(&repo).with_context(|| format!("creating {}", repo.display()))?;
    std::fs::create_dir_all(&agent_dir)
        .with_context(|| format!("creating {}", agent_dir.display()))?;
    let root = root
        .canonicalize()
        .with_context(|| format!("resolving {}", root.display()))?;
    let repo = root.join("tsp");
    let agent = root.join("agent").join("propose.py");
    let agent_state = root.join("agent").join("state");
    write(&agent, PROPOSE_PY)?;
    write(&repo.join("tsp.py"), TSP_PY)?;
    write(&repo.join("evaluate.py"), EVALUATE_PY)?;
    write(&repo.join("README.md"), README_MD)?;
    write(&repo.join(".gitignore"), "__pycache__/\n")?;
    write(
        &repo.join("autoresearch.toml"),
        &config(&agent, &agent_state, settings),
    )?;
    git(&repo, &["init", "--quiet", "--initial-branch=main"])?;
    git(&repo, &["config", "user.name", "demo agent"])?;
    git(&repo, &["config", "user.email", "agent@demo.invalid"])?;
    git(&repo, &["add", "--all"])?;
    git(
        &repo,
        &[
            "commit",
            "--quiet",
            "--message",
            "TSP heuristic: visit cities in input order",
        ],
    )?;
    Ok(Fixture {
        root,
        repo,
        agent,
        agent_state,
    })
}

fn config(agent: &Path, state: &Path, s: &LoopSettings) -> String {
    format!(
        r#"# The demo's loop: a scripted agent proposes, evaluate.py measures, the
# noise-aware comparator decides. See README.md.
name = "tsp"
repo = "."
branch = "main"
harness = "scripted-agent"

[propose]
# No network, no LLM: the next idea from a fixed list, committed with a message.
command = "python3 '{agent}' '{state}'"
timeout = "30s"

[evaluate]
# Mean tour length over random city sets; AUTORESEARCH_SAMPLE seeds the draw.
command = "python3 evaluate.py"
timeout = "{timeout}s"
metrics = "lines"
protect = ["evaluate.py", "autoresearch.toml"]
require = ["tour_length"]

[compare]
# Welch's t-test with adaptive sampling: keep only significant improvements.
kind = "stat"
metric = "tour_length"
direction = "min"
alpha = 0.05
min_samples = 3
max_samples = {max_samples}

[run]
parallel = {parallel}
iterations = {iterations}
max_consecutive_crashes = 4
# The scripted agent and its state file live outside the checkout; jobs run
# sandboxed (bubblewrap when installed) and may write only their checkout
# and this folder.
sandbox_writable = ["{agent_dir}"]
"#,
        agent = agent.display(),
        state = state.display(),
        agent_dir = agent.parent().unwrap_or(agent).display(),
        timeout = s.evaluate_timeout_s,
        max_samples = s.max_samples,
        parallel = s.parallel,
        iterations = s.iterations,
    )
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Runs git in `repo`; git is quick here, so no timeout beyond git's own.
pub fn git(repo: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .with_context(|| format!("running git {} (is git installed?)", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "git {} in {} failed: {}",
            args.join(" "),
            repo.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
