//! `autoresearch check`, also the first thing `run` does: the mistakes that
//! would otherwise cost agent runs, found before any proposal. The config
//! and the comparator parse; the repository exists and has the branch (or a
//! commit to create it from: a fork's head, else HEAD); the first word of each command is a program on
//! PATH, a file in the project or a shell builtin (a command that starts
//! with a shell construct is noted, not checked); and the evaluate command,
//! run once on the branch head in a slot and sandbox as the loop runs it,
//! exits 0 and prints every metric the comparator and `require` need. Each
//! failure is said in plain words (the evaluator's own error output as
//! text), and the command exits non-zero.

use crate::experiment::comparator;
use anyhow::Context;
use autoresearch_controller::config::CONFIG_FILE;
use autoresearch_controller::git::Git;
use autoresearch_controller::sandbox::Sandbox;
use autoresearch_controller::{Config, LocalExecutor, LoopConfig};
use autoresearch_core::exec::{Executor, Job, Limits};
use autoresearch_core::lifecycle::Attempt;
use autoresearch_core::num::fmt_f64;
use autoresearch_core::{EvalResult, World, now_ms, short_commit};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// The exit code of `check`, and of `run` when its check fails.
pub const EXIT_CHECK_FAILED: u8 = 4;

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  autoresearch check\n  \
    autoresearch check --comparator scalar:val_bpb:min\n  \
    autoresearch check --no-baseline   # only the quick checks\n\n\
    Exits 0 when everything passed, 4 when a check failed (each failure says why).")]
pub struct CheckArgs {
    /// The config file.
    #[arg(long, default_value = CONFIG_FILE)]
    pub config: PathBuf,
    /// A comparator spec instead of `[compare]`, e.g. scalar:val_bpb:min.
    #[arg(long)]
    pub comparator: Option<String>,
    /// Skip the baseline evaluation (the quick checks only).
    #[arg(long)]
    pub no_baseline: bool,
}

/// One line of the check's report.
struct Line {
    ok: bool,
    what: String,
    detail: String,
}

/// The checks' results, printed as they come (on stdout for `check`, on
/// stderr with the loop's other notes for `run`).
#[derive(Default)]
pub struct Report {
    lines: Vec<Line>,
    on_stderr: bool,
}

impl Report {
    fn add(&mut self, ok: bool, what: &str, detail: impl Into<String>) {
        let line = Line {
            ok,
            what: what.to_string(),
            detail: detail.into(),
        };
        let mark = if line.ok { "ok  " } else { "FAIL" };
        let mut detail = line.detail.lines();
        let mut text = format!("  {mark}  {}: {}", line.what, detail.next().unwrap_or(""));
        for more in detail {
            text.push_str(&format!("\n          {more}"));
        }
        if self.on_stderr {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
        self.lines.push(line);
    }

    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.lines.iter().all(|l| l.ok)
    }

