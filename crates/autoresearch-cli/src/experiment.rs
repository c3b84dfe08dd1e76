//! The loop's commands: `init`, `run`, `status` and `show`.

use crate::ledger;
use crate::progress::Progress;
use anyhow::{Context, bail};
use autoresearch_compare::CompareSpec;
use autoresearch_controller::config::{CONFIG_FILE, parse_duration, template};
use autoresearch_controller::git::Git;
use autoresearch_controller::sandbox::Sandbox;
use autoresearch_controller::{
    Config, Controller, LocalExecutor, LoopConfig, Shutdown, StopReason, fork_branch_name,
};
use autoresearch_core::compare::{Comparator, Vote};
use autoresearch_core::lifecycle::{Attempt, Outcome, attempts};
use autoresearch_core::{
    EvalResult, OutcomeStatus, Run, World, experiment_world_name, short_commit,
};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  autoresearch init\n  autoresearch init --name nanogpt --branch autoresearch/nov25"
)]
pub struct InitArgs {
    /// The experiment name (default: the directory's name).
    #[arg(long)]
    pub name: Option<String>,
    /// The branch to advance (default: the checked-out branch).
    #[arg(long)]
    pub branch: Option<String>,
    /// Where to write the config.
    #[arg(long, default_value = CONFIG_FILE)]
    pub config: PathBuf,
    /// Overwrite an existing config.
    #[arg(long)]
    pub force: bool,
}

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  autoresearch run --iterations 20\n  \
    autoresearch run --parallel 2 --time-budget 8h --comparator scalar:val_bpb:min\n  \
    autoresearch run --world replay-stat   # continue a fork on branch autoresearch/replay-stat\n\n\
    Ctrl-C once stops launching runs and lets running ones finish; twice kills them.")]
