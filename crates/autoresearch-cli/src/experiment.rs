//! The loop's commands: `init` and `run` (`status` and `show` are in their
//! own modules).

use crate::ledger;
use crate::progress::Progress;
use anyhow::{Context, bail};
use autoresearch_compare::CompareSpec;
use autoresearch_controller::config::{CONFIG_FILE, parse_duration, template};
use autoresearch_controller::git::Git;
use autoresearch_controller::sandbox::Sandbox;
use autoresearch_controller::{
    Config, Controller, LoopConfig, Shutdown, StopReason, fork_branch_name,
};
use autoresearch_core::compare::Comparator;
use autoresearch_core::short_commit;
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
    // The executor's config first: a mistake there costs nothing to find.
    let executor = crate::executors::build(
        &config,
        &cfg.state_dir,
        sandbox.clone(),
        held_out_dirs(&config)?,
    )?;
    let start = crate::check::loop_start(storage.clone(), &cfg).await?;
    if !args.no_check {
        // The check evaluates on this machine; on Slurm the baseline is
        // the cluster's to measure (a failing baseline still stops the
        // loop, exit 3, before any proposal).
        let evaluate =
            start.evaluate && config.run.executor == autoresearch_controller::ExecutorKind::Local;
        eprintln!("checking {} before any proposal", config.path.display());
        let report = crate::check::preflight(
            &config,
            &cfg,
            &sandbox,
            evaluate,
            true,
            start.world_head.as_deref(),
        )
        .await?;
        if !report.passed() {
            eprintln!(
                "error: the check failed, so no proposal was made: {}",
                report.failures()
            );
            return Ok(ExitCode::from(crate::check::EXIT_CHECK_FAILED));
        }
    }
    let progress = Arc::new(
        Progress::new(quiet)
            .with_total(cfg.iterations)
            .with_primary(cfg.primary_metric.clone(), &start.head_metrics),
    );
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
    let earlier = match progress.earlier() {
        0 => String::new(),
        1 => " (and 1 run of an earlier invocation decided)".to_string(),
        n => format!(" (and {n} runs of an earlier invocation decided)"),
    };
    println!(
        "{}: {} launched, {} kept, {} discarded, {} crashed, {} pending{earlier}; head {}",
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

/// The `[confirm] data` directories, resolved against the config file's
/// folder (`~` is the home directory). Errors: a path that is not a
/// directory, or one inside the repository (candidates would see it).
fn held_out_dirs(config: &Config) -> anyhow::Result<Vec<PathBuf>> {
    let Some(confirm) = &config.confirm else {
        return Ok(Vec::new());
    };
    let base = config
        .path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let repo = config.repo.canonicalize().unwrap_or(config.repo.clone());
    confirm
        .data
        .iter()
        .map(|d| {
            let path = match d.strip_prefix("~/") {
                Some(rest) => PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(rest),
                None => base.join(d),
            };
            let path = path.canonicalize().with_context(|| {
                format!("[confirm] data {d:?} in {}", config.path.display())
            })?;
            if !path.is_dir() {
                bail!(
                    "[confirm] data {d:?} in {} is not a directory (held-out data is hidden by directory)",
                    config.path.display()
                );
            }
            if path.starts_with(&repo) {
                bail!(
                    "[confirm] data {d:?} in {} is inside the repository, where candidates see it; move it outside",
                    config.path.display()
                );
            }
            Ok(path)
        })
        .collect()
}

/// `run`'s exit code when the loop stopped on `max_consecutive_crashes`
/// crashes in a row (1 is an error, 130 an interruption).
pub const EXIT_CRASHES: u8 = 3;