    /// The failed checks, one per line, for an error message.
    pub fn failures(&self) -> String {
        self.lines
            .iter()
            .filter(|l| !l.ok)
            .map(|l| format!("{}: {}", l.what, l.detail.lines().next().unwrap_or("")))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// `autoresearch check`.
pub async fn check_cmd(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    let mut cfg = LoopConfig::from_config(&config);
    let (cmp, needed, _) = comparator(&config, args.comparator.as_deref())?;
    for m in needed {
        if !cfg.require.contains(&m) {
            cfg.require.push(m);
        }
    }
    let sandbox = Sandbox::new(config.sandbox())
        .with_context(|| format!("preparing the jobs' sandbox ({})", config.path.display()))?;
    println!(
        "checking {} (experiment {}, comparing with {})",
        config.path.display(),
        config.name,
        cmp.spec()
    );
    let report = preflight(&config, &cfg, &sandbox, !args.no_baseline, false, None).await?;
    if report.passed() {
        println!("everything checked: `autoresearch run` can start");
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "the check failed: fix the lines marked FAIL, then run `autoresearch check` again"
        );
        Ok(ExitCode::from(EXIT_CHECK_FAILED))
    }
}

/// Where `run` starts and whether its check must evaluate that commit.
pub struct Start {
    /// The world's head commit when the branch does not exist yet: the
    /// loop creates the branch there (a fork's first `run`), so the check
    /// looks at that commit, not at the repository's HEAD.
    pub world_head: Option<String>,
    /// Whether the check evaluates the start: the experiment has no head
    /// yet, its head has no scored Result, the branch moved away from it
    /// (the loop will adopt a new baseline), or the head's recorded
    /// metrics lack one that `require` or the comparator needs (so a
    /// changed config is tried once before candidates are spent on it).
    pub evaluate: bool,
    /// The head's metrics, each the mean over its Results that count for
    /// its commit ([`crate::status::means`]); empty without a head.
    pub head_metrics: Vec<(String, f64)>,
}

/// [`Start`] of the loop `cfg` in `storage`. Cost: one world open (the
/// one `run` makes before its loop).
pub async fn loop_start(
    storage: Arc<dyn autoresearch_core::Storage>,
    cfg: &LoopConfig,
) -> anyhow::Result<Start> {
    let unmeasured = Start {
        world_head: None,
        evaluate: true,
        head_metrics: Vec::new(),
    };
    if storage.find_world(&cfg.world).await?.is_none() {
        return Ok(unmeasured);
    }
    let w = World::open(storage, crate::ledger::registry(), &cfg.world)
        .await
        .with_context(|| format!("opening world {:?}", cfg.world))?;
    let Some((_, head)) = w.branch_head(&cfg.experiment) else {
        return Ok(unmeasured);
    };
    let head_metrics: Vec<(String, f64)> = w
        .run_by_id(&head.run_id)
        .map(|(entity, run)| crate::status::means(&Attempt::of(&w, entity, run)))
        .unwrap_or_default()
        .into_iter()
        .map(|(k, (mean, _))| (k, mean))
        .collect();
    let unmeasured = Start {
        head_metrics,
        ..unmeasured
    };
    let world_head = match Git::new(&cfg.repo).branch_tip(&cfg.branch).ok().flatten() {
        Some(tip) if tip == head.commit_hash => None,
        Some(_) => return Ok(unmeasured),
        // The loop creates the branch at the world's head.
        None if head.commit_hash.is_empty() => return Ok(unmeasured),
        None => Some(head.commit_hash.clone()),
    };
    let mut recorded = std::collections::BTreeSet::new();
    for (_, r) in w.results_for(&head.run_id) {
        if r.counts_for(&head.commit_hash)
            && let Ok(Value::Object(o)) = r.outputs()
        {
            recorded.extend(o.keys().filter(|k| *k != EvalResult::META).cloned());
        }
    }
    let scored = !recorded.is_empty() && cfg.require.iter().all(|m| recorded.contains(m));
    Ok(Start {
        world_head,
        evaluate: !scored,
        head_metrics: unmeasured.head_metrics,
    })
}

/// Runs every check for the loop `cfg` of `config`, printing each result
/// (on stderr when `on_stderr`); the baseline evaluation only when
/// `evaluate` is set. Errors only when a check could not be carried out at
/// all.
pub async fn preflight(
    config: &Config,
    cfg: &LoopConfig,
    sandbox: &Sandbox,
    evaluate: bool,
    on_stderr: bool,
    world_head: Option<&str>,
) -> anyhow::Result<Report> {
    let mut report = Report {
        lines: Vec::new(),
        on_stderr,
    };
    let base_dir = config
        .path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    for (what, command) in [
        ("propose command", &cfg.propose_command),
        ("evaluate command", &cfg.evaluate_command),
    ] {
        let (ok, detail) = command_check(command, &base_dir);
        report.add(ok, what, detail);
    }
    let head = repository_check(cfg, &mut report, world_head);
    if !evaluate {
        return Ok(report);
    }
    let Some(head) = head else {
        report.add(
            false,
            "baseline evaluation",
            "not run: no commit to evaluate",
        );
        return Ok(report);
    };
    let evaluator_found = report
        .lines
        .iter()
        .any(|l| l.what == "evaluate command" && l.ok);
    if !evaluator_found {
        report.add(
            false,
            "baseline evaluation",
            "not run: the evaluate command is missing",
        );
        return Ok(report);
    }
    let (ok, detail) = evaluate_baseline(cfg, sandbox, &head).await?;
    report.add(
        ok,
        &format!("baseline evaluation of {}", short_commit(&head)),
        detail,
    );
    Ok(report)
}

/// The repository and the branch; the commit the loop would start from.
fn repository_check(
    cfg: &LoopConfig,
    report: &mut Report,
    world_head: Option<&str>,
) -> Option<String> {
    let git = Git::new(&cfg.repo);
    if let Err(e) = git.run(&["rev-parse", "--git-dir"]) {
        report.add(
            false,
            "repository",
            format!(
                "{} is not in a git repository ({e}); run `git init` and commit your project",
                cfg.repo.display()
            ),
        );
        return None;
    }
    match git.branch_tip(&cfg.branch) {
        Ok(Some(tip)) => {
            report.add(
                true,
                "repository",
                format!(
                    "{}, branch {} at {}",
                    cfg.repo.display(),
                    cfg.branch,
                    short_commit(&tip)
                ),
            );
            Some(tip)
        }
        Ok(None) if let Some(head) = world_head => match git.resolve(head) {
            Ok(Some(commit)) => {
                report.add(
                    true,
                    "repository",
                    format!(
                        "branch {} does not exist yet: `run` creates it at world {}'s head ({})",
                        cfg.branch,
                        cfg.world,
                        short_commit(&commit)
                    ),
                );
                Some(commit)
            }
            _ => {
                report.add(
                    false,
                    "repository",
                    format!(
                        "branch {} does not exist and world {}'s head {} is not a commit of {}",
                        cfg.branch,
                        cfg.world,
                        short_commit(head),
                        cfg.repo.display()
                    ),
                );
                None
            }
        },
        Ok(None) => match git.resolve("HEAD") {
            Ok(Some(head)) => {
                report.add(
                    true,
                    "repository",
                    format!(
                        "branch {} does not exist yet: `run` creates it at HEAD ({})",
                        cfg.branch,
                        short_commit(&head)
                    ),
                );
                Some(head)
            }
            _ => {
                report.add(
                    false,
                    "repository",
                    format!(
                        "{} has no commit yet: commit your project first",
                        cfg.repo.display()
                    ),
                );
                None
            }
        },
        Err(e) => {
            report.add(
                false,
                "repository",
                format!("reading branch {}: {e}", cfg.branch),
            );
            None
        }
    }
}

/// Whether `command`'s first word can be run: `(passed, what was found)`.
fn command_check(command: &str, base_dir: &Path) -> (bool, String) {
    let word = match first_word(command) {
        Ok(w) => w,
        Err(construct) => {
            return (
                true,
                format!("starts with {construct}: not checked before it runs"),
            );
        }
    };
    if BUILTINS.contains(&word.as_str()) {
        return (true, format!("`{word}` is a shell builtin"));
    }
    if word.contains('/') {
        let path = if Path::new(&word).is_absolute() {
            PathBuf::from(&word)
        } else {
            base_dir.join(&word)
        };
        return match std::fs::metadata(&path) {
            Ok(m) if m.is_file() && is_executable(&m) => (true, format!("`{word}` is a program")),
            Ok(m) if m.is_file() => (
                false,
                format!(
                    "`{word}` is not executable (chmod +x {word}, or run it with its interpreter)"
                ),
            ),
            _ => (
                false,
                format!("`{word}` does not exist ({})", path.display()),
            ),
        };
    }
    match find_on_path(&word) {
        Some(p) => (true, format!("`{word}` is {}", p.display())),
        None => (
            false,
            format!(
                "`{word}` is not installed: no program of that name on PATH ({})",
                std::env::var("PATH").unwrap_or_default()
            ),
        ),
    }
}

/// Shell builtins and keywords that need no program.
const BUILTINS: &[&str] = &[
    ".", ":", "[", "alias", "cd", "echo", "eval", "exit", "export", "false", "printf", "pwd",
    "read", "return", "set", "shift", "source", "test", "trap", "true", "type", "ulimit", "umask",
    "unset", "wait",
];

/// Words after which the next word is the program run.
const PREFIXES: &[&str] = &["exec", "command", "env", "nice", "nohup", "time"];

/// The program a shell command line starts with: its first word after
/// variable assignments (and `exec`, `env`, ...), unquoted. `Err` names
/// the shell construct it starts with instead (a keyword, a subshell, a
/// command named by a variable or computed by the shell).
fn first_word(command: &str) -> Result<String, String> {
    let line = command
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or_else(|| "nothing (it is empty)".to_string())?;
    let computed = |t: &str| t.contains("$(") || t.contains('`') || t.contains("${");
    for token in line.split_whitespace() {
        let token = token.trim_end_matches(';');
        if let Some((name, value)) = token.split_once('=')
            && !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            if computed(value) || value.starts_with(['"', '\'']) {
                return Err("a variable assignment computed by the shell".into());
            }
            continue;
        }
        if PREFIXES.contains(&token) {
            continue;
        }
        if KEYWORDS.contains(&token) || token.starts_with(['(', '{', '!']) {
            return Err(format!("the shell construct `{token}`"));
        }
        if token.contains('$') || token.contains('`') {
            return Err(format!("`{token}`, a command named by the shell"));
        }
        let unquoted = token
            .strip_prefix('\'')
            .and_then(|t| t.strip_suffix('\''))
            .or_else(|| token.strip_prefix('"').and_then(|t| t.strip_suffix('"')))
            .unwrap_or(token);
        return Ok(unquoted.to_string());
    }
    Err("variable assignments only".into())
}