pub struct RunArgs {
    /// Candidates to try (overrides [run] iterations; 0: no limit).
    #[arg(long)]
    pub iterations: Option<u64>,
    /// Candidates at once against the same head (overrides [run] parallel).
    #[arg(long)]
    pub parallel: Option<usize>,
    /// Stop launching runs after this long, e.g. 90m, 8h (overrides [run] time_budget).
    #[arg(long, value_parser = parse_duration)]
    pub time_budget: Option<std::time::Duration>,
    /// The config file.
    #[arg(long, default_value = CONFIG_FILE)]
    pub config: PathBuf,
    /// A comparator spec instead of `[compare]`, e.g. scalar:val_bpb:min.
    #[arg(long)]
    pub comparator: Option<String>,
    /// Run in this world (a fork), on git branch autoresearch/{fork}.
    #[arg(long)]
    pub world: Option<String>,
    /// Start without the check (`autoresearch check`: the commands, the
    /// repository, and the baseline evaluation when the head has no score).
    #[arg(long)]
    pub no_check: bool,
}

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  autoresearch status\n  autoresearch status --json")]
pub struct StatusArgs {
    /// The config file naming the experiment.
    #[arg(long, default_value = CONFIG_FILE)]
    pub config: PathBuf,
    /// The world to read (default: the experiment's).
    #[arg(long)]
    pub world: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  autoresearch show 19ab3c4d5e6-a3f2\n  autoresearch show 19ab3c --json"
)]
pub struct ShowArgs {
    /// The run's id, or a unique prefix of it.
    pub run_id: String,
    /// The config file naming the experiment.
    #[arg(long, default_value = CONFIG_FILE)]
    pub config: PathBuf,
    /// The world to read (default: the experiment's).
    #[arg(long)]
    pub world: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn init(args: InitArgs) -> anyhow::Result<ExitCode> {
    if args.config.exists() && !args.force {
        bail!(
            "{} already exists (use --force to overwrite it)",
            args.config.display()
        );
    }
    let dir = args
        .config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or(std::env::current_dir().context("reading the current directory")?);
    let dir = dir.canonicalize().unwrap_or(dir);
    crate::program::require_git_repository(&dir)?;
    let name = match args.name {
        Some(n) => n,
        None => dir
            .file_name()
            .map(|n| n.to_string_lossy().replace([' ', ':'], "-"))
            .unwrap_or_else(|| "experiment".into()),
    };
    let branch = match args.branch {
        Some(b) => b,
        None => Git::new(&dir)
            .checked_out_branch()
            .ok()
            .flatten()
            .unwrap_or_else(|| "main".into()),
    };
    let text = template(&name, &branch);
    // Never write a config we could not read back.
    Config::parse(&text, &args.config).context("the generated config is invalid")?;
    create_missing_branch(&dir, &branch)?;
    std::fs::write(&args.config, text)
        .with_context(|| format!("writing {}", args.config.display()))?;
    println!(
        "wrote {} (experiment {name:?}, branch {branch:?}); edit [propose] and [evaluate]",
        args.config.display()
    );
    let program = dir.join(crate::program::PROGRAM_FILE);
    if crate::program::write_program(&dir)? {
        println!(
            "wrote {}: the agent's brief (what to change, what not to touch, how results are read); edit it",
            program.display()
        );
    } else {
        println!("kept the existing {}", program.display());
    }
    println!("then `autoresearch check`, and `autoresearch run`");
    Ok(ExitCode::SUCCESS)
}

/// Creates `branch` at the current HEAD of the repository at `dir` when it
/// does not exist yet, saying so; a repository without a commit is left
/// for `run` to report.
fn create_missing_branch(dir: &Path, branch: &str) -> anyhow::Result<()> {
    let git = Git::new(dir);
    if git.run(&["rev-parse", "--git-dir"]).is_err() || git.branch_tip(branch)?.is_some() {
        return Ok(());
    }
    let Some(head) = git.resolve("HEAD")? else {
        return Ok(());
    };
    git.compare_and_swap(
        &format!("refs/heads/{branch}"),
        &head,
        None,
        "autoresearch init: branch created",
    )?;
    println!(
        "created branch {branch} at the current HEAD ({})",
        short_commit(&head)
    );
    Ok(())
}

/// Metrics the comparator reads: an evaluation without them is a crash.
fn compared_metrics(spec: &CompareSpec) -> Vec<String> {
    match spec {
        CompareSpec::Scalar(s) => vec![s.metric.clone()],
        CompareSpec::Stat(s) => vec![s.metric.clone()],
        CompareSpec::Pareto(objs) => objs.iter().map(|o| o.metric.clone()).collect(),
        CompareSpec::Tournament(inner) => compared_metrics(inner),
        _ => Vec::new(),
    }
}

/// Whether the comparator reads the candidate's diff (only a judge does).
fn reads_diff(spec: &CompareSpec) -> bool {
    match spec {
        CompareSpec::Judge(_) => true,
        CompareSpec::Tournament(inner) => reads_diff(inner),
        CompareSpec::All(members) => members.iter().any(|m| match m {
            autoresearch_compare::spec::Member::Compare(c) => reads_diff(c),
            autoresearch_compare::spec::Member::Condition(_) => false,
        }),
        _ => false,
    }
}

/// The comparator of `--comparator` or `[compare]`, the metrics it needs,
/// and whether it reads diffs.
pub fn comparator(
    config: &Config,
    spec: Option<&str>,
) -> anyhow::Result<(Arc<dyn Comparator>, Vec<String>, bool)> {
    let parsed = match spec {
        Some(s) => CompareSpec::parse(s).with_context(|| format!("--comparator {s:?}"))?,
        None => {
            if config.compare.is_empty() {
                bail!(
                    "{}: no [compare] table; add one or pass --comparator SPEC (e.g. scalar:val_bpb:min)",
                    config.path.display()
                );
            }
            CompareSpec::from_toml(&toml::Value::Table(config.compare.clone()))
                .with_context(|| format!("config {}", config.path.display()))?
        }
    };
    let metrics = compared_metrics(&parsed);
    Ok((
        autoresearch_compare::build(&parsed),
        metrics,
        reads_diff(&parsed),
    ))
}

fn load_config(path: &Path) -> anyhow::Result<Config> {
    Ok(Config::load(path)?)
}

pub async fn run(ledger_path: &Path, args: RunArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let config = load_config(&args.config)?;
    let (comparator, needed, diff) = comparator(&config, args.comparator.as_deref())?;
    let mut cfg = LoopConfig::from_config(&config);
    cfg.evidence_diff = diff;
    cfg.primary_metric = CompareSpec::parse(&comparator.spec())
        .ok()
        .and_then(|spec| spec.objectives().into_iter().next())
        .map(|(metric, _)| metric);
    for m in needed {
        if !cfg.require.contains(&m) {
            cfg.require.push(m);
        }
    }
    if let Some(n) = args.iterations {
        cfg.iterations = n;
    }
    if let Some(k) = args.parallel {
        if k == 0 {
            bail!("--parallel must be at least 1");
        }
        cfg.parallel = k;
    }
    if let Some(b) = args.time_budget {
        cfg.time_budget = Some(b);
    }
    let storage = ledger::open(ledger_path)?;
    if let Some(world) = &args.world
        && *world != cfg.world
    {
        if storage.find_world(world).await?.is_none() {
            bail!(
                "no world named {world:?} in {} (see `autoresearch worlds`)",
                ledger_path.display()
            );
        }
        cfg.branch = fork_branch_name(world);
        cfg.world = world.clone();
    }
    cfg.lease_lock = Some(ledger::lease_lock_path(ledger_path, &cfg.world));
    let sandbox = Sandbox::new(config.sandbox())
        .with_context(|| format!("preparing the jobs' sandbox ({})", config.path.display()))?;
    if !sandbox.is_isolated() {
        // Jobs' orphans come back to this process, to be found and killed.
        autoresearch_controller::sandbox::become_subreaper();
    }
    if !args.no_check {
        let evaluate = crate::check::baseline_unmeasured(storage.clone(), &cfg).await?;
        eprintln!("checking {} before any proposal", config.path.display());
        let report = crate::check::preflight(&config, &cfg, &sandbox, evaluate, true).await?;
        if !report.passed() {
            eprintln!(
                "error: the check failed, so no proposal was made: {}",
                report.failures()
            );
            return Ok(ExitCode::from(crate::check::EXIT_CHECK_FAILED));
        }
    }
    let executor =
        Arc::new(LocalExecutor::new(cfg.state_dir.clone()).with_sandbox(sandbox.clone()));
    let progress = Arc::new(Progress::new(quiet));
    if let Some(why) = sandbox.fallback_reason() {
        progress.note(format!(
            "jobs run without a sandbox ({why}): they can write outside their checkout; install bubblewrap (`apt-get install bubblewrap`) or set [run] sandbox = \"none\" to silence this"
        ));
    }
    let shutdown = Shutdown::new();
    let p = progress.clone();
    let controller = Controller::open(cfg.clone(), storage, comparator.clone(), executor)
        .await
        .with_context(|| format!("starting the loop of {:?}", cfg.experiment))?
        .with_events(Arc::new(move |e| p.event(e)))
        .with_shutdown(shutdown.clone());
    let p = progress.clone();
    let signals = tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            return;
        };
        loop {
            // SIGTERM and SIGHUP (a closed terminal, a service manager)
            // are a second Ctrl-C at once: jobs are killed and recorded.
            let level = tokio::select! {
                r = tokio::signal::ctrl_c() => match r {
                    Ok(()) => shutdown.escalate(),
                    Err(_) => return,
                },
                _ = term.recv() => { shutdown.escalate(); shutdown.escalate() }
                _ = hup.recv() => { shutdown.escalate(); shutdown.escalate() }
            };
            match level {
                Shutdown::DRAIN => {
                    p.note("stopping: no new runs; running ones finish (Ctrl-C again to kill them)")
                }
                _ => p.note("killing running jobs; they are recorded as interrupted"),
            }
        }
    });
    progress.note(format!(
        "experiment {} on branch {} in world {}; comparing with {}",
        cfg.experiment,
        cfg.branch,
        cfg.world,
        comparator.spec()
    ));
    let summary = Arc::new(controller).run().await;
    signals.abort();
    let s = summary.context("the loop stopped on an error")?;
    println!(
        "{}: {} launched, {} kept, {} discarded, {} crashed, {} pending; head {}",
        s.stopped,
        s.launched,
        s.kept,
        s.discarded,
        s.crashed,
        s.pending,
        short_commit(&s.head)
    );
    Ok(match s.reason {
        StopReason::Interrupted => ExitCode::from(130),
        StopReason::ConsecutiveCrashes(_) => ExitCode::from(EXIT_CRASHES),
        _ => ExitCode::SUCCESS,
    })
}

