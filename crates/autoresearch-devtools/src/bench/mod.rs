//! Benchmarks. Each prints JSON objects, one per line, on stdout; progress
//! goes to stderr. Compare ratios measured in one run: the machine is noisy.

mod decisions;
mod fork;
mod history;
mod ingest;
mod ingest_plain;
mod ledger;
mod loop_;
mod parity;
mod serve;
mod serve_loop;
mod serve_replay;
mod world;

use anyhow::bail;

/// Runs `git -C dir args...`; its trimmed stdout. Errors name the command
/// and carry git's stderr.
pub fn git(dir: &std::path::Path, args: &[&str]) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .with_context(|| format!("running git {args:?}"))?;
    if !out.status.success() {
        bail!("git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Creates the directory `repo` holding a git repository whose branch
/// `main` has one commit ("start") of one file, `file` with `contents`.
pub fn init_repo(repo: &std::path::Path, file: &str, contents: &str) -> anyhow::Result<()> {
    std::fs::create_dir(repo)?;
    git(repo, &["init", "-q", "-b", "main"])?;
    std::fs::write(repo.join(file), contents)?;
    git(repo, &["add", "-A"])?;
    let who = ["-c", "user.name=b", "-c", "user.email=b@b"];
    git(repo, &[&who[..], &["commit", "-qm", "start"]].concat())?;
    Ok(())
}

/// The loop a benchmark runs on `repo`: experiment `name` (world
/// `autoresearch:{name}`, branch `main`), the given proposer and evaluator
/// commands (60 s each), `name: value` metrics requiring `metric`, one
/// candidate at a time, no time budget, the ledger's state under
/// `repo/.autoresearch`. Callers change what they measure with struct
/// update syntax.
pub fn loop_config(
    name: &str,
    repo: &std::path::Path,
    propose: String,
    evaluate: String,
    metric: &str,
) -> autoresearch_controller::LoopConfig {
    use std::time::Duration;
    autoresearch_controller::LoopConfig {
        experiment: name.into(),
        world: format!("autoresearch:{name}"),
        repo: repo.to_path_buf(),
        workdir: String::new(),
        branch: "main".into(),
        harness: "bench".into(),
        propose_command: propose,
        propose_timeout: Duration::from_secs(60),
        evaluate_command: evaluate,
        evaluate_timeout: Duration::from_secs(60),
        metrics: autoresearch_controller::MetricsFormat::Lines,
        protect: vec![],
        editable: vec![],
        config_file: None,
        max_file_size: 10 << 20,
        allow_gitlinks: false,
        require: vec![metric.into()],
        primary_metric: None,
        parallel: 1,
        iterations: 1,
        time_budget: None,
        max_consecutive_crashes: 5,
        output_limit: 64 * 1024,
        kill_grace: Duration::from_secs(1),
        max_samples: 10,
        calibrate: 0,
        confirm: None,
        cost_budget: None,
        evidence_diff: false,
        state_dir: repo.join(".autoresearch"),
        lease_lock: None,
        lease_timeout: Duration::from_secs(60),
    }
}

/// Lines [`emit`] could not write (stdout closed, e.g. piped into
/// `head`): counted, so that the benchmark still finishes and removes its
/// files, and [`run`] then fails saying so instead of panicking mid-way.
static UNWRITTEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Prints one benchmark figure as a JSON line on stdout. A line that
/// cannot be written is counted (see [`run`]), never a panic.
pub fn emit(value: serde_json::Value) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{value}").and_then(|()| out.flush()).is_err() {
        UNWRITTEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Runs benchmark `name`; `args` are its own options (none for the ones
/// below, which refuse any).
pub fn run(name: &str, quick: bool, args: &[String]) -> anyhow::Result<()> {
    let result = match name {
        "ingest" => ingest::run(quick, args),
        "ledger" => ledger::run(quick, args),
        "loop" => loop_::run(quick, args),
        "decisions" => decisions::run(quick, args),
        "parity" => parity::run(quick, args),
        "fork" => fork::run(quick, args),
        "serve" => serve::run(quick, args),
        "history" => history::run(quick, args),
        "world" => world::run(quick, args),
        other => bail!(
            "unknown benchmark {other:?} (expected ledger, ingest, loop, decisions, parity, fork, serve, history or world)"
        ),
    };
    let unwritten = UNWRITTEN.load(std::sync::atomic::Ordering::Relaxed);
    if result.is_ok() && unwritten > 0 {
        bail!(
            "benchmark {name}: {unwritten} result lines could not be written to stdout (closed?)"
        );
    }
    result
}