const KEYWORDS: &[&str] = &[
    "if", "then", "for", "while", "until", "case", "do", "function", "select", "[[",
];

fn is_executable(m: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    m.permissions().mode() & 0o111 != 0
}

/// The program `name` on PATH, as `sh` would find it.
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && is_executable(&m)))
}

/// Evaluates `commit` once as the loop would (a slot, the sandbox, the
/// loop's environment and timeout) and checks its metrics: `(passed, what
/// was seen)`. Its logs are removed when it passes and kept when not.
async fn evaluate_baseline(
    cfg: &LoopConfig,
    sandbox: &Sandbox,
    commit: &str,
) -> anyhow::Result<(bool, String)> {
    let git = Git::new(&cfg.repo);
    let state_dir = cfg.state_dir.clone();
    let workdir = prepare_state_dir(&git, &state_dir)?;
    let run_id = format!("check-{}", now_ms());
    let executor = LocalExecutor::new(state_dir.clone()).with_sandbox(sandbox.clone());
    let mut env = BTreeMap::new();
    env.insert("AUTORESEARCH_SAMPLE".to_string(), "0".to_string());
    env.insert(
        "AUTORESEARCH_EXPERIMENT".to_string(),
        cfg.experiment.clone(),
    );
    env.insert("AUTORESEARCH_COMMIT".to_string(), commit.to_string());
    let job = Job {
        run_id: run_id.clone(),
        step: "evaluate-0".into(),
        repo: cfg.repo.display().to_string(),
        commit: commit.to_string(),
        workdir,
        command: cfg.evaluate_command.clone(),
        env,
        limits: Limits {
            timeout: cfg.evaluate_timeout,
            output_limit: cfg.output_limit,
            kill_grace: cfg.kill_grace,
        },
        output: cfg.metrics.source(),
        commit_changes: false,
        metrics: Some(cfg.metrics.spec(&cfg.require)),
        // Only the loop's confirm jobs see `[confirm] data`; no proposer
        // runs during the check.
        held_out: false,
    };
    let started = std::time::Instant::now();
    let report = executor.run(job).await;
    let _ = executor.release(&run_id).await;
    let _ = executor.close().await;
    let report = report.with_context(|| format!("running the evaluate command on {commit}"))?;
    let took = started.elapsed().as_secs_f64();
    let logs = state_dir.join("runs").join(&run_id);
    let failed = |why: String| -> (bool, String) {
        let mut text = why;
        let tail = last_lines(&report.stderr_tail, 12);
        let tail = if tail.trim().is_empty() {
            last_lines(&report.stdout_tail, 12)
        } else {
            tail
        };
        if !tail.trim().is_empty() {
            text.push_str("; its last output:\n");
            text.push_str(&tail);
        }
        text.push_str(&format!("\nfull logs: {}", logs.display()));
        (false, text)
    };
    if !report.status.success() {
        return Ok(failed(format!(
            "the evaluate command failed ({})",
            report.status
        )));
    }
    let reading = report.metrics.clone().unwrap_or_else(|| {
        autoresearch_controller::metrics::read_text(&cfg.metrics.spec(&cfg.require), &report.output)
    });
    if let Err(e) = reading.check(&cfg.require) {
        return Ok(failed(e.to_string()));
    }
    let _ = std::fs::remove_dir_all(&logs);
    let shown: Vec<String> = reading
        .values
        .iter()
        .filter(|(k, _)| cfg.require.is_empty() || cfg.require.contains(k))
        .map(|(k, v)| match v.as_f64() {
            Some(x) => format!("{k}={}", fmt_f64(x)),
            None => format!("{k}={v}"),
        })
        .collect();
    Ok((true, format!("{} in {took:.1}s (exit 0)", shown.join(", "))))
}

/// The last `n` lines of `text`.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Makes the state directory and keeps it out of `git status`, as the loop
/// does; the config's folder inside the repository (the jobs' workdir).
fn prepare_state_dir(git: &Git, state_dir: &Path) -> anyhow::Result<String> {
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    if git.is_bare()? {
        return Ok(String::new());
    }
    let prefix = git.run(&["rev-parse", "--show-prefix"])?;
    let top = PathBuf::from(git.run(&["rev-parse", "--show-toplevel"])?);
    let top = top.canonicalize().unwrap_or(top);
    let dir = state_dir.canonicalize().unwrap_or(state_dir.to_path_buf());
    if let Ok(rel) = dir.strip_prefix(&top)
        && !rel.as_os_str().is_empty()
    {
        git.exclude(&rel.to_string_lossy())?;
    }
    Ok(prefix.trim_end_matches('/').to_string())
}