/// `run`'s exit code when the loop stopped on `max_consecutive_crashes`
/// crashes in a row (1 is an error, 130 an interruption).
pub const EXIT_CRASHES: u8 = 3;

/// The experiment name and world of a read command.
fn target(config: &Path, world: Option<String>) -> anyhow::Result<(Config, String)> {
    let c = load_config(config)?;
    let w = world.unwrap_or_else(|| experiment_world_name(&c.name));
    Ok((c, w))
}

async fn open_world(ledger_path: &Path, world: &str) -> anyhow::Result<World> {
    let storage = ledger::open_read_only(ledger_path)?;
    World::open(storage, ledger::registry(), world)
        .await
        .with_context(|| format!("opening world {world:?} in {}", ledger_path.display()))
}

fn metrics_of(r: &EvalResult) -> Value {
    match r.outputs() {
        Ok(Value::Object(mut o)) => {
            o.remove(EvalResult::META);
            Value::Object(o)
        }
        _ => json!({}),
    }
}

fn outcome_json(o: &Option<Outcome>) -> Value {
    match o {
        None => Value::Null,
        Some(o) => json!({
            "status": o.status,
            "reason": o.reason,
            "descriptor": serde_json::from_str::<Value>(&o.descriptor_json).unwrap_or(Value::Null),
            "base_commit": o.base_commit,
            "comparator": o.comparator,
            "decided_at_ms": o.decided_at_ms,
        }),
    }
}

pub async fn status(ledger_path: &Path, args: StatusArgs) -> anyhow::Result<ExitCode> {
    let (config, world_name) = target(&args.config, args.world)?;
    let w = open_world(ledger_path, &world_name).await?;
    let all = attempts(&w, &config.name);
    let head = w.branch_head(&config.name).map(|(_, h)| h);
    let count = |st: OutcomeStatus| {
        all.iter()
            .filter(|a| a.outcome.as_ref().is_some_and(|o| o.status == st))
            .count()
    };
    let in_flight: Vec<&Attempt> = all
        .iter()
        .filter(|a| a.run.status().is_ok_and(|s| s.is_active()))
        .collect();
    let pending: Vec<(&Attempt, Vec<Vote>)> = all
        .iter()
        .filter(|a| {
            a.outcome
                .as_ref()
                .is_some_and(|o| o.status == OutcomeStatus::Pending)
        })
        .map(|a| {
            let votes = w
                .find_all::<Vote>(|v| v.run_id == a.run.run_id)
                .into_iter()
                .map(|(_, v)| v)
                .collect();
            (a, votes)
        })
        .collect();
    let tip = Git::new(&config.repo)
        .branch_tip(&config.branch)
        .ok()
        .flatten();
    if args.json {
        let v = json!({
            "experiment": config.name,
            "world": world_name,
            "tick": w.tick().0,
            "branch": config.branch,
            "branch_tip": tip,
            "head": head.as_ref().map(|h| json!({
                "commit": h.commit_hash, "run_id": h.run_id,
                "descriptor": h.descriptor().unwrap_or(Value::Null), "updated_at_ms": h.updated_at_ms,
            })),
            "attempts": all.len(),
            "kept": count(OutcomeStatus::Keep),
            "discarded": count(OutcomeStatus::Discard),
            "crashed": count(OutcomeStatus::Crash),
            "baselines": count(OutcomeStatus::Baseline),
            OutcomeStatus::Pending.as_str(): pending.iter().map(|(a, votes)| json!({
                "run_id": a.run.run_id, "commit": a.run.commit_hash, "votes": votes.len(),
                "reason": a.outcome.as_ref().map(|o| o.reason.clone()),
            })).collect::<Vec<_>>(),
            "in_flight": in_flight.iter().map(|a| json!({
                "run_id": a.run.run_id, "status": a.run.status, "started_at_ms": a.run.started_at_ms,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "experiment {} (world {world_name}, tick {})",
        config.name,
        w.tick()
    );
    match &head {
        Some(h) => println!(
            "head       {} (run {}) {}",
            short_commit(&h.commit_hash),
            if h.run_id.is_empty() { "-" } else { &h.run_id },
            h.descriptor_json
        ),
        None => println!("head       none yet (the first `autoresearch run` evaluates a baseline)"),
    }
    match (&tip, &head) {
        (Some(t), Some(h)) if *t != h.commit_hash => println!(
            "branch     {} is at {}: moved outside the loop (adopted as a baseline on the next run)",
            config.branch,
            short_commit(t)
        ),
        (Some(t), _) => println!("branch     {} at {}", config.branch, short_commit(t)),
        (None, _) => println!("branch     {} does not exist", config.branch),
    }
    println!(
        "attempts   {} ({} kept, {} discarded, {} crashed, {} pending, {} baselines)",
        all.len(),
        count(OutcomeStatus::Keep),
        count(OutcomeStatus::Discard),
        count(OutcomeStatus::Crash),
        pending.len(),
        count(OutcomeStatus::Baseline)
    );
    for a in &in_flight {
        println!("in flight  {} ({})", a.run.run_id, a.run.status);
    }
    for (a, votes) in &pending {
        println!(
            "waiting    {} for a vote ({} so far): autoresearch vote {} keep|discard",
            a.run.run_id,
            votes.len(),
            a.run.run_id
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn find_run<'a>(all: &'a [Attempt], id: &str) -> anyhow::Result<&'a Attempt> {
    if let Some(a) = all.iter().find(|a| a.run.run_id == id) {
        return Ok(a);
    }
    let matches: Vec<&Attempt> = all
        .iter()
        .filter(|a| a.run.run_id.starts_with(id))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => bail!("no run {id:?} in this experiment (see `autoresearch log`)"),
        many => bail!(
            "{id:?} matches {} runs ({}...); give more of the id",
            many.len(),
            many.iter()
                .take(3)
                .map(|a| a.run.run_id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn run_json(r: &Run) -> Value {
    serde_json::to_value(r).unwrap_or(Value::Null)
}

pub async fn show(ledger_path: &Path, args: ShowArgs) -> anyhow::Result<ExitCode> {
    let (config, world_name) = target(&args.config, args.world)?;
    let w = open_world(ledger_path, &world_name).await?;
    let all = attempts(&w, &config.name);
    let a = find_run(&all, &args.run_id)?;
    let base = a
        .outcome
        .as_ref()
        .map(|o| o.base_commit.clone())
        .unwrap_or_default();
    let git = Git::new(&config.repo);
    let diff_stat = if !base.is_empty() && !a.run.commit_hash.is_empty() {
        let (g, b, c) = (git.clone(), base.clone(), a.run.commit_hash.clone());
        tokio::task::spawn_blocking(move || g.diff_stat(&b, &c))
            .await?
            .unwrap_or_else(|e| format!("(diff unavailable: {e})"))
    } else {
        String::new()
    };
    let log_dir = config
        .repo
        .join(".autoresearch")
        .join("runs")
        .join(&a.run.run_id);
    let mut logs: Vec<String> = std::fs::read_dir(&log_dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path().display().to_string())
                .filter(|p| p.ends_with(".log"))
                .collect()
        })
        .unwrap_or_default();
    logs.sort();
    if args.json {
        let v = json!({
            "run": run_json(&a.run),
            "outcome": outcome_json(&a.outcome),
            "results": a.results.iter().map(|r| json!({
                "evaluator": r.evaluator,
                "evaluated_at_ms": r.evaluated_at_ms,
                "outputs": r.outputs().unwrap_or(Value::Null),
            })).collect::<Vec<_>>(),
            "diff_stat": diff_stat,
            "logs": logs,
            "candidate_ref": format!("refs/autoresearch/{}/{}", config.name, a.run.run_id),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let r = &a.run;
    println!("run        {}", r.run_id);
    println!("status     {}", r.status);
    println!(
        "commit     {}",
        if r.commit_hash.is_empty() {
            "-"
        } else {
            &r.commit_hash
        }
    );
    println!("base       {}", if base.is_empty() { "-" } else { &base });
    println!(
        "agent      {} ({}, on {})",
        r.agent_name, r.harness, r.vm_name
    );
    println!("task       {}", r.task);
    println!(
        "started    {} ms, finished {} ms",
        r.started_at_ms, r.finished_at_ms
    );
    if !r.workspace_path.is_empty() {
        println!("workspace  {}", r.workspace_path);
    }
    match &a.outcome {
        Some(o) => {
            println!("decision   {}: {}", o.status, o.reason);
            if !o.comparator.is_empty() {
                println!("comparator {}", o.comparator);
            }
            println!("descriptor {}", o.descriptor_json);
        }
        None => println!("decision   (not decided yet)"),
    }
    for (i, res) in a.results.iter().enumerate() {
        println!("result {i}   {} {}", res.evaluator, metrics_of(res));
    }
    // What the proposer left in its checkout, ignored: never evaluated.
    let left_out: Vec<String> = a
        .results
        .iter()
        .filter_map(|r| r.meta())
        .flat_map(|m| m.left_out)
        .collect();
    if !left_out.is_empty() {
        println!(
            "left out   {} (ignored, not evaluated)",
            left_out.join(", ")
        );
    }
    if !diff_stat.is_empty() {
        println!("diff against base:\n{diff_stat}");
    }
    println!("candidate  refs/autoresearch/{}/{}", config.name, r.run_id);
    for l in logs {
        println!("log        {l}");
    }
    Ok(ExitCode::SUCCESS)
}
